"""The gateway's own connection to the target MySQL or MariaDB server: TLS per ``sslmode``, the
login with the stored credential (every plugin in :mod:`hoopgw_mysql.auth`, auth switches
included), then a plain packet pipe for the client session."""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.transport import send_now
from hoopgw_mysql import messages as m
from hoopgw_mysql.analysis import TRACKED_VARIABLES, LexingState
from hoopgw_mysql.auth import PasswordAuthenticator, UpstreamAuthError

log = Logger(namespace="hoopgw.mysql.upstream")

TRACKED_DEFAULTS = (
    "autocommit",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "time_zone",
    *TRACKED_VARIABLES,
)
"""The variables whose changes the target reports (MariaDB's default list plus
:data:`TRACKED_VARIABLES`)."""


def read_only_variable(server_version: str) -> str:
    """The session variable that holds the access mode of a target's next transactions:
    ``tx_read_only`` on MariaDB, ``transaction_read_only`` on MySQL (5.7.20 and later)."""
    return "tx_read_only" if "mariadb" in server_version.lower() else "transaction_read_only"


def read_only_statement(variable: str) -> bytes:
    """Sent after login (and after each reset of the session) on a read-only connection, and
    again after any command whose answer says the session's tracked state changed: every
    later transaction of the session is read-only on the server (error 1792 on a write).

    The target is also asked to report ``variable``: a stored function may turn it off (MariaDB
    keeps that change after the call), and the state-changed flag of the answer is then the
    only sign of it (a result set that ends in an EOF packet carries no report).
    """
    tracked = ",".join((*TRACKED_DEFAULTS, variable))
    return (
        f"SET SESSION session_track_system_variables = '{tracked}', SESSION {variable} = 1"
    ).encode()


CAPABILITIES_NEEDED = m.CLIENT_PROTOCOL_41 | m.CLIENT_SECURE_CONNECTION | m.CLIENT_PLUGIN_AUTH
"""What the gateway needs from any target."""

WIRE_CAPABILITIES = (
    m.CLIENT_DEPRECATE_EOF
    | m.CLIENT_SESSION_TRACK
    | m.CLIENT_MULTI_RESULTS
    | m.CLIENT_PS_MULTI_RESULTS
    | m.CLIENT_MULTI_STATEMENTS
)
"""Capabilities that change what travels after login: a client that negotiated one with the
gateway must get it from the target too, or the two would speak different protocols."""

TRACKING_SETUP = (
    "SET SESSION session_track_system_variables = '"
    + ",".join(TRACKED_DEFAULTS)
    + "', sql_mode = @@session.sql_mode, character_set_client = @@session.character_set_client,"
    " character_set_results = @@session.character_set_results"
)
"""Run after every login and reset: the target reports, in the OK of every statement, each of
the lexing settings a statement sets (:data:`TRACKED_DEFAULTS`), and this statement's own OK
reports their values now (a variable set to itself counts), with ``character_set_results``, the
set the target writes its messages in."""


FOLLOWED_VARIABLES = (*TRACKED_VARIABLES, "character_set_results")
"""What the tracking list must keep: the lexing settings, and the character set the target
writes its messages in (read in it to mask them)."""


def lexing_report(state: LexingState, variables: dict[str, bytes]) -> tuple[LexingState, str]:
    """``state`` updated by the ``variables`` an OK reports, and what is wrong with the
    report (empty when nothing is): the tracking list lost a variable the gateway follows."""
    tracked = variables.get("session_track_system_variables")
    if tracked is not None:
        names = {n.strip().lower() for n in tracked.decode("ascii", "replace").split(",")}
        missing = set(FOLLOWED_VARIABLES) - names
        if missing and "*" not in names:
            return state, (
                "the target stopped reporting "
                + ", ".join(sorted(missing))
                + " (session_track_system_variables changed)"
            )
    settings = state.settings
    for name in ("sql_mode", "character_set_client"):
        if name in variables:
            settings[name] = variables[name].decode("ascii", "replace")
    return LexingState.of(settings), ""


