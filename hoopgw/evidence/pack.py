"""The auditor's evidence pack: what the audit trail shows about a time range, and proof of it.

:func:`build_pack` reads the whole audit chain once (to verify it, so the records in the range
are proven unaltered together with everything before them), summarises the records whose time
falls in ``[since, until)``, and writes a folder that needs no server to read:

``index.html``, ``index.md``
    each NIST SP 800-53 control the gateway supports, mapped to the counts and files that
    demonstrate it, with the chain verification result at the top;
``summary.json``
    every count of the index, for machines (keys documented in ``docs/evidence.md``);
``sessions.csv``, ``sessions.json``
    the sessions that started in the range;
``commands.jsonl``
    every command received in the range, with its verdict and outcome (no result samples);
``accounts.csv``
    the API keys as they stand when the pack is made (never their secrets or hashes);
``approvals.csv``
    every review and access-grant event in the range (requested, voted, decided, re-run,
    granted, expired, revoked), from the verified audit chain;
``policies/<connection>.json``
    each connection's access and plugin settings from the config (never its credential);
``verification.json``
    the chain verification result, the chain head and the latest checkpoint;
``manifest.sha256``
    the SHA-256 of every other file, in the format ``sha256sum -c`` checks.

Recorded text (statements, client-sent attributes) is attacker-controlled: the HTML escapes all
of it, the Markdown escapes its markup, and CSV cells that a spreadsheet would run as a formula
are prefixed with ``'``. The JSON files keep the exact values.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from hoopgw import __version__
from hoopgw.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    LogVerification,
    latest_checkpoint_file,
    load_signing_key,
    read_checkpoint_file,
    verify_log,
)
from hoopgw.audit.journal import backlog
from hoopgw.audit.writer import AuditRecord, VerifyResult, describe_durability, shown_text
from hoopgw.cli.common import iso_time
from hoopgw.config.load import Config
from hoopgw.connection import ConnectionConfig
from hoopgw.secrets import Secret
from hoopgw.store.base import Store

PACK_FORMAT = "hoopgw-evidence/1"
"""The ``format`` field of ``summary.json``; changes only when a key changes meaning."""

NOT_RECORDED = "none recorded — no approval plugin and no just-in-time connection configured"
"""What the pack says about reviews and access grants when nothing could make them."""

REVIEW_EVENTS = (
    "review_requested",
    "review_voted",
    "review_decided",
    "review_timed_out",
    "review_rerun",
    "grant_created",
    "grant_expired",
    "grant_revoked",
)
"""Audit record kinds of reviews and access grants, listed in ``approvals.csv``."""

APPROVAL_FIELDS = (
    "time",
    "event",
    "review",
    "review_kind",
    "requester",
    "connection",
    "status",
    "by",
    "reason",
    "grant",
    "identity",
    "approved_by",
    "expires_at",
)
"""Columns of ``approvals.csv``: one row per review or grant event in the range."""

ENCRYPTED_PROTOCOLS = frozenset({"ssh"})
"""Protocols whose every session is encrypted by the protocol itself (SC-8)."""

NO_CHECKPOINT = "no checkpoint configured"
"""What the pack says when the gateway writes no signed checkpoints."""

MANIFEST = "manifest.sha256"
LISTED_BLOCKED = 20
"""Blocked commands shown in the index; ``commands.jsonl`` holds all of them."""
LISTED_TEXT_CHARS = 200

SESSION_FIELDS = (
    "id",
    "connection",
    "protocol",
    "target",
    "identity",
    "groups",
    "method",
    "credential_id",
    "client_address",
    "client_tls",
    "upstream_tls",
    "started_at",
    "ended_at",
    "end_reason",
    "command_count",
)
"""Columns of ``sessions.csv``; ``sessions.json`` has these and ``attributes``."""

ACCOUNT_FIELDS = (
    "key_id",
    "identity",
    "groups",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
)
"""Columns of ``accounts.csv``."""


@attrs.frozen(kw_only=True)
class TimeRange:
    """The records a pack covers: those whose time is in ``[since, until)``."""

    since: float
    """POSIX time of the first instant covered."""
    until: float | None = None
    """POSIX time of the first instant no longer covered, or None for up to now."""

    def covers(self, time: float) -> bool:
        """Whether a record written at ``time`` belongs to the pack."""
        return self.since <= time and (self.until is None or time < self.until)


@attrs.frozen(kw_only=True)
class LatestCheckpoint:
    """What the checkpoint folder held when the pack was made."""

    checkpoint: Checkpoint | None
    """The newest checkpoint, its signature verified; None if there is none or it is bad."""
    source: str
    """The checkpoint file read, or the folder searched when it holds none."""
    problem: str = ""
    """Why the newest checkpoint cannot be trusted (unreadable, bad signature); empty if fine."""


def latest_checkpoint(config: Config) -> LatestCheckpoint | None:
    """The newest checkpoint the gateway wrote, verified with its signing key's public half;
    None when the config has no ``signing_key`` (no checkpoints are written)."""
    if config.gateway.signing_key is None:
        return None
    folder = config.chain_checkpoint_path(config.gateway.instance)
    try:
        path = latest_checkpoint_file(folder)
        if path is None:
            return LatestCheckpoint(checkpoint=None, source=str(folder))
        public_key = load_signing_key(config.gateway.signing_key.reveal()).public_key()
        return LatestCheckpoint(checkpoint=read_checkpoint_file(path, public_key), source=str(path))
    except CheckpointError as exc:
        return LatestCheckpoint(checkpoint=None, source=str(folder), problem=str(exc))


@attrs.frozen(kw_only=True)
class PackResult:
    """What :func:`build_pack` wrote."""

    folder: Path
    """The pack's folder."""
    verification: VerifyResult
    """The chain verification result; the pack is marked FAILED when it is not ok."""
    checkpoint_problem: str
    """Why the log does not match the latest checkpoint (truncated, rewritten, bad signature);
    empty when it matches or there is none."""
    journal_problem: str
    """Why the log is not complete yet (records a stopped gateway left in its audit journal);
    empty when it is."""
    sessions: int
    """Sessions that started in the range."""
    commands: int
    """Commands received in the range."""
    files: tuple[str, ...]
    """Every file of the pack, relative to :attr:`folder`, the manifest last."""

    @property
    def verified(self) -> bool:
        """Whether the chain verified intact, complete, and matches the latest checkpoint."""
        return self.verification.ok and not self.checkpoint_problem and not self.journal_problem


