"""TCP streams over HTTP/2: two multiplexers back to back in memory, pipes on
``StringTransport``s, bytes delivered in every split down to one byte."""

from __future__ import annotations

from typing import Any

import h2.exceptions
import pytest
from h2.settings import SettingCodes
from twisted.internet.testing import StringTransport

from hoopgw.agent import mux
from hoopgw.agent.mux import (
    CONNECTION_WINDOW,
    STREAM_WINDOW,
    Multiplexer,
    Pipe,
    Stream,
)
from hoopgw.agent.wire import StreamRefused, parse_connect_request, stream_answer


class Wire:
    """A gateway-side and an agent-side multiplexer joined in memory."""

    def __init__(self, chunk: int | None = None) -> None:
        self.chunk = chunk
        self.to_agent: list[bytes] = []
        self.to_gateway: list[bytes] = []
        self.requests: list[tuple[Stream, tuple[str, int]]] = []
        self.gateway = Multiplexer(self.to_agent.append, client_side=True)
        self.agent = Multiplexer(
            self.to_gateway.append,
            client_side=False,
            on_request=lambda stream, headers: self.requests.append(
                (stream, parse_connect_request(headers))
            ),
        )
        self.pump()

    def _feed(self, mux: Multiplexer, data: bytes) -> None:
        size = self.chunk or len(data) or 1
        for i in range(0, len(data), size):
            mux.received(data[i : i + size])

    def pump(self) -> None:
        """Deliver everything queued, both ways, until nothing moves."""
        while self.to_agent or self.to_gateway:
            data, self.to_agent[:] = b"".join(self.to_agent), []
            self._feed(self.agent, data)
            data, self.to_gateway[:] = b"".join(self.to_gateway), []
            self._feed(self.gateway, data)

    def open(
        self, host: str = "db.internal", port: int = 5432
    ) -> tuple[Stream, Stream, Pipe, Pipe]:
        """Open a stream and join a pipe to each end."""
        opened: list[Stream] = []
        self.gateway.open(host, port).addCallback(opened.append)
        self.pump()
        agent_stream, asked = self.requests.pop()
        assert asked == (host, port)
        agent_pipe = _pipe()
        self.agent.answer(agent_stream, stream_answer(), end=False)
        agent_stream.attach(agent_pipe)
        self.pump()
        [gateway_stream] = opened
        gateway_pipe = _pipe()
        gateway_stream.attach(gateway_pipe)
        self.pump()
        return gateway_stream, agent_stream, gateway_pipe, agent_pipe


def _pipe() -> Pipe:
    pipe = Pipe()
    pipe.makeConnection(StringTransport())
    return pipe


def written(pipe: Pipe) -> bytes:
    transport: Any = pipe.transport
    data: bytes = transport.value()
    transport.clear()
    return data


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_bytes_cross_both_ways(chunk: int | None) -> None:
    wire = Wire(chunk)
    _, _, gateway_pipe, agent_pipe = wire.open()
    gateway_pipe.dataReceived(b"startup message")
    wire.pump()
    assert written(agent_pipe) == b"startup message"
    agent_pipe.dataReceived(b"R\x00\x00\x00\x08")
    wire.pump()
    assert written(gateway_pipe) == b"R\x00\x00\x00\x08"


def test_a_pipe_reads_nothing_until_its_stream_is_there() -> None:
    pipe = _pipe()
    transport: Any = pipe.transport
    assert transport.producerState == "paused"  # a server's greeting waits
    wire = Wire()
    _, _, _gateway_pipe, agent_pipe = wire.open()
    assert agent_pipe.transport.producerState == "producing"  # type: ignore[attr-defined]


def test_a_refused_stream_fails_with_the_agents_reason() -> None:
    wire = Wire()
    failures: list[Any] = []
    wire.gateway.open("10.9.9.9", 22).addErrback(failures.append)
    wire.pump()
    stream, _ = wire.requests.pop()
    wire.agent.answer(
        stream, stream_answer("10.9.9.9:22 is not on the agent's allow-list"), end=True
    )
    wire.pump()
    [failure] = failures
    assert failure.check(StreamRefused)
    assert failure.getErrorMessage() == "10.9.9.9:22 is not on the agent's allow-list"
    assert wire.gateway.streams == {} and wire.agent.streams == {}


def test_a_slow_reader_stalls_its_own_stream_only() -> None:
    wire = Wire()
    slow_gateway, slow_agent, slow_gw_pipe, slow_agent_pipe = wire.open()
    _, _, fast_gw_pipe, fast_agent_pipe = wire.open("db.internal", 5433)
    # The slow client's socket is full: its stream stops acknowledging.
    slow_gw_pipe.transport.producer.pauseProducing()  # type: ignore[attr-defined]
    big = b"x" * (3 * STREAM_WINDOW)
    slow_agent_pipe.dataReceived(big)
    wire.pump()
    arrived = written(slow_gw_pipe)
    assert STREAM_WINDOW <= len(arrived) < len(big) // 2
    # The agent stopped reading the target of that stream; the rest waits, bounded.
    assert slow_agent_pipe.transport.producerState == "paused"  # type: ignore[attr-defined]
    # The other stream still flows.
    fast_agent_pipe.dataReceived(b"y" * 1000)
    wire.pump()
    assert written(fast_gw_pipe) == b"y" * 1000
    # The slow client drains: everything arrives, in order, and reading resumes.
    slow_gw_pipe.transport.producer.resumeProducing()  # type: ignore[attr-defined]
    wire.pump()
    arrived += written(slow_gw_pipe)
    assert arrived == big
    assert slow_agent_pipe.transport.producerState == "producing"  # type: ignore[attr-defined]
    assert slow_gateway.id == slow_agent.id


