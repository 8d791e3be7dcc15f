"""The gateway's SSH server: one factory per configured SSH connection, one
:class:`GatewaySession` per authenticated client.

A client connection goes: key exchange (the gateway's persistent host key) -> user
authentication (:mod:`hoopgw_ssh.auth`) -> admission and ``session_started`` -> login to the
target (:mod:`hoopgw_ssh.upstream`) -> ``USERAUTH_SUCCESS``. Only then may the client open
channels, each relayed to a channel on the target (:mod:`hoopgw_ssh.channels`). A failure in
any step ends the client connection with an SSH disconnect message that says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.conch import avatar, error
from twisted.conch.ssh import factory, keys, transport
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AccessDenied, ConfigError, HeldStatement
from hoopgw.ledger import CommandLedger
from hoopgw.protocol import ConnectionRuntime
from hoopgw.session import Command, CommandOutcome, Identity, SessionInfo
from hoopgw.transport import set_no_delay
from hoopgw.verdicts import Allow, Block, Hold
from hoopgw_ssh.algorithms import USER_KEY_ALGORITHMS, modern_transport
from hoopgw_ssh.auth import GatewayUserAuth, SshKeyDirectory, _Login
from hoopgw_ssh.hostkeys import fingerprint, load_or_create_host_key
from hoopgw_ssh.options import ssh_config
from hoopgw_ssh.relay import RelayConnection
from hoopgw_ssh.upstream import (
    UpstreamConnection,
    UpstreamError,
    connect_upstream,
    load_private_key,
)

__all__ = ["GatewaySession", "SshServerFactory"]

log = Logger(namespace="hoopgw.ssh")


class SessionRefused(Exception):
    """A step after authentication refused the client; the message is shown to it."""


class GatewaySession(avatar.ConchUser):
    """One authenticated client: its :class:`SessionInfo`, its link to the target, its
    commands. Registered with the gateway's :class:`~hoopgw.protocol.SessionRegistry`."""

    def __init__(
        self,
        runtime: ConnectionRuntime,
        transport: ServerTransport,
        info: SessionInfo,
        upstream: UpstreamConnection,
    ) -> None:
        super().__init__()
        from hoopgw_ssh.channels import DirectTcpipChannel, SessionChannel

        self.runtime = runtime
        self.info = info
        self.identity: Identity | None = info.identity
        """Who is connected (what :class:`~hoopgw.protocol.LiveSession` asks for)."""
        self.session_info: SessionInfo | None = info
        """The recorded session (what :class:`~hoopgw.protocol.LiveSession` asks for)."""
        self.upstream = upstream
        self._transport = transport
        self._ledger = CommandLedger(runtime.chain, info, end_session=self.terminate)
        self._closed = False
        self._waiting: dict[int, Callable[[HeldStatement], None]] = {}  # seq -> tell held
        self.channelLookup = {b"session": SessionChannel, b"direct-tcpip": DirectTcpipChannel}
        upstream.on_lost = self.terminate
        from hoopgw_ssh.channels import open_reverse_channel

        upstream.on_channel_open = lambda kind, data, window, packet: open_reverse_channel(
            self, kind, data, window, packet
        )

    @property
    def chain(self) -> Any:
        """The plugin chain in force for the session (it takes a reloaded config's at its next
        command, :class:`~hoopgw.ledger.CommandLedger`)."""
        return self._ledger.chain

    @property
    def client_connection(self) -> RelayConnection:
        """The ``ssh-connection`` service towards the client."""
        service = self._transport.service
        assert isinstance(service, RelayConnection)
        return service

    # -- commands ------------------------------------------------------------------------------

    def new_command(self, text: str, kind: str, details: dict[str, Any]) -> Command:
        """The next command of this session (numbered from 1), with the text to record as
        the ``audit_text`` hooks rewrote it (:meth:`~hoopgw.runtime.chain.PluginChain.recordable`).

        :raises Exception: what a failing ``audit_text`` hook raised; the session is ended.
        """
        command = Command(
            session_id=self.info.id,
            seq=self._ledger.next_seq(),
            text=text,
            kind=kind,
            details=details,
        )
        try:
            return self.chain.recordable(self.info, command)
        except Exception:
            log.failure("audit_text hook failed; session ended")
            self.terminate("command recording failed; session ended")
            raise

    def decide(
        self, command: Command, held: Callable[[HeldStatement], None] | None = None
    ) -> defer.Deferred[Allow | Block]:
        """Decide ``command`` with the chain. When the session ends first, the decision is
        cancelled (a pending review is withdrawn) and fires with ``Block``; a command left
        open is aborted.

        :param held: called if the command is held for review, to tell the client it waits.
        """

        def withdrawn(failure: Failure) -> Block:
            failure.trap(defer.CancelledError)
            return Block(reason="withdrawn: the session ended")

        def settled(result: Any) -> Any:
            self._waiting.pop(command.seq, None)
            return result

        if held is not None:
            self._waiting[command.seq] = held
        return self._ledger.decide(command).addBoth(settled).addErrback(withdrawn)

    def statement_held(self, statement: HeldStatement) -> None:
        """One of this session's commands waits for review: tell whoever asked for it."""
        tell = self._waiting.pop(statement.command_seq, None)
        if tell is not None:
            tell(statement)

    @property
    def is_closed(self) -> bool:
        """Whether the session has ended."""
        return self._closed

    def complete(self, command: Command, outcome: CommandOutcome) -> None:
        """Report ``command`` finished; the first report wins."""
        self._ledger.complete(command, outcome)

    # -- the end -------------------------------------------------------------------------------

    def terminate(self, reason: str) -> None:
        """End the session: an SSH disconnect to the client that says ``reason``."""
        if self._closed:
            return
        self._transport.sendDisconnect(
            transport.DISCONNECT_BY_APPLICATION, reason.encode("utf-8", "replace")
        )
        self.closed(reason)

    def closed(self, reason: str) -> None:
        """Report the session closed (once): the target link ended, pending decisions
        withdrawn and open commands completed (:meth:`~hoopgw.ledger.CommandLedger.close`)."""
        if self._closed:
            return
        self._closed = True
        self.upstream.on_lost = None
        upstream_transport = self.upstream.transport
        if upstream_transport is not None:
            upstream_transport.loseConnection()
        self.runtime.sessions.remove(self)
        self._ledger.close(reason)

    def logout(self) -> None:
        """Conch's logout: the client connection is gone."""
        self.closed("client closed")


