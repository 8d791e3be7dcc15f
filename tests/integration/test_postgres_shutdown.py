"""SIGTERM to the real gateway: connected clients get a FATAL 57P01 goodbye and the process
exits 0 within the shutdown grace."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

pytestmark = pytest.mark.integration


def test_sigterm_says_goodbye_to_every_client(recorded_gateway: Any, wire_client: Any) -> None:
    running = recorded_gateway.gateway
    idle = wire_client(running.host, running.port)
    assert (
        idle.login(user="agent", database=recorded_gateway.database, password=recorded_gateway.key)[
            -1
        ].type
        == b"Z"
    )
    busy = psycopg.connect(recorded_gateway.conninfo())
    outcome: dict[str, BaseException] = {}

    def sleep_long() -> None:
        try:
            busy.execute("SELECT pg_sleep(30)")
        except BaseException as exc:  # handed over to the test thread
            outcome["error"] = exc

    sleeper = threading.Thread(target=sleep_long)
    sleeper.start()
    time.sleep(0.5)
    started = time.monotonic()
    running.process.send_signal(signal.SIGTERM)

    messages = idle.receive_until(b"E")
    error = idle.first_error(messages)
    assert (error["V"], error["C"]) == ("FATAL", "57P01")
    assert error["M"] == "terminating connection: gateway stopping"
    assert idle.receive() is None

    sleeper.join(10)
    assert isinstance(outcome.get("error"), errors.AdminShutdown), outcome
    assert outcome["error"].sqlstate == "57P01"
    assert running.process.wait(10) == 0
    assert time.monotonic() - started < 5
    busy.close()

    log = running.stderr_text()
    assert "gateway stopped" in log
    listed = running.cli("sessions", "list", "--json")
    reasons = sorted(s["end_reason"] for s in json.loads(listed.stdout))
    assert reasons == ["gateway stopping", "gateway stopping"]


def test_sighup_reloads_the_config_and_the_sessions_go_on(recorded_gateway: Any) -> None:
    running = recorded_gateway.gateway
    with psycopg.connect(recorded_gateway.conninfo()) as conn:
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "(by SIGHUP)" not in running.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config reloaded (by SIGHUP)" in running.stderr_text()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert running.process.poll() is None
