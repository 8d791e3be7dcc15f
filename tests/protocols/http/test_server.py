"""The client side of the HTTP protocol without real I/O: requests fed byte by byte to a
:class:`ClientConnection` on a ``StringTransport``, the target a ``StringTransport`` too, the
plugin chain real. Checks the ledger's contract (decided once, completed once, closed once)
with :class:`~hoopgw.testing.HookLog`."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hoopgw_http import exchange
from hoopgw_http.server import ClientConnection, HttpProxyFactory
from hoopgw_http.settings import OPTIONS, read_options
from hoopgw_http.upstream import UpstreamRequest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import hookimpl, validate_options
from hoopgw.protocol import ConnectionRuntime, ProtocolTable
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.secrets import Secret
from hoopgw.session import ConnectionInfo, Output
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeApprover, HookLog
from hoopgw.verdicts import Block, Hold

TARGET_TOKEN = "t4rget-token-value"


class Target:
    """The fake target: each exchange's connection, on a ``StringTransport``."""

    def __init__(self) -> None:
        self.connections: list[tuple[UpstreamRequest, StringTransport]] = []

    def connect(
        self, reactor: Any, connection: Any, tls_options: Any, upstream: UpstreamRequest
    ) -> defer.Deferred[Any]:
        transport = StringTransport()
        upstream.makeConnection(transport)
        self.connections.append((upstream, transport))
        return defer.succeed(upstream)

    def received(self) -> bytes:
        """What the latest connection received."""
        return self.connections[-1][1].value()

    def respond(self, data: bytes) -> None:
        upstream, _ = self.connections[-1]
        upstream.dataReceived(data)


