"""The gateway's metrics, served as OpenMetrics (or the Prometheus text format) on ``/metrics``.

One :class:`GatewayMetrics` per running gateway, with its own registry (never the process-wide
default one, so tests and several gateways in one process do not mix). Counters and histograms
are fed where things happen (a verdict, a login failure, a review decided); gauges are read
from the live objects when the endpoint is scraped, so an idle gateway costs nothing.
``docs/operations.md`` lists every metric with a sample scrape config and alert rules.

With ``[gateway] workers`` every worker keeps its own metrics; the others publish theirs
(:func:`families`, through the parent) to worker 1, whose ``/metrics`` shows every worker's
samples, each labelled ``worker`` (:meth:`GatewayMetrics.serve_workers`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from hoopgw.verdicts import Block

__all__ = ["GatewayMetrics", "families", "render"]

OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Review decisions take seconds to hours; audit commits take microseconds to seconds.
_REVIEW_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
_SYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Review events after which a held statement no longer waits in its session.
_WAIT_ENDED = frozenset({"approved", "denied", "withdrawn", "timed_out", "aborted", "expired"})


class GatewayMetrics:
    """Every metric of one gateway.

    :param sessions: the live :class:`~hoopgw.protocol.SessionRegistry`, read at scrape time.
    :param audit_pending: returns how many audit records wait for the writer's answer.
    :param login_backoff: returns how many client hosts are under login back-off.
    :param agents_connected: returns how many network agents are connected now.
    """

    def __init__(
        self,
        *,
        sessions: Iterable[Any],
        audit_pending: Callable[[], int] = lambda: 0,
        login_backoff: Callable[[], int] = lambda: 0,
        agents_connected: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._sessions = sessions
        self._audit_pending = audit_pending
        self._login_backoff = login_backoff
        self._agents_connected = agents_connected
        self._held: dict[str, set[str]] = collections.defaultdict(set)
        self._ready_checks: dict[str, Callable[[], bool]] = {}
        self.sessions_total = Counter(
            "hoopgw_sessions",
            "Client sessions accepted, by connection and protocol.",
            ["connection", "protocol"],
            registry=self.registry,
        )
        self.commands_total = Counter(
            "hoopgw_commands",
            "Commands decided, by connection and verdict (allow or block).",
            ["connection", "verdict"],
            registry=self.registry,
        )
        self.review_seconds = Histogram(
            "hoopgw_review_decision_seconds",
            "Seconds from a review's request to its decision, by connection and outcome.",
            ["connection", "outcome"],
            buckets=_REVIEW_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors_total = Counter(
            "hoopgw_upstream_connect_errors",
            "Failed attempts to connect or log in to a target, by connection.",
            ["connection"],
            registry=self.registry,
        )
        self.login_failures_total = Counter(
            "hoopgw_login_failures",
            "Failed authentications, by connection and method.",
            ["connection", "method"],
            registry=self.registry,
        )
        self.audit_sync_seconds = Histogram(
            "hoopgw_audit_commit_seconds",
            "Seconds from sending audit records to the writer to its answer that they are durable.",
            buckets=_SYNC_BUCKETS,
            registry=self.registry,
        )
        self.masked_total = Counter(
            "hoopgw_masked_values",
            "Values masked, by connection and entity.",
            ["connection", "entity"],
            registry=self.registry,
        )
        self.cancel_requests_total = Counter(
            "hoopgw_cancel_requests",
            "PostgreSQL cancel requests, by outcome: forwarded, asked (other workers),"
            " unmatched, limited (dropped unread: too many from one address matched no session).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))
        self.exposed = self.registry
        """The registry ``/metrics`` shows: :attr:`registry`, or with workers every worker's."""

    # -- events ------------------------------------------------------------------------------

    def session_opened(self, connection: str, protocol: str) -> None:
        """Count a client session the gateway accepted."""
        self.sessions_total.labels(connection, protocol).inc()

    def command_decided(self, connection: str, verdict: str) -> None:
        """Count a command's final verdict (``allow`` or ``block``)."""
        self.commands_total.labels(connection, verdict).inc()

    def verdict_counter(self, connection: str) -> Callable[[Any], None]:
        """What counts each final verdict of ``connection``'s commands: the label children are
        resolved once here, not on every command (the hot path)."""
        allowed = self.commands_total.labels(connection, "allow")
        blocked = self.commands_total.labels(connection, "block")

        def count(verdict: Any) -> None:
            (blocked if isinstance(verdict, Block) else allowed).inc()

        return count

    def review_changed(self, connection: str, review: Any, event: str) -> None:
        """Follow a review's life: held statements waiting, and the time to each decision."""
        if review.kind == "statement":
            if event == "requested":
                self._held[connection].add(review.id)
            elif event in _WAIT_ENDED:
                self._held[connection].discard(review.id)
        if event in ("approved", "denied") and review.decided_at is not None:
            self.review_seconds.labels(connection, event).observe(
                max(0.0, review.decided_at - review.created_at)
            )

    def add_ready_check(self, name: str, check: Callable[[], bool]) -> None:
        """Make ``/readyz`` answer 503 while ``check()`` is false (or raises)."""
        self._ready_checks[name] = check

    def readiness(self) -> dict[str, bool]:
        """Each readiness check by name, True when it passes."""
        results = {}
        for name, check in self._ready_checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        return results

    def serve_workers(
        self, index: int, peers: Callable[[], Mapping[int, list[dict[str, Any]]]]
    ) -> None:
        """Show, as worker ``index``, every worker's samples on ``/metrics``: this one's and
        those ``peers()`` returns (worker -> its :func:`families` as last published), each
        sample labelled ``worker`` with its worker's number."""
        self.exposed = CollectorRegistry(auto_describe=False)
        self.exposed.register(_WorkersCollector(self.registry, index, peers))

    # -- scrape-time gauges ------------------------------------------------------------------

    def _live(self) -> Iterable[Metric]:
        open_sessions = GaugeMetricFamily(
            "hoopgw_sessions_open",
            "Client sessions open now, by connection and protocol.",
            labels=["connection", "protocol"],
        )
        counts: collections.Counter[tuple[str, str]] = collections.Counter(
            (s.runtime.config.name, s.runtime.config.protocol) for s in self._sessions
        )
        for (connection, protocol), count in sorted(counts.items()):
            open_sessions.add_metric([connection, protocol], count)
        yield open_sessions
        held = GaugeMetricFamily(
            "hoopgw_held_commands",
            "Commands held for review whose session waits for the decision, by connection.",
            labels=["connection"],
        )
        for connection, reviews in sorted(self._held.items()):
            held.add_metric([connection], len(reviews))
        yield held
        yield GaugeMetricFamily(
            "hoopgw_audit_queue_depth",
            "Audit records sent to the writer process and not yet durable.",
            value=self._audit_pending(),
        )
        yield GaugeMetricFamily(
            "hoopgw_login_backoff_hosts",
            "Client hosts currently delayed by the login back-off.",
            value=self._login_backoff(),
        )
        yield GaugeMetricFamily(
            "hoopgw_agents_connected",
            "Network agents connected to this gateway now.",
            value=self._agents_connected(),
        )
        ready = GaugeMetricFamily(
            "hoopgw_ready",
            "1 while a readiness check passes, else 0.",
            labels=["check"],
        )
        for name, passed in sorted(self.readiness().items()):
            ready.add_metric([name], 1 if passed else 0)
        yield ready


