"""What the parts of an evidence pack share: its constants, the time range, the latest
checkpoint, and the sentences both the index and the control map say."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import attrs

from hoopgw.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint_file,
    load_signing_key,
    read_checkpoint_file,
)
from hoopgw.config.load import Config

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


def latest_checkpoint(config: Config, instance: str | None = None) -> LatestCheckpoint | None:
    """The newest checkpoint the gateway wrote for ``instance``'s chain (default: the config's
    own instance), verified with its signing key's public half; None when the config has no
    ``signing_key`` (no checkpoints are written)."""
    if config.gateway.signing_key is None:
        return None
    folder = config.chain_checkpoint_path(config.gateway.instance if instance is None else instance)
    try:
        path = latest_checkpoint_file(folder)
        if path is None:
            return LatestCheckpoint(checkpoint=None, source=str(folder))
        public_key = load_signing_key(config.gateway.signing_key.reveal()).public_key()
        return LatestCheckpoint(checkpoint=read_checkpoint_file(path, public_key), source=str(path))
    except CheckpointError as exc:
        return LatestCheckpoint(checkpoint=None, source=str(folder), problem=str(exc))


def chains_text(verification: dict[str, Any]) -> str:
    """Which gateway instances' chains the pack verified, each with its result; empty for the
    one chain of a SQLite store."""
    chains = verification.get("chains", [])
    if len(chains) < 2:
        return ""
    each = [
        f"{c['instance']} ("
        + (
            f"intact, {c['checked']} records, head {c['head_seq']}"
            if c["ok"]
            else f"FAILED: {c['problem'] or c['checkpoint_problem'] or c['journal_problem']}"
        )
        + ")"
        for c in chains
    ]
    return f"Chains of {len(chains)} gateway instances verified: {'; '.join(each)}."


def reviews_text(doc: dict[str, Any]) -> str:
    reviews = doc["reviews"]
    if reviews["note"]:
        return f"Reviews: {reviews['note']}."
    decided = ", ".join(f"{k} {n}" for k, n in reviews["decided"].items()) or "none"
    return (
        f"Reviews requested: {reviews['count']}; decided: {decided}; decided by:"
        f" {', '.join(reviews['decided_by']) or 'nobody'}; holds timed out:"
        f" {reviews['timed_out']}; re-runs after a late approval: {reviews['reruns']}."
    )


def grants_text(doc: dict[str, Any]) -> str:
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


def durability_text(periods: list[dict[str, Any]], records: dict[str, Any]) -> str:
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


def describe_checkpoint(verification: dict[str, Any]) -> str:
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()
