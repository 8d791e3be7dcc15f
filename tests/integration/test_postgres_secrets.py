"""The target's credential never reaches the client, the log, the audit record or the output of
``hoopgw config check``.

The local server trusts loopback logins and never asks for the password, so the test gives the
connection a distinctive one and looks for it everywhere the gateway writes to.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.store]

PASSWORD_VARIABLE = "HOOPGW_TEST_TARGET_PASSWORD"


def test_target_password_never_leaks(
    gateway: Any, pg_database: str, wire_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"Target-Pa55-{secrets.token_hex(12)}"
    monkeypatch.setenv(PASSWORD_VARIABLE, password)
    running = gateway(
        plugins=["recording"],
        connection={
            "client_tls": "disabled",
            "credential": {"user": "postgres", "password": f"env:{PASSWORD_VARIABLE}"},
        },
        gateway_options={"log_level": "debug"},
    )
    key = running.create_key("agent", ["agents"])

    client = wire_client(running.host, running.port)
    login = client.login(user="agent", database=pg_database, password=key)
    assert login[-1].type == b"Z"
    for text in (
        "SHOW ALL",
        "SELECT * FROM pg_settings",
        "SELECT 1/0",
        "SELECT * FROM no_such_table",
        "SELEC broken syntax",
        "DO $$ BEGIN RAISE NOTICE 'a notice'; RAISE EXCEPTION 'an error'; END $$",
        "SELECT current_user, session_user, inet_server_port()",
    ):
        assert client.query(text)[-1].type == b"Z"
    client.send(b"X\x00\x00\x00\x04")
    assert client.receive() is None
    bad = wire_client(running.host, running.port)
    bad.login(user="agent", database=pg_database, password="wrong")
    bad.receive()

    needle = password.encode()
    assert needle not in client.received
    assert needle not in bad.received
    for args in (
        ("config", "check"),
        ("config", "check", "--json"),
        ("sessions", "list", "--json"),
    ):
        out = running.cli(*args)
        assert out.returncode == 0, out.stderr
        assert password not in out.stdout + out.stderr
    listed = running.cli("sessions", "list", "--json")
    assert (
        password
        not in running.cli("sessions", "show", first_session_id(listed.stdout), "--json").stdout
    )
    running.stop()
    log = running.stderr_text()
    assert "session" in log  # the debug log was written
    assert password not in log
    store_bytes = running.store_bytes()
    assert needle not in store_bytes


def first_session_id(listing: str) -> str:
    sessions = json.loads(listing)
    assert sessions, "the recording plugin stored no session"
    return str(sessions[0]["id"])
