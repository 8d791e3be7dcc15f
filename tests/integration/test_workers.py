"""``[gateway] workers = 2``, end to end: a real ``hoopgw run`` parent with two worker
processes sharing the listeners, in front of the real PostgreSQL, with psycopg and the real CLI.

The parent passes each new connection to the worker with the fewest live connections (the
lowest-numbered on a tie), so where a test needs a session on a given worker it connects until
one lands there, keeping the others open meanwhile. Each test shows one promise of
docs/deploy.md ("Several workers on one host").
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
        self.fillers: list[psycopg.Connection[Any]] = []
        """Sessions opened to steer the next one to a worker, closed at the end."""

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
        """A client session; ``on``: the worker that must serve it (the sessions that land
        elsewhere first stay open, as :attr:`fillers`, so the next goes to a less-loaded one)."""
        for _ in range(4):
            conn = psycopg.connect(self.conninfo(), autocommit=True, **kwargs)
            if on is None or serving_pid(conn, self.running.port) == self.worker_pids()[on]:
                return conn
            self.fillers.append(conn)
        raise AssertionError(f"no session reached worker {on}")

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
def workers(gateway_document: Any, pg_server: Any, pg_database: str) -> Iterator[Workers]:
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
    yield found
    for conn in found.fillers:
        conn.close()


def test_eight_clients_connecting_at_once_end_four_on_each_worker(workers: Workers) -> None:
    """The parent counts a connection for its worker from the moment it passes it: a burst of
    8 (none logged in when the next arrives) is spread 4 and 4, every time."""
    pids = workers.worker_pids()
    assert sorted(pids) == [1, 2] and workers.parent not in pids.values()
    start = threading.Barrier(8)

    def connect() -> psycopg.Connection[Any]:
        start.wait()
        return psycopg.connect(workers.conninfo(), autocommit=True)

    threads = [helpers.in_thread(connect) for _ in range(8)]
    conns = []
    try:
        for thread, box in threads:
            thread.join(30)
            assert "error" not in box, box
            conns.append(box["result"])
        served = [serving_pid(c, workers.running.port) for c in conns]
        assert sorted(served.count(pid) for pid in pids.values()) == [4, 4]
        for conn in conns:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    finally:
        for conn in conns:
            conn.close()


def _metrics(workers: Workers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Worker 1's ``/metrics`` (loopback needs no token): sample -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{workers.admin_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _open_by_worker(workers: Workers) -> dict[int, float]:
    found = _metrics(workers)
    labels = (("connection", "pg"), ("protocol", "postgres"))
    return {
        k: found.get(("hoopgw_sessions_open", (*labels, ("worker", str(k)))), 0) for k in (1, 2)
    }


def test_pgbench_s_clients_are_spread_evenly(workers: Workers, tmp_path: Path) -> None:
    """pgbench opens its 8 clients one after the other: each goes to the worker holding
    fewer, so ``/metrics`` shows 4 sessions open on each worker while it runs."""
    import os
    import shutil
    import subprocess

    pgbench = shutil.which("pgbench")
    if pgbench is None:
        pytest.skip("pgbench is not installed")
    script = tmp_path / "select.sql"
    script.write_text("SELECT count(*) FROM orders;\n")
    env = {**os.environ, "PGPASSWORD": workers.keys["agent"], "PGSSLMODE": "disable"}
    command = [pgbench, "-h", "127.0.0.1", "-p", str(workers.running.port), "-U", "agent"]
    command += ["-n", "-c", "8", "-T", "5", "-f", str(script), workers.database]
    bench = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:

        def eight() -> Any:
            counts = _open_by_worker(workers)
            return counts if sum(counts.values()) == 8 else None

        counts = helpers.wait_for(eight, timeout=20, what="pgbench's 8 sessions in /metrics")
    finally:
        out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, err.decode()
    assert counts == {1: 4, 2: 4}
    assert b"number of failed transactions: 0" in out or b"failed" not in out


def test_metrics_show_every_worker_s_sessions_and_commands(workers: Workers) -> None:
    on_1, on_2 = workers.connect(on=1), workers.connect(on=2)
    try:
        for conn in (on_1, on_2, on_2):
            conn.execute("SELECT 1").fetchone()

        def both() -> Any:
            found = _metrics(workers)
            labels = (("connection", "pg"), ("verdict", "allow"))
            commands = {
                k: found.get(("hoopgw_commands_total", (*labels, ("worker", str(k)))))
                for k in (1, 2)
            }
            # Worker 2's count is at most half a second old: wait for its statements.
            return commands if commands == {1: 1, 2: 2} else None

        helpers.wait_for(both, what="both workers' commands in /metrics")
        helpers.wait_for(lambda: _open_by_worker(workers) == {1: 1, 2: 1}, what="1 open on each")
    finally:
        on_1.close()
        on_2.close()
    # A session's end reaches worker 1's /metrics with the other worker's next publication.
    helpers.wait_for(lambda: _open_by_worker(workers) == {1: 0, 2: 0}, what="none open")


def test_a_cancel_request_reaching_the_other_worker_cancels_the_query(workers: Workers) -> None:
    with workers.connect(on=1) as conn:
        thread, box = helpers.in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
        time.sleep(0.5)  # the statement reaches the target
        # Worker 1 holds one connection, worker 2 none: the cancel request's goes to worker 2.
        conn.cancel()
        thread.join(20)
        assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_cancel_request_with_a_wrong_secret_cancels_nothing(workers: Workers) -> None:
    with workers.connect() as conn:
        pid = conn.info.backend_pid
        thread, box = helpers.in_thread(lambda: conn.execute("SELECT pg_sleep(2)").fetchone())
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
    thread, box = helpers.in_thread(lambda: conn.execute(DELETE).rowcount)
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
    with pytest.raises(psycopg.OperationalError):  # on worker 1: both hold none
        psycopg.connect(workers.conninfo(password=WRONG_KEY))
    assert time.monotonic() - started < 2.5  # the first failure is free
    time.sleep(0.5)  # the failed one's end reaches the parent's count
    workers.connect(on=1)  # so the next goes to worker 2
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
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


def test_connections_a_dead_worker_had_not_taken_are_served_by_another(
    workers: Workers,
) -> None:
    """Worker 2 is stopped (SIGSTOP), so the connections passed to it wait untaken; killed, it
    loses none of them: the parent passes them to worker 1."""
    pids = workers.worker_pids()
    _signal(pids[2], signal.SIGSTOP)
    try:
        threads = []
        for _ in range(4):  # 1, 2, 1, 2: each counts for its worker from the moment it is passed
            threads.append(
                helpers.in_thread(lambda: psycopg.connect(workers.conninfo(), autocommit=True))
            )
            time.sleep(0.2)
        time.sleep(0.5)
        waiting = [box for _, box in threads if not box]
        assert len(waiting) == 2  # worker 2's
    finally:
        _signal(pids[2], signal.SIGKILL)
    conns = []
    try:
        for thread, box in threads:
            thread.join(30)
            assert "error" not in box, box
            conns.append(box["result"])
        served = [serving_pid(c, workers.running.port) for c in conns]
        assert served == [pids[1]] * 4
        for conn in conns:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    finally:
        for conn in conns:
            conn.close()


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


def test_a_reload_through_the_admin_api_reloads_every_worker(workers: Workers) -> None:
    """``hoopgw reload`` reaches worker 1, which asks the parent: every worker reloads, and
    the answer (and the parent's one log line) says so."""
    config = workers.running.config_path
    config.write_text(config.read_text().replace("timeout = 60", "timeout = 30"))
    reloaded = workers.admin("root").cli("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert "changed: pg (approval)" in reloaded.stdout
    assert "workers applied: 1, 2" in reloaded.stdout
    log = workers.running.stderr_text()
    assert "config reload (by root (admin API)) applied by every worker (2)" in log
    records = workers.running.store_query(
        "SELECT count(*) FROM audit_records WHERE kind = 'config_reloaded'"
    )
    assert records == [(2,)]  # one per worker


def test_a_reload_every_worker_refuses_is_reported_once(workers: Workers) -> None:
    config = workers.running.config_path
    config.write_text(config.read_text().replace("shutdown_grace = 2", "shutdown_grace = 3"))
    _signal(workers.parent, signal.SIGHUP)

    def summed_up() -> bool:
        return "refused by every worker" in workers.running.stderr_text()

    helpers.wait_for(summed_up, timeout=30, what="the parent's summary")
    assert "[gateway] changed" in workers.running.stderr_text()
    reloaded = workers.admin("root").cli("reload")
    assert reloaded.returncode != 0
    assert "[gateway] changed" in reloaded.stderr + reloaded.stdout
    pids = workers.worker_pids()
    with workers.connect() as conn:  # nothing restarted, both still serve
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert workers.worker_pids() == pids


def test_a_connection_renamed_by_sighup_still_listens_on_every_worker(workers: Workers) -> None:
    """The renamed connection lets its listener go and takes it again: each worker must adopt
    the parent's socket again, not a descriptor number it has reused since."""
    config = workers.running.config_path
    config.write_text(config.read_text().replace('name = "pg"', 'name = "pg_renamed"'))
    _signal(workers.parent, signal.SIGHUP)

    def both_reloaded() -> bool:
        return workers.running.stderr_text().count("added ['pg_renamed']") >= 2

    helpers.wait_for(both_reloaded, timeout=30, what="both workers reloaded")
    for k in (1, 2):
        with workers.connect(on=k) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    assert "Socket operation on non-socket" not in workers.running.stderr_text()


def _reset_at_once(port: int) -> None:
    """Connect and reset the connection at once (``SO_LINGER`` 0): the gateway's end is no
    longer connected when a worker takes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_that_resets_at_once_ends_no_worker(workers: Workers) -> None:
    """A client gone before a worker takes its connection (its peer address unreadable) is
    closed by that worker alone: no worker ends, nor the sessions it serves."""
    pids = workers.worker_pids()
    with workers.connect(on=1) as conn:
        for _ in range(3):
            _reset_at_once(workers.running.port)
        time.sleep(1.5)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    with workers.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert workers.worker_pids() == pids
    assert "ended unexpectedly" not in workers.running.stderr_text()


def test_a_worker_restarted_after_a_refused_reload_does_not_run_the_refused_file(
    workers: Workers,
) -> None:
    """Every worker refused the file (a [gateway] change, with a policy change beside it);
    worker 2 then crashes. Started again it reads that file: it would enforce a policy the
    others do not. It is stopped, and every client is served by worker 1, on the old config."""
    config = workers.running.config_path
    text = config.read_text().replace("shutdown_grace = 2", "shutdown_grace = 3")
    assert "timeout = 60" in text
    config.write_text(text.replace("timeout = 60", "timeout = 30"))  # and a policy change
    _signal(workers.parent, signal.SIGHUP)
    helpers.wait_for(
        lambda: "refused by every worker" in workers.running.stderr_text(),
        timeout=30,
        what="the parent's summary",
    )
    _signal(workers.worker_pids()[2], signal.SIGKILL)
    helpers.wait_for(
        lambda: "worker 2 started with another config file" in workers.running.stderr_text(),
        timeout=60,
        what="worker 2 started again and stopped",
    )
    for _ in range(3):
        with workers.connect() as conn:
            assert serving_pid(conn, workers.running.port) == workers.worker_pids()[1]
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (100,)
