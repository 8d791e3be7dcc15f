"""Reading the audit trail out of the store: streaming export, and search of commands.

Both read :meth:`Store.records` once, in seq order, and keep only what is bounded by the number
of sessions open at a time (never the whole store), so a store of any size is exported or
searched in fixed memory. A PostgreSQL store holds a chain per gateway instance: both read
every chain (:func:`chains`), one after the other, or only the one asked for.

The export schema (version :data:`SCHEMA_VERSION`) is documented in ``docs/audit-export.md``.
Its field names are stable: a field may be added in a later version, never renamed or removed
without a new version number. Each exported record carries what is needed to recompute its hash
(:func:`hoopgw.audit.chain.stored_hash`, by its ``record_format``), so an export can be checked
without the store.
"""

from __future__ import annotations

import csv
import heapq
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs

from hoopgw.audit.chain import AuditRecord, canonical_json, encode_data, shown_text
from hoopgw.errors import HoopgwError
from hoopgw.store.base import Store

SCHEMA_VERSION = 2
"""Version of the export schema, in every exported record as ``schema`` (2 added
``instance`` and ``record_format``)."""

FIELDS = (
    "schema",
    "seq",
    "time",
    "posix_time",
    "kind",
    "session_id",
    "identity",
    "connection",
    "prev_hash",
    "hash",
    "instance",
    "data",
    "record_format",
)
"""The fields of an exported record, in order: the JSON Lines keys and the CSV columns."""


def chains(store: Store, *, instance: str | None = None) -> list[Store]:
    """The audit chains of ``store`` to read: every gateway instance's, by instance id (the one
    chain ``""`` of a SQLite store), or only ``instance``'s.

    :raises HoopgwError: if ``store`` has no chain of ``instance``.
    """
    names = sorted(set(store.instances()) | {store.instance}) if store.instance else [""]
    if instance is None:
        return [store.chain(name) for name in names]
    if instance not in names:
        known = ", ".join(repr(name) for name in names)
        raise HoopgwError(f"the store has no audit chain of instance {instance!r} (it has {known})")
    return [store.chain(instance)]


FORMATS = ("jsonl", "csv")
"""The export formats."""


def iso_time_precise(posix: float) -> str:
    """A POSIX time as UTC ISO-8601 with microseconds, e.g. ``2026-11-25T17:00:00.250000Z``."""
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.frozen(kw_only=True)
class SessionFacts:
    """Who used a session and where, as its ``session_started`` record says."""

    identity: str | None
    """The authenticated identity; None if the session is unknown."""
    groups: tuple[str, ...]
    """The identity's groups."""
    connection: str | None
    """The configured connection; None if the session is unknown."""


_UNKNOWN_SESSION = SessionFacts(identity=None, groups=(), connection=None)


class SessionDirectory:
    """The facts of the sessions met while streaming records, in bounded memory.

    It learns a session from its ``session_started`` record and forgets it at
    ``session_closed``. A session not learned that way (its start precedes a pruned range, or
    it fell out of the cache) is looked up once with :meth:`Store.get_session`; the answer,
    even "unknown", is cached, so a long unknown session costs one lookup.
    """

    def __init__(self, store: Store, *, capacity: int = 4096) -> None:
        """
        :param store: where sessions that were not learned from the stream are looked up.
        :param capacity: most sessions kept at once; the least recently used go first.
        """
        self._store = store
        self._capacity = capacity
        self._facts: OrderedDict[str, SessionFacts] = OrderedDict()

    def observe(self, record: AuditRecord) -> SessionFacts:
        """Learn from ``record`` and return the facts of its session."""
        if record.kind == "session_started":
            data = record.data
            groups = data.get("groups")
            facts = SessionFacts(
                identity=_text_or_none(data.get("identity")),
                groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
                connection=_text_or_none(data.get("connection")),
            )
            self._remember(record.session_id, facts)
            return facts
        facts = self.lookup(record.session_id)
        if record.kind == "session_closed":
            self._facts.pop(record.session_id, None)
        return facts

    def lookup(self, session_id: str) -> SessionFacts:
        """The facts of ``session_id``, from the cache or else from the store."""
        if not session_id:
            return _UNKNOWN_SESSION
        facts = self._facts.get(session_id)
        if facts is not None:
            self._facts.move_to_end(session_id)
            return facts
        session = self._store.get_session(session_id)
        if session is None:
            facts = _UNKNOWN_SESSION
        else:
            facts = SessionFacts(
                identity=session.get("identity") or None,
                groups=tuple(session.get("groups") or ()),
                connection=session.get("connection") or None,
            )
        self._remember(session_id, facts)
        return facts

    def _remember(self, session_id: str, facts: SessionFacts) -> None:
        self._facts[session_id] = facts
        self._facts.move_to_end(session_id)
        while len(self._facts) > self._capacity:
            self._facts.popitem(last=False)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _in_range(time: float, since: float | None, until: float | None) -> bool:
    return (since is None or time >= since) and (until is None or time < until)


