"""``exec`` and ``attach`` over the WebSocket streaming protocol kubectl speaks.

The protocol (``k8s.io/apimachinery/pkg/util/remotecommand``, subprotocols
``v5.channel.k8s.io`` and ``v4.channel.k8s.io``): every binary message starts with a channel
byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a ``metav1.Status`` in JSON: ``Success``, or
``Failure`` with reason ``NonZeroExitCode`` and the exit code as the ``ExitCode`` cause), 4
terminal resize (``{"Width": W, "Height": H}``); v5 adds 255, a client's "close this channel"
(``[255, 0]`` ends stdin).

The gateway completes the client's WebSocket handshake at once, with the best subprotocol
both speak, then decides the command (an exec's argument vector, shell-quoted, is one command
of kind ``exec``, judged like an SSH exec). A held command waits on an open WebSocket; a
refused one never reaches the cluster: the client reads the reason on stderr and a ``Failure``
status with exit code :data:`EXIT_REFUSED`. An allowed one is relayed to the cluster over a
WebSocket of the same subprotocol: stdout and stderr pass the ``server_output`` hooks (and so
masking and the recording of an asciicast), stdin the ``client_input`` hooks.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, generate_accept_token

from hoopgw import errors
from hoopgw.http1 import Head, serialize_head
from hoopgw.session import Command, CommandOutcome, Output
from hoopgw.shell import LineJudge
from hoopgw.verdicts import Allow, Block
from hoopgw_kubernetes.requests import ApiRequest, exec_command, flag, parameter
from hoopgw_kubernetes.upstream import connect

if TYPE_CHECKING:
    from hoopgw_kubernetes.server import ApiConnection, KubernetesSession

__all__ = ["EXIT_REFUSED", "StreamRelay", "serve_stream", "stream_command"]

log = Logger(namespace="hoopgw.kubernetes")

SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""The subprotocols relayed, best first."""
EXIT_REFUSED = 126
"""Exit code of a command the gateway refused (as a shell's for a command that cannot run)."""
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PENDING_LIMIT = 1 << 16
"""Bytes of client messages held while the command is decided; more ends the stream."""
FLUSH_DELAY = 0.05
"""Seconds output without a line end waits for more before it passes the hooks."""
_STREAMS = {STDOUT: "stdout", STDERR: "stderr"}


def stream_command(api: ApiRequest, details: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The text, kind and details of an exec or attach request's command."""
    query = api.query
    details = dict(details)
    details["stdin"] = flag(query, "stdin")
    details["tty"] = tty = flag(query, "tty")
    details["container"] = parameter(query, "container")
    if tty:
        details["pty"] = {"term": "xterm", "width": 80, "height": 24}
    if api.verb == "exec":
        return shlex.join(exec_command(query)), "exec", details
    return f"attach {api.namespace}/{api.name}", "attach", details


def _status(exit_code: int, message: str) -> bytes:
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    ).encode("utf-8")


def exit_code(status: bytes) -> int | None:
    """The exit code a status message reports (0 for ``Success``), or None if it says none."""
    try:
        document = json.loads(status.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    if document.get("status") == "Success":
        return 0
    for cause in (document.get("details") or {}).get("causes") or []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


async def serve_stream(
    owner: ApiConnection,
    session: KubernetesSession,
    command: Command,
    api: ApiRequest,
    request: Head,
) -> StreamRelay | None:
    """Complete the client's WebSocket handshake, decide ``command``, and relay it if allowed.

    :return: the relay (it takes the client's bytes from then on), or None when the request
        was answered without an upgrade.
    """
    headers = dict(request.fields)
    offered = [
        p.strip()
        for p in headers.get(b"sec-websocket-protocol", b"").decode("ascii", "replace").split(",")
    ]
    chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
    key = headers.get(b"sec-websocket-key")
    if chosen is None or key is None or headers.get(b"sec-websocket-version") != b"13":
        why = (
            "hoopgw: exec and attach are relayed over WebSocket with subprotocol"
            f" {' or '.join(SUBPROTOCOLS)}"
        )
        session.ledger.decided(command, _block(why))
        session.ledger.complete(command, CommandOutcome(status="blocked", error_message=why))
        owner._respond_status(400, why)
        return None
    fields = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", _accept(key)),
        (b"sec-websocket-protocol", chosen.encode("ascii")),
    ]
    owner._write(serialize_head(b"HTTP/1.1 101 Switching Protocols", fields))
    relay = StreamRelay(owner, session, command, api, chosen)
    leftover = owner.take_unread()
    owner._stream = relay
    if leftover:
        relay.client_data(leftover)
    relay.start()
    # The client's messages flow again (PENDING_LIMIT bounds them while undecided).
    owner.transport.resumeProducing()
    return relay


