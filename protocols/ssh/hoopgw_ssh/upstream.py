"""The gateway's SSH client towards the target: host key check, login with the stored
credential, and the ``ssh-connection`` service that relayed channels are opened on.

The caller never sees the credential; the target never sees the caller's. A target whose host
key the connection's config does not accept is refused before any credential is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.conch.error import ConchError
from twisted.conch.ssh import connection, keys, transport, userauth
from twisted.conch.ssh.common import NS
from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from hoopgw.connection import ConnectionConfig
from hoopgw.errors import UpstreamUnavailable
from hoopgw.secrets import Secret
from hoopgw.transport import set_no_delay
from hoopgw_ssh.algorithms import modern_transport
from hoopgw_ssh.hostkeys import HostKeyRefused, check_target_key
from hoopgw_ssh.options import ssh_config
from hoopgw_ssh.relay import RelayConnection

__all__ = ["UpstreamConnection", "UpstreamError", "connect_upstream"]


class UpstreamError(Exception):
    """The target could not be reached or refused the gateway's login; safe to show."""


class UpstreamConnection(RelayConnection):
    """The ``ssh-connection`` service on the link to the target."""

    def __init__(self, ready: defer.Deferred[UpstreamConnection]) -> None:
        super().__init__()
        self._ready: defer.Deferred[UpstreamConnection] | None = ready
        self.on_channel_open: Callable[[bytes, bytes, int, int], Any] | None = None
        """Called for a channel the target opens (agent, X11, remote forwarding); returns the
        local channel or raises ``ConchError``. None refuses every such channel."""
        self.on_lost: Callable[[str], None] | None = None
        """Called once when the link to the target ends after login, with a reason."""

    def serviceStarted(self) -> None:
        """Logged in: the connection is ready for channels."""
        super().serviceStarted()
        ready, self._ready = self._ready, None
        if ready is not None and not ready.called:
            ready.callback(self)
        else:  # the login took too long and was given up
            link: Any = self.transport
            link.loseConnection()

    def getChannel(self, channelType: bytes, windowSize: int, maxPacket: int, data: bytes) -> Any:
        """A channel the target opens towards the client: only through :attr:`on_channel_open`."""
        if self.on_channel_open is None:
            raise ConchError(
                "channel type not allowed", connection.OPEN_ADMINISTRATIVELY_PROHIBITED
            )
        opened = self.on_channel_open(channelType, data, windowSize, maxPacket)
        opened.conn = self
        return opened


class _UserAuth(userauth.SSHUserAuthClient):
    """Logs in with the connection's private key and/or password, each offered once.

    The key is offered signed at once, an RSA key with ``rsa-sha2-512`` (when the target
    announces it in ``server-sig-algs``) or ``rsa-sha2-256``: Conch's own client would sign
    with ``ssh-rsa`` (SHA-1).
    """

    preferredOrder = [b"publickey", b"password", b"keyboard-interactive"]

    def __init__(self, user: bytes, instance: Any, *, key: keys.Key | None, password: str | None):
        super().__init__(user, instance)
        self._key = key
        self._password = password
        self._offered_key = False
        self._offered_password = False
        self._answered = False

    def auth_publickey(self) -> defer.Deferred[bool]:
        """Send one signed ``publickey`` request (RFC 4252, 7), without a query first; fires
        with whether it was sent."""
        public = self.getPublicKey()
        if public is None:
            return defer.succeed(False)
        assert self._key is not None and self.transport is not None
        session_id = self.transport.sessionID
        assert session_id is not None, "user authentication starts after the key exchange"
        algorithm = public.sshType()
        if public.type() == "RSA":
            announced = self.transport.peerExtensions.get(b"server-sig-algs", b"").split(b",")
            algorithm = b"rsa-sha2-512" if b"rsa-sha2-512" in announced else b"rsa-sha2-256"
        request = b"\x01" + NS(algorithm) + NS(public.blob())
        signed = (
            NS(session_id)
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.instance.name)
            + NS(b"publickey")
            + request
        )
        self.lastPublicKey = public
        self.askForAuth(b"publickey", request + NS(self._key.sign(signed, algorithm)))
        return defer.succeed(True)

    def getPublicKey(self) -> Any:
        if self._key is None or self._offered_key:
            return None
        self._offered_key = True
        return self._key.public()

    def getPrivateKey(self) -> defer.Deferred[keys.Key]:
        assert self._key is not None
        return defer.succeed(self._key)

    def getPassword(self, prompt: Any = None) -> Any:
        if self._password is None or self._offered_password:
            return None
        self._offered_password = True
        return defer.succeed(self._password.encode("utf-8"))

    def getGenericAnswers(self, name: bytes, instruction: bytes, prompts: Any) -> Any:
        # keyboard-interactive with one hidden prompt is how many sshd configs ask for a
        # password; answer it once, anything else fails.
        if self._password is None or self._answered or len(prompts) != 1 or prompts[0][1]:
            return defer.fail(UpstreamError("the target asks for something other than a password"))
        self._answered = True
        return defer.succeed([self._password])


