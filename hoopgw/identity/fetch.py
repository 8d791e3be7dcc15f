"""Fetching a small JSON document over HTTPS without blocking the reactor.

Used for OIDC discovery documents and JWKS, and (with :meth:`JsonFetcher.post_form`) the
console's exchange of an authorization code at a token endpoint. Only ``https://`` URLs, the
server's certificate verified against a CA bundle (the system's, or a configured PEM file), no
redirects, a timeout and a size limit: an issuer's endpoints are trusted for keys, so fetching
them must be as strict as the rest of token checking.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import defer, protocol, ssl
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers

__all__ = ["JsonFetcher", "trust_root"]

MAX_DOCUMENT_SIZE = 1024 * 1024
"""Largest document accepted, in bytes; a JWKS is a few kilobytes."""


def trust_root(ca_file: str | None) -> Any:
    """The trust root for ``ca_file`` (a PEM bundle of one or more CA certificates), or the
    platform's when it is None."""
    if ca_file is None:
        return ssl.platformTrust()
    with open(ca_file, "rb") as f:
        certificates = x509.load_pem_x509_certificates(f.read())
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )


class _BoundedBody(protocol.Protocol):
    def __init__(self, finished: defer.Deferred[bytes], limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if not self._finished.called:
                self._finished.errback(ValueError(f"the document is larger than {self._limit} B"))
            transport: Any = self.transport
            transport.stopProducing()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._finished.called:
            return
        if reason.check(ResponseDone):
            self._finished.callback(b"".join(self._chunks))
        else:
            self._finished.errback(reason)


class JsonFetcher:
    """GETs JSON documents over verified HTTPS.

    :param reactor: the reactor the requests run on.
    :param ca_file: PEM bundle of the CAs to trust, or None for the system's.
    :param timeout: seconds a whole request (connect, headers, body) may take.
    """

    def __init__(self, reactor: Any, *, ca_file: str | None = None, timeout: float = 10.0) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust_root(ca_file)),
            connectTimeout=timeout,
        )

    def __call__(self, url: str) -> defer.Deferred[Any]:
        """Fetch ``url`` and parse it as JSON.

        :return: a Deferred firing with the parsed document; it fails for a non-https URL, a
            certificate that does not verify, a status other than 200, a body over
            :data:`MAX_DOCUMENT_SIZE`, invalid JSON, or the timeout.
        """
        return self._request(b"GET", url, {}, None)

    def post_form(
        self, url: str, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> defer.Deferred[Any]:
        """POST ``fields`` as ``application/x-www-form-urlencoded`` to ``url`` and parse the
        answer as JSON; fails as :meth:`__call__` does."""
        body = urlencode(fields).encode("ascii")
        sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self._request(b"POST", url, sent, body)

    def _request(
        self, method: bytes, url: str, headers: dict[str, str], body: bytes | None
    ) -> defer.Deferred[Any]:
        if not url.startswith("https://"):
            return defer.fail(ValueError(f"refusing to fetch {url!r}: not an https URL"))
        sent = Headers({b"Accept": [b"application/json"]})
        for name, value in headers.items():
            sent.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
        producer: Any = None if body is None else FileBodyProducer(io.BytesIO(body))
        d = self._agent.request(method, url.encode("ascii"), sent, producer)
        d.addCallback(self._response, url)
        # Answer at the deadline even if cancelling the request does not (a slow name lookup).
        answer: defer.Deferred[Any] = defer.Deferred()

        def expired() -> None:
            if not answer.called:
                answer.errback(defer.TimeoutError(f"no answer from {url} in {self._timeout} s"))
            d.cancel()

        timer = self._reactor.callLater(self._timeout, expired)

        def settled(result: Any) -> None:
            if timer.active():
                timer.cancel()
            # A Failure errbacks. After the deadline answered, how the cancelled request
            # ended is dropped.
            if not answer.called:
                answer.callback(result)

        d.addBoth(settled)
        return answer

    def _response(self, response: Any, url: str) -> defer.Deferred[Any]:
        finished: defer.Deferred[bytes] = defer.Deferred()
        if response.code != 200:
            # Read and drop the body so the connection is released.
            finished.addErrback(lambda _: None)
            response.deliverBody(_BoundedBody(finished, MAX_DOCUMENT_SIZE))
            return defer.fail(ValueError(f"{url} answered HTTP {response.code}"))
        response.deliverBody(_BoundedBody(finished, MAX_DOCUMENT_SIZE))
        return finished.addCallback(json.loads)