class Gateway:
    """One ``http`` connection's runtime, an API key, and a fake target."""

    def __init__(
        self,
        plugins: Sequence[tuple[str, object]] = (),
        *,
        http: dict[str, Any] | None = None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.clock = MemoryReactorClock()
        store = SQLiteStore(":memory:")
        store.migrate()
        keys = KeyService(store)
        self.key, _ = keys.create("agent", ["agents"], now=time.time())
        credential = CredentialConfig(
            user="svc", password=Secret(reference="env:T", value=TARGET_TOKEN)
        )
        table = ProtocolTable(
            protocol="http",
            connection="api",
            values=validate_options(
                "http", OPTIONS, {"auth": "bearer", **(http or {})}, connection="api"
            ),
            credential=credential,
            base_dir=Path("/etc/hoopgw"),
        )
        config = ConnectionConfig(
            name="api",
            protocol="http",
            listen="tcp:18080:interface=127.0.0.1",
            target="api.internal:8080",
            credential=credential,
            allow_groups=("agents",),
            plugins=tuple(name for name, _ in plugins),
            upstream_tls=UpstreamTlsConfig(sslmode="disable"),
            protocol_options=read_options(table),
        )
        self.sessions = SessionRegistry()
        self.runtime = ConnectionRuntime(
            config=config,
            gateway=GatewayConfig(auth_timeout=30.0),
            info=ConnectionInfo(name="api", protocol="http", target=config.target),
            chain=PluginChain(list(plugins), reactor=self.clock),
            authenticator=Authenticator(keys),
            sessions=self.sessions,
            reactor=self.clock,
        )
        self.target = Target()
        monkeypatch.setattr(exchange, "connect_upstream", self.target.connect)
        self.factory = HttpProxyFactory(self.runtime)

    def connect(self) -> Client:
        return Client(self)


class Client:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.connection = self.gateway.factory.buildProtocol(None)
        assert isinstance(self.connection, ClientConnection)
        self.connection.makeConnection(self.transport)

    def send(self, data: bytes, *, split: int = 0) -> None:
        step = split or len(data)
        for start in range(0, len(data), step):
            self.connection.dataReceived(data[start : start + step])

    def request(
        self, method: str = "GET", path: str = "/api/x", *, body: bytes = b"", extra: str = ""
    ) -> bytes:
        framing = f"Content-Length: {len(body)}\r\n" if body else ""
        return (
            f"{method} {path} HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {self.gateway.key}\r\n{framing}{extra}\r\n"
        ).encode() + body

    def received(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def close(self) -> None:
        self.connection.connectionLost()


def ok(body: bytes = b'{"a": 1}', content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


@pytest.mark.parametrize("split", [0, 1, 5])
def test_an_allowed_request_reaches_the_target_rewritten(
    monkeypatch: pytest.MonkeyPatch, split: int
) -> None:
    log = HookLog()
    gateway = Gateway([("log", log)], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(
        client.request(path="/api/x?y=1", extra="X-Forwarded-For: 1.2.3.4\r\n"), split=split
    )
    sent = gateway.target.received()
    assert sent.startswith(b"GET /api/x?y=1 HTTP/1.1\r\nhost: api.internal:8080\r\n")
    assert b"authorization: Bearer " + TARGET_TOKEN.encode() in sent
    assert gateway.key.encode() not in sent and b"1.2.3.4" not in sent
    assert b"connection: close" in sent
    gateway.target.respond(ok(b'{"echo": "Bearer ' + TARGET_TOKEN.encode() + b'"}'))
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert TARGET_TOKEN.encode() not in answer  # the target's echo is scrubbed
    assert log.events == [
        ("decided", "GET /api/x?y=1", "Allow"),
        ("completed", "GET /api/x?y=1", "ok"),
    ]
    client.close()
    assert log.events[-1] == ("closed", "client closed")


def test_a_pipelined_request_waits_for_the_response_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request(path="/one") + client.request(path="/two"))
    assert len(gateway.target.connections) == 1
    gateway.target.respond(ok())
    assert len(gateway.target.connections) == 2
    assert gateway.target.received().startswith(b"GET /two ")
    gateway.target.respond(ok())
    assert client.received().count(b"HTTP/1.1 200 OK") == 2


class Refusing:
    @hookimpl
    def client_command(self, command: Any) -> Block | Hold | None:
        if command.details["method"] == "DELETE":
            return Block(reason="no deletes")
        if command.details["method"] == "POST":
            return Hold(reason="risky", approvers=("dba",))
        return None


def test_a_refused_request_is_answered_403_and_never_forwarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = HookLog()
    gateway = Gateway([("refusing", Refusing()), ("log", log)], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("DELETE", "/api/x"))
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    refusal = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert refusal["error"].startswith("hoopgw refused the command: no deletes [code=HGW-REFUSED")
    assert refusal["code"] == "HGW-REFUSED" and refusal["next_step"]
    assert gateway.target.connections == []
    assert log.events == [
        ("decided", "DELETE /api/x", "Block"),
        ("completed", "DELETE /api/x", "blocked"),
    ]
    # The connection stays usable: the refused request had no body left unread.
    client.send(client.request("GET", "/api/y"))
    assert len(gateway.target.connections) == 1


def test_a_held_request_is_withdrawn_once_when_the_client_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    approver, log = FakeApprover(), HookLog()
    gateway = Gateway(
        [("refusing", Refusing()), ("approver", approver), ("log", log)], monkeypatch=monkeypatch
    )
    client = gateway.connect()
    client.send(
        client.request(
            "POST", "/api/jobs", body=b'{"run": 1}', extra="Content-Type: application/json\r\n"
        )
    )
    [(_, command, _)] = approver.requests
    assert command.text == 'POST /api/jobs\n\n{"run": 1}'
    assert gateway.target.connections == []
    client.close()
    assert approver.withdrawn == 1
    assert log.events == [
        ("decided", 'POST /api/jobs\n\n{"run": 1}', "Block"),
        ("completed", 'POST /api/jobs\n\n{"run": 1}', "cancelled"),
        ("closed", "client closed"),
    ]


def test_an_approved_request_is_forwarded_with_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    approver = FakeApprover()
    gateway = Gateway([("refusing", Refusing()), ("approver", approver)], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(
        client.request("POST", "/api/jobs", body=b"run=1", extra="Content-Type: text/plain\r\n")
    )
    approver.approve()
    assert gateway.target.received().endswith(
        b"content-length: 5\r\nconnection: close\r\n\r\nrun=1"
    )


def test_a_client_leaving_during_the_response_gets_its_command_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = HookLog()
    gateway = Gateway([("log", log)], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\nabc"
    )
    client.close()
    assert log.events == [
        ("decided", "GET /api/x", "Allow"),
        ("completed", "GET /api/x", "aborted"),
        ("closed", "client closed"),
    ]
    assert gateway.target.connections[0][1].disconnecting


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("", 401),  # replaced below: no Authorization
        ("X-HTTP-Method-Override: DELETE\r\n", 400),
        ("Upgrade: websocket\r\nConnection: Upgrade\r\n", 501),
        ("Expect: something\r\n", 417),
    ],
)
def test_requests_refused_before_any_decision(
    monkeypatch: pytest.MonkeyPatch, extra: str, status: int
) -> None:
    log = HookLog()
    gateway = Gateway([("log", log)], monkeypatch=monkeypatch)
    client = gateway.connect()
    raw = client.request(extra=extra)
    if status == 401:
        raw = raw.replace(b"Authorization: Bearer " + gateway.key.encode() + b"\r\n", b"")
    client.send(raw)
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in answer
    if status == 401:
        assert b'www-authenticate: Bearer realm="hoopgw"' in answer
    assert gateway.target.connections == [] and log.events == []
    assert client.transport.disconnecting


def test_another_token_on_the_same_connection_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(ok())
    client.received()
    other = client.request().replace(gateway.key.encode(), b"hgw_someone_else")
    client.send(other)
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'www-authenticate: Bearer realm="hoopgw", error="invalid_token"' in answer
    assert len(gateway.target.connections) == 1


def test_a_smuggled_request_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(
        client.request("POST", extra="Content-Length: 6\r\nTransfer-Encoding: chunked\r\n")
        + b"0\r\n\r\nX"
    )
    assert client.received().startswith(b"HTTP/1.1 400 ")
    assert gateway.target.connections == []


def test_expect_100_continue_is_answered_before_an_inspected_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    head = client.request(
        "POST", body=b"abc", extra="Content-Type: text/plain\r\nExpect: 100-continue\r\n"
    )[:-3]
    client.send(head)
    assert client.received() == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"abc")
    assert gateway.target.received().endswith(b"\r\n\r\nabc")
    assert b"expect" not in gateway.target.received().lower()


def test_an_inspected_body_with_a_content_encoding_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The recording would keep compressed bytes, _method checks would miss the form inside.
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    form = "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n"
    client.send(client.request("POST", body=gzip.compress(b"_method=DELETE"), extra=form))
    assert client.received().startswith(b"HTTP/1.1 415 ")
    assert gateway.target.connections == []


class JsonMasker:
    @hookimpl
    def server_output(self, output: Output) -> None:
        for name, value in output.fields.items():
            output.fields[name] = value.replace("ada@example.com", "[EMAIL]")


def test_json_responses_are_masked_value_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway([("masker", JsonMasker())], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    assert b"accept-encoding: identity" in gateway.target.received()
    gateway.target.respond(ok(b'{"user": {"ada@example.com": ["ada@example.com", 7]}}'))
    head, body = client.received().split(b"\r\n\r\n", 1)
    assert json.loads(body) == {"user": {"[EMAIL]": ["[EMAIL]", 7]}}
    assert b"content-length: %d" % len(body) in head


class FailingMasker:
    @hookimpl
    def server_output(self, output: Output) -> None:
        raise RuntimeError("masking broke")


def test_a_failing_data_hook_ends_the_session_and_nothing_unmasked_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = HookLog()
    gateway = Gateway([("masker", FailingMasker()), ("log", log)], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(ok(b'{"secret": "ada@example.com"}'))
    assert b"ada@example.com" not in client.transport.value()
    assert client.transport.disconnecting
    assert log.events[1][2] == "error" and log.events[-1][0] == "closed"


def test_a_secret_echoed_in_the_reason_phrase_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    token = TARGET_TOKEN.encode()
    gateway.target.respond(b"HTTP/1.1 401 bad token " + token + b"\r\nContent-Length: 0\r\n\r\n")
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 401 bad token ") and token not in answer


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"both"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            b"encoded",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=IBM037\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            b"cannot be masked",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 99999\r\n\r\n",
            b"larger",
        ),
    ],
)
def test_responses_that_cannot_be_read_or_masked_are_502(
    monkeypatch: pytest.MonkeyPatch, response: bytes, why: bytes
) -> None:
    gateway = Gateway(
        [("masker", JsonMasker())], http={"max_inspected_body": 1000}, monkeypatch=monkeypatch
    )
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(response)
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 502 ") and why in answer


