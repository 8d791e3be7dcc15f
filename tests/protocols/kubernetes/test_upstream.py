"""What reaches the cluster of a client's request headers, and how its response is read (the
strict reader of :mod:`hoopgw.http1`, fed in every split)."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_kubernetes.upstream import UpstreamLink, text_only, upstream_headers
from twisted.internet.testing import StringTransport

from hoopgw.http1 import Head

HEADERS = [
    (b"Authorization", b"Bearer hgw_caller"),
    (b"Impersonate-User", b"admin"),
    (b"Accept", b"application/vnd.kubernetes.protobuf,application/json"),
    (b"User-Agent", b"kubectl/v1.32"),
    (b"Cookie", b"a=b"),
    (b"Accept-Encoding", b"gzip"),
    (b"Content-Type", b"application/json"),
]


def test_the_callers_credential_is_replaced_and_only_listed_headers_pass() -> None:
    passed = upstream_headers(HEADERS, host="10.0.0.1:6443", bearer="cluster")
    assert passed == [
        (b"host", b"10.0.0.1:6443"),
        (b"Accept", b"application/vnd.kubernetes.protobuf,application/json"),
        (b"User-Agent", b"kubectl/v1.32"),
        (b"Content-Type", b"application/json"),
        (b"authorization", b"Bearer cluster"),
    ]


def test_without_a_token_no_authorization_is_sent() -> None:
    passed = upstream_headers(HEADERS, host="h:1", bearer=None)
    assert not [n for n, _ in passed if n.lower() == b"authorization"]


def test_masked_responses_are_asked_for_as_text() -> None:
    passed = dict(upstream_headers(HEADERS, host="h:1", bearer="c", masked=True))
    assert passed[b"Accept"] == b"application/json"
    assert text_only(b"application/vnd.kubernetes.protobuf") == b"application/json"
    assert text_only(b"application/json;as=Table;v=v1;g=meta.k8s.io, application/json") == (
        b"application/json;as=Table;v=v1;g=meta.k8s.io, application/json"
    )


class _Response:
    """What an :class:`UpstreamLink` reports."""

    def __init__(self) -> None:
        self.heads: list[Head] = []
        self.body = b""
        self.ends: list[str | None] = []

    def link(self, method: str = "GET", body: bytes = b"") -> tuple[UpstreamLink, Any]:
        fields = [(b"host", b"h:1")] + ([(b"content-length", b"%d" % len(body))] if body else [])
        request = Head(version="HTTP/1.1", method=method, target=b"/api?x=1", fields=tuple(fields))
        link = UpstreamLink(
            request, body, on_response=self.heads.append, on_data=self.data, on_end=self.ends.append
        )
        transport = StringTransport()
        link.makeConnection(transport)
        return link, transport

    def data(self, data: bytes) -> None:
        self.body += data


def _feed(link: UpstreamLink, data: bytes, split: int) -> None:
    size = split or len(data)
    for index in range(0, len(data), size):
        link.dataReceived(data[index : index + size])


def test_the_request_is_written_as_given() -> None:
    _, transport = _Response().link("POST", b"{}")
    assert (
        transport.value() == b"POST /api?x=1 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize("split", [0, 1, 7])
def test_a_chunked_response_after_an_interim_one(split: int) -> None:
    seen = _Response()
    link, transport = seen.link()
    _feed(
        link,
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3\r\n{"a\r\n4\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n',
        split,
    )
    [head] = seen.heads
    assert head.status == 200 and head.get(b"content-type") == [b"application/json"]
    assert seen.body == b'{"a": 1}' and seen.ends == [None]
    assert transport.disconnecting


@pytest.mark.parametrize("split", [0, 1])
def test_a_body_ended_by_the_close(split: int) -> None:
    seen = _Response()
    link, _ = seen.link()
    _feed(link, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nline\n", split)
    assert seen.ends == []
    link.connectionLost(None)
    assert seen.body == b"line\n" and seen.ends == [None]


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ],
    ids=["two-CL", "CL-and-TE", "obs-fold", "bad-chunk-size", "unasked-101"],
)
def test_a_response_two_parsers_could_read_differently_is_not_relayed(response: bytes) -> None:
    seen = _Response()
    link, transport = seen.link()
    link.dataReceived(response)
    link.connectionLost(None)
    assert seen.body == b""
    [why] = seen.ends
    assert why is not None and ("malformed" in why or "switched protocols" in why)
    assert transport.disconnecting


def test_a_response_cut_short_is_not_complete() -> None:
    seen = _Response()
    link, _ = seen.link()
    link.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
    link.connectionLost(None)
    assert seen.ends == ["the API server closed the connection"]
