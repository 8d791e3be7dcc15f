"""The gateway's Kubernetes API server without I/O: what it refuses before anything reaches
the cluster, and that every refusal is a recorded command."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest
from hoopgw_kubernetes.server import SPDY_REFUSED, ApiConnection
from hoopgw_kubernetes.settings import KubernetesSettings
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WebSocket
from wsproto.events import AcceptConnection, BytesMessage, TextMessage

from hoopgw.errors import STORE_UNAVAILABLE, AuthenticationError, StoreError
from hoopgw.http1 import Head
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
    headers = dict(link._request.fields)
    assert headers[b"authorization"] == b"Bearer cluster"  # the cluster's, not the caller's
    assert headers[b"accept"] == b"application/json"
    assert observer.decided == [("list pods -n d", "Allow")]
    link._on_response(
        Head(version="HTTP/1.1", status=200, fields=((b"content-type", b"application/json"),))
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


# -- the strict reader (hoopgw.http1): what two parsers could read two ways never gets in -------

_BEHIND = _request("/api/v1/namespaces/kube-system/secrets")
"""A request smuggled behind the first: it must never be read."""
_POST = ("/api/v1/namespaces/d/pods", "Content-Type: application/json")


def _post(*headers: str) -> bytes:
    return _request(*_POST, *headers, method="POST")


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        pytest.param(
            _post("Content-Length: 2", "Content-Length: 2") + b"{}" + _BEHIND, 400, id="two-CL"
        ),
        pytest.param(
            _post("Content-Length: 2", "Content-Length: 80") + b"{}" + _BEHIND,
            400,
            id="two-different-CL",
        ),
        pytest.param(_post("Content-Length: 2, 2") + b"{}" + _BEHIND, 400, id="CL-list"),
        pytest.param(
            _post("Transfer-Encoding: chunked", "Content-Length: 5") + b"0\r\n\r\n" + _BEHIND,
            400,
            id="TE-and-CL",
        ),
        pytest.param(
            _post("Content-Length: 5", "Transfer-Encoding: chunked") + b"0\r\n\r\n" + _BEHIND,
            400,
            id="CL-and-TE",
        ),
        pytest.param(
            _request("/api/v1/pods", "Accept: application/json", " application/yaml"),
            400,
            id="obs-fold",
        ),
        pytest.param(
            _request("/api/v1/pods", "X-Note: a", "\tContent-Length: 40") + _BEHIND,
            400,
            id="obs-fold-tab",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b"zz\r\n{}\r\n0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-size-not-hex",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b"0x2\r\n{}\r\n0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-size-0x",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b"-2\r\n{}\r\n0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-size-negative",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b" 2\r\n{}\r\n0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-size-space",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b"2\r\n{}XY0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-without-CRLF",
        ),
        pytest.param(
            _post("Transfer-Encoding: chunked") + b"2\n{}\r\n0\r\n\r\n" + _BEHIND,
            400,
            id="chunk-size-bare-LF",
        ),
        pytest.param(_request("/api/v1/pods").replace(b"\r\n", b"\n") + _BEHIND, 400, id="bare-LF"),
        pytest.param(_post("Content-Length : 2") + b"{}" + _BEHIND, 400, id="space-before-colon"),
        pytest.param(_request("/api/v1/pods", "Accept: a\x01b"), 400, id="control-character"),
        pytest.param(_request("/api/v1/pods", "Host: other"), 400, id="two-Host"),
        pytest.param(
            _post("Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n" + _BEHIND,
            501,
            id="TE-not-chunked",
        ),
        pytest.param(
            _request("/api/v1/pods", "X-Big: " + "a" * (64 * 1024)), 431, id="header-too-large"
        ),
    ],
)
@pytest.mark.parametrize("split", [0, 1, 7])
def test_what_two_parsers_could_read_differently_is_400_and_nothing_more(
    request_bytes: bytes, code: int, split: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarded: list[Any] = []
    monkeypatch.setattr(
        "hoopgw_kubernetes.server.connect", lambda *args: forwarded.append(args) or defer.Deferred()
    )
    observer = _Observer()
    connection, transport, reactor = _connection(observer)
    size = split or len(request_bytes)
    pieces = [request_bytes[i : i + size] for i in range(0, len(request_bytes), size)]
    for piece in pieces:
        connection.dataReceived(piece)
    reactor.advance(0)
    got, status = _status(transport)  # one answer (the body is one JSON document, nothing after)
    assert got == code and status["status"] == "Failure"
    assert "malformed HTTP request" in status["message"] or "Host" in status["message"]
    assert b"connection: close" in transport.value().lower() and transport.disconnecting
    # Neither authenticated, decided, recorded nor forwarded.
    assert connection.session is None
    assert observer.decided == [] and observer.completed == []
    assert forwarded == [] and reactor.tcpClients == []


@pytest.mark.parametrize("split", [0, 1])
def test_a_chunked_body_is_read_whole_and_sent_with_its_length(
    split: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(
        "hoopgw_kubernetes.server.connect",
        lambda runtime, tls, link: sent.append(link) or defer.Deferred(),
    )
    observer = _Observer()
    connection, _, _ = _connection(observer)
    body = b'{"kind": "Pod", "metadata": {"name": "web"}}'
    chunked = b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
        10,
        body[:10],
        len(body) - 10,
        body[10:],
    )
    data = _post("Transfer-Encoding: chunked") + chunked
    for index in range(0, len(data), split or len(data)):
        connection.dataReceived(data[index : index + (split or len(data))])
    [link] = sent
    fields = dict(link._request.fields)
    assert link._body == body and fields[b"content-length"] == b"%d" % len(body)
    assert b"transfer-encoding" not in fields and b"x-trailer" not in fields
    assert observer.decided[0][0].startswith("create pods -n d\n")


def test_a_streamed_response_is_chunked_and_the_connection_stays_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(
        "hoopgw_kubernetes.server.connect",
        lambda runtime, tls, link: sent.append(link) or defer.Deferred(),
    )
    connection, transport, reactor = _connection(_Observer())
    connection.dataReceived(_request("/api/v1/namespaces/d/pods/web/log"))
    [link] = sent
    link._on_response(
        Head(version="HTTP/1.1", status=200, fields=((b"content-type", b"text/plain"),))
    )
    link._on_data(b"one\ntw")
    link._on_data(b"o\n")
    link._on_end(None)
    reactor.advance(0)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower() and b"connection" not in head.lower()
    assert body == b"4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"
    assert not transport.disconnecting and transport.producerState == "producing"


def test_an_http10_client_gets_a_body_ended_by_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(
        "hoopgw_kubernetes.server.connect",
        lambda runtime, tls, link: sent.append(link) or defer.Deferred(),
    )
    connection, transport, _ = _connection(_Observer())
    request = _request("/api/v1/namespaces/d/pods/web/log").replace(b"HTTP/1.1", b"HTTP/1.0")
    connection.dataReceived(request.replace(b"Host: gw\r\n", b""))
    [link] = sent
    link._on_response(
        Head(version="HTTP/1.1", status=200, fields=((b"content-type", b"text/plain"),))
    )
    link._on_data(b"one\n")
    link._on_end(None)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower() and b"transfer-encoding" not in head.lower()
    assert body == b"one\n" and transport.disconnecting


def test_pipelined_requests_are_served_one_after_the_other() -> None:
    observer = _Observer(refuse="pods")
    connection, transport, reactor = _connection(observer)
    connection.dataReceived(_request("/api/v1/pods") + _request("/api/v1/namespaces/d/pods"))
    reactor.advance(0)
    assert [text for text, _ in observer.decided] == ["list pods", "list pods -n d"]
    assert transport.value().count(b"HTTP/1.1 403 ") == 2 and not transport.disconnecting


def test_bytes_right_behind_an_exec_upgrade_are_websocket_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hoopgw_kubernetes.streams.connect", lambda *args: defer.Deferred())
    connection, transport, _ = _connection(_Observer())
    upgrade = _request(
        "/api/v1/namespaces/d/pods/p/exec?command=cat&stdin=true",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
    )
    frame = WebSocket(ConnectionType.CLIENT).send(BytesMessage(data=b"\x00hello\n"))
    connection.dataReceived(upgrade + frame)  # in one read: the frame is not HTTP
    head = transport.value().partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 section 1.3
    assert connection._stream._pending == [b"\x00hello\n"]  # held until the cluster accepts


def test_the_refusal_of_a_head_request_has_no_body() -> None:
    connection, transport, reactor = _connection(_Observer(refuse="nodes"))
    connection.dataReceived(_request("/api/v1/pods", method="HEAD") + _request("/api/v1/nodes"))
    reactor.advance(0)
    first, second = transport.value().split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"400 ") and first.endswith(b"\r\n\r\n")  # the fields alone
    assert second.startswith(b"403 ")  # the next answer is read where it starts


_WEBSOCKET_FIELDS = (
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Protocol: v5.channel.k8s.io",
)


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/namespaces/d/pods/web:8080/proxy/ws",
        "/api/v1/namespaces/d/secrets?watch=true",
    ],
)
@pytest.mark.parametrize("upgrade", ["Upgrade:", "Upgrade:   "])
def test_an_empty_upgrade_field_does_not_turn_a_request_into_a_stream(
    target: str, upgrade: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An API request judged as one (``proxy pods/web``, ``watch secrets``) must not be relayed
    # as an exec stream, whose relay passes the cluster's messages of other channels unmasked.
    streams: list[Any] = []
    monkeypatch.setattr(
        "hoopgw_kubernetes.streams.connect", lambda *args: streams.append(args) or defer.Deferred()
    )
    monkeypatch.setattr(
        "hoopgw_kubernetes.server.connect", lambda *args: streams.append(args) or defer.Deferred()
    )
    observer = _Observer()
    connection, transport, _ = _connection(observer)
    connection.dataReceived(_request(target, upgrade, *_WEBSOCKET_FIELDS))
    assert b"101 Switching Protocols" not in transport.value()
    assert connection._stream is None and streams == []
    code, status = _status(transport)
    assert code == 403 and "upgrade" in status["message"]
    assert [verdict for _, verdict in observer.decided] == ["Block"]


def test_the_cluster_s_messages_reach_the_client_only_on_the_channels_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only stdout and stderr pass the server_output hooks; a message on another channel (a
    # JSON document whose first byte is "{") would reach the client as the cluster sent it.
    monkeypatch.setattr("hoopgw_kubernetes.streams.connect", lambda *args: defer.Deferred())

    class Masker:
        @hookimpl
        def server_output(self, session: Any, command: Any, output: Any) -> None:
            output.fields = {k: v.replace("hunter2", "*****") for k, v in output.fields.items()}

    connection, transport, reactor = _connection(_Observer())
    connection.runtime.chain = PluginChain([("masker", Masker())], reactor=reactor)
    upgrade = _request(
        "/api/v1/namespaces/d/pods/p/exec?command=env", "Upgrade: websocket", *_WEBSOCKET_FIELDS
    )
    connection.dataReceived(upgrade)
    relay = connection._stream
    link = SimpleNamespace(transport=StringTransport())
    relay._upstream = link
    relay.upstream_connected(link)
    cluster = WSConnection(ConnectionType.SERVER)
    cluster.receive_data(link.transport.value())
    [handshake] = cluster.events()
    out = cluster.send(AcceptConnection(subprotocol=handshake.subprotocols[0]))
    out += cluster.send(BytesMessage(data=b"\x01PASSWORD=hunter2\n"))
    out += cluster.send(TextMessage(data='{"data": {"password": "hunter2"}}'))
    out += cluster.send(BytesMessage(data=b"\x07password=hunter2\n"))
    out += cluster.send(BytesMessage(data=b'\x03{"status": "Success"}'))
    relay.upstream_data(out)
    client = WebSocket(ConnectionType.CLIENT)
    client.receive_data(transport.value().partition(b"\r\n\r\n")[2])
    messages = [event.data for event in client.events() if isinstance(event, BytesMessage)]
    assert messages == [b"\x01PASSWORD=*****\n", b'\x03{"status": "Success"}']


def test_a_body_in_small_chunks_costs_its_size_not_an_object_per_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The body is read before the token is checked: a client sending it in 2-byte chunks
    # (7 bytes each on the wire) must not make the gateway hold a bytes object per chunk.
    monkeypatch.setattr("hoopgw_kubernetes.server.connect", lambda *args: defer.Deferred())
    connection, _, _ = _connection(_Observer())
    connection.dataReceived(_request(*_POST, "Transfer-Encoding: chunked", method="POST"))
    piece = b"2\r\nab\r\n" * 1000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(40):  # 80 KB of body, the request not finished yet
            connection.dataReceived(piece)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 400_000, held  # 40,000 objects would be 1.7 MB


def test_a_streamed_answer_to_a_head_request_has_no_last_chunk() -> None:
    # RFC 9112 section 6.3: a response to HEAD ends with its fields; a "0" chunk after them
    # would be read by the client as the start of the next response.
    connection, transport, _ = _connection(_Observer())
    connection._head_request = connection._keep_alive = True  # serving a HEAD request
    connection.send_head(200, [(b"content-type", b"text/plain")], None)
    connection.send_body(b"one\n")
    connection.end_response()
    assert transport.value().endswith(b"\r\n\r\n") and transport.value().count(b"\r\n\r\n") == 1
    assert not transport.disconnecting