def build_pack(
    store: Store,
    config: Config,
    *,
    config_file: Path,
    time_range: TimeRange,
    folder: Path,
    now: float,
    latest: LatestCheckpoint | None = None,
    progress: Callable[[int], None] = lambda count: None,
) -> PackResult:
    """Verify the audit chain, summarise ``time_range`` and write the pack into ``folder``.

    The pack is written whether or not the chain verifies; when it does not, the index says
    FAILED at the top and ``verification.json`` has ``"ok": false``.

    :param config: the gateway's config, for the policies in force.
    :param config_file: the file ``config`` was read from; its SHA-256 goes into the pack.
    :param folder: created if absent; must be empty.
    :param now: POSIX time the pack is made.
    :param latest: the latest checkpoint (:func:`latest_checkpoint`), or None when the gateway
        writes none.
    :param progress: called with the number of audit records read so far, after each one
        (a :class:`~hoopgw.audit.progress.Progress`, say).
    :raises FileExistsError: if ``folder`` exists and is not empty.
    :raises StoreError: if the store cannot be read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; an evidence pack needs a folder of its own")
    with (folder / "commands.jsonl").open("w", encoding="utf-8", newline="\n") as commands_file:
        summary = _Summary(time_range, commands_file)
        checkpoint = None if latest is None else latest.checkpoint
        log = _read_chain(store.records(), checkpoint, summary, progress, store.instance)
        summary.flush_commands()
    accounts = [_account_row(key) for key in store.list_keys()]
    checkpoint_problem = log.checkpoint_problem or ("" if latest is None else latest.problem)
    journal_problem = _journal_problem(store, config)

    policies = _write_policies(folder, config)
    _write_sessions(folder, summary.sessions_in_order())
    _write_csv(folder / "accounts.csv", ACCOUNT_FIELDS, accounts)
    _write_csv(
        folder / "approvals.csv",
        APPROVAL_FIELDS,
        (
            {**row, "time": iso_time(row["time"]), "expires_at": iso_time(row["expires_at"])}
            for row in summary.approvals
        ),
    )
    active_grants = len(store.list_grants(active_at=now, limit=1_000_000))
    verification_doc = _verification_doc(
        log.chain, checkpoint_problem, journal_problem, summary, latest
    )
    _write_json(folder / "verification.json", verification_doc)
    document = _summary_doc(
        summary=summary,
        config=config,
        config_file=config_file,
        time_range=time_range,
        now=now,
        verification=verification_doc,
        policies=policies,
        accounts=len(accounts),
        active_grants=active_grants,
    )
    _write_json(folder / "summary.json", document)
    (folder / "index.md").write_text(render_markdown(document), encoding="utf-8")
    (folder / "index.html").write_text(render_html(document), encoding="utf-8")
    files = write_manifest(folder)
    return PackResult(
        folder=folder,
        verification=log.chain,
        checkpoint_problem=checkpoint_problem,
        journal_problem=journal_problem,
        sessions=len(summary.sessions),
        commands=summary.command_count,
        files=(*files, MANIFEST),
    )


def write_manifest(folder: Path) -> list[str]:
    """Write ``manifest.sha256`` with the SHA-256 of every other file under ``folder``.

    :return: the files listed, relative to ``folder``, sorted.
    """
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    )
    lines = [f"{_file_sha256(folder / name)}  {name}\n" for name in files]
    (folder / MANIFEST).write_text("".join(lines), encoding="utf-8", newline="\n")
    return files


# -- reading the chain ---------------------------------------------------------------------------


def _read_chain(
    records: Iterator[AuditRecord],
    checkpoint: Checkpoint | None,
    summary: _Summary,
    progress: Callable[[int], None],
    instance: str,
) -> LogVerification:
    """Verify the chain of gateway instance ``instance`` (the config's own; the pack holds
    that instance's records) while summarising it."""
    records = iter(records)

    def observed() -> Iterator[AuditRecord]:
        for record in records:
            summary.add(record)
            progress(summary.read)
            yield record

    result = verify_log(observed(), checkpoint, instance=instance)
    # Verification stops at the first break; the pack still describes every record after it.
    for record in records:
        summary.add(record)
        progress(summary.read)
    return result


class _Summary:
    """Counts and session rows of the records in a range, fed one record at a time.

    Commands are written to ``commands.jsonl`` as soon as their last record is read, so memory
    holds only the commands still running and one row per session in the range.
    """

    def __init__(self, time_range: TimeRange, commands_file: IO[str]) -> None:
        self.time_range = time_range
        self.read = 0
        self.head_seq = 0
        self.head_hash = ""
        self.in_range = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.kinds: Counter[str] = Counter()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.command_count = 0
        self.verdicts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.blocked_by_rule: Counter[str] = Counter()
        self.blocked: list[dict[str, Any]] = []
        self._open_commands: dict[tuple[str, int], dict[str, Any]] = {}
        self._commands_file = commands_file
        self.approvals: list[dict[str, Any]] = []

    def add(self, record: AuditRecord) -> None:
        self.read += 1
        self.head_seq, self.head_hash = record.seq, record.hash
        covered = self.time_range.covers(record.time)
        if covered:
            self.in_range += 1
            if self.first_seq is None:
                self.first_seq = record.seq
            self.last_seq = record.seq
            self.kinds[record.kind] += 1
        data = record.data
        if covered and record.kind in REVIEW_EVENTS:
            self.approvals.append(_approval_row(record))
        # What happens to a session or command of the range after the range ends (its end,
        # its verdict, its outcome) still describes it.
        if record.kind == "session_started" and covered:
            self.sessions[record.session_id] = _session_row(record)
        elif record.kind == "session_closed":
            session = self.sessions.get(record.session_id)
            if session is not None:
                session["ended_at"] = record.time
                session["end_reason"] = data.get("reason", "")
            for key in [k for k in self._open_commands if k[0] == record.session_id]:
                self._finish(key)
        elif record.kind == "command_received" and covered:
            self._received(record)
        elif record.kind == "command_decided":
            command = self._open_commands.get((record.session_id, data.get("seq", -1)))
            if command is not None:
                command["verdict"] = data.get("verdict")
                for field in ("reason", "plugin", "rule"):
                    command[field] = data.get(field, "")
        elif record.kind == "command_completed":
            key = (record.session_id, data.get("seq", -1))
            command = self._open_commands.get(key)
            if command is not None:
                command["completed_at"] = record.time
                for field in ("status", "rows", "bytes", "duration", "error_code", "error_message"):
                    command[field] = data.get(field)
                self._finish(key)

    def _received(self, record: AuditRecord) -> None:
        data = record.data
        self.command_count += 1
        session = self.sessions.get(record.session_id)
        if session is not None:
            session["command_count"] += 1
        key = (record.session_id, data.get("seq", -1))
        self._open_commands[key] = {
            "session_id": record.session_id,
            "seq": data.get("seq"),
            "record_seq": record.seq,
            "received_at": record.time,
            "kind": data.get("kind"),
            "text": shown_text(data.get("text")),
            "parameter_count": data.get("parameter_count"),
            "statement_name": data.get("statement_name"),
            "verdict": None,
            "reason": "",
            "plugin": "",
            "rule": "",
            "status": None,
            "rows": None,
            "bytes": None,
            "duration": None,
            "error_code": None,
            "error_message": None,
            "completed_at": None,
        }

    def _finish(self, key: tuple[str, int]) -> None:
        command = self._open_commands.pop(key)
        verdict = command["verdict"] or "undecided"
        self.verdicts[verdict] += 1
        self.statuses[command["status"] or "unfinished"] += 1
        if verdict == "block":
            self.blocked_by_rule[command["rule"] or "(no rule)"] += 1
            if len(self.blocked) < LISTED_BLOCKED:
                self.blocked.append(command)
        shown = {**command, "received_at": iso_time(command["received_at"])}
        shown["completed_at"] = iso_time(command["completed_at"])
        self._commands_file.write(json.dumps(shown, ensure_ascii=False, sort_keys=True) + "\n")

    def flush_commands(self) -> None:
        """Write the commands whose session had not ended when the range or chain did."""
        for key in list(self._open_commands):
            self._finish(key)

    def sessions_in_order(self) -> list[dict[str, Any]]:
        return sorted(self.sessions.values(), key=lambda s: (s["started_at"], s["id"]))


def _session_row(record: AuditRecord) -> dict[str, Any]:
    data = record.data
    return {
        "id": record.session_id,
        "connection": data.get("connection"),
        "protocol": data.get("protocol"),
        "target": data.get("target"),
        "identity": data.get("identity"),
        "groups": list(data.get("groups") or []),
        "method": data.get("method"),
        "credential_id": data.get("credential_id"),
        "client_address": data.get("client_address"),
        "client_tls": data.get("client_tls"),
        "upstream_tls": data.get("upstream_tls"),
        "started_at": data.get("started_at", record.time),
        "ended_at": None,
        "end_reason": None,
        "command_count": 0,
        "attributes": dict(data.get("attributes") or {}),
    }


def _approval_row(record: AuditRecord) -> dict[str, Any]:
    data = record.data
    by = data.get("by", "")
    return {
        "time": record.time,
        "event": record.kind,
        "review": data.get("review", ""),
        "review_kind": data.get("review_kind", "access" if "grant" in record.kind else ""),
        "requester": data.get("requester", ""),
        "connection": data.get("connection", ""),
        "status": data.get("status", ""),
        "by": by if isinstance(by, str) else "",
        "reason": data.get("reason", ""),
        "grant": data.get("grant", "") or "",
        "identity": data.get("identity", ""),
        "approved_by": list(data.get("approved_by") or []),
        "expires_at": data.get("expires_at"),
    }


def _account_row(key: Any) -> dict[str, Any]:
    # Named fields only: a key record also carries what checks the secret, never shown.
    return {
        "key_id": key.key_id,
        "identity": key.identity,
        "groups": list(key.groups),
        "created_at": iso_time(key.created_at),
        "expires_at": iso_time(key.expires_at),
        "revoked_at": iso_time(key.revoked_at),
        "last_used_at": iso_time(key.last_used_at),
    }


# -- writing the files ---------------------------------------------------------------------------


def policy_excerpt(connection: ConnectionConfig) -> dict[str, Any]:
    """The settings of ``connection`` that decide who may do what through it, without its
    credential: access groups, TLS on both sides, and each enabled plugin with its options."""
    return {
        "connection": connection.name,
        "protocol": connection.protocol,
        "listen": connection.listen,
        "target": connection.target,
        "allow_groups": list(connection.allow_groups),
        "client_tls": connection.client_tls,
        "client_auth": connection.client_auth,
        "allow_cleartext_password": connection.allow_cleartext_password,
        "upstream_tls": {
            "sslmode": connection.upstream_tls.sslmode,
            "ca_file": connection.upstream_tls.ca_file,
            "server_name": connection.upstream_tls.server_name,
        },
        "plugins": list(connection.plugins),
        "options": {
            name: dict(connection.plugin_options.get(name, {})) for name in connection.plugins
        },
    }


def _write_policies(folder: Path, config: Config) -> list[dict[str, Any]]:
    (folder / "policies").mkdir()
    written = []
    for connection in config.connections:
        name = f"policies/{connection.name}.json"
        _write_json(folder / name, policy_excerpt(connection))
        written.append(
            {
                "connection": connection.name,
                "plugins": list(connection.plugins),
                "allow_groups": list(connection.allow_groups),
                "client_tls": connection.client_tls,
                "sslmode": connection.upstream_tls.sslmode,
                "file": name,
                "sha256": _file_sha256(folder / name),
            }
        )
    return written


def _write_sessions(folder: Path, sessions: list[dict[str, Any]]) -> None:
    shown = [
        {**s, "started_at": iso_time(s["started_at"]), "ended_at": iso_time(s["ended_at"])}
        for s in sessions
    ]
    _write_json(folder / "sessions.json", shown)
    _write_csv(folder / "sessions.csv", SESSION_FIELDS, shown)


def _write_csv(path: Path, fields: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_csv_cell(row[field]) for field in fields])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(map(str, value))
    text = str(value)
    # A spreadsheet runs a cell that starts like this as a formula (CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _json_value(value: Any) -> Any:
    if isinstance(value, Secret):
        return {"secret_reference": value.reference}
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _write_json(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=_json_value)
    path.write_text(text + "\n", encoding="utf-8", newline="\n")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the summary -------------------------------------------------------------------------------


