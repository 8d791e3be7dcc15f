"""Statement reviews end to end: the real gateway, the real PostgreSQL, psycopg clients, and the
real ``hoopgw reviews`` CLI speaking to the gateway's admin API as other identities.

Every API answer the tests see is checked against the gateway's OpenAPI document.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import errors

pytestmark = [pytest.mark.integration, pytest.mark.store]


# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]
Admin = helpers.Admin
wait_for = helpers.wait_for

DELETE = "DELETE FROM orders WHERE id = 42"


@attrs.define
class Setup:
    gateway: Any
    database: str
    keys: dict[str, str]
    admin_url: str

    def conninfo(self, identity: str = "agent") -> str:
        return (
            f"host={self.gateway.host} port={self.gateway.port} user={identity}"
            f" password={self.keys[identity]} dbname={self.database} sslmode=disable"
        )

    def admin(self, identity: str) -> Any:
        return Admin(self.admin_url, self.keys[identity])


def _start(
    gateway: Any,
    pg_server: Any,
    pg_database: str,
    plugins: tuple[str, ...] = ("recording", "approval"),
    **approval: Any,
) -> Setup:
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        conn.execute(
            "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g"
            " ON CONFLICT DO NOTHING"
        )
    admin_port = helpers.free_port()
    options = {"review": ["write"], "approvers": ["dba"], "timeout": 60, **approval}
    running = gateway(
        plugins=list(plugins),
        allow_groups=["agents"],
        connection={"client_tls": "disabled", "approval": options},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"approver": ["dba"], "auditor": ["audit"]},
    )
    keys = {
        "agent": running.create_key("agent", ["agents"]),
        "alice": running.create_key("alice", ["dba"]),
        "bob": running.create_key("bob", ["dba"]),
        "carol": running.create_key("carol", ["agents", "dba"]),
        "eve": running.create_key("eve", ["agents"]),
        "dave": running.create_key("dave", ["audit"]),
    }
    return Setup(
        gateway=running,
        database=pg_database,
        keys=keys,
        admin_url=f"http://127.0.0.1:{admin_port}",
    )


@pytest.fixture
def setup(gateway: Any, pg_server: Any, pg_database: str) -> Setup:
    return _start(gateway, pg_server, pg_database)


def _target(pg_server: Any, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=database,
        autocommit=True,
    )


class Background:
    """A statement run on its own thread, as a waiting agent would."""

    def __init__(self, conn: psycopg.Connection[Any], sql: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(conn, sql), daemon=True)
        self.thread.start()

    def _run(self, conn: psycopg.Connection[Any], sql: str) -> None:
        try:
            self.result = conn.execute(sql).rowcount
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 20.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the statement did not finish"


def _pending(admin: Any, count: int = 1) -> list[dict[str, Any]]:
    def found() -> Any:
        reviews = admin.cli_json("reviews", "list", "--pending")
        return reviews if len(reviews) >= count else None

    return wait_for(found, what=f"{count} pending review(s)")


def test_held_delete_runs_once_another_identity_approves_through_the_cli(
    setup: Setup, pg_server: Any
) -> None:
    alice, carol, eve = setup.admin("alice"), setup.admin("carol"), setup.admin("eve")
    with psycopg.connect(setup.conninfo("carol"), autocommit=True) as agent:
        held = Background(agent, DELETE)
        [review] = _pending(alice)
        assert review["statement"] == DELETE
        assert review["requester"] == "carol"
        assert review["approvers"] == ["dba"]
        time.sleep(0.3)
        assert held.thread.is_alive(), "the statement must wait for the review"
        with _target(pg_server, setup.database) as target:
            assert target.execute("SELECT count(*) FROM orders WHERE id = 42").fetchone() == (1,)

        # Nobody approves their own request, and only the approver groups decide.
        own = carol.cli("reviews", "approve", review["id"])
        assert own.returncode == 1
        assert "nobody may decide their own request" in own.stderr
        auditor = setup.admin("dave").cli("reviews", "approve", review["id"])
        assert auditor.returncode == 1
        assert "only members of dba may decide" in auditor.stderr
        outsider = eve.cli("reviews", "approve", review["id"])
        assert outsider.returncode == 1
        assert f"no review '{review['id']}'" in outsider.stderr  # eve may not even see it
        status, _ = eve.call("POST", f"/api/reviews/{review['id']}/approve", {})
        assert status == 404
        assert held.thread.is_alive()

        approved = alice.cli("reviews", "approve", review["id"], "--reason", "ticket 7")
        assert approved.returncode == 0, approved.stderr
        held.join()
        assert held.error is None, held.error
        assert held.result == 1
        # The session carries on normally.
        assert agent.execute("SELECT count(*) FROM orders").fetchone() == (99,)

    shown = alice.cli_json("reviews", "show", review["id"])
    assert shown["status"] == "approved"
    assert shown["decided_by"] == "alice"
    assert [(v["identity"], v["approve"]) for v in shown["votes"]] == [("alice", True)]
    text = alice.cli("reviews", "show", review["id"])
    assert "status      approved" in text.stdout
    kinds = _audit_kinds(setup.gateway)
    assert "review_requested" in kinds and "review_decided" in kinds


def _audit_kinds(running: Any) -> list[str]:
    return [row[0] for row in running.store_query("SELECT kind FROM audit_records ORDER BY seq")]


def _audit_records(running: Any, kind: str) -> list[dict[str, Any]]:
    rows = running.store_query(
        "SELECT data FROM audit_records WHERE kind = ? ORDER BY seq", (kind,)
    )
    return [json.loads(row[0]) for row in rows]


def test_denied_statement_gets_the_approvers_reason(setup: Setup, pg_server: Any) -> None:
    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        held = Background(agent, DELETE)
        [review] = _pending(alice)
        missing = alice.cli("reviews", "deny", review["id"])
        assert missing.returncode == 2  # --reason is required
        denied = alice.cli("reviews", "deny", review["id"], "--reason", "not during the sale")
        assert denied.returncode == 0, denied.stderr
        held.join()
        assert isinstance(held.error, errors.InsufficientPrivilege)
        assert "denied by alice" in str(held.error)
        assert "not during the sale" in str(held.error)
        assert agent.execute("SELECT count(*) FROM orders").fetchone() == (100,)
    again = alice.cli("reviews", "approve", review["id"])
    assert again.returncode == 1 and "is denied" in again.stderr
    [decided] = [r for r in _audit_records(setup.gateway, "review_decided")]
    assert decided["status"] == "denied" and decided["by"] == "alice"
    assert decided["reason"] == "not during the sale"


def test_timed_out_statement_runs_once_after_a_later_approval(
    gateway: Any, pg_server: Any, pg_database: str
) -> None:
    setup = _start(gateway, pg_server, pg_database, timeout=1.5, valid_for=60)
    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        with pytest.raises(errors.InsufficientPrivilege) as timed_out:
            agent.execute(DELETE)
        [review] = alice.cli_json("reviews", "list", "--pending")
        assert f"review {review['id']} was not decided in time" in str(timed_out.value)
        assert review["timed_out_at"] is not None
        approved = alice.cli("reviews", "approve", review["id"])
        assert approved.returncode == 0, approved.stderr
        shown = alice.cli_json("reviews", "show", review["id"])
        assert shown["valid_until"] is not None

        # Another statement is not covered by the approval; another identity neither.
        with psycopg.connect(setup.conninfo("eve"), autocommit=True) as other:
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute(DELETE)
        # The identical statement from the same identity runs once, without a new review ...
        assert agent.execute(DELETE).rowcount == 1
        # ... and only once.
        with pytest.raises(errors.InsufficientPrivilege) as again:
            agent.execute(DELETE)
        assert "was not decided in time" in str(again.value)
    rerun = _audit_records(setup.gateway, "review_rerun")
    assert [r["review"] for r in rerun] == [review["id"]]


BOUND_DELETE = "DELETE FROM orders WHERE id = %s"


@pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "named"])
def test_a_late_approval_covers_the_parameter_values_it_showed(
    gateway: Any, pg_server: Any, pg_database: str, prepare: bool
) -> None:
    """An approval of ``DELETE ... WHERE id = $1`` with 1 lets exactly that run: the same text
    with 2 is held again, and the canary row 2 stays (issue 14, class 8). psycopg binds on the
    server (Parse, Bind with the value, Execute)."""
    setup = _start(gateway, pg_server, pg_database, timeout=1.5, valid_for=60)
    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        with pytest.raises(errors.InsufficientPrivilege):
            agent.execute(BOUND_DELETE, (1,), prepare=prepare)
        [review] = alice.cli_json("reviews", "list", "--pending")
        assert review["statement"] == "DELETE FROM orders WHERE id = $1"
        approved = alice.cli("reviews", "approve", review["id"])
        assert approved.returncode == 0, approved.stderr

        # The same text with another value is other work: held for a review of its own.
        with pytest.raises(errors.InsufficientPrivilege) as held:
            agent.execute(BOUND_DELETE, (2,), prepare=prepare)
        assert "was not decided in time" in str(held.value)
        with _target(pg_server, setup.database) as target:
            assert target.execute("SELECT count(*) FROM orders WHERE id = 2").fetchone() == (1,)
        # Reviewers saw (and see) the values each review covers.
        assert review["parameters"] == ["1"]
        assert "parameters  [1] '1'" in alice.cli("reviews", "show", review["id"]).stdout
        [other] = alice.cli_json("reviews", "list", "--pending")
        assert other["id"] != review["id"] and other["parameters"] == ["2"]
        # The approved values run, once.
        assert agent.execute(BOUND_DELETE, (1,), prepare=prepare).rowcount == 1
    # Durable in the audit journal before the re-run; in the store a moment later.
    rerun = wait_for(lambda: _audit_records(setup.gateway, "review_rerun"), what="the re-run")
    assert [(r["review"], r["parameters"]) for r in rerun] == [(review["id"], ["1"])]
    with _target(pg_server, setup.database) as target:
        assert target.execute("SELECT count(*) FROM orders WHERE id IN (1, 2)").fetchone() == (1,)


def test_reviewers_see_parameter_values_masked_when_masking_is_on(
    gateway: Any, pg_server: Any, pg_database: str
) -> None:
    setup = _start(
        gateway, pg_server, pg_database, ("recording", "masking", "approval"), timeout=1.5
    )
    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        with pytest.raises(errors.InsufficientPrivilege):
            agent.execute("UPDATE orders SET note = %s WHERE id = %s", ("alice@example.com", 5))
    [review] = alice.cli_json("reviews", "list", "--pending")
    assert review["statement"] == "UPDATE orders SET note = $1 WHERE id = $2"
    assert len(review["parameters"]) == 2 and review["parameters"][1] == "5"
    shown = alice.cli("reviews", "show", review["id"]).stdout
    assert "alice@example.com" not in shown + repr(review["parameters"])
    requested = wait_for(
        lambda: _audit_records(setup.gateway, "review_requested"), what="the review's record"
    )
    assert requested[0]["parameters"][1] == "5"
    assert "alice@example.com" not in repr(requested)


def test_cancel_and_disconnect_withdraw_the_review(
    setup: Setup, pg_server: Any, wire_client: Any
) -> None:
    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        held = Background(agent, DELETE)
        [review] = _pending(alice)
        agent.cancel()
        held.join()
        assert isinstance(held.error, errors.QueryCanceled)
        assert alice.cli_json("reviews", "show", review["id"])["status"] == "withdrawn"
        # The session is usable afterwards.
        assert agent.execute("SELECT 1").fetchone() == (1,)

    client = wire_client(setup.gateway.host, setup.gateway.port)
    assert (
        client.login(user="agent", database=setup.database, password=setup.keys["agent"])[-1].type
        == b"Z"
    )
    payload = DELETE.encode() + b"\0"
    client.send(b"Q" + (len(payload) + 4).to_bytes(4, "big") + payload)
    [gone] = [r for r in _pending(alice) if r["id"] != review["id"]]
    client.close()
    wait_for(
        lambda: alice.cli_json("reviews", "show", gone["id"])["status"] == "withdrawn",
        what="the review to be withdrawn",
    )
    late = alice.cli("reviews", "approve", gone["id"])
    assert late.returncode == 1 and "is withdrawn" in late.stderr
    with _target(pg_server, setup.database) as target:
        assert target.execute("SELECT count(*) FROM orders").fetchone() == (100,)


def test_a_client_leaving_while_held_is_recorded_as_cancelled(setup: Setup, pg_server: Any) -> None:
    # The hook contract: the held command is decided once (withdrawn), completed once as
    # cancelled, and the session closed; the recording plugin stores all three.
    alice = setup.admin("alice")
    agent = psycopg.connect(setup.conninfo(), autocommit=True)
    agent.pgconn.send_query(DELETE.encode())  # libpq sends it; nothing waits for the answer
    [review] = _pending(alice)
    agent.close()
    wait_for(
        lambda: alice.cli_json("reviews", "show", review["id"])["status"] == "withdrawn",
        what="the review to be withdrawn",
    )

    def recorded() -> Any:
        listed = setup.gateway.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        ended = [s for s in json.loads(listed.stdout) if s["ended_at"]]
        if not ended:
            return None
        shown = setup.gateway.cli("sessions", "show", ended[0]["id"], "--json")
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        return detail if detail["commands"] and detail["commands"][0]["status"] else None

    detail = wait_for(recorded, what="the session's record")
    assert detail["end_reason"] == "client closed"
    [command] = detail["commands"]
    assert (command["text"], command["verdict"], command["status"]) == (
        DELETE,
        "block",
        "cancelled",
    )
    with _target(pg_server, setup.database) as target:
        assert target.execute("SELECT count(*) FROM orders").fetchone() == (100,)


def _latencies(conn: psycopg.Connection[Any], count: int = 40) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        times.append(time.perf_counter() - started)
    return times


def test_held_sessions_leave_other_sessions_unaffected(setup: Setup) -> None:
    alice = setup.admin("alice")
    with (
        psycopg.connect(setup.conninfo(), autocommit=True) as first,
        psycopg.connect(setup.conninfo(), autocommit=True) as second,
        psycopg.connect(setup.conninfo("eve"), autocommit=True) as third,
    ):
        before = statistics.median(_latencies(third))
        held = [Background(first, DELETE), Background(second, "DELETE FROM orders WHERE id = 43")]
        _pending(alice, 2)
        during = statistics.median(_latencies(third))
        assert during < max(before * 3, before + 0.010), (before, during)
        assert all(h.thread.is_alive() for h in held)
        for review in alice.cli_json("reviews", "list", "--pending"):
            assert alice.cli("reviews", "approve", review["id"]).returncode == 0
        for h in held:
            h.join()
            assert h.error is None and h.result == 1


def test_api_refusals_fit_the_openapi_document(setup: Setup) -> None:
    alice = setup.admin("alice")
    status, me = alice.call("GET", "/api/whoami")
    assert status == 200 and me["roles"] == ["approver"] and me["identity"] == "alice"
    assert alice.call("GET", "/api/reviews", token="")[0] == 401
    assert alice.call("GET", "/api/reviews", token="hgw_000000000000_nope")[0] == 401
    assert alice.call("GET", "/api/reviews?status=bogus")[0] == 400
    assert alice.call("GET", "/api/reviews/0123456789ab")[0] == 404
    assert alice.call("POST", "/api/reviews/0123456789ab/deny", {"reason": "x"})[0] == 404
    assert alice.call("POST", "/api/access/requests", {"connection": "pg"})[0] == 400
    status, refused = alice.call(
        "POST", "/api/access/requests", {"connection": "pg", "duration": 60, "reason": "x"}
    )
    assert status == 400
    assert refused["error"]["message"] == "connection 'pg' does not use just-in-time access"
    status, listed = alice.call("GET", "/api/access/grants")
    assert status == 200 and listed == {"grants": []}
    no_url = subprocess.run(
        [*helpers.HOOPGW, "reviews", "list"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin"},
    )
    assert no_url.returncode == 1 and "HOOPGW_URL" in no_url.stderr


def _restart(running: Any) -> subprocess.Popen[bytes]:
    log = running.config_path.parent / "restart.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*helpers.HOOPGW, "run", "-c", str(running.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=running.config_path.parent,
        )
    running.process = process  # stopped by the fixture at teardown
    running.stderr_path = log
    return process


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_with_pending_reviews_aborts_them(setup: Setup, how: str) -> None:
    alice = setup.admin("alice")
    agent = psycopg.connect(setup.conninfo(), autocommit=True)
    held = Background(agent, DELETE)
    [review] = _pending(alice)
    setup.gateway.process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    held.join()
    assert held.error is not None  # the client got an error, never a result
    if how == "sigterm":
        assert "aborted" in str(held.error) or "terminating connection" in str(held.error)
    agent.close()
    setup.gateway.process.wait(10)
    _restart(setup.gateway)
    wait_for(
        lambda: alice.cli("reviews", "show", review["id"], "--json").returncode == 0,
        what="the restarted gateway's API",
    )
    shown = alice.cli_json("reviews", "show", review["id"])
    assert shown["status"] == "aborted"
    assert alice.cli_json("reviews", "list", "--pending") == []
    approve = alice.cli("reviews", "approve", review["id"])
    assert approve.returncode == 1 and "is aborted" in approve.stderr
    decided = _audit_records(setup.gateway, "review_decided")
    assert [(d["review"], d["status"]) for d in decided] == [(review["id"], "aborted")]


def test_webhook_notifications_are_signed_and_retried(
    gateway: Any, pg_server: Any, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict[str, str], bytes]] = []
    answers = [500]  # the first delivery fails: the plugin must retry

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HGW_TEST_HOOK_SECRET", "hook-secret")
    try:
        with psycopg.connect(
            host=pg_server.host,
            port=pg_server.port,
            user="postgres",
            dbname=pg_database,
            autocommit=True,
        ) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            conn.execute("INSERT INTO orders VALUES (42)")
        admin_port = helpers.free_port()
        running = gateway(
            plugins=["recording", "approval", "webhook"],
            connection={
                "client_tls": "disabled",
                "approval": {"review": ["write"], "approvers": ["dba"]},
                "webhook": {
                    "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                    "secret": "env:HGW_TEST_HOOK_SECRET",
                    "events": ["requested", "approved"],
                },
            },
            gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        )
        agent_key = running.create_key("agent", ["agents"])
        alice = Admin(f"http://127.0.0.1:{admin_port}", running.create_key("alice", ["dba"]))
        with psycopg.connect(
            f"host={running.host} port={running.port} user=agent password={agent_key}"
            f" dbname={pg_database} sslmode=disable",
            autocommit=True,
        ) as agent:
            held = Background(agent, DELETE)
            [review] = _pending(alice)
            wait_for(lambda: len(received) >= 2, what="the retried notification")
            assert alice.cli("reviews", "approve", review["id"]).returncode == 0
            held.join()
            assert held.error is None and held.result == 1
        wait_for(lambda: len(received) >= 3, what="the approval notification")
    finally:
        server.shutdown()
    events = []
    for headers, body in received:
        timestamp = headers["x-hoopgw-timestamp"]
        expected = hmac.new(b"hook-secret", f"{timestamp}.".encode() + body, hashlib.sha256)
        assert headers["x-hoopgw-signature"] == "sha256=" + expected.hexdigest()
        assert abs(int(timestamp) - time.time()) < 60
        document = json.loads(body)
        assert isinstance(document["text"], str)  # what Slack incoming webhooks need
        assert document["hoopgw"]["review"] == review["id"]
        events.append(document["hoopgw"]["event"])
    assert events == ["requested", "requested", "approved"]


def test_a_failed_parse_does_not_rename_what_a_prepared_statement_runs(
    gateway: Any, pg_server: Any, pg_database: str
) -> None:
    """PostgreSQL refuses a Parse of a name that exists and keeps the old statement: the
    gateway must not take the new text for what later executions of that name run (it judged
    a Bind of the DELETE as the SELECT, and row 2 went without a review)."""
    setup = _start(gateway, pg_server, pg_database, timeout=1.5)
    with psycopg.connect(setup.conninfo(), autocommit=True) as agent:
        pgconn = agent.pgconn
        # Only prepared: allowed without a review (each execution is reviewed).
        assert pgconn.prepare(b"s1", b"DELETE FROM orders WHERE id = $1").error_message == b""
        again = pgconn.prepare(b"s1", b"SELECT $1::int")
        assert b"already exists" in again.error_message or b"hoopgw" in again.error_message
        ran = pgconn.exec_prepared(b"s1", [b"2"])
        assert b"hoopgw" in ran.error_message, ran.error_message
    with _target(pg_server, setup.database) as target:
        assert target.execute("SELECT count(*) FROM orders WHERE id = 2").fetchone() == (1,)


def test_a_reload_that_changes_the_policy_withdraws_a_held_statement(
    setup: Setup, pg_server: Any
) -> None:
    """A statement held for review under the old config must not run on an approval given
    after a reload replaced the connection's policy (here: another approver group, the old
    one no longer trusted): its review is aborted and the client told to send it again, under
    the new policy."""
    import signal
    import tomllib

    import tomli_w

    alice = setup.admin("alice")
    with psycopg.connect(setup.conninfo("agent"), autocommit=True) as agent:
        held = Background(agent, DELETE)
        [review] = _pending(alice)
        path = setup.gateway.config_path
        document = tomllib.loads(path.read_text())
        [conn] = document["connections"]
        conn["approval"]["approvers"] = ["audit"]
        path.write_text(tomli_w.dumps(document))
        before = setup.gateway.stderr_text().count("config reloaded")
        setup.gateway.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: setup.gateway.stderr_text().count("config reloaded") > before or None,
            what="the reload",
        )
        alice.cli("reviews", "approve", review["id"])  # too late: withdrawn, or refused
        held.join()
        assert isinstance(held.error, psycopg.Error), held.error
        assert "config" in str(held.error)
    with _target(pg_server, setup.database) as target:
        assert target.execute("SELECT count(*) FROM orders WHERE id = 42").fetchone() == (1,)
    assert alice.cli_json("reviews", "show", review["id"])["status"] == "aborted"
