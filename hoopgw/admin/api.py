"""The admin HTTP API: JSON over Twisted web, served by the gateway on ``[gateway] admin_listen``.

Every request but ``GET /api/openapi.json`` carries ``Authorization: Bearer <secret>``, checked
by the same :class:`~hoopgw.identity.authn.Authenticator` as database logins (an API key, or an
OIDC token
where an issuer is trusted), so the API acts as the person calling it. What the caller may do
follows from the review rules (:mod:`hoopgw.approvals.reviews`) and the ``[roles]`` table.
``hoopgw/admin/openapi.py`` is the contract; ``docs/admin-api.md`` the reference.
"""

from __future__ import annotations

import collections
import io
import json
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource, server

from hoopgw.admin import openapi
from hoopgw.admin.authz import may_reload
from hoopgw.admin.metrics import GatewayMetrics
from hoopgw.admin.monitoring import HealthResource, MetricsResource, ReadyResource
from hoopgw.admin.sessions import SessionControl
from hoopgw.approvals.common import ApprovalError, roles_of
from hoopgw.approvals.reviews import ReviewService
from hoopgw.errors import AuthenticationError, ReloadError
from hoopgw.reviews import GrantRecord, ReviewRecord
from hoopgw.session import Identity

__all__ = ["AdminApi", "build_site"]

log = Logger(namespace="hoopgw.admin")

MAX_BODY = 64 * 1024
"""Largest request body accepted, in bytes."""

IDLE_TIMEOUT = 30.0
"""Seconds a connection may send nothing before it is closed."""

MAX_CONNECTIONS_PER_HOST = 16
"""Connections one client host may hold open at once."""

_STATUS = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "internal": 500,
}


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[..., Any]


def review_json(review: ReviewRecord, service: ReviewService) -> dict[str, Any]:
    """A review as the API shows it: its record, its votes and the count of approvals."""
    votes = service.votes(review.id)
    data = attrs.asdict(review)
    data["requester_groups"] = list(review.requester_groups)
    data["approvers"] = list(review.approvers)
    data["parameters"] = list(review.parameters)
    data["votes"] = [
        {
            "identity": v.identity,
            "approve": v.approve,
            "reason": v.reason,
            "decided_at": v.decided_at,
        }
        for v in votes
    ]
    data["approvals"] = sum(1 for v in votes if v.approve)
    return data


def grant_json(grant: GrantRecord, now: float) -> dict[str, Any]:
    """A grant as the API shows it, with its status at ``now``."""
    data = attrs.asdict(grant)
    data["approved_by"] = list(grant.approved_by)
    data["status"] = grant.status(now)
    return data


def _limit(request: Any) -> int:
    raw = _query(request, "limit", "100")
    # isascii: str.isdigit() also accepts digits int() refuses, such as "²".
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise _Refused("invalid", "limit must be a whole number from 1 to 1000")
    return int(raw)


