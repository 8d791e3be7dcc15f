"""What reaches the cluster of a client's request headers."""

from __future__ import annotations

from hoopgw_kubernetes.upstream import text_only, upstream_headers

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
