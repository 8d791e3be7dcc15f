"""Transport helpers shared by the proxying protocols (PostgreSQL, MySQL): the Twisted edge that
every client session needs around its sans-io state machine.

- :func:`send_now` writes a proxied message to the socket in the same reactor turn;
- :func:`set_no_delay` turns Nagle's algorithm off on both legs;
- :class:`ReadGate` pauses reading a transport for any of several reasons at once (a pending
  decision, the login, the other side's full write buffer) -- flow control as Twisted's
  ``portforward`` does it, by registering each side as the other's producer;
- :func:`connect` opens an upstream connection for a protocol instance already built;
- :class:`UpstreamConnector` is what opens a connection's upstream TCP connections: directly
  (:class:`DirectConnector`) or through a network agent (``via``, see :mod:`hoopgw.agent`);
- :func:`client_tls_options` builds the upstream TLS options for an ``sslmode``;
- :func:`is_loopback` tells whether a peer address is a loopback one.

These run per message on the hot path: none of them allocates more than the write itself.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from twisted.internet import defer, protocol, ssl
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_PAUSE_DECISION",
    "READ_PAUSE_FLOW",
    "READ_PAUSE_LOGIN",
    "DirectConnector",
    "QuietFactory",
    "ReadGate",
    "UpstreamConnector",
    "client_tls_options",
    "connect",
    "is_loopback",
    "send_now",
    "set_no_delay",
]

READ_PAUSE_FLOW = "flow"
"""The other side's write buffer is full (the reason :class:`ReadGate` sets as a producer)."""
READ_PAUSE_DECISION = "decision"
"""A command or login step waits for the plugin chain's verdict."""
READ_PAUSE_LOGIN = "login"
"""The client is authenticated and the gateway logs in upstream."""

CONNECT_TIMEOUT = 10
"""Seconds an upstream TCP connection attempt may take."""


def send_now(transport: Any, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``transport``, handing them to the socket at once when it can.

    Twisted's ``write`` only buffers and sends on the next reactor turn, which costs a poll
    round (and two epoll updates) per message -- for a proxy, twice per query. On a plain TCP
    transport with nothing queued the bytes go to the socket directly; whatever it does not
    take goes through ``write`` as usual, so ordering and flow control are unchanged. A TLS
    transport, or one with queued bytes, always goes through ``write``.
    """
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    sock = getattr(transport, "socket", None)
    if (
        sock is not None
        and not getattr(transport, "TLS", True)
        and not getattr(transport, "dataBuffer", True)
        and not getattr(transport, "_tempDataBuffer", True)
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # would block, or an error Twisted's own write path sees and reports
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def set_no_delay(transport: Any) -> None:
    """Send small messages at once: a proxy that waits for Nagle's algorithm adds a
    delayed-ACK round to every query. Transports without the option are left alone."""
    set_option = getattr(transport, "setTcpNoDelay", None)
    if set_option is not None:
        set_option(True)


@implementer(IPushProducer)
class ReadGate:
    """Pauses reading from a transport for any of several reasons; resumes when none is left.

    Registered as the producer of the *other* side's transport, it pauses with
    :data:`READ_PAUSE_FLOW` while that side's write buffer is full (Twisted's
    ``portforward``); sessions add their own reasons (:data:`READ_PAUSE_DECISION`, ...).
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        """Stop reading for ``reason`` (pausing the transport if it was reading)."""
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        """Drop ``reason``; read again once no reason is left."""
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self._transport.resumeProducing()

    # IPushProducer, for the other side's transport (write buffer full / drained).
    def pauseProducing(self) -> None:
        """The other side's write buffer is full."""
        self.pause(READ_PAUSE_FLOW)

    def resumeProducing(self) -> None:
        """The other side's write buffer drained."""
        self.resume(READ_PAUSE_FLOW)

    def stopProducing(self) -> None:
        """The other side is gone: close this one."""
        self._transport.loseConnection()


class QuietFactory(protocol.Factory):
    """Hands out one prepared protocol; quiet, so each upstream connection logs no factory
    start and stop lines."""

    noisy = False

    def __init__(self, proto: protocol.Protocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        """The prepared protocol (a factory of one connection)."""
        return self._proto


def connect(
    reactor: Any,
    host: str,
    port: int,
    proto: protocol.Protocol,
    *,
    timeout: float = CONNECT_TIMEOUT,
) -> defer.Deferred[Any]:
    """Connect ``proto`` to ``host:port`` (a name or an address; Happy Eyeballs when a name
    has several), giving up after ``timeout`` seconds.

    :return: a Deferred firing with ``proto`` once connected, or failing with the reason.
    """
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    connecting: defer.Deferred[Any] = endpoint.connect(QuietFactory(proto))
    return connecting


class UpstreamConnector(Protocol):
    """Opens the upstream TCP connections of one configured connection: the one seam every
    protocol goes through (:meth:`hoopgw.protocol.ConnectionRuntime.connect_upstream`), so a
    connection with ``via`` reaches its target through a network agent with no change to the
    protocol."""

    def connect(
        self, host: str, port: int, proto: protocol.Protocol, *, timeout: float = CONNECT_TIMEOUT
    ) -> defer.Deferred[Any]:
        """Connect ``proto`` to ``host:port``.

        :return: a Deferred firing with ``proto`` once connected, or failing with the reason
            (:class:`~hoopgw.errors.UpstreamUnavailable` when the reason is safe to show).
        """


class DirectConnector:
    """Connects straight from the gateway (:func:`connect`)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connect(
        self, host: str, port: int, proto: protocol.Protocol, *, timeout: float = CONNECT_TIMEOUT
    ) -> defer.Deferred[Any]:
        """See :meth:`UpstreamConnector.connect`."""
        return connect(self._reactor, host, port, proto, timeout=timeout)


def client_tls_options(sslmode: str, host: str, ca_file: str | None) -> Any:
    """TLS options for the upstream side. ``verify-full`` checks the chain against ``ca_file``
    and the certificate against ``host``; ``require``/``prefer`` encrypt without
    authenticating the server (as libpq does), TLS 1.2 at least."""
    if sslmode == "verify-full":
        assert ca_file is not None
        with open(ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
        return ssl.optionsForClientTLS(host, trustRoot=trust)
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``); a name is not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
