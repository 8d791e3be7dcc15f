"""One client of a PostgreSQL connection: startup, TLS, authentication with the caller's own
key, the upstream login with the stored credential, and the proxy loop that hands every SQL
command to the plugin chain before it is forwarded.

Flow control: while a command waits for its verdict, and while the client cannot keep up with
results, the other side stops being read (Twisted producers, as in ``portforward``), so memory
per session stays bounded.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections import deque
from typing import Any

import attrs
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw import errors as refusals
from hoopgw.errors import (
    STORE_UNAVAILABLE,
    AccessDenied,
    AuthenticationError,
    PluginError,
    StoreError,
    UpstreamUnavailable,
)
from hoopgw.ledger import CommandLedger
from hoopgw.protocol import ConnectionRuntime
from hoopgw.secrets import DEFAULT_ITERATIONS, ScramVerifier
from hoopgw.session import (
    Column,
    Command,
    CommandOutcome,
    Identity,
    Output,
    Parameter,
    SessionInfo,
)
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
from hoopgw_postgres import messages as m
from hoopgw_postgres.analysis import copy_encodings, ends_transaction
from hoopgw_postgres.auth import ScramServer
from hoopgw_postgres.lexing import (
    CLIENT_ONLY_ENCODINGS,
    CODECS,
    LexingRefused,
    LexingTracker,
    clean_encoding_name,
    lexes_alike,
)
from hoopgw_postgres.parameters import bound_parameters
from hoopgw_postgres.rowtext import (
    check_utf8,
    convert,
    copy_bytes,
    copy_text,
    message_text,
    message_wire,
    must_be_utf8,
    row_codec,
)
from hoopgw_postgres.tracking import CommandProgress, Request, ResponseTracker
from hoopgw_postgres.upstream import UpstreamConnection

log = Logger(namespace="hoopgw.postgres")

# Startup parameters never passed upstream: the gateway logs in as the stored user, and
# replication connections carry a protocol the gateway cannot inspect.
DROPPED_PARAMETERS = frozenset({"user", "password", "replication"})

# The setting that makes every transaction read-only, and the value the gateway starts a
# read-only session with (see _connect_upstream).
READ_ONLY_SETTING = "default_transaction_read_only"

# A refused command is replaced upstream by this text: it is a syntax error, so the server
# runs nothing, fails the transaction exactly as a real error would, and answers in order.
REFUSED_STATEMENT = "hoopgw refused the statement"

HELD_SQLSTATE = "01000"
"""SQLSTATE of the NOTICE that tells a client its statement waits for review (warning)."""

# SQLSTATE of a statement or session refused because the gateway cannot lex it exactly.
LEXING_REFUSED = "0A000"

# What a decision withdrawn by the client's CancelRequest resolves to.
_CANCELLED = object()

# How many texts, each up to how long, a session remembers whether they end the transaction.
_ENDS_KEPT = 32
_ENDS_KEPT_LENGTH = 16384

# Salts the SCRAM exchange of a user with no key (see _mock_verifier).
_MOCK_SALT_KEY = secrets.token_bytes(32)

READ_AHEAD_LIMIT = 64 * 1024
"""Bytes a client may send while a decision is pending before reading pauses. Reading on (a
little) is what lets a disconnect withdraw a command held for review; the bound keeps a client
from piling up messages in memory."""


class _LexingLost(Exception):
    """The server reported a setting that leaves statements unlexable, or sent data in an
    encoding the gateway cannot read (ends the session)."""


@attrs.frozen
class _Refusal:
    """Why a login was refused: the SQLSTATE and a message safe to show the client."""

    code: str
    message: str


_STORE_DOWN = object()
"""What a store look-up during login gives when the store cannot answer."""


def _store_down(failure: Failure) -> object:
    failure.trap(StoreError)
    log.warn("SCRAM login refused: the store is unavailable: {why}", why=failure.value)
    return _STORE_DOWN


def _mock_verifier(user: str) -> ScramVerifier:
    """A verifier for a user with no key, as PostgreSQL makes one: its salt is the same on
    every attempt (a random one would tell the user apart from a real key, whose salt never
    changes), and making it costs no key derivation (whose time would tell too)."""
    return ScramVerifier(
        salt=hmac.digest(_MOCK_SALT_KEY, user.encode("utf-8"), "sha256")[:16],
        iterations=DEFAULT_ITERATIONS,
        stored_key=secrets.token_bytes(32),
        server_key=secrets.token_bytes(32),
    )


class ClientSession(protocol.Protocol):
    """Serves one PostgreSQL client on one configured connection."""

    transport: Any  # a TCP or TLS transport once connected

    @property
    def chain(self) -> Any:
        """The plugin chain in force: the session's once it started (it takes a reloaded
        config's at its next command, :class:`~hoopgw.ledger.CommandLedger`), the
        connection's before."""
        return self.runtime.chain if self._ledger is None else self._ledger.chain

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        self._reader = m.MessageReader(max_length=runtime.gateway.max_message_size, startup=True)
        self._phase = "startup"
        self._inbox: deque[Any] = deque()
        self._busy = False  # a decision or login step is pending; do not process the inbox
        self.client_tls = False
        self.client_address = ""
        self._params: dict[str, str] = {}
        self._scram: ScramServer | None = None
        self._scram_identity: Identity | None = None
        self.identity: Identity | None = None
        self.session: SessionInfo | None = None
        self.upstream: UpstreamConnection | None = None
        self._upstream_key: tuple[int, bytes] = (0, b"")
        self._upstream_parameters: list[bytes] = []
        self._read_only = False  # plugins require the target's session to be read-only
        self._tracker = ResponseTracker()
        self._ledger: CommandLedger | None = None  # the session's commands, once it started
        self._pending: defer.Deferred[Any] | None = None
        self._discard_until_sync = False
        self._current: CommandProgress | None = None
        self._statements: dict[str, str] = {}
        # Parses forwarded but not yet answered, by name: the text and the ReadyForQuery that
        # ends their segment. The server keeps a name's old statement when a Parse fails (the
        # name exists) or is skipped after an error, so a name runs the new text only once the
        # server accepted it (ParseComplete).
        self._parsing: dict[str, tuple[str, int]] = {}
        self._fresh_statements: set[str] = set()
        self._statement_types: dict[str, tuple[int, ...]] = {}
        # A Parse waiting for the next message, which may bind its values (_decide_parse).
        self._parse_waiting: tuple[Any, str, Any] | None = None
        self._columns: list[Column] = []
        # Whether the current result's rows go through server_rows (else they stream as is).
        self._rows_wanted = self.chain.has_row_hooks
        # Each open portal's columns and whether its rows are wanted, from its BindComplete and
        # RowDescription: an Execute's rows are judged by their own portal's, never by the last
        # description seen (interleaved portals would otherwise escape masking).
        # Portal -> its columns, whether its rows are wanted, and the chain that said so.
        self._portals: dict[str, tuple[list[Column], bool, Any]] = {}
        self._columns_for: Request | None = None
        self._to_upstream: list[bytes] = []
        self._closed = False
        self._held_notices: task.LoopingCall | None = None  # NOTICEs of a held statement
        self._terminated = False  # the client sent Terminate
        self._auth_timer: Any = None
        self._gate: ReadGate | None = None
        self._read_ahead = 0
        # How the server lexes statement text, from its own ParameterStatus reports; it is
        # known while the tracker is settled (see _statement).
        self._lexing = LexingTracker()
        self._held = False  # a statement waits for the lexing state; do not process the inbox
        # Read-only sessions: portals of statements that end the transaction, and whether one
        # ran since the last Sync (what follows would run in a transaction of unknown mode).
        self._ending_portals: set[str] = set()
        self._transaction_ended = False
        # ends_transaction of the texts bound here, for this session only: a cache shared by
        # sessions would tell one user, by timing, what another sent (docs/security.md).
        self._ends_transaction: dict[str, bool] = {}
        # The encoding of the COPY data of the request that receives it (parsed once per COPY).
        self._copy_encoding_of: tuple[Request, str] | None = None

    def _ends(self, text: str) -> bool:
        """Whether ``text`` ends the transaction (:func:`ends_transaction`), remembered for the
        session's few prepared texts (a driver binds the same ones again and again)."""
        ends = self._ends_transaction.get(text)
        if ends is None:
            ends = ends_transaction(text)
            if len(text) <= _ENDS_KEPT_LENGTH:
                if len(self._ends_transaction) >= _ENDS_KEPT:
                    self._ends_transaction.clear()
                self._ends_transaction[text] = ends
        return ends

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
        if self._closed or self._terminated:
            return
        if (self._pending is not None or self._held) and self._gate is not None:
            self._read_ahead += len(data)
            if self._read_ahead > READ_AHEAD_LIMIT:
                self._gate.pause(READ_PAUSE_DECISION)
        try:
            self._inbox.extend(self._reader.feed(data))
        except m.ProtocolViolation as exc:
            self._fatal("08P01", f"invalid message: {exc}", log_it=True)
            return
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

    def _wait(self, d: defer.Deferred[Any], then: Any, *, cancelled: Any = None) -> None:
        """Stop processing client input until ``d`` fires, then call ``then`` with its result
        (with ``cancelled`` when it is given and ``d`` failed with ``CancelledError``).

        A decision that is already made (no plugin returned a pending Deferred) is applied at
        once, without pausing the transport.
        """
        fired: list[Any] = []
        waiting = False

        def done(result: Any) -> None:
            if not waiting:
                fired.append(result)
                return
            if self._pending is not d:
                return  # cancelled because the client went away
            self._pending = None
            self._busy = False
            if self._closed:
                return
            if self._gate is not None:
                self._gate.resume(READ_PAUSE_DECISION)
            self._apply(then, result, cancelled)
            self._process()

        d.addBoth(done)
        if fired:
            self._apply(then, fired[0], cancelled)
            return
        waiting = True
        self._busy = True
        self._flush_upstream()
        # Reading goes on up to READ_AHEAD_LIMIT (see dataReceived), so that a client that
        # goes away while its command waits for a human is noticed and the review withdrawn.
        self._read_ahead = 0
        self._pending = d

    def _apply(self, then: Any, result: Any, cancelled: Any = None) -> None:
        if isinstance(result, Failure):
            if cancelled is not None and result.check(defer.CancelledError):
                result = cancelled
            else:
                if not result.check(defer.CancelledError):
                    log.failure(
                        "session {session}: decision failed", result, session=self._session_id
                    )
                self._fatal("XX000", "internal gateway error; session ended")
                return
        try:
            then(result)
        except Exception:
            log.failure("session {session} failed", session=self._session_id)
            self._fatal("XX000", "internal gateway error; session ended")

    def _process(self) -> None:
        try:
            while (
                self._inbox
                and not self._busy
                and not self._held
                and not self._closed
                and not self._terminated
            ):
                self._handle(self._inbox.popleft())
            self._flush_upstream()
        except m.ProtocolViolation as exc:
            self._fatal("08P01", f"invalid message: {exc}", log_it=True)
        except Exception:
            # A failing data hook: what it did not process must not reach either side.
            log.failure("session {session} failed", session=self._session_id)
            self._fatal("XX000", "internal gateway error; session ended")

    def _handle(self, frame: Any) -> None:
        if self._phase == "ready":
            self._client_message(frame)
        elif self._phase == "startup":
            self._startup_message(frame)
        elif self._phase == "password":
            self._password_message(frame)
        elif self._phase in ("scram-first", "scram-final"):
            self._scram_message(frame)
        else:
            # Login is under way upstream; nothing may arrive before ReadyForQuery.
            self._fatal("08P01", f"unexpected message {frame.type!r} during login")

    @property
    def session_info(self) -> SessionInfo | None:
        """The recorded session, once authenticated (what ``LiveSession`` asks for)."""
        return self.session

    @property
    def _session_id(self) -> str:
        return self.session.id if self.session else "-"

    # -- startup -----------------------------------------------------------------------------

    def _connected_decided(self, verdict: Any) -> None:
        if isinstance(verdict, Block | Hold):
            self._fatal("28000", f"connection refused: {verdict.reason}")

    def _startup_message(self, frame: Any) -> None:
        startup = m.decode_startup(frame.body)
        if isinstance(startup, m.SSLRequest):
            self._ssl_request()
        elif isinstance(startup, m.GSSENCRequest):
            self.transport.write(b"N")
        elif isinstance(startup, m.CancelRequest):
            self._cancel_request(startup)
        else:
            self._startup(startup)

    def _ssl_request(self) -> None:
        offer = (
            not self.client_tls
            and self.runtime.server_tls is not None
            and self.runtime.config.client_tls != "disabled"
        )
        if not offer:
            self.transport.write(b"N")
            return
        if self._inbox or self._reader.buffered:
            # Data pipelined after SSLRequest would be trusted as if it came over TLS
            # (CVE-2021-23214): refuse it.
            self._fatal("08P01", "unencrypted data after SSLRequest")
            return
        self.transport.write(b"S")
        self.transport.startTLS(self.runtime.server_tls)
        self.client_tls = True

    def _cancel_request(self, request: Any) -> None:
        self.runtime.sessions.cancel(request.pid, request.key, self.client_address)
        # As PostgreSQL does, say nothing either way and close.
        self._closed = True
        self.transport.loseConnection()

    def _startup(self, startup: Any) -> None:
        major, minor = startup.protocol >> 16, startup.protocol & 0xFFFF
        if major != 3:
            self._fatal(
                "0A000", f"unsupported frontend protocol {major}.{minor}: hoopgw speaks 3.0"
            )
            return
        if self.runtime.config.client_tls == "required" and not self.client_tls:
            self._fatal("28000", "this connection requires TLS (sslmode=require)")
            return
        unknown = sorted(k for k in startup.params if k.startswith("_pq_."))
        if minor > 0 or unknown:
            self.transport.write(
                m.NegotiateProtocolVersion(
                    newest_version=m.PROTOCOL_3_0, unrecognized_options=tuple(unknown)
                ).encode()
            )
        if "replication" in startup.params and startup.params["replication"] not in (
            "",
            "false",
            "0",
            "off",
            "no",
        ):
            self._fatal("0A000", "replication connections are not supported through hoopgw")
            return
        self._params = {k: v for k, v in startup.params.items() if not k.startswith("_pq_.")}
        if not self._params.get("user"):
            self._fatal("28000", "no user name in the startup message")
            return
        self._begin_authentication()

    # -- client authentication ---------------------------------------------------------------

    def _begin_authentication(self) -> None:
        config = self.runtime.config
        method = config.client_auth
        protected = self.client_tls or is_loopback(self._peer_host)
        if method == "auto":
            method = "password" if protected or config.allow_cleartext_password else "scram"
        if method == "password" and not (protected or config.allow_cleartext_password):
            self._fatal(
                "28000",
                "a password may only be sent over TLS or loopback; connect with sslmode=require",
            )
            return
        if method == "password":
            self._phase = "password"
            self.transport.write(m.AuthenticationCleartextPassword().encode())
        else:
            self._phase = "scram-first"
            self.transport.write(m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256",)).encode())

    def _now(self) -> float:
        return float(self.runtime.reactor.seconds())

    def _password_message(self, frame: Any) -> None:
        if frame.type != b"p":
            self._fatal("08P01", f"expected a password message, got {frame.type!r}")
            return
        password = m.PasswordMessage.decode(frame.body).password
        self._phase = "checking"
        self._check_login(
            self.runtime.authenticator.authenticate(
                password, client_address=self.client_address, connection=self.runtime.info.name
            )
        )

    def _scram_message(self, frame: Any) -> None:
        if frame.type != b"p":
            self._fatal("08P01", f"expected a SASL message, got {frame.type!r}")
            return
        try:
            if self._phase == "scram-first":
                initial = m.SASLInitialResponse.decode(frame.body)
                if initial.mechanism != "SCRAM-SHA-256":
                    self._fatal("28000", f"unsupported SASL mechanism {initial.mechanism!r}")
                    return
                refused = self.runtime.authenticator.refuse_if_saturated(
                    method="scram",
                    client_address=self.client_address,
                    connection=self.runtime.info.name,
                )
                if refused is not None:
                    self._phase = "checking"
                    self._check_login(refused)
                    return
                # The store is read off the reactor thread; no message may come meanwhile
                # (the client waits for AuthenticationSASLContinue).
                self._phase = "scram-lookup"
                found = self.runtime.authenticator.scram_verifier(self._params["user"])
                self._wait(
                    found.addErrback(_store_down),
                    lambda result: self._scram_first(initial, result),
                )
            else:
                assert self._scram is not None
                response = m.SASLResponse.decode(frame.body)
                final = self._scram.final(response.data)
                if self._scram_identity is None:
                    raise AuthenticationError("invalid API key")
                self.transport.write(m.AuthenticationSASLFinal(data=final).encode())
                identity = self._scram_identity
                self.runtime.authenticator.record_use(identity.credential_id)
                self._phase = "checking"
                self._check_login(defer.succeed(identity))
        except AuthenticationError:
            self._scram_refused()

    def _scram_first(self, initial: Any, found: Any) -> None:
        """The store answered the SCRAM look-up: send the server's first message."""
        if found is _STORE_DOWN:
            self._phase = "checking"
            self._check_login(defer.fail(StoreError(STORE_UNAVAILABLE)))
            return
        if found is None:
            # Run the exchange against a verifier no proof fits, so an unknown user
            # looks exactly like a wrong key.
            verifier, self._scram_identity = _mock_verifier(self._params["user"]), None
        else:
            verifier, self._scram_identity = found
        self._scram = ScramServer(verifier)
        try:
            first = self._scram.first(initial.data or b"")
        except AuthenticationError:
            self._scram_refused()
            return
        self.transport.write(m.AuthenticationSASLContinue(data=first).encode())
        self._phase = "scram-final"

    def _scram_refused(self) -> None:
        # Audited and slowed down like any other failure (see hoopgw.identity.authn).
        self._phase = "checking"
        self._check_login(
            self.runtime.authenticator.failed(
                "invalid API key",
                reason="SCRAM proof did not verify (or no such key)",
                method="scram",
                client_address=self.client_address,
                connection=self.runtime.info.name,
            )
        )

    def _auth_failed(self, message: str) -> None:
        log.info(
            "authentication failed on {connection} from {client}: {why}",
            connection=self.runtime.info.name,
            client=self.client_address,
            why=message,
        )
        self._fatal(
            "28P01", f'authentication failed for user "{self._params.get("user", "")}": {message}'
        )

    def _check_login(self, authenticated: defer.Deferred[Identity]) -> None:
        """Wait for the credential check, then for admission to this connection."""
        user = self._params["user"]

        def admit(identity: Identity) -> Any:
            if user not in (identity.name, identity.credential_id):
                return self.runtime.authenticator.failed(
                    f'the key belongs to identity "{identity.name}", not "{user}"',
                    reason=f'user name "{user}" does not match identity "{identity.name}"',
                    method=identity.method,
                    client_address=self.client_address,
                    connection=self.runtime.info.name,
                )
            admitted = self.runtime.authenticator.admit(
                identity, self.runtime.config, client_address=self.client_address
            )
            return admitted.addCallback(lambda _: identity)

        def refused(failure: Failure) -> Any:
            if failure.check(AuthenticationError):
                return _Refusal(code="28P01", message=str(failure.value))
            if failure.check(AccessDenied):
                return _Refusal(code="28000", message=str(failure.value))
            if failure.check(StoreError):
                # cannot_connect_now: the gateway cannot check logins for the moment.
                return _Refusal(code="57P03", message=STORE_UNAVAILABLE)
            return failure  # unexpected: _apply ends the session without showing it

        authenticated.addCallback(admit).addErrback(refused)
        self._wait(authenticated, self._login_checked)

    def _login_checked(self, result: Identity | _Refusal) -> None:
        if isinstance(result, _Refusal):
            if result.code == "28P01":
                self._auth_failed(result.message)
            else:
                log.info(
                    "session refused on {connection} from {client}: {why}",
                    connection=self.runtime.info.name,
                    client=self.client_address,
                    why=result.message,
                )
                self._fatal(result.code, result.message)
            return
        self._authenticated(result)

    def _authenticated(self, identity: Identity) -> None:
        self.identity = identity
        self._phase = "login"
        self._busy = True  # no client input until the upstream login is done
        if self._gate is not None:
            # Nor read any: a client may not pile up messages while the target is slow.
            self._gate.pause(READ_PAUSE_LOGIN)
        self.runtime.sessions.add(self)
        self._connect_upstream()

    def _start_session(self, upstream_tls: bool) -> None:
        """The target accepted the login: the session exists from now on."""
        assert self.identity is not None
        user = self._params["user"]
        database = self._params.get("database") or self.runtime.config.credential.user
        # Every parameter the target receives is recorded and shown to plugins (startup
        # parameters are settings: guardrails judges them like SET statements).
        attributes = {k: v for k, v in self._params.items() if k not in DROPPED_PARAMETERS}
        attributes.update(user=user, database=database)
        self.session = SessionInfo(
            id=str(uuid.uuid4()),
            connection=self.runtime.info,
            identity=self.identity,
            client_address=self.client_address,
            client_tls=self.client_tls,
            upstream_tls=upstream_tls,
            started_at=time.time(),
            attributes=attributes,
        )
        self._ledger = CommandLedger(self.chain, self.session, end_session=self.terminate)
        self._wait(
            self.chain.decide("session_started", session=self.session), self._session_decided
        )

    def _session_decided(self, verdict: Any) -> None:
        if isinstance(verdict, Block | Hold):
            self._fatal("28000", f"session refused: {verdict.reason}")
            return
        reports = {}
        for wire in self._upstream_parameters:
            status = m.ParameterStatus.decode(wire[5:])
            reports[status.name] = status.value
        try:
            self._lexing.login(reports)
        except LexingRefused as exc:
            # Startup parameters, options and role or database defaults all end up here.
            self._fatal(LEXING_REFUSED, f"session refused: {exc}", log_it=True)
            return
        self._welcome()

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self._phase == "login":
            # auth_timeout bounds the whole login, the target's side included.
            self._fatal("08006", "the target did not complete the login in time", log_it=True)
        elif self._phase != "ready":
            self._fatal("08P01", "authentication timed out", log_it=True)

    # -- upstream ----------------------------------------------------------------------------

    def _connect_upstream(self) -> None:
        config = self.runtime.config
        host, _, port = config.target.rpartition(":")
        host = host.strip("[]")
        tls = config.upstream_tls
        params = {k: v for k, v in self._params.items() if k not in DROPPED_PARAMETERS}
        params.setdefault("database", config.credential.user)
        try:
            self._read_only = self.chain.upstream_options(self.runtime.info).read_only
        except PluginError as exc:
            self._fatal("28000", f"session refused: {exc}")
            return
        if self._read_only:
            # A startup parameter rather than a SET: it outranks the role's, the database's
            # and the server's defaults and the client's options, and it is the session's
            # reset value, so RESET, RESET ALL and DISCARD ALL return to it. Setting names
            # ignore case, and the last one given wins: drop the client's, add ours last.
            params = {k: v for k, v in params.items() if k.lower() != READ_ONLY_SETTING}
            params[READ_ONLY_SETTING] = "on"
        password = config.credential.password.reveal() if config.credential.password else None
        self.upstream = UpstreamConnection(
            self,
            user=config.credential.user,
            password=password,
            params=params,
            sslmode=tls.sslmode,
            tls_options=None
            if tls.sslmode == "disable"
            else client_tls_options(tls.sslmode, tls.server_name or host, tls.ca_file),
        )
        d = self.runtime.connect_upstream(host, int(port), self.upstream)

        def failed(failure: Failure) -> None:
            log.info(
                "target {target} unreachable: {why}",
                target=config.target,
                why=failure.getErrorMessage(),
            )
            message = f"the target {config.target} is unreachable"
            if failure.check(UpstreamUnavailable):
                message += f": {failure.getErrorMessage()}"
            self.upstream_failed("08006", message)

        d.addErrback(failed)

    def upstream_ready(
        self, parameters: list[bytes], backend_key: tuple[int, bytes], tls: bool
    ) -> None:
        """The upstream login finished: start the session (plugins may still refuse it)."""
        if self._closed:
            if self.upstream is not None:
                self.upstream.close()
            return
        self._upstream_key = backend_key
        self._upstream_parameters = parameters
        if self._read_only and not all(map(self._still_read_only, parameters)):
            self._fatal("28000", "session refused: the target did not start it read-only")
            return
        self._start_session(tls)

    def _still_read_only(self, wire: bytes) -> bool:
        """Whether a ParameterStatus (whole message) leaves the session read-only. PostgreSQL
        14 and later report the setting at login and whenever it changes: a change the
        gateway did not see coming (a function's body) ends the session."""
        status = m.ParameterStatus.decode(wire[5:])
        return status.name != READ_ONLY_SETTING or status.value == "on"

    def _welcome(self) -> None:
        """Tell the client it is in, and start relaying."""
        assert self.upstream is not None and self.session is not None
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        out = [m.AuthenticationOk().encode()]
        out.extend(self._rewrite_parameters(self._upstream_parameters))
        # The client sees the target's own process id (pg_backend_pid(), notifications and
        # pg_terminate_backend agree with it) and a secret the gateway makes: the target's
        # secret never leaves the gateway, so only a cancel request sent here can reach it.
        pid = self._upstream_key[0]
        while True:
            secret = secrets.token_bytes(4)
            if self.runtime.sessions.add_cancel_key(pid, secret, self):
                break
        out.append(m.BackendKeyData(pid=pid, key=secret).encode())
        out.append(m.ReadyForQuery(status="I").encode())
        self.transport.writeSequence(out)
        # Each side pauses the other when its write buffer fills (portforward-style).
        up_transport = self.upstream.transport
        set_no_delay(up_transport)
        self.transport.registerProducer(ReadGate(up_transport), True)
        up_transport.registerProducer(self._gate, True)
        self._phase = "ready"
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

    def _rewrite_parameters(self, parameters: list[bytes]) -> list[bytes]:
        if not self.chain.has_output_hooks:
            return parameters
        out = []
        encoding = self._message_encoding()
        for wire in parameters:
            status = m.ParameterStatus.decode(wire[5:])
            fields = {"name": status.name, "value": status.value}
            output = self._output("parameter", fields, None)
            value = message_wire({"value": output.fields.get("value", "")}, encoding)["value"]
            out.append(m.ParameterStatus(name=status.name, value=value).encode())
        return out

    def upstream_failed(self, code: str, message: str) -> None:
        """The upstream could not be reached or refused the login."""
        self.runtime.upstream_failed()
        log.info(
            "session {session}: {message}",
            session=self._session_id,
            message=self.chain.loggable(message),
        )
        self._fatal(code, message)

    def upstream_closed(self) -> None:
        """The target ended the connection."""
        if self._terminated:
            # Having seen Terminate, the target may close before the client's socket is
            # reported closed: the session still ends as the client's doing.
            self._end_session("client closed")
        elif not self._closed:
            self._fatal("08006", "the target closed the connection", goodbye=False)

    def forward_cancel(self) -> None:
        """The client asked (on another connection) to cancel what this session runs."""
        if self._pending is not None and self._phase == "ready":
            # The command has not reached the target: withdraw its decision; the session then
            # answers it with 57014 like a cancelled statement (see _command).
            self._pending.cancel()
            return
        if self.upstream is None or not self._upstream_key[1]:
            return
        config = self.runtime.config
        host, _, port = config.target.rpartition(":")
        request = m.CancelRequest(pid=self._upstream_key[0], key=self._upstream_key[1]).encode()

        class _Cancel(protocol.Protocol):
            transport: Any

            def connectionMade(self) -> None:
                self.transport.write(request)
                self.transport.loseConnection()

        self.runtime.connect_upstream(host.strip("[]"), int(port), _Cancel()).addErrback(
            lambda f: log.info("cancel could not reach the target: {why}", why=f.getErrorMessage())
        )

    # -- the proxy loop: client to target ----------------------------------------------------

    def _client_message(self, frame: Any) -> None:
        kind = frame.type
        if self._discard_until_sync and kind != b"S":
            return
        if self._parse_waiting is not None:
            self._decide_parse(frame)
            return
        if (
            self._read_only
            and kind in (b"Q", b"P", b"B", b"E")
            and not self._tracker.settled
            and self._tracker.settling
        ):
            # A new transaction takes its mode from default_transaction_read_only as it is
            # then, and code the gateway does not see (a view's function) may have turned it
            # off: the server reports that before its ReadyForQuery. Wait for it, so that the
            # session ends before anything runs in a transaction that may be read-write.
            self._inbox.appendleft(frame)
            self._held = True
            self._read_ahead = 0
            return
        if self._read_only and self._transaction_ended and kind in (b"Q", b"P", b"B", b"E"):
            # The report of a setting changed before the COMMIT comes only before the next
            # ReadyForQuery, after this would have run.
            self._transaction_ended = kind != b"Q"  # a Query ends the pipeline like a Sync
            refusal = Block(
                reason="read-only: a command after COMMIT or ROLLBACK in the same pipeline may"
                " run in a read-write transaction; send Sync after ending a transaction"
            )
            self._refuse(None, refusal, extended=kind != b"Q", code="25006")
            return
        if kind in (b"Q", b"P"):
            self._statement(frame)
        elif kind == b"B":
            bind = m.Bind.decode(frame.body)
            parsing = self._parsing.get(bind.statement)
            if parsing is not None and self._tracker.next_barrier > parsing[1]:
                # A Parse of this name in an earlier segment is unanswered: it may have failed
                # (the old statement runs) or not. Wait until the server has said.
                self._inbox.appendleft(frame)
                self._held = True
                self._read_ahead = 0
                return
            # In the Parse's own segment, its text: if the Parse failed, the server skips this.
            text = parsing[0] if parsing else self._statements.get(bind.statement, "")
            if self._read_only and self._ends(text):
                self._ending_portals.add(bind.portal)
            else:
                self._ending_portals.discard(bind.portal)
            if bind.statement not in self._fresh_statements:
                # Re-running a statement prepared earlier (the unnamed one too, which lives
                # until the next Parse of it): record and decide each execution, with its values.
                command = Command(
                    session_id=self._session_id,
                    seq=self._next_seq(),
                    text=text,
                    kind="execute",
                    parameter_count=len(bind.params),
                    parameters=bound_parameters(
                        bind.params,
                        bind.param_formats,
                        self._statement_types.get(bind.statement, ()),
                    ),
                    statement_name=bind.statement,
                )
                self._command(command, frame, portal=bind.portal)
            else:
                # The Bind its Parse was decided with; a second Bind is a new execution.
                self._fresh_statements.discard(bind.statement)
                self._forward(
                    frame, Request(kind="bind", progress=self._current, portal=bind.portal)
                )
        elif kind == b"E":
            portal = m.Execute.decode(frame.body).portal
            self._transaction_ended = self._transaction_ended or portal in self._ending_portals
            if self._ledger is not None:
                # A portal fetched again after a reload: its rows pass the new chain's hooks.
                self._ledger.catch_up()
            self._forward(frame, Request(kind="execute", progress=self._current, portal=portal))
        elif kind == b"D":
            describe = m.Describe.decode(frame.body)
            described = describe.name if describe.kind == "P" else None
            self._forward(frame, Request(kind="describe", progress=self._current, portal=described))
        elif kind == b"C":
            close = m.Close.decode(frame.body)
            self._forward(
                frame,
                Request(
                    kind="close",
                    portal=close.name if close.kind == "P" else None,
                    statement=close.name if close.kind == "S" else None,
                ),
            )
        elif kind == b"S":
            self._discard_until_sync = False
            self._transaction_ended = False
            self._fresh_statements.clear()
            self._forward(frame, Request(kind="sync"))
        elif kind == b"H":
            self._forward(frame, None)
        elif kind in (b"d", b"c", b"f"):
            self._copy_from_client(frame)
        elif kind == b"X":
            # Terminate is the client's last word: whatever it sent after is not a command.
            self._inbox.clear()
            self._forward(frame, None)
            self._flush_upstream()
            self.transport.loseConnection()
            # No client input counts from here; answers to commands already forwarded are still
            # tracked, so their outcomes are recorded as they were.
            self._terminated = True
        elif kind == b"F":
            # FunctionCall carries no SQL the gateway could inspect.
            refusal = Block(reason="the FunctionCall message is not supported through hoopgw")
            self._refuse(None, refusal, extended=False, code="0A000")
        else:
            self._fatal("08P01", f"unknown message type {kind!r}", log_it=True)

    def _statement(self, frame: Any) -> None:
        """A Query or Parse: read its text as the server will, then judge it.

        The text is decoded in the client's encoding in force when the server reads it. While an
        earlier command may still change that state, a text that would lex differently in another
        state waits for the server's ReadyForQuery; when no Sync or Query lies between (an
        extended-protocol pipeline), the answer could only come after the text itself, so it
        is refused.
        """
        if frame.type == b"Q":
            query, name, parameters = m.Query.decode(frame.body).query, None, 0
        else:
            parse = m.Parse.decode(frame.body)
            query, name, parameters = parse.query, parse.name, len(parse.param_oids)
        raw = query.encode("utf-8", "surrogateescape")  # the bytes as the client sent them
        refusal = ""
        text = query
        if not self._tracker.settled and not lexes_alike(raw):
            if self._tracker.settling:
                self._inbox.appendleft(frame)
                self._held = True
                self._read_ahead = 0
                return
            refusal = (
                "an earlier command of this pipeline may change standard_conforming_strings or"
                " client_encoding, and this statement (with a backslash or non-ASCII bytes)"
                " would read differently then; send Sync before it"
            )
        else:
            try:
                text = self._lexing.state.decode(raw)
            except LexingRefused as exc:
                refusal = str(exc)
        if name is not None and not refusal:
            # Decided with the next message: when that is the Bind of this statement, the
            # decision (and an approval) covers the values it binds too. The target answers
            # nothing before a later message (Sync, Flush) either.
            self._parse_waiting = (parse, text, frame)
            return
        command = Command(
            session_id=self._session_id,
            seq=self._next_seq(),
            text=text,
            kind="query" if name is None else "parse",
            parameter_count=parameters,
            statement_name=name or "",
        )
        if refusal:
            self._refuse_unjudged(command, refusal)
        else:
            self._command(command, frame, statement=name)

    def _refuse_unjudged(self, command: Command, reason: str) -> None:
        """Refuse ``command`` without asking the plugins (the gateway cannot read it as the
        server would), recording it as refused."""
        assert self.session is not None
        assert self._ledger is not None
        command = self.chain.recordable(self.session, command)
        verdict = Block(reason=reason)
        self._ledger.decided(command, verdict)
        self._refuse(command, verdict, extended=command.kind != "query", code=LEXING_REFUSED)

    def _release(self) -> None:
        """The lexing state is known again: judge the statement that waited for it."""
        self._held = False
        if self._gate is not None:
            self._gate.resume(READ_PAUSE_DECISION)
        self._process()

    def _decide_parse(self, following: Any) -> None:
        """Decide the waiting Parse, with the values of ``following`` when it is the Bind of
        that statement; ``following`` is handled next, as it would have been."""
        assert self._parse_waiting is not None
        parse, text, frame = self._parse_waiting
        self._parse_waiting = None
        parameters: tuple[Parameter, ...] = ()
        bound = False
        if following.type == b"B":
            bind = m.Bind.decode(following.body)
            if bind.statement == parse.name:
                bound = True
                parameters = bound_parameters(bind.params, bind.param_formats, parse.param_oids)
        self._inbox.appendleft(following)
        command = Command(
            session_id=self._session_id,
            seq=self._next_seq(),
            text=text,
            kind="parse",
            parameter_count=len(parse.param_oids),
            parameters=parameters,
            statement_name=parse.name,
            prepared_only=not bound,
        )
        self._statement_types[parse.name] = parse.param_oids
        self._command(command, frame, statement=parse.name, bound=bound)

    def _next_seq(self) -> int:
        assert self._ledger is not None
        return self._ledger.next_seq()

    def _command(
        self,
        command: Command,
        frame: Any,
        statement: str | None = None,
        *,
        portal: str | None = None,
        bound: bool = False,
    ) -> None:
        """Decide ``command`` and forward ``frame`` if it is allowed.

        :param statement: the name of the statement a Parse prepares.
        :param bound: the Parse was decided with the values of the Bind that follows it, which
            then passes undecided (once).
        """
        assert self.session is not None
        # What the audit store keeps of the text (masked); the target still gets command.text.
        command = self.chain.recordable(self.session, command)

        def decided(verdict: Any) -> None:
            if verdict is _CANCELLED:
                self._refuse(
                    command,
                    None,
                    extended=command.kind != "query",
                    code="57014",
                    message="canceling statement due to user request",
                    status="cancelled",
                )
                return
            if isinstance(verdict, Block):
                self._refuse(command, verdict, extended=command.kind != "query")
                return
            progress = CommandProgress(
                command=command, forwarded_at=self._now(), barrier=self._tracker.next_barrier
            )
            self._current = progress
            self._tracker.track(progress)
            if command.kind != "parse":
                kind = "query" if command.kind == "query" else "bind"
                self._forward(frame, Request(kind=kind, progress=progress, portal=portal))
                return
            request = Request(kind="parse", progress=progress, portal=portal)
            if statement is not None:
                request.statement, request.text = statement, command.text
                self._parsing[statement] = (command.text, self._tracker.next_barrier)
                if bound:
                    self._fresh_statements.add(statement)
                else:
                    self._fresh_statements.discard(statement)
            self._forward(frame, request)

        assert self._ledger is not None
        verdict = self._ledger.decide_at_once(command)
        if verdict is not None:
            decided(verdict)  # no plugin judges commands: no Deferred, no pause
            return
        self._wait(self._ledger.decide(command), decided, cancelled=_CANCELLED)

    def _refuse(
        self,
        command: Command | None,
        verdict: Block | None,
        *,
        extended: bool,
        code: str = "42501",
        message: str = "",
        status: str = "blocked",
    ) -> None:
        """Answer a refused command with an error, in order, keeping both sides in step.

        The command is replaced upstream by a statement that can only fail to parse, so the
        target fails the transaction (if one is open) exactly as it would have for a real error,
        and its answer arrives in order with everything forwarded before. Its error is swallowed
        and the gateway's own goes to the client.
        """
        detail = hint = None
        if verdict is not None:
            refusal = (
                refusals.unreadable(verdict.reason)
                if code == LEXING_REFUSED
                else refusals.refused(verdict, connection=self.runtime.info.name)
            )
            message = f"hoopgw {refusal.message}"
            detail, hint = refusal.detail, refusal.next_step
        error = m.error_response("ERROR", code, message, detail, hint).encode()
        progress = None
        if command is not None:
            progress = CommandProgress(
                command=command, forwarded_at=self._now(), barrier=self._tracker.next_barrier
            )
            self._complete(progress, status=status, error_code=code, error_message=message)
        if extended:
            poison = m.Parse(name="", query=REFUSED_STATEMENT).encode()
            self._discard_until_sync = True
            # The poison drops the target's unnamed statement when it runs (its ErrorResponse).
            self._send_upstream(poison, Request(kind="parse", replace_error=error, statement=""))
        else:
            poison = m.Query(query=REFUSED_STATEMENT).encode()
            self._send_upstream(poison, Request(kind="query", replace_error=error))

    def _copy_from_client(self, frame: Any) -> None:
        if frame.type in (b"c", b"f"):
            self._tracker.copy_ended()  # the server heeds Sync again
        if frame.type == b"d" and self.chain.has_input_hooks:
            output = Output("copy", {"data": bytes(frame.body).decode("utf-8", "surrogateescape")})
            self.chain.hook.client_input(session=self.session, output=output)
            data = output.fields.get("data", "").encode("utf-8", "surrogateescape")
            self._send_upstream(m.CopyData(data=data).encode(), None)
            return
        self._forward(frame, None)

    def _forward(self, frame: Any, request: Request | None) -> None:
        self._send_upstream(bytes(frame.wire), request)

    def _send_upstream(self, data: bytes, request: Request | None) -> None:
        if request is not None:
            self._tracker.expect(request)
        self._to_upstream.append(data)

    def _flush_upstream(self) -> None:
        if self._to_upstream and self.upstream is not None and self.upstream.transport is not None:
            send_now(self.upstream.transport, self._to_upstream)
        self._to_upstream = []

    # -- the proxy loop: target to client ----------------------------------------------------

    def upstream_messages(self, block: bytes, starts: list[int]) -> None:
        """Relay server messages (message ``i`` is ``block[starts[i]:starts[i + 1]]``) to the
        client, applying data hooks and tracking outcomes."""
        if self._closed:
            return
        try:
            self._relay(block, starts)
        except UnicodeError as exc:
            # Text the plugins could not read exactly in the client encoding, or a masked
            # value it cannot hold: nothing of this batch reaches the client.
            encoding = self._lexing.state.text_encoding
            self._fatal(
                "22021",
                f"hoopgw ends the session: a server text is not exactly readable in"
                f" client_encoding {encoding} ({getattr(exc, 'reason', exc)}), so it cannot be"
                " masked (fail closed); use client_encoding UTF8",
                log_it=True,
            )
        except Exception:
            # A failing data hook: nothing of this batch reaches the client.
            log.failure("session {session} failed", session=self._session_id)
            self._fatal("XX000", "internal gateway error; session ended")

    def _relay(self, block: bytes, starts: list[int]) -> None:
        """Relay one block of server messages.

        The lean path: what no hook changes leaves as the bytes received, in one send per block;
        only the messages that change (rows a plugin reads, rewritten errors and notices, the
        gateway's own error for a refused command) are cut out and replaced. A DataRow no
        plugin wants is only counted.
        """
        parts: list[bytes] = []  # what goes to the client before block[last:]
        last = 0
        rows: list[int] = []  # where each DataRow of the current run starts in the block
        rows_request: Request | None = None
        tracker = self._tracker
        for index in range(len(starts) - 1):
            pos = starts[index]
            stop = starts[index + 1]
            kind = block[pos]
            if kind == 0x44:  # 'D' DataRow
                # The hot path: a DataRow belongs to the request at the head of the queue and
                # never completes it, so it needs no attribution of its own.
                head = tracker.head
                if head is not self._columns_for:
                    self._select_columns(head)
                if self._rows_wanted:
                    if not rows:
                        parts.append(block[last:pos])
                    rows.append(pos)
                    rows_request = head
                    last = stop
                elif head is not None and head.progress is not None:
                    head.progress.result_rows += 1
                    head.progress.bytes += stop - pos
                continue
            if rows:
                parts.extend(self._rewrite_rows(block, rows, last, rows_request))
                rows = []
            wire = block[pos:stop]
            try:
                data = self._server_message(m.RawMessage(wire[:1], wire[5:], wire))
            except _LexingLost as lost:
                # Changed by a route no check saw (a function, a role default, ...): what
                # follows would be read in a state the gateway cannot lex. End it here, after
                # what came before.
                parts.append(block[last:pos])
                if any(parts):
                    send_now(self.transport, parts)
                self._fatal(LEXING_REFUSED, f"terminating connection: {lost}", log_it=True)
                return
            if data is None:
                return  # the session ended
            if data is not wire:
                parts.append(block[last:pos])
                parts.append(data)
                last = stop
        if rows:
            parts.extend(self._rewrite_rows(block, rows, last, rows_request))
        if parts:
            parts.append(block[last:])
            send_now(self.transport, parts)
        elif block:
            send_now(self.transport, [block])
        if self._held and tracker.settled:
            self._release()

    def _server_message(self, frame: Any) -> bytes | None:
        """Track one server message other than a DataRow; return what the client gets for it
        (``frame.wire`` itself when unchanged), or None when the session ended.

        :raises _LexingLost: the server reported a setting the gateway cannot lex.
        """
        kind = frame.type
        if kind == b"S" and self._read_only and not self._still_read_only(frame.wire):
            self._fatal(
                "25006",
                f"the target reported {READ_ONLY_SETTING} off on a read-only connection;"
                " session ended",
                log_it=True,
            )
            return None
        attribution = self._tracker.attribute(kind[0])
        request = attribution.request
        data = frame.wire
        if kind == b"Z":
            seen = self._tracker.barriers_seen
            if self._parsing:
                self._parsing = {n: p for n, p in self._parsing.items() if p[1] > seen}
            if request is not None and request.kind == "query":
                self._statements.pop("", None)  # a simple Query drops the unnamed statement
            if frame.body[:1] == b"I":
                self._portals.clear()  # outside a transaction no portal is left
        elif kind == b"E":
            if request is not None and request.statement == "" and request.kind == "parse":
                self._statements.pop("", None)  # an unnamed Parse drops the old one first
            if request is not None and request.replace_error is not None:
                data = request.replace_error
            else:
                data = self._note_error(frame, request, data)
        elif kind == b"C":
            if request is not None and request.progress is not None:
                request.progress.result_complete(_tag_rows(frame.body))
        elif kind == b"2":
            # A new portal: until its RowDescription (if the client asks for one), its rows'
            # types and formats are unknown, never those of an earlier result.
            self._columns = []
            self._rows_wanted = self.chain.has_row_hooks
            if request is not None and request.portal is not None:
                self._portals[request.portal] = (self._columns, self._rows_wanted, self.chain)
        elif kind == b"T":
            self._rows_wanted = self.chain.has_row_hooks
            if self._rows_wanted or self.chain.has_column_hooks:
                self._columns = _columns(m.RowDescription.decode(frame.body))
            else:
                self._columns = []  # no plugin reads them: not decoded
            if (
                self.chain.has_column_hooks
                and self.session is not None
                and request is not None
                and request.progress is not None
            ):
                # A result no row plugin needs (no text to mask, say) streams undecoded.
                self._rows_wanted = self.chain.result_columns(
                    session=self.session,
                    command=request.progress.command,
                    columns=self._columns,
                )
            if request is not None and request.portal is not None:  # Describe of a portal
                self._portals[request.portal] = (self._columns, self._rows_wanted, self.chain)
        elif kind == b"3":
            if request is not None and request.portal is not None:
                self._portals.pop(request.portal, None)
            if request is not None and request.statement is not None:
                self._statements.pop(request.statement, None)
                self._statement_types.pop(request.statement, None)
        elif kind == b"1" and request is not None and request.statement is not None:
            self._statements[request.statement] = request.text
        elif kind in (b"N", b"A") and self.chain.has_output_hooks:
            data = self._rewrite_output(frame, request)
        elif kind == b"S":
            status = m.ParameterStatus.decode(frame.body)
            try:
                self._lexing.report(status.name, status.value)
            except LexingRefused as exc:
                raise _LexingLost(str(exc)) from exc
            if self.chain.has_output_hooks:
                data = self._rewrite_parameters([bytes(frame.wire)])[0]
        elif kind == b"d" and self.chain.has_output_hooks:
            encoding = self._copy_encoding(request)
            output = Output("copy", {"data": copy_text(bytes(frame.body), encoding)})
            self.chain.hook.server_output(
                session=self.session, command=self._command_of(request), output=output
            )
            data = m.CopyData(data=copy_bytes(output.fields.get("data", ""), encoding)).encode()
        if request is not None and request.progress is not None:
            request.progress.bytes += len(data)
        for progress in attribution.completed:
            self._complete(progress)
        return data

    def _select_columns(self, head: Request | None) -> None:
        """Make the current columns those of the portal whose rows ``head`` receives: an
        Execute's rows belong to its own portal (unknown columns, all rows wanted, when its
        description was not seen); a simple Query's follow its own RowDescription."""
        self._columns_for = head
        if head is not None and head.kind == "execute" and head.portal is not None:
            columns, wanted, chain = self._portals.get(
                head.portal, ([], self.chain.has_row_hooks, self.chain)
            )
            if chain is not self.chain:
                # Described before a reload replaced the chain: the new one judges its rows,
                # and its column plugins (masking newly on) see the columns first.
                wanted = self.chain.has_row_hooks
                progress = head.progress
                if columns and self.chain.has_column_hooks and progress is not None:
                    wanted = self.chain.result_columns(
                        session=self.session, command=progress.command, columns=columns
                    )
            self._columns, self._rows_wanted = columns, wanted

    def _command_of(self, request: Request | None) -> Command | None:
        return (
            request.progress.command
            if request is not None and request.progress is not None
            else None
        )

    def _note_error(self, frame: Any, request: Request | None, data: bytes) -> bytes:
        error = m.ErrorResponse.decode(frame.body)
        fields = dict(error.fields)
        encoding = self._message_encoding()
        if self.chain.has_output_hooks:
            output = self._output("error", _named_fields(fields), self._command_of(request))
            fields = _coded_fields(message_wire(output.fields, encoding), fields)
            data = m.ErrorResponse(fields=fields).encode()
            message = output.fields.get("message", "")
        else:
            message = message_text({"M": fields.get("M", "")}, encoding, exact=False)["M"]
        if request is not None and request.progress is not None:
            request.progress.error_code = fields.get("C", "")
            request.progress.error_message = message
        return data

    def _output(self, kind: str, fields: dict[str, str], command: Command | None) -> Output:
        """``server_output`` on a server message's ``fields``, read in the message encoding
        (:func:`~hoopgw_postgres.rowtext.message_text`): the Output as the plugins left it.

        :raises UnicodeError: a field is not valid in the encoding (fail closed).
        """
        encoding = self._message_encoding()
        strict = must_be_utf8(self._lexing.state)
        output = Output(kind, message_text(fields, encoding, strict_utf8=strict))
        self.chain.hook.server_output(session=self.session, command=command, output=output)
        return output

    def _rewrite_output(self, frame: Any, request: Request | None) -> bytes:
        command = self._command_of(request)
        encoding = self._message_encoding()
        if frame.type == b"N":
            notice = m.NoticeResponse.decode(frame.body)
            output = self._output("notice", _named_fields(dict(notice.fields)), command)
            return m.NoticeResponse(
                fields=_coded_fields(message_wire(output.fields, encoding), dict(notice.fields))
            ).encode()
        note = m.NotificationResponse.decode(frame.body)
        fields = {"channel": note.channel, "payload": note.payload}
        texts = message_wire(self._output("notification", fields, command).fields, encoding)
        return m.NotificationResponse(
            pid=note.pid,
            channel=texts.get("channel", note.channel),
            payload=texts.get("payload", ""),
        ).encode()

    def _copy_encoding(self, request: Request | None) -> str:
        """The encoding of the COPY data ``request`` receives: the one its COPY's ``ENCODING``
        option names (the server converts the data to it), else the session's.

        :raises _LexingLost: an encoding the gateway cannot read, or COPYs of one request
            whose data come in different encodings (fail closed).
        """
        known = self._copy_encoding_of
        if known is not None and known[0] is request:
            return known[1]
        command = self._command_of(request)
        named = copy_encodings(command.text) if command is not None else frozenset()
        if not any(named):
            return self._lexing.state.text_encoding
        encodings = {clean_encoding_name(name) for name in named}
        encoding = next(iter(encodings))
        if len(encodings) > 1 or encoding not in CODECS or encoding in CLIENT_ONLY_ENCODINGS:
            # A COPY without ENCODING (named "") is in the client's: which COPY of the
            # request the data belongs to is not known here.
            shown = ", ".join(sorted(name or "none" for name in named))
            raise _LexingLost(
                f"COPY ... (ENCODING {shown}): hoopgw cannot read its data to mask it; copy"
                " in the session's client_encoding, one COPY per query"
            )
        if request is not None:
            self._copy_encoding_of = (request, encoding)
        return encoding

    def _message_encoding(self) -> str:
        """The encoding of the server's messages: the client's once the session started
        (before, the login's errors are in the server's own, read as UTF-8)."""
        return self._lexing.state.text_encoding if self.session is not None else "UTF8"

    def _rewrite_rows(
        self, block: bytes, starts: list[int], end: int, request: Request | None
    ) -> list[bytes]:
        """What the client gets for the run of DataRows at ``starts`` in ``block`` (the last
        ends at ``end``): each row through ``server_rows``, or with ``server_row_messages``
        only the rows a plugin needs, the others as they came."""
        command = self._command_of(request)
        if command is not None and self.chain.picks_rows:
            out = self._rewrite_picked_rows(block, starts, end, command)
        else:
            bounds = [*starts[1:], end]
            rows = [
                m.decode_data_row(block[s + 5 : e]) for s, e in zip(starts, bounds, strict=True)
            ]
            if command is not None:
                self._server_rows(command, rows)
            out = [m.encode_data_row(row) for row in rows]
        if request is not None and request.progress is not None:
            request.progress.result_rows += len(starts)
            request.progress.bytes += sum(len(e) for e in out)
        return out

    def _rewrite_picked_rows(
        self, block: bytes, starts: list[int], end: int, command: Command
    ) -> list[bytes]:
        """Decode and rewrite only the rows the row plugins need (``server_row_messages``);
        the others are forwarded as the server sent them, in runs of the block."""
        assert self.session is not None  # a command belongs to a started session
        first = starts[0]
        needed = self.chain.rows_needed(
            session=self.session,
            command=command,
            columns=self._columns,
            data=block[first:end],
            starts=[s - first for s in starts],
            encoding=self._lexing.state.text_encoding,
        )
        if needed is None:
            needed = list(range(len(starts)))
        if not needed:
            return [block[first:end]]
        bounds = [*starts[1:], end]
        rows = [m.decode_data_row(block[starts[i] + 5 : bounds[i]]) for i in needed]
        self._server_rows(command, rows)
        out: list[bytes] = []
        last = first
        for index, row in zip(needed, rows, strict=True):
            out.append(block[last : starts[index]])
            out.append(m.encode_data_row(row))
            last = bounds[index]
        out.append(block[last:end])
        return out

    def _server_rows(self, command: Command, rows: list[list[bytes | None]]) -> None:
        """``server_rows`` on ``rows``, their text in UTF-8 while the plugins read it."""
        codec = row_codec(self._lexing.state.text_encoding)
        if codec is not None:
            convert(rows, self._columns, codec, to_utf8=True)
        elif must_be_utf8(self._lexing.state):
            check_utf8(rows, self._columns)
        self.chain.hook.server_rows(
            session=self.session, command=command, columns=self._columns, rows=rows
        )
        if codec is not None:
            convert(rows, self._columns, codec, to_utf8=False)

    def _complete(
        self,
        progress: CommandProgress,
        *,
        status: str | None = None,
        error_code: str = "",
        error_message: str = "",
    ) -> None:
        code = error_code or progress.error_code
        outcome = CommandOutcome(
            status=status or ("error" if code else "ok"),
            rows=progress.rows + progress.result_rows,
            bytes=progress.bytes,
            duration=max(0.0, self._now() - progress.forwarded_at),
            error_code=code,
            error_message=error_message or progress.error_message,
        )
        if self._ledger is not None:
            self._ledger.complete(progress.command, outcome)

    # -- ending ------------------------------------------------------------------------------

    def statement_held(self, statement: refusals.HeldStatement) -> None:
        """A statement of this session waits for review: tell the client now, with a NOTICE,
        and again every :data:`~hoopgw.refusals.HELD_NOTICE_INTERVAL` seconds until it ends.
        Notices go between whole messages, as a server's own may."""
        self.statement_released("")
        self._held_notices = task.LoopingCall(self._notice_held, statement)
        self._held_notices.clock = self.runtime.reactor
        self._held_notices.start(refusals.HELD_NOTICE_INTERVAL, now=True)

    def statement_released(self, review_id: str) -> None:
        """The review ended: stop telling the client it waits."""
        if self._held_notices is not None and self._held_notices.running:
            self._held_notices.stop()
        self._held_notices = None

    def _notice_held(self, statement: refusals.HeldStatement) -> None:
        if self._closed:
            self.statement_released("")
            return
        notice = refusals.held(statement, now=self._now())
        fields = {
            "S": "NOTICE",
            "V": "NOTICE",
            "C": HELD_SQLSTATE,
            "M": f"hoopgw: {notice.message}",
            "D": notice.detail,
            "H": notice.next_step,
        }
        self.transport.write(m.NoticeResponse(fields=fields).encode())

    def terminate(self, reason: str) -> None:
        """End the session with a FATAL error to the client (gateway shutdown, revoked access)."""
        self._fatal("57P01", f"terminating connection: {reason}", reason=reason)

    def _fatal(
        self,
        code: str,
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
            self.transport.write(m.error_response("FATAL", code, message).encode())
        self._closed = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        if self.upstream is not None:
            self.upstream.close()
        # A TLS transport closes only once no producer is registered with it (the upstream's
        # reader is, once the session is ready): without this a client over TLS waits forever
        # after a FATAL the gateway sends on its own (terminate: a revoked key, an agent gone).
        if self._phase == "ready":
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._end_session(reason or message)

    def _end_session(self, reason: str) -> None:
        self.statement_released("")
        self.runtime.sessions.remove(self)
        ledger = self._ledger
        if self.session is None or ledger is None:
            return
        session, self.session = self.session, None
        for progress in self._tracker.open_commands():
            outcome = CommandOutcome(
                status="aborted",
                rows=progress.rows + progress.result_rows,
                bytes=progress.bytes,
                duration=max(0.0, self._now() - progress.forwarded_at),
            )
            ledger.complete(progress.command, outcome)
        # Commands still waiting for their decision are completed as cancelled (once).
        ledger.close(reason)
        log.info("session {session} closed: {reason}", session=session.id, reason=reason)


def _tag_rows(body: bytes) -> int:
    """Rows a CommandComplete body's tag reports (``INSERT 0 5``, ``UPDATE 3``,
    ``SELECT 2``, ...)."""
    last = body.rstrip(b"\x00").rpartition(b" ")[2]
    return int(last) if last.isdigit() else 0


_FIELD_NAMES = {
    "M": "message",
    "D": "detail",
    "H": "hint",
    "W": "where",
    "s": "schema",
    "t": "table",
    "c": "column",
    "d": "datatype",
    "n": "constraint",
    "q": "internal_query",
    "p": "internal_position",
}
_FIELD_CODES = {v: k for k, v in _FIELD_NAMES.items()}


def _named_fields(fields: dict[str, str]) -> dict[str, str]:
    return {_FIELD_NAMES[k]: v for k, v in fields.items() if k in _FIELD_NAMES}


def _coded_fields(named: dict[str, str], original: dict[str, str]) -> dict[str, str]:
    fields = {k: v for k, v in original.items() if k not in _FIELD_NAMES}
    for name, value in named.items():
        if name in _FIELD_CODES:
            fields[_FIELD_CODES[name]] = value
    return fields


def _columns(description: Any) -> list[Column]:
    return [
        Column(
            f.name,
            type_oid=f.type_oid,
            format=f.format,
            table_oid=f.table_oid,
            column_number=f.column_attr,
        )
        for f in description.fields
    ]


class ClientSessionFactory(protocol.Factory):
    """Builds a :class:`ClientSession` for each client accepted on one connection's listener."""

    noisy = False

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime

    def buildProtocol(self, addr: object) -> ClientSession:
        session = ClientSession(self.runtime)
        session.factory = self
        return session
