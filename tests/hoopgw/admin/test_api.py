"""The admin API without a network: requests rendered in memory, every answer validated against
the OpenAPI document."""

from __future__ import annotations

import io
import json
from typing import Any

import jsonschema
import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from hoopgw.admin import openapi
from hoopgw.admin.api import (
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS_PER_HOST,
    AdminApi,
    build_site,
)
from hoopgw.admin.sessions import SessionControl
from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.connection import ConnectionConfig, CredentialConfig
from hoopgw.errors import AuthenticationError
from hoopgw.reviews import ReviewPolicy
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeAuditWriter, make_command, make_session
from hoopgw.verdicts import Allow, Hold

TOKENS = {
    "alice-key": Identity(name="alice", groups=frozenset({"dba"})),
    "agent-key": Identity(name="agent", groups=frozenset({"agents"})),
    "lead-key": Identity(name="lead", groups=frozenset({"leads"})),
}


class FakeAuthenticator:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def authenticate(
        self, secret: str, *, client_address: str, connection: str = ""
    ) -> defer.Deferred[Identity]:
        self.seen.append((secret, connection))
        if secret in TOKENS:
            return defer.succeed(TOKENS[secret])
        return defer.fail(AuthenticationError("invalid API key"))


class Api:
    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = SQLiteStore(":memory:")
        self.store.migrate()
        jit = ConnectionConfig(
            name="jit",
            protocol="postgres",
            listen="tcp:0",
            target="127.0.0.1:5432",
            credential=CredentialConfig(user="postgres"),
            allow_groups=("agents",),
            access="jit",
            jit_approvers=("leads",),
        )
        audit = FakeAuditWriter()
        sessions = SessionRegistry()
        grants = GrantService(
            store=self.store,
            audit=audit,  # type: ignore[arg-type]
            reactor=self.clock,
            connections={"jit": jit},
            roles={"approver": ("dba",)},
            sessions=sessions,
        )
        self.service = ReviewService(
            store=self.store,
            audit=audit,  # type: ignore[arg-type]
            reactor=self.clock,
            grants=grants,
            roles={"approver": ("dba",)},
            sessions=sessions,
            approval_timeout=300,
        )
        self.authenticator = FakeAuthenticator()
        self.resource = AdminApi(self.service, self.authenticator, self.clock)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "alice-key",
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        bare, _, query = path.partition("?")
        request = DummyRequest(bare.strip("/").split("/"))
        request.method = method.encode()
        request.path = bare.encode()  # type: ignore[attr-defined]
        for pair in filter(None, query.split("&")):
            name, _, value = pair.partition("=")
            request.addArg(name.encode(), value.encode())
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        request.content = io.BytesIO(data)  # type: ignore[attr-defined]
        if token is not None:
            request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
        self.resource.render(request)
        assert request.finished, "the API did not answer"
        status = request.responseCode or 200
        payload = json.loads(b"".join(request.written))
        validate(method, bare, status, payload)
        return status, payload

    def hold(
        self, text: str = "DELETE FROM t", parameters: tuple[Any, ...] = ()
    ) -> tuple[str, defer.Deferred[Any]]:
        import attrs

        session = make_session()
        decision = self.service.hold(
            session,
            attrs.evolve(make_command(text), parameters=parameters),
            Hold(reason="write: DELETE needs approval"),
            ReviewPolicy(approvers=("dba",)),
        )
        [review] = self.store.list_reviews(status="pending")
        return review.id, decision


def validate(method: str, path: str, status: int, body: Any) -> None:
    document = openapi.document()
    for template, operations in document["paths"].items():
        parts, given = template.split("/"), path.split("/")
        fits = len(parts) == len(given) and all(
            p == g or p.startswith("{") for p, g in zip(parts, given, strict=True)
        )
        if fits and method.lower() in operations:
            responses = operations[method.lower()]["responses"]
            assert str(status) in responses, f"{status} not documented for {method} {template}"
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            jsonschema.validate(
                body,
                {**schema, "components": document["components"]},
                cls=jsonschema.Draft202012Validator,
            )
            return
    assert status in (404, 405), f"{method} {path} answered {status} but is not documented"


@pytest.fixture
def api() -> Api:
    return Api()


def test_the_document_is_served_without_a_token(api: Api) -> None:
    status, document = api.call("GET", "/api/openapi.json", token=None)
    assert status == 200 and document == openapi.document()
    jsonschema.Draft202012Validator.check_schema({**document["components"]["schemas"]["Review"]})


