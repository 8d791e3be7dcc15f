"""What a psycopg client is told, end to end: a denied statement (SQLSTATE, message, detail,
hint), a held statement (a NOTICE at once, then the result once approved, the review shown on
the admin API meanwhile) and a missing grant. Real gateway, real PostgreSQL, the real CLI."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import errors

pytestmark = pytest.mark.integration

# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]


@pytest.fixture
def running(gateway: Any, pg_server: Any, pg_database: str) -> Any:
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS refusals (id int PRIMARY KEY)")
        conn.execute("INSERT INTO refusals VALUES (1), (2) ON CONFLICT DO NOTHING")
    admin_port = helpers.free_port()
    gw = gateway(
        plugins=["guardrails", "approval"],
        allow_groups=["agents"],
        connection={
            "client_tls": "disabled",
            "guardrails": {"deny": ["ddl"]},
            "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60},
        },
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"approver": ["dba"]},
    )
    return SimpleNamespace(
        host=gw.host,
        port=gw.port,
        admin_url=f"http://127.0.0.1:{admin_port}",
        keys={
            "agent": gw.create_key("agent", ["agents"]),
            "alice": gw.create_key("alice", ["dba"]),
        },
        database=pg_database,
    )


def _conninfo(gw: Any, identity: str = "agent") -> str:
    return (
        f"host={gw.host} port={gw.port} user={identity} password={gw.keys[identity]}"
        f" dbname={gw.database} sslmode=disable"
    )


def test_a_denied_statement_names_code_rule_and_next_step(running: Any) -> None:
    with psycopg.connect(_conninfo(running), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as refused:
            conn.execute("DROP TABLE refusals")
        diag = refused.value.diag
        assert diag.sqlstate == "42501"
        assert diag.message_primary is not None
        assert diag.message_primary.startswith("hoopgw refused the command: ddl:")
        assert diag.message_detail == "code=HGW-DENIED rule=ddl plugin=guardrails"
        assert diag.message_hint is not None
        assert "Rule ddl does not allow this on connection pg" in diag.message_hint
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_held_statement_notices_its_review_then_runs_once_approved(running: Any) -> None:
    alice = helpers.Admin(running.admin_url, running.keys["alice"])
    agent = helpers.Admin(running.admin_url, running.keys["agent"])
    notices: list[Any] = []
    noticed = threading.Event()
    with psycopg.connect(_conninfo(running), autocommit=True) as conn:

        def handler(diag: Any) -> None:
            # psycopg's Diagnostic is only valid during the call: keep its fields.
            notices.append(
                SimpleNamespace(
                    sqlstate=diag.sqlstate,
                    severity=diag.severity_nonlocalized,
                    message_primary=diag.message_primary,
                    message_detail=diag.message_detail,
                    message_hint=diag.message_hint,
                )
            )
            noticed.set()

        conn.add_notice_handler(handler)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["rows"] = conn.execute("DELETE FROM refusals WHERE id = 2").rowcount
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # psycopg reads the notice while it waits for the result.
        assert noticed.wait(15), "no notice of the hold"
        [diag] = notices
        assert diag.sqlstate == "01000" and diag.severity == "NOTICE"
        [review] = alice.cli_json("reviews", "list", "--pending")
        assert diag.message_primary.startswith(
            f"hoopgw: held for review {review['id']} by group dba, waiting up to"
        )
        assert diag.message_detail.startswith("code=HGW-HELD")
        assert f"hoopgw reviews approve {review['id']}" in diag.message_hint
        # Every protocol's client can poll its own session's pending review.
        status, body = agent.call("GET", "/api/sessions/live")
        assert status == 200, body
        [session] = body["sessions"]
        assert session["pending_review"]["id"] == review["id"]
        assert session["pending_review"]["approvers"] == ["dba"]
        approved = alice.cli("reviews", "approve", review["id"])
        assert approved.returncode == 0, approved.stderr
        thread.join(20)
        assert not thread.is_alive()
        assert outcome == {"rows": 1}
        status, body = agent.call("GET", "/api/sessions/live")
        assert body["sessions"][0]["pending_review"] is None


def test_a_missing_grant_names_the_access_request_command(gateway: Any, pg_database: str) -> None:
    gw = gateway(
        plugins=["recording"],
        allow_groups=["agents"],
        connection={"client_tls": "disabled", "access": "jit", "jit_approvers": ["leads"]},
        gateway_options={"admin_listen": f"tcp:{helpers.free_port()}:interface=127.0.0.1"},
    )
    key = gw.create_key("agent", ["agents"])
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(
            f"host={gw.host} port={gw.port} user=agent password={key} dbname={pg_database}"
            " sslmode=disable"
        )
    message = str(refused.value)
    assert "hoopgw refused the login:" in message
    assert "[code=HGW-NO-ACCESS]" in message
    assert 'hoopgw access request --connection pg --duration 30m --reason "..."' in message
