"""The audit trail's hash chain: record values, hashing, durability and pruning records, and
its verification.

Every audit record is hash-chained: its ``hash`` is a SHA-256 over its ``seq``, ``kind``,
``session_id``, ``time``, ``data`` and the previous record's hash (``prev_hash``; the first
record's is :data:`GENESIS_HASH`). How depends on the record's ``format``
(:data:`RECORD_FORMAT`): format 1 (records written before it existed) hashes a canonical JSON
document of those fields, re-encoding ``data``; format 2 hashes the exact bytes of ``data`` as
the gateway serialised them once (:func:`record_hash_v2`), which the store keeps as they are, so
neither the writer nor :func:`verify_chain` encodes ``data`` again. A changed, removed, inserted
or reordered record breaks the chain, and :func:`verify_chain` reports the first record where it
breaks. The chain is computed by the store inside the transaction that appends the records.
Retention may remove the oldest records; a ``pruned`` record (:func:`pruned_entry`) then
vouches for the first remaining one. Signed checkpoints of the chain head
(:mod:`hoopgw.audit.checkpoints`) detect what the chain alone cannot: a truncated or recomputed
log. The writer process records the durability mode in force in the chain itself, at every start
(:func:`durability_entry`), and :func:`verify_chain` reports which mode covered which records
(:class:`DurabilityPeriod`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeGuard

import attrs

from hoopgw.audit.hashing import canonical_json, encode_data, record_hash, record_hash_v2
from hoopgw.records import AuditEntry

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record of a SQLite store's chain (instance ``""``)."""


def chain_genesis(instance: str) -> str:
    """The ``prev_hash`` of the first record of gateway instance ``instance``'s chain.

    Every record's hash thus depends on the instance id through the chain: records cannot be
    passed off as another instance's. The unnamed instance (a SQLite store) keeps
    :data:`GENESIS_HASH`.
    """
    if not instance:
        return GENESIS_HASH
    return hashlib.sha256(f"hoopgw audit chain {instance}".encode()).hexdigest()


@attrs.frozen(kw_only=True)
class AuditRecord:
    """A durable record: an :class:`AuditEntry` with its place in the hash chain."""

    seq: int
    """Position in the store, from 1, without gaps."""
    kind: str
    """See :attr:`AuditEntry.kind`."""
    session_id: str
    """See :attr:`AuditEntry.session_id`."""
    time: float
    """See :attr:`AuditEntry.time`."""
    data: dict[str, Any]
    """See :attr:`AuditEntry.data` (as read back from JSON: tuples become lists)."""
    prev_hash: str
    """Hex SHA-256 of the previous record, or :func:`chain_genesis` for the first."""
    hash: str
    """Hex SHA-256 of this record's canonical form (see :func:`record_hash`)."""
    instance: str = ""
    """The gateway instance whose chain holds it (``""`` for a SQLite store's one chain); its
    ``seq`` counts in that chain."""
    format: int = 1
    """How :attr:`hash` was computed: 1 (:func:`record_hash`) or 2 (:func:`record_hash_v2`)."""
    data_json: str | None = attrs.field(default=None, eq=False, repr=False)
    """The exact stored text of :attr:`data`, which a format 2 hash covers; None when the
    record was not read from a store (it is then encoded with :func:`encode_data`)."""


class EncodedEntry(NamedTuple):
    """An :class:`AuditEntry` with its data serialised once (:func:`encode_data`), as the writer
    process reads it from the gateway; the store keeps :attr:`data_json` as it is."""

    kind: str
    """See :attr:`AuditEntry.kind`."""
    session_id: str
    """See :attr:`AuditEntry.session_id`."""
    time: float
    """See :attr:`AuditEntry.time`."""
    data: dict[str, Any]
    """See :attr:`AuditEntry.data` (as read back from :attr:`data_json`)."""
    data_json: str
    """``data`` as the gateway serialised it: the bytes a format 2 hash covers."""