class ServerTransport(transport.SSHServerTransport):
    """The server side of one client connection."""

    factory: SshServerFactory
    transport: Any

    def connectionMade(self) -> None:
        runtime = self.factory.runtime
        self.clock = runtime.reactor
        self.login_timeout = runtime.gateway.auth_timeout
        self.gateway_session: GatewaySession | None = None
        self._admitting = False
        peer = self.transport.getPeer()
        self.client_address = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', 0)}"
        set_no_delay(self.transport)  # keystrokes go at once, not after Nagle's wait
        modern_transport(self)
        self._gate: defer.Deferred[Any] = runtime.chain.decide(
            "client_connected", connection=runtime.info, client_address=self.client_address
        )
        super().connectionMade()  # our version string goes first
        self._gate.addCallback(self._gated)

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        """Announce the user-auth signature algorithms the gateway accepts as
        ``server-sig-algs`` (Conch announces its host-key list there)."""
        announced = [
            (name, b",".join(USER_KEY_ALGORITHMS) if name == b"server-sig-algs" else value)
            for name, value in extensions
        ]
        super().sendExtInfo(announced)

    def _gated(self, verdict: Any) -> Any:
        """A refused connection ends at once, before it may authenticate."""
        if isinstance(verdict, Block | Hold):
            self.sendDisconnect(
                transport.DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT,
                f"connection refused: {verdict.reason}".encode("utf-8", "replace"),
            )
        return verdict

    def login_portal(self) -> _Login:
        """What :class:`~hoopgw_ssh.auth.GatewayUserAuth` logs in through."""
        runtime = self.factory.runtime
        return _Login(
            directory=self.factory.directory,
            checks=_Checks(runtime, self.client_address),
            admit=self._admit,
            reactor=runtime.reactor,
        )

    def _admit(self, identity: Identity, username: bytes) -> defer.Deferred[Any]:
        if self._admitting:
            # A client may send its next login request before the last one is answered; one
            # session per connection, one upstream login per session.
            return defer.fail(UnauthorizedLogin("a login is in progress already"))
        self._admitting = True
        d = defer.ensureDeferred(self._start_session(identity, username))

        def refused(failure: Failure) -> Failure:
            if failure.check(SessionRefused, AccessDenied, UpstreamError):
                message = failure.getErrorMessage()
            else:
                log.failure("SSH session start failed", failure)
                message = "session refused: internal error"
            log.info(
                "SSH session of {identity} refused: {message}",
                identity=identity.name,
                message=message,
            )
            self.sendDisconnect(
                transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                message.encode("utf-8", "replace"),
            )
            return Failure(error.IgnoreAuthentication())

        return d.addErrback(refused)

    async def _start_session(self, identity: Identity, username: bytes) -> GatewaySession:
        runtime = self.factory.runtime
        verdict = await self._gate
        if isinstance(verdict, Block | Hold):
            raise SessionRefused(f"connection refused: {verdict.reason}")
        await runtime.authenticator.admit(
            identity, runtime.config, client_address=self.client_address
        )
        info = SessionInfo(
            id=str(uuid.uuid4()),
            connection=runtime.info,
            identity=identity,
            client_address=self.client_address,
            # Both legs are SSH: encrypted and integrity-protected, though not TLS.
            client_tls=True,
            upstream_tls=True,
            started_at=runtime.reactor.seconds(),
            attributes={
                "ssh_user": username.decode("utf-8", "replace"),
                "client_version": (self.otherVersionString or b"").decode("ascii", "replace"),
            },
        )
        started = await runtime.chain.decide("session_started", session=info)
        if isinstance(started, Block | Hold):
            runtime.chain.notify("session_closed", session=info, reason=started.reason)
            raise SessionRefused(f"session refused: {started.reason}")
        try:
            upstream = await connect_upstream(
                runtime.config,
                runtime.reactor,
                timeout=runtime.gateway.auth_timeout,
                connect=runtime.connect_upstream,
            )
        except UpstreamError as exc:
            runtime.upstream_failed()
            runtime.chain.notify("session_closed", session=info, reason=str(exc))
            raise
        if not self.transport.connected:
            upstream_link: Any = upstream.transport
            upstream_link.loseConnection()
            runtime.chain.notify("session_closed", session=info, reason="client closed")
            raise SessionRefused("client closed")
        session = GatewaySession(runtime, self, info, upstream)
        self.gateway_session = session
        runtime.sessions.add(session)
        log.info(
            "SSH session {session_id} of {identity} ({method}) on {connection}",
            session_id=info.id,
            identity=identity.name,
            method=identity.method,
            connection=runtime.info.name,
        )
        return session

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if self.gateway_session is not None:
            self.gateway_session.closed("client closed")