class _Transport(transport.SSHClientTransport):
    """Client transport that checks the target's host key and starts the login."""

    def __init__(self, config: ConnectionConfig, ready: defer.Deferred[UpstreamConnection]):
        self._config = config
        self._ready: defer.Deferred[UpstreamConnection] | None = ready
        self.refusal: str | None = None
        """Why the login failed, once known (host key, authentication)."""
        self.service_connection: UpstreamConnection | None = None

    def connectionMade(self) -> None:
        set_no_delay(self.transport)  # keystrokes go at once, not after Nagle's wait
        modern_transport(self)
        super().connectionMade()  # sends our KEXINIT

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[None]:
        try:
            check_target_key(
                ssh_config(self._config.protocol_options),
                self._config.target_host,
                self._config.target_port,
                keys.Key.fromString(hostKey),
            )
        except HostKeyRefused as exc:
            self.refusal = str(exc)
            return defer.fail(exc)
        return defer.succeed(None)

    def connectionSecure(self) -> None:
        # Conch calls this after every key exchange, re-keys included (the target may re-key
        # a long session): log in once only.
        if self.service_connection is not None:
            return
        ready = self._ready
        if ready is None:  # timed out meanwhile
            link: Any = self.transport
            link.loseConnection()
            return
        credential = self._config.credential
        key = None if credential.private_key is None else load_private_key(credential.private_key)
        password = None if credential.password is None else credential.password.reveal()
        self.service_connection = UpstreamConnection(ready)
        self.requestService(
            _UserAuth(
                credential.user.encode("utf-8"),
                self.service_connection,
                key=key,
                password=password,
            )
        )

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        # Conch's userauth client gives up this way when every method failed.
        if reason == transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE:
            self.refusal = "the target refused the gateway's credential"
        super().sendDisconnect(reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        if reasonCode == transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE:
            self.refusal = "the target refused the gateway's credential"
        super().receiveError(reasonCode, description)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        connection = self.service_connection
        if connection is not None and connection._ready is None and connection.on_lost:
            lost, connection.on_lost = connection.on_lost, None
            lost("the target closed the SSH connection")
        ready, self._ready = self._ready, None
        if ready is not None and not ready.called:
            ready.errback(UpstreamError(self.refusal or "the target closed the connection"))


class _Factory(protocol.ClientFactory):
    noisy = False

    def __init__(self, config: ConnectionConfig, ready: defer.Deferred[UpstreamConnection]):
        self._config = config
        self._ready = ready

    def buildProtocol(self, addr: Any) -> _Transport:
        built = _Transport(self._config, self._ready)
        built.factory = self
        return built


def load_private_key(secret: Secret) -> keys.Key:
    """The connection's private key (``credential.private_key``).

    :raises keys.BadKeyError: if it is not an unencrypted private key Conch can use.
    """
    key = keys.Key.fromString(secret.reveal().encode("utf-8"))
    if key.isPublic():
        raise keys.BadKeyError("a public key, not a private one")
    return key


def connect_upstream(
    config: ConnectionConfig,
    reactor: Any,
    *,
    timeout: float,
    connect: Callable[..., defer.Deferred[Any]],
) -> defer.Deferred[UpstreamConnection]:
    """Connect to the target, check its host key, log in; fires with the ready connection.

    :param timeout: seconds for all of it (the gateway's ``auth_timeout``).
    :param connect: opens the TCP connection (the runtime's
        :meth:`~hoopgw.protocol.ConnectionRuntime.connect_upstream`: directly, or through a
        network agent).
    :return: a Deferred failing with :class:`UpstreamError` (a reason safe to show) when the
        target is unreachable, its host key is refused or it refuses the credential.
    """
    ready: defer.Deferred[UpstreamConnection] = defer.Deferred()
    factory = _Factory(config, ready)
    link_protocol = factory.buildProtocol(None)
    connecting = connect(config.target_host, config.target_port, link_protocol, timeout=timeout)
    transports: list[_Transport] = []

    def connect_failed(failure: Failure) -> None:
        if not ready.called:
            why = failure.getErrorMessage()
            if failure.check(UpstreamUnavailable):
                ready.errback(UpstreamError(why))
            else:
                ready.errback(UpstreamError(f"cannot reach the target: {why}"))

    connecting.addCallbacks(transports.append, connect_failed)

    def timed_out(failure: Failure) -> Failure:
        if failure.check(defer.TimeoutError):
            for made in transports:
                link: Any = made.transport
                link.abortConnection()
            return Failure(UpstreamError(f"the target did not log us in within {timeout:g}s"))
        return failure

    ready.addTimeout(timeout, reactor)
    return ready.addErrback(timed_out)
