"""Several gateway instances on one PostgreSQL store, end to end: two real ``hoopgw run``
processes (instances ``gw-a`` and ``gw-b``) share a store database the test creates, in front
of the real PostgreSQL; clients are psycopg and psql, deciders use the real CLI against the
other instance's admin API.

Each test shows one promise of docs/deploy.md: a statement held on A is approved on B and runs
on A; a key or grant revoked through B ends A's sessions within seconds; each instance appends
its own chain and ``hoopgw audit verify`` checks both (and reports an instance that stopped
without draining its journal); failed logins count on every instance.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

from hoopgw.identity.keys import KeyService
from hoopgw.store import open_store

pytestmark = pytest.mark.integration

# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]

DELETE = "DELETE FROM orders WHERE id = 42"


@attrs.define
class Pair:
    """Two running instances on one store, keys for the people involved, and their admin APIs."""

    a: Any
    b: Any
    store_url: str
    database: str
    keys: dict[str, str]
    admin_urls: dict[str, str]
    jit_ports: dict[str, int]

    def admin(self, instance: str, identity: str) -> Any:
        return helpers.Admin(self.admin_urls[instance], self.keys[identity])

    def conninfo(self, running: Any, identity: str = "agent", *, port: int | None = None) -> str:
        return (
            f"host={running.host} port={port or running.port} user={identity}"
            f" password={self.keys[identity]} dbname={self.database} sslmode=disable"
        )

    def cli(self, running: Any, *args: str) -> subprocess.CompletedProcess[str]:
        return running.cli(*args)


@pytest.fixture
def store_database(pg_server: Any) -> Iterator[str]:
    """A store database of its own (``pg_database`` is the target's), dropped afterwards."""
    name = f"hgw_store_{secrets.token_hex(6)}"
    admin = dict(host=pg_server.host, port=pg_server.port, user="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@{pg_server.host}:{pg_server.port}/{name}"
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _document(store_url: str, instance: str, target: str, admin_port: int, jit_port: int) -> Any:
    def make(workdir: Path, port: int) -> dict[str, Any]:
        common = {
            "protocol": "postgres",
            "target": target,
            "allow_groups": ["agents"],
            "credential": {"user": "postgres"},
            "client_tls": "disabled",
        }
        return {
            "roles": {"approver": ["dba"], "admin": ["ops"], "auditor": ["audit"]},
            "gateway": {
                "store": store_url,
                "instance": instance,
                "journal_dir": str(workdir),
                "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
            },
            "identity": {
                "key_check_interval": 60,  # so that an end within seconds is the notice's
                "backoff": {"free_failures": 1, "base_delay": 3, "max_delay": 3},
            },
            "connections": [
                {
                    **common,
                    "name": "pg",
                    "listen": f"tcp:{port}:interface=127.0.0.1",
                    "plugins": ["recording", "approval"],
                    "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60},
                },
                {
                    **common,
                    "name": "jit",
                    "listen": f"tcp:{jit_port}:interface=127.0.0.1",
                    "plugins": ["recording"],
                    "access": "jit",
                    "jit_approvers": ["leads"],
                    "jit_max_duration": 3600,
                },
            ],
        }

    return make


@pytest.fixture
def pair(gateway_document: Any, pg_server: Any, pg_database: str, store_database: str) -> Pair:
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g")
    target = f"{pg_server.host}:{pg_server.port}"
    admin_ports = {name: helpers.free_port() for name in ("gw-a", "gw-b")}
    jit_ports = {name: helpers.free_port() for name in ("gw-a", "gw-b")}
    running = {
        name: gateway_document(
            _document(store_database, name, target, admin_ports[name], jit_ports[name])
        )
        for name in ("gw-a", "gw-b")
    }
    # Keys are shared: the agent's is made with the CLI of A and logs in on B too; the others
    # are made in the store directly (each CLI start costs seconds on a busy machine).
    keys = {"agent": running["gw-a"].create_key("agent", ["agents"])}
    store = open_store(store_database, instance="")
    try:
        for identity, group in (("alice", "dba"), ("lead", "leads"), ("root", "ops")):
            keys[identity] = KeyService(store).create(identity, [group], now=time.time())[0]
    finally:
        store.close()
    urls = {name: f"http://127.0.0.1:{port}" for name, port in admin_ports.items()}
    return Pair(
        running["gw-a"], running["gw-b"], store_database, pg_database, keys, urls, jit_ports
    )


def test_a_statement_held_on_a_is_approved_on_b_and_runs_on_a(pair: Pair) -> None:
    def delete() -> int:
        with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as conn:
            return conn.execute(DELETE).rowcount

    thread, box = helpers.in_thread(delete)
    alice_on_b = pair.admin("gw-b", "alice")
    [review] = helpers.wait_for(
        lambda: alice_on_b.cli_json("reviews", "list"), what="the review, seen through gw-b"
    )
    assert (review["statement"], review["instance"], review["status"]) == (
        DELETE,
        "gw-a",
        "pending",
    )
    approved_at = time.monotonic()
    decided = alice_on_b.cli_json("reviews", "approve", review["id"], "--reason", "ok")
    assert decided["status"] == "approved" and decided["valid_until"] is None
    thread.join(30)
    released_after = time.monotonic() - approved_at
    assert box.get("error") is None and box["result"] == 1
    # The notice, not the once-a-second look, released it: well within the CLI's own time.
    assert released_after < 10
    with psycopg.connect(pair.conninfo(pair.b), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE id = 42").fetchone() == (0,)
    shown = pair.admin("gw-a", "alice").cli_json("reviews", "show", review["id"])
    assert shown["decision_recorded_at"] is not None


def test_a_denial_on_b_refuses_the_statement_held_on_a(pair: Pair) -> None:
    def delete() -> int:
        with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as conn:
            return conn.execute(DELETE).rowcount

    thread, box = helpers.in_thread(delete)
    alice_on_b = pair.admin("gw-b", "alice")
    [review] = helpers.wait_for(lambda: alice_on_b.cli_json("reviews", "list"), what="review")
    alice_on_b.cli_json("reviews", "deny", review["id"], "--reason", "not during the audit")
    thread.join(30)
    assert isinstance(box.get("error"), psycopg.Error)
    assert "denied by alice" in str(box["error"]) and "not during the audit" in str(box["error"])


def test_a_key_revoked_through_b_ends_the_session_on_a_within_seconds(pair: Pair) -> None:
    key_id = pair.keys["agent"].split("_")[1]
    with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        revoked = pair.cli(pair.b, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ended:
            while time.monotonic() - started < 30:
                conn.execute("SELECT 1")
                time.sleep(0.1)
        # key_check_interval is 60 s: the notice ended it.
        assert time.monotonic() - started < 10
    assert "revoked" in str(ended.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pair.conninfo(pair.b))


def test_a_grant_revoked_through_b_ends_the_session_on_a_within_seconds(pair: Pair) -> None:
    lead_on_b, agent_on_a = pair.admin("gw-b", "lead"), pair.admin("gw-a", "agent")
    requested = agent_on_a.cli(
        "access", "request", "--connection", "jit", "--duration", "30m", "--reason", "INC-7"
    )
    assert requested.returncode == 0, requested.stderr
    lead_on_b.cli_json("reviews", "approve", requested.stdout.strip(), "--reason", "ok")
    [grant] = helpers.wait_for(
        lambda: pair.admin("gw-a", "root").cli_json("access", "list"), what="the grant"
    )
    conninfo = pair.conninfo(pair.a, port=pair.jit_ports["gw-a"])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        revoked = pair.admin("gw-b", "root").cli("access", "revoke", grant["id"], "--reason", "x")
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ended:
            while time.monotonic() - started < 30:
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert time.monotonic() - started < 10
    assert "no live access grant of 'agent' on 'jit'" in str(ended.value)


def test_each_instance_keeps_its_chain_and_verify_reports_an_undrained_one(pair: Pair) -> None:
    for running in (pair.a, pair.b):
        with psycopg.connect(pair.conninfo(running), autocommit=True) as conn:
            conn.execute("SELECT id FROM orders WHERE id = 1").fetchall()
    verified = pair.cli(pair.a, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert [c["instance"] for c in report["chains"]] == ["gw-a", "gw-b"]
    assert all(c["ok"] and c["records_checked"] > 3 for c in report["chains"])
    assert {w["instance"]: w["running"] for w in report["writers"]} == {
        "gw-a": True,
        "gw-b": True,
    }
    with psycopg.connect(pair.store_url) as store:
        instances = store.execute(
            "SELECT DISTINCT instance FROM audit_records WHERE kind = 'command_received'"
        ).fetchall()
    assert sorted(instances) == [("gw-a",), ("gw-b",)]

    # B's writer dies (with B): the store cannot know its journal was drained.
    writer = _children(pair.b.process.pid)
    assert len(writer) == 1
    os.kill(writer[0], signal.SIGKILL)
    pair.b.process.kill()
    pair.b.process.wait(10)
    unverified = pair.cli(pair.a, "audit", "verify")
    assert unverified.returncode == 1
    assert "INCOMPLETE: the audit writer of instance gw-b stopped without draining" in (
        unverified.stdout
    )
    # A stops cleanly: its journal is drained, and verify says so.
    pair.a.stop()
    stopped = json.loads(pair.cli(pair.b, "audit", "verify", "--json").stdout)
    writers = {w["instance"]: w for w in stopped["writers"]}
    assert writers["gw-a"]["undrained"] is False and writers["gw-a"]["stopped_at"]
    assert writers["gw-b"]["undrained"] is True


def test_search_export_and_evidence_of_one_instance_cover_every_chain(
    pair: Pair, tmp_path: Path
) -> None:
    for running, text in ((pair.a, "SELECT 'on a'"), (pair.b, "SELECT 'on b'")):
        with psycopg.connect(pair.conninfo(running), autocommit=True) as conn:
            conn.execute(text).fetchall()

    def search(*extra: str) -> list[dict[str, Any]]:
        done = pair.cli(pair.a, "audit", "search", "--json", "--text", "select 'on", *extra)
        assert done.returncode == 0, done.stderr
        found: list[dict[str, Any]] = json.loads(done.stdout)
        return found

    # B's records reach the store through its writer: wait until A's CLI sees both.
    helpers.wait_for(lambda: len(search()) == 2, what="both instances' commands", timeout=30)
    assert sorted((c["instance"], c["text"]) for c in search()) == [
        ("gw-a", "SELECT 'on a'"),
        ("gw-b", "SELECT 'on b'"),
    ]
    assert [c["instance"] for c in search("--instance", "gw-b")] == ["gw-b"]

    exported = pair.cli(pair.a, "audit", "export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {r["instance"] for r in records} == {"gw-a", "gw-b"}
    only_b = pair.cli(pair.a, "audit", "export", "--format", "jsonl", "--instance", "gw-b")
    assert {json.loads(line)["instance"] for line in only_b.stdout.splitlines()} == {"gw-b"}

    pack = tmp_path / "pack"
    made = pair.cli(pair.a, "evidence", "--since", "2000-01-01", "--out", str(pack))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "chains of gw-a, gw-b verified" in made.stdout
    verification = json.loads((pack / "verification.json").read_text())
    assert [(c["instance"], c["ok"]) for c in verification["chains"]] == [
        ("gw-a", True),
        ("gw-b", True),
    ]
    commands = [json.loads(line) for line in (pack / "commands.jsonl").read_text().splitlines()]
    assert {"SELECT 'on a'", "SELECT 'on b'"} <= {c["text"] for c in commands}


def test_a_second_instance_with_the_same_id_is_refused(
    pair: Pair, gateway_document: Any, pg_server: Any
) -> None:
    document = _document(
        pair.store_url,
        "gw-a",
        f"{pg_server.host}:{pg_server.port}",
        helpers.free_port(),
        helpers.free_port(),
    )
    with pytest.raises(Exception, match="instance 'gw-a' runs already"):
        gateway_document(document)


def test_failed_logins_on_one_instance_slow_down_the_next_on_the_other(pair: Pair) -> None:
    wrong = "hgw_000000000000_" + "x" * 43
    conninfo = f"host=127.0.0.1 user=agent password={wrong} dbname={pair.database} sslmode=disable"
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"{conninfo} port={pair.a.port}")
    assert time.monotonic() - started < 2.5  # the first failure is free
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"{conninfo} port={pair.b.port}")
    # B never saw this client fail, but the store did: B waits base_delay (3 s).
    assert time.monotonic() - started >= 2.9


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def test_a_slow_store_stalls_no_other_session(pair: Pair) -> None:
    # The store made slow: a transaction of the test holds the API keys table, so a login on
    # A waits on the store. A's live session must keep running its statements meanwhile (the
    # store's calls are off A's reactor thread), and the login completes once the store answers.
    with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as live:
        assert live.execute("SELECT count(*) FROM orders").fetchone() == (100,)

        def statements() -> list[Any]:
            return [
                live.execute("SELECT note FROM orders WHERE id = %s", (n,)).fetchone()
                for n in range(1, 21)
            ]

        def login() -> Any:
            with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as conn:
                return conn.execute("SELECT 1").fetchone()

        with psycopg.connect(pair.store_url) as locker:
            try:
                locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                waiting, login_box = helpers.in_thread(login)
                helpers.wait_for(
                    lambda: locker.execute(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'api_keys'::regclass"
                        " AND NOT granted"
                    ).fetchone()[0],
                    what="the login waiting on the store",
                )
                running, box = helpers.in_thread(statements)
                # Twenty statements while the login waits: none waits on the store.
                running.join(10)
                assert box.get("result") == [(f"order {n}",) for n in range(1, 21)], (
                    "the live session stalled while the store was slow"
                )
                assert waiting.is_alive() and "result" not in login_box
            finally:
                locker.rollback()
        waiting.join(30)
        running.join(30)
        assert login_box.get("error") is None and login_box["result"] == (1,)


def test_a_held_statement_waiting_on_the_store_stalls_no_other_session(pair: Pair) -> None:
    # The reviews table held by a transaction of the test: the held DELETE's store work (the
    # look for an earlier approval, storing its review) waits on the store. A's other live
    # session keeps running its statements meanwhile; once the store answers, the review is
    # stored and its approval through B runs the statement on A.
    with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as live:
        assert live.execute("SELECT count(*) FROM orders").fetchone() == (100,)

        def statements() -> list[Any]:
            return [
                live.execute("SELECT note FROM orders WHERE id = %s", (n,)).fetchone()
                for n in range(1, 21)
            ]

        def delete() -> int:
            with psycopg.connect(pair.conninfo(pair.a), autocommit=True) as conn:
                return conn.execute(DELETE).rowcount

        with psycopg.connect(pair.store_url) as locker:
            try:
                locker.execute("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")
                held, held_box = helpers.in_thread(delete)
                helpers.wait_for(
                    lambda: locker.execute(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'reviews'::regclass"
                        " AND NOT granted"
                    ).fetchone()[0],
                    what="the held statement waiting on the store",
                )
                running, box = helpers.in_thread(statements)
                running.join(10)
                assert box.get("result") == [(f"order {n}",) for n in range(1, 21)], (
                    "the live session stalled while a held statement waited on the store"
                )
                assert held.is_alive() and "result" not in held_box
            finally:
                locker.rollback()
        alice_on_b = pair.admin("gw-b", "alice")
        [review] = helpers.wait_for(lambda: alice_on_b.cli_json("reviews", "list"), what="review")
        assert review["status"] == "pending"
        alice_on_b.cli_json("reviews", "approve", review["id"], "--reason", "ok")
        held.join(30)
        assert held_box.get("error") is None and held_box["result"] == 1
