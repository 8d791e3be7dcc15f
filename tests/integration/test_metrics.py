"""A running gateway's ``/metrics``, ``/healthz`` and ``/readyz``, scraped over HTTP after real
psycopg sessions, and parsed with the Prometheus client's OpenMetrics parser."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import RunningGateway, free_port

pytestmark = pytest.mark.integration


def _get(url: str, **headers: str) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["content-type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_sessions_commands_and_login_failures(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    admin_port = free_port()
    running = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"deny": ["ddl"]}},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
    )
    key = running.create_key("agent", ["agents"])
    conninfo = (
        f"host={running.host} port={running.port} dbname={pg_database} user=agent "
        f"password={key} sslmode=disable"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.Error):
            conn.execute("CREATE TABLE refused (id int)")
        base = f"http://127.0.0.1:{admin_port}"
        status, content_type, body = _get(
            f"{base}/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
        assert status == 200
        assert content_type.startswith("application/openmetrics-text")
        samples = _samples(body)
        assert (
            samples[("hoopgw_sessions_open", (("connection", "pg"), ("protocol", "postgres")))] == 1
        )
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo.replace(key, "hgw_000000000000_wrong"), connect_timeout=10)
    samples = _samples(
        _get(f"{base}/metrics", Accept="application/openmetrics-text; version=1.0.0")[2]
    )
    allowed: Any = samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "allow")))]
    assert allowed >= 1
    assert samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "block")))] == 1
    assert samples[("hoopgw_sessions_total", (("connection", "pg"), ("protocol", "postgres")))] >= 1
    failures = [v for (name, _), v in samples.items() if name == "hoopgw_login_failures_total"]
    assert sum(failures) >= 1
    assert _get(f"{base}/healthz")[0] == 200
    status, _, ready = _get(f"{base}/readyz")
    assert status == 200
    assert json.loads(ready) == {
        "ready": True,
        "checks": {"audit_writer": True, "listeners": True, "store": True},
    }


def test_cancel_guesses_beyond_the_limit_are_dropped_unread_and_counted(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    """Ten wrong secrets from one address are compared; the next requests, even one with the
    right secret, are dropped unread until a token refills (1 per second)."""
    admin_port = free_port()
    running = gateway(
        connection={"client_tls": "disabled"},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
    )
    key = running.create_key("agent", ["agents"])
    conninfo = (
        f"host={running.host} port={running.port} dbname={pg_database} user=agent "
        f"password={key} sslmode=disable"
    )

    def cancel_request(pid: int, secret: int) -> None:
        with socket.create_connection((running.host, running.port)) as sock:
            sock.sendall(struct.pack("!iiii", 16, 80877102, pid, secret))
            assert sock.recv(1) == b""  # closed without an answer, either way

    def scrape() -> dict[str, float]:
        _, _, body = _get(
            f"http://127.0.0.1:{admin_port}/metrics",
            Accept="application/openmetrics-text; version=1.0.0",
        )
        return {
            dict(labels)["outcome"]: value
            for (name, labels), value in _samples(body).items()
            if name == "hoopgw_cancel_requests_total"
        }

    with psycopg.connect(conninfo) as conn:
        pid = conn.info.backend_pid
        for guess in range(12):
            cancel_request(pid, 0x0BAD0000 + guess)
        assert scrape() == {"unmatched": 10.0, "limited": 2.0}
        # Over the limit even the right key is not read: the query runs on.
        timer = threading.Timer(0.3, conn.cancel)
        timer.start()
        assert conn.execute("SELECT pg_sleep(1.2), 'ran'").fetchone() == ("", "ran")
        timer.join()
        assert scrape()["limited"] == 3.0
        # A second later the address has a token again: a matching request spends none.
        time.sleep(1.0)
        timer = threading.Timer(0.3, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 5
        timer.join()
    assert scrape() == {"unmatched": 10.0, "limited": 3.0, "forwarded": 1.0}