# -- export --------------------------------------------------------------------------------------


def exported_record(record: AuditRecord, facts: SessionFacts) -> dict[str, Any]:
    """The export document of one record (the JSON Lines form; see :data:`FIELDS`)."""
    return {
        "schema": SCHEMA_VERSION,
        "seq": record.seq,
        "time": iso_time_precise(record.time),
        "posix_time": record.time,
        "kind": record.kind,
        "session_id": record.session_id,
        "identity": facts.identity,
        "connection": facts.connection,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "instance": record.instance,
        "data": record.data,
        "record_format": record.format,
    }


def _data_text(record: AuditRecord) -> str:
    """``record``'s data as its hash covers it: the stored text for format 2, the canonical
    JSON for format 1."""
    if record.format >= 2:
        return record.data_json if record.data_json is not None else encode_data(record.data)
    return canonical_json(record.data)


def _jsonl_writer(stream: TextIO) -> Callable[[dict[str, Any], str], None]:
    encode = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
    ).encode

    def write(document: dict[str, Any], data: str) -> None:
        # ``data`` goes in as the exact text the hash covers, never encoded again.
        head = encode({name: document[name] for name in FIELDS[:-2]})
        stream.write(f'{head[:-1]},"data":{data},"record_format":{document["record_format"]}}}\n')

    return write


def _csv_writer(stream: TextIO) -> Callable[[dict[str, Any], str], None]:
    # RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line break.
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(FIELDS)

    def write(document: dict[str, Any], data: str) -> None:
        writer.writerow([data if name == "data" else document[name] for name in FIELDS])

    return write


def export_records(
    store: Store,
    stream: TextIO,
    *,
    format: str,
    since: float | None = None,
    until: float | None = None,
    progress: Callable[[int], None] | None = None,
    instance: str | None = None,
) -> int:
    """Write every record of ``store`` with ``since <= time < until`` to ``stream``: chain by
    chain (:func:`chains`, by instance id), each in seq order, so that each chain of the export
    verifies on its own.

    Records are streamed one at a time; memory does not grow with the size of the store.

    :param format: ``jsonl`` (one JSON object per line) or ``csv`` (a header row, then one row
        per record, ``data`` as the text its hash covers).
    :param since: POSIX time of the first record to include, or None for the start.
    :param until: POSIX time from which records are left out, or None for the end.
    :param progress: called after every record read with the number read so far.
    :param instance: only this gateway instance's chain; None for every chain.
    :return: how many records were written.
    :raises ValueError: for an unknown format.
    :raises StoreError: if the store cannot be read.
    :raises HoopgwError: if the store has no chain of ``instance``.
    """
    if format == "jsonl":
        write = _jsonl_writer(stream)
    elif format == "csv":
        write = _csv_writer(stream)
    else:
        raise ValueError(f"unknown export format {format!r} (known: {', '.join(FORMATS)})")
    written = read = 0
    for chain in chains(store, instance=instance):
        sessions = SessionDirectory(chain)
        for record in chain.records():
            read += 1
            # Every record is observed, also those out of range, so sessions started before
            # `since` are still known.
            facts = sessions.observe(record)
            if _in_range(record.time, since, until):
                write(exported_record(record, facts), _data_text(record))
                written += 1
            if progress is not None:
                progress(read)
    return written


# -- search --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CommandFilter:
    """What :func:`search_commands` keeps; a None criterion keeps everything."""

    identity: str | None = None
    """Only commands of sessions of this identity."""
    group: str | None = None
    """Only commands of sessions whose identity had this group."""
    connection: str | None = None
    """Only commands through this connection."""
    session_id: str | None = None
    """Only commands of this session."""
    verdict: str | None = None
    """Only commands with this verdict (``allow`` or ``block``)."""
    rule: str | None = None
    """Only commands decided by this rule."""
    since: float | None = None
    """Only commands received at or after this POSIX time."""
    until: float | None = None
    """Only commands received before this POSIX time."""
    text: str | None = None
    """Only commands whose text holds this, ignoring case."""

    def admits_received(self, record: AuditRecord, facts: SessionFacts) -> bool:
        """Whether a ``command_received`` record passes the criteria known when it arrives."""
        text = shown_text(record.data.get("text"))
        return (
            (self.session_id is None or record.session_id == self.session_id)
            and (self.identity is None or facts.identity == self.identity)
            and (self.group is None or self.group in facts.groups)
            and (self.connection is None or facts.connection == self.connection)
            and _in_range(record.time, self.since, self.until)
            and (self.text is None or self.text.casefold() in text.casefold())
        )

    def admits_decided(self, command: dict[str, Any]) -> bool:
        """Whether a command, once decided, passes the verdict and rule criteria."""
        return (self.verdict is None or command["verdict"] == self.verdict) and (
            self.rule is None or command["rule"] == self.rule
        )


