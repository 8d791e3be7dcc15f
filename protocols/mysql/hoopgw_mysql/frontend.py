"""One client of a MySQL connection: the gateway's greeting, TLS, authentication with the
caller's own key, the upstream login with the stored credential, and the proxy loop that hands
every statement to the plugin chain before it is forwarded.

Client authentication: the greeting names ``mysql_native_password`` (what every client
expects), and the gateway answers the client's first response with an AuthSwitchRequest to
``mysql_clear_password``: the key has to reach the gateway to be checked, so it is accepted only
inside TLS or from loopback (or with ``allow_cleartext_password``). A client that already
answered with ``mysql_clear_password`` is not asked twice.

MySQL answers one command at a time, so the session forwards a command, reads its whole
response (:mod:`hoopgw_mysql.tracking`), and only then takes the next one. Every payload is
re-framed with the sequence ids of its own side, so a row that a data hook rewrote (and that
may now span a different number of 16 MiB packets) stays correctly numbered.

Flow control: while a command waits for its verdict, and while the client cannot keep up with
results, the other side stops being read (Twisted producers, as in ``portforward``).
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw import errors as refusals
from hoopgw.errors import (
    STORE_UNAVAILABLE,
    AccessDenied,
    AuthenticationError,
    PluginError,
    StoreError,
)
from hoopgw.ledger import CommandLedger
from hoopgw.protocol import ConnectionRuntime
from hoopgw.session import Column, Command, CommandOutcome, Identity, Output, SessionInfo
from hoopgw.transport import (
    READ_PAUSE_DECISION,
    READ_PAUSE_LOGIN,
    ReadGate,
    client_tls_options,
    is_loopback,
    send_now,
    set_no_delay,
)
from hoopgw.verdicts import Block, Hold
from hoopgw_mysql import messages as m
from hoopgw_mysql import tracking as t
from hoopgw_mysql.analysis import KEEPS_LEXING, LexingEffect, LexingState, lexing_effect
from hoopgw_mysql.auth import CLEAR
from hoopgw_mysql.charsets import (
    UndecodableText,
    column_codecs,
    from_utf8,
    message_codec,
    message_text,
    message_wire,
    to_utf8,
)
from hoopgw_mysql.parameters import LongData, ParameterTypes, execute_parameters
from hoopgw_mysql.upstream import (
    TRACKING_SETUP,
    ProbeListener,
    TargetInfo,
    UpstreamConnection,
    lexing_report,
    read_only_statement,
)

log = Logger(namespace="hoopgw.mysql")

GATEWAY_CAPABILITIES = (
    m.CLIENT_LONG_PASSWORD
    | m.CLIENT_FOUND_ROWS
    | m.CLIENT_LONG_FLAG
    | m.CLIENT_CONNECT_WITH_DB
    | m.CLIENT_NO_SCHEMA
    | m.CLIENT_ODBC
    | m.CLIENT_IGNORE_SPACE
    | m.CLIENT_PROTOCOL_41
    | m.CLIENT_INTERACTIVE
    | m.CLIENT_IGNORE_SIGPIPE
    | m.CLIENT_TRANSACTIONS
    | m.CLIENT_RESERVED
    | m.CLIENT_SECURE_CONNECTION
    | m.CLIENT_MULTI_STATEMENTS
    | m.CLIENT_MULTI_RESULTS
    | m.CLIENT_PS_MULTI_RESULTS
    | m.CLIENT_PLUGIN_AUTH
    | m.CLIENT_CONNECT_ATTRS
    | m.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | m.CLIENT_SESSION_TRACK
    | m.CLIENT_DEPRECATE_EOF
)
"""What the gateway offers clients. Never offered: compression (the gateway must read every
byte), ``CLIENT_LOCAL_FILES`` (a server could read the client's files), query attributes and
optional result metadata (MariaDB has neither)."""

DEFAULT_SERVER_VERSION = "8.0.0-hoopgw"
LOGIN_MAX_PACKET = 1 << 17
"""Largest packet a client may send before its login completes (a handshake response with
connection attributes, a key or a token), so that an unauthenticated client cannot make the
gateway buffer ``max_message_size`` bytes (PostgreSQL's startup packet is bounded likewise)."""
CHARSET_UTF8MB4 = 45

# Error numbers and SQL states (MySQL server error reference).
ER_ACCESS_DENIED = 1045
ER_UNKNOWN_ERROR = 1105
ER_DBACCESS_DENIED = 1044
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_UNKNOWN_COM = 1047
ER_HANDSHAKE = 1043
ER_NET_PACKET_TOO_LARGE = 1153
ER_CONNECTION_KILLED = 1927
ER_QUERY_INTERRUPTED = 1317
ER_UNKNOWN_CHARACTER_SET = 1115
ER_CONNECT_TO_FOREIGN_DATA_SOURCE = 1429
"""Said when the target cannot be reached or answers wrongly: a server error number (a client
library reports a client-range number such as 2013 sent by a server as a malformed packet)."""
CR_SERVER_LOST = 2013

CLIENT_COLLATIONS = frozenset(
    {11, 65, 63, 33, 83, *range(192, 216), 223, 45, 46, *range(224, 248), 255}
    | {5, 8, 15, 31, 47, 48, 49, 94}
)
"""Collation ids of ascii, binary, utf8mb3, utf8mb4 (255: MySQL 8's utf8mb4_0900_ai_ci) and
latin1, the client character sets the statement analysis reads exactly as the server does
(:data:`hoopgw_mysql.analysis.CLIENT_CHARSETS`). In others a multi-byte character may end in
the byte of a quote or backslash (gbk, big5, sjis); ``SET NAMES`` to them is refused likewise."""

COLLATION_CHARSETS = {
    **dict.fromkeys((11, 65), "ascii"),
    63: "binary",
    **dict.fromkeys((33, 83, *range(192, 216), 223), "utf8mb3"),
    **dict.fromkeys((45, 46, *range(224, 248), 255), "utf8mb4"),
    **dict.fromkeys((5, 8, 15, 31, 47, 48, 49, 94), "latin1"),
}
"""The character set of each of :data:`CLIENT_COLLATIONS`: what ``server_row_messages`` is
told the rows' text is in (a result column's collation is that of ``character_set_results``,
which may be another, utf16 say: then the encoding is unknown)."""

ER_LEXING = 1231
"""ER_WRONG_VALUE_FOR_VAR: the answer to a command refused for the session's lexing settings."""

_CP1252 = {
    byte: bytes((byte,)).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}
"""MySQL's latin1 is Windows-1252; its five unassigned bytes stay the control characters of
the same code (so the decoding can be undone byte for byte)."""


def decode_text(data: bytes, charset: str) -> str:
    """A statement's bytes as text in the client character set ``charset``, reversibly:
    bytes not valid in it travel as lone surrogates (``surrogateescape``), so the analysis
    still reads every byte where the server does."""
    if charset == "latin1":
        return data.decode("latin-1").translate(_CP1252)
    if charset == "ascii":
        return data.decode("ascii", "surrogateescape")
    return data.decode("utf-8", "surrogateescape")


def record_text(text: str) -> str:
    """``text`` as the audit store can keep it: each byte that was not valid in the client
    character set (a lone surrogate, see :func:`decode_text`) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


READ_PAUSE_BACKLOG = "backlog"
"""Why the client is not read: it sent ahead while earlier commands wait for their answers."""

SET_OPTIONS = {0: "MULTI_STATEMENTS_ON", 1: "MULTI_STATEMENTS_OFF"}
"""COM_SET_OPTION's values (``enum_mysql_set_option``), as its record names them."""


def _scramble() -> bytes:
    # Printable bytes without NUL or '$', as servers send.
    alphabet = bytes(range(0x21, 0x7F)).replace(b"$", b"")
    return bytes(secrets.choice(alphabet) for _ in range(20))


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@attrs.frozen
class _Refusal:
    code: int
    sqlstate: str
    message: str


@attrs.define
class _InFlight:
    """The command whose response is being relayed."""

    command: Command | None
    reader: t.ResponseReader
    binary: bool = False
    forwarded_at: float = 0.0
    rows: int = 0
    affected: int = 0
    bytes: int = 0
    error_code: str = ""
    error_message: str = ""
    statement_id: int | None = None
    prepared_text: str = ""
    then: Any = None
    """Called instead of answering the client when the response ends (an internal step whose
    answer the client does not expect)."""
    reports: bool = True
    """Whether its end is reported (``command_completed``); a FETCH belongs to the execute
    that opened the cursor, which was reported already."""
    columns: list[Column] | None = None
    """The current result's columns as handed to plugins."""
    must_succeed: str = ""
    """For an internal step the session's safety rests on (making it read-only again): what
    it does. An error answer then ends the session instead of reaching the client."""
    charset_learned: bool = False
    """Its ERR packet waited for the target to report ``character_set_results`` again."""
    lexing: LexingEffect = KEEPS_LEXING
    """What the command may do to the session's lexing settings: a change the target reports
    for a command that may make none ends the session."""
    reported: bool = False
    """Whether the target reported a lexing setting in the answer."""
    setup: bool = False
    """The gateway's own :data:`~hoopgw_mysql.upstream.TRACKING_SETUP` (after a reset)."""


class ClientSession(protocol.Protocol):
    """Serves one MySQL client on one configured connection."""

    transport: Any

    @property
    def chain(self) -> Any:
        """The plugin chain in force: the session's once it started (it takes a reloaded
        config's at its next command, :class:`~hoopgw.ledger.CommandLedger`), the
        connection's before."""
        return self.runtime.chain if self._ledger is None else self._ledger.chain

    def __init__(self, runtime: ConnectionRuntime, target: TargetInfo) -> None:
        self.runtime = runtime
        self._target = target  # shared by the connection: the target's last greeting
        self._reader = m.PacketReader(
            max_length=min(LOGIN_MAX_PACKET, runtime.gateway.max_message_size)
        )
        self._phase = "greeting"
        self._inbox: deque[m.Packet] = deque()
        self._busy = False
        self._closed = False
        self.client_tls = False
        self.client_address = ""
        self._peer_host = ""
        self._seq = 0  # next sequence id towards the client
        self._up_seq = 0
        self._capabilities = 0
        self._offered = 0
        self._response: m.HandshakeResponse | None = None
        self.identity: Identity | None = None
        self.session: SessionInfo | None = None
        self.upstream: UpstreamConnection | None = None
        self._pending: defer.Deferred[Any] | None = None
        self._auth_timer: Any = None
        self._gate: ReadGate | None = None
        self._ledger: CommandLedger | None = None  # the session's commands, once it started
        self._statements: dict[int, str] = {}
        self._statement_params: dict[int, int] = {}
        # What each statement's last forwarded execution bound (a later one may not send types)
        # and the long data sent since: both are part of what an execution runs.
        self._statement_types: dict[int, ParameterTypes] = {}
        self._long_data: dict[int, dict[int, LongData]] = {}
        # Per statement id: why a plugin refused some of its COM_STMT_SEND_LONG_DATA (which
        # has no answer): its next execute is answered with that refusal instead.
        self._long_data_refused: dict[int, str] = {}
        # Per statement id: the execute that opened a cursor and its result's columns, so
        # that COM_STMT_FETCH rows pass the data hooks as that command's rows.
        self._cursors: dict[int, tuple[Command, list[m.ColumnDefinition]]] = {}
        self._in_flight: _InFlight | None = None
        self._connection_id = secrets.randbits(31) or 1
        self._quitting = False
        self._change: m.ChangeUser | None = None
        self._local_infile = False
        self._scramble = b""
        self._login_ok = b""
        self._read_only = False  # plugins require the target's session to be read-only
        self._lexing = LexingState()
        # The server sends its messages in character_set_results, as the target reports it.
        self._results_charset = "utf8mb4"
        self._up_caps = 0  # what the target negotiated with the gateway
        self._statement_lexing: dict[int, LexingEffect] = {}
        self._welcomed = False  # the two transports are each other's producers from then on
        self._sql_prepared: dict[str, LexingEffect] = {}  # SQL PREPARE names (lexing_effect)

    # -- Twisted events ----------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._peer_host = getattr(peer, "host", "")
        self.client_address = f"{self._peer_host}:{getattr(peer, 'port', '')}"
        self._gate = ReadGate(self.transport)
        set_no_delay(self.transport)
        self._auth_timer = self.runtime.reactor.callLater(
            self.runtime.gateway.auth_timeout, self._auth_timed_out
        )
        self._wait(
            self.chain.decide(
                "client_connected", connection=self.runtime.info, client_address=self.client_address
            ),
            self._connected_decided,
        )

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._inbox.extend(self._reader.feed(data))
        except m.ProtocolViolation as exc:
            self._fatal(ER_NET_PACKET_TOO_LARGE, "08S01", f"invalid packet: {exc}", log_it=True)
            return
        if self._busy and self._inbox and self._gate is not None:
            # A client that sends ahead waits until its earlier commands are answered.
            self._gate.pause(READ_PAUSE_BACKLOG)
        self._process()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closed = True
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        if self.upstream is not None:
            self.upstream.close()
        self._end_session("client closed")

    # -- driving the inbox -------------------------------------------------------------------

    def _wait(self, d: defer.Deferred[Any], then: Any) -> None:
        """Process no client input until ``d`` fires, then call ``then`` with its result."""
        fired: list[Any] = []
        waiting = False

        def done(result: Any) -> None:
            if not waiting:
                fired.append(result)
                return
            if self._pending is not d:
                return
            self._pending = None
            self._busy = False
            if self._closed:
                return
            if self._gate is not None:
                self._gate.resume(READ_PAUSE_DECISION)
            self._apply(then, result)
            self._process()

        d.addBoth(done)
        if fired:
            self._apply(then, fired[0])
            return
        waiting = True
        self._busy = True
        if self._gate is not None:
            self._gate.pause(READ_PAUSE_DECISION)
        self._pending = d

    def _apply(self, then: Any, result: Any) -> None:
        if isinstance(result, Failure):
            if not result.check(defer.CancelledError):
                log.failure("session {session}: decision failed", result, session=self._session_id)
            self._fatal(ER_HANDSHAKE, "HY000", "internal gateway error; session ended")
            return
        try:
            then(result)
        except Exception:
            log.failure("session {session} failed", session=self._session_id)
            self._fatal(ER_HANDSHAKE, "HY000", "internal gateway error; session ended")

    def _process(self) -> None:
        try:
            while self._inbox and not self._busy and not self._closed:
                self._handle(self._inbox.popleft())
            if not self._inbox and self._gate is not None:
                self._gate.resume(READ_PAUSE_BACKLOG)
        except m.ProtocolViolation as exc:
            self._fatal(ER_HANDSHAKE, "08S01", f"invalid packet: {exc}", log_it=True)
        except Exception:
            log.failure("session {session} failed", session=self._session_id)
            self._fatal(ER_HANDSHAKE, "HY000", "internal gateway error; session ended")

    def _handle(self, packet: m.Packet) -> None:
        if self._phase == "infile":
            self._infile_data(packet)
        elif self._phase == "ready":
            self._client_command(packet)
        elif self._phase == "greeted":
            self._handshake_response(packet)
        elif self._phase == "password":
            self._password(packet)
        elif self._phase == "change-password":
            self._change_password(packet)
        else:
            self._fatal(ER_HANDSHAKE, "08S01", f"unexpected packet during {self._phase}")

    @property
    def session_info(self) -> SessionInfo | None:
        """The recorded session, once authenticated (what ``LiveSession`` asks for)."""
        return self.session

    @property
    def _session_id(self) -> str:
        return self.session.id if self.session else "-"

    def _send(self, payload: bytes) -> None:
        data, self._seq = m.encode_packet(payload, self._seq)
        self.transport.write(data)

    def _now(self) -> float:
        return float(self.runtime.reactor.seconds())

    # -- greeting and TLS ----------------------------------------------------------------------

    def _connected_decided(self, verdict: Any) -> None:
        if isinstance(verdict, Block | Hold):
            self._fatal(ER_ACCESS_DENIED, "28000", f"connection refused: {verdict.reason}")
            return
        known = self._target.known()
        if not known.called and not self._target.probing:
            self._probe_target()
        self._wait(known, self._greet)

    def _probe_target(self) -> None:
        """Log in once with the stored credential to learn the target's greeting."""
        self._target.probing = True
        listener = ProbeListener(self._target)
        listener.connection = self._upstream_connection(
            listener, capabilities=GATEWAY_CAPABILITIES, charset=CHARSET_UTF8MB4, database=None
        )
        timeout = self.runtime.reactor.callLater(
            self.runtime.gateway.auth_timeout, self._target.probe_ended
        )
        connecting = self.runtime.connect_upstream(
            self.runtime.config.target_host,
            self.runtime.config.target_port,
            listener.connection,
        )

        def failed(failure: Failure) -> None:
            listener.upstream_failed(CR_SERVER_LOST, failure.getErrorMessage())

        connecting.addErrback(failed)
        self._target.known().addBoth(lambda _: timeout.cancel() if timeout.active() else None)

    def _greet(self, _: object = None) -> None:
        capabilities = self._target.capabilities
        offered = GATEWAY_CAPABILITIES & (~0 if capabilities is None else capabilities)
        offered |= m.CLIENT_PROTOCOL_41 | m.CLIENT_SECURE_CONNECTION | m.CLIENT_PLUGIN_AUTH
        if self.runtime.config.local_infile:
            offered |= m.CLIENT_LOCAL_FILES
        if self.runtime.server_tls is not None and self.runtime.config.client_tls != "disabled":
            offered |= m.CLIENT_SSL
        self._offered = offered
        self._scramble = _scramble()
        self._phase = "greeted"
        self._send(
            m.Handshake(
                server_version=self._target.version or DEFAULT_SERVER_VERSION,
                connection_id=self._connection_id,
                scramble=self._scramble,
                capabilities=offered,
                charset=CHARSET_UTF8MB4,
                auth_plugin="mysql_native_password",
            ).encode()
        )

    def _handshake_response(self, packet: m.Packet) -> None:
        self._seq = (packet.seq + 1) & 0xFF
        response = m.HandshakeResponse.decode(packet.payload)
        if response.ssl_request:
            if not self._offered & m.CLIENT_SSL or self.client_tls:
                self._fatal(ER_HANDSHAKE, "08S01", "TLS is not offered on this connection")
                return
            if self._inbox:
                # A whole packet pipelined before the TLS handshake would be trusted as if it
                # came over TLS: refuse it.
                self._fatal(ER_HANDSHAKE, "08S01", "unencrypted data after the TLS request")
                return
            # Clients send their TLS ClientHello right behind the SSLRequest (MySQL has no
            # answer to wait for): what was read past the request goes to the TLS layer.
            leftover = self._reader.take_buffered()
            self.transport.startTLS(self.runtime.server_tls)
            self.client_tls = True
            if leftover:
                self.transport.protocol.dataReceived(leftover)
            return
        config = self.runtime.config
        if config.client_tls == "required" and not self.client_tls:
            self._fatal(
                ER_ACCESS_DENIED, "28000", "this connection requires TLS (connect with --ssl)"
            )
            return
        if not response.capabilities & m.CLIENT_PLUGIN_AUTH:
            self._fatal(
                ER_ACCESS_DENIED, "28000", "the client must support pluggable authentication"
            )
            return
        if config.client_auth == "scram":
            self._fatal(
                ER_ACCESS_DENIED,
                "28000",
                "client_auth = scram is not available on MySQL connections (use TLS)",
            )
            return
        protected = self.client_tls or is_loopback(self._peer_host)
        if not (protected or config.allow_cleartext_password):
            self._fatal(
                ER_ACCESS_DENIED,
                "28000",
                "the API key may only be sent over TLS or loopback; connect with TLS (--ssl)",
            )
            return
        if not response.user:
            self._fatal(ER_ACCESS_DENIED, "28000", "no user name in the handshake response")
            return
        if response.charset not in CLIENT_COLLATIONS:
            self._fatal(
                ER_UNKNOWN_CHARACTER_SET,
                "42000",
                f"collation {response.charset} is not accepted through hoopgw: connect with"
                " the character set utf8mb4 (or utf8mb3, ascii, binary)",
            )
            return
        self._response = response
        self._capabilities = response.capabilities & self._offered
        self._local_infile = bool(self._capabilities & m.CLIENT_LOCAL_FILES)
        if response.auth_plugin == CLEAR and response.auth_response:
            self._check(response.auth_response, response.user)
            return
        self._phase = "password"
        self._send(m.AuthSwitchRequest(plugin=CLEAR, data=b"").encode())

    def _password(self, packet: m.Packet) -> None:
        self._seq = (packet.seq + 1) & 0xFF
        self._check(packet.payload, self._response.user if self._response else "")

    def _check(self, secret: bytes, user: str, then: Any = None) -> None:
        """Authenticate ``secret`` for ``user`` and admit the identity, then call ``then``
        (the login's next step by default) with the identity or a refusal."""
        self._phase = "checking"
        password = secret.split(b"\0", 1)[0].decode("utf-8", "replace")

        authenticator = self.runtime.authenticator
        connection = self.runtime.info.name

        def admit(identity: Identity) -> Any:
            if user not in (identity.name, identity.credential_id):
                return authenticator.failed(
                    f'the key belongs to identity "{identity.name}", not "{user}"',
                    reason=f'user name "{user}" does not match identity "{identity.name}"',
                    method=identity.method,
                    client_address=self.client_address,
                    connection=connection,
                )
            if self.identity is not None and identity.name != self.identity.name:
                # COM_CHANGE_USER: a session belongs to one identity.
                return authenticator.failed(
                    f'COM_CHANGE_USER to identity "{identity.name}" in a session of'
                    f' "{self.identity.name}": open a new connection',
                    reason=f'COM_CHANGE_USER from identity "{self.identity.name}"'
                    f' to "{identity.name}"',
                    method=identity.method,
                    client_address=self.client_address,
                    connection=connection,
                )
            admitted = authenticator.admit(
                identity, self.runtime.config, client_address=self.client_address
            )
            return admitted.addCallback(lambda _: identity)

        def refused(failure: Failure) -> Any:
            if failure.check(AuthenticationError):
                return _Refusal(ER_ACCESS_DENIED, "28000", str(failure.value) or "invalid API key")
            if failure.check(AccessDenied):
                return _Refusal(ER_DBACCESS_DENIED, "42000", str(failure.value))
            if failure.check(StoreError):
                return _Refusal(ER_UNKNOWN_ERROR, "HY000", STORE_UNAVAILABLE)
            return failure

        d = defer.maybeDeferred(
            authenticator.authenticate,
            password,
            client_address=self.client_address,
            connection=connection,
        )
        d.addCallback(admit).addErrback(refused)
        self._wait(d, then or self._login_checked)

    def _login_checked(self, result: Identity | _Refusal) -> None:
        if isinstance(result, _Refusal):
            log.info(
                "authentication failed on {connection} from {client}: {why}",
                connection=self.runtime.info.name,
                client=self.client_address,
                why=result.message,
            )
            user = self._response.user if self._response else ""
            message = result.message
            if result.code == ER_ACCESS_DENIED:
                message = f"Access denied for user '{user}': {result.message}"
            self._fatal(result.code, result.sqlstate, message)
            return
        self.identity = result
        self._phase = "login"
        self._busy = True
        if self._gate is not None:
            self._gate.pause(READ_PAUSE_LOGIN)
        self.runtime.sessions.add(self)
        self._connect_upstream()

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self._phase == "login":
            self._fatal(
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                "08S01",
                f"the target {self.runtime.config.target} did not complete the login in time",
            )
        elif self._phase != "ready":
            self._fatal(ER_HANDSHAKE, "08S01", "authentication timed out", log_it=True)

    # -- upstream ----------------------------------------------------------------------------

    def _upstream_connection(
        self,
        listener: Any,
        *,
        capabilities: int,
        charset: int,
        database: str | None,
        read_only: bool = False,
    ) -> UpstreamConnection:
        config = self.runtime.config
        host = config.target_host
        tls = config.upstream_tls
        password = config.credential.password.reveal() if config.credential.password else None
        return UpstreamConnection(
            listener,
            user=config.credential.user,
            password=password,
            database=database,
            capabilities=capabilities,
            charset=charset,
            sslmode=tls.sslmode,
            tls_options=None
            if tls.sslmode == "disable"
            else client_tls_options(tls.sslmode, tls.server_name or host, tls.ca_file),
            loopback=is_loopback(host),
            max_length=1 << 31,
            local_infile=self.runtime.config.local_infile,
            read_only=read_only,
        )

    def _connect_upstream(self) -> None:
        assert self._response is not None
        config = self.runtime.config
        host, port = config.target_host, config.target_port
        try:
            self._read_only = self.chain.upstream_options(self.runtime.info).read_only
        except PluginError as exc:
            self._fatal(ER_ACCESS_DENIED, "28000", f"session refused: {exc}")
            return
        self.upstream = self._upstream_connection(
            self,
            capabilities=self._capabilities,
            charset=self._response.charset,
            database=self._response.database or None,
            read_only=self._read_only,
        )
        d = self.runtime.connect_upstream(host, port, self.upstream)

        def failed(failure: Failure) -> None:
            log.info(
                "target {target} unreachable: {why}",
                target=config.target,
                why=failure.getErrorMessage(),
            )
            self.upstream_failed(
                CR_SERVER_LOST,
                f"the target {config.target} is unreachable: {failure.getErrorMessage()}",
            )

        d.addErrback(failed)

    def upstream_greeted(self, handshake: m.Handshake) -> None:
        """Remember the target's version and capabilities for the next clients' greeting."""
        self._target.learned(handshake)

    def upstream_ready(self, ok: bytes, tls: bool) -> None:
        """The target accepted the login: the session exists from now on."""
        if self._closed:
            if self.upstream is not None:
                self.upstream.close()
            return
        assert self.identity is not None and self._response is not None
        self._login_ok = ok
        self._up_caps = self.upstream.capabilities if self.upstream is not None else 0
        if self.upstream is not None and self.upstream.lexing is not None:
            self._lexing = self.upstream.lexing
            self._results_charset = self.upstream.results_charset
        self.session = SessionInfo(
            id=str(uuid.uuid4()),
            connection=self.runtime.info,
            identity=self.identity,
            client_address=self.client_address,
            client_tls=self.client_tls,
            upstream_tls=tls,
            started_at=time.time(),
            attributes={"user": self._response.user, "database": self._response.database or ""},
        )
        self._ledger = CommandLedger(self.chain, self.session, end_session=self.terminate)
        self._wait(
            self.chain.decide("session_started", session=self.session), self._session_decided
        )

    def _session_decided(self, verdict: Any) -> None:
        if isinstance(verdict, Block | Hold):
            self._fatal(ER_ACCESS_DENIED, "28000", f"session refused: {verdict.reason}")
            return
        self._welcome()

    def _welcome(self) -> None:
        assert self.upstream is not None and self.session is not None
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        ok = m.OkPacket.decode(self._login_ok).for_client(self._up_caps, self._capabilities)
        refusal = self._lexing.refusal()
        if refusal:
            self._fatal(ER_LEXING, "42000", f"hoopgw ends the session: the target's {refusal}")
            return
        self._send(attrs.evolve(ok, header=0).encode())
        up_transport = self.upstream.transport
        set_no_delay(up_transport)
        self.transport.registerProducer(ReadGate(up_transport), True)
        up_transport.registerProducer(self._gate, True)
        self._welcomed = True
        self._phase = "ready"
        self._reader.max_length = self.runtime.gateway.max_message_size
        self._busy = False
        if self._gate is not None:
            self._gate.resume(READ_PAUSE_LOGIN)
        log.info(
            "session {session} started: {identity} on {connection} from {client}",
            session=self.session.id,
            identity=self.session.identity.name,
            connection=self.runtime.info.name,
            client=self.client_address,
        )
        self._process()

    def upstream_failed(self, code: int, message: str) -> None:
        """The upstream could not be reached or refused the login."""
        self.runtime.upstream_failed()
        log.info(
            "session {session}: {message}",
            session=self._session_id,
            message=self.chain.loggable(message),
        )
        # code: a client-range number (2000 and up) for a link that failed, or the target's own
        # refusal of the login. Clients take a client-range number from a server as a
        # malformed packet, so the link's failure is said as a server error.
        shown = ER_CONNECT_TO_FOREIGN_DATA_SOURCE if code >= 2000 else ER_ACCESS_DENIED
        self._fatal(shown, "08S01", message)

    def upstream_closed(self) -> None:
        """The target ended the connection."""
        if self._quitting:
            self._fatal(0, "", "client closed", goodbye=False)
        elif not self._closed:
            self._fatal(CR_SERVER_LOST, "08S01", "the target closed the connection", goodbye=False)

    # -- the proxy loop: client to target ------------------------------------------------------

    def _client_command(self, packet: m.Packet) -> None:
        if packet.seq != packet.pieces - 1:
            raise m.ProtocolViolation("a command must start a new exchange (sequence id 0)")
        self._seq = (packet.seq + 1) & 0xFF
        payload = packet.payload
        if not payload:
            raise m.ProtocolViolation("empty command packet")
        code = payload[0]
        deprecate_eof = bool(self._capabilities & m.CLIENT_DEPRECATE_EOF)
        if code == m.COM_QUIT:
            self._quitting = True
            self._inbox.clear()
            self._forward(payload, None)
            self.transport.loseConnection()
        elif code == m.COM_QUERY:
            text = decode_text(payload[1:], self._lexing.charset)
            effect, refusal = self._lexing_effect(text)
            if self._read_only and effect.statements > 1 and not refusal:
                # The server runs each statement of the packet before the gateway can read
                # the answer of the one before: one that calls a stored function could turn
                # read-only off for the transactions of the next ones.
                refusal = (
                    "a read-only session runs one statement per packet (a stored function"
                    " may turn read-only off before the next statement): send them one by one"
                )
            self._decide(
                self._statement_command(text, "query"),
                payload,
                t.ResponseReader(
                    t.RESULT, deprecate_eof=deprecate_eof, local_infile=self._local_infile
                ),
                lexing=effect,
                refusal=refusal,
            )
        elif code == m.COM_STMT_PREPARE:
            text = decode_text(payload[1:], self._lexing.charset)
            effect, refusal = self._lexing_effect(text)
            if effect.sets and not refusal:
                refusal = (
                    f"a prepared statement that sets {', '.join(sorted(effect.sets))}: set it"
                    " with a plain SET statement"
                )
            self._decide(
                self._statement_command(text, "parse", prepared_only=True),
                payload,
                t.ResponseReader(t.PREPARE, deprecate_eof=deprecate_eof),
                prepared_text=text,
                lexing=effect,
                refusal=refusal,
            )
        elif code == m.COM_STMT_EXECUTE:
            statement = m.statement_id(payload)
            if statement not in self._statements:
                self._error(
                    ER_UNKNOWN_COM, "HY000", f"unknown prepared statement handler ({statement})"
                )
                return
            long_data_refusal = self._long_data_refused.pop(statement, None)
            if long_data_refusal is not None:
                # The target holds part of the parameter's data: drop it, then refuse.
                self._forward(
                    bytes((m.COM_STMT_RESET,)) + statement.to_bytes(4, "little"),
                    _InFlight(
                        command=None,
                        reader=t.ResponseReader(t.SIMPLE, deprecate_eof=deprecate_eof),
                        then=lambda: self._error(
                            ER_SPECIFIC_ACCESS_DENIED, "42000", long_data_refusal
                        ),
                    ),
                )
                return
            parameters, types = execute_parameters(
                payload,
                self._statement_params.get(statement, 0),
                self._statement_types.get(statement),
                self._long_data.get(statement, {}),
            )
            command = Command(
                session_id=self._session_id,
                seq=self._next_seq(),
                text=self._statements[statement],
                kind="execute",
                parameter_count=self._statement_params.get(statement, 0),
                parameters=parameters,
                statement_name=str(statement),
                details=self._lexing_details(),
            )
            self._decide(
                command,
                payload,
                t.ResponseReader(
                    t.RESULT, deprecate_eof=deprecate_eof, local_infile=self._local_infile
                ),
                binary=True,
                statement_id=statement,
                forwarded=lambda: self._executed(statement, types),
                lexing=self._statement_lexing.get(statement, KEEPS_LEXING),
            )
        elif code == m.COM_STMT_FETCH:
            statement = m.statement_id(payload)
            reader = t.ResponseReader(t.FETCH, deprecate_eof=deprecate_eof)
            cursor = self._cursors.get(statement)
            if cursor is None:
                # Rows the gateway could not decode must not pass the data hooks unseen.
                self._error(ER_UNKNOWN_COM, "HY000", f"no open cursor for statement {statement}")
                return
            reader.columns = cursor[1]
            if self._ledger is not None:
                # A cursor fetched after a reload: its rows pass the new chain's hooks.
                self._ledger.catch_up()
            self._forward(
                payload,
                _InFlight(command=cursor[0], reader=reader, binary=True, reports=False),
            )
        elif code == m.COM_STMT_SEND_LONG_DATA:
            statement = m.statement_id(payload)
            param = m.Cursor(payload, 5).uint(2)
            self._decide_protocol_command(
                "stmt_send_long_data",
                f"COM_STMT_SEND_LONG_DATA {statement} parameter {param} ({len(payload) - 7} bytes)",
                payload,
                None,  # no answer
                statement=statement,
                forwarded=lambda: (
                    self._long_data.setdefault(statement, {})
                    .setdefault(param, LongData())
                    .add(payload[7:])
                ),
                refused=lambda message: self._long_data_refused.setdefault(statement, message),
            )
        elif code == m.COM_STMT_CLOSE:
            statement = m.statement_id(payload)
            self._decide_protocol_command(
                "stmt_close",
                f"COM_STMT_CLOSE {statement}",
                payload,
                None,  # no answer
                statement=statement,
                forwarded=lambda: self._forget_statement(statement),
            )
        elif code == m.COM_STMT_RESET:
            statement = m.statement_id(payload)
            self._decide_protocol_command(
                "stmt_reset",
                f"COM_STMT_RESET {statement}",
                payload,
                t.SIMPLE,
                statement=statement,
                forwarded=lambda: self._reset_long_data(statement),
            )
        elif code == m.COM_INIT_DB:
            name = payload[1:].decode("utf-8", "surrogateescape")
            self._decide_sql("init_db", f"USE {_quote_identifier(name)}", payload, t.SIMPLE)
        elif code == m.COM_FIELD_LIST:
            table = payload[1:].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            text = f"SHOW COLUMNS FROM {_quote_identifier(table)}"
            self._decide_sql("field_list", text, payload, t.FIELD_LIST)
        elif code == m.COM_SET_OPTION:
            option = m.Cursor(payload, 1).uint(2)
            text = f"COM_SET_OPTION {SET_OPTIONS.get(option, option)}"
            self._decide_protocol_command("set_option", text, payload, t.SIMPLE)
        elif code == m.COM_RESET_CONNECTION:
            self._decide_protocol_command(
                "reset_connection",
                "COM_RESET_CONNECTION",
                payload,
                t.SIMPLE,
                forwarded=self._forget_statements,
                then=lambda: self._track(self._read_only_again(None)),
            )
        elif code == m.COM_STATISTICS:
            self._decide_protocol_command("statistics", "COM_STATISTICS", payload, t.STATISTICS)
        elif code == m.COM_PING:
            # Not recorded: a keep-alive (pools send one per checkout) that changes no state
            # and reads no data; a decision and a store write each would double its cost.
            reader = t.ResponseReader(t.SIMPLE, deprecate_eof=deprecate_eof)
            self._forward(payload, _InFlight(command=None, reader=reader))
        elif code == m.COM_CHANGE_USER:
            self._change_user(m.ChangeUser.decode(payload, self._capabilities))
        else:
            name = m.COMMAND_NAMES.get(code, f"0x{code:02x}")
            self._error(
                ER_UNKNOWN_COM,
                "08S01",
                f"the command COM_{name.upper()} is not supported through hoopgw",
            )

    def _infile_data(self, packet: m.Packet) -> None:
        """A packet of the file the client sends for LOAD DATA LOCAL INFILE."""
        assert self.upstream is not None
        self._seq = (packet.seq + 1) & 0xFF
        payload = packet.payload
        if payload and self.chain.has_input_hooks:
            output = Output("infile", {"data": payload.decode("utf-8", "surrogateescape")})
            self.chain.hook.client_input(session=self.session, output=output)
            payload = output.fields.get("data", "").encode("utf-8", "surrogateescape")
            if not payload:
                return  # an empty packet would end the file early
        self._up_seq = self.upstream.send(payload, self._up_seq)
        if not packet.payload:
            self._phase = "ready"
            self._busy = True  # the server's answer ends the command

    # -- COM_CHANGE_USER: the same identity proves itself again ---------------------------------

    def _change_user(self, change: m.ChangeUser) -> None:
        """Re-authenticate through the gateway. Only the session's own identity may: a pool
        that resets its connections this way keeps working, while a different identity must
        open a connection of its own (a session belongs to one identity)."""
        self._change = change
        if change.auth_plugin == CLEAR and change.auth_response:
            self._check(change.auth_response, change.user, self._change_checked)
            return
        self._phase = "change-password"
        self._send(m.AuthSwitchRequest(plugin=CLEAR, data=b"").encode())

    def _change_password(self, packet: m.Packet) -> None:
        self._seq = (packet.seq + 1) & 0xFF
        assert self._change is not None
        self._check(packet.payload, self._change.user, self._change_checked)

    def _change_checked(self, result: Identity | _Refusal) -> None:
        assert self._change is not None
        if isinstance(result, _Refusal):
            log.info(
                "session {session}: COM_CHANGE_USER refused: {why}",
                session=self._session_id,
                why=result.message,
            )
            self._fatal(result.code, result.sqlstate, result.message)
            return
        self._phase = "ready"
        # The target forgets the session's state, as a change of user would make it: a
        # command of its own (recorded, decided), then the database is selected like any.
        self._decide_protocol_command(
            "change_user",
            f"COM_CHANGE_USER {_quote_identifier(self._change.user)}",
            bytes((m.COM_RESET_CONNECTION,)),
            t.SIMPLE,
            forwarded=self._forget_statements,
            then=lambda: self._track(
                self._read_only_again(
                    self._changed if self._change and self._change.database else None
                )
            ),
        )

    def _read_only_again(self, then: Callable[[], None] | None) -> Callable[[], None] | None:
        """What follows a reset of the target's session (which makes it read-write again):
        on a read-only connection, making it read-only again before ``then`` (or, without
        ``then``, answering the client with that step's OK); ``then`` itself elsewhere."""
        if not self._read_only:
            return then

        def again() -> None:
            deprecate_eof = bool(self._capabilities & m.CLIENT_DEPRECATE_EOF)
            assert self.upstream is not None
            self._forward(
                bytes((m.COM_QUERY,)) + read_only_statement(self.upstream.read_only_variable),
                _InFlight(
                    command=None,
                    reader=t.ResponseReader(t.SIMPLE, deprecate_eof=deprecate_eof),
                    then=then,
                    must_succeed="making the session read-only again after its reset",
                ),
            )

        return again

    def _track(self, then: Callable[[], None] | None) -> None:
        """After a reset (the target's session variables are the global defaults again, its
        tracking list too): set up session-state tracking again and learn the lexing
        settings; then call ``then``, or answer the client with the setup's OK."""
        deprecate_eof = bool(self._capabilities & m.CLIENT_DEPRECATE_EOF)
        self._forward(
            bytes((m.COM_QUERY,)) + TRACKING_SETUP.encode(),
            _InFlight(
                command=None,
                reader=t.ResponseReader(t.SIMPLE, deprecate_eof=deprecate_eof),
                then=then,
                lexing=LexingEffect(changes=True, sets=frozenset(self._lexing.settings)),
                setup=True,
            ),
        )

    def _statement_command(self, text: str, kind: str, *, prepared_only: bool = False) -> Command:
        return Command(
            session_id=self._session_id,
            seq=self._next_seq(),
            text=text,
            kind=kind,
            details=self._lexing_details(),
            prepared_only=prepared_only,
        )

    def _lexing_details(self) -> dict[str, Any]:
        """``Command.details["lexing"]``: the settings the statement is read in, for the
        statement analysis of plugins (``Dialect.analyze(text, settings)``)."""
        return {"lexing": self._lexing.settings}

    def _lexing_effect(self, text: str) -> tuple[LexingEffect, str]:
        """What ``text`` may do to the lexing settings, and why it is refused (empty when it
        is not); see :func:`hoopgw_mysql.analysis.lexing_effect`. A text that cannot be read
        is left to the plugins (guardrails refuses it) and to the server (which refuses it
        too), as one that may change the settings."""
        try:
            return lexing_effect(text, self._lexing, self._sql_prepared), ""
        except ValueError as exc:
            if "unterminated" in str(exc) or "versioned comments" in str(exc):
                return LexingEffect(changes=True, statements=2), ""
            return LexingEffect(), str(exc)

    def _follow_lexing(self, flight: _InFlight, ok: m.OkPacket) -> str:
        """Follow the lexing settings an OK of ``flight``'s answer reports; return why the
        session must end (empty when it need not)."""
        variables = ok.system_variables(self._up_caps)
        if "character_set_results" in variables:
            self._results_charset = variables["character_set_results"].decode("ascii", "replace")
        state, problem = lexing_report(self._lexing, variables)
        if problem:
            return problem
        if variables.keys() & {"sql_mode", "character_set_client"}:
            flight.reported = True
        if (
            flight.lexing.sets
            and not flight.reported
            and not ok.status & (m.SERVER_MORE_RESULTS_EXISTS)
        ):
            # The tracking list was emptied by a route the gateway did not see (a procedure).
            return f"the target did not report the {', '.join(sorted(flight.lexing.sets))} set"
        if state == self._lexing:
            return ""
        change = ", ".join(
            f"{name}={value!r}"
            for name, value in state.settings.items()
            if self._lexing.settings[name] != value
        )
        if not flight.lexing.changes:
            return (
                f"the target reported {change}, which no statement the gateway judged could set"
                " (a route it did not see)"
            )
        if ok.status & m.SERVER_MORE_RESULTS_EXISTS and flight.lexing.statements > 1:
            return (
                f"the target reported {change} before the last statement of a multi-statement"
                " packet"
            )
        refusal = state.refusal()
        if refusal:
            return f"the target reported {refusal}"
        self._lexing = state
        return ""

    def _forget_statements(self) -> None:
        """The target forgot every prepared statement (a reset or change of user)."""
        self._cursors.clear()
        self._statements.clear()
        self._statement_params.clear()
        self._statement_types.clear()
        self._long_data.clear()
        self._long_data_refused.clear()
        self._statement_lexing.clear()
        self._sql_prepared.clear()

    def _forget_statement(self, statement: int) -> None:
        """The target closed prepared statement ``statement``."""
        self._statements.pop(statement, None)
        self._statement_params.pop(statement, None)
        self._statement_types.pop(statement, None)
        self._long_data.pop(statement, None)
        self._statement_lexing.pop(statement, None)
        self._cursors.pop(statement, None)
        self._long_data_refused.pop(statement, None)

    def _executed(self, statement: int, types: ParameterTypes | None) -> None:
        """An execution of ``statement`` was forwarded: the target keeps the types it bound
        and has used up the long data sent before it."""
        if types is not None:
            self._statement_types[statement] = types
        self._long_data.pop(statement, None)

    def _reset_long_data(self, statement: int) -> None:
        """COM_STMT_RESET was forwarded: the target dropped the statement's long data."""
        self._long_data_refused.pop(statement, None)
        self._long_data.pop(statement, None)

    def _changed(self) -> None:
        """After the reset: select the database the client asked for (a command like any)."""
        assert self._change is not None
        name = self._change.database
        payload = bytes((m.COM_INIT_DB,)) + name.encode("utf-8", "surrogateescape")
        self._decide_sql("init_db", f"USE {_quote_identifier(name)}", payload, t.SIMPLE)

    def _next_seq(self) -> int:
        assert self._ledger is not None
        return self._ledger.next_seq()

    def _decide_sql(self, kind: str, text: str, payload: bytes, shape: str) -> None:
        """Decide a command recorded as the SQL statement ``text`` it amounts to (like
        ``USE db`` for COM_INIT_DB); ``shape`` is its answer's (:mod:`hoopgw_mysql.tracking`)."""
        command = Command(session_id=self._session_id, seq=self._next_seq(), text=text, kind=kind)
        deprecate_eof = bool(self._capabilities & m.CLIENT_DEPRECATE_EOF)
        self._decide(command, payload, t.ResponseReader(shape, deprecate_eof=deprecate_eof))

    def _decide_protocol_command(
        self,
        kind: str,
        text: str,
        payload: bytes,
        shape: str | None,
        *,
        statement: int | None = None,
        forwarded: Callable[[], object] | None = None,
        refused: Callable[[str], object] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Decide a command that runs no statement (``text`` only names it for the record)
        like any command; ``shape`` is its answer's (:mod:`hoopgw_mysql.tracking`), ``None``
        when it has none. The callbacks are :meth:`_decide`'s."""
        command = Command(
            session_id=self._session_id,
            seq=self._next_seq(),
            text=text,
            kind=kind,
            statement=False,
            statement_name="" if statement is None else str(statement),
        )
        reader = None
        if shape is not None:
            deprecate_eof = bool(self._capabilities & m.CLIENT_DEPRECATE_EOF)
            reader = t.ResponseReader(shape, deprecate_eof=deprecate_eof)
        self._decide(command, payload, reader, forwarded=forwarded, refused=refused, then=then)

    def _decide(
        self,
        command: Command,
        payload: bytes,
        reader: t.ResponseReader | None,
        *,
        binary: bool = False,
        statement_id: int | None = None,
        prepared_text: str = "",
        forwarded: Callable[[], object] | None = None,
        refused: Callable[[str], object] | None = None,
        then: Callable[[], None] | None = None,
        lexing: LexingEffect = KEEPS_LEXING,
        refusal: str = "",
    ) -> None:
        """Hand ``command`` to the plugin chain; forward ``payload`` if it is allowed.

        :param reader: reads the target's answer; ``None`` for a command that has none (a
            refusal is then not answered either: ``refused`` is called with its message).
        :param forwarded: called when the payload is forwarded (the gateway's own state
            follows the target's).
        :param then: called instead of answering the client when the answer ends.
        :param lexing: what the command may do to the session's lexing settings.
        :param refusal: why the protocol refuses the command whatever the plugins decide
            (it is still recorded and decided, so the audit store holds its text).
        """
        ledger = self._ledger
        assert self.session is not None and ledger is not None
        # What the audit store keeps of the text (masked); the target still gets command.text.
        command = self.chain.recordable(self.session, command)
        recorded = command.text if command.recorded_text is None else command.recorded_text
        if record_text(recorded) != recorded:
            # Bytes not valid in the client's character set: kept byte for byte as \xNN.
            command = attrs.evolve(command, recorded_text=record_text(recorded))

        def decided(verdict: Any) -> None:
            if refusal and not isinstance(verdict, Block):
                verdict = Block(reason=refusal, plugin="mysql", rule="lexing")
            if verdict is None or isinstance(verdict, Block):
                if verdict is None:
                    verdict = Block(reason="withdrawn")
                shown = (
                    refusals.unreadable(verdict.reason)
                    if verdict.rule == "lexing"
                    else refusals.refused(verdict, connection=self.runtime.info.name)
                )
                self._complete_refused(command, f"hoopgw {shown.message}")
                message = shown.text()
                if reader is not None:
                    code = ER_LEXING if verdict.rule == "lexing" else (ER_SPECIFIC_ACCESS_DENIED)
                    self._error(code, "42000", message)
                elif refused is not None:
                    refused(message)
                return
            if forwarded is not None:
                forwarded()
            if reader is None:
                self._forward(payload, None)
                ledger.complete(command, CommandOutcome(status="ok"))
                return
            flight = _InFlight(
                command=command,
                reader=reader,
                binary=binary,
                forwarded_at=self._now(),
                statement_id=statement_id,
                prepared_text=prepared_text,
                then=then,
                lexing=lexing,
            )
            self._forward(payload, flight)

        verdict = ledger.decide_at_once(command)
        if verdict is not None:
            decided(verdict)  # no plugin judges commands: no Deferred, no pause
            return
        decision = ledger.decide(command)
        decision.addErrback(lambda failure: failure.trap(defer.CancelledError) and None)
        self._wait(decision, decided)

    def _forward(self, payload: bytes, flight: _InFlight | None) -> None:
        assert self.upstream is not None
        if flight is not None:
            self._in_flight = flight
            self._busy = True
        self._up_seq = self.upstream.send(payload, 0)

    def _error(self, code: int, sqlstate: str, message: str) -> None:
        self._send(m.ErrPacket(code=code, sqlstate=sqlstate, message=message).encode())

    # -- the proxy loop: target to client ------------------------------------------------------

    def upstream_packets(self, packets: list[m.Packet]) -> None:
        """Relay server packets to the client, applying data hooks and tracking outcomes."""
        if self._closed:
            return
        try:
            self._relay(packets)
        except m.ProtocolViolation as exc:
            log.info(
                "session {session}: target protocol error: {e}", session=self._session_id, e=exc
            )
            self._fatal(
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                "08S01",
                f"the target sent an invalid response: {exc}",
            )
        except UndecodableText as exc:
            self._fatal(
                ER_HANDSHAKE,
                "HY000",
                f"hoopgw ends the session: {exc} (fail closed); use character_set_results utf8mb4",
                log_it=True,
            )
        except Exception:
            log.failure("session {session} failed", session=self._session_id)
            self._fatal(ER_HANDSHAKE, "HY000", "internal gateway error; session ended")

    def _relay(self, packets: list[m.Packet]) -> None:
        out: list[bytes] = []
        rows: list[bytes] = []
        for packet in packets:
            flight = self._in_flight
            if flight is None:
                raise m.ProtocolViolation("the target sent a packet no command asked for")
            reader = flight.reader
            payload = packet.payload
            part = reader.classify(payload)
            if part is t.Part.ROW:
                flight.rows += 1
                if self.chain.has_row_hooks and flight.command is not None:
                    rows.append(payload)
                    continue
                out.append(payload)
                continue
            if rows:
                out.extend(self._rewrite_rows(flight, rows))
                rows = []
            if part is t.Part.ERROR and flight.must_succeed:
                message = m.ErrPacket.decode(payload).message
                self._fatal(
                    ER_HANDSHAKE,
                    "25006",
                    f"{flight.must_succeed} failed (fail closed): {message}",
                    log_it=True,
                )
                return
            if (
                part is t.Part.ERROR
                and flight.command is not None
                and self.chain.has_output_hooks
                and not flight.charset_learned
            ):
                # A stored function may have changed character_set_results (with its report
                # turned off, or in a result set's EOF, which reports nothing): learn it
                # before reading the message in it. An ERR is the answer's last packet.
                self._flush(out)
                out = []
                flight.charset_learned = True
                self._track(functools.partial(self._error_again, flight, packet))
                continue
            if part is t.Part.ERROR:
                payload = self._note_error(flight, payload)
            elif part is t.Part.OK:
                payload, problem = self._note_ok(flight, payload)
                if problem:
                    self._lexing_diverged(problem)
                    return
            elif part is t.Part.PREPARE_OK:
                assert reader.prepared is not None
                statement = reader.prepared.statement_id
                self._statements[statement] = flight.prepared_text
                self._statement_params[statement] = reader.prepared.params
                self._statement_lexing[statement] = flight.lexing
            elif part is t.Part.INFILE:
                # The client sends the file now (its packets continue the sequence), then the
                # server answers: read the client again until its empty packet.
                out.append(payload)
                self._flush(out)
                out = []
                self._up_seq = (packet.seq + 1) & 0xFF
                self._phase = "infile"
                self._busy = False
                self._process()
                continue
            elif part is t.Part.STRING and self.chain.has_output_hooks:
                codec = message_codec(self._results_charset)
                text = message_text(payload.decode("utf-8", "surrogateescape"), codec)
                output = Output("notice", {"message": text})
                self.chain.hook.server_output(session=self.session, command=None, output=output)
                wire = message_wire(output.fields.get("message", ""), codec)
                payload = wire.encode("utf-8", "surrogateescape")
            if flight.then is None or part is t.Part.ERROR:
                out.append(payload)
            if reader.columns_complete:
                self._columns_done(flight)
            if reader.done:
                self._flush(out)
                out = []
                self._finish(flight)
        if rows and self._in_flight is not None:
            out.extend(self._rewrite_rows(self._in_flight, rows))
        self._flush(out)

    def _error_again(self, flight: _InFlight, packet: m.Packet) -> None:
        """Relay ``flight``'s held ERR ``packet`` now that ``character_set_results`` is known."""
        self._in_flight = flight
        self._busy = True
        self._flush([self._note_error(flight, packet.payload)])
        self._finish(flight)

    def _flush(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        chunks = []
        for payload in payloads:
            data, self._seq = m.encode_packet(payload, self._seq)
            chunks.append(data)
            if self._in_flight is not None:
                self._in_flight.bytes += len(data)
        send_now(self.transport, chunks)

    def _columns_done(self, flight: _InFlight) -> None:
        flight.columns = None
        if flight.command is None or not self.chain.has_column_hooks:
            return
        self.chain.hook.result_columns(
            session=self.session, command=flight.command, columns=self._plugin_columns(flight)
        )

    def _plugin_columns(self, flight: _InFlight) -> list[Column]:
        """The current result's columns as plugins see them (one list per result set, so a
        plugin may keep per-result state keyed by it)."""
        if flight.columns is None:
            flight.columns = self._make_columns(flight)
        return flight.columns

    def _make_columns(self, flight: _InFlight) -> list[Column]:
        return [
            Column(
                c.name.decode("utf-8", "surrogateescape"),
                type_oid=c.type,
                type_name=c.type_name,
                table=c.org_table.decode("utf-8", "surrogateescape"),
                format=1 if flight.binary else 0,
            )
            for c in flight.reader.columns
        ]

    def _rewrite_rows(self, flight: _InFlight, payloads: list[bytes]) -> list[bytes]:
        """The rows through ``server_rows``; with ``server_row_messages``, only the rows a
        plugin needs, the others as they came."""
        columns = flight.reader.columns
        types = [c.type for c in columns]
        plugin_columns = self._plugin_columns(flight)
        picked: list[int] | range = range(len(payloads))
        if self.chain.picks_rows and self.session is not None and flight.command is not None:
            needed = self.chain.rows_needed(
                session=self.session,
                command=flight.command,
                columns=plugin_columns,
                data=b"".join(payloads),
                starts=list(itertools.accumulate(map(len, payloads[:-1]), initial=0)),
                encoding=_rows_encoding(columns),
            )
            if needed is not None:
                picked = needed
        if not picked:
            return payloads
        if flight.binary:
            rows = [m.decode_binary_row(payloads[i], types) for i in picked]
        else:
            rows = [m.decode_text_row(payloads[i], len(columns)) for i in picked]
        # Plugins read text as UTF-8: values in another character set go through them
        # converted (a column in one that cannot be read exactly ends the session).
        codecs = column_codecs([c.charset for c in columns])
        to_utf8(rows, codecs)
        self.chain.hook.server_rows(
            session=self.session, command=flight.command, columns=plugin_columns, rows=rows
        )
        from_utf8(rows, codecs)
        out = list(payloads)
        for index, row in zip(picked, rows, strict=True):
            out[index] = (
                m.encode_binary_row(row, types) if flight.binary else m.encode_text_row(row)
            )
        return out

    def _note_error(self, flight: _InFlight, payload: bytes) -> bytes:
        error = m.ErrPacket.decode(payload)
        message = error.message
        if self.chain.has_output_hooks:
            # The server wrote it in character_set_results: plugins read it in that set.
            codec = message_codec(self._results_charset)
            output = Output("error", {"message": message_text(message, codec)})
            self.chain.hook.server_output(
                session=self.session, command=flight.command, output=output
            )
            message = output.fields.get("message", "")
            payload = m.ErrPacket(
                code=error.code, sqlstate=error.sqlstate, message=message_wire(message, codec)
            ).encode()
        flight.error_code = error.sqlstate
        flight.error_message = message
        return payload

    def _note_ok(self, flight: _InFlight, payload: bytes) -> tuple[bytes, str]:
        """Note an OK of ``flight``'s answer; return it as the client expects it, and why the
        session must end (empty when it need not)."""
        if len(payload) == 5 and payload[:1] == b"\xfe":
            return payload, ""  # an EOF packet
        ok = m.OkPacket.decode(payload)
        problem = self._follow_lexing(flight, ok)
        if problem:
            return payload, problem
        if self._up_caps != self._capabilities:
            ok = ok.for_client(self._up_caps, self._capabilities)
            payload = ok.encode()
        flight.affected += ok.affected_rows
        info = ok.message(self._capabilities)
        if info and self.chain.has_output_hooks:
            codec = message_codec(self._results_charset)
            text = message_text(info.decode("utf-8", "surrogateescape"), codec)
            output = Output("notice", {"message": text})
            self.chain.hook.server_output(
                session=self.session, command=flight.command, output=output
            )
            wire = message_wire(output.fields.get("message", ""), codec)
            payload = ok.with_message(
                wire.encode("utf-8", "surrogateescape"), self._capabilities
            ).encode()
        return payload, ""

    def _lexing_diverged(self, problem: str) -> None:
        """The target's lexing settings are not those the gateway judged by: end the session
        (fail closed); the reason is recorded with its end."""
        log.warn("session {session}: {problem}", session=self._session_id, problem=problem)
        self._fatal(
            ER_LEXING,
            "HY000",
            f"hoopgw ends the session: {problem}; the gateway could no longer read statements"
            " as the server does",
        )

    def _finish(self, flight: _InFlight) -> None:
        if flight.setup and flight.error_code:
            self._lexing_diverged("the target refused session-state tracking after a reset")
            return
        self._in_flight = None
        if flight.reader.cursor_opened and flight.statement_id is not None and flight.command:
            self._cursors[flight.statement_id] = (flight.command, flight.reader.columns)
        if flight.command is not None and flight.reports and self._ledger is not None:
            self._ledger.complete(
                flight.command,
                CommandOutcome(
                    status="error" if flight.error_code else "ok",
                    rows=flight.rows or flight.affected,
                    bytes=flight.bytes,
                    duration=max(0.0, self._now() - flight.forwarded_at),
                    error_code=flight.error_code,
                    error_message=flight.error_message,
                ),
            )
        self._busy = False
        if flight.then is not None and not flight.error_code:
            flight.then()
        elif self._read_only and flight.command is not None:
            # A stored function the command ran may have turned read-only off, and first
            # emptied session_track_system_variables so that no answer flags the change: make
            # the session read-only again before the client's next command, after every one.
            again = self._read_only_again(lambda: None)
            assert again is not None
            again()
        self._process()

    def _complete_refused(self, command: Command, message: str) -> None:
        assert self._ledger is not None
        self._ledger.complete(
            command,
            CommandOutcome(status="blocked", error_code="42000", error_message=message),
        )

    # -- ending ------------------------------------------------------------------------------

    def terminate(self, reason: str) -> None:
        """End the session with an error to the client (gateway shutdown, revoked access)."""
        if self._phase == "ready" and self._in_flight is None and self._pending is None:
            # Idle: the client reads the error as the answer to its next command (seq 0),
            # so it carries the first answer's sequence id.
            self._seq = 1
        self._fatal(
            ER_CONNECTION_KILLED, "70100", f"terminating connection: {reason}", reason=reason
        )

    def _fatal(
        self,
        code: int,
        sqlstate: str,
        message: str,
        *,
        log_it: bool = False,
        goodbye: bool = True,
        reason: str | None = None,
    ) -> None:
        if self._closed:
            return
        if log_it:
            log.info(
                "session {session} from {client} ended: {message}",
                session=self._session_id,
                client=self.client_address,
                message=message,
            )
        if goodbye:
            self._error(code, sqlstate, message)
        self._closed = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        if self.upstream is not None:
            self.upstream.close()
        # A TLS transport closes only once no producer is registered with it (the upstream's
        # reader is, from the welcome on): without this a client over TLS waits forever.
        if self._welcomed:
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._end_session(reason or message)

    def _end_session(self, reason: str) -> None:
        self.runtime.sessions.remove(self)
        ledger = self._ledger
        if self.session is None or ledger is None:
            return
        session, self.session = self.session, None
        flight, self._in_flight = self._in_flight, None
        if flight is not None and flight.command is not None and flight.reports:
            outcome = CommandOutcome(
                status="aborted",
                rows=flight.rows,
                bytes=flight.bytes,
                duration=max(0.0, self._now() - flight.forwarded_at),
            )
            ledger.complete(flight.command, outcome)
        # A command still waiting for its verdict (a hold, a slow plugin) is completed as
        # cancelled, once.
        ledger.close(reason)
        log.info("session {session} closed: {reason}", session=session.id, reason=reason)


class ClientSessionFactory(protocol.Factory):
    """Builds a :class:`ClientSession` for each client accepted on one connection's listener."""

    noisy = False

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        # The target's version and capabilities from its last greeting: the gateway greets
        # the next clients with them, so they negotiate only what the target can do.
        self.target = TargetInfo()

    def buildProtocol(self, addr: object) -> ClientSession:
        session = ClientSession(self.runtime, self.target)
        session.factory = self
        return session


def _rows_encoding(columns: list[m.ColumnDefinition]) -> str:
    """The character set of a result's text, by its columns' collations: ``binary`` when all
    are binary, the one other character set when there is one, ``""`` (unknown) when they
    differ or one is not in :data:`COLLATION_CHARSETS`."""
    names = {COLLATION_CHARSETS.get(c.charset, "") for c in columns}
    if len(names) > 1:
        names.discard("binary")
    return names.pop() if len(names) == 1 else ""
