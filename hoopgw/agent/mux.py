"""TCP streams carried over one HTTP/2 connection, with flow control per stream.

Both sides use :class:`Multiplexer`: the gateway opens streams (:meth:`Multiplexer.open`), the
agent answers them. Each stream is joined to a local socket through a :class:`Pipe` (on the
agent the TCP connection to the target; on the gateway one end of a socket pair whose other
end is the protocol's upstream transport), and moves bytes the Twisted way:

- bytes from the peer are written to the pipe and acknowledged (``WINDOW_UPDATE``) at once,
  unless the pipe's write buffer is full: then the acknowledgement waits until it drains, so
  the peer's window for that stream closes and it stops sending on it;
- bytes from the pipe are sent while the stream's window allows; past it they wait and the
  pipe stops reading until a ``WINDOW_UPDATE`` opens the window again;
- the multiplexer is the producer of the connection's own transport: while that transport's
  write buffer is full (a peer that grants windows but does not read), no stream sends and
  every pipe with bytes waiting stops reading, so a peer cannot make this side buffer without
  bound by granting ever larger windows.

What any one stream holds is bounded by its window (:data:`STREAM_WINDOW`), so a slow client
stalls its own stream only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import h2.events
import h2.exceptions
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.agent.wire import (
    StreamRefused,
    connect_request,
    h2_config,
    parse_stream_answer,
)

__all__ = ["CONNECTION_WINDOW", "STREAM_WINDOW", "Multiplexer", "Pipe", "Stream"]

log = Logger(namespace="hoopgw.agent")

STREAM_WINDOW = 1024 * 1024
"""Bytes a peer may send on one stream before it waits for an acknowledgement."""
CONNECTION_WINDOW = 64 * 1024 * 1024
"""Bytes a peer may send on all streams together before it waits."""
MAX_STREAMS = 1024
"""Streams one connection carries at once."""
MAX_FRAME = 1024 * 1024
MAX_BACKLOG = 1024 * 1024
"""Bytes of frames (ping and settings answers, acknowledgements) written while the connection's
write buffer is full, past which the peer is taken to flood without reading and dropped."""
"""Largest DATA frame accepted: fewer, larger frames cost less per byte than the default 16 KiB."""


class Pipe(protocol.Protocol):
    """The local end of a :class:`Stream`: a real socket on this host. It reads nothing until
    :meth:`Stream.attach` joins it to its stream."""

    stream: Stream | None = None
    transport: Any
    closed = False

    def connectionMade(self) -> None:
        """Hold the bytes (a server's greeting) until the stream is there to take them."""
        if self.stream is None:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        """Local bytes go to the peer."""
        if self.stream is not None:
            self.stream.send(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """The local socket closed: end the stream once what it sent is through."""
        self.closed = True
        if self.stream is not None:
            self.stream.local_closed()


@implementer(IPushProducer)
class Stream:
    """One TCP stream of a :class:`Multiplexer`; the producer of its pipe's transport."""

    def __init__(self, mux: Multiplexer, stream_id: int) -> None:
        self.mux = mux
        self.id = stream_id
        self.pipe: Pipe | None = None
        self._out: deque[bytes] = deque()
        self._early: list[bytes] = []
        self._unacked = 0
        self._write_full = False
        self._reading_paused = False
        self._local_ended = False
        self._sent_end = False
        self._remote_ended = False
        self.closed = False

    def attach(self, pipe: Pipe) -> None:
        """Join ``pipe`` to the stream (bytes that arrived before go to it now)."""
        self.pipe = pipe
        pipe.stream = self
        if pipe.closed:
            self.local_closed()
            return
        pipe.transport.registerProducer(self, True)
        early, self._early = self._early, []
        for data in early:
            pipe.transport.write(data)
        self._acknowledge()
        pipe.transport.resumeProducing()

    # -- from the peer -----------------------------------------------------------------------

    def deliver(self, data: bytes, flow_controlled_length: int) -> None:
        """The peer sent ``data`` on this stream."""
        self._unacked += flow_controlled_length
        if self.pipe is None:
            self._early.append(data)
            return
        if not self._local_ended:
            self.pipe.transport.write(data)
        self._acknowledge()

    def _acknowledge(self) -> None:
        # A pipe that is gone still acknowledges, or its bytes would hold the connection window.
        if self._unacked and (not self._write_full or self._local_ended) and not self.closed:
            self.mux.acknowledge(self.id, self._unacked)
            self._unacked = 0

    def remote_ended(self) -> None:
        """The peer ended the stream: close the pipe once its buffer is written."""
        self._remote_ended = True
        if self.pipe is not None:
            self.pipe.transport.loseConnection()
        else:
            self._local_ended = True
        self._finish_if_done()

    def reset(self) -> None:
        """The stream is gone (reset by the peer, or the connection lost): cut the pipe."""
        self.closed = True
        self._out.clear()
        if self.pipe is not None:
            self.pipe.transport.abortConnection()
        self.mux.forget(self.id)

    # IPushProducer, for the pipe's transport.
    def pauseProducing(self) -> None:
        """The pipe's write buffer is full: hold the acknowledgements."""
        self._write_full = True

    def resumeProducing(self) -> None:
        """The pipe's write buffer drained: acknowledge what it took."""
        self._write_full = False
        self._acknowledge()
        self.mux.flush()

    def stopProducing(self) -> None:
        """The pipe's transport is gone (its ``connectionLost`` ends the stream)."""

    # -- towards the peer --------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send local bytes to the peer as far as the window allows; hold the rest."""
        if self.closed:
            return
        self._out.append(data)
        self.push()

    def local_closed(self) -> None:
        """The pipe closed: end the stream after what waits to be sent."""
        self._local_ended = True
        self._acknowledge()
        self.push()

    def push(self) -> None:
        """Send what waits, as far as the stream's window allows."""
        if self.closed:
            return
        try:
            while self._out and not self.mux.paused:
                window = min(self.mux.h2.local_flow_control_window(self.id), self.mux.frame_size)
                if window <= 0:
                    break
                chunk = self._out.popleft()
                if len(chunk) > window:
                    self._out.appendleft(chunk[window:])
                    chunk = chunk[:window]
                self.mux.h2.send_data(self.id, chunk)
            if not self._out and self._local_ended and not self._sent_end:
                self._sent_end = True
                self.mux.h2.end_stream(self.id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.reset()
            return
        self._pause_reading(bool(self._out))
        self.mux.flush()
        self._finish_if_done()

    def _pause_reading(self, pause: bool) -> None:
        if self.pipe is None or pause == self._reading_paused or self._local_ended:
            return
        self._reading_paused = pause
        if pause:
            self.pipe.transport.pauseProducing()
        else:
            self.pipe.transport.resumeProducing()

    def _finish_if_done(self) -> None:
        if self._sent_end and self._remote_ended:
            self.closed = True
            self.mux.forget(self.id)


def _text_headers(headers: Any) -> list[tuple[str, str]]:
    """Headers as text (the connection decodes them as UTF-8, see :func:`h2_config`)."""
    return [
        (n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
        for n, v in headers or []
    ]


@implementer(IPushProducer)
class Multiplexer:
    """One HTTP/2 connection's streams; the owning Twisted protocol feeds it bytes and registers
    it as the producer of its transport.

    :param write: sends bytes to the peer (the TLS transport's ``write``).
    :param client_side: True on the gateway (it opens the streams).
    :param on_request: on the agent, called with ``(stream, headers)`` for each stream the
        gateway asks for; it must answer with :meth:`answer`.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        *,
        client_side: bool,
        on_request: Callable[[Stream, list[tuple[str, str]]], None] | None = None,
    ) -> None:
        self._write = write
        self._on_request = on_request
        self.h2 = H2Connection(config=h2_config(client_side=client_side))
        self.streams: dict[int, Stream] = {}
        self._opening: dict[int, defer.Deferred[Stream]] = {}
        self.paused = False
        self._backlog = 0
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            }
        )
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    @property
    def frame_size(self) -> int:
        """Largest DATA frame the peer accepts."""
        return int(self.h2.max_outbound_frame_size)

    def flush(self) -> None:
        """Write what HTTP/2 has queued."""
        data = self.h2.data_to_send()
        if data:
            if self.paused:
                self._backlog += len(data)
            self._write(data)

    # IPushProducer, for the connection's transport.
    def pauseProducing(self) -> None:
        """The connection's write buffer is full: the streams hold their bytes."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The connection's write buffer drained: the streams send again."""
        self.paused = False
        self._backlog = 0
        for stream in list(self.streams.values()):
            stream.push()

    def stopProducing(self) -> None:
        """The connection is gone (its ``connectionLost`` cuts the streams)."""

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The local side took ``size`` bytes of the stream: let the peer send more."""
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the stream ended meanwhile; the connection window is acknowledged anyway
        self.flush()

    def forget(self, stream_id: int) -> None:
        """Stop tracking a finished stream."""
        self.streams.pop(stream_id, None)

    # -- the gateway's side ------------------------------------------------------------------

    def open(self, host: str, port: int) -> defer.Deferred[Stream]:
        """Ask the agent for a TCP stream to ``host:port``.

        :return: fires with the open stream; fails with :class:`StreamRefused` saying why the
            agent refused or could not. Cancelling it resets the stream.
        """
        stream_id = self.h2.get_next_available_stream_id()

        def cancel(_: Any) -> None:
            self._opening.pop(stream_id, None)
            self.reset(stream_id)

        opening: defer.Deferred[Stream] = defer.Deferred(cancel)
        try:
            self.h2.send_headers(stream_id, connect_request(host, port))
        except h2.exceptions.H2Error as exc:  # too many streams, or the connection closing
            return defer.fail(StreamRefused(f"the agent connection cannot open a stream: {exc}"))
        self.streams[stream_id] = Stream(self, stream_id)
        self._opening[stream_id] = opening
        self.flush()
        return opening

    # -- the agent's side --------------------------------------------------------------------

    def answer(self, stream: Stream, headers: list[tuple[str, str]], *, end: bool) -> None:
        """Answer a stream request; ``end`` for a refusal (the stream ends with it)."""
        if stream.closed:
            return
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end)
        except h2.exceptions.H2Error:
            stream.reset()
            return
        if end:
            stream.closed = True
            self.forget(stream.id)
        self.flush()

    def reset(self, stream_id: int) -> None:
        """Reset a stream (its pipe is cut)."""
        stream = self.streams.get(stream_id)
        try:
            self.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass
        if stream is not None:
            stream.reset()
        self.flush()

    # -- bytes from the peer -----------------------------------------------------------------

    def received(self, data: bytes) -> list[h2.events.Event]:
        """Handle bytes from the peer.

        :return: the connection-level events the owner may care about (pings, termination).
        :raises h2.exceptions.ProtocolError: the peer broke HTTP/2, or floods frames that need an
            answer while it reads none (drop the connection).
        """
        others: list[h2.events.Event] = []
        for event in self.h2.receive_data(data):
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.RequestReceived):
                self._requested(event)
            elif isinstance(event, h2.events.ResponseReceived):
                self._answered(event)
            elif isinstance(event, h2.events.DataReceived):
                if stream is not None:
                    stream.deliver(event.data, event.flow_controlled_length)
                else:
                    self.acknowledge(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded):
                if stream is not None:
                    stream.remote_ended()
            elif isinstance(event, h2.events.StreamReset):
                self._stream_gone(event.stream_id, "the agent reset the stream")
            elif isinstance(event, h2.events.PushedStreamReceived):
                # Nothing here pushes; each promise would be a stream kept for nothing.
                raise h2.exceptions.ProtocolError("the peer pushed a stream")
            elif isinstance(event, h2.events.WindowUpdated):
                targets = list(self.streams.values()) if not event.stream_id else [stream]
                for target in targets:
                    if target is not None:
                        target.push()
            else:
                others.append(event)
        self.flush()
        if self._backlog > MAX_BACKLOG:
            # Pings and settings make this side answer; a peer that sends them and reads nothing
            # would grow the write buffer without bound.
            raise h2.exceptions.ProtocolError("the peer sends frames to answer but reads nothing")
        return others

    def _requested(self, event: h2.events.RequestReceived) -> None:
        stream = self.streams[event.stream_id] = Stream(self, event.stream_id)
        if self._on_request is None:
            self.reset(event.stream_id)
            return
        self._on_request(stream, _text_headers(event.headers))

    def _answered(self, event: h2.events.ResponseReceived) -> None:
        opening = self._opening.pop(event.stream_id, None)
        stream = self.streams.get(event.stream_id)
        if opening is None or stream is None:
            self.reset(event.stream_id)
            return
        error = parse_stream_answer(_text_headers(event.headers))
        if error is not None:
            stream.closed = True
            self.forget(event.stream_id)
            opening.errback(StreamRefused(error))
        else:
            opening.callback(stream)

    def _stream_gone(self, stream_id: int, why: str) -> None:
        opening = self._opening.pop(stream_id, None)
        if opening is not None:
            opening.errback(StreamRefused(why))
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.reset()

    def connection_lost(self, why: str) -> None:
        """The connection is gone: fail the streams being opened, cut the open ones."""
        for stream_id in list(self._opening):
            self._stream_gone(stream_id, why)
        for stream in list(self.streams.values()):
            stream.reset()