def _journal_problem(store: Store, config: Config) -> str:
    waiting = backlog(config.journal_path, store.journal_mark())
    if waiting is None or not waiting.stranded:
        return ""
    return (
        f"the audit journal {waiting.path} holds {waiting.entries} record(s) the store does"
        " not have yet (the gateway stopped before appending them)"
    )


def _verification_doc(
    result: VerifyResult,
    checkpoint_problem: str,
    journal_problem: str,
    summary: _Summary,
    latest: LatestCheckpoint | None,
) -> dict[str, Any]:
    checkpoint = None if latest is None else latest.checkpoint
    if latest is None:
        note = NO_CHECKPOINT
    elif checkpoint is None and not latest.problem:
        note = f"no checkpoint written yet in {latest.source}"
    else:
        note = ""
    return {
        "ok": result.ok and not checkpoint_problem and not journal_problem,
        "chain_ok": result.ok,
        "checked": result.checked,
        "records_read": summary.read,
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem or checkpoint_problem,
        "head_seq": summary.head_seq,
        "head_hash": summary.head_hash,
        "checkpoint": None
        if checkpoint is None
        else {
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "time": iso_time(checkpoint.time),
            "source": "" if latest is None else latest.source,
        },
        "checkpoint_note": note,
        "checkpoint_problem": checkpoint_problem,
        "journal_problem": journal_problem,
        "pruned": [
            {
                "first_seq": p.first_seq,
                "last_seq": p.last_seq,
                "older_than": iso_time(p.older_than),
                "pruned_at": iso_time(p.pruned_at),
                "record_seq": p.record_seq,
            }
            for p in result.pruned
        ],
        "durability": [
            {
                **(
                    {"mode": None, "sync_interval": None}
                    if p.durability is None
                    else p.durability.as_dict()
                ),
                "first_seq": p.first_seq,
                "last_seq": p.last_seq,
                "since": iso_time(p.since),
                "until": iso_time(p.until),
                "meaning": describe_durability(p.durability),
            }
            for p in result.durability
        ],
    }


