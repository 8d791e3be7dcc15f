"""Tests for :mod:`hoopgw.transport`: the transport helpers both proxying protocols share.

No real I/O: a fake socket stands for the kernel, ``StringTransport`` for Twisted's transports,
``MemoryReactorClock`` for the reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import protocol, ssl
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.transport import (
    CONNECT_TIMEOUT,
    READ_PAUSE_DECISION,
    READ_PAUSE_LOGIN,
    QuietFactory,
    ReadGate,
    client_tls_options,
    connect,
    is_loopback,
    send_now,
    set_no_delay,
)


class FakeSocket:
    """Takes at most ``room`` bytes per send, or raises ``error``."""

    def __init__(self, room: int = 1 << 20, error: OSError | None = None) -> None:
        self.room = room
        self.error = error
        self.sent = b""

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        taken = data[: self.room]
        self.sent += taken
        return len(taken)


class PlainTcp(StringTransport):
    """A plain TCP transport as Twisted's ``tcp.Connection`` looks to ``send_now``."""

    TLS = False
    connected = True

    def __init__(self, sock: FakeSocket) -> None:
        super().__init__()
        self.socket = sock
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []


def test_send_now_hands_the_bytes_to_an_idle_socket_at_once() -> None:
    transport = PlainTcp(FakeSocket())
    send_now(transport, [b"ab", b"cd"])
    assert transport.socket.sent == b"abcd"
    assert transport.value() == b""


def test_send_now_writes_what_the_socket_does_not_take() -> None:
    transport = PlainTcp(FakeSocket(room=3))
    send_now(transport, [b"abcdef"])
    assert transport.socket.sent == b"abc"
    assert transport.value() == b"def"


@pytest.mark.parametrize("error", [BlockingIOError(), ConnectionResetError()])
def test_send_now_leaves_a_socket_error_to_twisted(error: OSError) -> None:
    transport = PlainTcp(FakeSocket(error=error))
    send_now(transport, [b"abc"])
    assert transport.value() == b"abc"


@pytest.mark.parametrize(
    "busy",
    [
        {"TLS": True},
        {"dataBuffer": b"queued"},
        {"_tempDataBuffer": [b"queued"]},
        {"connected": False},
        {"disconnecting": True},
    ],
)
def test_send_now_keeps_order_behind_queued_bytes_and_tls(busy: dict[str, Any]) -> None:
    transport = PlainTcp(FakeSocket())
    for name, value in busy.items():
        setattr(transport, name, value)
    send_now(transport, [b"a", b"b"])
    assert transport.socket.sent == b""
    assert transport.value() == b"ab"


def test_send_now_on_a_transport_without_a_socket_writes() -> None:
    transport = StringTransport()
    send_now(transport, [b"x"])
    assert transport.value() == b"x"


def test_set_no_delay_where_the_transport_has_the_option() -> None:
    class Tcp(StringTransport):
        no_delay = False

        def setTcpNoDelay(self, enabled: bool) -> None:
            self.no_delay = enabled

    tcp = Tcp()
    set_no_delay(tcp)
    assert tcp.no_delay
    set_no_delay(StringTransport())  # no such option: nothing to do


def test_read_gate_reads_again_only_when_every_reason_is_gone() -> None:
    transport = StringTransport()
    gate = ReadGate(transport)
    gate.pause(READ_PAUSE_DECISION)
    assert transport.producerState == "paused"
    gate.pauseProducing()  # the other side's buffer is full, too
    gate.pause(READ_PAUSE_DECISION)  # a reason counts once
    gate.resume(READ_PAUSE_DECISION)
    assert transport.producerState == "paused"
    gate.resumeProducing()
    assert transport.producerState == "producing"


def test_read_gate_ignores_a_reason_it_does_not_hold() -> None:
    transport = StringTransport()
    gate = ReadGate(transport)
    gate.resume(READ_PAUSE_LOGIN)
    assert transport.producerState == "producing"


def test_read_gate_closes_its_side_when_the_other_stops() -> None:
    transport = StringTransport()
    ReadGate(transport).stopProducing()
    assert transport.disconnecting


def test_connect_uses_a_quiet_factory_for_the_prepared_protocol() -> None:
    reactor = MemoryReactorClock()
    proto = protocol.Protocol()
    connecting = connect(reactor, "127.0.0.1", 5432, proto)
    [(host, port, wrapping, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 5432, CONNECT_TIMEOUT)
    factory = wrapping._wrappedFactory
    assert isinstance(factory, QuietFactory) and not factory.noisy
    assert factory.buildProtocol(None) is proto
    failures: list[Any] = []
    connecting.addErrback(failures.append)
    assert failures == []  # still connecting


def test_client_tls_options_without_verification_still_encrypt() -> None:
    for sslmode in ("require", "prefer"):
        options = client_tls_options(sslmode, "db.example", None)
        assert isinstance(options, ssl.CertificateOptions)
        assert not options.verify


def test_client_tls_options_verify_full_trusts_the_ca_file(tls_files: Any) -> None:
    options = client_tls_options("verify-full", "localhost", str(tls_files.ca_cert))
    assert not isinstance(options, ssl.CertificateOptions)
    assert options._hostname == "localhost"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("localhost", False),  # a name could resolve anywhere
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
