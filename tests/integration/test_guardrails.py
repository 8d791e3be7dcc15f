"""Every must-deny case of the guardrails corpus, end to end through the real gateway.

One gateway (guardrails with ``preset = "agent-readonly"``) in front of a fresh database holding a
canary table, sequence and role. Each refused case must come back as SQLSTATE 42501 *and* leave
no trace: the canary snapshot (rows, relations, roles, settings, large objects, the canary file)
is taken over a direct superuser connection after every case and must not change.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

CORPUS = tomllib.loads(
    (Path(__file__).parents[1] / "plugins" / "guardrails" / "corpus.toml").read_text()
)["case"]
DENY = [c for c in CORPUS if c["expect"] == "deny"]
ALLOW = [c for c in CORPUS if c["expect"] == "allow"]

SETUP = """
CREATE TABLE canary (id int PRIMARY KEY, note text);
INSERT INTO canary SELECT g, 'row ' || g FROM generate_series(1, 5) g;
CREATE SEQUENCE canary_seq;
CREATE VIEW canary_view AS SELECT * FROM canary;
CREATE FUNCTION canary_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$;
CREATE PROCEDURE canary_proc() LANGUAGE sql AS $$ DELETE FROM canary $$;
"""


def _snapshot(conn: psycopg.Connection[Any], role: str, path: str) -> dict[str, Any]:
    def rows(query: str, *params: Any) -> list[Any]:
        return conn.execute(query, params or None).fetchall()

    return {
        "canary": rows("SELECT * FROM canary ORDER BY id"),
        "sequence": rows("SELECT last_value, is_called FROM canary_seq"),
        "relations": rows(
            "SELECT relname, relkind, relowner, relrowsecurity, relacl::text FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
        ),
        "columns": rows(
            "SELECT attname, atthasdef FROM pg_attribute"
            " WHERE attrelid = 'canary'::regclass AND attnum > 0 ORDER BY attnum"
        ),
        "objects": rows(
            "SELECT count(*) FROM pg_namespace UNION ALL SELECT count(*) FROM pg_proc"
            " UNION ALL SELECT count(*) FROM pg_rewrite UNION ALL SELECT count(*) FROM pg_trigger"
            " UNION ALL SELECT count(*) FROM pg_policy UNION ALL SELECT count(*) FROM pg_extension"
            " UNION ALL SELECT count(*) FROM pg_default_acl"
            " UNION ALL SELECT count(*) FROM pg_description"
        ),
        "roles": rows(
            "SELECT rolname, rolsuper, rolpassword IS NOT NULL FROM pg_authid"
            " WHERE rolname LIKE %s ORDER BY 1",
            role + "%",
        ),
        "members": rows("SELECT count(*) FROM pg_auth_members WHERE member = %s::regrole", role),
        "settings": rows("SELECT count(*) FROM pg_file_settings WHERE name = 'hgw.canary'"),
        "db_settings": rows("SELECT count(*) FROM pg_db_role_setting"),
        "large_objects": rows("SELECT count(*) FROM pg_largeobject_metadata"),
        "file": os.path.exists(path),
    }


@pytest.fixture
def canary(pg_server: Any, pg_database: str) -> Any:
    role = f"hgw_canary_{secrets.token_hex(4)}"
    path = f"/tmp/hoopgw-canary-{secrets.token_hex(4)}"
    params = {"host": pg_server.host, "port": pg_server.port, "user": "postgres"}
    with psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(SETUP)
        try:
            yield conn, role, path
        finally:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _concrete(sql: str, role: str, path: str) -> str:
    return sql.replace("canary_role", role).replace("/tmp/hoopgw-canary", path)


def test_every_must_deny_case_is_refused_with_no_side_effect(
    gateway: Any, pg_database: str, canary: Any, wire_client: Any
) -> None:
    conn, role, path = canary
    gw = gateway(
        plugins=["recording", "guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"preset": "agent-readonly"}},
    )
    key = gw.create_key("agent", ["agents"])
    before = _snapshot(conn, role, path)
    client = wire_client(gw.host, gw.port)
    assert client.login(user="agent", database=pg_database, password=key)[-1].type == b"Z"
    with psycopg.connect(
        host=gw.host,
        port=gw.port,
        user="agent",
        password=key,
        dbname=pg_database,
        sslmode="disable",
        autocommit=True,
    ) as extended:
        for case in DENY:
            sql = _concrete(case["sql"], role, path)
            if case.get("kind") == "parse":
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                    extended.execute(sql.encode(), prepare=True)
                message = refused.value.diag.message_primary or ""
            else:
                error = client.first_error(client.query(sql))
                assert error["C"] == "42501", (sql, error)
                message = error["M"]
            assert message.startswith("hoopgw refused the command: "), (sql, message)
            assert _snapshot(conn, role, path) == before, f"side effect from {sql!r}"
        # The session goes on after every refusal, on both protocols.
        assert extended.execute("SELECT count(*) FROM canary").fetchone() == (5,)
    assert [m.type for m in client.query("SELECT 1")][-1] == b"Z"


def test_must_allow_cases_are_not_refused(
    gateway: Any, pg_database: str, canary: Any, wire_client: Any
) -> None:
    _conn, role, path = canary
    gw = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"preset": "agent-readonly"}},
    )
    key = gw.create_key("agent", ["agents"])
    client = wire_client(gw.host, gw.port)
    client.login(user="agent", database=pg_database, password=key)
    for case in ALLOW:
        if case.get("kind") == "parse":
            continue
        messages = client.query(_concrete(case["sql"], role, path))
        errors = [m.fields() for m in messages if m.type == b"E"]
        assert all(e["C"] != "42501" for e in errors), (case["sql"], errors)
        if any(m.fields().get("C") == "25P02" for m in messages if m.type == b"E"):
            client.query("ROLLBACK")


def test_a_refusal_inside_a_transaction_fails_it_on_both_sides(
    gateway: Any, pg_database: str, canary: Any
) -> None:
    _conn, _role, _path = canary
    gw = gateway(plugins=["guardrails"], connection={"guardrails": {"deny": ["write"]}})
    key = gw.create_key("agent", ["agents"])
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database
    ) as agent:
        agent.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("DELETE FROM canary WHERE id = 1")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            agent.execute("SELECT 1")
        agent.rollback()
        assert agent.execute("SELECT count(*) FROM canary").fetchone() == (5,)


def test_prepare_then_execute_is_judged_as_the_prepared_statement(
    gateway: Any, pg_database: str, canary: Any, wire_client: Any
) -> None:
    conn, _role, _path = canary
    gw = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"deny": ["drop"]}},
    )
    key = gw.create_key("agent", ["agents"])
    client = wire_client(gw.host, gw.port)
    client.login(user="agent", database=pg_database, password=key)
    assert not [m for m in client.query("PREPARE ok AS SELECT * FROM canary") if m.type == b"E"]
    assert not [m for m in client.query("EXECUTE ok") if m.type == b"E"]
    refused = client.first_error(client.query("PREPARE bad AS SELECT 1; DROP TABLE canary"))
    assert refused["C"] == "42501"
    assert client.first_error(client.query("EXECUTE bad"))["C"] == "42501"
    assert conn.execute("SELECT count(*) FROM canary").fetchone() == (5,)


def test_the_function_call_message_is_refused(
    gateway: Any, pg_database: str, canary: Any, wire_client: Any
) -> None:
    conn, role, path = canary
    before = _snapshot(conn, role, path)
    gw = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"preset": "agent-readonly"}},
    )
    key = gw.create_key("agent", ["agents"])
    client = wire_client(gw.host, gw.port)
    client.login(user="agent", database=pg_database, password=key)
    lo_create = conn.execute("SELECT 'lo_create'::regproc::oid").fetchone()[0]
    # FunctionCall(lo_create(0)): oid, 1 format code (binary), 1 argument of 4 bytes, result binary.
    body = (
        int(lo_create).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + (1).to_bytes(2, "big")
        + (1).to_bytes(2, "big")
        + (4).to_bytes(4, "big")
        + (0).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
    )
    client.send(b"F" + (len(body) + 4).to_bytes(4, "big") + body)
    messages = client.receive_until(b"Z")
    assert client.first_error(messages)["M"].startswith("hoopgw refused the command")
    assert _snapshot(conn, role, path) == before
