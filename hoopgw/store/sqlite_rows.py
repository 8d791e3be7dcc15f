"""Rows of the SQLite store as the store's values: audit records, session and command
dictionaries, API key records; with the type checks that keep a corrupted row from passing as
a value."""

from __future__ import annotations

import json
from typing import Any

from hoopgw.audit.chain import AuditRecord, shown_text
from hoopgw.errors import StoreError
from hoopgw.secrets import ScramVerifier
from hoopgw.store.base import ApiKeyRecord, WriterState

COMMAND_COLUMNS = (
    "seq, kind, text, parameter_count, statement_name, received_at, verdict, verdict_reason, "
    "verdict_plugin, rule, status, rows, bytes, duration, error_code, error_message, sample, "
    "completed_at"
)
_COMMAND_NAMES = tuple(name.strip() for name in COMMAND_COLUMNS.split(","))
"""The command columns, in the order :func:`command_dict` reads them."""


def row_text(value: Any) -> str:
    # A text that is not UTF-8 is indexed as shown (the record keeps its exact bytes).
    return shown_text(value)


SQLITE_INTEGERS = range(-(1 << 63), 1 << 63)


def row_integer(value: Any) -> int | None:
    # Beyond 64 bits (a MySQL target may report 2**64 - 1 affected rows) only the record's
    # JSON can hold it; the projection's column stays empty.
    if isinstance(value, int) and not isinstance(value, bool) and value in SQLITE_INTEGERS:
        return value
    return None


def row_number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def row_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def row_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def audit_record(row: tuple[Any, ...]) -> AuditRecord:
    seq, kind, session_id, time, data, prev_hash, digest, instance, record_format = row
    try:
        decoded = json.loads(data)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"audit record {seq} holds unreadable data: {exc}") from exc
    return AuditRecord(
        seq=seq,
        kind=kind,
        session_id=session_id,
        time=time,
        data=decoded,
        prev_hash=prev_hash,
        hash=digest,
        instance=instance,
        format=record_format,
        data_json=data,
    )


def writer_state(row: tuple[Any, ...]) -> WriterState:
    instance, journal, started_at, stopped_at, running = row
    return WriterState(
        instance=instance,
        journal=journal,
        started_at=started_at,
        stopped_at=stopped_at,
        running=None if running is None else bool(running),
    )


def session_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        id_,
        connection,
        protocol,
        target,
        identity,
        groups,
        method,
        credential_id,
        client_address,
        client_tls,
        upstream_tls,
        started_at,
        ended_at,
        end_reason,
        command_count,
        attributes,
    ) = row
    return {
        "id": id_,
        "connection": connection,
        "protocol": protocol,
        "target": target,
        "identity": identity,
        "groups": json.loads(groups),
        "method": method,
        "credential_id": credential_id,
        "client_address": client_address,
        "client_tls": bool(client_tls),
        "upstream_tls": bool(upstream_tls),
        "started_at": started_at,
        "ended_at": ended_at,
        "end_reason": end_reason,
        "command_count": command_count,
        "attributes": json.loads(attributes),
    }


def command_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    command = dict(zip(_COMMAND_NAMES, row, strict=True))
    if command["sample"] is not None:
        command["sample"] = json.loads(command["sample"])
    return command


def key_record(row: tuple[Any, ...]) -> ApiKeyRecord:
    (
        key_id,
        identity,
        groups,
        secret_sha256,
        salt,
        iterations,
        stored_key,
        server_key,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
    ) = row
    return ApiKeyRecord(
        key_id=key_id,
        identity=identity,
        groups=tuple(json.loads(groups)),
        secret_sha256=secret_sha256,
        scram=ScramVerifier(
            salt=bytes(salt),
            iterations=iterations,
            stored_key=bytes(stored_key),
            server_key=bytes(server_key),
        ),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
        last_used_at=last_used_at,
    )