def test_binary_responses_stream_chunked_without_being_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = Gateway([("masker", JsonMasker())], monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    gateway.target.respond(b"x" * 100)
    head = client.received()
    assert b"transfer-encoding: chunked" in head
    # On its way before the target finished it; the scrubber holds back a secret's length.
    assert b"x" * 50 in head
    gateway.target.connections[0][0].connectionLost()  # close-delimited: the end of the body
    assert client.received().endswith(b"0\r\n\r\n")


def test_a_session_ended_while_a_request_waits_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    approver, log = FakeApprover(), HookLog()
    gateway = Gateway(
        [("refusing", Refusing()), ("approver", approver), ("log", log)], monkeypatch=monkeypatch
    )
    client = gateway.connect()
    client.send(client.request("POST", body=b"x", extra="Content-Type: text/plain\r\n"))
    [session] = list(gateway.sessions)
    session.terminate("gateway stopping")
    assert client.received().startswith(b"HTTP/1.1 503 ")
    assert log.events[-1] == ("closed", "gateway stopping")
    assert gateway.target.connections == []


UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


def test_a_websocket_upgrade_becomes_a_tunnel_when_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = HookLog()
    gateway = Gateway([("log", log)], http={"websocket": True}, monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("GET", "/ws", extra=UPGRADE))
    sent = gateway.target.received()
    assert b"connection: upgrade\r\nupgrade: websocket\r\n" in sent
    assert b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==" in sent
    gateway.target.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"
    )
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert answer.endswith(b"\r\n\r\n\x81\x02hi")  # bytes after the 101 are the tunnel's
    client.send(b"\x81\x82abcd\x09\x0b")  # a masked client frame, passed as it is
    assert gateway.target.received().endswith(b"\x81\x82abcd\x09\x0b")
    gateway.target.connections[0][0].connectionLost()
    assert client.transport.disconnecting
    client.close()
    assert log.events == [
        ("decided", "GET /ws [WebSocket]", "Allow"),
        ("completed", "GET /ws [WebSocket]", "ok"),
        ("closed", "the target closed the WebSocket"),
    ]


