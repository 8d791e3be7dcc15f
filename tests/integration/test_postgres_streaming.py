"""Large results through the real gateway: read slowly and then in full (the gateway's memory
stays bounded because it stops reading the target while the client is behind), and a result of
over 1 GB streamed with COPY TO STDOUT."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

ROW_BYTES = 1000
ROWS = 300_000  # ~300 MB: enough to dwarf the bound below, small enough to stay under ~15 s
RSS_GROWTH_LIMIT = 100 * 1024 * 1024
QUERY = f"SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {ROWS})"


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_slow_reader_does_not_grow_the_gateway(recorded_gateway: Any, wire_client: Any) -> None:
    running = recorded_gateway.gateway
    pid = running.process.pid
    client = wire_client(running.host, running.port)
    assert (
        client.login(
            user="agent", database=recorded_gateway.database, password=recorded_gateway.key
        )[-1].type
        == b"Z"
    )
    # A small receive buffer, so the kernel holds little and the gateway must push back.
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    baseline = rss(pid)
    payload = QUERY.encode() + b"\0"
    client.send(b"Q" + (len(payload) + 4).to_bytes(4, "big") + payload)

    peak = baseline
    # Phase 1: read nothing for 3 s while the target could send hundreds of megabytes.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        time.sleep(0.1)
    # Phase 2: read everything, sampling as we go.
    rows = 0
    while True:
        message = client.receive()
        assert message is not None
        if message.type == b"D":
            rows += 1
            if rows % 20_000 == 0:
                peak = max(peak, rss(pid))
        elif message.type == b"Z":
            break
    assert rows == ROWS
    assert peak - baseline < RSS_GROWTH_LIMIT, f"gateway RSS grew by {(peak - baseline) >> 20} MiB"


def test_server_side_cursor_reads_a_large_result(recorded_gateway: Any) -> None:
    pid = recorded_gateway.gateway.process.pid
    with psycopg.connect(recorded_gateway.conninfo()) as conn:
        baseline = peak = rss(pid)
        total = 0
        with conn.cursor(name="big") as cursor:
            cursor.itersize = 5000
            cursor.execute(QUERY)
            for index, (value,) in enumerate(cursor):
                total += len(value)
                if index % 20_000 == 0:
                    peak = max(peak, rss(pid))
    assert total == ROWS * ROW_BYTES
    assert peak - baseline < RSS_GROWTH_LIMIT, f"gateway RSS grew by {(peak - baseline) >> 20} MiB"


GIGABYTE_ROWS = 1_000_000  # 1,000,000 rows of 1,000 bytes (plus a newline each): over 1 GB


def test_a_gigabyte_result_streams_through_with_bounded_memory(recorded_gateway: Any) -> None:
    pid = recorded_gateway.gateway.process.pid
    query = (
        f"COPY (SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {GIGABYTE_ROWS})) TO STDOUT"
    )
    with psycopg.connect(recorded_gateway.conninfo()) as conn:
        baseline = peak = rss(pid)
        total = 0
        with conn.cursor() as cursor, cursor.copy(query) as copy:
            for index, chunk in enumerate(copy):
                total += len(chunk)
                if index % 50_000 == 0:
                    peak = max(peak, rss(pid))
    assert total == GIGABYTE_ROWS * (ROW_BYTES + 1)
    assert peak - baseline < RSS_GROWTH_LIMIT, f"gateway RSS grew by {(peak - baseline) >> 20} MiB"
