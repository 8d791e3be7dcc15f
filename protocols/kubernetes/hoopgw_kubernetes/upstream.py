"""The gateway's side towards the cluster: verified TLS, the cluster's credential, HTTP/1.1.

Each allowed request opens its own TLS connection to the API server (no pooling: a request
held for review must not hold a shared connection), verified against the cluster's CA and
host name (``[connections.upstream_tls] sslmode = "verify-full"``, required by
:meth:`~hoopgw_kubernetes.settings.KubernetesSettings.load`). The caller's ``Authorization`` never
gets here: the request carries the connection's bearer token, or its client certificate
authenticates the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
from twisted.internet import defer, protocol, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory

if TYPE_CHECKING:
    from hoopgw.connection import ConnectionConfig
    from hoopgw.protocol import ConnectionRuntime

__all__ = ["UpstreamLink", "client_tls", "upstream_headers"]

CONNECT_TIMEOUT = 10.0

# Request headers passed on to the API server; all others (Authorization, Impersonate-*,
# Cookie, proxy and hop-by-hop headers, Accept-Encoding) stay at the gateway.
PASSED_REQUEST_HEADERS = frozenset(
    {
        b"accept",
        b"content-type",
        b"user-agent",
        b"kubectl-command",
        b"kubectl-session",
        b"x-kubernetes-pf-requestid",
        b"audit-id",
    }
)


def client_tls(config: ConnectionConfig, client_certificate: Any = None) -> Any:
    """TLS options towards the cluster: its CA, its host name, HTTP/1.1 by ALPN, and the
    gateway's client certificate when the connection has one."""
    tls = config.upstream_tls
    assert tls.ca_file is not None and tls.server_name is not None
    with open(tls.ca_file, "rb") as f:
        trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(
        tls.server_name,
        trustRoot=trust,
        clientCertificate=client_certificate,
        acceptableProtocols=[b"http/1.1"],
    )


def text_only(accept: bytes) -> bytes:
    """``accept`` without the binary (protobuf) media types, which no hook could read; the
    API server then answers JSON, as it does for ``application/json``."""
    kept = [t for t in accept.split(b",") if t.strip() and b"protobuf" not in t.lower()]
    return b",".join(kept) or b"application/json"


def upstream_headers(
    headers: list[tuple[bytes, bytes]], *, host: str, bearer: str | None, masked: bool = False
) -> list[tuple[bytes, bytes]]:
    """The headers the API server gets for a client request's ``headers``.

    :param masked: output hooks will read the response: ask for no binary media type.
    """
    passed = [(b"host", host.encode("ascii"))]
    for name, value in headers:
        if name.lower() in PASSED_REQUEST_HEADERS:
            masked_accept = masked and name.lower() == b"accept"
            passed.append((name, text_only(value) if masked_accept else value))
    if bearer is not None:
        passed.append((b"authorization", b"Bearer " + bearer.encode("utf-8")))
    return passed


def connect(runtime: ConnectionRuntime, tls: Any, proto: Any) -> defer.Deferred[Any]:
    """Connect ``proto`` to the cluster over ``tls``, through the connection's upstream
    connector (directly, or through the network agent its ``via`` names)."""
    factory: Any = protocol.Factory.forProtocol(lambda: proto)
    factory.noisy = False
    wrapper = TLSMemoryBIOFactory(tls, True, factory).buildProtocol(None)
    config = runtime.config
    d: defer.Deferred[Any] = runtime.connect_upstream(
        config.target_host, config.target_port, wrapper, timeout=CONNECT_TIMEOUT
    )
    return d.addCallback(lambda _: proto)


class UpstreamLink(protocol.Protocol):
    """One HTTP/1.1 request to the API server and its streamed response."""

    def __init__(
        self,
        request: h11.Request,
        body: bytes,
        *,
        on_response: Callable[[h11.Response], None],
        on_data: Callable[[bytes], None],
        on_end: Callable[[str | None], None],
        max_event: int,
    ) -> None:
        """
        :param on_response: the status line and headers.
        :param on_data: each piece of the body.
        :param on_end: once: None when the response is complete, else why it is not.
        """
        self._request = request
        self._body = body
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_event)
        self._on_response = on_response
        self._on_data = on_data
        self._on_end: Callable[[str | None], None] | None = on_end
        self.transport: Any = None

    def connectionMade(self) -> None:
        out = self._h11.send(self._request) or b""
        if self._body:
            out += self._h11.send(h11.Data(data=self._body)) or b""
        out += self._h11.send(h11.EndOfMessage()) or b""
        self.transport.write(out)

    def dataReceived(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        while self._on_end is not None:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._finish(f"the API server's response is malformed ({exc})")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self._on_response(event)
            elif isinstance(event, h11.Data):
                self._on_data(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._finish(None)
            elif isinstance(event, h11.ConnectionClosed):
                self._finish("the API server closed the connection")

    def _finish(self, why: str | None) -> None:
        done, self._on_end = self._on_end, None
        if self.transport is not None:
            self.transport.loseConnection()
        if done is not None:
            done(why)

    def abort(self) -> None:
        """Give up on the response (the client went away)."""
        self._on_end = None
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._h11.receive_data(b"")
        self._pump()
        self._finish("the API server closed the connection")
