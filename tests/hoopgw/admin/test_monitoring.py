"""``/metrics``, ``/healthz`` and ``/readyz`` rendered in memory: who may read the metrics, and
what readiness answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.test.requesthelper import DummyRequest

from hoopgw.admin.metrics import GatewayMetrics
from hoopgw.admin.monitoring import (
    HealthResource,
    MetricsResource,
    ReadyResource,
    address_allowed,
)
from hoopgw.errors import AuthenticationError
from hoopgw.session import Identity

IDENTITIES = {
    "auditor-key": Identity(name="ann", groups=frozenset({"security"})),
    "agent-key": Identity(name="bot", groups=frozenset({"agents"})),
}


class FakeAuthenticator:
    def authenticate(self, secret: str, *, client_address: str, connection: str = "") -> Any:
        if secret in IDENTITIES:
            return defer.succeed(IDENTITIES[secret])
        return defer.fail(AuthenticationError("invalid API key"))


def _request(host: str, *, token: str | None = None, path: bytes = b"/metrics") -> DummyRequest:
    request = DummyRequest([path])
    request.client = (
        IPv6Address("TCP", host, 5000) if ":" in host else IPv4Address("TCP", host, 5000)
    )
    if token is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
    return request


def _get(resource: Any, request: DummyRequest) -> tuple[int, bytes]:
    result = resource.render_GET(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    assert request.finished
    return request.responseCode or 200, b"".join(request.written)


@pytest.fixture
def metrics_resource() -> MetricsResource:
    metrics = GatewayMetrics(sessions=[])
    metrics.command_decided("pg", "allow")
    return MetricsResource(
        metrics,
        authenticator=FakeAuthenticator(),
        roles={"auditor": ("security",)},
        allow=("127.0.0.0/8", "::1/128"),
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_metrics_from_an_allowed_address_need_no_token(metrics_resource: Any, host: str) -> None:
    status, body = _get(metrics_resource, _request(host))
    assert status == 200
    assert b'hoopgw_commands_total{connection="pg",verdict="allow"} 1.0' in body


def test_metrics_from_elsewhere_need_a_token(metrics_resource: Any) -> None:
    status, body = _get(metrics_resource, _request("10.1.2.3"))
    assert status == 401
    assert b"hoopgw_" not in body


def test_metrics_from_elsewhere_with_a_bad_token(metrics_resource: Any) -> None:
    status, body = _get(metrics_resource, _request("10.1.2.3", token="nope"))
    assert status == 401
    assert b"hoopgw_" not in body


def test_metrics_from_elsewhere_need_the_auditor_or_admin_role(metrics_resource: Any) -> None:
    status, body = _get(metrics_resource, _request("10.1.2.3", token="agent-key"))
    assert status == 403
    assert b"hoopgw_" not in body
    status, body = _get(metrics_resource, _request("10.1.2.3", token="auditor-key"))
    assert status == 200
    assert b"hoopgw_commands_total" in body


def test_address_allowed_rejects_what_is_not_an_address() -> None:
    assert not address_allowed("", ("0.0.0.0/0",))
    assert not address_allowed("unix-socket", ("0.0.0.0/0",))
    assert address_allowed("10.0.0.5", ("10.0.0.0/8",))
    assert not address_allowed("11.0.0.5", ("10.0.0.0/8",))


def test_healthz_answers_ok() -> None:
    assert _get(HealthResource(), _request("10.0.0.1", path=b"/healthz")) == (200, b"ok\n")


def test_readyz_is_503_naming_the_failing_check() -> None:
    metrics = GatewayMetrics(sessions=[])
    state = {"up": False}
    metrics.add_ready_check("audit_writer", lambda: state["up"])
    metrics.add_ready_check("store", lambda: True)
    status, body = _get(ReadyResource(metrics), _request("10.0.0.1", path=b"/readyz"))
    assert status == 503
    assert json.loads(body) == {"ready": False, "checks": {"audit_writer": False, "store": True}}
    state["up"] = True
    status, body = _get(ReadyResource(metrics), _request("10.0.0.1", path=b"/readyz"))
    assert (status, json.loads(body)["ready"]) == (200, True)
