"""One allowed request forwarded to the target, and its response relayed to the client.

The client's side is a :class:`ClientSide` (the client connection of :mod:`hoopgw_http.server`);
the target's side an :class:`~hoopgw_http.upstream.UpstreamRequest` on a connection of its own.
A response body of an inspected type is read whole (up to ``max_inspected_body``), masked
through the plugins' ``server_output`` hook (JSON value by value, see
:mod:`hoopgw_http.bodies`) and sent with its new length; any other body streams through.
Every byte the client receives passes the :class:`~hoopgw_http.headers.SecretScrubber`, so a
target that echoes its credential does not hand it to the caller.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.http1 import Data, End, Event, Head, chunk, serialize_head
from hoopgw.session import Command, CommandOutcome, Output
from hoopgw_http.bodies import is_json, mask_json
from hoopgw_http.headers import SecretScrubber, request_fields, response_fields
from hoopgw_http.paths import Target
from hoopgw_http.settings import HttpSettings
from hoopgw_http.upstream import UpstreamRequest, connect_upstream

__all__ = ["ClientSide", "Exchange"]

log = Logger(namespace="hoopgw.http")

# Charsets whose text masking reads as the client does: ASCII digits and letters as themselves.
# Any other (UTF-16, UTF-7, EBCDIC...) would hide a card number or an address from masking.
_MASKABLE_CHARSETS = frozenset(
    {"", "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "latin-1", "windows-1252"}
)


class ClientSide(Protocol):
    """What an :class:`Exchange` needs from the client connection."""

    transport: Any
    settings: HttpSettings
    gate: Any
    """The :class:`~hoopgw.transport.ReadGate` of the client's transport."""

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""

    def stream_body(self, exchange: Exchange) -> None:
        """Start handing the request's body events to :meth:`Exchange.request_event`, read
        no faster than the target takes them."""

    def error_response(self, status: int, message: str, *, close: bool = True) -> None:
        """Answer the request with a gateway error."""

    def exchange_ended(self, *, keep_alive: bool) -> None:
        """The response is complete (or the exchange failed); take the next request, or
        close the connection when not ``keep_alive``."""

    def mask(self, command: Command, output: Output) -> None:
        """Pass ``output`` through the plugins' ``server_output`` hook (raises on failure)."""

    def complete(self, command: Command, outcome: CommandOutcome) -> None:
        """Report the command finished."""

    def abort(self, reason: str) -> None:
        """End the session at once (the response can no longer be answered properly)."""

    def tunnel(self, exchange: Exchange) -> None:
        """The target switched to WebSocket: hand every later client byte to
        :meth:`Exchange.from_client`, as it is."""


