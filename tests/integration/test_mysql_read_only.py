"""Read-only connections are enforced by MariaDB/MySQL itself (issue 14, class 5).

The gateway logs in upstream as the test database's user, which holds every privilege on the
database, so only the server's read-only mode stands between a write the gateway's analysis
misses and the canary: a stored function whose body deletes rows (``SELECT sneaky()`` looks
like a read). The canary is checked over a direct root connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
ER_SPECIFIC_ACCESS_DENIED = 1227

SETUP = [
    "CREATE TABLE canary (id INT PRIMARY KEY, note VARCHAR(40))",
    "INSERT INTO canary VALUES (1, 'row 1'), (2, 'row 2'), (3, 'row 3')",
    "CREATE FUNCTION sneaky() RETURNS INT MODIFIES SQL DATA"
    " BEGIN DELETE FROM canary; RETURN 0; END",
    "CREATE PROCEDURE flip_and_delete()"
    " BEGIN SET @@session.tx_read_only = 0; DELETE FROM canary; END",
    # A stored function may turn the session's read-only mode off; MariaDB keeps the change.
    "CREATE FUNCTION flip() RETURNS INT BEGIN SET @@session.tx_read_only = 0; RETURN 1; END",
    "CREATE VIEW flipped AS SELECT flip() AS f",
    # ... and first stop the server reporting it: the answer's state-changed flag stays off.
    "CREATE FUNCTION quiet_flip() RETURNS INT BEGIN"
    " SET @@session.session_track_system_variables = ''; SET @@session.tx_read_only = 0;"
    " RETURN 1; END",
]

TURN_OFF = [
    "SET SESSION TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
    "START TRANSACTION READ WRITE",
    "SET @@session.tx_read_only = 0",
    "SET SESSION tx_read_only = OFF",
    "SET tx_read_only = DEFAULT",
    "SET @@tx_read_only := @nothing",
    "SET STATEMENT tx_read_only = 0 FOR SELECT sneaky()",
    "/*!50000 SET SESSION TRANSACTION READ WRITE */",
    "/*M!100000 SET @@session.tx_read_only = 0 */",
    "EXECUTE IMMEDIATE 'SET tx_read_only = 0'",
    "CALL flip_and_delete()",
]


def _root(server: Any, database: str) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host=server.host, port=server.port, user="root", database=database, autocommit=True
    )


def _canary(server: Any, database: str) -> int:
    with _root(server, database) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM canary")
        return int(cur.fetchone()[0])


@pytest.fixture
def guarded(mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any) -> Any:
    with _root(mysql_database.server, mysql_database.name) as conn, conn.cursor() as cur:
        for statement in SETUP:
            cur.execute(statement)

    def start(policy: dict[str, Any] | None = None, **connection: Any) -> Any:
        running = mysql_gateway(
            plugins=["recording", "guardrails"],
            connection={"guardrails": policy or {"preset": "agent-readonly"}, **connection},
            gateway_options={
                "tls_cert": str(tls_files.server_cert),
                "tls_key": str(tls_files.server_key),
            },
        )
        key = running.create_key("agent", ["agents"])

        def connect() -> pymysql.Connection[Any]:
            return pymysql.connect(
                host=running.host,
                port=running.port,
                user="agent",
                password=key,
                database=mysql_database.name,
                autocommit=True,
                client_flag=CLIENT.MULTI_STATEMENTS,
            )

        def connector() -> Any:
            return mysql.connector.connect(
                host=running.host,
                port=running.port,
                user="agent",
                password=key,
                database=mysql_database.name,
                use_pure=True,
                ssl_ca=str(tls_files.ca_cert),
                ssl_verify_cert=True,
                autocommit=True,
            )

        connect.gateway = running  # type: ignore[attr-defined]
        connect.key = key  # type: ignore[attr-defined]
        connect.connector = connector  # type: ignore[attr-defined]
        return connect

    return start


def _fails_on_the_server(cur: Any) -> None:
    with pytest.raises(pymysql.err.MySQLError) as failed:
        cur.execute("SELECT sneaky()")
    assert failed.value.args[0] == ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, failed.value


@pytest.mark.parametrize("policy", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
def test_a_write_the_analysis_cannot_see_fails_on_the_server(
    guarded: Any, mysql_database: Any, policy: dict[str, Any]
) -> None:
    connect = guarded(policy)
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@session.tx_read_only")
        assert cur.fetchone() == (1,)
        _fails_on_the_server(cur)
        cur.execute("START TRANSACTION")
        _fails_on_the_server(cur)
        cur.execute("ROLLBACK")
        cur.execute("SELECT COUNT(*) FROM canary")
        assert cur.fetchone() == (3,)
    assert _canary(mysql_database.server, mysql_database.name) == 3


@pytest.mark.parametrize("policy", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
def test_every_way_to_turn_read_only_off_is_refused(
    guarded: Any, mysql_database: Any, policy: dict[str, Any]
) -> None:
    connect = guarded(policy)
    with connect() as conn, conn.cursor() as cur:
        for statement in TURN_OFF:
            with pytest.raises(pymysql.err.MySQLError) as refused:
                cur.execute(statement)
            code, message = refused.value.args
            assert code == ER_SPECIFIC_ACCESS_DENIED, (statement, message)
            assert "read-only" in message and "guardrails deny write" in message, message
            _fails_on_the_server(cur)
            assert _canary(mysql_database.server, mysql_database.name) == 3, statement


@pytest.mark.parametrize("policy", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
@pytest.mark.parametrize(
    "flip",
    [
        "SELECT flip()",
        "SELECT * FROM flipped",
        "DO flip()",
        "SET @x = flip()",
        "SELECT quiet_flip()",
    ],
)
@pytest.mark.parametrize("packets", ["one", "two"])
def test_code_that_turns_read_only_off_lets_no_write_through(
    guarded: Any, mysql_database: Any, policy: dict[str, Any], flip: str, packets: str
) -> None:
    # Guardrails judges `SELECT sneaky()` a read and leaves the write to the server's
    # read-only mode; a function, reached however, turned that mode off for the next
    # transaction, and sneaky() emptied the canary. Now a packet runs one statement, and
    # the session is read-only again before the next command.
    connect = guarded(policy)
    with connect() as conn, conn.cursor() as cur:
        if packets == "one":
            with pytest.raises(pymysql.err.MySQLError) as refused:
                cur.execute(f"{flip}; SELECT sneaky()")
            assert "one statement per packet" in refused.value.args[1], refused.value
        else:
            cur.execute(flip)
            _fails_on_the_server(cur)
        cur.execute("SELECT @@session.tx_read_only")
        assert cur.fetchone() == (1,)
    assert _canary(mysql_database.server, mysql_database.name) == 3


def test_a_reset_or_change_of_user_makes_the_session_read_only_again(
    guarded: Any, mysql_database: Any
) -> None:
    connect = guarded()
    with connect.connector() as conn:
        cur = conn.cursor()
        assert conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @@session.tx_read_only")
        assert cur.fetchall() == [(1,)]
        with pytest.raises(mysql.connector.Error) as failed:
            cur.execute("SELECT sneaky()")
        assert failed.value.errno == ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
        for database in (mysql_database.name, ""):
            conn.cmd_change_user(username="agent", password=connect.key, database=database)
            cur = conn.cursor()
            cur.execute("SELECT @@session.tx_read_only")
            assert cur.fetchall() == [(1,)]
        cur.execute(f"USE `{mysql_database.name}`")
        with pytest.raises(mysql.connector.Error) as failed:
            cur.execute("SELECT sneaky()")
        assert failed.value.errno == ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    assert _canary(mysql_database.server, mysql_database.name) == 3


def test_a_login_with_global_privileges_is_warned_about(guarded: Any, tmp_path: Any) -> None:
    root = guarded(credential={"user": "root"})
    checked = root.gateway.cli("config", "check", "--online")
    assert checked.returncode == 0, checked.stderr
    assert "my: upstream login ok (read-only sessions)" in checked.stdout
    assert "warning: connection 'my'" in checked.stderr
    assert "ALL PRIVILEGES" in checked.stderr and "least-privileged" in checked.stderr
    deadline = time.monotonic() + 20
    while "ALL PRIVILEGES" not in root.gateway.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ALL PRIVILEGES" in root.gateway.stderr_text()

    owner = guarded()
    checked = owner.gateway.cli("config", "check", "--online", "--json")
    assert checked.returncode == 0, checked.stderr
    assert '"warnings": []' in checked.stdout
