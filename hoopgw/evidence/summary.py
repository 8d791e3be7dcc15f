"""The summary of an evidence pack: the counts, the chain verification, the approvals and
the transport facts that the index shows (``summary.json``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import IO, Any

from hoopgw import __version__
from hoopgw.audit.chain import AuditRecord, VerifyResult, describe_durability, shown_text
from hoopgw.audit.journal import backlog
from hoopgw.cli.common import iso_time
from hoopgw.config.load import Config
from hoopgw.evidence.controls import controls
from hoopgw.evidence.model import (
    LISTED_BLOCKED,
    NO_CHECKPOINT,
    NOT_RECORDED,
    PACK_FORMAT,
    REVIEW_EVENTS,
    LatestCheckpoint,
    TimeRange,
    file_sha256,
)
from hoopgw.store.base import Store


class Summary:
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
            self.approvals.append(approval_row(record))
        # What happens to a session or command of the range after the range ends (its end,
        # its verdict, its outcome) still describes it.
        if record.kind == "session_started" and covered:
            self.sessions[record.session_id] = session_row(record)
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
                _decided(command, data)
        elif record.kind == "command_completed":
            key = (record.session_id, data.get("seq", -1))
            command = self._open_commands.get(key)
            if command is not None:
                if "verdict" in data:  # an allowed command: its verdict joined its completion
                    _decided(command, data)
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


def session_row(record: AuditRecord) -> dict[str, Any]:
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


def approval_row(record: AuditRecord) -> dict[str, Any]:
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


def find_journal_problem(store: Store, config: Config) -> str:
    waiting = backlog(config.journal_path, store.journal_mark())
    if waiting is None or not waiting.stranded:
        return ""
    return (
        f"the audit journal {waiting.path} holds {waiting.entries} record(s) the store does"
        " not have yet (the gateway stopped before appending them)"
    )


def undrained_problem(store: Store, instance: str) -> str:
    """Why ``instance``'s chain (another instance's, in a shared store) is not complete yet: its
    audit writer stopped without draining its journal; empty when it is complete."""
    for writer in store.writers():
        if writer.instance == instance and writer.undrained:
            return (
                f"the audit writer of instance {instance} stopped without draining its journal"
                f" ({writer.journal}): records that ran may be missing until it starts again"
            )
    return ""


def combined_verification(documents: list[dict[str, Any]], own: str) -> dict[str, Any]:
    """The pack's verification document over every chain it read (one per gateway instance):
    the fields of the first chain that does not verify (else of ``own``'s, else of the first),
    its problems prefixed with its instance when there are several, ``ok`` only when every
    chain verifies, and each chain's own document in ``chains``."""
    failing = [d for d in documents if not d["ok"]]
    mine = [d for d in documents if d["instance"] == own]
    shown = dict((failing or mine or documents)[0])
    if len(documents) > 1:
        for key in ("problem", "checkpoint_problem", "journal_problem"):
            if shown[key]:
                shown[key] = f"instance {shown['instance']}: {shown[key]}"
    shown["ok"] = not failing
    shown["chains"] = documents
    return shown


def verification_document(
    result: VerifyResult,
    checkpoint_problem: str,
    journal_problem: str,
    summary: Summary,
    latest: LatestCheckpoint | None,
    *,
    instance: str = "",
    read: int | None = None,
) -> dict[str, Any]:
    """One chain's verification document: ``summary``'s head is that chain's last record.

    :param instance: the gateway instance whose chain it is.
    :param read: records read of that chain (default: every record ``summary`` read).
    """
    checkpoint = None if latest is None else latest.checkpoint
    if latest is None:
        note = NO_CHECKPOINT
    elif checkpoint is None and not latest.problem:
        note = f"no checkpoint written yet in {latest.source}"
    else:
        note = ""
    return {
        "instance": instance,
        "ok": result.ok and not checkpoint_problem and not journal_problem,
        "chain_ok": result.ok,
        "checked": result.checked,
        "records_read": summary.read if read is None else read,
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


def summary_document(
    *,
    summary: Summary,
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
        "config": {"file": config_file.name, "sha256": file_sha256(config_file)},
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
    document["controls"] = controls(document, config)
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


def _decided(command: dict[str, Any], data: dict[str, Any]) -> None:
    """Note a command's verdict, from its ``command_decided`` or ``command_completed`` record."""
    command["verdict"] = data.get("verdict")
    for field in ("reason", "plugin", "rule"):
        command[field] = data.get(field, "")