def test_closing_one_end_closes_the_other_after_its_bytes() -> None:
    wire = Wire()
    gateway_stream, _, gateway_pipe, agent_pipe = wire.open()
    agent_pipe.dataReceived(b"last words")
    agent_pipe.connectionLost()
    wire.pump()
    assert written(gateway_pipe) == b"last words"
    assert gateway_pipe.transport.disconnecting  # type: ignore[attr-defined]
    gateway_pipe.connectionLost()
    wire.pump()
    assert gateway_stream.closed
    assert wire.gateway.streams == {} and wire.agent.streams == {}


def test_losing_the_connection_fails_openings_and_cuts_open_streams() -> None:
    wire = Wire()
    _, _, gateway_pipe, _ = wire.open()
    failures: list[Any] = []
    wire.gateway.open("db.internal", 5432).addErrback(failures.append)
    wire.gateway.connection_lost("agent 'edge' lost its connection to the gateway")
    [failure] = failures
    assert failure.getErrorMessage() == "agent 'edge' lost its connection to the gateway"
    assert gateway_pipe.transport.disconnected  # type: ignore[attr-defined]


def test_cancelling_an_opening_resets_the_stream() -> None:
    wire = Wire()
    opening = wire.gateway.open("db.internal", 5432)
    opening.addErrback(lambda _: None)
    wire.pump()
    stream, _ = wire.requests.pop()
    opening.cancel()
    wire.pump()
    # The agent learnt of it: answering now does nothing.
    assert stream.closed
    wire.agent.answer(stream, stream_answer(), end=False)
    wire.pump()


def test_data_for_an_unknown_stream_is_acknowledged_and_dropped() -> None:
    wire = Wire()
    gateway_stream, _agent_stream, gateway_pipe, agent_pipe = wire.open()
    # The gateway forgets the stream (say, it was cut) while the agent still sends.
    wire.gateway.forget(gateway_stream.id)
    agent_pipe.dataReceived(b"z" * (2 * STREAM_WINDOW))
    wire.pump()
    assert written(gateway_pipe) == b""
    # The connection window is not exhausted: a new stream still works.
    _, _, gw2, agent2 = wire.open("db.internal", 5434)
    agent2.dataReceived(b"fine")
    wire.pump()
    assert written(gw2) == b"fine"


def test_a_peer_granting_windows_but_not_reading_stops_the_pipes() -> None:
    # A hostile gateway grants the largest windows, then stops reading: the agent's connection
    # transport reports its write buffer full, and the agent must stop reading its targets
    # rather than buffer whatever they send for a peer that never takes it.
    wire = Wire()
    _, _, _, agent_pipe = wire.open()
    wire.gateway.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    wire.gateway.h2.increment_flow_control_window(2**31 - 1 - CONNECTION_WINDOW)
    wire.gateway.flush()
    wire.pump()
    wire.agent.pauseProducing()  # the agent's TLS transport: write buffer full
    for _ in range(8):
        agent_pipe.dataReceived(b"x" * STREAM_WINDOW)
    assert agent_pipe.transport.producerState == "paused"  # type: ignore[attr-defined]
    assert sum(map(len, wire.to_gateway)) < STREAM_WINDOW
    wire.agent.resumeProducing()  # drained: what waits goes out
    wire.pump()
    assert agent_pipe.transport.producerState == "producing"  # type: ignore[attr-defined]


def test_a_peer_flooding_pings_without_reading_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every PING needs an answer: a peer that sends them and never reads would make this side
    # buffer the answers without bound once its connection's write buffer is full.
    monkeypatch.setattr(mux, "MAX_BACKLOG", 4096)
    wire = Wire()
    wire.agent.pauseProducing()
    wire.to_gateway.clear()
    wire.gateway.h2.ping(b"12345678")
    pings = wire.gateway.h2.data_to_send() * 10
    with pytest.raises(h2.exceptions.ProtocolError):
        for _ in range(1000):
            wire.agent.received(pings)
    assert sum(map(len, wire.to_gateway)) < 4096 + len(pings)


def test_answers_written_while_paused_count_until_the_buffer_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mux, "MAX_BACKLOG", 4096)
    wire = Wire()
    wire.gateway.h2.ping(b"12345678")
    ping = wire.gateway.h2.data_to_send()
    for _ in range(3):
        wire.agent.pauseProducing()
        wire.agent.received(ping * (4096 // len(ping) // 2))
        wire.agent.resumeProducing()  # drained: an honest peer reads what it asked for


def test_an_agent_pushing_streams_is_dropped() -> None:
    # An agent (the HTTP/2 server) may send PUSH_PROMISE frames; each would be a stream the
    # gateway keeps for nothing, as many as the agent likes.
    wire = Wire()
    _, agent_stream, _, _ = wire.open()
    promised = wire.agent.h2.get_next_available_stream_id()
    request = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x")]
    wire.agent.h2.push_stream(agent_stream.id, promised, request)
    with pytest.raises(h2.exceptions.ProtocolError):
        wire.gateway.received(wire.agent.h2.data_to_send())