class _LiveCollector:
    """Adapts :meth:`GatewayMetrics._live` to the registry's collector interface."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._live()

    def describe(self) -> list[Metric]:
        return []


def families(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """Every metric family of ``registry`` now, as JSON-ready dicts (a worker publishes them)."""
    return [
        {
            "name": family.name,
            "help": family.documentation,
            "type": family.type,
            "unit": family.unit,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
        for family in registry.collect()
    ]


class _WorkersCollector:
    """Every worker's metric families, each sample labelled with its worker."""

    def __init__(
        self,
        own: CollectorRegistry,
        index: int,
        peers: Callable[[], Mapping[int, list[dict[str, Any]]]],
    ) -> None:
        self._own = own
        self._index = index
        self._peers = peers

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        published = {**self._peers(), self._index: families(self._own)}
        for worker, found in sorted(published.items()):
            for family in found:
                name = family["name"]
                if name not in merged:
                    merged[name] = Metric(name, family["help"], family["type"], family["unit"])
                for sample, labels, value in family["samples"]:
                    merged[name].add_sample(sample, {**labels, "worker": str(worker)}, value)
        return list(merged.values())

    def describe(self) -> list[Metric]:
        return []


def render(metrics: GatewayMetrics, accept: str) -> tuple[bytes, str]:
    """The exposition of every metric and its content type: OpenMetrics when the scraper's
    ``Accept`` header asks for it (Prometheus does), else the Prometheus text format."""
    if "application/openmetrics-text" in accept:
        return openmetrics.generate_latest(metrics.exposed), OPENMETRICS_TYPE
    return generate_latest(metrics.exposed), PROMETHEUS_TYPE
