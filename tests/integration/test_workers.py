"""``[gateway] workers = 2``, end to end: a real ``hoopgw run`` parent with two worker
processes sharing the listeners, in front of the real PostgreSQL, with psycopg and the real CLI.

Which worker serves a connection is the kernel's choice; where a test needs a session on a
given worker, it stops the other one (SIGSTOP) while the client connects, so that only the
chosen one accepts. Each test shows one promise of docs/deploy.md ("Several workers on one
host").
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]

DELETE = "DELETE FROM orders WHERE id = 42"
WRONG_KEY = "hgw_000000000000_" + "x" * 43


class Workers:
    """The running parent, its workers and the keys of the people involved."""

    def __init__(self, running: Any, database: str, admin_url: str) -> None:
        self.running = running
        self.database = database
        self.admin_url = admin_url
        self.keys: dict[str, str] = {}

    @property
    def parent(self) -> int:
        return int(self.running.process.pid)

    def worker_pids(self) -> dict[int, int]:
        """Worker number -> pid of the process running now (from the parent's log)."""
        found = re.findall(r"worker (\d+) started \(pid (\d+)\)", self.running.stderr_text())
        return {int(k): int(pid) for k, pid in found}

    def conninfo(self, identity: str = "agent", password: str | None = None) -> str:
        return (
            f"host=127.0.0.1 port={self.running.port} user={identity}"
            f" password={password or self.keys[identity]} dbname={self.database}"
            " sslmode=disable connect_timeout=20"
        )

    def connect(self, *, on: int | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A client session; ``on``: the worker that must serve it (the other is paused while
        it connects)."""
        if on is None:
            return psycopg.connect(self.conninfo(), autocommit=True, **kwargs)
        with self.paused(*(k for k in self.worker_pids() if k != on)):
            conn = psycopg.connect(self.conninfo(), autocommit=True, **kwargs)
        assert serving_pid(conn, self.running.port) == self.worker_pids()[on]
        return conn

    @contextmanager
    def paused(self, *workers: int) -> Iterator[None]:
        pids = [self.worker_pids()[k] for k in workers]
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                _signal(pid, signal.SIGCONT)

    def admin(self, identity: str) -> Any:
        return helpers.Admin(self.admin_url, self.keys[identity])


def _signal(pid: int, signum: int) -> None:
    import os

    os.kill(pid, signum)


def serving_pid(conn: psycopg.Connection[Any], gateway_port: int) -> int:
    """The process that holds the gateway's end of ``conn`` (from /proc: the socket's inode)."""
    with socket.socket(fileno=conn.pgconn.socket) as sock:
        try:
            client_port = sock.getsockname()[1]
        finally:
            sock.detach()
    wanted = f"0100007F:{gateway_port:04X} 0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if f"{fields[1]} {fields[2]}" == wanted:
            inode = fields[9]
    assert inode is not None, "the gateway's end of the connection is not in /proc/net/tcp"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if fd.readlink().name == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"no process holds socket {inode}")


def _wait_ready(running: Any, count: int, *, after: int = 0) -> None:
    def ready() -> bool:
        return running.stderr_text().count("hoopgw ready") >= after + count

    helpers.wait_for(ready, timeout=60, what=f"{count} workers ready")


def _document(admin_port: int, target: str) -> Any:
    def make(workdir: Path, port: int) -> dict[str, Any]:
        return {
            "roles": {"approver": ["dba"], "admin": ["ops"], "auditor": ["audit"]},
            "gateway": {
                "store": "sqlite:///./hoopgw.db",
                "workers": 2,
                "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
                "shutdown_grace": 2,
            },
            "identity": {
                "key_check_interval": 1,
                "backoff": {"free_failures": 1, "base_delay": 3, "max_delay": 3},
            },
            "connections": [
                {
                    "name": "pg",
                    "protocol": "postgres",
                    "listen": f"tcp:{port}:interface=127.0.0.1",
                    "target": target,
                    "allow_groups": ["agents"],
                    "credential": {"user": "postgres"},
                    "client_tls": "disabled",
                    "plugins": ["recording", "approval"],
                    "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60},
                }
            ],
        }

    return make


@pytest.fixture
def workers(gateway_document: Any, pg_server: Any, pg_database: str) -> Workers:
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g")
    admin_port = helpers.free_port()
    running = gateway_document(_document(admin_port, f"{pg_server.host}:{pg_server.port}"))
    _wait_ready(running, 2)
    found = Workers(running, pg_database, f"http://127.0.0.1:{admin_port}")
    for identity, group in (("agent", "agents"), ("alice", "dba"), ("root", "ops")):
        found.keys[identity] = running.create_key(identity, [group])
    return found


def _in_thread(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_both_workers_serve_sessions(workers: Workers) -> None:
    pids = workers.worker_pids()
    assert sorted(pids) == [1, 2] and workers.parent not in pids.values()
    conns = []
    try:
        for _ in range(40):
            conns.append(workers.connect())
            served = {serving_pid(c, workers.running.port) for c in conns}
            if len(served) == 2:
                break
        assert served == set(pids.values())
        for conn in conns:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    finally:
        for conn in conns:
            conn.close()


def test_a_cancel_request_reaching_the_other_worker_cancels_the_query(workers: Workers) -> None:
    with workers.connect(on=1) as conn:
        thread, box = _in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
        time.sleep(0.5)  # the statement reaches the target
        # Worker 1 is paused: only worker 2 can take the cancel request's connection.
        with workers.paused(1):
            conn.cancel()
        thread.join(20)
        assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_cancel_request_with_a_wrong_secret_cancels_nothing(workers: Workers) -> None:
    with workers.connect() as conn:
        pid = conn.info.backend_pid
        thread, box = _in_thread(lambda: conn.execute("SELECT pg_sleep(2)").fetchone())
        time.sleep(0.3)
        for _ in range(8):  # whichever worker takes each, none cancels
            with socket.create_connection(("127.0.0.1", workers.running.port)) as sock:
                sock.sendall(struct.pack("!iiI4s", 16, 80877102, pid, b"\x00\x01\x02\x03"))
                sock.recv(1)
        thread.join(20)
        assert box.get("error") is None and box["result"] == ("",)


def test_a_statement_held_on_worker_2_is_approved_through_the_admin_api(
    workers: Workers,
) -> None:
    conn = workers.connect(on=2)  # the admin API is served by worker 1
    thread, box = _in_thread(lambda: conn.execute(DELETE).rowcount)
    alice = workers.admin("alice")
    [review] = helpers.wait_for(lambda: alice.cli_json("reviews", "list"), what="the review")
    # Worker 2's id: "w2", or "INSTANCE/w2" with a PostgreSQL store (HOOPGW_TEST_STORE).
    assert review["instance"].rpartition("/")[2] == "w2" and review["statement"] == DELETE
    alice.cli_json("reviews", "approve", review["id"], "--reason", "ok")
    thread.join(30)
    conn.close()
    assert box.get("error") is None and box["result"] == 1


def test_a_revoked_key_ends_the_sessions_on_every_worker(workers: Workers) -> None:
    on_1, on_2 = workers.connect(on=1), workers.connect(on=2)
    key_id = workers.keys["agent"].split("_")[1]
    revoked = workers.running.cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    for conn in (on_1, on_2):
        with pytest.raises(psycopg.OperationalError) as ended:
            while time.monotonic() - started < 20:
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert "revoked" in str(ended.value)
    assert time.monotonic() - started < 10


def test_the_admin_api_lists_and_ends_the_sessions_of_every_worker(workers: Workers) -> None:
    root = workers.admin("root")
    on_1, on_2 = workers.connect(on=1), workers.connect(on=2)
    try:

        def both_listed() -> Any:
            found = root.cli_json("sessions", "live")
            return found if len(found) == 2 else None

        listed = helpers.wait_for(both_listed, what="both workers' sessions listed")
        # Which is worker 2's? The one that ends when it is killed.
        for live in listed:
            killed = root.cli("sessions", "kill", live["id"][:8], "--reason", "incident 7")
            assert killed.returncode == 0, killed.stderr
        for conn in (on_1, on_2):
            with pytest.raises(psycopg.OperationalError, match="ended by root: incident 7"):
                for _ in range(50):
                    conn.execute("SELECT 1")
                    time.sleep(0.1)
        helpers.wait_for(lambda: root.cli_json("sessions", "live") == [], what="no session")
    finally:
        on_1.close()
        on_2.close()


def test_failed_logins_on_one_worker_slow_down_the_next_on_the_other(workers: Workers) -> None:
    started = time.monotonic()
    with workers.paused(2), pytest.raises(psycopg.OperationalError):
        psycopg.connect(workers.conninfo(password=WRONG_KEY))
    assert time.monotonic() - started < 2.5  # the first failure is free
    started = time.monotonic()
    with workers.paused(1), pytest.raises(psycopg.OperationalError):
        psycopg.connect(workers.conninfo(password=WRONG_KEY))
    # Worker 2 never saw this client fail, but the store did: it waits base_delay (3 s).
    assert time.monotonic() - started >= 2.9


def test_both_workers_append_to_the_one_chain_that_verify_checks(workers: Workers) -> None:
    for k in (1, 2):
        with workers.connect(on=k) as conn:
            conn.execute(f"SELECT id FROM orders WHERE id = {k}").fetchall()
    verified = workers.running.cli("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["journal"]["waiting"] == 0
    # One chain (instance ""): the parent's one writer appended both workers' statements.
    assert workers.running.store_query("SELECT DISTINCT instance FROM audit_records") == [("",)]
    rows = workers.running.store_query(
        "SELECT data FROM audit_records WHERE kind = 'command_received'"
    )
    texts = [json.loads(row[0])["text"] for row in rows]
    assert "SELECT id FROM orders WHERE id = 1" in texts
    assert "SELECT id FROM orders WHERE id = 2" in texts


def test_a_killed_worker_is_started_again_and_the_other_keeps_serving(workers: Workers) -> None:
    with workers.connect(on=1) as conn:
        old = workers.worker_pids()[2]
        _signal(old, signal.SIGKILL)
        _wait_ready(workers.running, 1, after=2)
        new = workers.worker_pids()[2]
        assert new != old
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    with workers.connect(on=2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "worker 2 ended unexpectedly" in workers.running.stderr_text()


def test_sigterm_ends_every_worker_and_leaves_the_journal_drained(workers: Workers) -> None:
    pids = list(workers.worker_pids().values())
    with workers.connect() as conn:
        conn.execute("SELECT 1")
    workers.running.process.send_signal(signal.SIGTERM)
    assert workers.running.process.wait(30) == 0
    helpers.wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), what="workers gone"
    )
    verified = workers.running.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "INCOMPLETE" not in verified.stdout