class Exchange:
    """One request forwarded and its response relayed."""

    def __init__(
        self,
        client: ClientSide,
        *,
        request: Head,
        target: Target,
        command: Command,
        body: bytes | None,
        streamed: bool,
        host: str,
        credential: Any,
        inspect_responses: bool,
        scrubber: SecretScrubber,
        keep_alive: bool,
        websocket: bool = False,
    ) -> None:
        """
        :param body: the request body read whole (inspected), or None.
        :param streamed: whether the body streams from the client after the head.
        :param inspect_responses: whether response bodies of inspected types are read whole
            and passed through ``server_output`` (some plugin implements it).
        :param keep_alive: whether the client connection may carry another request.
        :param websocket: whether the request asks for a WebSocket upgrade (allowed).
        """
        self._client = client
        self._settings = client.settings
        self._request = request
        self._target = target
        self.command = command
        self._body = body
        self._streamed = streamed
        self._host = host
        self._credential = credential
        self._inspect_responses = inspect_responses
        self._scrubber = scrubber
        self._keep_alive = keep_alive
        self._websocket = websocket
        self._tunnel = False
        self._chunked_request = bool(request.get(b"transfer-encoding"))
        self._request_done = not streamed
        self._upstream: UpstreamRequest | None = None
        self._response: Head | None = None
        self._inspect = False
        self._buffer = bytearray()
        self._chunked = False
        self._head_sent = False
        self._sent = 0
        self._started = time.monotonic()
        self._finished = False
        self._timeout: Any = None

    # -- the request ---------------------------------------------------------------------------

    def start(self, reactor: Any, connection: Any, tls_options: Any) -> None:
        """Connect to the target and send the request."""
        self._upstream = UpstreamRequest(
            self._request.method, self._response_event, self._upstream_lost
        )
        self._upstream.allow_switch = self._websocket
        self._timeout = reactor.callLater(self._settings.options.response_timeout, self._timed_out)
        connecting = connect_upstream(reactor, connection, tls_options, self._upstream)
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, _: Any) -> None:
        upstream = self._upstream
        if self._finished or upstream is None:
            if upstream is not None:
                upstream.abort()
            return
        fields = request_fields(
            self._request.fields,
            host=self._host,
            credential=self._credential,
            identity_encoding=self._inspect_responses,
        )
        if self._body is not None:
            fields.append((b"content-length", b"%d" % len(self._body)))
        elif self._streamed and self._chunked_request:
            fields.append((b"transfer-encoding", b"chunked"))
        elif self._streamed:
            fields.append((b"content-length", self._request.get(b"content-length")[0]))
        if self._websocket:
            fields += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
        else:
            fields.append((b"connection", b"close"))
        line = f"{self._request.method} {self._target.raw} HTTP/1.1".encode("ascii")
        upstream.send(serialize_head(line, fields) + (self._body or b""))
        if self._streamed:
            upstream.transport.registerProducer(self._client.gate, True)
            self._client.stream_body(self)

    def request_event(self, event: Event) -> None:
        """A piece of the request body from the client (while streaming)."""
        upstream = self._upstream
        if upstream is None or self._finished:
            return
        if isinstance(event, Data):
            upstream.send(chunk(event.data) if self._chunked_request else event.data)
            return
        if isinstance(event, End):
            if self._chunked_request:
                upstream.send(chunk(b""))
            self._request_done = True
            if upstream.transport is not None:
                upstream.transport.unregisterProducer()

    def _connect_failed(self, failure: Failure) -> None:
        self._fail(502, f"cannot reach the target: {failure.getErrorMessage()}")

    def _timed_out(self) -> None:
        self._timeout = None
        if self._response is None:
            self._fail(504, "the target did not answer in time (http.response_timeout)")

    # -- the response --------------------------------------------------------------------------

    def _response_event(self, event: Event) -> None:
        if self._finished:
            return
        try:
            if self._tunnel and isinstance(event, Data):
                self._from_target(event.data)
            elif isinstance(event, Head):
                self._response_head(event)
            elif isinstance(event, Data):
                self._response_data(event.data)
            elif isinstance(event, End):
                self._response_end()
        except _Refused as exc:
            self._fail(exc.status, str(exc))
        except Exception:
            log.failure("a plugin failed on a response; session ended")
            self._fail(502, "the response could not be processed; session ended", abort=True)

    def _response_head(self, head: Head) -> None:
        if head.status == 101 and self._websocket and self._upstream is not None:
            if head.tokens(b"upgrade") != {b"websocket"}:
                raise _Refused(502, "the target switched to another protocol than WebSocket")
            self._switch(head)
            return
        if head.status < 200:
            if head.status == 101:
                raise _Refused(502, "the target switched protocols, which is not served")
            return  # 100 Continue and other interim responses: the gateway answered Expect
        self._response = head
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        no_body = self._request.method == "HEAD" or head.status in (204, 304)
        content_type = next(iter(head.get(b"content-type")), None)
        inspect = self._inspect_responses and not no_body and self._settings.inspected(content_type)
        lengths = head.get(b"content-length")
        length = int(lengths[0]) if lengths else None
        if inspect:
            codings = head.tokens(b"content-encoding") - {b"identity"}
            if codings:
                raise _Refused(502, "the target sent an encoded body, which cannot be masked")
            charset = _charset(content_type)
            if charset not in _MASKABLE_CHARSETS:
                raise _Refused(502, f"the target sent a {charset} body, which cannot be masked")
            if length is not None and length > self._settings.options.max_inspected_body:
                if self._settings.options.oversize_bodies == "refuse":
                    raise _Refused(502, _TOO_LARGE)
                inspect = False
        self._inspect = inspect
        if not inspect:
            self._send_head(length, no_body)
            self._client.transport.registerProducer(self._upstream_gate(), True)

    def _upstream_gate(self) -> Any:
        assert self._upstream is not None
        return self._upstream.gate

    def _send_head(self, length: int | None, no_body: bool) -> None:
        head = self._response
        assert head is not None
        fields = [(n, self._scrubber.scrub_whole(v)) for n, v in response_fields(head.fields)]
        if no_body:
            fields += [(b"content-length", v) for v in head.get(b"content-length")[:1]]
        elif length is not None:
            fields.append((b"content-length", b"%d" % length))
        elif self._request.version == "HTTP/1.1":
            fields.append((b"transfer-encoding", b"chunked"))
            self._chunked = True
        else:
            self._keep_alive = False  # the end of the body is the end of the connection
        if not self._keep_alive:
            fields.append((b"connection", b"close"))
        reason = self._scrubber.scrub_whole(head.reason) or b"-"
        line = b"HTTP/1.1 %d %s" % (head.status, reason)
        self._client.write(serialize_head(line, fields))
        self._head_sent = True

    def _response_data(self, data: bytes) -> None:
        if self._inspect:
            self._buffer += data
            if len(self._buffer) > self._settings.options.max_inspected_body:
                if self._settings.options.oversize_bodies == "refuse":
                    raise _Refused(502, _TOO_LARGE)
                self._inspect = False
                buffered, self._buffer = bytes(self._buffer), bytearray()
                self._send_head(None, False)
                self._client.transport.registerProducer(self._upstream_gate(), True)
                self._stream(buffered)
            return
        self._stream(data)

    def _stream(self, data: bytes) -> None:
        data = self._scrubber.scrub(data)
        if data:
            self._sent += len(data)
            self._client.write(chunk(data) if self._chunked else data)

    def _response_end(self) -> None:
        head = self._response
        assert head is not None
        if self._inspect:
            body = self._masked(bytes(self._buffer))
            self._buffer = bytearray()
            self._send_head(len(body), False)
            self._sent += len(body)
            self._client.write(body)
        else:
            tail = self._scrubber.flush()
            if tail:
                self._sent += len(tail)
                self._client.write(chunk(tail) if self._chunked else tail)
            if self._chunked:
                self._client.write(chunk(b""))
            self._client.transport.unregisterProducer()
        self._finished = True
        self._client.complete(
            self.command,
            CommandOutcome(
                status="ok" if head.status < 400 else "error",
                rows=0,
                bytes=self._sent,
                duration=time.monotonic() - self._started,
                error_code=str(head.status) if head.status >= 400 else "",
            ),
        )
        if self._upstream is not None:
            self._upstream.abort()
        self._client.exchange_ended(keep_alive=self._keep_alive and self._request_done)

    def _masked(self, body: bytes) -> bytes:
        """The body as the plugins rewrote it, scrubbed of the target's secret."""
        assert self._response is not None
        text = body.decode("utf-8", "surrogateescape")
        if is_json(next(iter(self._response.get(b"content-type")), None)):

            def masker(fields: dict[str, str]) -> dict[str, str]:
                output = Output("http-json", fields)
                self._client.mask(self.command, output)
                return output.fields

            text = mask_json(text, masker) or text
        output = Output("http-response", {"body": text, "status": str(self._response.status)})
        self._client.mask(self.command, output)
        masked = output.fields.get("body", "").encode("utf-8", "surrogateescape")
        return self._scrubber.scrub_whole(masked)

    # -- a WebSocket tunnel --------------------------------------------------------------------

    def _switch(self, head: Head) -> None:
        """The target accepted the upgrade: relay ``101`` and then bytes both ways, each side
        the other's producer. Messages are not decoded (see docs/protocols/http.md)."""
        assert self._upstream is not None
        self._response = head
        self._tunnel = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        fields = [(n, self._scrubber.scrub_whole(v)) for n, v in response_fields(head.fields)]
        fields += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
        self._client.write(serialize_head(b"HTTP/1.1 101 Switching Protocols", fields))
        self._head_sent = True
        self._client.transport.registerProducer(self._upstream_gate(), True)
        self._upstream.transport.registerProducer(self._client.gate, True)
        self._client.tunnel(self)

    def from_client(self, data: bytes) -> None:
        """Client bytes of the tunnel, to the target as they are."""
        if self._upstream is not None and not self._finished:
            self._upstream.send(data)

    def _from_target(self, data: bytes) -> None:
        # Scrubbed piece by piece: holding bytes back would stall an interactive channel.
        data = self._scrubber.scrub_whole(data)
        self._sent += len(data)
        self._client.write(data)

    def close_tunnel(self, reason: str) -> None:
        """The tunnel ended (either side closed): the command completed."""
        if self._finished:
            return
        self._finished = True
        self._client.complete(
            self.command,
            CommandOutcome(
                status="ok",
                bytes=self._sent,
                duration=time.monotonic() - self._started,
                error_message=reason,
            ),
        )
        if self._upstream is not None:
            self._upstream.abort()

    @property
    def tunnelling(self) -> bool:
        """Whether the exchange became a WebSocket tunnel."""
        return self._tunnel

    # -- the end -------------------------------------------------------------------------------

    def _upstream_lost(self, reason: str | None) -> None:
        if self._finished:
            return
        if self._tunnel:
            self.close_tunnel("the target closed the WebSocket")
            self._client.abort("the target closed the WebSocket")
            return
        self._fail(502, reason or "the target closed the connection")

    def _fail(self, status: int, message: str, *, abort: bool = False) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._upstream is not None:
            self._upstream.abort()
        self._client.complete(
            self.command,
            CommandOutcome(
                status="error",
                bytes=self._sent,
                duration=time.monotonic() - self._started,
                error_code=str(status),
                error_message=message,
            ),
        )
        if abort:
            self._client.abort(message)
        elif self._head_sent:
            self._client.abort(message)  # too late for an error response: cut the body short
        else:
            self._client.error_response(status, message)

    def cancel(self) -> None:
        """The client went away: drop the target's connection."""
        self._finished = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._upstream is not None:
            self._upstream.abort()


_TOO_LARGE = "the response body is larger than http.max_inspected_body, so it cannot be masked"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _charset(content_type: bytes | None) -> str:
    if content_type is None:
        return ""
    for parameter in content_type.split(b";")[1:]:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset":
            return value.strip().strip(b'"').lower().decode("latin-1")
    return ""