def encoded_entry(entry: AuditEntry | EncodedEntry) -> EncodedEntry:
    """``entry`` with its data serialised once (as it is when it is one already); a text that
    is not valid UTF-8 is kept as its exact bytes (:func:`exact_text`).

    :raises TypeError, ValueError: as :func:`encode_data`.
    """
    if isinstance(entry, EncodedEntry):
        return entry
    data = entry.data
    text = encode_data(data)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # rare: walk the data only when it needs it
        data = exact_text(data)
        text = encode_data(data)
    return EncodedEntry(entry.kind, entry.session_id, entry.time, data, text)


EXACT_BYTES_KEY = "$bytes"
"""The one key of the object that stands, in a record's data, for a text that is not valid
UTF-8 (see :func:`exact_text`); its value is the text's exact bytes in base64."""


def exact_text(value: Any) -> Any:
    """``value`` with every string that is not valid Unicode replaced by
    ``{"$bytes": BASE64}`` of its exact bytes.

    Protocols read statement text, parameters and messages that are not UTF-8 (a ``LATIN1``
    client of a ``SQL_ASCII`` database, a MySQL ``_binary`` literal, a BLOB parameter) with
    ``surrogateescape``, so each byte that is not UTF-8 is a lone surrogate, which JSON cannot
    carry as UTF-8. The replacement keeps the bytes exactly, in valid JSON, and so inside the
    hash chain: verifying a record verifies them too. :func:`shown_text` renders one for people.
    A dictionary key that is not valid Unicode is kept with ``\\xNN`` escapes.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogateescape" if _escaped(value) else "surrogatepass")
            return {EXACT_BYTES_KEY: base64.b64encode(raw).decode("ascii")}
        return value
    if isinstance(value, dict):
        return {_shown_key(k): exact_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exact_text(v) for v in value]
    return value


def _escaped(text: str) -> bool:
    """Whether every surrogate of ``text`` is one ``surrogateescape`` makes of a byte."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _shown_key(key: Any) -> Any:
    return shown_text(exact_text(key)) if isinstance(key, str) else key


def exact_bytes(value: Any) -> bytes | None:
    """The bytes an ``{"$bytes": ...}`` object of :func:`exact_text` stands for; None for any
    other value."""
    if (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(encoded := value.get(EXACT_BYTES_KEY), str)
    ):
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            return None
    return None


