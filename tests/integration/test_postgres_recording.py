"""What the recording plugin stores for a session through the real gateway, read back with
``hoopgw sessions list|show --json``."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

pytestmark = pytest.mark.integration


def sessions(login: Any) -> list[dict[str, Any]]:
    listed = login.gateway.cli("sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def show(login: Any, session_id: str) -> dict[str, Any]:
    shown = login.gateway.cli("sessions", "show", session_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def wait_for_ended(login: Any, count: int = 1) -> list[dict[str, Any]]:
    """The recording is written asynchronously: poll until ``count`` sessions have ended."""
    deadline = time.monotonic() + 10
    while True:
        found = sessions(login)
        if sum(1 for s in found if s["ended_at"]) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_session_and_commands_are_recorded(recorded_gateway: Any) -> None:
    with psycopg.connect(recorded_gateway.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE r (v int)")
        conn.execute("INSERT INTO r SELECT generate_series(1, 5)")
        conn.execute("SELECT v FROM r WHERE v > %s", (2,)).fetchall()
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        backend_pid = conn.info.backend_pid

    [session] = wait_for_ended(recorded_gateway)
    assert session["identity"] == "agent"
    assert session["groups"] == ["agents"]
    assert session["connection"] == "pg"
    assert session["credential_id"] == recorded_gateway.key.split("_")[1]
    assert session["end_reason"] == "client closed"
    assert session["attributes"]["database"] == recorded_gateway.database

    detail = show(recorded_gateway, session["id"])
    commands = detail["commands"]
    assert [c["seq"] for c in commands] == list(range(1, len(commands) + 1))
    by_text = {c["text"]: c for c in commands}
    assert by_text["CREATE TABLE r (v int)"]["status"] == "ok"
    assert by_text["INSERT INTO r SELECT generate_series(1, 5)"]["rows"] == 5
    selected = by_text["SELECT v FROM r WHERE v > $1"]
    assert (selected["parameter_count"], selected["rows"]) == (1, 3)
    failed = by_text["SELECT 1/0"]
    assert (failed["status"], failed["error_code"]) == ("error", "22012")
    assert failed["error_message"] == "division by zero"
    assert {c["verdict"] for c in commands} == {"allow"}
    # The backend pid the client saw is the target's own (test_postgres_psycopg checks it).
    assert backend_pid != 0


def test_session_cut_by_the_client_is_recorded_as_closed(
    recorded_gateway: Any, wire_client: Any
) -> None:
    client = wire_client(recorded_gateway.gateway.host, recorded_gateway.gateway.port)
    login = client.login(user="agent", database=recorded_gateway.database, password="x" * 3)
    assert client.first_error(login)["C"] == "28P01"
    client.close()
    # A failed login is no session; the next, successful one is.
    with psycopg.connect(recorded_gateway.conninfo()) as conn:
        conn.execute("SELECT 1")
    [session] = wait_for_ended(recorded_gateway)
    assert session["end_reason"] == "client closed"


@pytest.mark.parametrize(
    ("recorded_gateway", "mode"),
    [
        ({"audit_durability": "fsync"}, "fsync"),
        # Syncs at most once a second: all but the first few records are unsynced at the kill.
        ({"audit_durability": "os", "audit_sync_interval": 1}, "os"),
    ],
    indirect=["recorded_gateway"],
    ids=["fsync", "os"],
)
def test_statements_that_ran_before_a_crash_are_in_the_store_after_the_restart(
    recorded_gateway: Any, mode: str
) -> None:
    """Invariant 2 across a crash, in both durability modes: the audit writer answers once a
    record is in its journal (synced, or with "os" written to the operating system) and appends
    it to the store afterwards; kill -9 the gateway and its writer in between and restart."""
    gateway = recorded_gateway.gateway
    store_path = gateway.config_path.parent / "hoopgw.db"
    texts = [f"SELECT {n} AS crash_test" for n in range(20)]
    with psycopg.connect(recorded_gateway.conninfo(), autocommit=True) as conn:
        # Another process holds the store's write lock: records can reach the journal (so the
        # statements run) but not the store, when the gateway and its writer are killed.
        blocker = sqlite3.connect(str(store_path), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for n, text in enumerate(texts):
                assert conn.execute(text).fetchone() == (n,)
            writer_pid = _children(gateway.process.pid)[0]
            os.kill(writer_pid, signal.SIGKILL)
            gateway.process.kill()
            gateway.process.wait(timeout=30)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert not _recorded_texts(recorded_gateway) & set(texts)
    incomplete = gateway.cli("audit", "verify")
    assert incomplete.returncode == 1 and "INCOMPLETE: the audit journal" in incomplete.stdout

    restarted = subprocess.Popen(
        gateway.process.args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not set(texts) <= _recorded_texts(recorded_gateway):
            assert restarted.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        restarted.terminate()
        _, err = restarted.communicate(timeout=30)
    # The replay is information, not an error.
    assert re.search(
        rb"info \[hoopgw\.audit\] .*appended \d+ audit entries left in the journal", err
    )
    assert b" error " not in err
    verified = gateway.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The chain says which mode the statements ran under (both starts ran in the same one).
    report = json.loads(gateway.cli("audit", "verify", "--json").stdout)
    [period] = report["durability"]
    assert period["mode"] == mode
    assert period["sync_interval"] == (1.0 if mode == "os" else None)
    assert (period["first_seq"], period["last_seq"]) == (1, report["last_seq"])
    described = {"fsync": "fsync: each", "os": "os: each command's record was in the operating"}
    assert f"durability: records 1 to {period['last_seq']} (" in verified.stdout
    assert described[mode] in verified.stdout


def test_statement_text_that_is_not_utf8_is_run_and_recorded_byte_exact(
    gateway: Any, pg_server: Any
) -> None:
    """A SQL_ASCII database read by a SQL_ASCII client: the server takes any bytes, so the
    statement runs, and its record keeps the exact bytes (not refused as a store failure)."""
    name = f"hgw_ascii_{os.urandom(4).hex()}"
    admin = f"host={pg_server.host} port={pg_server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    try:
        running = gateway(plugins=["recording"], connection={"client_tls": "disabled"})
        key = running.create_key("agent", ["agents"])
        statement = b"SELECT octet_length('caf\xe9 \xff') AS n"
        conninfo = (
            f"host={running.host} port={running.port} user=agent password={key}"
            f" dbname={name} sslmode=disable client_encoding=SQL_ASCII"
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute(statement).fetchone() == (6,)
        store = sqlite3.connect(str(running.config_path.parent / "hoopgw.db"))
        deadline = time.monotonic() + 10
        while True:
            rows = store.execute(
                "SELECT data FROM audit_records WHERE kind = 'command_received'"
            ).fetchall()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        store.close()
        [text] = [json.loads(data)["text"] for (data,) in rows]
        assert base64.b64decode(text["$bytes"]) == statement
        verified = running.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        [session] = json.loads(running.cli("sessions", "list", "--json").stdout)
        shown = json.loads(running.cli("sessions", "show", session["id"], "--json").stdout)
        [command] = shown["commands"]
        assert command["text"] == "SELECT octet_length('caf\\xe9 \\xff') AS n"
        assert command["status"] == "ok"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _recorded_texts(login: Any) -> set[str]:
    return {
        command["text"]
        for session in sessions(login)
        for command in show(login, session["id"])["commands"]
    }
