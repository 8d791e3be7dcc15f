"""The gateway's Kubernetes API server: HTTPS towards kubectl, one session per client
connection, one command per API request.

A client connection goes: TLS (the gateway's ``tls_cert``) -> the first request's bearer
token (an API key or OIDC token, checked by the :class:`~hoopgw.authn.Authenticator`) ->
admission and ``session_started``. Every request, the first included, is then read
(:func:`~hoopgw_kubernetes.requests.classify`), decided through the plugin chain, and only
when allowed sent to the cluster with the cluster's credential
(:mod:`hoopgw_kubernetes.upstream`). Its response comes back through the ``server_output``
hooks (:mod:`hoopgw_kubernetes.bodies`). ``exec`` and ``attach`` upgrade to WebSocket
(:mod:`hoopgw_kubernetes.streams`).

Requests are read by the gateway's one strict HTTP/1.1 reader (:mod:`hoopgw.http1`, the
``http`` protocol's too): a message two parsers could read differently (two
``Content-Length`` fields, ``Transfer-Encoding`` with ``Content-Length``, a folded header
line, a malformed chunk, ...) is answered ``400`` and the connection closed; nothing of it is
decided or forwarded.

Every request of a connection must carry the token the session started with; another token
ends the connection (a session is one identity).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from http import HTTPStatus
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from hoopgw import errors
from hoopgw.errors import AccessDenied, AuthenticationError, ConfigError, StoreError
from hoopgw.http1 import MAX_HEAD, BadMessage, Data, End, Head, MessageReader, chunk, serialize_head
from hoopgw.ledger import CommandLedger
from hoopgw.protocol import ConnectionRuntime
from hoopgw.session import Command, CommandOutcome, Identity, Output, SessionInfo
from hoopgw.verdicts import Allow, Block, Hold
from hoopgw_kubernetes.bodies import LineStream, WatchStream, mask_json, readable_secret
from hoopgw_kubernetes.requests import ApiRequest, Unreadable, classify
from hoopgw_kubernetes.settings import KubernetesSettings
from hoopgw_kubernetes.statuses import status_body
from hoopgw_kubernetes.upstream import UpstreamLink, connect, upstream_headers

__all__ = ["ApiConnection", "KubernetesSession", "build_factory"]

log = Logger(namespace="hoopgw.kubernetes")

# Response headers passed back to the client; the others (framing, encodings, cookies, the
# server's authentication challenges) are the gateway's own business.
PASSED_RESPONSE_HEADERS = frozenset(
    {
        b"content-type",
        b"audit-id",
        b"cache-control",
        b"warning",
        b"x-kubernetes-pf-flowschema-uid",
        b"x-kubernetes-pf-prioritylevel-uid",
    }
)
WRITE_VERBS = frozenset({"create", "update", "patch"})
STREAM_VERBS = ("exec", "attach")
"""The verbs relayed over WebSocket (:mod:`hoopgw_kubernetes.streams`), and the only ones."""
SPDY_REFUSED = (
    "hoopgw: SPDY streaming is not relayed (it cannot be judged); use kubectl 1.30 or newer,"
    " which streams exec and attach over WebSocket"
)


class RequestRefused(Exception):
    """A request refused before it reached the cluster: the status code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _header(head: Head, name: bytes) -> bytes | None:
    """The first value of the field ``name`` (lower case), or None."""
    values = head.get(name)
    return values[0] if values else None


