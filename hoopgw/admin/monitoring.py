"""``/metrics``, ``/healthz`` and ``/readyz`` on the admin listener.

``/healthz`` answers 200 while the reactor serves requests (liveness). ``/readyz`` answers 200
when every readiness check passes (store writable, audit writer up, listeners bound) and 503
otherwise, naming the failing checks; neither needs a token nor shows anything secret.
``/metrics`` is readable without a token from the addresses in ``[gateway] metrics_allow``
(loopback by default); from anywhere else it needs a bearer token of an identity holding the
``auditor`` or ``admin`` role.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.logger import Logger
from twisted.web import resource, server

from hoopgw.admin.metrics import GatewayMetrics, render
from hoopgw.approvals.common import roles_of
from hoopgw.errors import AuthenticationError

__all__ = ["HealthResource", "MetricsResource", "ReadyResource", "address_allowed"]

log = Logger(namespace="hoopgw.admin")

METRICS_ROLES = frozenset({"auditor", "admin"})
"""Roles whose bearer token may read ``/metrics`` from any address."""


def address_allowed(host: str, networks: Sequence[str]) -> bool:
    """Whether ``host`` (an IP address, IPv4-mapped IPv6 included) is inside ``networks``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def _plain(request: Any, status: int, body: bytes, content_type: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type.encode())
    request.setHeader(b"cache-control", b"no-store")
    return body


class HealthResource(resource.Resource):
    """Liveness: the process answers."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return _plain(request, 200, b"ok\n", "text/plain; charset=utf-8")


class ReadyResource(resource.Resource):
    """Readiness: every check of :meth:`GatewayMetrics.readiness` passes."""

    isLeaf = True

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        checks = self._metrics.readiness()
        ready = all(checks.values())
        body = json.dumps({"ready": ready, "checks": checks}).encode() + b"\n"
        return _plain(request, 200 if ready else 503, body, "application/json")


class MetricsResource(resource.Resource):
    """The exposition of :class:`GatewayMetrics`, for allowed addresses or auditors."""

    isLeaf = True

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        authenticator: Any,
        roles: Mapping[str, tuple[str, ...]],
        allow: Sequence[str],
    ) -> None:
        super().__init__()
        self._metrics = metrics
        self._authenticator = authenticator
        self._roles = roles
        self._allow = tuple(allow)

    def render_GET(self, request: Any) -> Any:
        peer = request.getClientAddress()
        if address_allowed(str(getattr(peer, "host", "")), self._allow):
            return self._exposition(request)
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._refuse(request, 401, "send Authorization: Bearer <API key or token>")
        address = f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"
        d = self._authenticator.authenticate(
            token.strip(), client_address=address, connection="admin-api"
        )
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def authorised(identity: Any) -> None:
            if finished:
                return
            if not roles_of(identity, self._roles) & METRICS_ROLES:
                request.write(
                    self._refuse(request, 403, "reading metrics needs role auditor or admin")
                )
            else:
                request.write(self._exposition(request))
            request.finish()

        def refused(failure: Any) -> None:
            if finished:
                return
            if not failure.check(AuthenticationError):
                log.failure("metrics authentication failed unexpectedly", failure)
            request.write(self._refuse(request, 401, "authentication failed"))
            request.finish()

        d.addCallbacks(authorised, refused)
        return server.NOT_DONE_YET

    def _exposition(self, request: Any) -> bytes:
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        body, content_type = render(self._metrics, accept)
        return _plain(request, 200, body, content_type)

    def _refuse(self, request: Any, status: int, message: str) -> bytes:
        if status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="hoopgw"')
        body = json.dumps(
            {
                "error": {
                    "code": "forbidden" if status == 403 else "unauthenticated",
                    "message": message,
                }
            }
        )
        return _plain(request, status, body.encode(), "application/json")
