"""Just-in-time access end to end: a connection with ``access = "jit"`` admits a session only
under a live grant; the grant comes from ``hoopgw access request`` approved with ``hoopgw
reviews approve``; its expiry or revocation ends a running psql session with a protocol error,
and the end is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.store]


# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]


@pytest.fixture
def jit(gateway: Any, pg_database: str) -> Any:
    admin_port = helpers.free_port()
    running = gateway(
        plugins=["recording"],
        allow_groups=["agents"],
        connection={
            "client_tls": "disabled",
            "access": "jit",
            "jit_approvers": ["leads"],
            "jit_max_duration": 3600,
        },
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"admin": ["ops"]},
    )
    keys = {
        "agent": running.create_key("agent", ["agents"]),
        "lead": running.create_key("lead", ["leads"]),
        "root": running.create_key("root", ["ops"]),
    }
    url = f"http://127.0.0.1:{admin_port}"
    return running, pg_database, keys, {k: helpers.Admin(url, v) for k, v in keys.items()}


def _conninfo(running: Any, database: str, key: str) -> str:
    return (
        f"host={running.host} port={running.port} user=agent password={key}"
        f" dbname={database} sslmode=disable"
    )


def _psql(running: Any, database: str, key: str, sql: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PGHOST": running.host,
        "PGPORT": str(running.port),
        "PGUSER": "agent",
        "PGPASSWORD": key,
        "PGDATABASE": database,
        "PGSSLMODE": "disable",
    }
    return subprocess.Popen(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _records(running: Any, kind: str) -> list[dict[str, Any]]:
    rows = running.store_query(
        "SELECT data FROM audit_records WHERE kind = ? ORDER BY seq", (kind,)
    )
    return [json.loads(row[0]) for row in rows]


def _end_reasons(running: Any) -> list[str]:
    rows = running.store_query("SELECT end_reason FROM sessions WHERE ended_at IS NOT NULL")
    return [row[0] for row in rows]


def _grant(admins: dict[str, Any], duration: str) -> tuple[str, str]:
    requested = admins["agent"].cli(
        "access", "request", "--connection", "pg", "--duration", duration, "--reason", "INC-42"
    )
    assert requested.returncode == 0, requested.stderr
    review_id = requested.stdout.strip()
    assert "hoopgw reviews approve" in requested.stderr
    own = admins["agent"].cli("reviews", "approve", review_id)
    assert own.returncode == 1 and "nobody may decide their own request" in own.stderr
    approved = admins["lead"].cli("reviews", "approve", review_id, "--reason", "ok for INC-42")
    assert approved.returncode == 0, approved.stderr
    review = admins["lead"].cli_json("reviews", "show", review_id)
    assert review["status"] == "approved" and review["grant_id"]
    return review_id, review["grant_id"]


def test_a_grant_lets_a_session_in_and_its_expiry_ends_a_running_psql(jit: Any) -> None:
    running, database, keys, admins = jit
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(_conninfo(running, database, keys["agent"]))
    message = str(refused.value)
    assert 'connection "pg" needs a just-in-time grant' in message
    assert "hoopgw access request --connection pg" in message

    too_long = admins["agent"].cli(
        "access", "request", "--connection", "pg", "--duration", "2h", "--reason", "x"
    )
    assert too_long.returncode == 1 and "jit_max_duration" in too_long.stderr

    # Long enough for two CLI commands and psql to start on a loaded machine.
    review_id, grant_id = _grant(admins, "10s")
    [grant] = admins["agent"].cli_json("access", "list")
    assert (grant["id"], grant["status"], grant["approved_by"]) == (grant_id, "active", ["lead"])

    started = time.monotonic()
    psql = _psql(running, database, keys["agent"], "SELECT pg_sleep(30)")
    _, err = psql.communicate(timeout=40)
    assert psql.returncode != 0
    assert f"terminating connection: access grant {grant_id} expired" in err
    assert time.monotonic() - started < 25

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_conninfo(running, database, keys["agent"]))
    assert admins["agent"].cli_json("access", "list") == []
    [expired] = _records(running, "grant_expired")
    assert expired["grant"] == grant_id and len(expired["sessions_ended"]) == 1
    assert f"access grant {grant_id} expired" in _end_reasons(running)
    [created] = _records(running, "grant_created")
    assert created["review"] == review_id and created["approved_by"] == ["lead"]


def test_revoking_a_grant_ends_its_sessions(jit: Any) -> None:
    running, database, keys, admins = jit
    _, grant_id = _grant(admins, "30m")
    with psycopg.connect(_conninfo(running, database, keys["agent"]), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        stranger = admins["lead"].cli("access", "revoke", "000000000000")
        assert stranger.returncode == 1 and "no grant" in stranger.stderr
        revoked = admins["root"].cli("access", "revoke", grant_id, "--reason", "done")
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(psycopg.OperationalError) as ended:
            for _ in range(50):
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert f"access grant {grant_id} revoked" in str(ended.value)
    [record] = _records(running, "grant_revoked")
    assert (record["by"], record["reason"]) == ("root", "done")
    listed = admins["root"].cli_json("access", "list", "--all")
    assert [(g["id"], g["status"], g["revoked_by"]) for g in listed] == [
        (grant_id, "revoked", "root")
    ]