def shown_text(value: Any) -> str:
    """A recorded text as people read it: a string as it is; the exact bytes of a text that is
    not UTF-8 with each byte that is not part of a UTF-8 character written ``\\xNN``; None
    as ``""``; anything else as its canonical JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raw = exact_bytes(value)
    if raw is not None:
        return raw.decode("utf-8", "backslashreplace")
    return canonical_json(value)


def stored_hash(record: AuditRecord) -> str:
    """What ``record``'s hash must be, by its :attr:`~AuditRecord.format`.

    :raises ValueError: for a format this code does not know.
    """
    if record.format == 2:
        data_json = record.data_json
        return record_hash_v2(
            seq=record.seq,
            kind=record.kind,
            session_id=record.session_id,
            time=record.time,
            prev_hash=record.prev_hash,
            data_json=encode_data(record.data) if data_json is None else data_json,
        )
    if record.format == 1:
        return record_hash(
            seq=record.seq,
            kind=record.kind,
            session_id=record.session_id,
            time=record.time,
            data=record.data,
            prev_hash=record.prev_hash,
        )
    raise ValueError(f"unknown audit record format {record.format}")


DURABILITY_KIND = "audit_durability"
"""The ``kind`` of the record the writer process appends at every start, saying which
:class:`Durability` is in force from then on (it belongs to no session)."""

DURABILITY_MODES = ("fsync", "os")
"""The values of ``[gateway] audit_durability``."""

MAX_SYNC_INTERVAL = 1.0
"""Longest ``audit_sync_interval`` accepted, in seconds: the window a host crash may lose."""


@attrs.frozen(kw_only=True)
class Durability:
    """When a command's record counts as written, so that the command may be forwarded."""

    mode: str = "fsync"
    """``fsync``: once the journal holding it is synced to disk (``fdatasync``). ``os``: once it
    is written to the journal (``write`` returned: it is in the operating system, which a crash
    or kill of the gateway does not lose); the journal is synced in groups, at most every
    :attr:`sync_interval` seconds, so only a crash of the whole host can lose that window."""
    sync_interval: float = 0.01
    """Seconds between group syncs of the journal in mode ``os`` (unused by ``fsync``)."""

    def as_dict(self) -> dict[str, Any]:
        """The mode as recorded and reported: ``sync_interval`` is None for ``fsync``."""
        return {
            "mode": self.mode,
            "sync_interval": self.sync_interval if self.mode == "os" else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Durability | None:
        """The durability that :meth:`as_dict` made ``data`` from; None if it is malformed."""
        if not isinstance(data, dict):
            return None
        mode, interval = data.get("mode"), data.get("sync_interval")
        if mode == "fsync":
            return cls()  # its interval means nothing: all fsync records are alike
        if mode != "os" or isinstance(interval, bool) or not isinstance(interval, int | float):
            return None
        return cls(mode=mode, sync_interval=float(interval))


def durability_entry(durability: Durability, *, now: float) -> AuditEntry:
    """The record saying that ``durability`` is in force from now on."""
    return AuditEntry(
        kind=DURABILITY_KIND,
        session_id="",
        time=now,
        data=durability.as_dict(),
    )


@attrs.frozen(kw_only=True)
class DurabilityPeriod:
    """Consecutive records written under one :class:`Durability` (see :func:`verify_chain`)."""

    durability: Durability | None
    """The mode in force; None where the chain does not say (records written by a gateway
    before modes were recorded, which always synced: ``fsync``; or records whose mode record
    was pruned by a version that did not carry it on)."""
    first_seq: int
    """The first record of the period (its mode record, when it has one)."""
    last_seq: int
    """The last record of the period."""
    since: float
    """POSIX time of record :attr:`first_seq`."""
    until: float
    """POSIX time of record :attr:`last_seq`."""

    @staticmethod
    def recorded(record: AuditRecord) -> Durability | None:
        """The durability a record announces; None for another kind or malformed data."""
        if record.kind != DURABILITY_KIND:
            return None
        return Durability.from_dict(record.data)


def describe_durability(durability: Durability | None) -> str:
    """What ``durability`` promised about each command's record, for a person."""
    if durability is None:
        return (
            "mode not recorded (records of a gateway before modes were recorded, which synced"
            " each record to disk)"
        )
    if durability.mode == "fsync":
        return "fsync: each command's record was on disk before the command was forwarded"
    return (
        "os: each command's record was in the operating system before the command was"
        f" forwarded and on disk within {durability.sync_interval:g} s (a crash of the host"
        " could lose the records of that window)"
    )


class _DurabilityTracker:
    """Builds the :class:`DurabilityPeriod` list while :func:`verify_chain` reads the chain: a
    mode record that changes the mode opens a period; one that repeats it (a restart) and any
    other record extend the current one."""

    def __init__(self) -> None:
        self._closed: list[DurabilityPeriod] = []
        self._open: DurabilityPeriod | None = None  # its last_seq and until are not kept current
        self._last: AuditRecord | None = None
        self._carried: Durability | None = None

    def carry(self, durability: Durability | None) -> None:
        """The ``pruned`` record that accounts for the chain's first records says which mode
        was in force at the first remaining one (its mode record was pruned)."""
        self._carried = durability

    def add(self, record: AuditRecord) -> None:
        announced = DurabilityPeriod.recorded(record)
        current = self._open
        if current is None or (announced is not None and announced != current.durability):
            if current is not None:
                self._closed.append(self._ended(current))
            self._open = DurabilityPeriod(
                durability=announced,
                first_seq=record.seq,
                last_seq=record.seq,
                since=record.time,
                until=record.time,
            )
        self._last = record

    def periods(self) -> tuple[DurabilityPeriod, ...]:
        periods = list(self._closed)
        if self._open is not None:
            periods.append(self._ended(self._open))
        if periods and periods[0].durability is None and self._carried is not None:
            periods[0] = attrs.evolve(periods[0], durability=self._carried)
            if len(periods) > 1 and periods[1].durability == self._carried:
                periods[:2] = [
                    attrs.evolve(periods[0], last_seq=periods[1].last_seq, until=periods[1].until)
                ]
        return tuple(periods)

    def _ended(self, period: DurabilityPeriod) -> DurabilityPeriod:
        assert self._last is not None
        return attrs.evolve(period, last_seq=self._last.seq, until=self._last.time)


PRUNED_KIND = "pruned"
"""The ``kind`` of the record that retention appends when it removes the oldest records."""


@attrs.frozen(kw_only=True)
class PrunedRange:
    """What one ``pruned`` record says was removed: the records ``first_seq`` to ``last_seq``."""

    first_seq: int
    """The first seq this pruning removed (earlier ones were removed by earlier prunings)."""
    last_seq: int
    """The last seq removed; the first remaining record follows it."""
    last_hash: str
    """The ``hash`` of record ``last_seq``: the first remaining record's ``prev_hash``."""
    older_than: float
    """POSIX time: the records removed were written before it."""
    sessions_removed: int
    """How many sessions left the ``sessions`` and ``commands`` projections with them."""
    pruned_at: float
    """POSIX time of the pruning (the ``pruned`` record's ``time``)."""
    record_seq: int
    """The seq of the ``pruned`` record itself."""
    durability: Durability | None = None
    """The :class:`Durability` in force at the first remaining record, whose mode record may
    have been pruned; None where the removed records did not say."""

    @classmethod
    def from_record(cls, record: AuditRecord) -> PrunedRange | None:
        """The range a ``pruned`` record describes; None for another kind or malformed data."""
        if record.kind != PRUNED_KIND:
            return None
        data = record.data
        first, last, last_hash = data.get("first_seq"), data.get("last_seq"), data.get("last_hash")
        older_than, sessions = data.get("older_than"), data.get("sessions_removed")
        if not (
            _is_int(first)
            and _is_int(last)
            and _is_int(sessions)
            and isinstance(last_hash, str)
            and isinstance(older_than, int | float)
            and not isinstance(older_than, bool)
            and 1 <= first <= last < record.seq
        ):
            return None
        return cls(
            first_seq=first,
            last_seq=last,
            last_hash=last_hash,
            older_than=float(older_than),
            sessions_removed=sessions,
            pruned_at=record.time,
            record_seq=record.seq,
            durability=Durability.from_dict(data.get("durability")),
        )


def pruned_entry(
    *,
    first_seq: int,
    last_seq: int,
    last_hash: str,
    older_than: float,
    sessions_removed: int,
    now: float,
    durability: Durability | None = None,
) -> AuditEntry:
    """The ``pruned`` record that stands in the chain for the removed records ``first_seq`` to
    ``last_seq`` (it belongs to no session: its ``session_id`` is empty).

    :param durability: the mode in force at record ``last_seq + 1``, carried on for
        :func:`verify_chain` since the mode record saying so is removed.
    """
    data: dict[str, Any] = {
        "first_seq": first_seq,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "older_than": older_than,
        "sessions_removed": sessions_removed,
    }
    if durability is not None:
        data["durability"] = durability.as_dict()
    return AuditEntry(kind=PRUNED_KIND, session_id="", time=now, data=data)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen(kw_only=True)
class VerifyResult:
    """The outcome of :func:`verify_chain`."""

    ok: bool
    """Whether every record checked is intact and in place."""
    checked: int
    """How many records were read."""
    first_bad_seq: int | None = None
    """The first seq at which the chain breaks (for a removed record: the missing seq)."""
    problem: str = ""
    """What is wrong there, for a person; empty when ``ok``."""
    first_seq: int | None = None
    """The seq of the first record read (1 unless the oldest records were pruned)."""
    last_seq: int | None = None
    """The seq of the last intact record: the chain head when ``ok``."""
    last_hash: str | None = None
    """The hash of record :attr:`last_seq`."""
    pruned: tuple[PrunedRange, ...] = ()
    """The ``pruned`` records met, in chain order."""
    durability: tuple[DurabilityPeriod, ...] = ()
    """Which :class:`Durability` was in force for which records read, in chain order (up to
    the last intact record when the chain breaks)."""


def verify_chain(records: Iterable[AuditRecord], *, instance: str = "") -> VerifyResult:
    """Check a whole chain, in seq order (as :meth:`Store.records` yields it).

    Detects a changed record (its hash no longer matches), a removed one (a gap in seq), and an
    inserted or reordered one (a hash or ``prev_hash`` that no longer fits its place). The chain
    must start at seq 1, unless its oldest records were pruned: then it may start at seq N + 1
    only if a ``pruned`` record further on says it removed records up to N and names record N's
    hash as the first remaining record's ``prev_hash``. Removing records from the *end* leaves a
    valid, shorter chain; compare the head with a signed checkpoint
    (:mod:`hoopgw.audit.checkpoints`) to detect truncation.
    """
    expected_seq = 1
    prev_hash = chain_genesis(instance)
    checked = 0
    first_seq: int | None = None
    last: AuditRecord | None = None
    pruned: list[PrunedRange] = []
    durability = _DurabilityTracker()
    # (seq, hash) of the last pruned record, while no "pruned" record has vouched for it.
    unvouched: tuple[int, str] | None = None

    def broken(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(
            ok=False,
            checked=checked,
            first_bad_seq=seq,
            problem=problem,
            first_seq=first_seq,
            last_seq=None if last is None else last.seq,
            last_hash=None if last is None else last.hash,
            pruned=tuple(pruned),
            durability=durability.periods(),
        )

    for record in records:
        checked += 1
        if first_seq is None:
            first_seq = record.seq
            if record.seq > 1:
                expected_seq, prev_hash = record.seq, record.prev_hash
                unvouched = (record.seq - 1, record.prev_hash)
        if record.seq > expected_seq:
            missing = (
                f"record {expected_seq} is missing"
                if record.seq == expected_seq + 1
                else f"records {expected_seq} to {record.seq - 1} are missing"
            )
            return broken(expected_seq, missing)
        if record.seq < expected_seq:
            return broken(
                record.seq, f"record {record.seq} appears after record {expected_seq - 1}"
            )
        if record.prev_hash != prev_hash:
            return broken(
                record.seq,
                f"record {record.seq} does not follow record {record.seq - 1} (prev_hash differs)",
            )
        try:
            actual = stored_hash(record)
        except ValueError as exc:
            return broken(record.seq, f"record {record.seq}: {exc}")
        if actual != record.hash:
            return broken(
                record.seq, f"record {record.seq} was changed (its content does not match its hash)"
            )
        pruning = PrunedRange.from_record(record)
        if pruning is not None:
            pruned.append(pruning)
            if unvouched == (pruning.last_seq, pruning.last_hash):
                unvouched = None
                durability.carry(pruning.durability)
        durability.add(record)
        last = record
        prev_hash = record.hash
        expected_seq += 1
    if unvouched is not None:
        missing_to = unvouched[0]
        return broken(
            1,
            ("record 1 is missing" if missing_to == 1 else f"records 1 to {missing_to} are missing")
            + " and no pruned record accounts for them",
        )
    return VerifyResult(
        ok=True,
        checked=checked,
        first_seq=first_seq,
        last_seq=None if last is None else last.seq,
        last_hash=None if last is None else last.hash,
        pruned=tuple(pruned),
        durability=durability.periods(),
    )