def _summary_doc(
    *,
    summary: _Summary,
    config: Config,
    config_file: Path,
    time_range: TimeRange,
    now: float,
    verification: dict[str, Any],
    policies: list[dict[str, Any]],
    accounts: int,
    active_grants: int,
) -> dict[str, Any]:
    sessions = summary.sessions.values()
    document: dict[str, Any] = {
        "format": PACK_FORMAT,
        "gateway_version": __version__,
        "generated_at": iso_time(now),
        "range": {"since": iso_time(time_range.since), "until": iso_time(time_range.until)},
        "config": {"file": config_file.name, "sha256": _file_sha256(config_file)},
        "verification": verification,
        "records": {
            "in_range": summary.in_range,
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
            "by_kind": dict(sorted(summary.kinds.items())),
        },
        "sessions": {
            "count": len(summary.sessions),
            "ended": sum(1 for s in sessions if s["ended_at"] is not None),
            "identities": sorted({str(s["identity"]) for s in sessions}),
            "by_connection": dict(sorted(Counter(str(s["connection"]) for s in sessions).items())),
            "client_tls": sum(1 for s in sessions if s["client_tls"] is True),
            "upstream_tls": sum(1 for s in sessions if s["upstream_tls"] is True),
            "by_protocol": _by_protocol(list(sessions)),
        },
        "commands": {
            "count": summary.command_count,
            "by_verdict": {
                verdict: summary.verdicts.get(verdict, 0)
                for verdict in ("allow", "block", "hold", "undecided")
            },
            "by_status": dict(sorted(summary.statuses.items())),
            "blocked_by_rule": dict(sorted(summary.blocked_by_rule.items())),
            "blocked_listed": [
                {
                    "session_id": c["session_id"],
                    "seq": c["seq"],
                    "received_at": iso_time(c["received_at"]),
                    "text": c["text"],
                    "reason": c["reason"],
                    "rule": c["rule"],
                }
                for c in summary.blocked
            ],
        },
        **_approvals_doc(summary.approvals, config, active_grants),
        "accounts": {"count": accounts},
        "policies": policies,
    }
    document["controls"] = _controls(document, config)
    return document


