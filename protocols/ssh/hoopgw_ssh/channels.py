"""Channels a client opens through the gateway, and those the target opens back.

- ``session``: :class:`SessionChannel`, paired with an :class:`UpstreamSessionChannel` on the
  target. ``exec``, ``shell`` and ``subsystem`` requests are commands, decided by the plugin
  chain before the target sees them; ``pty-req``, ``window-change``, ``signal`` and allow-listed
  ``env`` pass through; output passes the ``server_output`` hooks (kind ``stdout``/``stderr``)
  and input the ``client_input`` hooks (kind ``stdin``); ``exit-status`` and ``exit-signal``
  come back and complete the command.
- ``direct-tcpip`` (``ssh -L``): a command of kind ``direct-tcpip`` when the connection
  allows port forwarding; refused otherwise.
- agent and X11 channels the target opens: relayed only when the connection allows them.
"""

from __future__ import annotations

import codecs
import fnmatch
import struct
from typing import TYPE_CHECKING, Any

from twisted.conch.error import ConchError
from twisted.conch.ssh import common, connection
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw import errors as refusals
from hoopgw.session import Command, CommandOutcome, Output
from hoopgw.shell import LineJudge, parse_modes, unfollowable_modes
from hoopgw.verdicts import Allow, Block
from hoopgw_ssh.options import SshConfig, ssh_config
from hoopgw_ssh.outstream import OutputBuffer
from hoopgw_ssh.relay import WINDOW_SIZE, RelayChannel
from hoopgw_ssh.sftp import SftpJudge, SftpReplies

if TYPE_CHECKING:
    from hoopgw_ssh.server import GatewaySession

__all__ = ["DirectTcpipChannel", "SessionChannel", "open_reverse_channel"]

log = Logger(namespace="hoopgw.ssh")

EXIT_REFUSED = 126
"""Exit status a client sees for a command the gateway refused (as a shell does for a command
that cannot run)."""
PENDING_INPUT_LIMIT = WINDOW_SIZE
"""Bytes of client input held while a command is being decided. No window is granted
meanwhile, so a client sends at most one window (:data:`~hoopgw_ssh.relay.WINDOW_SIZE`);
more ends the channel."""
REQUEST_QUEUE_LIMIT = 64
"""Channel requests waiting for an answer (behind a command being decided); more ends the
channel."""
STDERR = connection.EXTENDED_DATA_STDERR

_PASSED_REQUESTS = {b"window-change", b"signal", b"break"}
_COMMAND_REQUESTS = {b"exec", b"shell", b"subsystem"}


def _decoder() -> codecs.IncrementalDecoder:
    # surrogateescape: bytes that are not UTF-8 survive the round trip through str unchanged.
    return codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")


