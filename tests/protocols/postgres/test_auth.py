"""Tests for hoopgw_postgres.auth: SCRAM-SHA-256 both ways and MD5."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hoopgw_postgres.auth import (
    MECHANISM,
    AuthenticationFailed,
    ScramClient,
    ScramServer,
    md5_password,
)

from hoopgw import secrets as scram
from hoopgw.errors import AuthenticationError

# RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

VERIFIER = scram.make_verifier("pencil", RFC_SALT, 4096)


def rfc_server() -> ScramServer:
    return ScramServer(VERIFIER, nonce=RFC_SERVER_NONCE)


def handmade_client_final(gs2_header: str, client_first_bare: str, server_first: str) -> bytes:
    """A client-final for password "pencil", computed from RFC 5802 without ScramClient."""
    nonce = server_first.split(",")[0][2:]
    without_proof = f"c={base64.b64encode(gs2_header.encode()).decode()},r={nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    client_key = scram.client_key(scram.salted_password("pencil", RFC_SALT, 4096))
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_mechanism_name() -> None:
    assert MECHANISM == "SCRAM-SHA-256"


def test_authentication_failed_is_an_authentication_error() -> None:
    assert issubclass(AuthenticationFailed, AuthenticationError)


# -- ScramClient -----------------------------------------------------------------------------


def test_client_matches_rfc_7677_vector() -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_CLIENT_NONCE)
    assert client.first() == RFC_CLIENT_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not client.verified
    client.verify(RFC_SERVER_FINAL)
    assert client.verified


def test_client_sends_empty_username_and_random_nonce_like_libpq() -> None:
    first_a = ScramClient("pw").first()
    first_b = ScramClient("pw").first()
    assert first_a.startswith(b"n,,n=,r=")
    assert len(first_a) == len(b"n,,n=,r=") + 24
    assert first_a != first_b


def test_client_escapes_username() -> None:
    client = ScramClient("pw", username="a=b,c", nonce="abc")
    assert client.first() == b"n,,n=a=3Db=2Cc,r=abc"


def test_client_rejects_forged_server_signature() -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_CLIENT_NONCE)
    client.first()
    client.final(RFC_SERVER_FIRST)
    forged = b"v=" + base64.b64encode(b"\x00" * 32)
    with pytest.raises(AuthenticationFailed, match="signature"):
        client.verify(forged)
    assert not client.verified


def test_client_rejects_server_that_does_not_know_the_password() -> None:
    impostor_verifier = scram.make_verifier("not pencil", b"salt", 4096)
    impostor = ScramServer(impostor_verifier)
    client = ScramClient("pencil")
    client_first = client.first()
    server_first = impostor.first(client_first)
    client_final = client.final(server_first)
    with pytest.raises(AuthenticationFailed):
        impostor.final(client_final)
    # An impostor that skips the proof check signs with the key of the password it knows.
    without_proof = client_final.rpartition(b",p=")[0]
    auth_message = b",".join((client_first[3:], server_first, without_proof))
    forged = hmac.digest(impostor_verifier.server_key, auth_message, "sha256")
    with pytest.raises(AuthenticationFailed, match="signature"):
        client.verify(b"v=" + base64.b64encode(forged))
    assert not client.verified


def test_client_reports_server_error() -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_CLIENT_NONCE)
    client.first()
    client.final(RFC_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed, match="invalid-proof"):
        client.verify(b"e=invalid-proof")


@pytest.mark.parametrize(
    ("server_first", "match"),
    [
        (b"r=other%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=%%%,i=4096", "base64"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096", "salt"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", "iteration"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", "iteration"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999", "iteration"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==", "incomplete"),
        (b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extension"),
        (b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096", "attribute"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_client_rejects_bad_server_first(server_first: bytes, match: str) -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_CLIENT_NONCE)
    client.first()
    with pytest.raises(AuthenticationFailed, match=match):
        client.final(server_first)


def test_client_steps_must_come_in_order() -> None:
    client = ScramClient("pencil", nonce="abc")
    with pytest.raises(AuthenticationFailed, match="unexpected"):
        client.verify(RFC_SERVER_FINAL)
    # A failed step ends the exchange.
    with pytest.raises(AuthenticationFailed, match="unexpected"):
        client.first()


def test_client_rejects_unprintable_nonce() -> None:
    with pytest.raises(ValueError, match="nonce"):
        ScramClient("pw", nonce="a,b")


# -- ScramServer -----------------------------------------------------------------------------


def test_server_matches_rfc_7677_vector() -> None:
    server = rfc_server()
    assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_server_authenticates_client() -> None:
    verifier = scram.make_verifier("s3cret", b"0123456789abcdef")
    server = ScramServer(verifier, channel_binding=None)
    client = ScramClient("s3cret")
    server_final = server.final(client.final(server.first(client.first())))
    client.verify(server_final)
    assert client.verified


def test_server_sends_random_nonce_salt_and_iterations() -> None:
    verifier = scram.make_verifier("s3cret", b"0123456789abcdef", 4096)
    first_a = ScramServer(verifier).first(b"n,,n=,r=abc")
    first_b = ScramServer(verifier).first(b"n,,n=,r=abc")
    nonce, salt, iterations = first_a.split(b",")
    assert nonce.startswith(b"r=abc") and len(nonce) == len(b"r=abc") + 24
    assert salt == b"s=" + base64.b64encode(b"0123456789abcdef")
    assert iterations == b"i=4096"
    assert first_a != first_b


def test_server_rejects_wrong_password() -> None:
    server = ScramServer(VERIFIER)
    client = ScramClient("wrong")
    server_first = server.first(client.first())
    with pytest.raises(AuthenticationFailed, match="password authentication failed"):
        server.final(client.final(server_first))


def test_server_ignores_username_in_client_first() -> None:
    server = rfc_server()
    bare = "n=somebody-else,r=abc"
    server_first = server.first(f"n,,{bare}".encode()).decode()
    server.final(handmade_client_final("n,,", bare, server_first))


def test_server_accepts_client_that_thinks_server_lacks_channel_binding() -> None:
    server = rfc_server()
    bare = "n=,r=abc"
    server_first = server.first(f"y,,{bare}".encode()).decode()
    assert server.final(handmade_client_final("y,,", bare, server_first)).startswith(b"v=")


def test_server_ignores_optional_extensions() -> None:
    server = rfc_server()
    bare = "n=,r=abc,x=ext"
    server_first = server.first(f"n,,{bare}".encode()).decode()
    server.final(handmade_client_final("n,,", bare, server_first))


def test_server_rejects_channel_binding_header_that_differs_from_client_first() -> None:
    server = rfc_server()
    bare = "n=,r=abc"
    server_first = server.first(f"n,,{bare}".encode()).decode()
    with pytest.raises(AuthenticationFailed, match="channel binding"):
        server.final(handmade_client_final("y,,", bare, server_first))


@pytest.mark.parametrize(
    ("client_first", "match"),
    [
        (b"p=tls-server-end-point,,n=,r=abc", "channel binding is not supported"),
        (b"n,a=admin,n=,r=abc", "authorization identity"),
        (b"x,,n=,r=abc", "flag"),
        (b"n,,m=ext,n=,r=abc", "extension"),
        (b"n,,n=,r=", "nonce"),
        (b"n,,n=,r=a\x7fb", "nonce"),
        (b"n,,r=abc", "incomplete"),
        (b"n,,n=,x=abc", "attribute"),
        (b"n,,n=,r=abc,1=x", "attribute"),
        (b"n,,", "incomplete"),
        (b"n,n=,r=abc", "authorization identity"),
        (b"n,,n=\xff,r=abc", "UTF-8"),
    ],
)
def test_server_rejects_bad_client_first(client_first: bytes, match: str) -> None:
    with pytest.raises(AuthenticationFailed, match=match):
        rfc_server().first(client_first)


@pytest.mark.parametrize(
    ("client_final", "match"),
    [
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "no proof"),
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqOother,p=" + RFC_CLIENT_FINAL[-44:], "nonce"),
        (
            b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="
            + RFC_CLIENT_FINAL[-44:],
            "channel binding",
        ),
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA", "length"),
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!", "base64"),
        (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA", "incomplete"),
        (
            b"x=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="
            + RFC_CLIENT_FINAL[-44:],
            "attribute",
        ),
        (
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="
            + base64.b64encode(b"\x01" * 32),
            "password authentication failed",
        ),
    ],
)
def test_server_rejects_bad_client_final(client_final: bytes, match: str) -> None:
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed, match=match):
        server.final(client_final)


def test_server_exchange_cannot_be_retried_after_failure() -> None:
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed):
        server.final(RFC_CLIENT_FINAL[:-4] + b"AAA=")
    with pytest.raises(AuthenticationFailed, match="unexpected"):
        server.final(RFC_CLIENT_FINAL)


def test_server_steps_must_come_in_order() -> None:
    with pytest.raises(AuthenticationFailed, match="unexpected"):
        rfc_server().final(RFC_CLIENT_FINAL)
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed, match="unexpected"):
        server.first(RFC_CLIENT_FIRST)


def test_server_refuses_channel_binding_configuration() -> None:
    with pytest.raises(ValueError, match="channel binding"):
        ScramServer(VERIFIER, channel_binding="tls-server-end-point")  # type: ignore[arg-type]


# -- MD5 ---------------------------------------------------------------------------------------


def test_md5_password_matches_postgresql() -> None:
    # Computed by PostgreSQL 15: SELECT 'md5' || md5(convert_to(md5('pencil' || 'user'),
    # 'UTF8') || '\x01020304'::bytea)
    assert md5_password("user", "pencil", b"\x01\x02\x03\x04") == (
        b"md54376eb6913b38f9aaff38dc7cf19ca76"
    )