def _by_protocol(sessions: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Sessions per protocol, and how many really used TLS on each side (as recorded)."""
    counts: dict[str, dict[str, int]] = {}
    for session in sessions:
        entry = counts.setdefault(
            str(session["protocol"]), {"sessions": 0, "client_tls": 0, "upstream_tls": 0}
        )
        entry["sessions"] += 1
        entry["client_tls"] += session["client_tls"] is True
        entry["upstream_tls"] += session["upstream_tls"] is True
    return dict(sorted(counts.items()))


def _approvals_doc(
    rows: list[dict[str, Any]], config: Config, active_grants: int
) -> dict[str, Any]:
    """The ``reviews`` and ``access_grants`` of ``summary.json``, from the range's records."""
    configured = any(c.access == "jit" or "approval" in c.plugins for c in config.connections)
    note = "" if configured or rows else NOT_RECORDED
    requested = [r for r in rows if r["event"] == "review_requested"]
    decided = [r for r in rows if r["event"] == "review_decided"]
    granted = [r for r in rows if r["event"] == "grant_created"]
    deciders = {
        name
        for r in decided
        if r["status"] in ("approved", "denied")
        for name in str(r["by"]).split(",")
        if name
    }
    voters = {str(r["by"]) for r in rows if r["event"] == "review_voted" and r["by"]}
    durations = [
        float(r["expires_at"]) - float(r["time"])
        for r in granted
        if isinstance(r["expires_at"], int | float)
    ]
    return {
        "reviews": {
            "count": len(requested),
            "by_kind": dict(sorted(Counter(str(r["review_kind"]) for r in requested).items())),
            "decided": dict(sorted(Counter(str(r["status"]) for r in decided).items())),
            "decided_by": sorted(deciders | voters),
            "timed_out": sum(1 for r in rows if r["event"] == "review_timed_out"),
            "reruns": sum(1 for r in rows if r["event"] == "review_rerun"),
            "note": note,
        },
        "access_grants": {
            "count": len(granted),
            "identities": sorted({str(r["identity"]) for r in granted}),
            "approved_by": sorted({name for r in granted for name in r["approved_by"]}),
            "longest_seconds": max(durations, default=None),
            "expired": sum(1 for r in rows if r["event"] == "grant_expired"),
            "revoked": sum(1 for r in rows if r["event"] == "grant_revoked"),
            "active_when_made": active_grants,
            "note": note,
        },
    }


def _reviews_text(doc: dict[str, Any]) -> str:
    reviews = doc["reviews"]
    if reviews["note"]:
        return f"Reviews: {reviews['note']}."
    decided = ", ".join(f"{k} {n}" for k, n in reviews["decided"].items()) or "none"
    return (
        f"Reviews requested: {reviews['count']}; decided: {decided}; decided by:"
        f" {', '.join(reviews['decided_by']) or 'nobody'}; holds timed out:"
        f" {reviews['timed_out']}; re-runs after a late approval: {reviews['reruns']}."
    )


def _grants_text(doc: dict[str, Any]) -> str:
    grants = doc["access_grants"]
    if grants["note"]:
        return f"Access grants: {grants['note']}."
    longest = grants["longest_seconds"]
    return (
        f"Access grants made: {grants['count']} (to {', '.join(grants['identities']) or 'nobody'};"
        f" approved by {', '.join(grants['approved_by']) or 'nobody'}; longest"
        f" {'-' if longest is None else f'{longest:g}s'}); expired: {grants['expired']},"
        f" revoked: {grants['revoked']}; active when the pack was made:"
        f" {grants['active_when_made']}."
    )


def _transport_lines(doc: dict[str, Any], config: Config) -> list[str]:
    """SC-8 per protocol: what the sessions really used, and what each connection offers."""
    lines = []
    for protocol, counts in doc["sessions"]["by_protocol"].items():
        if protocol in ENCRYPTED_PROTOCOLS:
            lines.append(
                f"{protocol}: {counts['sessions']} session(s), every one encrypted by the"
                " protocol itself (client to gateway and gateway to target)."
            )
        else:
            lines.append(
                f"{protocol}: {counts['sessions']} session(s); used TLS from the client:"
                f" {counts['client_tls']}; to the target: {counts['upstream_tls']}."
            )
    if not lines:
        lines.append("No sessions in range.")
    offered = []
    for connection in config.connections:
        upstream = f"sslmode {connection.upstream_tls.sslmode}"
        if connection.protocol in ENCRYPTED_PROTOCOLS:
            client = upstream = "encrypted (SSH)"
        elif connection.client_tls == "disabled":
            client = "no TLS (client_tls disabled)"
        elif config.gateway.tls_cert is None:
            client = "no TLS offered (no [gateway] tls_cert)"
        elif connection.client_tls == "required":
            client = "TLS required"
        else:
            client = "TLS offered, not required"
        offered.append(f"{connection.name}: from clients {client}; to the target {upstream}")
    lines.append("Configured: " + ("; ".join(offered) or "none") + ".")
    return lines


def _controls(doc: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Each control, the statements that demonstrate it, and the files holding the evidence."""
    sessions, commands, records = doc["sessions"], doc["commands"], doc["records"]
    verification = doc["verification"]
    verdicts = commands["by_verdict"]
    recorded = [c.name for c in config.connections if "recording" in c.plugins]
    unrecorded = [c.name for c in config.connections if "recording" not in c.plugins]
    guarded = [c.name for c in config.connections if "guardrails" in c.plugins]
    masked = [c.name for c in config.connections if "masking" in c.plugins]
    kinds = ", ".join(f"{k}: {n}" for k, n in records["by_kind"].items()) or "none"
    policy_files = [p["file"] for p in doc["policies"]]

    def names(items: list[str]) -> str:
        return ", ".join(items) if items else "none"

    chain = (
        f"Hash chain verified intact: {verification['checked']} records, head record "
        f"{verification['head_seq']} ({verification['head_hash'] or 'empty store'})."
        if verification["chain_ok"]
        else f"FAILED: the hash chain does not verify at record {verification['first_bad_seq']}: "
        f"{verification['problem']}."
    )
    checkpoint_text = f"Latest signed checkpoint: {_checkpoint_text(verification)}."
    retention = (
        "Records pruned under retention: "
        + (
            "; ".join(
                f"records {p['first_seq']} to {p['last_seq']} (older than {p['older_than']}), "
                f"pruned {p['pruned_at']}"
                for p in verification["pruned"]
            )
            or "none"
        )
        + "."
    )
    control_rows = [
        (
            "AU-2",
            "Event logging",
            [
                f"Connections recording every session and command: {names(recorded)}.",
                f"Connections without recording: {names(unrecorded)}.",
                f"Audit records in range by kind: {kinds}.",
            ],
            ["summary.json", *policy_files],
        ),
        (
            "AU-3",
            "Content of audit records",
            [
                f"Sessions: {sessions['count']}, each with who (identity, groups, method, key id), "
                "from where (client address), to what (connection, target) and when.",
                f"Commands: {commands['count']}, each with text, time, verdict, reason, rule, "
                "status, rows and error.",
            ],
            ["sessions.csv", "sessions.json", "commands.jsonl"],
        ),
        (
            "AU-9",
            "Protection of audit information",
            [chain, checkpoint_text, retention],
            ["verification.json"],
        ),
        (
            "AU-12",
            "Audit record generation",
            [
                f"{records['in_range']} records written in range (records "
                f"{records['first_seq'] or '-'} to {records['last_seq'] or '-'}), each "
                "session and command recorded before it was allowed to proceed.",
                _durability_text(verification["durability"], records),
            ],
            ["summary.json", "verification.json"],
        ),
        (
            "AC-2",
            "Account management",
            [
                f"API keys: {doc['accounts']['count']} (identity, groups, created, expires, "
                "revoked, last used).",
                f"Identities with sessions in range: {names(sessions['identities'])}.",
                _grants_text(doc),
            ],
            ["accounts.csv", "sessions.csv", "approvals.csv"],
        ),
        (
            "AC-3",
            "Access enforcement",
            [
                f"Commands by verdict: allow {verdicts['allow']}, block {verdicts['block']}, "
                f"hold {verdicts['hold']}, undecided {verdicts['undecided']}.",
                _reviews_text(doc),
            ],
            ["commands.jsonl", "approvals.csv", *policy_files],
        ),
        (
            "AC-6",
            "Least privilege",
            [
                "Each connection admits only its allow_groups: "
                + "; ".join(
                    f"{p['connection']}: {', '.join(p['allow_groups']) or 'nobody'}"
                    for p in doc["policies"]
                )
                + ".",
                f"Connections with guardrails: {names(guarded)}.",
                "Just-in-time connections: "
                + names([c.name for c in config.connections if c.access == "jit"])
                + f". {_grants_text(doc)}",
            ],
            [*policy_files, "approvals.csv"],
        ),
        (
            "SC-7",
            "Boundary protection",
            [
                "Sessions in range by connection: "
                + (", ".join(f"{k}: {n}" for k, n in sessions["by_connection"].items()) or "none")
                + "; the caller never receives the target credential.",
            ],
            ["sessions.csv", *policy_files],
        ),
        (
            "SC-8",
            "Transmission confidentiality and integrity",
            _transport_lines(doc, config),
            ["sessions.csv", *policy_files],
        ),
        (
            "SI-4",
            "System monitoring",
            [
                f"Commands blocked: {verdicts['block']} (by rule: "
                + (", ".join(f"{k}: {n}" for k, n in commands["blocked_by_rule"].items()) or "none")
                + ").",
                f"Connections with guardrails: {names(guarded)}; with masking: {names(masked)}.",
            ],
            ["commands.jsonl", *policy_files],
        ),
        (
            "IR-4",
            "Incident handling",
            [
                f"Sessions ({sessions['count']}) and their commands ({commands['count']}) can be "
                "reconstructed in order (hoopgw replay SESSION).",
                "Command outcomes: "
                + (", ".join(f"{k}: {n}" for k, n in commands["by_status"].items()) or "none")
                + ".",
            ],
            ["commands.jsonl", "sessions.json"],
        ),
    ]
    return [
        {"id": control, "title": title, "evidence": evidence, "files": files}
        for control, title, evidence, files in control_rows
    ]


# -- rendering -----------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code,.mono{font-family:ui-monospace,monospace;font-size:.9em}
.mono{white-space:pre-wrap;word-break:break-all}
.ok,.failed{padding:.8em 1em;border-radius:4px;font-weight:600;font-size:1.1em}
.ok{background:#e6f4ea;border:2px solid #2e7d32;color:#1b5e20}
.failed{background:#fdecea;border:3px solid #c62828;color:#b71c1c;font-size:1.4em}
ul{margin:0;padding-left:1.2em}
"""


def _durability_text(periods: list[dict[str, Any]], records: dict[str, Any]) -> str:
    """Which ``audit_durability`` covered the records in range (``verification.json`` lists
    every period of the chain)."""
    first, last = records["first_seq"], records["last_seq"]
    if first is None or last is None:
        return "Audit durability: no records in range."
    overlapping = [p for p in periods if p["first_seq"] <= last and p["last_seq"] >= first]
    return (
        "Audit durability in force: "
        + "; ".join(
            f"records {max(p['first_seq'], first)} to {min(p['last_seq'], last)}: {p['meaning']}"
            for p in overlapping
        )
        + "."
    )


def _status_line(doc: dict[str, Any]) -> str:
    verification = doc["verification"]
    if verification["ok"]:
        return (
            f"VERIFIED: the audit chain is intact ({verification['checked']} records, each"
            " record linked by its hash to the one before: a changed, reordered or removed"
            f" record up to record {verification['head_seq']} would show). "
            + _tail_text(verification)
        )
    if verification["chain_ok"] and not verification["checkpoint_problem"]:
        return (
            f"INCOMPLETE: {verification['journal_problem']}. Start the gateway, which appends"
            " them, and make the pack again."
        )
    if verification["chain_ok"]:
        return (
            "FAILED VERIFICATION: the audit log does not match its latest checkpoint"
            f" — {verification['checkpoint_problem']}. Treat this evidence as unreliable."
        )
    return (
        f"FAILED VERIFICATION: the audit chain breaks at record {verification['first_bad_seq']}"
        f" — {verification['problem']}. Treat this evidence as unreliable."
    )


def _tail_text(verification: dict[str, Any]) -> str:
    """What the chain alone cannot prove: that no record was removed from its end."""
    checkpoint = verification["checkpoint"]
    if checkpoint is None:
        return (
            "Without a signed checkpoint, removal of the newest records cannot be detected"
            " (configure [gateway] signing_key so that checkpoints are written)."
        )
    return (
        f"The log matches the signed checkpoint of record {checkpoint['seq']}"
        f" ({checkpoint['time']}): nothing up to it was removed; removal of newer records"
        " cannot be detected."
    )


def render_html(doc: dict[str, Any]) -> str:
    """The pack's ``index.html`` for a summary document; every recorded value is escaped."""
    e = html.escape

    def cell(value: Any) -> str:
        return e("-" if value is None or value == "" else str(value))

    def link(file: str) -> str:
        return f'<a href="{e(file)}">{e(file)}</a>'

    controls = "".join(
        f"<tr><td><b>{e(c['id'])}</b><br>{e(c['title'])}</td>"
        f"<td><ul>{''.join(f'<li>{e(line)}</li>' for line in c['evidence'])}</ul></td>"
        f"<td>{'<br>'.join(link(f) for f in c['files'])}</td></tr>"
        for c in doc["controls"]
    )
    policies = "".join(
        f"<tr><td>{e(p['connection'])}</td><td>{e(', '.join(p['plugins']) or 'none')}</td>"
        f'<td><a href="{e(p["file"])}">{e(p["file"])}</a></td>'
        f'<td class="mono">{e(p["sha256"])}</td></tr>'
        for p in doc["policies"]
    )
    verdicts = "".join(
        f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in doc["commands"]["by_verdict"].items()
    )
    blocked = "".join(
        f'<tr><td class="mono">{e(b["session_id"])} #{cell(b["seq"])}</td>'
        f"<td>{cell(b['received_at'])}</td>"
        f'<td class="mono">{e(_shorten(b["text"]))}</td>'
        f"<td>{cell(b['rule'])}</td><td>{cell(b['reason'])}</td></tr>"
        for b in doc["commands"]["blocked_listed"]
    )
    blocked_table = (
        "<table><tr><th>session #command</th><th>received</th><th>statement</th><th>rule</th>"
        f"<th>reason</th></tr>{blocked}</table>"
        if blocked
        else "<p>No command was blocked in this range.</p>"
    )
    verification = doc["verification"]
    status_class = "ok" if verification["ok"] else "failed"
    since, until = doc["range"]["since"], doc["range"]["until"] or doc["generated_at"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hoopgw evidence pack {e(since)} to {e(until)}</title>
<style>{_CSS}</style></head>
<body>
<h1>hoopgw evidence pack</h1>
<p class="{status_class}">{e(_status_line(doc))}</p>
<p>Records from <b>{e(since)}</b> up to <b>{e(until)}</b> (UTC);
generated {cell(doc["generated_at"])} by hoopgw {e(doc["gateway_version"])}
from config <code>{e(doc["config"]["file"])}</code>
(SHA-256 <span class="mono">{e(doc["config"]["sha256"])}</span>).
Every file of this pack is listed with its SHA-256 in <a href="{MANIFEST}">{MANIFEST}</a>
(check with <code>sha256sum -c {MANIFEST}</code> in this folder).</p>

<h2>Controls (NIST SP 800-53)</h2>
<table><tr><th>control</th><th>demonstrated by</th><th>files</th></tr>{controls}</table>

<h2>Chain verification</h2>
<table>
<tr><th>result</th><td>{"intact" if verification["ok"] else "FAILED"}</td></tr>
<tr><th>records checked</th>
<td>{verification["checked"]} of {verification["records_read"]}</td></tr>
<tr><th>first bad record</th><td>{cell(verification["first_bad_seq"])}</td></tr>
<tr><th>problem</th><td>{cell(verification["problem"])}</td></tr>
<tr><th>chain head</th>
<td class="mono">{verification["head_seq"]} {cell(verification["head_hash"])}</td></tr>
<tr><th>latest checkpoint</th><td>{e(_checkpoint_text(verification))}</td></tr>
</table>

<h2>Sessions and commands</h2>
<p>{e(_activity_line(doc))}
Lists: <a href="sessions.csv">sessions.csv</a>, <a href="sessions.json">sessions.json</a>,
<a href="commands.jsonl">commands.jsonl</a>.</p>
<table><tr><th>verdict</th><th>commands</th></tr>{verdicts}</table>
<h2>Blocked commands</h2>
{blocked_table}

<h2>Reviews and access grants</h2>
<p>{e(_reviews_text(doc))}<br>{e(_grants_text(doc))} Every event: {link("approvals.csv")}.</p>

<h2>Policies in force</h2>
<p>As configured when the pack was made; credentials are left out.</p>
<table><tr><th>connection</th><th>plugins</th><th>excerpt</th><th>SHA-256</th></tr>{policies}</table>
</body></html>
"""


def render_markdown(doc: dict[str, Any]) -> str:
    """The pack's ``index.md`` for a summary document; recorded values cannot inject markup."""
    m = _md
    verification = doc["verification"]
    since, until = doc["range"]["since"], doc["range"]["until"] or doc["generated_at"]
    lines = [
        "# hoopgw evidence pack",
        "",
        f"**{m(_status_line(doc))}**",
        "",
        f"Records from {m(since)} up to {m(until)} (UTC); generated {m(doc['generated_at'])} by "
        f"hoopgw {m(doc['gateway_version'])} from config `{m(doc['config']['file'])}` "
        f"(SHA-256 `{doc['config']['sha256']}`). Every file of this pack is listed with its "
        f"SHA-256 in [{MANIFEST}]({MANIFEST}) (check with `sha256sum -c {MANIFEST}` in this "
        "folder).",
        "",
        "## Controls (NIST SP 800-53)",
        "",
        "| control | demonstrated by | files |",
        "|---|---|---|",
    ]
    for control in doc["controls"]:
        evidence = "<br>".join(m(line) for line in control["evidence"])
        files = ", ".join(f"[{m(f)}]({f})" for f in control["files"])
        lines.append(f"| **{control['id']}** {m(control['title'])} | {evidence} | {files} |")
    lines += [
        "",
        "## Chain verification",
        "",
        f"- result: {'intact' if verification['ok'] else 'FAILED'}",
        f"- records checked: {verification['checked']} of {verification['records_read']}",
        f"- first bad record: {m(verification['first_bad_seq'])}",
        f"- problem: {m(verification['problem'])}",
        f"- chain head: {verification['head_seq']} `{verification['head_hash'] or '-'}`",
        f"- latest checkpoint: {m(_checkpoint_text(verification))}",
        "",
        "## Sessions and commands",
        "",
        f"{m(_activity_line(doc))} Lists: [sessions.csv](sessions.csv), "
        "[sessions.json](sessions.json), [commands.jsonl](commands.jsonl).",
        "",
        "| verdict | commands |",
        "|---|---|",
        *(f"| {m(k)} | {v} |" for k, v in doc["commands"]["by_verdict"].items()),
        "",
        "## Blocked commands",
        "",
    ]
    blocked = doc["commands"]["blocked_listed"]
    if blocked:
        lines += [
            "| session #command | received | statement | rule | reason |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {m(b['session_id'])} #{m(b['seq'])} | {m(b['received_at'])} | "
            f"{m(_shorten(b['text']))} | {m(b['rule'])} | {m(b['reason'])} |"
            for b in blocked
        ]
    else:
        lines.append("No command was blocked in this range.")
    lines += [
        "",
        "## Reviews and access grants",
        "",
        f"- {m(_reviews_text(doc))}",
        f"- {m(_grants_text(doc))}",
        "- every event: [approvals.csv](approvals.csv)",
        "",
        "## Policies in force",
        "",
        "As configured when the pack was made; credentials are left out.",
        "",
        "| connection | plugins | excerpt | SHA-256 |",
        "|---|---|---|---|",
        *(
            f"| {m(p['connection'])} | {m(', '.join(p['plugins']) or 'none')} | "
            f"[{m(p['file'])}]({p['file']}) | `{p['sha256']}` |"
            for p in doc["policies"]
        ),
        "",
    ]
    return "\n".join(lines)


def _activity_line(doc: dict[str, Any]) -> str:
    sessions = doc["sessions"]
    return (
        f"Sessions started in range: {sessions['count']} ({sessions['ended']} ended), "
        f"identities: {len(sessions['identities'])}; commands received: "
        f"{doc['commands']['count']}."
    )


def _checkpoint_text(verification: dict[str, Any]) -> str:
    checkpoint = verification["checkpoint"]
    if checkpoint is None:
        return str(verification["checkpoint_note"] or verification["checkpoint_problem"])
    match = (
        f"FAILED: {verification['checkpoint_problem']}"
        if verification["checkpoint_problem"]
        else "the log matches it"
    )
    return (
        f"record {checkpoint['seq']} ({checkpoint['hash']}), signed {checkpoint['time']}, "
        f"read from {checkpoint['source']}; {match}"
    )


def _shorten(text: Any) -> str:
    text = " ".join(str(text).split())
    if len(text) > LISTED_TEXT_CHARS:
        return text[: LISTED_TEXT_CHARS - 1] + "…"
    return text


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(value: Any) -> str:
    """``value`` as inert Markdown text: on one line, HTML escaped, markup characters quoted."""
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
