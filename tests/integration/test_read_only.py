"""Read-only connections are enforced by PostgreSQL itself (issue 14, class 5).

The gateway logs in upstream as a least-privileged role that *may* write the canary table, so
only the server's read-only mode stands between a write the gateway's analysis misses and the
canary: a volatile function whose body deletes rows (``SELECT sneaky()`` looks like a read).
The canary is checked over a direct superuser connection.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.integration

SETUP = """
CREATE TABLE canary (id int PRIMARY KEY, note text);
INSERT INTO canary SELECT g, 'row ' || g FROM generate_series(1, 5) g;
CREATE FUNCTION sneaky() RETURNS int LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN DELETE FROM canary; RETURN 0; END $$;
CREATE FUNCTION flip() RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT set_config('default_transaction_read_only', 'off', false) $$;
-- Views reach the functions without a call in the text: without catalog_user the gateway does
-- not resolve them, so only the server's read-only mode stands in the way.
CREATE VIEW sneaky_v AS SELECT sneaky() AS x;
CREATE VIEW flip_v AS SELECT flip() AS x;
"""

# Statements that would let the session write again; each is refused by the gateway.
TURN_OFF = [
    "SET default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO false",
    "SET transaction_read_only = 0",
    "BEGIN; SET LOCAL transaction_read_only = off",
    "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "BEGIN READ WRITE",
    "BEGIN READ ONLY, READ WRITE",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT length(pg_catalog.set_config('transaction_read_only', 'off', true)) > 0",
    "SELECT set_config(lower('DEFAULT_TRANSACTION_READ_ONLY'), 'off', false)",
    "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
    "ALTER SYSTEM SET default_transaction_read_only = off",
    "DO $$ BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); COMMIT;"
    " DELETE FROM canary; END $$",
    "SELECT dblink_exec('dbname=postgres', 'SELECT 1')",
]


@pytest.fixture
def target(pg_server: Any, pg_database: str) -> Iterator[Any]:
    """A canary in a fresh database, and a least-privileged login role that may write it."""
    role = f"hgw_ro_{secrets.token_hex(4)}"
    params = {"host": pg_server.host, "port": pg_server.port, "user": "postgres"}
    with psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn:
        conn.execute(SETUP)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(pg_database), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON canary TO {0};"
                " GRANT SELECT ON sneaky_v, flip_v TO {0}"
            ).format(sql.Identifier(role))
        )
        try:
            yield conn, role
        finally:
            conn.execute(
                sql.SQL("DROP OWNED BY {}; DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(role), sql.Identifier(role)
                )
            )


def _canary(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM canary").fetchone()[0])


@pytest.fixture
def read_only(gateway: Callable[..., Any], pg_database: str, target: Any) -> Any:
    """Connect through a gateway whose policy denies writes (``policy`` picks which)."""

    def start(policy: dict[str, Any] | None = None, *, user: str | None = None) -> Any:
        _conn, role = target
        gw = gateway(
            plugins=["recording", "guardrails"],
            connection={
                "client_tls": "disabled",
                "credential": {"user": user or role},
                "guardrails": policy or {"preset": "agent-readonly"},
            },
        )
        key = gw.create_key("agent", ["agents"])

        def connect(**options: Any) -> psycopg.Connection[Any]:
            return psycopg.connect(
                host=gw.host,
                port=gw.port,
                user="agent",
                password=key,
                dbname=pg_database,
                sslmode="disable",
                autocommit=True,
                **options,
            )

        connect.gateway = gw  # type: ignore[attr-defined]
        connect.key = key  # type: ignore[attr-defined]
        return connect

    return start


@pytest.mark.parametrize("policy", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
def test_a_write_the_analysis_cannot_see_fails_on_the_server(
    read_only: Any, target: Any, policy: dict[str, Any]
) -> None:
    conn, _role = target
    connect = read_only(policy)
    with connect() as agent:
        assert agent.info.parameter_status("default_transaction_read_only") == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            agent.execute("SELECT * FROM sneaky_v")
        # The session goes on, still read-only, in and out of explicit transactions.
        agent.execute("BEGIN")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            agent.execute("SELECT * FROM sneaky_v")
        agent.execute("ROLLBACK")
        assert agent.execute("SELECT count(*) FROM canary").fetchone() == (5,)
    assert _canary(conn) == 5


def test_psql_gets_the_servers_read_only_error(
    read_only: Any, target: Any, pg_database: str
) -> None:
    conn, _role = target
    connect = read_only()
    gw = connect.gateway
    done = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT * FROM sneaky_v"],
        env={
            "PGHOST": gw.host,
            "PGPORT": str(gw.port),
            "PGUSER": "agent",
            "PGPASSWORD": connect.key,
            "PGDATABASE": pg_database,
            "PGSSLMODE": "disable",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "read-only transaction" in done.stderr, done.stderr
    assert _canary(conn) == 5


@pytest.mark.parametrize("policy", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
def test_every_way_to_turn_read_only_off_is_refused(
    read_only: Any, target: Any, policy: dict[str, Any]
) -> None:
    conn, _role = target
    connect = read_only(policy)
    with connect() as agent:
        for statement in TURN_OFF:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                agent.execute(statement)
            message = refused.value.diag.message_primary or ""
            assert "read-only" in message and "guardrails deny write" in message, message
            agent.execute("ROLLBACK")  # harmless outside a transaction (a warning)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                agent.execute("SELECT * FROM sneaky_v")
            assert _canary(conn) == 5, statement


def test_reset_and_discard_return_to_read_only(read_only: Any, target: Any) -> None:
    conn, _role = target
    # agent-readonly refuses any change of the setting (class admin); deny write lets these
    # through, and the server returns to the startup parameter's value.
    connect = read_only({"deny": ["write"]})
    with connect() as agent:
        for statement in (
            "RESET default_transaction_read_only",
            "SET default_transaction_read_only TO DEFAULT",
            "RESET ALL",
            "DISCARD ALL",
        ):
            agent.execute(statement)
            assert agent.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                agent.execute("SELECT * FROM sneaky_v")
    assert _canary(conn) == 5


def test_startup_options_cannot_turn_read_only_off(read_only: Any, target: Any) -> None:
    conn, _role = target
    connect = read_only({"deny": ["write"]})
    for options in ("-c default_transaction_read_only=off", "-c transaction_read_only=off"):
        with pytest.raises(psycopg.OperationalError, match="read-only"):
            connect(options=options)
    with connect(options="-c default_transaction_read_only=on") as agent:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            agent.execute("SELECT * FROM sneaky_v")
    assert _canary(conn) == 5


def test_a_change_the_gateway_did_not_see_ends_the_session(read_only: Any, target: Any) -> None:
    conn, _role = target
    connect = read_only()
    with connect() as agent:
        # flip() turns read-only off from inside a function body; the server reports the
        # change and the gateway ends the session before anything else runs.
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="session ended"):
            agent.execute("SELECT * FROM flip_v")
        assert agent.closed or agent.broken
    assert _canary(conn) == 5


def test_a_superuser_login_is_warned_about(read_only: Any, target: Any) -> None:
    connect = read_only(user="postgres")
    gw = connect.gateway
    checked = gw.cli("config", "check", "--online")
    assert checked.returncode == 0, checked.stderr
    assert "pg: upstream login ok (read-only sessions)" in checked.stdout
    assert "warning: connection 'pg'" in checked.stderr
    assert "'postgres', a superuser" in checked.stderr
    assert "least-privileged" in checked.stderr
    # The running gateway says so in its log too.
    deadline = time.monotonic() + 20
    while "a superuser" not in gw.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "a superuser" in gw.stderr_text()


def test_a_least_privileged_login_is_not_warned_about(read_only: Any, target: Any) -> None:
    connect = read_only()
    checked = connect.gateway.cli("config", "check", "--online", "--json")
    assert checked.returncode == 0, checked.stderr
    assert '"warnings": []' in checked.stdout and '"read_only": true' in checked.stdout


@pytest.mark.parametrize("route", ["one message", "pipeline with COMMIT", "pipeline with Sync"])
def test_a_transaction_after_an_unseen_change_does_not_run(
    read_only: Any, target: Any, route: str
) -> None:
    """Code the gateway does not see turns read-only off; the server reports it only before
    its next ReadyForQuery, so whatever the client sent behind it in a new transaction must not
    run before the gateway has read that report (it ran read-write and emptied the canary)."""
    conn, _role = target
    connect = read_only()
    with connect() as agent:
        with pytest.raises(psycopg.Error):
            if route == "one message":
                agent.execute("SELECT * FROM flip_v; COMMIT; SELECT * FROM sneaky_v")
            else:
                with agent.pipeline() as pipeline:
                    agent.execute("SELECT * FROM flip_v")
                    if route == "pipeline with COMMIT":
                        agent.execute("COMMIT")
                    else:
                        pipeline.sync()
                    agent.execute("SELECT * FROM sneaky_v")
    assert _canary(conn) == 5
