"""The agent's side: dialling with back-off, the hello after TLS, the allow-list before any
connection, and dropping a silent gateway. No I/O, no real time."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.agent import client as client_module
from hoopgw.agent.backoff import Backoff
from hoopgw.agent.client import AgentClient, GatewayLink
from hoopgw.agent.config import AgentConfig, parse_agent_config
from hoopgw.agent.mux import Multiplexer
from hoopgw.agent.wire import StreamRefused, encode_hello, encode_reply

TOKEN = "hga_0123456789ab_" + "T" * 43
PIN = hashlib.sha256(b"the gateway's certificate").digest()


class Certificate:
    def __init__(self, der: bytes) -> None:
        self._der = der

    def to_cryptography(self) -> Any:
        der = self._der

        class _Cert:
            def public_bytes(self, encoding: Any) -> bytes:
                return der

        return _Cert()


class TlsTransport(StringTransport):
    """A ``StringTransport`` that presents a peer certificate, as TLS does."""

    def __init__(self, der: bytes = b"the gateway's certificate") -> None:
        super().__init__()
        self.der = der

    def getPeerCertificate(self) -> Certificate:
        return Certificate(self.der)


def config(tmp_path: Path, allow: str = '["db.internal:5432"]', **extra: str) -> AgentConfig:
    (tmp_path / "token").write_text(TOKEN)
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return parse_agent_config(
        "[agent]\n"
        'gateway = "gw.example.com:8444"\n'
        'token = "file:token"\n'
        f'pin = "sha256:{PIN.hex()}"\n'
        f"allow = {allow}\n" + lines,
        base_dir=tmp_path,
    )


class Harness:
    def __init__(self, tmp_path: Path, **extra: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.dials: list[Any] = []
        self.targets: list[tuple[str, int, Protocol, defer.Deferred[Any]]] = []
        self.client = AgentClient(
            config(tmp_path, **extra),
            self.reactor,
            backoff=Backoff(initial=0.5, maximum=8.0, rng=random.Random(5)),
            dial=self._dial,
            connect_target=self._connect_target,
        )

    def _dial(self, factory: Any) -> defer.Deferred[Any]:
        connecting: defer.Deferred[Any] = defer.Deferred()
        self.dials.append((factory, connecting))
        return connecting

    def _connect_target(self, host: str, port: int, proto: Protocol) -> defer.Deferred[Any]:
        connecting: defer.Deferred[Any] = defer.Deferred()
        self.targets.append((host, port, proto, connecting))
        return connecting

    def accept(
        self, transport: StringTransport | None = None
    ) -> tuple[GatewayLink, StringTransport]:
        """The latest dial reaches the gateway and TLS completes."""
        factory, connecting = self.dials[-1]
        link: GatewayLink = factory.buildProtocol(None)
        transport = transport or TlsTransport()
        link.makeConnection(transport)
        connecting.callback(link)
        link.handshakeCompleted()
        return link, transport

    def welcome(self) -> tuple[GatewayLink, StringTransport, Multiplexer]:
        link, transport = self.accept()
        assert transport.value() == encode_hello(TOKEN)
        transport.clear()
        out: list[bytes] = []
        gateway = Multiplexer(out.append, client_side=True)
        link.dataReceived(encode_reply(name="edge"))

        def pump() -> None:
            while out or transport.value():
                data, out[:] = b"".join(out), []
                if data:
                    link.dataReceived(data)
                data = transport.value()
                transport.clear()
                if data:
                    gateway.received(data)

        self.to_gateway = pump
        pump()
        return link, transport, gateway


def test_failed_dials_back_off_with_growing_jittered_delays(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    delays = []
    for _ in range(5):
        _, connecting = harness.dials[-1]
        connecting.errback(ConnectionRefusedError())
        [retry] = [
            c for c in harness.reactor.getDelayedCalls() if c.func == harness.client._attempt
        ]
        delays.append(retry.getTime() - harness.reactor.seconds())
        harness.reactor.advance(delays[-1])
    assert len(harness.dials) == 6
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays


def test_the_token_is_sent_only_after_tls_and_a_welcome_resets_the_back_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    harness.dials[-1][1].errback(ConnectionRefusedError())
    harness.client.backoff.failures = 4
    harness.reactor.advance(60)
    factory, _connecting = harness.dials[-1]
    link: GatewayLink = factory.buildProtocol(None)
    transport = TlsTransport()
    link.makeConnection(transport)
    assert transport.value() == b""  # nothing before the handshake
    link.handshakeCompleted()
    assert transport.value() == encode_hello(TOKEN)
    transport.clear()
    link.dataReceived(encode_reply(name="edge"))
    assert harness.client.link is link
    assert harness.client.backoff.failures == 0


def test_a_certificate_off_the_pin_gets_no_token(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    _link, transport = harness.accept(TlsTransport(b"a man in the middle"))
    assert transport.value() == b""
    assert transport.disconnecting


def test_a_refusal_from_the_gateway_keeps_backing_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    link, transport = harness.accept()
    failures_before = harness.client.backoff.failures
    link.dataReceived(encode_reply(error="the token of agent 'edge' has been revoked"))
    assert transport.disconnecting
    link.connectionLost()
    assert harness.client.link is None
    assert harness.client.backoff.failures == failures_before + 1


def _open(gateway: Multiplexer, host: str, port: int) -> tuple[list[Any], list[Any]]:
    opened: list[Any] = []
    failed: list[Any] = []
    gateway.open(host, port).addCallbacks(opened.append, failed.append)
    return opened, failed


def test_a_target_off_the_allow_list_is_refused_before_any_connection(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    _, _, gateway = harness.welcome()
    for host, port in (("db.internal", 22), ("10.0.0.1", 5432), ("evil.example", 5432)):
        opened, failed = _open(gateway, host, port)
        harness.to_gateway()
        assert opened == []
        [failure] = failed
        assert failure.check(StreamRefused)
        assert failure.getErrorMessage() == f"{host}:{port} is not on the agent's allow-list"
    assert harness.targets == []


def test_an_allowed_target_is_connected_and_answered(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    _, _, gateway = harness.welcome()
    opened, failed = _open(gateway, "DB.internal", 5432)
    harness.to_gateway()
    [(host, port, pipe, connecting)] = harness.targets
    assert (host, port) == ("db.internal", 5432)
    assert opened == []  # not before the target accepted
    pipe.makeConnection(StringTransport())
    connecting.callback(pipe)
    harness.to_gateway()
    assert len(opened) == 1 and failed == []


def test_an_unreachable_target_is_answered_with_the_reason(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    _, _, gateway = harness.welcome()
    _opened, failed = _open(gateway, "db.internal", 5432)
    harness.to_gateway()
    [(_, _, _, connecting)] = harness.targets
    connecting.errback(ConnectionRefusedError())
    harness.to_gateway()
    [failure] = failed
    assert failure.getErrorMessage().startswith(
        "cannot connect to db.internal:5432: Connection was refused"
    )


def test_a_silent_gateway_is_dropped_and_dialled_again(tmp_path: Path) -> None:
    harness = Harness(tmp_path, silence_limit="6")
    harness.client.start()
    link, transport, _ = harness.welcome()
    harness.reactor.advance(2)
    assert not transport.disconnecting
    harness.reactor.advance(6)
    assert transport.disconnecting
    link.connectionLost()
    assert harness.client.link is None
    retry = [c for c in harness.reactor.getDelayedCalls() if c.func == harness.client._attempt]
    assert len(retry) == 1


def test_stop_stops_dialling(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    harness.dials[-1][1].errback(ConnectionRefusedError())
    harness.client.stop()
    harness.reactor.advance(60)
    assert len(harness.dials) == 1


@pytest.mark.parametrize("chunk", [1, 5])
def test_the_welcome_may_arrive_in_pieces_with_http2_behind_it(tmp_path: Path, chunk: int) -> None:
    harness = Harness(tmp_path)
    harness.client.start()
    link, transport = harness.accept()
    transport.clear()
    out: list[bytes] = []
    gateway = Multiplexer(out.append, client_side=True)
    data = encode_reply(name="edge") + b"".join(out)
    for i in range(0, len(data), chunk):
        link.dataReceived(data[i : i + chunk])
    assert harness.client.link is link and link.mux is not None
    while value := transport.value():
        transport.clear()
        gateway.received(value)


def test_streams_reset_at_once_do_not_pile_up_target_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hostile gateway asks for a stream and resets it at once, again and again: HTTP/2's
    # stream limit frees each at once, but the agent's connection attempts would pile up.
    monkeypatch.setattr(client_module, "MAX_CONNECTING", 8)
    harness = Harness(tmp_path)
    harness.client.start()
    _, _, gateway = harness.welcome()
    for _ in range(20):
        gateway.open("db.internal", 5432).addErrback(lambda _: None).cancel()
        harness.to_gateway()
    assert len(harness.targets) == 8
    for _, _, _, connecting in harness.targets:
        connecting.errback(ConnectionRefusedError())
    _open(gateway, "db.internal", 5432)
    harness.to_gateway()
    assert len(harness.targets) == 9  # the attempts are over: a new stream is served


def test_the_target_connected_is_the_host_judged(tmp_path: Path) -> None:
    # "10.0.0.5." passes the allow-list as 10.0.0.5, but a resolver takes it for a name and
    # asks DNS: the agent must connect to the address it judged.
    harness = Harness(tmp_path, allow='["10.0.0.5:5432", "db.internal:5432"]')
    harness.client.start()
    _, _, gateway = harness.welcome()
    for asked in ("10.0.0.5.", "[10.0.0.5]", "DB.Internal."):
        _open(gateway, asked, 5432)
        harness.to_gateway()
    assert [(host, port) for host, port, _, _ in harness.targets] == [
        ("10.0.0.5", 5432),
        ("10.0.0.5", 5432),
        ("db.internal", 5432),
    ]
