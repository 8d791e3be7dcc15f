"""Upstream authentication answers, checked against each plugin's specification: the server-side
verification the specification describes is written out here, independently of the code under
test, and run on what the gateway answers (no MySQL 8 server is available to try them on)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hoopgw_mysql import auth

SCRAMBLE = bytes(range(0x21, 0x35))  # 20 bytes, as servers send them
PASSWORD = b"s3cret-p\xc3\xa4ss"


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_native_password_verifies_as_the_server_checks_it() -> None:
    # The server stores SHA1(SHA1(password)) and checks
    # SHA1(response XOR SHA1(scramble + stored)) == stored.
    stored = hashlib.sha1(hashlib.sha1(PASSWORD).digest()).digest()
    response = auth.native_password(PASSWORD, SCRAMBLE)
    candidate = _xor(response, hashlib.sha1(SCRAMBLE + stored).digest())
    assert hashlib.sha1(candidate).digest() == stored
    assert auth.native_password(b"", SCRAMBLE) == b""


def test_caching_sha2_fast_path_verifies_as_the_server_checks_it() -> None:
    # caching_sha2_password: the server caches SHA256(SHA256(password)) and checks that
    # SHA256(response XOR SHA256(cached + nonce)) == cached.
    cached = hashlib.sha256(hashlib.sha256(PASSWORD).digest()).digest()
    response = auth.caching_sha2_scramble(PASSWORD, SCRAMBLE)
    assert len(response) == 32
    candidate = _xor(response, hashlib.sha256(cached + SCRAMBLE).digest())
    assert hashlib.sha256(candidate).digest() == cached
    # A wrong password does not verify.
    wrong = auth.caching_sha2_scramble(b"other", SCRAMBLE)
    assert hashlib.sha256(_xor(wrong, hashlib.sha256(cached + SCRAMBLE).digest())).digest() != (
        cached
    )


def test_caching_sha2_known_vector() -> None:
    # Computed by hand from the definition for password "password" and a scramble of 20 x 'a'.
    p1 = hashlib.sha256(b"password").digest()
    p3 = hashlib.sha256(hashlib.sha256(p1).digest() + b"a" * 20).digest()
    assert auth.caching_sha2_scramble(b"password", b"a" * 20) == _xor(p1, p3)


def _exchange(secure: bool) -> auth.PasswordAuthenticator:
    return auth.PasswordAuthenticator(PASSWORD, secure=secure, cleartext_allowed=secure)


def test_caching_sha2_fast_authentication_success_needs_no_answer() -> None:
    client = _exchange(secure=False)
    assert client.start(auth.CACHING_SHA2, SCRAMBLE + b"\0") == auth.caching_sha2_scramble(
        PASSWORD, SCRAMBLE
    )
    assert client.more_data(auth.FAST_AUTH_OK) is None


def test_caching_sha2_full_authentication_over_tls_sends_the_password() -> None:
    client = _exchange(secure=True)
    client.start(auth.CACHING_SHA2, SCRAMBLE)
    assert client.more_data(auth.PERFORM_FULL_AUTH) == PASSWORD + b"\0"


def test_caching_sha2_full_authentication_without_tls_uses_the_servers_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = _exchange(secure=False)
    client.start(auth.CACHING_SHA2, SCRAMBLE)
    # Never the password in clear: the client asks for the key first.
    assert client.more_data(auth.PERFORM_FULL_AUTH) == auth.REQUEST_PUBLIC_KEY
    encrypted = client.more_data(pem)
    assert encrypted is not None and PASSWORD not in encrypted
    # The server decrypts with RSA-OAEP and XORs with the scramble, repeated.
    plain = key.decrypt(
        encrypted,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    repeated = (SCRAMBLE * 3)[: len(plain)]
    assert _xor(plain, repeated) == PASSWORD + b"\0"


def test_sha256_password_without_tls_asks_for_the_key() -> None:
    client = _exchange(secure=False)
    assert client.start(auth.SHA256, SCRAMBLE) == b"\x01"
    assert _exchange(secure=True).start(auth.SHA256, SCRAMBLE) == PASSWORD + b"\0"


def test_unexpected_caching_sha2_data_is_refused() -> None:
    client = _exchange(secure=False)
    client.start(auth.CACHING_SHA2, SCRAMBLE)
    with pytest.raises(auth.UpstreamAuthError):
        client.more_data(b"\x09")


def test_ed25519_matches_mariadb_and_rfc_8032() -> None:
    # MariaDB: SELECT ed25519_password('secret') (stored base64 without padding).
    assert base64.b64encode(auth.ed25519_public_key(b"secret")).rstrip(b"=") == (
        b"ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY"
    )
    nonce = bytes(range(32))
    signature = auth.PasswordAuthenticator(b"secret", secure=False, cleartext_allowed=False).start(
        auth.ED25519, nonce
    )
    Ed25519PublicKey.from_public_bytes(auth.ed25519_public_key(b"secret")).verify(signature, nonce)


def test_cleartext_only_where_it_is_safe() -> None:
    with pytest.raises(auth.UpstreamAuthError, match="neither TLS nor loopback"):
        _exchange(secure=False).start(auth.CLEAR, b"")
    assert (
        auth.PasswordAuthenticator(PASSWORD, secure=False, cleartext_allowed=True).start(
            auth.CLEAR, b""
        )
        == PASSWORD + b"\0"
    )


def test_unknown_plugins_are_refused() -> None:
    with pytest.raises(auth.UpstreamAuthError, match="unsupported"):
        _exchange(secure=True).start("dialog", b"")