def test_requests_without_a_valid_token_are_refused(api: Api) -> None:
    assert api.call("GET", "/api/reviews", token=None)[0] == 401
    status, body = api.call("GET", "/api/reviews", token="wrong")
    assert (status, body["error"]["message"]) == (401, "invalid API key")
    assert ("wrong", "admin-api") in api.authenticator.seen


def test_a_held_statement_is_listed_shown_and_approved(api: Api) -> None:
    review_id, decision = api.hold()
    status, listed = api.call("GET", "/api/reviews?status=pending")
    assert status == 200 and [r["id"] for r in listed["reviews"]] == [review_id]
    status, shown = api.call("GET", f"/api/reviews/{review_id}")
    assert shown["statement"] == "DELETE FROM t" and shown["approvals"] == 0
    status, approved = api.call("POST", f"/api/reviews/{review_id}/approve", {"reason": "ok"})
    assert status == 200 and approved["status"] == "approved"
    assert approved["votes"][0]["identity"] == "alice"
    assert isinstance(decision.result, Allow)
    status, again = api.call("POST", f"/api/reviews/{review_id}/deny", {"reason": "late"})
    assert status == 409 and "is approved" in again["error"]["message"]


def test_a_review_shows_the_parameter_values_it_covers(api: Api) -> None:
    from hoopgw.session import Parameter

    review_id, _ = api.hold(
        "DELETE FROM t WHERE id = $1 AND n = $2",
        (Parameter(value=b"1", shown="1"), Parameter(value=None)),
    )
    status, shown = api.call("GET", f"/api/reviews/{review_id}")  # checked against OpenAPI
    assert status == 200 and shown["parameters"] == ["1", None]
    status, listed = api.call("GET", "/api/reviews")
    assert listed["reviews"][0]["parameters"] == ["1", None]


def test_own_and_unseen_reviews(api: Api) -> None:
    review_id, _ = api.hold()
    # The requester sees its own review but may not decide it.
    status, body = api.call("POST", f"/api/reviews/{review_id}/approve", {}, token="agent-key")
    assert status == 403 and "own request" in body["error"]["message"]
    # Someone outside its approver groups and without a role does not see it.
    assert api.call("GET", f"/api/reviews/{review_id}", token="lead-key")[0] == 404
    assert api.call("GET", "/api/reviews", token="lead-key")[1] == {"reviews": []}


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "status"),
    [
        ("GET", "/api/reviews?limit=0", None, None, 400),
        ("GET", "/api/reviews?status=odd", None, None, 400),
        ("POST", "/api/reviews/0123456789ab/deny", {}, None, 400),
        ("POST", "/api/reviews/0123456789ab/deny", {"reason": 3}, None, 400),
        ("POST", "/api/reviews/0123456789ab/approve", None, b"[1]", 400),
        ("POST", "/api/reviews/0123456789ab/approve", None, b"{", 400),
        ("POST", "/api/reviews/0123456789ab/approve", None, b" " * (MAX_BODY + 1), 400),
        ("POST", "/api/reviews/0123456789ab/approve", {}, None, 404),
        ("GET", "/api/nothing", None, None, 404),
        ("DELETE", "/api/reviews", None, None, 405),
        ("POST", "/api/access/requests", {"connection": "jit"}, None, 400),
        ("POST", "/api/access/requests", {"connection": "jit", "duration": True}, None, 400),
        (
            "POST",
            "/api/access/requests",
            None,
            b'{"connection": "jit", "reason": "x", "duration": 1' + b"0" * 400 + b"}",
            400,
        ),
    ],
)
def test_bad_requests(
    api: Api, method: str, path: str, body: Any, raw: bytes | None, status: int
) -> None:
    assert api.call(method, path, body, raw=raw)[0] == status