SEARCH_FIELDS = (
    "instance",
    "record_seq",
    "time",
    "session_id",
    "command",
    "identity",
    "groups",
    "connection",
    "kind",
    "text",
    "verdict",
    "reason",
    "plugin",
    "rule",
    "status",
    "rows",
    "duration",
    "error_code",
    "error_message",
)
"""The keys of each command :func:`search_commands` returns."""


def search_commands(
    store: Store, criteria: CommandFilter, *, limit: int, instance: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` commands that pass ``criteria``, newest first, from every chain of
    the store (:func:`chains`) or only ``instance``'s.

    A command is joined from its ``command_received``, ``command_decided`` and
    ``command_completed`` records (an allowed command's verdict may be in the last); one whose
    session ended (or the store ended) before it was
    decided or completed has None there. Each has the keys :data:`SEARCH_FIELDS`; ``time`` is
    the POSIX time it was received, ``record_seq`` the seq of that record and ``instance`` the
    gateway instance whose chain holds it. Within one chain newest is the highest seq; across
    chains, the latest ``time`` (then instance and seq, so the order is stable).

    :raises StoreError: if the store cannot be read.
    :raises HoopgwError: if the store has no chain of ``instance``.
    """
    read = chains(store, instance=instance)
    kept: list[tuple[tuple[Any, ...], dict[str, Any]]] = []  # a min-heap of the newest matches

    def keep(command: dict[str, Any]) -> None:
        if not criteria.admits_decided(command):
            return
        key = (
            (command["record_seq"],)
            if len(read) == 1
            else (command["time"], command["instance"], command["record_seq"])
        )
        heapq.heappush(kept, (key, command))
        if len(kept) > limit:
            heapq.heappop(kept)

    for chain in read:
        for command in _joined_commands(chain, criteria):
            keep(command)
    return [command for _, command in sorted(kept, key=lambda item: item[0], reverse=True)]


def _joined_commands(store: Store, criteria: CommandFilter) -> Iterator[dict[str, Any]]:
    """Commands that pass the receive-time criteria, each once it is complete."""
    sessions = SessionDirectory(store)
    # Commands received and not yet completed, per session: bounded by what is in flight.
    open_commands: dict[str, dict[int, dict[str, Any]]] = {}
    for record in store.records():
        facts = sessions.observe(record)
        data = record.data
        number = data.get("seq")
        if record.kind == "command_received" and isinstance(number, int):
            if criteria.admits_received(record, facts):
                open_commands.setdefault(record.session_id, {})[number] = _received(record, facts)
            continue
        if record.kind == "session_closed":
            yield from open_commands.pop(record.session_id, {}).values()
            continue
        pending = open_commands.get(record.session_id, {})
        command = pending.get(number) if isinstance(number, int) else None
        if command is None:
            continue
        # A completion may carry the verdict too (an allowed command: one compact record).
        if record.kind == "command_decided" or (
            record.kind == "command_completed" and "verdict" in data
        ):
            command.update(
                verdict=data.get("verdict"),
                reason=data.get("reason") or "",
                plugin=data.get("plugin") or "",
                rule=data.get("rule") or "",
            )
        if record.kind == "command_completed":
            command.update(
                status=data.get("status"),
                rows=data.get("rows"),
                duration=data.get("duration"),
                error_code=data.get("error_code"),
                error_message=data.get("error_message"),
            )
            yield pending.pop(command["command"])
    for remaining in open_commands.values():
        yield from remaining.values()


def _received(record: AuditRecord, facts: SessionFacts) -> dict[str, Any]:
    data = record.data
    return {
        "instance": record.instance,
        "record_seq": record.seq,
        "time": record.time,
        "session_id": record.session_id,
        "command": data["seq"],
        "identity": facts.identity,
        "groups": list(facts.groups),
        "connection": facts.connection,
        "kind": data.get("kind"),
        "text": shown_text(data.get("text")),
        "verdict": None,
        "reason": "",
        "plugin": "",
        "rule": "",
        "status": None,
        "rows": None,
        "duration": None,
        "error_code": None,
        "error_message": None,
    }
