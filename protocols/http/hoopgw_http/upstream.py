"""One request on its way to the target and its response on its way back: the Twisted edge
around :mod:`hoopgw.http1`.

Each allowed request gets a connection of its own to the target (``Connection: close``), so
no response can be paired with the wrong request. Bodies stream both ways with bounded
memory: each side's transport is the other's producer (Twisted's ``portforward`` manner), so
the gateway reads no faster than the other side takes. Only inspected bodies (see
:class:`~hoopgw_http.settings.HttpSettings`) are held whole, up to ``max_inspected_body``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.python.failure import Failure

from hoopgw.connection import ConnectionConfig
from hoopgw.http1 import BadMessage, Data, End, Event, Head, MessageReader
from hoopgw.transport import CONNECT_TIMEOUT, QuietFactory, ReadGate, set_no_delay
from hoopgw_http.settings import HttpSettings

__all__ = ["UpstreamRequest", "client_tls_options", "connect_upstream", "upstream_tls_options"]


def client_tls_options(cert_file: str, key_file: str) -> Any:
    """The TLS server options towards clients: the gateway's ``tls_cert`` and ``tls_key``, TLS
    1.2 or newer, ALPN ``http/1.1`` (the only HTTP the gateway speaks)."""
    certificate = ssl.PrivateCertificate.loadPEM(
        Path(cert_file).read_bytes() + b"\n" + Path(key_file).read_bytes()
    )
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=[b"http/1.1"],
    )


def upstream_tls_options(connection: ConnectionConfig, settings: HttpSettings) -> Any:
    """The TLS client options towards an HTTPS target: its certificate verified against
    ``upstream_tls.ca_file`` for ``upstream_tls.server_name``, and the gateway's client
    certificate when ``client_cert`` is set."""
    tls = connection.upstream_tls
    assert tls.ca_file is not None and tls.server_name is not None
    pem = Path(tls.ca_file).read_bytes()
    marker = b"-----END CERTIFICATE-----"
    blocks = [block + marker for block in pem.split(marker) if b"-----BEGIN" in block]
    trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
    client = None
    if settings.options.client_cert and settings.options.client_key:
        client = ssl.PrivateCertificate.loadPEM(
            Path(settings.options.client_cert).read_bytes()
            + b"\n"
            + Path(settings.options.client_key).read_bytes()
        )
    return ssl.optionsForClientTLS(tls.server_name, trustRoot=trust, clientCertificate=client)


class UpstreamRequest(protocol.Protocol):
    """The target's side of one exchange. It sends what it is given and reports the response's
    events to ``on_event``; ``on_lost`` is told when the connection ends (with the reason, or
    None after a complete response)."""

    transport: Any

    def __init__(
        self,
        method: str,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str | None], None],
    ) -> None:
        self._reader = MessageReader(response=True)
        self._reader.expect(method)
        self._on_event = on_event
        self._on_lost = on_lost
        self.allow_switch = False
        """Whether a ``101`` answer switches the connection (a WebSocket upgrade was sent)."""
        self._complete = False
        self.switched = False
        """Whether the target switched protocols (``101``): its bytes now come as
        :class:`~hoopgw.http1.Data` events, undecoded, until it closes."""
        self.gate: ReadGate | None = None
        """Pauses reading the target (the client's write buffer is full)."""

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self.gate = ReadGate(self.transport)

    def send(self, data: bytes) -> None:
        """Write request bytes to the target."""
        if self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self._on_event(Data(data=data))
            return
        if self._complete:
            return
        try:
            events = self._reader.feed(data)
            while events:
                for event in events:
                    if isinstance(event, End) and self._final():
                        self._complete = True
                    self._on_event(event)
                    if isinstance(event, Head) and event.status == 101 and self.allow_switch:
                        self.switched = True
                        rest = self._reader.take_rest()
                        if rest:
                            self._on_event(Data(data=rest))
                        return
                events = [] if self._complete else self._reader.feed(b"")
        except BadMessage as exc:
            self._complete = True
            self._on_lost(f"the target sent a malformed response: {exc}")
            self.transport.abortConnection()

    def _final(self) -> bool:
        head = self._reader.head
        return head is not None and head.status >= 200

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._complete or self.switched:
            self._on_lost(None)
            return
        try:
            events = self._reader.eof()
        except BadMessage:
            self._complete = True
            self._on_lost("the target closed the connection before its response was complete")
            return
        self._complete = bool(events)
        for event in events:
            self._on_event(event)
        self._on_lost(None if self._complete else "the target closed the connection")

    def abort(self) -> None:
        """Drop the connection at once (the exchange is over for the gateway)."""
        self._complete = True
        if self.transport is not None:
            self.transport.abortConnection()


def connect_upstream(
    reactor: Any, connection: ConnectionConfig, tls_options: Any, upstream: UpstreamRequest
) -> defer.Deferred[Any]:
    """Connect ``upstream`` to the target, over TLS when ``tls_options`` is given."""
    endpoint: Any = HostnameEndpoint(
        reactor, connection.target_host, connection.target_port, timeout=CONNECT_TIMEOUT
    )
    if tls_options is not None:
        endpoint = wrapClientTLS(tls_options, endpoint)
    connecting: defer.Deferred[Any] = endpoint.connect(QuietFactory(upstream))
    return connecting
