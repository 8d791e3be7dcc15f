"""Tests for hoopgw.identity.fetch: what is refused before any I/O, and the bounded body reader.

Real HTTPS fetches (certificate verification against a test CA) are exercised through the
gateway in tests/integration/test_identity_oidc.py."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from hoopgw.identity.fetch import MAX_DOCUMENT_SIZE, JsonFetcher, _BoundedBody


def _result(d):
    results = []
    d.addBoth(results.append)
    return results[0] if results else None


@pytest.mark.parametrize("url", ["http://issuer.test/jwks", "file:///etc/passwd", "jwks"])
def test_only_https_is_fetched(url):
    reactor = MemoryReactorClock()
    failure = _result(JsonFetcher(reactor)(url))
    assert failure.check(ValueError)
    assert reactor.tcpClients == [] and reactor.sslClients == []


def test_a_request_times_out():
    reactor = MemoryReactorClock()
    answers = []
    JsonFetcher(reactor, timeout=5)("https://issuer.test/jwks").addBoth(answers.append)
    reactor.advance(4.9)
    assert answers == []
    reactor.advance(0.1)
    assert answers[0].check(defer.TimeoutError)


def _body(limit, chunks, end=None):
    end = end or ResponseDone()
    finished = defer.Deferred()
    body = _BoundedBody(finished, limit)
    body.makeConnection(StringTransport())
    for chunk in chunks:
        body.dataReceived(chunk)
    body.connectionLost(Failure(end))
    return _result(finished)


def test_the_body_is_collected():
    assert _body(100, [b'{"keys"', b": []}"]) == b'{"keys": []}'


def test_a_body_over_the_limit_is_refused():
    assert _body(10, [b"x" * 6, b"y" * 6]).check(ValueError)
    assert MAX_DOCUMENT_SIZE == 1024 * 1024


def test_a_cut_body_is_refused():
    assert _body(100, [b"{"], end=ConnectionError("reset")).check(ConnectionError)