def _as_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class SessionChannel(RelayChannel):
    """A client's ``session`` channel: one command (exec, shell or subsystem) at most."""

    name = b"session"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: GatewaySession = self.avatar
        self._upstream_open: bool | None = None
        self._upstream_waiters: list[defer.Deferred[bool]] = []
        self._queue: list[tuple[bytes, bytes, defer.Deferred[bool]]] = []
        self.command: Command | None = None
        self._running = False
        self._pending_input: list[bytes] = []
        self._pending_size = 0
        self._started_at = 0.0
        self._bytes = 0
        self._exit: CommandOutcome | None = None
        self.pty: dict[str, Any] | None = None
        self._modes: dict[int, int] = {}
        self._pending_eof = False
        self._out: dict[int | None, codecs.IncrementalDecoder] = {}
        self._buffers: dict[int | None, OutputBuffer] = {}
        self._in = _decoder()
        self._input_judge: LineJudge | SftpJudge | None = None
        self._sftp_replies: SftpReplies | None = None

    @property
    def settings(self) -> SshConfig:
        """The connection's ``[connections.ssh]`` table."""
        return ssh_config(self.session.runtime.config.protocol_options)

    def channelOpen(self, specificData: bytes) -> None:
        """Open the matching channel on the target; requests wait until it is open."""
        upstream = UpstreamSessionChannel(owner=self, conn=self.session.upstream)
        self.session.upstream.openChannel(upstream)

    def upstream_opened(self, upstream: UpstreamSessionChannel) -> None:
        """The target's channel is open."""
        self.link(upstream)
        self._upstream_known(True)

    def upstream_failed(self, reason: str) -> None:
        """The target refused the channel: so does the gateway."""
        log.info("target refused a session channel: {reason}", reason=reason)
        self._upstream_known(False)
        self.loseConnection()

    def _upstream_known(self, opened: bool) -> None:
        self._upstream_open = opened
        waiters, self._upstream_waiters = self._upstream_waiters, []
        for waiter in waiters:
            waiter.callback(opened)

    def _upstream_ready(self) -> defer.Deferred[bool]:
        """Fires with whether the target's channel opened (each caller gets its own Deferred:
        awaiting a Deferred consumes its result)."""
        if self._upstream_open is not None:
            return defer.succeed(self._upstream_open)
        waiter: defer.Deferred[bool] = defer.Deferred()
        self._upstream_waiters.append(waiter)
        return waiter

    # -- requests, answered in order ---------------------------------------------------------

    def requestReceived(self, requestType: bytes, data: bytes) -> defer.Deferred[bool]:
        """Queue the request; replies must go out in the order requests came."""
        if len(self._queue) >= REQUEST_QUEUE_LIMIT:
            # A command held for approval must not let the client fill the gateway's memory.
            self.loseConnection()
            return defer.succeed(False)
        answer: defer.Deferred[bool] = defer.Deferred()
        self._queue.append((requestType, data, answer))
        if len(self._queue) == 1:
            self._next_request()
        return answer

    def _next_request(self) -> None:
        kind, data, answer = self._queue[0]
        handled = defer.ensureDeferred(self._handle(kind, data))

        def done(result: object) -> None:
            if isinstance(result, Failure):
                log.failure("SSH channel request {kind} failed", result, kind=kind)
                result = False
            self._queue.pop(0)
            answer.callback(bool(result))
            if self._queue:
                self._next_request()

        handled.addBoth(done)

    async def _handle(self, kind: bytes, data: bytes) -> bool:
        if not await self._upstream_ready() or self.peer is None:
            return False
        settings = self.settings
        if kind == b"pty-req":
            return await self._pty_request(data)
        if kind in _PASSED_REQUESTS:
            if kind == b"window-change" and self.pty is not None:
                cols, rows = struct.unpack(">2L", data[:8])
                self.pty.update(width=cols, height=rows)
            self.peer.send_request(kind, data)
            return True
        if kind == b"env":
            name, _value, _ = common.getNS(data, 2)
            if any(fnmatch.fnmatchcase(name.decode("latin-1"), p) for p in settings.env_allow):
                self.peer.send_request(kind, data)
                return True
            log.debug("env {name} is not in env_allow; ignored", name=name)
            return False
        if kind in _COMMAND_REQUESTS:
            return await self._command_request(kind, data)
        allowed = (kind == b"x11-req" and settings.allow_x11_forwarding) or (
            kind == b"auth-agent-req@openssh.com" and settings.allow_agent_forwarding
        )
        if allowed:
            return await self._forward_with_reply(kind, data)
        return False

    async def _forward_with_reply(self, kind: bytes, data: bytes) -> bool:
        assert self.peer is not None
        try:
            await self.peer.send_request(kind, data, want_reply=True)
        except Exception:  # the target answered failure (ConchError) or went away
            return False
        return True

    async def _pty_request(self, data: bytes) -> bool:
        try:
            term, rest = common.getNS(data)
            cols, rows, _, _ = struct.unpack(">4L", rest[:16])
            modes, _ = common.getNS(rest[16:])
            parse_modes(modes)
        except (struct.error, ValueError):
            return False
        if self.settings.judge_shell_lines and (why := unfollowable_modes(modes)) is not None:
            # Shell lines are judged by following the line editing; refuse what it cannot
            # follow (the shell then runs without a pty, judged more strictly).
            log.info("pty-req refused: {why}", why=why)
            return False
        if not await self._forward_with_reply(b"pty-req", data):
            return False  # no pty: the shell's lines are judged as without one
        self._modes = parse_modes(modes)  # well-formed: unfollowable_modes or sshd said so
        self.pty = {"term": term.decode("ascii", "replace"), "width": cols, "height": rows}
        return True

    async def _command_request(self, kind: bytes, data: bytes) -> bool:
        if self.command is not None:
            return False  # one command per session channel (RFC 4254, 6.5)
        details: dict[str, Any] = {"channel": self.id}
        if self.pty is not None:
            details["pty"] = dict(self.pty)
        text, refusal = "", None
        if kind != b"shell":
            raw, _ = common.getNS(data)
            decoded = _as_text(raw)
            # What is judged must be exactly what runs; bytes that are not text cannot be.
            refusal = None if decoded is not None else "the command is not valid UTF-8"
            text = raw.decode("utf-8", "replace") if decoded is None else decoded
        if kind == b"subsystem" and not (text == "sftp" and self.settings.allow_sftp):
            return False
        command = self.command = self.session.new_command(text, kind.decode(), details)
        verdict = await self.session.decide(command, held=self._tell_held)
        if refusal is not None:
            self._refuse(refusal, refusals.unreadable(refusal))
            return True
        if not isinstance(verdict, Allow):  # fail closed: only an Allow runs it
            block = verdict if isinstance(verdict, Block) else Block(reason="no verdict; refused")
            connection = self.session.runtime.info.name
            self._refuse(block.reason, refusals.refused(block, connection=connection))
            return True
        if self.peer is None:
            self.session.complete(command, CommandOutcome(status="aborted"))
            return False
        self._started_at = self.session.runtime.reactor.seconds()
        if not await self._forward_with_reply(kind, data):
            self.session.complete(
                command, CommandOutcome(status="error", error_message="the target refused it")
            )
            return False
        self._running = True
        if kind == b"shell" and self.settings.judge_shell_lines:
            self._input_judge = LineJudge(self, modes=self._modes if self.pty else None)
        elif kind == b"subsystem":  # sftp, the only one allowed
            judge = self._input_judge = SftpJudge(self)
            self._sftp_replies = SftpReplies(self, judge)
        pending, self._pending_input = self._pending_input, []
        for chunk in pending:
            self.relay_data(chunk, None)
        if self._pending_eof:
            self.eofReceived()
        owed, self._window_owed = self._window_owed, 0
        if owed and not self._closed:
            self.conn.adjustWindow(self, owed)  # withheld while the input waited
        return True

    def _tell_held(self, statement: refusals.HeldStatement) -> None:
        """The command waits for review: one line on stderr says so (before its reply)."""
        if self._closed or self.session.is_closed:
            return
        notice = refusals.held(statement, now=self.session.runtime.reactor.seconds())
        self.writeExtended(STDERR, f"{notice.text()}\r\n".encode("utf-8", "replace"))

    def _refuse(self, reason: str, shown: refusals.Refusal) -> None:
        """Tell the client why (``shown``, one line on stderr), exit with
        :data:`EXIT_REFUSED`, close; nothing ran. ``reason`` is what the record keeps."""
        command = self.command
        assert command is not None
        self.session.complete(command, CommandOutcome(status="blocked", error_message=reason))
        message = f"{shown.text()}\r\n".encode("utf-8", "replace")

        def tell() -> None:
            # After the request's reply, so a client sees the refusal as the command's output.
            if self._closed or self.session.is_closed:
                return
            self.writeExtended(STDERR, message)
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", EXIT_REFUSED))
            self.send_eof()
            self.loseConnection()

        self.session.runtime.reactor.callLater(0, tell)

    # -- data ----------------------------------------------------------------------------------

    def relay_data(self, data: bytes, data_type: int | None) -> None:
        """Client input: held until the command runs, then through ``client_input`` hooks."""
        if not self._running:
            self._pending_size += len(data)
            if self._pending_size > PENDING_INPUT_LIMIT:
                self.loseConnection()
                return
            self._pending_input.append(data)
            return
        if self._input_judge is not None:
            self._input_judge.feed(data)
            return
        self.forward_input(data, data_type)

    def withholds_window(self) -> bool:
        """Input waiting for the command's decision: the client gets no window meanwhile."""
        return super().withholds_window() or bool(self._pending_input)

    def eofReceived(self) -> None:
        """The client's end of input: held like its input until the command runs, and behind
        the lines a shell-line judge still holds; dropped if the command is refused."""
        if not self._running:
            self._pending_eof = True
        elif isinstance(self._input_judge, LineJudge):
            self._input_judge.eof()
        else:
            super().eofReceived()

    def forward_eof(self) -> None:
        """Pass the client's end of input on to the target."""
        super().eofReceived()

    def write_stderr(self, data: bytes) -> None:
        """Write to the client's stderr."""
        self._write_client(data, STDERR)

    def forward_input(self, data: bytes, data_type: int | None = None) -> None:
        """Pass client input on after the ``client_input`` hooks rewrote it."""
        chain = self.session.chain
        if chain.has_input_hooks and data:
            output = Output("stdin", {"data": self._in.decode(data)})
            try:
                chain.hook.client_input(session=self.session.info, output=output)
            except Exception:
                log.failure("client_input hook failed; session ended")
                self.session.terminate("input processing failed; session ended")
                return
            data = output.fields.get("data", "").encode("utf-8", "surrogateescape")
        self.send_to_peer(data, data_type)

    def output_from_target(self, data: bytes, data_type: int | None) -> None:
        """Target output: through ``server_output`` hooks (kind ``stdout``/``stderr``) in
        pieces that do not split a value (:class:`~hoopgw_ssh.outstream.OutputBuffer`)."""
        self._bytes += len(data)
        if self._sftp_replies is not None and data_type is None:
            self._sftp_replies.feed(data)
            return
        if not self.session.chain.has_output_hooks:
            self._write_client(data, data_type)
            return
        decoder = self._out.get(data_type) or self._out.setdefault(data_type, _decoder())
        self._buffer(data_type).feed(decoder.decode(data))

    def _buffer(self, data_type: int | None) -> OutputBuffer:
        buffer = self._buffers.get(data_type)
        if buffer is None:
            buffer = self._buffers[data_type] = OutputBuffer(
                lambda text: self._emit(text, data_type), self.session.runtime.reactor
            )
        return buffer

    def flush_output(self) -> None:
        """Hand on all held output (before EOF, exit status or close)."""
        for data_type, decoder in self._out.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                self._buffer(data_type).feed(tail)
        for buffer in list(self._buffers.values()):
            buffer.flush()

    def _emit(self, text: str, data_type: int | None) -> None:
        output = Output("stderr" if data_type == STDERR else "stdout", {"data": text})
        try:
            self.session.chain.hook.server_output(
                session=self.session.info, command=self.command, output=output
            )
        except Exception:
            log.failure("server_output hook failed; session ended")
            self.session.terminate("output processing failed; session ended")
            return
        self._write_client(
            output.fields.get("data", "").encode("utf-8", "surrogateescape"), data_type
        )

    def forward_raw(self, data: bytes) -> None:
        """Pass client bytes on untouched (SFTP packets, already judged)."""
        self.send_to_peer(data, None)

    def write_raw(self, data: bytes) -> None:
        """Write bytes to the client untouched (SFTP packets, already checked)."""
        self._write_client(data, None)

    def _write_client(self, data: bytes, data_type: int | None) -> None:
        if not data or self._closed:
            return
        if data_type is None:
            self.write(data)
        else:
            self.writeExtended(data_type, data)

    def exit_reported(self, kind: bytes, data: bytes) -> None:
        """``exit-status`` or ``exit-signal`` from the target: pass it on, note the outcome."""
        self.flush_output()
        if not self._closed:
            self.conn.sendRequest(self, kind, data)
        duration = self.session.runtime.reactor.seconds() - self._started_at
        if kind == b"exit-status":
            (status,) = struct.unpack(">L", data[:4])
            self._exit = CommandOutcome(
                status="ok" if status == 0 else "error",
                bytes=self._bytes,
                duration=duration,
                error_code="" if status == 0 else str(status),
            )
        else:
            signal, _ = common.getNS(data)
            self._exit = CommandOutcome(
                status="error",
                bytes=self._bytes,
                duration=duration,
                error_code=f"SIG{signal.decode('ascii', 'replace')}",
            )

    def closed(self) -> None:
        """The channel ended: the command is complete (aborted if no exit was reported)."""
        super().closed()
        for buffer in self._buffers.values():
            buffer.discard()
        if self.command is not None:
            self.session.complete(
                self.command,
                self._exit
                or CommandOutcome(
                    status="aborted",
                    bytes=self._bytes,
                    error_message="the channel closed before the command reported its exit",
                ),
            )