def test_access_request_grant_list_and_revoke(api: Api) -> None:
    status, review = api.call(
        "POST",
        "/api/access/requests",
        {"connection": "jit", "duration": 600, "reason": "INC-1"},
        token="agent-key",
    )
    assert status == 201 and review["kind"] == "access" and review["approvers"] == ["leads"]
    status, decided = api.call("POST", f"/api/reviews/{review['id']}/approve", {}, token="lead-key")
    assert decided["status"] == "approved" and decided["grant_id"]
    status, grants = api.call("GET", "/api/access/grants?active=1", token="agent-key")
    assert [g["status"] for g in grants["grants"]] == ["active"]
    # The approver role alone shows no grants; the connection's jit_approvers see its grants.
    assert api.call("GET", "/api/access/grants", token="alice-key")[1] == {"grants": []}
    assert len(api.call("GET", "/api/access/grants", token="lead-key")[1]["grants"]) == 1
    path = f"/api/access/grants/{decided['grant_id']}/revoke"
    assert api.call("POST", path, {}, token="alice-key")[0] == 403
    status, revoked = api.call("POST", path, {"reason": "done"}, token="agent-key")
    assert status == 200 and revoked["status"] == "revoked"
    assert api.call("POST", path, {}, token="agent-key")[0] == 409


def test_an_expired_access_request_is_listed_and_refuses_approval(api: Api) -> None:
    _, review = api.call(
        "POST",
        "/api/access/requests",
        {"connection": "jit", "duration": 600, "reason": "INC-1"},
        token="agent-key",
    )
    api.clock.advance(24 * 3600)
    status, listed = api.call("GET", "/api/reviews?status=expired", token="lead-key")
    assert status == 200 and [r["id"] for r in listed["reviews"]] == [review["id"]]
    assert listed["reviews"][0]["status"] == "expired"
    path = f"/api/reviews/{review['id']}/approve"
    assert api.call("POST", path, {}, token="lead-key")[0] == 409


def test_whoami(api: Api) -> None:
    _, me = api.call("GET", "/api/whoami")
    assert me == {
        "identity": "alice",
        "groups": ["dba"],
        "roles": ["approver"],
        "method": "api-key",
    }


def test_the_site_serves_only_the_api() -> None:
    api = Api()
    site = build_site(api.service, api.authenticator, api.clock).site  # type: ignore[attr-defined]
    assert site.displayTracebacks is False
    assert site.resource.getStaticEntity(b"api") is not None


def test_a_deeply_nested_body_is_refused_not_an_internal_error(api: Api) -> None:
    raw = b"[" * (MAX_BODY // 2) + b"]" * (MAX_BODY // 2)  # deeper than Python's stack
    status, body = api.call("POST", "/api/reviews/0123456789ab/approve", raw=raw)
    assert (status, body["error"]["code"]) == (400, "invalid")


def test_a_limit_in_other_digits_is_refused_not_an_internal_error(api: Api) -> None:
    status, body = api.call("GET", "/api/reviews?limit=\u00b2")  # "²": isdigit() but not int()
    assert (status, body["error"]["code"]) == (400, "invalid")


# -- over the wire: what Twisted does before the API sees a request ------------------------------


def connect(api: Api) -> tuple[Any, StringTransport]:
    site = build_site(api.service, api.authenticator, api.clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    return channel, transport


def test_a_declared_body_over_the_limit_is_refused_before_it_arrives(api: Api) -> None:
    channel, transport = connect(api)
    channel.dataReceived(
        b"POST /api/access/requests HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: %d\r\n\r\n" % (10 * 1024 * 1024 * 1024)
    )
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert b"larger than 65536 bytes" in transport.value()
    assert transport.disconnecting
    channel.dataReceived(b"x" * 100_000)  # what was on the way is dropped
    assert api.authenticator.seen == []  # the request never reached the API


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(api: Api) -> None:
    channel, transport = connect(api)
    channel.dataReceived(
        b"POST /api/access/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer agent-key\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 4096
    for _ in range(MAX_BODY // len(chunk) + 1):
        channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    channel.dataReceived(b"0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.disconnecting
    assert api.authenticator.seen == []


def test_a_body_within_the_limit_is_answered(api: Api) -> None:
    channel, transport = connect(api)
    body = json.dumps({"connection": "jit", "duration": 60, "reason": "x" * 1000}).encode()
    channel.dataReceived(
        b"POST /api/access/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer agent-key\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert transport.value().startswith(b"HTTP/1.1 201 ")


def test_an_idle_connection_is_closed(api: Api) -> None:
    channel, transport = connect(api)
    channel.dataReceived(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n")  # the rest never comes
    api.clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    api.clock.advance(1)
    assert transport.disconnecting


def test_one_host_may_hold_only_so_many_connections(api: Api) -> None:
    factory = build_site(api.service, api.authenticator, api.clock)
    held = []
    for port in range(MAX_CONNECTIONS_PER_HOST):
        channel = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000 + port))
        channel.makeConnection(StringTransport())
        held.append(channel)
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 50000)) is None
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 50000)) is not None
    held[0].connectionLost(None)  # one ends: the host may connect again
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 50001)) is not None