class _Checks:
    """The authenticator's checks for one client address (see ``auth.LoginChecks``)."""

    def __init__(self, runtime: ConnectionRuntime, client_address: str) -> None:
        self._authenticator = runtime.authenticator
        self._where = {"client_address": client_address, "connection": runtime.config.name}

    def authenticate(self, secret: str) -> defer.Deferred[Identity]:
        return self._authenticator.authenticate(secret, **self._where)

    def failed(self, message: str, *, reason: str) -> defer.Deferred[Any]:
        return self._authenticator.failed(message, reason=reason, method="ssh-key", **self._where)

    def refuse_if_saturated(self) -> defer.Deferred[Any] | None:
        return self._authenticator.refuse_if_saturated(method="ssh-key", **self._where)


class SshServerFactory(factory.SSHFactory):
    """Serves one configured SSH connection; built by the ``ssh`` :class:`ProtocolSpec`."""

    noisy = False
    protocol = ServerTransport
    services = {
        b"ssh-userauth": GatewayUserAuth,
        b"ssh-connection": RelayConnection,
    }

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        settings = ssh_config(runtime.config.protocol_options)
        key, created = load_or_create_host_key(settings.host_key)
        log.info(
            "SSH connection {connection}: host key {fingerprint}{created} ({path})",
            connection=runtime.config.name,
            fingerprint=fingerprint(key),
            created=" (created now)" if created else "",
            path=settings.host_key,
        )
        self.privateKeys = {key.sshType(): key}
        self.publicKeys = {key.sshType(): key.public()}
        self.primes = None
        private_key = runtime.config.credential.private_key
        if private_key is not None:
            try:
                load_private_key(private_key)
            except (keys.BadKeyError, keys.EncryptedKeyError, ValueError) as exc:
                raise ConfigError(
                    f"not a usable unencrypted private key ({exc})",
                    key="credential.private_key",
                    connection=runtime.config.name,
                ) from None
        if runtime.store is None:
            raise RuntimeError("the SSH protocol needs the gateway's store (SSH key lookups)")
        self.directory = SshKeyDirectory(runtime.store)
