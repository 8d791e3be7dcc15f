"""Tests for hoopgw_ssh.upstream: the stored credential is offered once per method."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hoopgw_ssh.upstream import UpstreamError, _UserAuth
from twisted.conch.ssh import keys


def _key() -> keys.Key:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return keys.Key.fromString(pem)


def _result(d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0]


def test_key_then_password_each_once() -> None:
    key = _key()
    auth = _UserAuth(b"deploy", None, key=key, password="s3cret")
    assert auth.getPublicKey() == key.public()
    assert auth.getPublicKey() is None
    assert _result(auth.getPrivateKey()) is key
    assert _result(auth.getPassword()) == b"s3cret"
    assert auth.getPassword() is None


def test_keyboard_interactive_answers_one_hidden_prompt_with_the_password() -> None:
    auth = _UserAuth(b"deploy", None, key=None, password="s3cret")
    assert auth.getPublicKey() is None
    assert _result(auth.getGenericAnswers(b"", b"", [(b"Password: ", False)])) == ["s3cret"]
    again = _result(auth.getGenericAnswers(b"", b"", [(b"Password: ", False)]))
    assert isinstance(again.value, UpstreamError)
    echoed = _UserAuth(b"deploy", None, key=None, password="s3cret")
    assert isinstance(
        _result(echoed.getGenericAnswers(b"", b"", [(b"Code: ", True)])).value, UpstreamError
    )
    none = _UserAuth(b"deploy", None, key=None, password=None)
    assert none.getPassword() is None


def test_a_rekey_does_not_log_in_again() -> None:
    from types import SimpleNamespace

    from hoopgw_ssh.upstream import _Transport
    from twisted.internet import defer

    credential = SimpleNamespace(
        user="deploy", private_key=None, password=SimpleNamespace(reveal=lambda: "pw")
    )
    transport = _Transport(SimpleNamespace(credential=credential), defer.Deferred())
    requested: list[Any] = []
    transport.requestService = requested.append  # type: ignore[method-assign]
    transport.connectionSecure()
    first = transport.service_connection
    # The target re-keys a long session: Conch calls connectionSecure after every NEWKEYS.
    transport.connectionSecure()
    assert len(requested) == 1
    assert transport.service_connection is first


class _LoginLink:
    """What the userauth client uses of its transport: records the requests it sends."""

    def __init__(self, announced: bytes = b"") -> None:
        self.sessionID = b"session-id"
        self.peerExtensions = {b"server-sig-algs": announced} if announced else {}
        self.sent: list[tuple[int, bytes]] = []

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.sent.append((kind, payload))


def _rsa_key() -> keys.Key:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return keys.Key.fromString(pem)


RSA_KEY = _rsa_key()


@pytest.mark.parametrize(
    ("key", "announced", "algorithm"),
    [
        (RSA_KEY, b"", b"rsa-sha2-256"),
        (RSA_KEY, b"ssh-ed25519,rsa-sha2-256", b"rsa-sha2-256"),
        (RSA_KEY, b"rsa-sha2-256,rsa-sha2-512", b"rsa-sha2-512"),
        (_key(), b"", b"ssh-ed25519"),
    ],
)
def test_the_key_signs_with_sha2(key: keys.Key, announced: bytes, algorithm: bytes) -> None:
    from twisted.conch.ssh.common import NS, getNS

    auth = _UserAuth(b"deploy", SimpleNamespace(name=b"ssh-connection"), key=key, password=None)
    auth.transport = _LoginLink(announced)  # type: ignore[assignment]
    assert _result(auth.auth_publickey()) is True
    [(kind, payload)] = auth.transport.sent
    assert kind == 50  # MSG_USERAUTH_REQUEST
    user, service, method, rest = getNS(payload, 3)
    assert (user, service, method, rest[0]) == (b"deploy", b"ssh-connection", b"publickey", 1)
    named, blob, signature, _ = getNS(rest[1:], 3)
    assert named == algorithm and blob == key.public().blob()
    assert getNS(signature)[0] == algorithm  # the hash the signature was made with
    signed = NS(b"session-id") + b"\x32" + payload[: -len(NS(signature))]
    assert key.public().verify(signature, signed)
    assert _result(auth.auth_publickey()) is False  # offered once