class UpstreamSessionChannel(RelayChannel):
    """The target side of a :class:`SessionChannel`."""

    name = b"session"

    def __init__(self, *, owner: SessionChannel, conn: Any) -> None:
        super().__init__(conn=conn)
        self.owner = owner

    def channelOpen(self, specificData: bytes) -> None:
        self.owner.upstream_opened(self)

    def openFailed(self, reason: Any) -> None:
        self.owner.upstream_failed(str(reason))

    def relay_data(self, data: bytes, data_type: int | None) -> None:
        self.owner.output_from_target(data, data_type)

    def eofReceived(self) -> None:
        self.owner.flush_output()
        super().eofReceived()

    def closeReceived(self) -> None:
        self.owner.flush_output()
        super().closeReceived()

    def requestReceived(self, requestType: bytes, data: bytes) -> bool:
        if requestType in (b"exit-status", b"exit-signal"):
            self.owner.exit_reported(requestType, data)
            return True
        if requestType == b"eow@openssh.com" and not self.owner._closed:
            self.owner.conn.sendRequest(self.owner, requestType, data)
            return True
        return False


class DirectTcpipChannel(RelayChannel):
    """``ssh -L``: a connection from the target's side to ``host:port``, if allowed."""

    name = b"direct-tcpip"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: GatewaySession = self.avatar
        if not ssh_config(self.session.runtime.config.protocol_options).allow_port_forwarding:
            raise ConchError(
                "port forwarding is off for this connection",
                connection.OPEN_ADMINISTRATIVELY_PROHIBITED,
            )
        host, port, _, _ = _host_port(self.data)
        # The host only in the text, which audit_text rewrites (masking may mask addresses):
        # details are recorded as they are.
        self.command = self.session.new_command(f"{host}:{port}", "direct-tcpip", {"port": port})

    def channelOpen(self, specificData: bytes) -> None:
        self.session.decide(self.command).addCallback(self._decided)

    def _decided(self, verdict: Any) -> None:
        if not isinstance(verdict, Allow) or self._closed:
            self.session.complete(
                self.command, CommandOutcome(status="blocked", error_message=verdict.reason)
            )
            self.loseConnection()
            return
        upstream = JoinedChannel(
            kind=self.name, data=self.data, owner=self, conn=self.session.upstream
        )
        self.session.upstream.openChannel(upstream, self.data)

    def closed(self) -> None:
        super().closed()
        if self.was_linked:
            self.session.complete(self.command, CommandOutcome(status="ok"))
        else:
            self.session.complete(
                self.command,
                CommandOutcome(status="error", error_message="the target refused the connection"),
            )


