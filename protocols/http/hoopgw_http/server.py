"""The gateway's HTTP side: one factory per configured ``http`` connection, one
:class:`ClientConnection` (and one session) per client TCP connection.

A request goes: strict parsing (:mod:`hoopgw.http1`) -> checks that refuse what servers
could read differently (:mod:`hoopgw_http.paths`, :data:`~hoopgw_http.headers.OVERRIDE_FIELDS`)
-> the caller's bearer token (the first request of a connection logs the session in: the core
:class:`~hoopgw.authn.Authenticator`, ``allow_groups``, ``session_started``; later requests
must carry the same token) -> an inspected body read whole -> the command decided by the plugin
chain through the session's :class:`~hoopgw.ledger.CommandLedger` (a hold waits here) -> an
:class:`~hoopgw_http.exchange.Exchange` forwards it. One request is handled at a time; a
pipelined request waits, unread, until the response before it is complete.

Every refusal is an HTTP response that says why (``401`` with ``WWW-Authenticate``, ``403`` for
a policy, ``400`` for an ambiguous request), sent with ``Connection: close`` unless the request
was read whole.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw import errors
from hoopgw.errors import AccessDenied, AuthenticationError
from hoopgw.http1 import BadMessage, Data, End, Event, Head, MessageReader, serialize_head
from hoopgw.ledger import CommandLedger
from hoopgw.protocol import ConnectionRuntime
from hoopgw.session import Command, CommandOutcome, Identity, Output, SessionInfo
from hoopgw.transport import ReadGate, is_loopback, set_no_delay
from hoopgw.verdicts import Allow, Block, Hold
from hoopgw_http.bodies import media_type
from hoopgw_http.checks import Refusal, check_request, has_body, overrides_method
from hoopgw_http.exchange import Exchange
from hoopgw_http.headers import (
    CallerTokenError,
    SecretScrubber,
    UpstreamCredential,
    caller_token,
    canonical_name,
)
from hoopgw_http.paths import Target
from hoopgw_http.settings import HttpSettings
from hoopgw_http.upstream import client_tls_options, upstream_tls_options

__all__ = ["ClientConnection", "HttpProxyFactory"]

log = Logger(namespace="hoopgw.http")

READ_PAUSE_REQUEST = "request"
"""A request is being handled: the next one is not read until its response is complete."""


class HttpProxyFactory(protocol.Factory):
    """Serves one configured ``http`` connection; built by the ``http`` protocol spec."""

    noisy = False

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        config = runtime.config
        self.settings = HttpSettings.of(config)
        self.credential = UpstreamCredential(
            kind=self.settings.options.auth,
            user=config.credential.user,
            secret=config.credential.password,
            header=self.settings.options.auth_header,
        )
        self.tls_options = (
            upstream_tls_options(config, self.settings) if self.settings.tls else None
        )
        self.client_tls_options = None
        """TLS towards clients (HTTPS from the first byte), with ``client_tls = "required"``."""
        if config.client_tls == "required":
            gateway = runtime.gateway
            assert gateway.tls_cert is not None and gateway.tls_key is not None
            self.client_tls_options = client_tls_options(gateway.tls_cert, gateway.tls_key)

    def buildProtocol(self, addr: Any) -> ClientConnection:
        """A connection of one client."""
        return ClientConnection(self)


class ClientConnection(protocol.Protocol):
    """One client connection and its session (a :class:`~hoopgw.protocol.LiveSession`)."""

    transport: Any

    def __init__(self, factory: HttpProxyFactory) -> None:
        self.factory = factory
        self.runtime = factory.runtime
        self.settings = factory.settings
        self.identity: Identity | None = None
        """Who is connected (None before the first request authenticated)."""
        self.session_info: SessionInfo | None = None
        """The recorded session (None before the first request authenticated)."""
        self.gate: ReadGate | None = None
        self._reader = MessageReader(response=False)
        self._queue: deque[Event] = deque()
        self._busy = False
        self._pumping = False
        self._body_sink: Callable[[Event], None] | None = None
        self._waiting: defer.Deferred[Any] | None = None
        self._exchange: Exchange | None = None
        self._tunnel: Exchange | None = None
        self._ledger: CommandLedger | None = None
        self._token = ""
        self._closed = False
        self._wants_close = False
        self._request: Head | None = None
        self._bodiless = False
        self._continued = False
        self._login_timer: Any = None
        self._idle_timer: Any = None
        self._admission: defer.Deferred[Any] | None = None
        self.client_address = "?"
        self._client_host = "?"
        self.client_tls = False

    # -- the connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._client_host = getattr(peer, "host", "?")
        self.client_address = f"{self._client_host}:{getattr(peer, 'port', 0)}"
        if self.factory.client_tls_options is not None:
            self.transport.startTLS(self.factory.client_tls_options)
            self.client_tls = True
        else:
            self.client_tls = ISSLTransport.providedBy(self.transport)
        self.gate = ReadGate(self.transport)
        set_no_delay(self.transport)
        runtime = self.runtime
        self._admission = runtime.chain.decide(
            "client_connected", connection=runtime.info, client_address=self.client_address
        )
        self._login_timer = runtime.reactor.callLater(
            runtime.gateway.auth_timeout, self._login_timed_out
        )

    def _login_timed_out(self) -> None:
        self._login_timer = None
        if self._ledger is None and not self._closed:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if self._tunnel is not None:
            self._tunnel.from_client(data)
            return
        try:
            self._queue.extend(self._reader.feed(data))
        except BadMessage as exc:
            self._refuse_unread(exc.status, str(exc))
            return
        self._pump()

    def _pump(self) -> None:
        """Hand queued events on: a request head when idle, body pieces to whoever reads the
        body now; everything else waits (reading is paused meanwhile)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._closed:
                if not self._queue:
                    if self._busy or self._reader.between_messages:
                        break
                    try:
                        events = self._reader.feed(b"")  # a pipelined request kept unread
                    except BadMessage as exc:
                        self._refuse_unread(exc.status, str(exc))
                        break
                    if not events:
                        break
                    self._queue.extend(events)
                    continue
                event = self._queue[0]
                if isinstance(event, Head):
                    if self._busy:
                        break
                    self._queue.popleft()
                    self._start(event)
                elif isinstance(event, End) and self._bodiless:
                    self._queue.popleft()  # the end of a request without a body
                    self._bodiless = False
                elif self._body_sink is not None:
                    self._queue.popleft()
                    self._body_sink(event)
                else:
                    break
        finally:
            self._pumping = False

    def _start(self, head: Head) -> None:
        assert self.gate is not None
        self._stop_idle_timer()
        self._busy = True
        self._request = head
        self._bodiless = not has_body(head)
        self._continued = False
        self._wants_close = head.version == "HTTP/1.0" or b"close" in head.tokens(b"connection")
        self.gate.pause(READ_PAUSE_REQUEST)
        d = defer.ensureDeferred(self._handle(head))
        d.addErrback(self._handling_failed)

    def _handling_failed(self, failure: Failure) -> None:
        if failure.check(Refusal):
            refusal = failure.value
            assert isinstance(refusal, Refusal)
            self.error_response(refusal.status, str(refusal), auth_error=refusal.auth_error)
            return
        if failure.check(defer.CancelledError) or self._closed:
            return
        log.failure("HTTP request handling failed", failure)
        self.error_response(500, "internal error in the gateway")

    # -- one request ---------------------------------------------------------------------------

    async def _handle(self, head: Head) -> None:
        target = check_request(head, websocket=self.settings.options.websocket)
        upgrade = bool(head.get(b"upgrade"))
        try:
            token = caller_token(head.fields)
        except CallerTokenError as exc:
            raise Refusal(401, str(exc)) from None
        if self._ledger is None:
            await self._login(token, head)
        elif not hmac.compare_digest(token.encode(), self._token.encode()):
            raise Refusal(
                401,
                "this connection is authenticated as another caller; open a new connection",
                auth_error="invalid_token",
            )
        body, streamed = await self._read_body(head)
        command = self._command(head, target, body, streamed, upgrade=upgrade)
        verdict = await self._decide(command)
        assert self._ledger is not None
        if self._ledger.closed:
            raise defer.CancelledError()  # the session ended while the request waited
        if not isinstance(verdict, Allow):
            self._ledger.complete(
                command, CommandOutcome(status="blocked", error_message=verdict.reason)
            )
            shown = errors.refused(verdict, connection=self.runtime.config.name)
            self.error_response(403, shown.text(), close=streamed, refusal=shown)
            return
        factory = self.factory
        exchange = Exchange(
            self,
            request=head,
            target=target,
            command=command,
            body=body,
            streamed=streamed,
            host=self.settings.host_header,
            credential=factory.credential,
            inspect_responses=self._chain.has_output_hooks,
            scrubber=SecretScrubber(factory.credential.secrets()),
            keep_alive=not self._wants_close and not upgrade,
            websocket=upgrade,
        )
        self._exchange = exchange
        exchange.start(self.runtime.reactor, self.runtime.config, factory.tls_options)

    async def _login(self, token: str, head: Head) -> None:
        runtime = self.runtime
        config = runtime.config
        if (
            not self.client_tls
            and not is_loopback(self._client_host)
            and not config.allow_cleartext_password
        ):
            raise Refusal(
                403,
                "a bearer token over plain HTTP from another host is refused: connect over HTTPS"
                ' (client_tls = "required") or set allow_cleartext_password',
            )
        assert self._admission is not None
        verdict = await self._admission
        if isinstance(verdict, Block | Hold):
            raise Refusal(403, f"connection refused: {verdict.reason}")
        try:
            identity = await runtime.authenticator.authenticate(
                token, client_address=self.client_address, connection=config.name
            )
            await runtime.authenticator.admit(identity, config, client_address=self.client_address)
        except AuthenticationError as exc:
            raise Refusal(401, str(exc), auth_error="invalid_token") from None
        except AccessDenied as exc:
            raise Refusal(403, str(exc)) from None
        if self._closed:
            raise defer.CancelledError()
        agent = next(iter(head.get(b"user-agent")), b"")
        info = SessionInfo(
            id=str(uuid.uuid4()),
            connection=runtime.info,
            identity=identity,
            client_address=self.client_address,
            client_tls=self.client_tls,
            upstream_tls=self.settings.tls,
            started_at=runtime.reactor.seconds(),
            attributes={"user_agent": agent.decode("latin-1")} if agent else {},
        )
        started = await runtime.chain.decide("session_started", session=info)
        if isinstance(started, Block | Hold):
            runtime.chain.notify("session_closed", session=info, reason=started.reason)
            raise Refusal(403, f"session refused: {started.reason}")
        if self._closed:
            runtime.chain.notify("session_closed", session=info, reason="client closed")
            raise defer.CancelledError()
        self.identity = identity
        self.session_info = info
        self._token = token
        self._ledger = CommandLedger(runtime.chain, info, end_session=self.terminate)
        runtime.sessions.add(self)
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        log.info(
            "HTTP session {session_id} of {identity} ({method}) on {connection}",
            session_id=info.id,
            identity=identity.name,
            method=identity.method,
            connection=config.name,
        )

    async def _read_body(self, head: Head) -> tuple[bytes | None, bool]:
        """The body read whole when it is inspected, else None; and whether it streams."""
        if not has_body(head):
            return None, False
        lengths = head.get(b"content-length")
        length = int(lengths[0]) if lengths else None
        content_type = next(iter(head.get(b"content-type")), None)
        settings = self.settings
        if not settings.inspected(content_type):
            return None, True
        if any(
            canonical_name(name) == b"content-encoding" and value.strip().lower() != b"identity"
            for name, value in head.fields
        ):
            # Judged and recorded as compressed bytes, read by the server decompressed.
            raise Refusal(415, "an inspected request body may not have a Content-Encoding")
        if length is not None and length > settings.options.max_inspected_body:
            if settings.options.oversize_bodies == "refuse":
                raise Refusal(413, _TOO_LARGE)
            return None, True
        self.send_continue()
        body, complete = await self._collect()
        if not complete:
            # A chunked body grew past the limit: what was read cannot be un-read.
            raise Refusal(413, _TOO_LARGE)
        if overrides_method(body, media_type(content_type)):
            raise Refusal(400, "a _method body field is refused: send the method itself")
        return body, False

    def _collect(self) -> defer.Deferred[tuple[bytes, bool]]:
        assert self.gate is not None
        waiting: defer.Deferred[tuple[bytes, bool]] = defer.Deferred()
        buffer = bytearray()
        limit = self.settings.options.max_inspected_body

        def sink(event: Event) -> None:
            assert self.gate is not None
            if isinstance(event, Data):
                buffer.extend(event.data)
                if len(buffer) <= limit:
                    return
            self._body_sink = None
            self._waiting = None
            self.gate.pause(READ_PAUSE_REQUEST)
            waiting.callback((bytes(buffer), isinstance(event, End)))

        self._body_sink = sink
        self._waiting = waiting
        self.gate.resume(READ_PAUSE_REQUEST)
        self._pump()
        return waiting

    def _command(
        self, head: Head, target: Target, body: bytes | None, streamed: bool, *, upgrade: bool
    ) -> Command:
        assert self._ledger is not None and self.session_info is not None
        text = f"{head.method} {target.raw}" + (" [WebSocket]" if upgrade else "")
        if body:
            shown = body.decode("utf-8", "replace")
            limit = self.settings.options.record_body_chars
            text += "\n\n" + shown[:limit]
            if len(shown) > limit:
                text += f"\n[... {len(body)} bytes in all]"
        elif streamed:
            content_type = next(iter(head.get(b"content-type")), b"no content type")
            lengths = head.get(b"content-length")
            size = f"{lengths[0].decode()} bytes" if lengths else "chunked"
            text += f"\n\n[body not inspected: {content_type.decode('latin-1')}, {size}]"
        command = Command(
            session_id=self.session_info.id,
            seq=self._ledger.next_seq(),
            text=text,
            kind="http-request",
            # A WebSocket is judged as a method of its own: an allowed GET does not open one.
            details={
                "method": "WEBSOCKET" if upgrade else head.method,
                "path": target.path,
                "query": target.query,
            },
        )
        try:
            return self._chain.recordable(self.session_info, command)
        except Exception:
            log.failure("audit_text hook failed; session ended")
            self.terminate("command recording failed; session ended")
            raise defer.CancelledError() from None

    def _decide(self, command: Command) -> defer.Deferred[Allow | Block]:
        assert self._ledger is not None

        def withdrawn(failure: Failure) -> Block:
            failure.trap(defer.CancelledError)
            return Block(reason="withdrawn: the session ended")

        return self._ledger.decide(command).addErrback(withdrawn)

    # -- what an exchange asks of the client side ----------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""
        if not self._closed:
            self.transport.write(data)

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue`` (once per request) before the body is read."""
        request = self._request
        if request is None or self._continued:
            return
        self._continued = True
        if b"100-continue" in request.tokens(b"expect") and request.version == "HTTP/1.1":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def stream_body(self, exchange: Exchange) -> None:
        """Hand the request body to ``exchange`` as it arrives."""
        assert self.gate is not None
        self.send_continue()

        def sink(event: Event) -> None:
            exchange.request_event(event)
            if isinstance(event, End) and self.gate is not None:
                self._body_sink = None
                self.gate.pause(READ_PAUSE_REQUEST)

        self._body_sink = sink
        self.gate.resume(READ_PAUSE_REQUEST)
        self._pump()

    def tunnel(self, exchange: Exchange) -> None:
        """The exchange became a WebSocket tunnel: client bytes go to it as they are."""
        assert self.gate is not None
        self._tunnel = exchange
        self._queue.clear()
        rest = self._reader.take_rest()
        if rest:
            exchange.from_client(rest)
        self.gate.resume(READ_PAUSE_REQUEST)

    def error_response(
        self,
        status: int,
        message: str,
        *,
        close: bool = True,
        auth_error: str = "",
        refusal: errors.Refusal | None = None,
    ) -> None:
        """Answer the request with a JSON error that says why (a ``401`` with its
        ``WWW-Authenticate`` challenge, naming ``auth_error`` when a token was refused); a
        plugin's refusal adds its stable ``code``, ``rule``, ``plugin`` and ``next_step``
        (docs/errors.md)."""
        if self._closed:
            return
        answer: dict[str, str] = {"error": message}
        if refusal is not None:
            answer.update(
                code=refusal.code.value,
                rule=refusal.rule,
                plugin=refusal.plugin,
                next_step=refusal.next_step,
            )
        body = json.dumps(answer).encode("utf-8")
        fields = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        if status == 401:
            challenge = b'Bearer realm="hoopgw"'
            if auth_error:
                challenge += b', error="%s"' % auth_error.encode("ascii")
            fields.append((b"www-authenticate", challenge))
        if close:
            fields.append((b"connection", b"close"))
        phrase = HTTPStatus(status).phrase.encode("ascii")
        self.write(serialize_head(b"HTTP/1.1 %d %s" % (status, phrase), fields) + body)
        self.exchange_ended(keep_alive=not close)

    def _refuse_unread(self, status: int, message: str) -> None:
        """A request that cannot be read: answer (if no response is under way) and close."""
        if self._exchange is None and not self._closed:
            self._busy = True
            self.error_response(status, message)
        else:
            self.abort(message)

    def exchange_ended(self, *, keep_alive: bool) -> None:
        """The response is complete: read the next request, or close the connection."""
        self._exchange = None
        self._body_sink = None
        self._busy = False
        self._request = None
        if self._closed:
            return
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        if not keep_alive or self._wants_close:
            self._closed_by_us()
            return
        assert self.gate is not None
        self._idle_timer = self.runtime.reactor.callLater(
            self.settings.options.idle_timeout, self._idle_timed_out
        )
        self.gate.resume(READ_PAUSE_REQUEST)
        self._pump()

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if self._busy or self._closed:
            return
        if self._ledger is not None:
            self._ledger.close(
                f"idle for {self.settings.options.idle_timeout:g} s (http.idle_timeout)"
            )
        self._closed_by_us()

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    def _closed_by_us(self) -> None:
        self._queue.clear()
        self.transport.loseConnection()

    def mask(self, command: Command, output: Output) -> None:
        """Pass ``output`` through ``server_output``; exceptions propagate (fail closed)."""
        self._chain.hook.server_output(session=self.session_info, command=command, output=output)

    @property
    def _chain(self) -> Any:
        """The chain in force (the session's, which follows config reloads)."""
        return self.runtime.chain if self._ledger is None else self._ledger.chain

    def complete(self, command: Command, outcome: CommandOutcome) -> None:
        """Report ``command`` finished; the first report wins."""
        if self._ledger is not None:
            self._ledger.complete(command, outcome)

    def abort(self, reason: str) -> None:
        """End the session without a response (one is under way already)."""
        if self._ledger is not None:
            self._ledger.close(reason)
        self.transport.loseConnection()

    # -- the end -------------------------------------------------------------------------------

    def terminate(self, reason: str) -> None:
        """End the session: a request waiting for its decision is answered ``503`` with
        ``reason``; a response under way is cut short."""
        if self._closed:
            return
        waiting = self._busy and self._exchange is None
        if self._ledger is not None:
            self._ledger.close(reason)
        if waiting:
            self.error_response(503, f"session ended: {reason}")
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closed = True
        self._stop_idle_timer()
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        if self._tunnel is not None:
            self._tunnel.close_tunnel("client closed")
        if self._exchange is not None:
            self._exchange.cancel()
            self._exchange = None
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
        if self._ledger is not None:
            self.runtime.sessions.remove(self)
            self._ledger.close("client closed")


_TOO_LARGE = "the request body is larger than http.max_inspected_body"
