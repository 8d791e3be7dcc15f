"""The ``sessions`` and ``commands`` projections of the audit records, for the CLI, the admin
API, the console and replay; ``audit_records`` is the evidence.

:func:`project` updates them from a batch of records inside the transaction that appends the
batch, in the audit writer process's store thread: after the records are durable in the journal
and answered, so off the path a command waits on. Each kind is one batched statement.

A ``command_completed`` record may also carry the command's verdict (``verdict``, ``reason``,
``plugin``, ``rule``): the recording plugin writes a plain allow that way, in the completion
record, instead of a ``command_decided`` record of its own (see ``docs/recording.md``); both
fill the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hoopgw.audit.chain import AuditRecord, canonical_json
from hoopgw.store.sqlite_rows import (
    row_dict,
    row_integer,
    row_list,
    row_number,
    row_text,
)

SESSION_COLUMNS = (
    "id, connection, protocol, target, identity, groups, method, credential_id, client_address, "
    "client_tls, upstream_tls, started_at, ended_at, end_reason, command_count, attributes"
)


def project(conn: Any, records: Sequence[AuditRecord]) -> None:
    """Update the projections from ``records`` (in chain order) on ``conn``, inside the
    caller's transaction.

    A malformed entry must not fail the other sessions' records committed with it, so values
    are coerced. Statements run one kind at a time (a batch holds many sessions' records), in the
    order a session's records come, so each kind finds the rows the earlier kinds made.
    """
    started, received, decided, completed, closed = [], [], [], [], []
    for record in records:
        data = record.data
        kind = record.kind
        command_seq = row_integer(data.get("seq"))
        if kind.startswith("command_") and command_seq is None:
            continue
        if kind == "session_started":
            started.append(
                (
                    record.session_id,
                    row_text(data.get("connection")),
                    row_text(data.get("protocol")),
                    row_text(data.get("target")),
                    row_text(data.get("identity")),
                    canonical_json(row_list(data.get("groups"))),
                    row_text(data.get("method")),
                    row_text(data.get("credential_id")),
                    row_text(data.get("client_address")),
                    bool(data.get("client_tls")),
                    bool(data.get("upstream_tls")),
                    row_number(data.get("started_at")) or record.time,
                    canonical_json(row_dict(data.get("attributes"))),
                )
            )
        elif kind == "command_received":
            received.append(
                (
                    record.session_id,
                    command_seq,
                    row_text(data.get("kind")),
                    row_text(data.get("text")),
                    row_integer(data.get("parameter_count")) or 0,
                    row_text(data.get("statement_name")),
                    record.time,
                )
            )
        elif kind == "command_decided" or (kind == "command_completed" and "verdict" in data):
            decided.append(
                (
                    row_text(data.get("verdict")),
                    row_text(data.get("reason")),
                    row_text(data.get("plugin")),
                    row_text(data.get("rule")),
                    record.session_id,
                    command_seq,
                )
            )
        if kind == "command_completed":
            sample = data.get("sample")
            completed.append(
                (
                    row_text(data.get("status")),
                    row_integer(data.get("rows")),
                    row_integer(data.get("bytes")),
                    row_number(data.get("duration")),
                    row_text(data.get("error_code")),
                    row_text(data.get("error_message")),
                    None if sample is None else canonical_json(sample),
                    record.time,
                    record.session_id,
                    command_seq,
                )
            )
        elif kind == "session_closed":
            closed.append((record.time, row_text(data.get("reason")), record.session_id))
    if started:
        conn.executemany(
            f"INSERT INTO sessions ({SESSION_COLUMNS}) "  # noqa: S608 -- fixed fragments
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?) "
            "ON CONFLICT (id) DO NOTHING",
            started,
        )
    if received:
        _project_received(conn, received)
    if decided:
        conn.executemany(
            "UPDATE commands SET verdict = ?, verdict_reason = ?, verdict_plugin = ?, rule = ?"
            " WHERE session_id = ? AND seq = ?",
            decided,
        )
    if completed:
        conn.executemany(
            "UPDATE commands SET status = ?, rows = ?, bytes = ?, duration = ?, error_code = ?,"
            " error_message = ?, sample = ?, completed_at = ? WHERE session_id = ? AND seq = ?",
            completed,
        )
    if closed:
        conn.executemany("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?", closed)


def _project_received(conn: Any, received: list[tuple[Any, ...]]) -> None:
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO commands (session_id, seq, kind, text, parameter_count, "
        "statement_name, received_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (session_id, seq) DO NOTHING",
        received,
    )
    sessions = {row[0] for row in received}
    if conn.total_changes - before == len(received):
        counts: dict[str, int] = {}
        for row in received:
            counts[row[0]] = counts.get(row[0], 0) + 1
        conn.executemany(
            "UPDATE sessions SET command_count = command_count + ? WHERE id = ?",
            [(count, session) for session, count in counts.items()],
        )
    else:
        # A repeated command number was ignored: count what the table really holds.
        conn.executemany(
            "UPDATE sessions SET command_count ="
            " (SELECT count(*) FROM commands WHERE session_id = sessions.id) WHERE id = ?",
            [(session,) for session in sessions],
        )