class JoinedChannel(RelayChannel):
    """A channel opened on the other connection for ``owner``, joined to it once open; the
    owner is closed when the other side refuses it."""

    def __init__(self, *, kind: bytes, data: bytes, owner: RelayChannel, conn: Any) -> None:
        super().__init__(conn=conn)
        self.name = kind
        self.owner = owner

    def channelOpen(self, specificData: bytes) -> None:
        self.link(self.owner)

    def openFailed(self, reason: Any) -> None:
        self.owner.loseConnection()


def _host_port(data: bytes) -> tuple[str, int, str, int]:
    host, rest = common.getNS(data)
    (port,) = struct.unpack(">L", rest[:4])
    origin, rest = common.getNS(rest[4:])
    (origin_port,) = struct.unpack(">L", rest[:4])
    return host.decode("utf-8", "replace"), port, origin.decode("utf-8", "replace"), origin_port


_REVERSE_KINDS = {
    b"auth-agent@openssh.com": "allow_agent_forwarding",
    b"x11": "allow_x11_forwarding",
}


def open_reverse_channel(
    session: GatewaySession, kind: bytes, data: bytes, window: int, max_packet: int
) -> RelayChannel:
    """A channel the target opens towards the client (agent, X11): relayed if allowed."""
    flag = _REVERSE_KINDS.get(kind)
    if flag is None or not getattr(ssh_config(session.runtime.config.protocol_options), flag):
        raise ConchError(
            f"{kind.decode('ascii', 'replace')} channels are off for this connection",
            connection.OPEN_ADMINISTRATIVELY_PROHIBITED,
        )
    target_side = RelayChannel(remoteWindow=window, remoteMaxPacket=max_packet, conn=None)
    client_side = JoinedChannel(
        kind=kind, data=data, owner=target_side, conn=session.client_connection
    )
    session.client_connection.openChannel(client_side, data)
    return target_side