def test_a_101_to_another_protocol_than_websocket_is_not_tunnelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A target switching to h2c would take requests through the tunnel no rule judged.
    gateway = Gateway(http={"websocket": True}, monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("GET", "/ws", extra=UPGRADE))
    gateway.target.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    )
    assert client.received().startswith(b"HTTP/1.1 502 ")


def test_a_websocket_is_judged_as_its_own_method(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Watch:
        @hookimpl
        def client_command(self, command: Any) -> None:
            seen.append(command.details["method"])

    gateway = Gateway([("watch", Watch())], http={"websocket": True}, monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("GET", "/ws", extra=UPGRADE))
    assert seen == ["WEBSOCKET"]


@pytest.mark.parametrize(
    "extra",
    [
        "Upgrade: h2c\r\nConnection: Upgrade\r\n",
        "Upgrade: websocket\r\nConnection: keep-alive\r\n",
    ],
)
def test_other_upgrades_are_refused(monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    gateway = Gateway(http={"websocket": True}, monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("GET", "/ws", extra=extra))
    assert client.received().startswith(b"HTTP/1.1 400 ")
    assert gateway.target.connections == []


def test_a_101_without_an_upgrade_asked_for_is_502(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    assert client.received().startswith(b"HTTP/1.1 502 ")


def test_an_underscored_override_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request("POST", extra="X_HTTP_Method_Override: DELETE\r\n"))
    assert client.received().startswith(b"HTTP/1.1 400 ")
    assert gateway.target.connections == []


def test_a_method_override_form_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(monkeypatch=monkeypatch)
    client = gateway.connect()
    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    client.send(client.request("POST", body=b"name=a&_method=DELETE", extra=form))
    assert client.received().startswith(b"HTTP/1.1 400 ")
    assert gateway.target.connections == []


def test_an_idle_connection_is_closed_and_its_session_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = HookLog()
    gateway = Gateway([("log", log)], http={"idle_timeout": 30}, monkeypatch=monkeypatch)
    client = gateway.connect()
    client.send(client.request())
    gateway.target.respond(ok())
    gateway.clock.advance(29)
    assert not client.transport.disconnecting
    client.send(client.request())  # a request in time starts the wait again
    gateway.target.respond(ok())
    gateway.clock.advance(29)
    assert not client.transport.disconnecting
    gateway.clock.advance(1)
    assert client.transport.disconnecting
    assert log.events[-1] == ("closed", "idle for 30 s (http.idle_timeout)")
