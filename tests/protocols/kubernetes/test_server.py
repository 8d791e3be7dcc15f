"""The gateway's Kubernetes API server without I/O: what it refuses before anything reaches
the cluster, and that every refusal is a recorded command."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import h11
import pytest
from hoopgw_kubernetes.server import SPDY_REFUSED, ApiConnection
from hoopgw_kubernetes.settings import KubernetesSettings
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.errors import STORE_UNAVAILABLE, AuthenticationError, StoreError
from hoopgw.plugin import hookimpl
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity
from hoopgw.testing import HookLog, make_connection
from hoopgw.verdicts import Block

TOKEN = "hgw_caller"


class _Authenticator:
    def authenticate(self, secret: str, **where: Any) -> defer.Deferred[Identity]:
        if secret == "hgw_store_down":
            return defer.fail(StoreError(STORE_UNAVAILABLE))
        if secret != TOKEN:
            return defer.fail(AuthenticationError("invalid API key"))
        return defer.succeed(Identity(name="agent", groups=frozenset({"agents"})))

    def admit(self, identity: Identity, config: Any, **where: Any) -> defer.Deferred[None]:
        return defer.succeed(None)


class _Observer:
    def __init__(self, refuse: str = "", fail: bool = False) -> None:
        self.decided: list[tuple[str, str]] = []
        self.completed: list[tuple[str, str]] = []
        self.refuse = refuse
        self.fail = fail

    @hookimpl
    def client_command(self, session: Any, command: Any) -> Any:
        if self.fail:
            raise RuntimeError("plugin bug")
        if self.refuse and self.refuse in command.text:
            return Block(reason="not this one")
        return None

    @hookimpl
    def command_decided(self, command: Any, verdict: Any) -> None:
        self.decided.append((command.text, type(verdict).__name__))

    @hookimpl
    def command_completed(self, command: Any, outcome: Any) -> None:
        self.completed.append((command.text, outcome.status))


def _connection(observer: _Observer) -> tuple[ApiConnection, StringTransport, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    chain = PluginChain([("observer", observer)], reactor=reactor)
    runtime: Any = SimpleNamespace(
        chain=chain,
        info=make_connection(protocol="kubernetes"),
        config=SimpleNamespace(name="k8s", target="127.0.0.1:6443"),
        gateway=SimpleNamespace(max_message_size=1 << 20, auth_timeout=30.0),
        reactor=reactor,
        authenticator=_Authenticator(),
        sessions=SessionRegistry(),
        upstream_failed=lambda: None,
    )
    settings = KubernetesSettings(bearer="cluster", tls=None, record_body_limit=1024)
    connection = ApiConnection(runtime, settings)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    connection.makeConnection(transport)
    return connection, transport, reactor


def _request(target: str, *headers: str, method: str = "GET", token: str = TOKEN) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw", *headers]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(transport: StringTransport) -> tuple[int, dict[str, Any]]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    code = int(head.split(b" ")[1])
    return code, json.loads(body)


def test_no_bearer_token_is_401() -> None:
    connection, transport, _ = _connection(_Observer())
    connection.dataReceived(_request("/api/v1/pods", token=""))
    code, status = _status(transport)
    assert code == 401 and status["reason"] == "Unauthorized"
    assert transport.disconnecting


def test_a_wrong_token_is_401_and_nothing_is_decided() -> None:
    observer = _Observer()
    connection, transport, reactor = _connection(observer)
    connection.dataReceived(_request("/api/v1/pods", token="hgw_wrong"))
    code, status = _status(transport)
    assert code == 401 and "invalid API key" in status["message"]
    assert observer.decided == [] and reactor.tcpClients == []


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (_request("/api/v1/namespaces/%2e%2e/pods"), 400, "not a plain absolute path"),
        (_request("/api/v1/pods", method="OPTIONS"), 400, "not one the Kubernetes API serves"),
        (
            _request(
                "/api/v1/namespaces/d/pods/p/exec?command=ls",
                "Connection: Upgrade",
                "Upgrade: SPDY/3.1",
                "X-Stream-Protocol-Version: v4.channel.k8s.io",
            ),
            403,
            SPDY_REFUSED,
        ),
        (_request("/api/v1/pods", "Impersonate-User: admin"), 403, "impersonation"),
        (_request("/api/v1/namespaces/d/pods/p/portforward"), 403, "port forwarding"),
        (_request("/api/v1/namespaces/d/pods/p/exec?command=ls"), 403, "WebSocket upgrade"),
        (_request("/api/v1/namespaces/kube-system/pods"), 403, "not this one"),
    ],
)
def test_refused_before_the_cluster(request_bytes: bytes, code: int, message: str) -> None:
    observer = _Observer(refuse="kube-system")
    connection, transport, reactor = _connection(observer)
    for index in range(len(request_bytes)):  # one byte at a time
        connection.dataReceived(request_bytes[index : index + 1])
    got, status = _status(transport)
    assert (got, status["status"]) == (code, "Failure")
    assert message in status["message"]
    assert reactor.tcpClients == []  # nothing was sent towards the cluster
    # Refused by the gateway itself, and recorded so.
    assert [verdict for _, verdict in observer.decided] == ["Block"]
    assert [outcome for _, outcome in observer.completed] == ["blocked"]
    assert transport.producerState == "producing"  # the next request may come


def test_a_failing_plugin_refuses() -> None:
    connection, transport, reactor = _connection(_Observer(fail=True))
    connection.dataReceived(_request("/api/v1/pods"))
    code, status = _status(transport)
    assert code == 403 and "hoopgw refused the command" in status["message"]
    assert "code=HGW-" in status["message"]
    assert reactor.tcpClients == []


def test_an_allowed_request_goes_to_the_cluster_and_another_token_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[Any] = []

    def connect(runtime: Any, tls: Any, link: Any) -> defer.Deferred[Any]:
        sent.append(link)
        return defer.Deferred()

    monkeypatch.setattr("hoopgw_kubernetes.server.connect", connect)
    observer = _Observer()
    connection, transport, reactor = _connection(observer)
    connection.dataReceived(_request("/api/v1/namespaces/d/pods", "Accept: application/json"))
    [link] = sent
    headers = dict(link._request.headers)
    assert headers[b"authorization"] == b"Bearer cluster"  # the cluster's, not the caller's
    assert headers[b"accept"] == b"application/json"
    assert observer.decided == [("list pods -n d", "Allow")]
    link._on_response(
        h11.Response(status_code=200, headers=[(b"content-type", b"application/json")])
    )
    link._on_data(b'{"kind": "PodList",')
    link._on_data(b' "items": []}')
    link._on_end(None)
    reactor.advance(0)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["kind"] == "PodList"
    assert observer.completed == [("list pods -n d", "ok")]
    transport.clear()
    connection.dataReceived(_request("/api/v1/namespaces/d/pods", token="hgw_other"))
    assert b"another token on the same connection" in transport.value()


def test_nothing_more_is_read_while_a_request_is_decided() -> None:
    held: list[defer.Deferred[Any]] = []

    class Holder:
        @hookimpl
        def client_command(self, session: Any, command: Any) -> Any:
            held.append(defer.Deferred())
            return held[-1]

    reactor = MemoryReactorClock()
    connection, transport, _ = _connection(_Observer())
    connection.runtime.chain = PluginChain([("holder", Holder())], reactor=reactor)
    connection.dataReceived(_request("/api/v1/pods") + _request("/api/v1/nodes"))
    assert len(held) == 1 and transport.producerState == "paused"
    held[0].callback(Block(reason="no"))
    reactor.advance(0)
    assert transport.producerState == "producing"


def test_a_client_that_leaves_during_a_hold_withdraws_it_once() -> None:
    class Holder:
        @hookimpl
        def client_command(self, session: Any, command: Any) -> Any:
            return defer.Deferred()  # never answered: a review nobody decides

    log = HookLog()
    connection, _, reactor = _connection(_Observer())
    connection.runtime.chain = PluginChain([("holder", Holder()), ("log", log)], reactor=reactor)
    connection.dataReceived(_request("/api/v1/namespaces/d/pods/web", method="DELETE"))
    assert log.events == []
    connection.connectionLost(None)
    connection.connectionLost(None)  # twice: still once each
    assert log.events == [
        ("decided", "delete pods/web -n d", "Block"),
        ("completed", "delete pods/web -n d", "blocked"),  # withdrawn: it never ran
        ("closed", "client closed"),
    ]


def test_a_store_that_cannot_be_read_is_503_not_401() -> None:
    connection, transport, reactor = _connection(_Observer())
    connection.dataReceived(_request("/api/v1/pods", token="hgw_store_down"))
    code, status = _status(transport)
    assert code == 503 and status["reason"] == "ServiceUnavailable"
    assert reactor.tcpClients == []


def test_a_secret_s_data_is_recorded_decoded_for_the_audit_text_hooks() -> None:
    # With base64 the masking's audit_text hook would not see the values it masks.
    seen: list[str] = []

    class Auditor:
        @hookimpl
        def audit_text(self, session: Any, command: Any, output: Any) -> None:
            if output.kind == "command":
                seen.append(output.fields["text"])

    observer = _Observer(refuse="secrets")
    reactor = MemoryReactorClock()
    connection, _, _ = _connection(observer)
    connection.runtime.chain = PluginChain(
        [("auditor", Auditor()), ("observer", observer)], reactor=reactor
    )
    body = json.dumps(
        {"kind": "Secret", "metadata": {"name": "s"}, "data": {"email": "YWxpY2VAZXhhbXBsZS5jb20="}}
    )
    request = _request(
        "/api/v1/namespaces/d/secrets",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        method="POST",
    )
    connection.dataReceived(request + body.encode())
    [text] = seen
    recorded = json.loads(text.partition("\n")[2])
    assert recorded["stringData"] == {"email": "alice@example.com"}
    assert "data" not in recorded or not recorded["data"]