class KubernetesSession:
    """One authenticated client connection: its identity, its commands. Registered with the
    gateway's :class:`~hoopgw.protocol.SessionRegistry`."""

    def __init__(
        self, runtime: ConnectionRuntime, info: SessionInfo, connection: ApiConnection
    ) -> None:
        self.runtime = runtime
        self.info = info
        self.identity: Identity | None = info.identity
        """Who is connected (what :class:`~hoopgw.protocol.LiveSession` asks for)."""
        self.session_info: SessionInfo | None = info
        """The recorded session (what :class:`~hoopgw.protocol.LiveSession` asks for)."""
        self.ledger = CommandLedger(runtime.chain, info, end_session=self.terminate)
        self._connection = connection

    def new_command(self, text: str, kind: str, details: dict[str, Any]) -> Command:
        """The next command, its text as ``audit_text`` rewrote it for the record.

        :raises Exception: what a failing ``audit_text`` hook raised.
        """
        command = Command(
            session_id=self.info.id,
            seq=self.ledger.next_seq(),
            text=text,
            kind=kind,
            details=details,
        )
        return self.ledger.chain.recordable(self.info, command)

    def decide(self, command: Command) -> defer.Deferred[Allow | Block]:
        """Decide ``command``; a decision the session's end withdraws fires with ``Block``."""

        def withdrawn(failure: Failure) -> Block:
            failure.trap(defer.CancelledError)
            return Block(reason="withdrawn: the session ended")

        return self.ledger.decide(command).addErrback(withdrawn)

    def complete(self, command: Command, outcome: CommandOutcome) -> None:
        """Report ``command`` finished; the first report wins."""
        self.ledger.complete(command, outcome)

    def mask(self, command: Command | None, kind: str, fields: dict[str, str]) -> dict[str, str]:
        """``fields`` after the ``server_output`` hooks (kind ``body``, ``stdout``, ...).

        :raises Exception: what a failing hook raised (the caller fails closed).
        """
        output = Output(kind, fields)
        self.ledger.chain.hook.server_output(session=self.info, command=command, output=output)
        return output.fields

    def terminate(self, reason: str) -> None:
        """End the session: the client connection is closed."""
        self._connection.close_session(reason)
        transport = self._connection.transport
        if transport is not None:
            transport.loseConnection()

    def closed(self, reason: str) -> None:
        """Report the session closed (once)."""
        self.runtime.sessions.remove(self)
        self.ledger.close(reason)


