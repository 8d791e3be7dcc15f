"""The gateway's side towards the cluster: verified TLS, the cluster's credential, HTTP/1.1.

Each allowed request opens its own TLS connection to the API server (no pooling: a request
held for review must not hold a shared connection), verified against the cluster's CA and
host name (``[connections.upstream_tls] sslmode = "verify-full"``, required by
:meth:`~hoopgw_kubernetes.settings.KubernetesSettings.load`). The caller's ``Authorization`` never
gets here: the request carries the connection's bearer token, or its client certificate
authenticates the gateway. The response is read by the gateway's strict HTTP/1.1 reader
(:mod:`hoopgw.http1`), as the client's requests are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory

from hoopgw.http1 import BadMessage, Data, End, Event, Head, MessageReader, serialize_head

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
        request: Head,
        body: bytes,
        *,
        on_response: Callable[[Head], None],
        on_data: Callable[[bytes], None],
        on_end: Callable[[str | None], None],
    ) -> None:
        """
        :param request: the request line and its fields (``Content-Length`` among them when
            there is a ``body``).
        :param on_response: the status line and fields of the final response.
        :param on_data: each piece of the body.
        :param on_end: once: None when the response is complete, else why it is not.
        """
        self._request = request
        self._body = body
        self._reader = MessageReader(response=True)
        self._reader.expect(request.method)
        self._on_response = on_response
        self._on_data = on_data
        self._on_end: Callable[[str | None], None] | None = on_end
        self.transport: Any = None

    def connectionMade(self) -> None:
        request = self._request
        line = b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.target)
        self.transport.write(serialize_head(line, list(request.fields)) + self._body)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self._reader.feed(data)
            # One message per feed: an interim response (100 Continue) comes before the final.
            while events and self._on_end is not None:
                for event in events:
                    self._event(event)
                events = self._reader.feed(b"") if self._on_end is not None else []
        except BadMessage as exc:
            self._finish(f"the API server's response is malformed ({exc})")

    def _event(self, event: Event) -> None:
        if self._on_end is None:
            return
        head = self._reader.head
        if isinstance(event, Head):
            if event.status == 101:
                self._finish("the API server switched protocols unasked")
            elif event.status >= 200:
                self._on_response(event)
        elif isinstance(event, Data):
            self._on_data(event.data)
        elif isinstance(event, End) and head is not None and head.status >= 200:
            self._finish(None)

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
        if self._on_end is not None:
            with contextlib.suppress(BadMessage):  # cut short: reported below
                for event in self._reader.eof():  # the end of a close-delimited body
                    self._event(event)
        self._finish("the API server closed the connection")