class _LiveSession:
    def __init__(self, identity: str) -> None:
        self.session_info = make_session(
            identity=identity, session_id="cafebabe-0000-4000-8000-000000000001"
        )
        self.identity = self.session_info.identity
        self.ended: list[str] = []

    def terminate(self, reason: str) -> None:
        self.ended.append(reason)


def test_live_sessions_are_listed_and_ended_by_admins(api: Api) -> None:
    registry = SessionRegistry()
    live = _LiveSession("agent")
    registry.add(live)  # type: ignore[arg-type]
    audit = FakeAuditWriter()
    roles = {"admin": ("leads",), "approver": ("dba",)}
    api.resource = AdminApi(
        api.service,
        api.authenticator,
        api.clock,
        sessions=SessionControl(sessions=registry, audit=audit, roles=roles, clock=api.clock),
    )
    status, listed = api.call("GET", "/api/sessions/live", token="lead-key")
    assert status == 200
    assert [s["id"] for s in listed["sessions"]] == [live.session_info.id]
    assert api.call("GET", "/api/sessions/live", token="alice-key")[1] == {"sessions": []}
    status, refused = api.call(
        "POST", "/api/sessions/cafebabe/terminate", {"reason": "x"}, token="alice-key"
    )
    assert (status, refused["error"]["code"]) == (403, "forbidden")
    assert live.ended == []
    status, ended = api.call(
        "POST", "/api/sessions/cafebabe/terminate", {"reason": "leak"}, token="lead-key"
    )
    assert status == 200
    assert ended["identity"] == "agent"
    assert live.ended == ["ended by lead: leak"]
    assert audit.records[-1].kind == "session_terminated"


def test_a_reload_is_for_admins_and_a_refusal_carries_the_errors(api: Api) -> None:
    from hoopgw.errors import ReloadError

    asked: list[str] = []
    answers: list[Any] = [
        defer.succeed({"added": ["pg2"], "removed": [], "changed": {}, "ended_sessions": []}),
        defer.fail(ReloadError("connection 'pg', key 'guardrails.deny': unknown class")),
    ]

    def reload(by: str) -> defer.Deferred[Any]:
        asked.append(by)
        return answers.pop(0)

    api.service.roles = {"admin": ("leads",), "approver": ("dba",)}
    api.resource = AdminApi(api.service, api.authenticator, api.clock, reload=reload)
    status, refused = api.call("POST", "/api/reload", token="alice-key")
    assert (status, refused["error"]["code"], asked) == (403, "forbidden", [])
    status, applied = api.call("POST", "/api/reload", token="lead-key")
    assert (status, applied["added"], asked) == (200, ["pg2"], ["lead (admin API)"])
    status, invalid = api.call("POST", "/api/reload", token="lead-key")
    assert (status, invalid["error"]["code"]) == (400, "invalid")
    assert "guardrails.deny" in invalid["error"]["message"]


def test_reads_wait_for_the_store_calls_and_authenticate_first() -> None:
    # With a PostgreSQL store the reads run on the store's threads (hoopgw.store.calls): the
    # answer comes when the store's does, and a caller without a key causes no store work.
    from hoopgw.store.calls import StoreCalls

    api = Api()
    review_id, _ = api.hold()
    queued: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []

    class Slow(StoreCalls):
        def call(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            queued.append((d, fn, args, kwargs))
            return d

    api.service.calls = Slow(None)
    for path, token in (
        ("/api/reviews", None),
        ("/api/reviews", "alice-key"),
        (f"/api/reviews/{review_id}", "alice-key"),
        ("/api/access/grants", "lead-key"),
    ):
        request = DummyRequest(path.strip("/").split("/"))
        request.method = b"GET"
        request.path = path.encode()  # type: ignore[attr-defined]
        request.content = io.BytesIO(b"")  # type: ignore[attr-defined]
        if token is not None:
            request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
        api.resource.render(request)
        if token is None:
            assert request.finished and request.responseCode == 401 and queued == []
            continue
        assert not request.finished and len(queued) == 1
        d, fn, args, kwargs = queued.pop()
        d.callback(fn(*args, **kwargs))
        assert request.finished and (request.responseCode or 200) == 200
        validate("GET", path, 200, json.loads(b"".join(request.written)))
