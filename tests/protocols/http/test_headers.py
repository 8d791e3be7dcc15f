"""Header fields on their way through: the caller's credential off, the target's on, hop-by-hop
fields gone, and the target's secret scrubbed from what comes back."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest
from hoopgw_http.headers import (
    CallerTokenError,
    SecretScrubber,
    UpstreamCredential,
    caller_token,
    request_fields,
    response_fields,
)

from hoopgw.secrets import Secret

CALLER = b"Bearer hgw_caller_key"
SECRET = "target-s3cret-token"


def credential(kind: str) -> UpstreamCredential:
    return UpstreamCredential(
        kind=kind, user="svc", secret=Secret(reference="env:T", value=SECRET), header="X-Api-Key"
    )


def test_caller_token() -> None:
    assert caller_token([(b"authorization", CALLER)]) == "hgw_caller_key"
    assert caller_token([(b"authorization", b"bearer  abc")]) == "abc"


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [(b"authorization", b"Basic YTpi")],
        [(b"authorization", b"Bearer")],
        [(b"authorization", b"Bearer a b")],
        [(b"authorization", CALLER), (b"authorization", CALLER)],
        [(b"authorization", b"Bearer \xff")],
    ],
)
def test_caller_token_refused(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(CallerTokenError):
        caller_token(fields)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bearer", (b"authorization", b"Bearer " + SECRET.encode())),
        ("basic", (b"authorization", b"Basic " + base64.b64encode(b"svc:" + SECRET.encode()))),
        ("header", (b"x-api-key", SECRET.encode())),
    ],
)
def test_the_caller_credential_is_replaced_by_the_target_credential(
    kind: str, expected: tuple[bytes, bytes]
) -> None:
    fields = request_fields(
        [
            (b"host", b"gateway:8080"),
            (b"authorization", CALLER),
            (b"x-api-key", b"caller-chosen"),
            (b"accept", b"*/*"),
        ],
        host="api.internal:8443",
        credential=credential(kind),
        identity_encoding=False,
    )
    assert fields[0] == (b"host", b"api.internal:8443")
    assert expected in fields
    assert not any(CALLER in value or b"hgw_caller_key" in value for _, value in fields)
    assert (b"accept", b"*/*") in fields
    assert [name for name, _ in fields].count(expected[0]) == 1


def test_without_a_credential_the_caller_authorization_is_still_dropped() -> None:
    fields = request_fields(
        [(b"authorization", CALLER)],
        host="t",
        credential=UpstreamCredential(kind="none"),
        identity_encoding=False,
    )
    assert fields == [(b"host", b"t")]


def test_hop_by_hop_framing_and_spoofable_fields_are_dropped() -> None:
    fields = request_fields(
        [
            (b"connection", b"keep-alive, X-Secret-Hop"),
            (b"x-secret-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authorization", b"Basic x"),
            (b"te", b"trailers"),
            (b"trailer", b"x"),
            (b"upgrade", b"websocket"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"4"),
            (b"expect", b"100-continue"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"forwarded", b"for=10.0.0.1"),
            (b"x-real-ip", b"10.0.0.1"),
            (b"accept-encoding", b"gzip"),
            (b"x-kept", b"yes"),
        ],
        host="t",
        credential=UpstreamCredential(kind="none"),
        identity_encoding=True,
    )
    assert fields == [(b"host", b"t"), (b"x-kept", b"yes"), (b"accept-encoding", b"identity")]


@pytest.mark.parametrize(
    "name",
    [b"x-forwarded-scheme", b"x_forwarded_anything", b"true-client-ip", b"x_host"],
)
def test_other_proxy_fields_a_target_may_trust_are_dropped(name: bytes) -> None:
    fields = request_fields(
        [(name, b"spoofed")],
        host="t",
        credential=UpstreamCredential(kind="none"),
        identity_encoding=False,
    )
    assert fields == [(b"host", b"t")]


def test_response_fields_lose_hop_by_hop_and_framing() -> None:
    fields = response_fields(
        [
            (b"connection", b"close, x-hop"),
            (b"x-hop", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"3"),
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a=b"),
        ]
    )
    assert fields == [(b"content-type", b"application/json"), (b"set-cookie", b"a=b")]


def test_every_echoable_form_of_the_secret_is_known() -> None:
    forms = credential("basic").secrets()
    basic = base64.b64encode(b"svc:" + SECRET.encode())
    assert SECRET.encode() in forms and basic in forms and b"Basic " + basic in forms
    assert UpstreamCredential(kind="none").secrets() == []


@pytest.mark.parametrize("split", [1, 2, 5, 64])
def test_the_scrubber_catches_a_secret_split_across_pieces(split: int) -> None:
    scrubber = SecretScrubber([SECRET.encode()])
    stream = b'{"echo": "' + SECRET.encode() + b'", "again": "' + SECRET.encode() + b'"}'
    out = (
        b"".join(scrubber.scrub(stream[i : i + split]) for i in range(0, len(stream), split))
        + scrubber.flush()
    )
    assert SECRET.encode() not in out
    assert len(out) == len(stream)  # Content-Length stays true
    assert out.count(b"*" * len(SECRET)) == 2


def test_the_scrubber_passes_other_bytes_unchanged() -> None:
    scrubber = SecretScrubber([SECRET.encode()])
    data = bytes(range(256)) * 10
    assert scrubber.scrub(data) + scrubber.flush() == data
    assert SecretScrubber([]).scrub(b"abc") == b"abc"
    assert scrubber.scrub_whole(b"x" + SECRET.encode()) == b"x" + b"*" * len(SECRET)


def test_underscored_names_are_read_as_servers_that_map_them_to_hyphens_do() -> None:
    fields = request_fields(
        [
            (b"x_api_key", b"caller-chosen"),
            (b"x_forwarded_for", b"10.0.0.1"),
            (b"x_kept", b"yes"),
        ],
        host="t",
        credential=credential("header"),
        identity_encoding=False,
    )
    assert fields == [(b"host", b"t"), (b"x_kept", b"yes"), (b"x-api-key", SECRET.encode())]


def test_a_secret_echoed_json_escaped_or_url_encoded_is_scrubbed() -> None:
    secret = 'p\\a"ss/wörd +1'
    cred = UpstreamCredential(kind="bearer", secret=Secret(reference="env:T", value=secret))
    scrubber = SecretScrubber(cred.secrets())
    for echoed in (
        json.dumps({"authorization": "Bearer " + secret}).encode(),
        json.dumps({"token": secret}, ensure_ascii=False).encode(),
        b"Location: /login?token=" + quote(secret, safe="").encode(),
        b"Location: /login?token=" + quote_plus(secret).encode(),
    ):
        out = scrubber.scrub_whole(echoed)
        assert b"w\\u00f6rd" not in out and "wörd".encode() not in out and b"w%C3%B6rd" not in out


def test_a_credential_header_named_with_underscores_is_not_spoofed() -> None:
    cred = UpstreamCredential(
        kind="header", header="X_Api_Key", secret=Secret(reference="env:T", value=SECRET)
    )
    for name in (b"x-api-key", b"x_api_key"):
        fields = request_fields(
            [(name, b"caller-chosen")], host="t", credential=cred, identity_encoding=False
        )
        assert fields == [(b"host", b"t"), (b"x_api_key", SECRET.encode())]
