"""Failures around the real gateway: an unreachable target, garbage instead of a startup packet,
a client that never authenticates, a client that vanishes in mid-result. Each ends its own
session with a clear error; the gateway keeps serving."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration


def assert_still_serving(login: Any) -> None:
    with psycopg.connect(login.conninfo(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_target(gateway: Any, pg_database: str, wire_client: Any) -> None:
    target = f"127.0.0.1:{unused_port()}"
    running = gateway(connection={"client_tls": "disabled", "target": target})
    key = running.create_key("agent", ["agents"])
    for _ in range(3):
        client = wire_client(running.host, running.port)
        messages = client.login(user="agent", database=pg_database, password=key)
        error = client.first_error(messages)
        assert (error["V"], error["C"]) == ("FATAL", "08006")
        assert error["M"] == f"the target {target} is unreachable"
        assert client.receive() is None
    assert running.process.poll() is None
    assert f"target {target} unreachable" in running.stderr_text()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x00\x00\x08\x00\x02\x00\x00",  # protocol version 2.0
        b"\x00\x00\x00\x03",  # a length shorter than its own header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS without SSLRequest
    ],
)
def test_garbage_instead_of_startup(
    recorded_gateway: Any, wire_client: Any, garbage: bytes
) -> None:
    running = recorded_gateway.gateway
    client = wire_client(running.host, running.port)
    client.send(garbage)
    messages = client.receive_until(b"E")
    error = client.first_error(messages)
    assert error["V"] == "FATAL"
    assert error["C"] in ("08P01", "0A000")
    assert client.receive() is None
    assert_still_serving(recorded_gateway)


def test_client_that_never_authenticates_is_cut(
    gateway: Any, pg_database: str, wire_client: Any
) -> None:
    running = gateway(connection={"client_tls": "disabled"}, gateway_options={"auth_timeout": 1})
    key = running.create_key("agent", ["agents"])
    silent = wire_client(running.host, running.port)
    # A second one sends its startup message, then never answers the password request.
    stalled = wire_client(running.host, running.port)
    started = time.monotonic()
    params = b"user\0agent\0database\0" + pg_database.encode() + b"\0\0"
    stalled.send((len(params) + 8).to_bytes(4, "big") + (3 << 16).to_bytes(4, "big") + params)
    for client in (silent, stalled):
        error = client.first_error(client.receive_until(b"E"))
        assert (error["C"], error["M"]) == ("08P01", "authentication timed out")
        assert client.receive() is None
    assert 0.9 < time.monotonic() - started < 5
    login = psycopg.connect(
        f"host={running.host} port={running.port} user=agent password={key} "
        f"dbname={pg_database} sslmode=disable"
    )
    # A session that logged in is not cut by the timer.
    time.sleep(1.5)
    assert login.execute("SELECT 1").fetchone() == (1,)
    login.close()


def test_client_gone_in_mid_result(recorded_gateway: Any, wire_client: Any, pg_server: Any) -> None:
    running = recorded_gateway.gateway
    client = wire_client(running.host, running.port)
    assert (
        client.login(
            user="agent", database=recorded_gateway.database, password=recorded_gateway.key
        )[-1].type
        == b"Z"
    )
    client.send(
        b"Q"
        + (len(b"SELECT repeat('x', 1000) FROM generate_series(1, 5000000)\0") + 4).to_bytes(
            4, "big"
        )
        + b"SELECT repeat('x', 1000) FROM generate_series(1, 5000000)\0"
    )
    rows = 0
    while rows < 1000:
        message = client.receive()
        assert message is not None
        rows += message.type == b"D"
    # Reset rather than a polite FIN, as a killed process would.
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") * 2)
    client.close()
    assert_still_serving(recorded_gateway)

    # The gateway ends the target's session too: the query stops running there.
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname="postgres",
        autocommit=True,
    ) as admin:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            running_queries = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT repeat%%'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
            if running_queries == (0,):
                break
            time.sleep(0.1)
        assert running_queries == (0,)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = json.loads(running.cli("sessions", "list", "--json").stdout)
        if len(listed) == 2 and all(s["ended_at"] for s in listed):
            break
        time.sleep(0.2)
    details = [
        json.loads(running.cli("sessions", "show", s["id"], "--json").stdout) for s in listed
    ]
    [cut] = [d for d in details if d["commands"][0]["text"].startswith("SELECT repeat")]
    assert cut["ended_at"], listed
    assert cut["end_reason"] == "client closed"
    [query] = cut["commands"]
    assert query["status"] == "aborted"
    assert query["rows"] >= 1000