def _accept(key: bytes) -> bytes:
    token: Any = generate_accept_token(key)  # bytes in wsproto 1.2, str in others
    return token.encode("ascii") if isinstance(token, str) else bytes(token)


def _block(reason: str) -> Any:
    from hoopgw.verdicts import Block

    return Block(reason=reason)


class _Upstream(protocol.Protocol):
    """The WebSocket to the cluster."""

    def __init__(self, relay: StreamRelay) -> None:
        self.relay = relay
        self.transport: Any = None

    def connectionMade(self) -> None:
        self.relay.upstream_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.relay.upstream_data(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.upstream_lost()


class _Output:
    """One output channel, handed to the hooks in whole lines (or after a pause)."""

    def __init__(self, emit: Callable[[str], None], clock: Any) -> None:
        self._emit = emit
        self._clock = clock
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._held = ""
        self._timer: Any = None

    def feed(self, data: bytes) -> None:
        held = self._held + self._decoder.decode(data)
        cut = max(held.rfind("\n"), held.rfind("\r")) + 1
        self._held = held[cut:]
        if cut:
            self._emit(held[:cut])
        if self._held and self._timer is None:
            self._timer = self._clock.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        held, self._held = self._held + self._decoder.decode(b"", final=True), ""
        if held:
            self._emit(held)


class StreamRelay:
    """One exec or attach: the client's WebSocket, the decision, the cluster's WebSocket."""

    def __init__(
        self,
        owner: ApiConnection,
        session: KubernetesSession,
        command: Command,
        api: ApiRequest,
        subprotocol: str,
    ) -> None:
        self.owner = owner
        self.session = session
        self.command = command
        self.api = api
        self.subprotocol = subprotocol
        self._client = Connection(ConnectionType.SERVER)
        self._upstream_ws: WSConnection | None = None
        self._upstream: _Upstream | None = None
        self._accepted = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._partial: dict[str, bytes] = {"client": b"", "upstream": b""}
        self._outputs: dict[int, _Output] = {}
        self._exit: CommandOutcome | None = None
        self._bytes = 0
        self._started_at = 0.0
        self._ended = False
        self._rejected = 0
        self._handshake = b""
        self._stdin = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._judge: LineJudge | None = None
        self._paired = False

    # -- the decision --------------------------------------------------------------------------

    def start(self) -> None:
        """Decide the command, then connect to the cluster or refuse."""
        self.session.decide(self.command).addCallback(self._decided).addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        log.failure("Kubernetes stream failed", failure)
        self._finish(CommandOutcome(status="error", error_message="internal error"))

    def _decided(self, verdict: Any) -> None:
        if self._ended:
            return
        if not isinstance(verdict, Allow):
            self._refuse(verdict)
            return
        runtime = self.owner.runtime
        settings = self.owner.settings
        self._started_at = runtime.reactor.seconds()
        ws = self._upstream_ws = WSConnection(ConnectionType.CLIENT)
        target = self.api.path + (f"?{self.api.query}" if self.api.query else "")
        extra = [(b"user-agent", b"hoopgw")]
        if settings.bearer is not None:
            extra.append((b"authorization", b"Bearer " + settings.bearer.encode("utf-8")))
        self._handshake = ws.send(
            Request(
                host=runtime.config.target,
                target=target,
                subprotocols=[self.subprotocol],
                extra_headers=extra,
            )
        )
        link = _Upstream(self)
        self._upstream = link

        def unreachable(failure: Failure) -> None:
            runtime.upstream_failed()
            self._fail_client(f"cannot reach the API server: {failure.getErrorMessage()}")

        connect(runtime, settings.tls, link).addErrback(unreachable)

    def _refuse(self, verdict: Block) -> None:
        """Nothing ran: the client reads why (rule, code and what to do next, as every protocol
        words a refusal), and exit code :data:`EXIT_REFUSED`."""
        refusal = errors.refused(verdict, connection=self.session.info.connection.name)
        message = refusal.text()
        self.session.ledger.complete(
            self.command, CommandOutcome(status="blocked", error_message=verdict.reason)
        )
        self._send_client(bytes([STDERR]) + (message + "\n").encode("utf-8"))
        self._send_client(bytes([ERROR]) + _status(EXIT_REFUSED, message))
        self._close_client(1000, "")
        self._ended = True

    def _fail_client(self, why: str) -> None:
        log.info("Kubernetes stream ended: {why}", why=why)
        if not self._ended:
            self._send_client(bytes([ERROR]) + _status(EXIT_REFUSED, f"hoopgw: {why}"))
            self._close_client(1011, "")
        self._finish(CommandOutcome(status="error", error_message=why))

    # -- the client's side ---------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        """Bytes from the client (after the handshake)."""
        try:
            self._client.receive_data(data)
            events = list(self._client.events())
        except Exception as exc:
            self._fail_client(f"malformed WebSocket data from the client ({exc})")
            return
        for event in events:
            if isinstance(event, Ping):
                self._raw_client(self._client.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self._client.state.name != "CLOSED":
                    self._raw_client(self._client.send(event.response()))
                self._close_upstream(event.code)
                self.owner.transport.loseConnection()
            elif isinstance(event, Message):
                whole = self._whole("client", event)
                if whole is not None:
                    self._from_client(whole, isinstance(event, TextMessage))

    def _whole(self, side: str, event: Message[Any]) -> bytes | None:
        data = event.data if isinstance(event, BytesMessage) else event.data.encode("utf-8")
        self._partial[side] += data
        if not event.message_finished:
            if len(self._partial[side]) > self.owner.runtime.gateway.max_message_size:
                self._fail_client("a WebSocket message larger than max_message_size")
            return None
        whole, self._partial[side] = self._partial[side], b""
        return whole

    def _from_client(self, message: bytes, text: bool) -> None:
        if text or not message:
            return  # the base64 subprotocols are not relayed; an empty message carries nothing
        if self._upstream is None or not self._accepted:
            self._pending_size += len(message)
            if self._pending_size > PENDING_LIMIT:
                self._fail_client("too much input while the command was being decided")
                return
            self._pending.append(message)
            return
        channel, payload = message[0], message[1:]
        if self._judge is not None and channel == STDIN:
            self._judge.feed(payload)
            return
        if self._judge is not None and channel == CLOSE and payload[:1] == bytes([STDIN]):
            self._judge.eof()  # the end of input waits behind the lines being decided
            return
        if channel == STDIN:
            passed = self._client_input(payload)
            if passed is None:
                return
            payload = passed
        elif channel not in (RESIZE, CLOSE):
            return
        self._send_upstream(bytes([channel]) + payload)

    # -- what a LineJudge asks of its channel (hoopgw.shell.LineChannel) ------------------

    @property
    def id(self) -> int:
        """The exec command's number, recorded with each line typed into it."""
        return self.command.seq

    @property
    def _closed(self) -> bool:
        return self._ended

    def forward_input(self, data: bytes, data_type: int | None = None) -> None:
        """Pass judged input on to the container's stdin."""
        passed = self._client_input(data)
        if passed:
            self._send_upstream(bytes([STDIN]) + passed)

    def forward_eof(self) -> None:
        """End the container's stdin (v5 only: v4 has no way to say it)."""
        if self.subprotocol.startswith("v5"):
            self._send_upstream(bytes([CLOSE, STDIN]))

    def write(self, data: bytes) -> None:
        """Tell the client on stdout (the gateway's own words)."""
        self._send_client(bytes([STDOUT]) + data)

    def write_stderr(self, data: bytes) -> None:
        """Tell the client on stderr (the gateway's own words)."""
        self._send_client(bytes([STDERR]) + data)

    def loseConnection(self) -> None:
        """End the stream: the client typed ahead too much."""
        self._fail_client("too much input while a line was being decided")

    def _client_input(self, data: bytes) -> bytes | None:
        chain = self.session.ledger.chain
        if not chain.has_input_hooks or not data:
            return data
        output = Output("stdin", {"data": self._stdin.decode(data)})
        try:
            chain.hook.client_input(session=self.session.info, output=output)
        except Exception:
            log.failure("client_input hook failed; stream ended")
            self._fail_client("input processing failed")
            return None
        return output.fields.get("data", "").encode("utf-8", "surrogateescape")

    def _send_client(self, message: bytes) -> None:
        with contextlib.suppress(LocalProtocolError):  # the client's side is closing
            self._raw_client(self._client.send(BytesMessage(data=message)))

    def _raw_client(self, data: bytes) -> None:
        transport = self.owner.transport
        if data and transport is not None and not self.owner._closed:
            transport.write(data)

    def _close_client(self, code: int, reason: str) -> None:
        with contextlib.suppress(LocalProtocolError):
            self._raw_client(self._client.send(CloseConnection(code=code, reason=reason)))
        transport = self.owner.transport
        if transport is not None:
            self.owner.runtime.reactor.callLater(0, transport.loseConnection)

    def client_lost(self) -> None:
        """The client went away."""
        self._close_upstream(1001)
        self._finish(None)

    # -- the cluster's side --------------------------------------------------------------------

    def upstream_connected(self, link: _Upstream) -> None:
        if self._ended:
            link.transport.loseConnection()
            return
        # Each side pauses the other when it cannot keep up (a flood of output or input).
        client = self.owner.transport
        client.registerProducer(link.transport, True)
        link.transport.registerProducer(client, True)
        self._paired = True
        link.transport.write(self._handshake)

    def _unpair(self) -> None:
        if not self._paired:
            return
        self._paired = False
        self.owner.transport.unregisterProducer()
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.unregisterProducer()

    def upstream_data(self, data: bytes) -> None:
        ws = self._upstream_ws
        assert ws is not None
        try:
            ws.receive_data(data)
            events = list(ws.events())
        except Exception as exc:
            self._fail_client(f"malformed WebSocket data from the API server ({exc})")
            return
        for event in events:
            if isinstance(event, AcceptConnection):
                self._upstream_accepted(event)
            elif isinstance(event, RejectConnection):
                self._rejected = event.status_code
            elif isinstance(event, RejectData):
                if event.body_finished:
                    self._fail_client(
                        f"the API server refused the stream (HTTP {self._rejected}):"
                        f" {_status_message(event.data)}"
                    )
            elif isinstance(event, Ping):
                self._send_upstream_raw(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._upstream_closed(event)
            elif isinstance(event, Message):
                whole = self._whole("upstream", event)
                if whole is not None and whole:
                    self._from_upstream(whole)

    def _upstream_accepted(self, event: AcceptConnection) -> None:
        if event.subprotocol != self.subprotocol:
            self._fail_client(f"the API server chose subprotocol {event.subprotocol!r}")
            return
        self._accepted = True
        if self.owner.settings.judge_shell_lines and self.command.details.get("stdin"):
            # With a tty the container's terminal has its default editing keys.
            self._judge = LineJudge(self, modes={} if self.command.details.get("tty") else None)
        pending, self._pending = self._pending, []
        for message in pending:
            self._from_client(message, False)

    def _from_upstream(self, message: bytes) -> None:
        channel, payload = message[0], message[1:]
        if channel in _STREAMS and payload:
            self._bytes += len(payload)
            self._output(channel).feed(payload)
            return
        if channel == ERROR and payload:
            self._flush()
            code = exit_code(payload)
            duration = self.owner.runtime.reactor.seconds() - self._started_at
            self._exit = CommandOutcome(
                status="ok" if code == 0 else "error",
                bytes=self._bytes,
                duration=duration,
                error_code="" if code in (0, None) else str(code),
                error_message="" if code is not None else _status_message(payload),
            )
        elif channel not in _STREAMS:
            # No other channel comes from the cluster, and what came on one would reach the
            # client without the server_output hooks: it is dropped.
            log.info("Kubernetes stream: a message on channel {channel} dropped", channel=channel)
            return
        self._send_client(message)

    def _output(self, channel: int) -> _Output:
        out = self._outputs.get(channel)
        if out is None:
            out = self._outputs[channel] = _Output(
                lambda text: self._emit(channel, text), self.owner.runtime.reactor
            )
        return out

    def _emit(self, channel: int, text: str) -> None:
        if self.session.ledger.chain.has_output_hooks:
            try:
                text = self.session.mask(self.command, _STREAMS[channel], {"data": text}).get(
                    "data", ""
                )
            except Exception:
                log.failure("server_output hook failed; stream ended")
                self._fail_client("output processing failed")
                return
        if text:
            self._send_client(bytes([channel]) + text.encode("utf-8", "surrogateescape"))

    def _flush(self) -> None:
        for out in list(self._outputs.values()):
            out.flush()

    def _upstream_closed(self, event: CloseConnection) -> None:
        ws = self._upstream_ws
        if ws is not None and ws.state.name != "CLOSED":
            with contextlib.suppress(LocalProtocolError):
                self._send_upstream_raw(ws.send(event.response()))
        self._flush()
        self._close_client(event.code if event.code != 1005 else 1000, "")
        self._finish(self._exit)

    def upstream_lost(self) -> None:
        if self._ended:
            return
        self._flush()
        if self._accepted:
            self._close_client(1000 if self._exit else 1011, "")
            self._finish(self._exit)
        else:
            self._fail_client("the API server closed the connection")

    def _send_upstream(self, message: bytes) -> None:
        ws = self._upstream_ws
        if ws is None:
            return
        with contextlib.suppress(LocalProtocolError):  # the cluster's side is closing
            self._send_upstream_raw(ws.send(BytesMessage(data=message)))

    def _send_upstream_raw(self, data: bytes) -> None:
        if self._upstream is not None and self._upstream.transport is not None and data:
            self._upstream.transport.write(data)

    def _close_upstream(self, code: int | None) -> None:
        link, ws = self._upstream, self._upstream_ws
        if link is None or link.transport is None:
            return
        if ws is not None and self._accepted and ws.state.name == "OPEN":
            with contextlib.suppress(LocalProtocolError):
                self._send_upstream_raw(ws.send(CloseConnection(code=code or 1000)))
        link.transport.loseConnection()

    def _finish(self, outcome: CommandOutcome | None) -> None:
        """The stream is over: the command is complete (aborted without an exit status)."""
        if self._ended and outcome is None and self._exit is None:
            return
        self._ended = True
        self._unpair()
        self.session.ledger.complete(
            self.command,
            outcome
            or CommandOutcome(
                status="aborted",
                bytes=self._bytes,
                error_message="the stream ended before the command reported its exit",
            ),
        )


def _status_message(body: bytes) -> str:
    try:
        document = json.loads(body.decode("utf-8"))
        return str(document.get("message", ""))[:500]
    except (UnicodeDecodeError, ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
