"""Tests for hoopgw_ssh.auth: identities by registered public key, tokens as passwords or
keyboard-interactive answers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hoopgw_ssh.auth import GatewayUserAuth, SshKeyDirectory, _Login
from hoopgw_ssh.hostkeys import fingerprint
from twisted.conch import error
from twisted.conch.ssh import keys, userauth
from twisted.conch.ssh.common import NS
from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock

from hoopgw.errors import AuthenticationError
from hoopgw.records import SshKeyRecord
from hoopgw.session import Identity
from hoopgw.store import open_store

TOKEN = "the-token"


def _key() -> keys.Key:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return keys.Key.fromString(pem)


@pytest.fixture
def store() -> Iterator[Any]:
    opened = open_store("sqlite:///:memory:")
    opened.migrate()
    yield opened
    opened.close()


def _register(store: Any, key: keys.Key, *, revoked: bool = False) -> None:
    store.add_ssh_key(
        SshKeyRecord(
            fingerprint=fingerprint(key),
            identity="robot",
            groups=("agents",),
            public_key=key.public().toString("openssh").decode(),
            comment="",
            created_at=1.0,
            revoked_at=2.0 if revoked else None,
        )
    )


def test_directory_names_the_identity_of_a_registered_key(store: Any) -> None:
    key, revoked, unknown = _key(), _key(), _key()
    _register(store, key)
    _register(store, revoked, revoked=True)
    directory = SshKeyDirectory(store)
    identity = directory.identity_for(key.public(), now=3.0)
    assert identity == Identity(
        name="robot", groups=frozenset({"agents"}), method="ssh-key", credential_id=fingerprint(key)
    )
    assert directory.identity_for(revoked, now=3.0) is None
    assert directory.identity_for(unknown, now=3.0) is None
    directory.record_use(key, now=4.0)
    assert store.get_ssh_key(fingerprint(key)).last_used_at == 4.0


class _Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.saturated = False

    def authenticate(self, secret: str) -> defer.Deferred[Identity]:
        if secret == TOKEN:
            return defer.succeed(Identity(name="tok", groups=frozenset({"agents"})))
        return defer.fail(AuthenticationError("invalid API key"))

    def failed(self, message: str, *, reason: str) -> defer.Deferred[Any]:
        self.failures.append(reason)
        return defer.fail(AuthenticationError(message))

    def refuse_if_saturated(self) -> defer.Deferred[Any] | None:
        return defer.fail(AuthenticationError("too many")) if self.saturated else None


def _login(store: Any) -> tuple[_Login, list[tuple[Identity, bytes]]]:
    admitted: list[tuple[Identity, bytes]] = []

    def admit(identity: Identity, username: bytes) -> defer.Deferred[Any]:
        admitted.append((identity, username))
        return defer.succeed(type("Avatar", (), {"logout": lambda self: None})())

    login = _Login(directory=SshKeyDirectory(store), checks=_Checks(), admit=admit, reactor=Clock())
    return login, admitted


def _failure_of(d: defer.Deferred[Any]) -> Any:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "expected a failure"
    return failures[0]


def test_public_key_login_needs_a_valid_signature(store: Any) -> None:
    key = _key()
    _register(store, key)
    login, admitted = _login(store)
    blob = key.public().blob()
    probe = credentials.SSHPrivateKey(b"agent", b"ssh-ed25519", blob, None, None)
    assert _failure_of(login.login(probe, None)).check(error.ValidPublicKey)
    signed = b"session data"
    good = credentials.SSHPrivateKey(b"agent", b"ssh-ed25519", blob, signed, key.sign(signed))
    results: list[Any] = []
    login.login(good, None).addCallback(results.append)
    assert results and admitted == [(SshKeyDirectory(store).identity_for(key, now=0), b"agent")]
    bad = credentials.SSHPrivateKey(b"agent", b"ssh-ed25519", blob, signed, _key().sign(signed))
    assert _failure_of(login.login(bad, None)).check(UnauthorizedLogin)
    other = _key()
    unknown = credentials.SSHPrivateKey(
        b"agent", b"ssh-ed25519", other.public().blob(), signed, other.sign(signed)
    )
    assert _failure_of(login.login(unknown, None)).check(UnauthorizedLogin)
    checks = login._checks
    assert checks.failures[0].startswith("bad signature for SSH key SHA256:")
    assert checks.failures[1].endswith("is not registered, or revoked")
    garbage = credentials.SSHPrivateKey(b"agent", b"ssh-ed25519", b"junk", signed, b"x")
    assert _failure_of(login.login(garbage, None)).check(UnauthorizedLogin)
    assert checks.failures[2] == "unsupported or malformed public key"
    checks.saturated = True
    assert _failure_of(login.login(good, None)).check(UnauthorizedLogin)
    assert len(admitted) == 1


def test_token_as_password(store: Any) -> None:
    login, admitted = _login(store)
    results: list[Any] = []
    login.login(credentials.UsernamePassword(b"x", TOKEN.encode()), None).addCallback(
        results.append
    )
    assert results and admitted[0][0].name == "tok"
    wrong = login.login(credentials.UsernamePassword(b"x", b"nope"), None)
    assert _failure_of(wrong).check(UnauthorizedLogin)


class _Transport:
    def __init__(self, login: _Login) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.clock = Clock()
        self.login_timeout = 30.0
        self._login = login

    def login_portal(self) -> _Login:
        return self._login

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.sent.append((kind, payload))


def test_keyboard_interactive_asks_one_hidden_prompt(store: Any) -> None:
    login, admitted = _login(store)
    service = GatewayUserAuth()
    service.transport = _Transport(login)
    service.serviceStarted()
    assert service.supportedAuthentications == [b"publickey", b"password", b"keyboard-interactive"]
    service.user = b"agent"
    pending = service.auth_keyboard_interactive(NS(b"") + NS(b""))
    [(kind, payload)] = service.transport.sent
    assert kind == userauth.MSG_USERAUTH_INFO_REQUEST
    assert payload.endswith(NS(b"Token: ") + b"\x00")
    results: list[Any] = []
    pending.addCallback(results.append)
    service.ssh_USERAUTH_INFO_RESPONSE(struct.pack(">L", 1) + NS(TOKEN.encode()))
    assert results and admitted[0][0].name == "tok"
    service.serviceStopped()


def test_keyboard_interactive_refuses_malformed_answers(store: Any) -> None:
    login, _ = _login(store)
    service = GatewayUserAuth()
    service.transport = _Transport(login)
    service.serviceStarted()
    service.user = b"agent"
    for answer in (struct.pack(">L", 2) + NS(b"a") + NS(b"b"), b"\x00"):
        pending = service.auth_keyboard_interactive(b"")
        service.ssh_USERAUTH_INFO_RESPONSE(answer)
        assert _failure_of(pending).check(UnauthorizedLogin)
    service.ssh_USERAUTH_INFO_RESPONSE(struct.pack(">L", 0))  # nothing pending: ignored
    service.serviceStopped()


def test_a_login_for_another_service_is_refused_before_any_check(store: Any) -> None:
    login, admitted = _login(store)
    service = GatewayUserAuth()
    service.transport = _Transport(login)
    service.serviceStarted()
    service.user, service.nextService = b"agent", b"ssh-userauth"
    refused = service.tryAuth(b"password", b"agent", b"\x00" + NS(TOKEN.encode()))
    assert _failure_of(refused).check(error.ConchError)
    assert admitted == []
    service.nextService = b"ssh-connection"
    results: list[Any] = []
    service.tryAuth(b"password", b"agent", b"\x00" + NS(TOKEN.encode())).addCallback(results.append)
    assert results and admitted[0][0].name == "tok"
    service.serviceStopped()


def _rsa_key(bits: int) -> keys.Key:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(65537, bits).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return keys.Key.fromString(pem)


RSA_2048 = _rsa_key(2048)


@pytest.mark.parametrize("algorithm", [b"rsa-sha2-256", b"rsa-sha2-512"])
def test_rsa_login_with_a_sha2_signature(store: Any, algorithm: bytes) -> None:
    _register(store, RSA_2048)
    login, admitted = _login(store)
    blob = RSA_2048.public().blob()
    probe = credentials.SSHPrivateKey(b"agent", algorithm, blob, None, None)
    assert _failure_of(login.login(probe, None)).check(error.ValidPublicKey)
    signed = b"session data"
    signature = RSA_2048.sign(signed, signatureType=algorithm)
    good = credentials.SSHPrivateKey(b"agent", algorithm, blob, signed, signature)
    login.login(good, None)
    assert len(admitted) == 1


def test_rsa_login_with_a_sha1_signature_is_refused(store: Any) -> None:
    _register(store, RSA_2048)
    login, admitted = _login(store)
    blob = RSA_2048.public().blob()
    signed = b"session data"
    sha1 = RSA_2048.sign(signed, signatureType=b"ssh-rsa")
    assert RSA_2048.public().verify(sha1, signed)  # Conch alone would accept it
    attempts = [
        credentials.SSHPrivateKey(b"agent", b"ssh-rsa", blob, None, None),
        credentials.SSHPrivateKey(b"agent", b"ssh-rsa", blob, signed, sha1),
        # The request names SHA-2 but the signature is SHA-1 (Key.verify goes by the latter).
        credentials.SSHPrivateKey(b"agent", b"rsa-sha2-256", blob, signed, sha1),
        credentials.SSHPrivateKey(b"agent", b"rsa-sha2-256", blob, signed, b"\x00"),
    ]
    for creds in attempts:
        assert _failure_of(login.login(creds, None)).check(UnauthorizedLogin)
    assert admitted == []
    failures = login._checks.failures
    assert len(failures) == len(attempts)
    assert all("RSA signatures must be rsa-sha2-256 or rsa-sha2-512" in f for f in failures)


def test_a_weak_registered_key_is_refused_and_audited(store: Any) -> None:
    weak = _rsa_key(1024)
    _register(store, weak)  # registered before ``keys add-ssh`` checked key sizes
    login, admitted = _login(store)
    blob = weak.public().blob()
    probe = credentials.SSHPrivateKey(b"agent", b"rsa-sha2-256", blob, None, None)
    assert _failure_of(login.login(probe, None)).check(UnauthorizedLogin)
    signed = b"session data"
    signature = weak.sign(signed, signatureType=b"rsa-sha2-256")
    good = credentials.SSHPrivateKey(b"agent", b"rsa-sha2-256", blob, signed, signature)
    assert _failure_of(login.login(good, None)).check(UnauthorizedLogin)
    assert admitted == []
    failures = login._checks.failures
    assert (
        failures
        == [
            f"SSH key {fingerprint(weak)}: RSA key of 1024 bits is refused:"
            " at least 2048 bits are required"
        ]
        * 2
    )


@pytest.mark.filterwarnings("ignore:SSH DSA key")
def test_a_registered_dsa_key_is_refused(store: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa

    key = keys.Key(dsa.generate_private_key(1024))
    _register(store, key)
    login, admitted = _login(store)
    signed = b"session data"
    creds = credentials.SSHPrivateKey(
        b"agent", b"ssh-dss", key.public().blob(), signed, key.sign(signed)
    )
    assert _failure_of(login.login(creds, None)).check(UnauthorizedLogin)
    assert admitted == []
    assert "DSA (ssh-dss) keys are refused" in login._checks.failures[0]
