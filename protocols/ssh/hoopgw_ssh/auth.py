"""Who is logging in to the gateway's SSH server.

Two ways, both ending in :meth:`hoopgw.identity.authn.Authenticator.admit`:

- a public key registered to an identity (``hoopgw keys add-ssh``): the client proves it holds
  the private key by signing the session, and :class:`SshKeyDirectory` names the identity;
- a token (an API key, or whatever else :meth:`~hoopgw.identity.authn.Authenticator.authenticate`
  accepts) given as the SSH password or as the answer to a keyboard-interactive prompt.

The SSH user name plays no part in deciding who the caller is; it is recorded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from twisted.conch import error, interfaces
from twisted.conch.ssh import keys, userauth
from twisted.conch.ssh.common import NS, getNS
from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuthenticationError
from hoopgw.records import SshKeyStore, weak_key_reason
from hoopgw.session import Identity
from hoopgw_ssh.algorithms import RSA_SIGNATURES
from hoopgw_ssh.hostkeys import fingerprint

__all__ = ["GatewayUserAuth", "SshKeyDirectory"]

log = Logger(namespace="hoopgw.ssh")

_KEY_REFUSED = "public key not accepted"


class SshKeyDirectory:
    """Identities by registered SSH public key (blocking store reads, as API keys are: the
    login runs them through the authenticator's store calls, off the reactor thread)."""

    def __init__(self, store: SshKeyStore) -> None:
        self._store = store

    def identity_for(self, key: keys.Key, *, now: float) -> Identity | None:
        """The identity ``key`` is registered to, or None if it is unknown or revoked."""
        record = self._store.get_ssh_key(fingerprint(key))
        if record is None or record.revoked_at is not None:
            return None
        return Identity(
            name=record.identity,
            groups=frozenset(record.groups),
            method="ssh-key",
            credential_id=record.fingerprint,
        )

    def record_use(self, key: keys.Key, *, now: float) -> None:
        """Note a successful login with ``key``."""
        self._store.touch_ssh_key(fingerprint(key), now)


StoreCall = Callable[..., defer.Deferred[Any]]
"""Runs a blocking store read and fires with its result (the gateway's
:meth:`hoopgw.store.calls.StoreCalls.call`, off the reactor thread with a PostgreSQL store)."""

Admit = Callable[[Identity, bytes], defer.Deferred[Any]]
"""Starts a session for an identity (admission, ``session_started``, the upstream login) and
fires with the avatar, or fails with a reason to disconnect with."""


class LoginChecks(Protocol):
    """The :class:`~hoopgw.identity.authn.Authenticator` checks, bound to one client connection."""

    def authenticate(self, secret: str) -> defer.Deferred[Identity]:
        """Check a token (audited and slowed down on failure)."""

    def failed(self, message: str, *, reason: str) -> defer.Deferred[Any]:
        """Report a public key the gateway refused itself (audited, slowed down)."""

    def refuse_if_saturated(self) -> defer.Deferred[Any] | None:
        """A failing Deferred when the client address has every back-off slot busy."""


def _unauthorized(failure: Failure) -> Failure:
    failure.trap(AuthenticationError)
    return Failure(UnauthorizedLogin(failure.getErrorMessage()))


def _sha2_rsa(algorithm: bytes, signature: bytes | None) -> bool:
    """Whether an RSA login names, and signs with, a SHA-2 algorithm. Conch hands the
    request's algorithm over as ``algName``; the hash ``Key.verify`` uses is the one the
    signature blob names, so both must be SHA-2."""
    if algorithm not in RSA_SIGNATURES:
        return False
    if signature is None:
        return True
    try:
        signed_with, _ = getNS(signature)
    except (struct.error, ValueError):
        return False
    return bool(signed_with == algorithm)


class _Login:
    """The portal :class:`GatewayUserAuth` logs in through: one per client connection."""

    def __init__(
        self,
        *,
        directory: SshKeyDirectory,
        checks: LoginChecks,
        admit: Admit,
        reactor: Any,
        calls: StoreCall = defer.maybeDeferred,
    ) -> None:
        self._directory = directory
        self._checks = checks
        self._admit = admit
        self._reactor = reactor
        self._calls = calls

    def listCredentialsInterfaces(self) -> list[Any]:
        return [credentials.ISSHPrivateKey, credentials.IUsernamePassword]

    def login(self, creds: Any, mind: Any, *wanted: Any) -> defer.Deferred[Any]:
        if credentials.ISSHPrivateKey.providedBy(creds):
            return defer.maybeDeferred(self._by_key, creds)
        d = self._checks.authenticate(creds.password.decode("utf-8", errors="replace"))
        return d.addCallbacks(
            lambda identity: self._started(identity, creds.username), _unauthorized
        )

    def _by_key(self, creds: Any) -> Any:
        saturated = self._checks.refuse_if_saturated()
        if saturated is not None:
            return saturated.addErrback(_unauthorized)
        try:
            key = keys.Key.fromString(creds.blob)
        except keys.BadKeyError:
            return self._refused("unsupported or malformed public key")
        now = self._reactor.seconds()
        found = self._calls(self._directory.identity_for, key, now=now)
        return found.addCallback(self._checked, key, creds, now)

    def _checked(self, identity: Identity | None, key: keys.Key, creds: Any, now: float) -> Any:
        if identity is None:
            return self._refused(f"SSH key {fingerprint(key)} is not registered, or revoked")
        weak = weak_key_reason(key.type(), key.size())
        if weak is not None:  # registered before ``keys add-ssh`` checked it
            return self._refused(f"SSH key {fingerprint(key)}: {weak}")
        if key.type() == "RSA" and not _sha2_rsa(creds.algName, creds.signature):
            return self._refused(
                f"SSH key {fingerprint(key)}: RSA signatures must be rsa-sha2-256 or"
                " rsa-sha2-512 (ssh-rsa is SHA-1)"
            )
        if creds.signature is None:
            raise error.ValidPublicKey()  # "this key would do": the client then signs
        if not key.verify(creds.signature, creds.sigData):
            return self._refused(f"bad signature for SSH key {fingerprint(key)}")
        # Not waited for: a lost note only leaves the key's last use older.
        self._calls(self._directory.record_use, key, now=now).addErrback(
            lambda f: log.warn("cannot note the use of SSH key: {why}", why=f.value)
        )
        return self._started(identity, creds.username)

    def _refused(self, reason: str) -> defer.Deferred[Any]:
        return self._checks.failed(_KEY_REFUSED, reason=reason).addErrback(_unauthorized)

    def _started(self, identity: Identity, username: bytes) -> defer.Deferred[Any]:
        return self._admit(identity, username).addCallback(
            lambda avatar: (interfaces.IConchUser, avatar, avatar.logout)
        )


class GatewayUserAuth(userauth.SSHUserAuthServer):
    """``ssh-userauth`` with public key, password and keyboard-interactive (one hidden prompt).

    The transport provides ``login_portal()`` (a :class:`_Login`), ``login_timeout`` and
    ``clock``.
    """

    transport: Any

    def serviceStarted(self) -> None:
        self.authenticatedWith = []
        self.loginAttempts = 0
        self.user = None
        self.nextService = None
        self.portal = self.transport.login_portal()
        self.clock = self.transport.clock
        # Encryption is on: the transport starts userauth only after the key exchange.
        self.supportedAuthentications = [b"publickey", b"password", b"keyboard-interactive"]
        self._pending_answer: defer.Deferred[Any] | None = None
        self._cancelLoginTimeout = self.clock.callLater(
            self.transport.login_timeout, self.timeoutAuthentication
        )

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> defer.Deferred[Any]:
        """Refuse a login for any service but ``ssh-connection`` before checking anything: a
        session (and its login to the target) is started for that service only."""
        if self.nextService != b"ssh-connection":
            return defer.fail(error.ConchError("only the ssh-connection service is offered"))
        return super().tryAuth(kind, user, data)

    def auth_keyboard_interactive(self, packet: bytes) -> defer.Deferred[Any]:
        """Ask for the token with one hidden prompt (RFC 4256)."""
        if self._pending_answer is not None:
            return defer.fail(error.ConchError("keyboard-interactive already in progress"))
        self._pending_answer = defer.Deferred()
        self.transport.sendPacket(
            userauth.MSG_USERAUTH_INFO_REQUEST,
            NS(b"hoopgw")
            + NS(b"Give your hoopgw token.")
            + NS(b"")
            + struct.pack(">L", 1)
            + NS(b"Token: ")
            + b"\x00",
        )
        return self._pending_answer

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        """The client's answers to the keyboard-interactive prompt."""
        pending, self._pending_answer = self._pending_answer, None
        if pending is None:
            return
        try:
            (count,) = struct.unpack(">L", packet[:4])
            answers = getNS(packet[4:], count) if count else ()
        except (struct.error, ValueError):
            pending.errback(UnauthorizedLogin("malformed answer"))
            return
        if count != 1:
            pending.errback(UnauthorizedLogin("expected one answer"))
            return
        creds = credentials.UsernamePassword(self.user or b"", answers[0])
        self.portal.login(creds, None, interfaces.IConchUser).addErrback(
            self._ebPassword
        ).chainDeferred(pending)
