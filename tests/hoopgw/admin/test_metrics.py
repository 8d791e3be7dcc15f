"""The gateway's metrics without a network: events counted, gauges read at scrape time, and
the exposition parsed back with the Prometheus client's own parser."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from hoopgw.admin.metrics import OPENMETRICS_TYPE, PROMETHEUS_TYPE, GatewayMetrics, render


def _session(connection: str, protocol: str) -> Any:
    return SimpleNamespace(
        runtime=SimpleNamespace(config=SimpleNamespace(name=connection, protocol=protocol))
    )


def _review(
    review_id: str, *, kind: str = "statement", created: float = 100.0, decided: float | None = None
) -> Any:
    return SimpleNamespace(id=review_id, kind=kind, created_at=created, decided_at=decided)


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = render(metrics, "application/openmetrics-text; version=1.0.0")
    assert content_type == OPENMETRICS_TYPE
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_live_sessions_are_counted_at_scrape_time() -> None:
    live = [_session("pg", "postgres"), _session("pg", "postgres"), _session("box", "ssh")]
    metrics = GatewayMetrics(sessions=live)
    samples = _samples(metrics)
    assert samples[("hoopgw_sessions_open", (("connection", "pg"), ("protocol", "postgres")))] == 2
    assert samples[("hoopgw_sessions_open", (("connection", "box"), ("protocol", "ssh")))] == 1
    live.pop()
    assert ("hoopgw_sessions_open", (("connection", "box"), ("protocol", "ssh"))) not in _samples(
        metrics
    )


def test_events_are_counted_by_their_labels() -> None:
    metrics = GatewayMetrics(
        sessions=[], audit_pending=lambda: 7, login_backoff=lambda: 2, agents_connected=lambda: 3
    )
    metrics.session_opened("pg", "postgres")
    metrics.command_decided("pg", "allow")
    metrics.command_decided("pg", "allow")
    metrics.command_decided("pg", "block")
    metrics.login_failures_total.labels("pg", "api-key").inc()
    metrics.upstream_errors_total.labels("pg").inc()
    samples = _samples(metrics)
    assert samples[("hoopgw_sessions_total", (("connection", "pg"), ("protocol", "postgres")))] == 1
    assert samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "allow")))] == 2
    assert samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "block")))] == 1
    assert (
        samples[("hoopgw_login_failures_total", (("connection", "pg"), ("method", "api-key")))] == 1
    )
    assert samples[("hoopgw_upstream_connect_errors_total", (("connection", "pg"),))] == 1
    assert samples[("hoopgw_audit_queue_depth", ())] == 7
    assert samples[("hoopgw_login_backoff_hosts", ())] == 2
    assert samples[("hoopgw_agents_connected", ())] == 3


def test_held_statements_wait_until_their_review_ends() -> None:
    metrics = GatewayMetrics(sessions=[])
    metrics.review_changed("pg", _review("a"), "requested")
    metrics.review_changed("pg", _review("b"), "requested")
    metrics.review_changed("pg", _review("j", kind="access"), "requested")
    assert _samples(metrics)[("hoopgw_held_commands", (("connection", "pg"),))] == 2
    metrics.review_changed("pg", _review("a", decided=130.0), "approved")
    metrics.review_changed("pg", _review("b"), "withdrawn")
    samples = _samples(metrics)
    assert samples[("hoopgw_held_commands", (("connection", "pg"),))] == 0
    key = ("hoopgw_review_decision_seconds_count", (("connection", "pg"), ("outcome", "approved")))
    assert samples[key] == 1
    assert samples[("hoopgw_review_decision_seconds_sum", key[1])] == 30.0


@pytest.mark.parametrize("answer", [True, False, "raises"])
def test_readiness_reports_each_check(answer: Any) -> None:
    metrics = GatewayMetrics(sessions=[])

    def check() -> bool:
        if answer == "raises":
            raise OSError("gone")
        return bool(answer)

    metrics.add_ready_check("store", check)
    metrics.add_ready_check("listeners", lambda: True)
    expected = answer is True
    assert metrics.readiness() == {"store": expected, "listeners": True}
    assert _samples(metrics)[("hoopgw_ready", (("check", "store"),))] == (1 if expected else 0)


def test_prometheus_text_format_without_an_openmetrics_accept_header() -> None:
    body, content_type = render(GatewayMetrics(sessions=[]), "*/*")
    assert content_type == PROMETHEUS_TYPE
    assert b"# TYPE hoopgw_commands_total counter" in body


def test_a_connections_verdict_counter_counts_allow_and_block() -> None:
    from hoopgw.verdicts import Allow, Block

    metrics = GatewayMetrics(sessions=[])
    count = metrics.verdict_counter("pg")
    count(Allow())
    count(Block(reason="no"))
    count(Allow())
    samples = _samples(metrics)
    assert samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "allow")))] == 2
    assert samples[("hoopgw_commands_total", (("connection", "pg"), ("verdict", "block")))] == 1


def test_with_workers_every_worker_s_samples_are_shown_labelled_by_worker() -> None:
    """Worker 1 serves ``/metrics``: its own samples and those the others published, each
    with a ``worker`` label, in one family per metric (both exposition formats parse it)."""
    import json

    from hoopgw.admin.metrics import families

    own = GatewayMetrics(sessions=[_session("pg", "postgres")])
    other = GatewayMetrics(sessions=[_session("pg", "postgres"), _session("pg", "postgres")])
    own.session_opened("pg", "postgres")
    for _ in range(3):
        other.session_opened("pg", "postgres")
    published = json.loads(json.dumps(families(other.registry)))  # as it travels
    own.serve_workers(1, lambda: {2: published})
    samples = _samples(own)
    labels = (("connection", "pg"), ("protocol", "postgres"))
    assert samples[("hoopgw_sessions_open", (*labels, ("worker", "1")))] == 1
    assert samples[("hoopgw_sessions_open", (*labels, ("worker", "2")))] == 2
    assert samples[("hoopgw_sessions_total", (*labels, ("worker", "1")))] == 1
    assert samples[("hoopgw_sessions_total", (*labels, ("worker", "2")))] == 3
    assert samples[("hoopgw_audit_commit_seconds_count", (("worker", "2"),))] == 0
    body, _ = render(own, "text/plain")
    assert body.decode().count("# TYPE hoopgw_sessions_open gauge") == 1
    # A worker that ended is dropped with its samples.
    own.serve_workers(1, lambda: {2: []})
    assert ("hoopgw_sessions_open", (*labels, ("worker", "2"))) not in _samples(own)