class UpstreamListener(TypingProtocol):
    """What the upstream connection reports to the client session."""

    def upstream_greeted(self, handshake: m.Handshake) -> None:
        """The target's greeting arrived (its version and capabilities)."""

    def upstream_ready(self, ok: bytes, tls: bool) -> None:
        """Login succeeded; ``ok`` is the target's final OK payload."""

    def upstream_failed(self, code: int, message: str) -> None:
        """Login or connection failed; ``message`` never holds the credential."""

    def upstream_packets(self, packets: list[m.Packet]) -> None:
        """Server packets after login, in order."""

    def upstream_closed(self) -> None:
        """The connection to the target ended."""


class UpstreamConnection(protocol.Protocol):
    """Logs in to the target, then pipes packets to and from the client session.

    :param capabilities: what the client negotiated with the gateway; the gateway asks the
        target for no more than that (never compression; ``CLIENT_LOCAL_FILES`` only with
        ``local_infile``).
    :param local_infile: the connection enables LOCAL INFILE.
    :param read_only: make the session read-only (:data:`READ_ONLY_STATEMENT`) before it is
        reported ready; a target that refuses fails the login.
    """

    transport: Any

    def __init__(
        self,
        listener: UpstreamListener,
        *,
        user: str,
        password: str | None,
        database: str | None,
        capabilities: int,
        charset: int,
        sslmode: str,
        tls_options: Any,
        loopback: bool,
        max_length: int,
        local_infile: bool = False,
        read_only: bool = False,
    ) -> None:
        self.listener = listener
        self._read_only = read_only
        self._login_ok = b""
        self._user = user
        self._password = (password or "").encode()
        self._database = database
        self._client_caps = capabilities
        self._charset = charset
        self._sslmode = sslmode
        self._tls_options = tls_options
        self._loopback = loopback
        self._local_infile = local_infile
        self._reader = m.PacketReader(max_length=max_length)
        self._phase = "greeting"
        self._seq = 0
        self._auth: PasswordAuthenticator | None = None
        self._handshake: m.Handshake | None = None
        self.capabilities = 0
        """Capabilities negotiated with the target."""
        self.tls = False
        self._closed_reported = False
        self.lexing: LexingState | None = None
        """The session's lexing settings as the target reported them after the login."""
        self.results_charset = "utf8mb4"
        """``character_set_results`` as the target reported it after the login: what its
        messages are written in."""
        self.read_only_variable = "tx_read_only"
        """The variable of the target's access mode (:func:`read_only_variable`)."""
        self._login_ok = b""

    # -- Twisted -----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except m.ProtocolViolation as exc:
            self._fail(2027, f"the target sent an invalid packet: {exc}")
            return
        if self._phase == "ready":
            if packets:
                self.listener.upstream_packets(packets)
            return
        for index, packet in enumerate(packets):
            try:
                self._login_packet(packet)
            except (m.ProtocolViolation, UpstreamAuthError) as exc:
                self._fail(1045 if isinstance(exc, UpstreamAuthError) else 2027, str(exc))
                return
            if self._phase == "ready":
                rest = packets[index + 1 :]
                if rest:
                    self.listener.upstream_packets(rest)
                return
            if self._phase == "failed":
                return

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._phase not in ("ready", "failed"):
            why = reason.getErrorMessage() if reason is not None else "closed"
            self._phase = "failed"
            self.listener.upstream_failed(
                2013, f"the target closed the connection during login ({why})"
            )
            return
        if not self._closed_reported:
            self._closed_reported = True
            self.listener.upstream_closed()

    def close(self) -> None:
        """Close the connection (after the client went away or the session ended)."""
        self._closed_reported = True
        if self.transport is not None:
            if self._phase == "ready":
                self.transport.unregisterProducer()  # a TLS transport closes only without one
            self.transport.loseConnection()

    def send(self, payload: bytes, seq: int) -> int:
        """Frame and send ``payload`` from sequence id ``seq``; return the next id."""
        data, following = m.encode_packet(payload, seq)
        send_now(self.transport, [data])
        return following

    # -- login -------------------------------------------------------------------------------

    def _write(self, payload: bytes) -> None:
        data, self._seq = m.encode_packet(payload, self._seq)
        self.transport.write(data)

    def _login_packet(self, packet: m.Packet) -> None:
        self._seq = (packet.seq + 1) & 0xFF
        payload = packet.payload
        if self._phase == "greeting":
            self._greeting(m.Handshake.decode(payload))
            return
        if self._phase == "tracking":
            self._tracking_answer(payload)
            return
        if self._phase == "read-only":
            self._read_only_answer(payload)
            return
        if m.is_ok(payload):
            # Follow the lexing settings from here on (the client's first command waits), then
            # make the session read-only where a plugin requires it.
            self._login_ok = payload
            self._phase = "tracking"
            self._seq = 0
            self._write(bytes((m.COM_QUERY,)) + TRACKING_SETUP.encode())
            return
        if m.is_err(payload):
            error = m.ErrPacket.decode(payload)
            log.info(
                "the target refused the login: {code} {message}",
                code=error.code,
                message=error.message,
            )
            self._fail(error.code, f"the target refused the gateway's login: {error.message}")
            return
        assert self._auth is not None
        if payload[:1] == b"\xfe":
            switch = m.AuthSwitchRequest.decode(payload)
            self._write(self._auth.start(switch.plugin, switch.data))
            return
        if payload[:1] == b"\x01":
            answer = self._auth.more_data(payload[1:])
            if answer is not None:
                self._write(answer)
            return
        raise m.ProtocolViolation(f"unexpected packet 0x{payload[:1].hex()} during login")

    def _read_only_answer(self, payload: bytes) -> None:
        if m.is_ok(payload):
            self._phase = "ready"
            self.listener.upstream_ready(self._login_ok, self.tls)
            return
        message = m.ErrPacket.decode(payload).message if m.is_err(payload) else "no OK"
        self._fail(
            1792, f"the target refused to make the session read-only (fail closed): {message}"
        )

    def _tracking_answer(self, payload: bytes) -> None:
        if m.is_err(payload):
            error = m.ErrPacket.decode(payload)
            raise UpstreamAuthError(
                f"the target refused session-state tracking ({error.message}): hoopgw needs it"
                " to follow sql_mode and character_set_client"
            )
        variables = m.OkPacket.decode(payload).system_variables(self.capabilities)
        missing = {"sql_mode", "character_set_client", "character_set_results"} - variables.keys()
        if missing:
            raise m.ProtocolViolation(f"the target did not report {', '.join(sorted(missing))}")
        self.lexing, problem = lexing_report(LexingState(), variables)
        if problem:
            raise m.ProtocolViolation(problem)
        charset = variables.get("character_set_results")
        if charset is not None:
            self.results_charset = charset.decode("ascii", "replace")
        if self._read_only:
            self._phase = "read-only"
            self._seq = 0
            self._write(bytes((m.COM_QUERY,)) + read_only_statement(self.read_only_variable))
            return
        self._phase = "ready"
        self.listener.upstream_ready(self._login_ok, self.tls)

    def _greeting(self, handshake: m.Handshake) -> None:
        self._handshake = handshake
        self.read_only_variable = read_only_variable(handshake.server_version)
        self.listener.upstream_greeted(handshake)
        server = handshake.capabilities
        if server & CAPABILITIES_NEEDED != CAPABILITIES_NEEDED:
            raise m.ProtocolViolation("the target does not support protocol 4.1 pluggable auth")
        if not server & m.CLIENT_SESSION_TRACK:
            raise m.ProtocolViolation(
                "the target does not offer session-state tracking (MariaDB 10.2 or MySQL 5.7"
                " and later): hoopgw needs it to follow sql_mode and character_set_client"
            )
        missing = self._client_caps & WIRE_CAPABILITIES & ~server
        if missing:
            raise m.ProtocolViolation(
                f"the target lacks capabilities the client negotiated (0x{missing:x})"
            )
        caps = (self._client_caps & server) | CAPABILITIES_NEEDED | m.CLIENT_SESSION_TRACK
        caps &= ~(m.CLIENT_COMPRESS | m.CLIENT_ZSTD_COMPRESSION | m.CLIENT_SSL)
        if not self._local_infile:
            caps &= ~m.CLIENT_LOCAL_FILES
        caps &= ~(m.CLIENT_QUERY_ATTRIBUTES | m.CLIENT_OPTIONAL_RESULTSET_METADATA)
        caps &= ~(m.CLIENT_CONNECT_WITH_DB | m.CLIENT_CONNECT_ATTRS)
        if self._database:
            caps |= m.CLIENT_CONNECT_WITH_DB
        caps |= server & m.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        use_tls = self._sslmode != "disable" and bool(server & m.CLIENT_SSL)
        if self._sslmode in ("require", "verify-full") and not use_tls:
            raise UpstreamAuthError(
                f"the target does not offer TLS (upstream_tls sslmode={self._sslmode})"
            )
        if use_tls:
            caps |= m.CLIENT_SSL
        self.capabilities = caps
        if use_tls:
            self._write(
                m.HandshakeResponse(
                    capabilities=caps, charset=self._charset, ssl_request=True
                ).encode()
            )
            self.transport.startTLS(self._tls_options)
            self.tls = True
        self._auth = PasswordAuthenticator(
            self._password, secure=self.tls, cleartext_allowed=self.tls or self._loopback
        )
        plugin = handshake.auth_plugin or "mysql_native_password"
        try:
            answer = self._auth.start(plugin, handshake.scramble)
        except UpstreamAuthError:
            # Offer nothing for a plugin we will not use here; the server switches to another.
            plugin, answer = "mysql_native_password", self._auth.start("", handshake.scramble)
        self._phase = "auth"
        self._write(
            m.HandshakeResponse(
                capabilities=caps,
                charset=self._charset,
                user=self._user,
                auth_response=answer,
                database=self._database,
                auth_plugin=plugin,
            ).encode()
        )

    def _fail(self, code: int, message: str) -> None:
        if self._phase == "failed":
            return
        was_ready = self._phase == "ready"
        self._phase = "failed"
        if was_ready:
            log.info("upstream protocol error: {message}", message=message)
            self._closed_reported = True
            self.listener.upstream_closed()
        else:
            self.listener.upstream_failed(code, message)
        if self.transport is not None:
            self.transport.loseConnection()


