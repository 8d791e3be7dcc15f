"""Statement reviews on MySQL, as on PostgreSQL: a held DELETE waits for another identity's
``hoopgw reviews approve`` through the admin API, then runs once; a denied one comes back as
the gateway's refusal with the approver's reason."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

pytestmark = pytest.mark.integration


# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]
DELETE = "DELETE FROM orders WHERE id = 42"


class Background:
    """A statement run on its own thread, as a waiting agent would."""

    def __init__(self, conn: Any, sql: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(conn, sql), daemon=True)
        self.thread.start()

    def _run(self, conn: Any, sql: str) -> None:
        try:
            with conn.cursor() as cur:
                self.result = cur.execute(sql)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 20.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the statement did not finish"


@pytest.fixture
def setup(mysql_gateway: Callable[..., Any], mysql_database: Any) -> Any:
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host,
            port=server.port,
            user="root",
            database=mysql_database.name,
            autocommit=True,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, note TEXT)")
        cur.executemany("INSERT INTO orders VALUES (%s, %s)", [(i, f"o{i}") for i in range(100)])
    admin_port = helpers.free_port()
    running = mysql_gateway(
        plugins=["recording", "approval"],
        connection={"approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60}},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"approver": ["dba"]},
    )
    keys = {
        "agent": running.create_key("agent", ["agents"]),
        "alice": running.create_key("alice", ["dba"]),
    }

    def agent() -> Any:
        return pymysql.connect(
            host=running.host,
            port=running.port,
            user="agent",
            password=keys["agent"],
            database=mysql_database.name,
            autocommit=True,
        )

    agent.key = keys["agent"]  # type: ignore[attr-defined]  # for its own admin API calls
    alice = helpers.Admin(f"http://127.0.0.1:{admin_port}", keys["alice"])
    return agent, alice, mysql_database


def _count(database: Any) -> int:
    server = database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=database.name
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT COUNT(*) FROM orders WHERE id = 42")
        return int(cur.fetchone()[0])


def _pending(admin: Any) -> list[dict[str, Any]]:
    return list(
        helpers.wait_for(
            lambda: admin.cli_json("reviews", "list", "--pending"), what="a pending review"
        )
    )


def test_held_delete_runs_once_approved(setup: Any) -> None:
    agent, alice, database = setup
    agent_admin = helpers.Admin(alice.url, agent.key)
    with agent() as conn:
        held = Background(conn, DELETE)
        [review] = _pending(alice)
        assert review["statement"] == DELETE
        time.sleep(0.3)
        assert held.thread.is_alive(), "the statement must wait for the review"
        assert _count(database) == 1
        # MySQL has no unasked notice: the agent polls its session's pending review.
        status, body = agent_admin.call("GET", "/api/sessions/live")
        assert status == 200, body
        [session] = body["sessions"]
        assert session["pending_review"]["id"] == review["id"]
        assert session["pending_review"]["approvers"] == ["dba"]
        approved = alice.cli("reviews", "approve", review["id"], "--reason", "ticket 7")
        assert approved.returncode == 0, approved.stderr
        held.join()
        assert held.error is None, held.error
        assert held.result == 1
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM orders")
            assert cur.fetchone() == (99,)
    assert _count(database) == 0


def test_denied_delete_gets_the_approvers_reason(setup: Any) -> None:
    agent, alice, database = setup
    with agent() as conn:
        held = Background(conn, DELETE)
        [review] = _pending(alice)
        denied = alice.cli("reviews", "deny", review["id"], "--reason", "not during the sale")
        assert denied.returncode == 0, denied.stderr
        held.join()
        assert isinstance(held.error, pymysql.err.MySQLError)
        assert held.error.args[0] == 1227
        assert "not during the sale" in str(held.error)
        assert "[code=HGW-REFUSED]" in held.error.args[1]
    assert _count(database) == 1


def test_just_in_time_access_on_mysql(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    admin_port = helpers.free_port()
    running = mysql_gateway(
        plugins=["recording"],
        connection={"access": "jit", "jit_approvers": ["leads"], "jit_max_duration": 3600},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"admin": ["ops"]},
    )
    keys = {
        "agent": running.create_key("agent", ["agents"]),
        "lead": running.create_key("lead", ["leads"]),
        "root": running.create_key("root", ["ops"]),
    }
    url = f"http://127.0.0.1:{admin_port}"
    admins = {k: helpers.Admin(url, v) for k, v in keys.items()}

    def connect() -> Any:
        return pymysql.connect(
            host=running.host,
            port=running.port,
            user="agent",
            password=keys["agent"],
            database=mysql_database.name,
        )

    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect()
    assert refused.value.args[0] == 1044
    assert "just-in-time grant" in str(refused.value)
    assert "[code=HGW-NO-ACCESS]" in refused.value.args[1]
    assert "hoopgw access request --connection my --duration 30m" in refused.value.args[1]

    requested = admins["agent"].cli(
        "access", "request", "--connection", "my", "--duration", "30m", "--reason", "INC-7"
    )
    assert requested.returncode == 0, requested.stderr
    approved = admins["lead"].cli("reviews", "approve", requested.stdout.strip())
    assert approved.returncode == 0, approved.stderr
    [grant] = admins["agent"].cli_json("access", "list")
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        revoked = admins["root"].cli("access", "revoke", grant["id"], "--reason", "done")
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(pymysql.err.MySQLError) as ended:
            for _ in range(50):
                cur.execute("SELECT 1")
                time.sleep(0.1)
        assert "revoked" in str(ended.value)


def test_a_late_approval_covers_the_parameter_values_it_showed(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> None:
    """mysql-connector's prepared statements (COM_STMT_PREPARE, COM_STMT_EXECUTE with binary
    values): the approval of ``DELETE ... WHERE id = ?`` with 1 lets exactly that run; with 2 it
    is held again and the canary row 2 stays (issue 14, class 8)."""
    import mysql.connector

    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, note TEXT)")
        cur.execute("INSERT INTO orders VALUES (1, 'one'), (2, 'two')")
        conn.commit()
    admin_port = helpers.free_port()
    running = mysql_gateway(
        plugins=["recording", "approval"],
        connection={
            "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 1.5},
        },
        gateway_options={
            "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
        roles={"approver": ["dba"]},
    )
    agent_key = running.create_key("agent", ["agents"])
    alice = helpers.Admin(f"http://127.0.0.1:{admin_port}", running.create_key("alice", ["dba"]))
    statement = "DELETE FROM orders WHERE id = ?"

    def rows(ids: str) -> int:
        with (
            pymysql.connect(
                host=server.host, port=server.port, user="root", database=mysql_database.name
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(f"SELECT COUNT(*) FROM orders WHERE id IN ({ids})")
            return int(cur.fetchone()[0])

    with mysql.connector.connect(
        host=running.host,
        port=running.port,
        user="agent",
        password=agent_key,
        database=mysql_database.name,
        use_pure=True,
        ssl_ca=str(tls_files.ca_cert),
        ssl_verify_cert=True,
        autocommit=True,
    ) as conn:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as timed_out:
            cur.execute(statement, (1,))
        assert "was not decided in time" in str(timed_out.value)
        # Preparing ran nothing and needed no review; the execution is held with its value.
        [review] = alice.cli_json("reviews", "list", "--pending")
        assert review["statement"] == statement
        approved = alice.cli("reviews", "approve", review["id"])
        assert approved.returncode == 0, approved.stderr

        with pytest.raises(mysql.connector.Error) as held:
            cur.execute(statement, (2,))
        assert "was not decided in time" in str(held.value)
        assert rows("2") == 1
        assert review["parameters"] == ["1"]
        [other] = alice.cli_json("reviews", "list", "--pending")
        assert other["id"] != review["id"] and other["parameters"] == ["2"]

        cur.execute(statement, (1,))
        assert cur.rowcount == 1
    assert rows("1, 2") == 1