def _query(request: Any, name: str, default: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else default


def _reason(body: dict[str, Any], *, required: bool) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise _Refused("invalid", "reason must be a string of at most 2000 characters")
    if required and not reason.strip():
        raise _Refused("invalid", "reason is required")
    return reason


class AdminApi(resource.Resource):
    """The whole ``/api`` tree as one leaf resource with a small route table."""

    isLeaf = True

    def __init__(
        self,
        service: ReviewService,
        authenticator: Any,
        reactor: Any,
        *,
        sessions: SessionControl | None = None,
        reload: Callable[[str], defer.Deferred[dict[str, Any]]] | None = None,
    ) -> None:
        super().__init__()
        self._reload = reload
        self._service = service
        self._authenticator = authenticator
        self._reactor = reactor
        self._sessions = sessions
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            ("GET", re.compile(r"/api/openapi\.json"), self._openapi, False),
            ("GET", re.compile(r"/api/whoami"), self._whoami, True),
            ("GET", re.compile(r"/api/reviews"), self._list_reviews, True),
            ("GET", re.compile(r"/api/reviews/([0-9a-f]{12})"), self._get_review, True),
            ("POST", re.compile(r"/api/reviews/([0-9a-f]{12})/approve"), self._approve, True),
            ("POST", re.compile(r"/api/reviews/([0-9a-f]{12})/deny"), self._deny, True),
            ("POST", re.compile(r"/api/access/requests"), self._request_access, True),
            ("GET", re.compile(r"/api/access/grants"), self._list_grants, True),
            ("POST", re.compile(r"/api/access/grants/([0-9a-f]{12})/revoke"), self._revoke, True),
            ("GET", re.compile(r"/api/sessions/live"), self._live_sessions, True),
            (
                "POST",
                re.compile(r"/api/sessions/([0-9a-f-]{1,36})/terminate"),
                self._terminate,
                True,
            ),
            ("POST", re.compile(r"/api/reload"), self._reload_config, True),
        ]

    def render(self, request: Any) -> Any:
        """Answer one request (asynchronously: authentication may need the network)."""
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = defer.maybeDeferred(self._dispatch, request)

        def respond(result: tuple[int, Any]) -> None:
            if finished:
                return  # the client went away
            status, body = result
            payload = json.dumps(body, ensure_ascii=False).encode()
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="hoopgw"')
            request.write(payload)
            request.finish()

        d.addErrback(self._error).addCallback(respond)
        return server.NOT_DONE_YET

    def _error(self, failure: Failure) -> tuple[int, Any]:
        if failure.check(_Refused, ApprovalError):
            code = getattr(failure.value, "code", "internal")
            return _STATUS[code], {"error": {"code": code, "message": str(failure.value)}}
        if failure.check(AuthenticationError):
            message = str(failure.value)
            return 401, {"error": {"code": "unauthenticated", "message": message}}
        log.failure("admin API request failed", failure)
        return 500, {"error": {"code": "internal", "message": "internal error; see the log"}}

    @defer.inlineCallbacks
    def _dispatch(self, request: Any) -> Any:
        path = request.path.decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method.decode("ascii", "replace")
        allowed = []
        for route_method, pattern, handler, needs_auth in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            identity = (yield self._identity(request)) if needs_auth else None
            body = self._body(request) if method == "POST" else {}
            result = yield defer.maybeDeferred(handler, request, identity, body, *match.groups())
            return result
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode())
            raise _Refused("method_not_allowed", f"{method} is not allowed on {path}")
        raise _Refused("not_found", f"no such endpoint: {path}")

    def _body(self, request: Any) -> dict[str, Any]:
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise _Refused("invalid", f"the request body is larger than {MAX_BODY} bytes")
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            # RecursionError: nesting deeper than the interpreter's stack, which is not a body
            # any client of this API sends.
            raise _Refused("invalid", "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refused("invalid", "the request body must be a JSON object")
        return body

    def _identity(self, request: Any) -> defer.Deferred[Identity]:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return defer.fail(
                _Refused("unauthenticated", "send Authorization: Bearer <API key or token>")
            )
        peer = request.getClientAddress()
        address = f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"
        return self._authenticator.authenticate(
            token.strip(), client_address=address, connection="admin-api"
        )

    # -- handlers ------------------------------------------------------------------------------

    def _openapi(self, request: Any, identity: None, body: Any) -> tuple[int, Any]:
        return 200, openapi.document()

    def _whoami(self, request: Any, identity: Identity, body: Any) -> tuple[int, Any]:
        return 200, {
            "identity": identity.name,
            "groups": sorted(identity.groups),
            "roles": sorted(roles_of(identity, self._service.roles)),
            "method": identity.method,
        }

    def _list_reviews(
        self, request: Any, identity: Identity, body: Any
    ) -> defer.Deferred[tuple[int, Any]]:
        status = _query(request, "status", "") or None
        if status is not None and status not in (
            "pending",
            "approved",
            "denied",
            "withdrawn",
            "aborted",
            "expired",
        ):
            raise _Refused("invalid", f"unknown status {status!r}")
        limit = _limit(request)
        service = self._service

        def read() -> tuple[int, Any]:
            reviews = service.list_reviews(identity, status=status, limit=limit)
            return 200, {"reviews": [review_json(r, service) for r in reviews]}

        return service.calls.call(read)

    def _get_review(
        self, request: Any, identity: Identity, body: Any, review_id: str
    ) -> defer.Deferred[tuple[int, Any]]:
        service = self._service
        return service.calls.call(
            lambda: (200, review_json(service.get(review_id, identity), service))
        )

    def _decide(
        self, identity: Identity, review_id: str, *, approve: bool, reason: str
    ) -> defer.Deferred[tuple[int, Any]]:
        decided = self._service.decide(review_id, identity, approve=approve, reason=reason)
        return decided.addCallback(lambda review: (200, review_json(review, self._service)))

    def _approve(
        self, request: Any, identity: Identity, body: dict[str, Any], review_id: str
    ) -> defer.Deferred[tuple[int, Any]]:
        reason = _reason(body, required=False)
        return self._decide(identity, review_id, approve=True, reason=reason)

    def _deny(
        self, request: Any, identity: Identity, body: dict[str, Any], review_id: str
    ) -> defer.Deferred[tuple[int, Any]]:
        reason = _reason(body, required=True)
        return self._decide(identity, review_id, approve=False, reason=reason)

    def _request_access(
        self, request: Any, identity: Identity, body: dict[str, Any]
    ) -> defer.Deferred[tuple[int, Any]]:
        connection = body.get("connection")
        duration = body.get("duration")
        if not isinstance(connection, str) or not connection:
            raise _Refused("invalid", "connection is required")
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            raise _Refused("invalid", "duration must be a number of seconds")
        try:
            seconds = float(duration)
        except OverflowError:  # an integer of hundreds of digits
            raise _Refused("invalid", "duration is out of range") from None
        reason = _reason(body, required=True)
        requested = self._service.request_access(
            identity, connection=connection, duration=seconds, reason=reason
        )
        return requested.addCallback(lambda review: (201, review_json(review, self._service)))

    def _list_grants(
        self, request: Any, identity: Identity, body: Any
    ) -> defer.Deferred[tuple[int, Any]]:
        active = _query(request, "active", "") == "1"
        listed = self._service.calls.call(
            self._service.grants.list_grants, identity, active=active, limit=_limit(request)
        )
        return listed.addCallback(
            lambda grants: (
                200,
                {"grants": [grant_json(g, self._reactor.seconds()) for g in grants]},
            )
        )

    def _revoke(
        self, request: Any, identity: Identity, body: dict[str, Any], grant_id: str
    ) -> defer.Deferred[tuple[int, Any]]:
        reason = _reason(body, required=False)
        revoked = self._service.grants.revoke(grant_id, identity, reason)
        return revoked.addCallback(lambda g: (200, grant_json(g, self._reactor.seconds())))

    def _session_control(self) -> SessionControl:
        if self._sessions is None:
            raise _Refused("not_found", "live sessions are not served here")
        return self._sessions

    def _live_sessions(self, request: Any, identity: Identity, body: Any) -> tuple[int, Any]:
        return 200, {"sessions": self._session_control().visible(identity)}

    def _terminate(
        self, request: Any, identity: Identity, body: dict[str, Any], session_id: str
    ) -> defer.Deferred[tuple[int, Any]]:
        reason = _reason(body, required=False)
        ended = self._session_control().terminate(identity, session_id, reason)
        return ended.addCallback(lambda session: (200, session))

    def _reload_config(
        self, request: Any, identity: Identity, body: Any
    ) -> defer.Deferred[tuple[int, Any]]:
        if self._reload is None:
            raise _Refused("not_found", "config reload is not served here")
        if not may_reload(identity, self._service.roles):
            raise _Refused("forbidden", "reloading the config needs the admin role")
        reloading = self._reload(f"{identity.name} (admin API)")

        def refused(failure: Failure) -> Any:
            failure.trap(ReloadError)
            raise _Refused("invalid", failure.getErrorMessage())

        return reloading.addCallbacks(lambda changes: (200, changes), refused)


class _LimitedRequest(server.Request):
    """A request whose body may not exceed :data:`MAX_BODY`: a larger one is refused while it
    arrives and the connection closed (Twisted would spool a body of any size to a temporary
    file before the API, or its authentication, sees the request)."""

    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        """Refuse a declared length above the limit before any of the body arrives."""
        if length is not None and length > MAX_BODY:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Keep the body, up to the limit (a chunked body declares no length)."""
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """Answer the request, unless its body was refused."""
        if not self._refused:
            super().process()

    def _refuse(self) -> None:
        self._refused = True
        self.content = io.BytesIO()
        message = f"the request body is larger than {MAX_BODY} bytes"
        body = json.dumps({"error": {"code": "invalid", "message": message}}).encode()
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class _PerHostLimit(policies.WrappingFactory):
    """Refuses a client host's connections beyond :data:`MAX_CONNECTIONS_PER_HOST`, so that
    one host holding connections open with a trickle of bytes (slow-loris; each byte restarts
    the idle timeout) cannot use up the gateway's sockets."""

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._hosts: dict[Any, str] = {}
        self._open: collections.Counter[str] = collections.Counter()

    def buildProtocol(self, addr: Any) -> Any:
        """A protocol for the connection, or None (closed at once) over the host's limit."""
        host = str(getattr(addr, "host", ""))
        if self._open[host] >= MAX_CONNECTIONS_PER_HOST:
            log.info("admin API: too many connections from {host}; refused", host=host)
            return None
        protocol = super().buildProtocol(addr)
        self._hosts[protocol] = host
        self._open[host] += 1
        return protocol

    def unregisterProtocol(self, p: Any) -> None:
        """Count the connection's end."""
        super().unregisterProtocol(p)
        host = self._hosts.pop(p, None)
        if host is not None:
            self._open[host] -= 1
            if self._open[host] <= 0:
                del self._open[host]


def build_site(
    service: ReviewService,
    authenticator: Any,
    reactor: Any,
    *,
    tls: Any = None,
    metrics: GatewayMetrics | None = None,
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
    sessions: SessionControl | None = None,
    console: Any = None,
    reload: Callable[[str], defer.Deferred[dict[str, Any]]] | None = None,
) -> policies.WrappingFactory:
    """The factory serving the API (anything outside ``/api``, with ``metrics``
    ``/metrics``, ``/healthz`` and ``/readyz``, and with ``console`` the web console under
    ``/console`` is 404): HTTPS with the server TLS options ``tls``, plain HTTP without.

    Request bodies are limited to :data:`MAX_BODY` while they arrive, a connection idle for
    :data:`IDLE_TIMEOUT` seconds is closed, and one client host may hold at most
    :data:`MAX_CONNECTIONS_PER_HOST` connections. The web site itself is the result's
    ``site`` attribute.
    """
    root = resource.Resource()
    api: Any = AdminApi(service, authenticator, reactor, sessions=sessions, reload=reload)
    root.putChild(b"api", api)
    if console is not None:
        root.putChild(b"console", console)
    if metrics is not None:
        monitoring: dict[bytes, Any] = {
            b"metrics": MetricsResource(
                metrics, authenticator=authenticator, roles=service.roles, allow=metrics_allow
            ),
            b"healthz": HealthResource(),
            b"readyz": ReadyResource(metrics),
        }
        for path, child in monitoring.items():
            root.putChild(path, child)
    site: Any = server.Site(
        root, requestFactory=_LimitedRequest, timeout=IDLE_TIMEOUT, reactor=reactor
    )
    site.displayTracebacks = False
    site.noisy = False
    served: Any = site if tls is None else TLSMemoryBIOFactory(tls, False, site)
    limited = _PerHostLimit(served)
    limited.site = site  # type: ignore[attr-defined]
    return limited