class TargetInfo:
    """What the gateway knows of a connection's target: its version and capabilities, from
    its latest greeting. The gateway greets clients with them, so a client negotiates only
    what the target can do and sees the target's real version (clients choose collations
    and features by it)."""

    def __init__(self) -> None:
        self.version: str | None = None
        """The target's version string, None until a greeting was seen."""
        self.capabilities: int | None = None
        """The target's capability flags, None until a greeting was seen."""
        self._waiting: list[defer.Deferred[None]] = []
        self.probing = False
        """Whether a probe login is under way (set by whoever starts it)."""

    def learned(self, handshake: m.Handshake) -> None:
        """Remember what ``handshake`` says."""
        self.version = handshake.server_version
        self.capabilities = handshake.capabilities

    def known(self) -> defer.Deferred[None]:
        """Fires once a greeting was seen or a probe ended (successfully or not)."""
        if self.version is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def probe_ended(self) -> None:
        """A probe ended; release everyone who waits (with defaults if it failed)."""
        self.probing = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(None)


class ProbeListener:
    """Logs in once to learn the target's greeting, then says goodbye (COM_QUIT)."""

    def __init__(self, info: TargetInfo) -> None:
        self.info = info
        self.connection: UpstreamConnection | None = None

    def upstream_greeted(self, handshake: m.Handshake) -> None:
        self.info.learned(handshake)

    def upstream_ready(self, ok: bytes, tls: bool) -> None:
        assert self.connection is not None
        self.connection.send(bytes((m.COM_QUIT,)), 0)
        self.connection.close()
        self.info.probe_ended()

    def upstream_failed(self, code: int, message: str) -> None:
        log.info("probing the target failed: {message}", message=message)
        self.info.probe_ended()

    def upstream_packets(self, packets: list[m.Packet]) -> None:
        """Nothing is expected after the login."""

    def upstream_closed(self) -> None:
        self.info.probe_ended()
