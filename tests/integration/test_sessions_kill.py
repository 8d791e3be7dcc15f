"""``hoopgw sessions live`` and ``hoopgw sessions kill`` against a running gateway: an admin ends
a real psycopg session, the client is told who ended it, and the store records why."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import HOOPGW_COMMAND, RunningGateway, free_port

pytestmark = [pytest.mark.integration, pytest.mark.store]


def _as(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOOPGW_COMMAND, *args],
        env={**os.environ, "HOOPGW_URL": url, "HOOPGW_TOKEN": token},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_admin_kills_a_live_session(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    admin_port = free_port()
    running = gateway(
        plugins=["recording"],
        connection={"client_tls": "disabled"},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"admin": ["platform"]},
    )
    agent_key = running.create_key("agent", ["agents"])
    root_key = running.create_key("root", ["platform"])
    url = f"http://127.0.0.1:{admin_port}"
    conninfo = (
        f"host={running.host} port={running.port} dbname={pg_database} user=agent "
        f"password={agent_key} sslmode=disable"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT 1")
        listed = _as(url, root_key, "sessions", "live", "--json")
        assert listed.returncode == 0, listed.stderr
        [live] = json.loads(listed.stdout)
        assert (live["identity"], live["connection"], live["protocol"]) == (
            "agent",
            "pg",
            "postgres",
        )
        # The agent may see its own session but not end it.
        refused = _as(url, agent_key, "sessions", "kill", live["id"][:8], "--reason", "mine")
        assert refused.returncode == 1
        assert "admin role" in refused.stderr
        conn.execute("SELECT 1")
        killed = _as(url, root_key, "sessions", "kill", live["id"][:8], "--reason", "incident 7")
        assert killed.returncode == 0, killed.stderr
        assert live["id"] in killed.stdout
        with pytest.raises(psycopg.OperationalError, match="ended by root: incident 7"):
            conn.execute("SELECT 1")
    shown = running.cli("sessions", "show", "--json", live["id"])
    assert shown.returncode == 0, shown.stderr
    assert "ended by root: incident 7" in json.loads(shown.stdout)["end_reason"]
    assert json.loads(_as(url, root_key, "sessions", "live", "--json").stdout) == []