class ApiConnection(protocol.Protocol):
    """One client connection (inside TLS): HTTP/1.1 requests, one at a time."""

    def __init__(self, runtime: ConnectionRuntime, settings: KubernetesSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.session: KubernetesSession | None = None
        self.transport: Any = None
        limit = runtime.gateway.max_message_size
        self._reader = MessageReader(response=False, max_head=min(limit, MAX_HEAD))
        self._unread = bytearray()  # what came while a request was served, not read yet
        self._request: Head | None = None
        self._body = bytearray()  # one buffer: a body sent in tiny chunks costs its size
        self._busy = False
        self._ending = False  # the last response is written: nothing more is read
        self._keep_alive = False  # the request served allows another after it
        self._responding = False  # a response has begun and has not ended
        self._chunked = False  # the response under way is chunked
        self._http10 = False  # the request served is HTTP/1.0
        self._head_request = False  # the request served is a HEAD: its answer has no body
        self._token_hash = b""
        self._upstream: UpstreamLink | None = None
        self._paired = False  # the cluster's side is our transport's producer
        self._stream: Any = None  # a WebSocket relay once upgraded
        self._closed = False
        self.client_address = "?"

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_address = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', 0)}"
        self._gate: defer.Deferred[Any] = self.runtime.chain.decide(
            "client_connected", connection=self.runtime.info, client_address=self.client_address
        )
        self._idle = self.runtime.reactor.callLater(
            self.runtime.gateway.auth_timeout, self._idle_timeout
        )

    def _idle_timeout(self) -> None:
        if self.session is None and self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._stream is not None:
            self._stream.client_data(data)
            return
        if self._closed or self._ending:
            return
        self._unread += data
        self._pump()

    def _pump(self) -> None:
        """Read requests while none is being served; a request is served once read whole."""
        while not self._busy and not self._closed and not self._ending:
            data, self._unread = bytes(self._unread), bytearray()
            try:
                events = self._reader.feed(data)
            except BadMessage as exc:
                self._bad_request(exc.status, f"malformed HTTP request: {exc}")
                return
            if not events:
                return
            for event in events:
                if isinstance(event, Head):
                    if event.version == "HTTP/1.1" and len(event.get(b"host")) != 1:
                        # RFC 9112 section 3.2.
                        self._bad_request(400, "an HTTP/1.1 request needs exactly one Host field")
                        return
                    self._request, self._body = event, bytearray()
                elif isinstance(event, Data):
                    if len(self._body) + len(event.data) > self.runtime.gateway.max_message_size:
                        self._bad_request(413, "the request body is larger than max_message_size")
                        return
                    self._body += event.data
                elif isinstance(event, End):
                    request, self._request = self._request, None
                    assert request is not None
                    self._busy = True
                    self._http10 = request.version == "HTTP/1.0"
                    self._head_request = request.method == "HEAD"
                    self._keep_alive = not self._http10 and (
                        b"close" not in request.tokens(b"connection")
                    )
                    # Nothing more is read from this client while its request is served (it
                    # may be held for hours): what it sends meanwhile waits in the kernel.
                    self.transport.pauseProducing()
                    body, self._body = bytes(self._body), bytearray()
                    d = defer.ensureDeferred(self._serve(request, body))
                    d.addErrback(self._failed)

    def take_unread(self) -> bytes:
        """The bytes received after the last request, taken out: the connection switched to
        WebSocket, so they are not HTTP."""
        rest = self._reader.take_rest() + bytes(self._unread)
        self._unread = bytearray()
        return rest

    def _failed(self, failure: Failure) -> None:
        log.failure("Kubernetes request failed", failure)
        self._abort("internal error")

    def _bad_request(self, code: int, message: str) -> None:
        """A request that cannot be read (nothing of it was decided): answer and close."""
        self._busy = True
        self._keep_alive = self._head_request = False  # the connection closes after it
        self._respond_status(code, message, close=True)

    def connectionLost(self, reason: Any = None) -> None:
        self._closed = True
        if self._idle.active():
            self._idle.cancel()
        if self._upstream is not None:
            self._upstream.abort()
        if self._stream is not None:
            self._stream.client_lost()
        self.close_session("client closed")

    def close_session(self, reason: str) -> None:
        """End the session, once (the connection is closing)."""
        session, self.session = self.session, None
        if session is not None:
            session.closed(reason)

    # -- responses --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self._closed:
            self.transport.write(data)

    def send_head(self, status: int, fields: list[tuple[bytes, bytes]], length: int | None) -> None:
        """Begin a response: its body is ``length`` bytes, or chunked when the length is not
        known (close-delimited for an HTTP/1.0 client)."""
        fields = list(fields)
        self._chunked = False
        bodiless = status < 200 or status in (204, 304)  # RFC 9112 section 6.3
        if length is not None and not bodiless:
            fields.append((b"content-length", b"%d" % length))
        elif not bodiless and not self._http10:
            fields.append((b"transfer-encoding", b"chunked"))
            self._chunked = True
        elif not bodiless:
            self._keep_alive = False  # the end of the body is the end of the connection
        if not self._keep_alive:
            fields.append((b"connection", b"close"))
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b"-"
        self._responding = True
        self._write(serialize_head(b"HTTP/1.1 %d %s" % (status, phrase), fields))

    def send_body(self, data: bytes) -> None:
        """A piece of the response's body (none to a ``HEAD``, RFC 9110 section 9.3.2)."""
        if data and not self._head_request:
            self._write(chunk(data) if self._chunked else data)

    def end_response(self, *, close: bool = False) -> None:
        """The response is complete: the next request is read, unless the connection closes."""
        if self._chunked and not self._head_request:  # a HEAD's answer ends with its fields
            self._write(chunk(b""))
        self._responding = False
        self._done(close=close)

    def _respond_status(self, code: int, message: str, *, close: bool = False) -> None:
        if self._responding:
            self._abort("cannot answer in the middle of a response")
            return
        if close:
            self._keep_alive = False
        body = status_body(code, message)
        self.send_head(code, [(b"content-type", b"application/json")], len(body))
        self.send_body(body)
        self.end_response(close=close)

    def _done(self, *, close: bool = False) -> None:
        self._busy = False
        if close or not self._keep_alive:
            self._ending = True
            self.transport.loseConnection()
            return
        self.transport.resumeProducing()
        self.runtime.reactor.callLater(0, self._pump)

    def _abort(self, reason: str) -> None:
        log.info("Kubernetes connection ended: {reason}", reason=reason)
        if self.transport is not None:
            self.transport.abortConnection()

    # -- requests ---------------------------------------------------------------------------

    async def _serve(self, request: Head, body: bytes) -> None:
        try:
            session = await self._authenticated(request)
        except RequestRefused as exc:
            self._respond_status(exc.code, str(exc), close=exc.code == 401)
            return
        try:
            api = self._read(request)
        except RequestRefused as exc:
            # Recorded as refused, under the text the client sent.
            method = request.method
            target = request.target.decode("ascii", "replace")
            details = {"method": method, "path": target.partition("?")[0]}
            unread = session.new_command(f"{method} {target}", "api", details)
            session.ledger.decided(unread, Block(reason=str(exc)))
            session.ledger.complete(
                unread, CommandOutcome(status="blocked", error_message=str(exc))
            )
            self._respond_status(exc.code, str(exc))
            return
        command, refusal = self._command(session, request, api, body)
        if refusal is not None:
            session.ledger.decided(command, Block(reason=refusal))
            session.ledger.complete(
                command, CommandOutcome(status="blocked", error_message=refusal)
            )
            self._respond_status(403, f"hoopgw: refused: {refusal}")
            return
        if api.verb in STREAM_VERBS:  # upgrading to WebSocket: _command refused anything else
            from hoopgw_kubernetes.streams import serve_stream

            self._busy = True
            self._stream = await serve_stream(self, session, command, api, request)
            return
        verdict = await session.decide(command)
        if not isinstance(verdict, Allow):
            reason = verdict.reason
            session.ledger.complete(command, CommandOutcome(status="blocked", error_message=reason))
            shown = errors.refused(verdict, connection=session.info.connection.name)
            self._respond_status(403, shown.text())
            return
        self._forward(session, command, api, request, body)

    async def _authenticated(self, request: Head) -> KubernetesSession:
        authorization = _header(request, b"authorization") or b""
        scheme, _, token_bytes = authorization.partition(b" ")
        token = token_bytes.strip().decode("utf-8", "replace")
        if scheme.lower() != b"bearer" or not token:
            raise RequestRefused(401, "hoopgw: a bearer token (API key or OIDC token) is needed")
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        if self.session is not None:
            if not hmac.compare_digest(digest, self._token_hash):
                raise RequestRefused(401, "hoopgw: another token on the same connection")
            return self.session
        runtime = self.runtime
        where = {"client_address": self.client_address, "connection": runtime.config.name}
        try:
            identity = await runtime.authenticator.authenticate(token, **where)
        except AuthenticationError as exc:
            raise RequestRefused(401, f"hoopgw: {exc}") from None
        except StoreError as exc:  # the gateway's fault, not the caller's
            raise RequestRefused(503, f"hoopgw: {exc}") from None
        verdict = await self._gate
        if isinstance(verdict, Block | Hold):
            raise RequestRefused(403, f"hoopgw: connection refused: {verdict.reason}")
        try:
            await runtime.authenticator.admit(
                identity, runtime.config, client_address=self.client_address
            )
        except AccessDenied as exc:
            raise RequestRefused(403, f"hoopgw: {exc}") from None
        info = SessionInfo(
            id=str(uuid.uuid4()),
            connection=runtime.info,
            identity=identity,
            client_address=self.client_address,
            client_tls=True,
            upstream_tls=True,
            started_at=runtime.reactor.seconds(),
            attributes={
                "user_agent": (_header(request, b"user-agent") or b"").decode("utf-8", "replace")
            },
        )
        started = await runtime.chain.decide("session_started", session=info)
        if isinstance(started, Block | Hold):
            runtime.chain.notify("session_closed", session=info, reason=started.reason)
            raise RequestRefused(403, f"hoopgw: session refused: {started.reason}")
        if self._closed:
            runtime.chain.notify("session_closed", session=info, reason="client closed")
            raise RequestRefused(400, "client closed")
        session = KubernetesSession(runtime, info, self)
        self.session, self._token_hash = session, digest
        runtime.sessions.add(session)
        log.info(
            "Kubernetes session {session_id} of {identity} ({method}) on {connection}",
            session_id=info.id,
            identity=identity.name,
            method=identity.method,
            connection=runtime.info.name,
        )
        return session

    def _read(self, request: Head) -> ApiRequest:
        try:
            return classify(request.method, request.target.decode("ascii"))
        except (Unreadable, UnicodeDecodeError) as exc:
            raise RequestRefused(400, f"hoopgw: refused: {exc}") from None

    def _command(
        self, session: KubernetesSession, request: Head, api: ApiRequest, body: bytes
    ) -> tuple[Command, str | None]:
        """The request as a command, and why the gateway itself refuses it (or None)."""
        text, kind = api.describe(), "api"
        details: dict[str, Any] = api.facts()
        refusal = None
        if api.verb in WRITE_VERBS and body:
            # A Secret's base64 would hide its values from the audit_text hooks (masking).
            readable = readable_secret(body) if api.resource == "secrets" else body
            shown = readable[: self.settings.record_body_limit].decode("utf-8", "replace")
            more = len(readable) - self.settings.record_body_limit
            if more > 0:
                # What is shown is cut; the digest binds a review of it to the whole body.
                digest = hashlib.sha256(body).hexdigest()
                shown += f"\n... ({more} more bytes; body sha256 {digest})"
            text += "\n" + shown
        if any(name.startswith(b"impersonate-") for name, _ in request.fields):
            refusal = "impersonation headers are not relayed (the gateway's credential is not"
            refusal += " the caller's to lend)"
        # An Upgrade field, even an empty one, asks for another protocol: only exec and attach
        # switch, and only to WebSocket (an API request is never relayed as a stream).
        upgrade = _header(request, b"upgrade")
        wanted = None if upgrade is None else upgrade.lower()
        if wanted is not None and wanted.startswith(b"spdy"):
            refusal = SPDY_REFUSED
        elif wanted is not None and wanted != b"websocket":
            refusal = f"upgrade to {wanted.decode('ascii', 'replace')!r} is not relayed"
        elif wanted is not None and api.verb not in STREAM_VERBS:
            refusal = f"WebSocket streaming of {api.verb} is not relayed (only exec and attach)"
        elif wanted is None and api.verb in (*STREAM_VERBS, "portforward"):
            refusal = f"{api.verb} needs a WebSocket upgrade"
        if api.verb == "portforward":
            refusal = "port forwarding is not relayed by this gateway"
        if api.verb in STREAM_VERBS and refusal is None:
            from hoopgw_kubernetes.streams import stream_command

            text, kind, details = stream_command(api, details)
        return session.new_command(text, kind, details), refusal

    # -- forwarding -------------------------------------------------------------------------

    def _forward(
        self,
        session: KubernetesSession,
        command: Command,
        api: ApiRequest,
        request: Head,
        body: bytes,
    ) -> None:
        runtime = self.runtime
        target = api.path + (f"?{api.query}" if api.query else "")
        headers = upstream_headers(
            list(request.fields),
            host=runtime.config.target,
            bearer=self.settings.bearer,
            masked=session.ledger.chain.has_output_hooks,
        )
        if body:
            headers.append((b"content-length", b"%d" % len(body)))
        upstream_request = Head(
            version="HTTP/1.1",
            method=request.method,
            target=target.encode("ascii"),
            fields=tuple(headers),
        )
        relay = _ResponseRelay(self, session, command, api)
        link = UpstreamLink(
            upstream_request,
            body,
            on_response=relay.response,
            on_data=relay.data,
            on_end=relay.end,
        )
        self._upstream = link
        relay.started_at = runtime.reactor.seconds()
        connecting = connect(runtime, self.settings.tls, link)

        def connected(link: UpstreamLink) -> None:
            # A client slower than the cluster pauses the cluster's side (a watch, a log).
            if self._upstream is link and not self._closed:
                self.transport.registerProducer(link.transport, True)
                self._paired = True

        def unreachable(failure: Failure) -> None:
            runtime.upstream_failed()
            relay.end(f"cannot reach the API server: {failure.getErrorMessage()}")

        connecting.addCallbacks(connected, unreachable)

    def upstream_done(self) -> None:
        """The relay of one response is over."""
        self._upstream = None
        if self._paired:
            self._paired = False
            self.transport.unregisterProducer()


class _ResponseRelay:
    """One response from the cluster on its way to the client, through the hooks."""

    def __init__(
        self,
        owner: ApiConnection,
        session: KubernetesSession,
        command: Command,
        api: ApiRequest,
    ) -> None:
        self.owner = owner
        self.session = session
        self.command = command
        self.api = api
        self.started_at = 0.0
        self._status = 0
        self._headers_sent = False
        self._buffer: list[bytes] | None = None  # a JSON body kept whole to be masked
        self._buffered = 0
        self._stream: LineStream | None = None
        self._sent = 0
        self._recorded: list[str] = []
        self._recorded_size = 0
        self._finished = False
        self._hooks = session.ledger.chain.has_output_hooks

    def _mask(self, fields: dict[str, str]) -> dict[str, str]:
        return self.session.mask(self.command, "body", fields)

    def response(self, response: Head) -> None:
        self._status = response.status
        content_type = (_header(response, b"content-type") or b"").lower()
        headers = [(n, v) for n, v in response.fields if n in PASSED_RESPONSE_HEADERS]
        self._headers = headers
        is_json = content_type.startswith(b"application/json")
        limit = self.owner.runtime.gateway.max_message_size
        if self.api.verb == "watch" and is_json:
            self._stream = WatchStream(self._mask, self._write, limit)
        elif is_json:
            self._buffer = []
        elif content_type.startswith(b"text/") or self.api.verb == "log":
            self._stream = LineStream(self._mask, self._write, 1 << 16)
        elif self._hooks and response.status != 204:
            self.end(
                f"the API server answered {content_type.decode('ascii', 'replace') or 'no type'},"
                " which the gateway cannot mask; ask for JSON"
            )
            return
        if self._buffer is None:
            self._send_headers()

    def _send_headers(self, length: int | None = None) -> None:
        self._headers_sent = True
        self.owner.send_head(self._status, self._headers, length)

    def data(self, data: bytes) -> None:
        if self._finished:
            return
        try:
            if self._buffer is not None:
                self._buffered += len(data)
                if self._buffered > self.owner.runtime.gateway.max_message_size:
                    raise ValueError("the response is larger than max_message_size")
                self._buffer.append(data)
            elif self._stream is not None:
                self._stream.feed(data)
            else:
                self._write(data)
        except Exception as exc:
            self.end(f"the response could not be masked ({exc})")

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._sent += len(data)
        self._record(data)
        self.owner.send_body(data)

    def _record(self, data: bytes) -> None:
        limit = self.owner.settings.record_body_limit
        if self._recorded_size < limit:
            piece = data[: limit - self._recorded_size]
            self._recorded.append(piece.decode("utf-8", "replace"))
            self._recorded_size += len(piece)

    def end(self, why: str | None) -> None:
        if self._finished:
            return
        if why is None:
            try:
                if self._buffer is not None:
                    body = b"".join(self._buffer)
                    if self._hooks and body:
                        body = mask_json(body, self._mask)
                    self._send_headers(len(body))
                    self._write(body)
                elif self._stream is not None:
                    self._stream.end()
            except Exception as exc:
                why = f"the response could not be masked ({exc})"
        self._finished = True
        link = self.owner._upstream
        self.owner.upstream_done()
        if why is not None and link is not None:
            link.abort()
        duration = self.owner.runtime.reactor.seconds() - self.started_at
        if self._recorded:
            self.command.annotations["response_body"] = "".join(self._recorded)
        if why is not None:
            log.info("Kubernetes response not relayed: {why}", why=why)
            self.session.ledger.complete(
                self.command,
                CommandOutcome(status="error", error_message=why, duration=duration),
            )
            if self._headers_sent:
                self.owner._abort(why)
            else:
                self.owner._respond_status(502, f"hoopgw: {why}")
            return
        ok = self._status < 400
        self.session.ledger.complete(
            self.command,
            CommandOutcome(
                status="ok" if ok else "error",
                bytes=self._sent,
                duration=duration,
                error_code="" if ok else str(self._status),
            ),
        )
        self.owner.end_response()


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self, runtime: ConnectionRuntime, settings: KubernetesSettings) -> None:
        self.runtime = runtime
        self.settings = settings

    def buildProtocol(self, addr: Any) -> ApiConnection:
        return ApiConnection(self.runtime, self.settings)


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The listener's factory: TLS with the gateway's certificate around :class:`ApiConnection`.

    :raises ConfigError: when the gateway has no ``tls_cert`` (bearer tokens would cross the
        network in clear) or the connection's settings cannot be loaded.
    """
    gateway = runtime.gateway
    if gateway.tls_cert is None or gateway.tls_key is None:
        raise ConfigError(
            "a Kubernetes connection is served over HTTPS: set [gateway] tls_cert and tls_key",
            key="protocol",
            connection=runtime.config.name,
        )
    settings = KubernetesSettings.load(runtime.config)
    wrapped: Any = _Factory(runtime, settings)
    return TLSMemoryBIOFactory(
        settings.server_tls(gateway.tls_cert, gateway.tls_key), False, wrapped
    )
