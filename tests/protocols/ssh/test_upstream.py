"""Tests for hoopgw_ssh.upstream: the stored credential is offered once per method."""

from __future__ import annotations

from typing import Any

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
