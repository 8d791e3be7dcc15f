"""The gateway's side: the hello, online/offline, streams for ``via`` connections, and what
happens to sessions when an agent goes away. No I/O: ``StringTransport`` and a clock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from hoopgw.agent.hub import HELLO_TIMEOUT, PING_INTERVAL, AgentHub, AgentLink
from hoopgw.agent.mux import Multiplexer, Stream
from hoopgw.agent.tokens import AgentTokens
from hoopgw.agent.wire import encode_hello, parse_connect_request, stream_answer
from hoopgw.errors import UpstreamUnavailable
from hoopgw.store import SQLiteStore


class FakeSession:
    def __init__(self, via: str | None, *, authenticated: bool = True) -> None:
        self.runtime = SimpleNamespace(config=SimpleNamespace(via=via))
        self.session_info = object() if authenticated else None
        self.terminated: list[str] = []

    def terminate(self, reason: str) -> None:
        self.terminated.append(reason)


class Agent:
    """The agent's end of a link: a real multiplexer fed from the link's transport."""

    def __init__(self, link: AgentLink, transport: StringTransport) -> None:
        self.link = link
        self.transport = transport
        self.requests: list[tuple[Stream, tuple[str, int]]] = []
        self.mux = Multiplexer(
            self.link.dataReceived,
            client_side=False,
            on_request=lambda s, h: self.requests.append((s, parse_connect_request(h))),
        )
        self.pump()

    def pump(self) -> None:
        while data := self.transport.value():
            self.transport.clear()
            self.mux.received(data)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "hub.db"))
    store.migrate()
    return store


@pytest.fixture
def hub(store: SQLiteStore) -> AgentHub:
    spliced: list[Any] = []

    def splice(reactor: Any, stream: Stream, proto: Protocol) -> Protocol:
        spliced.append((stream, proto))
        return proto

    hub = AgentHub(
        tokens=AgentTokens(store),
        store=store,
        reactor=MemoryReactorClock(),
        sessions=[],
        splice=splice,
        wall_clock=lambda: 1000.0,
    )
    hub.spliced = spliced  # type: ignore[attr-defined]
    return hub


class TlsTransport(StringTransport):
    """Closes as Twisted's TLS transport does: not while a producer is registered, but once
    it is unregistered."""

    closing = False

    def loseConnection(self) -> None:
        self.closing = True
        if self.producer is None:
            super().loseConnection()

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        if self.closing:
            super().loseConnection()

    def abortConnection(self) -> None:
        super().loseConnection()  # at once, producer or not


def connect(hub: AgentHub) -> tuple[AgentLink, StringTransport]:
    link: AgentLink = hub.factory().buildProtocol(IPv4Address("TCP", "10.0.0.2", 4000))
    transport = TlsTransport(peerAddress=IPv4Address("TCP", "10.0.0.2", 4000))
    link.makeConnection(transport)
    return link, transport


def welcomed(hub: AgentHub, store: SQLiteStore, name: str = "edge", *, answer: Any = None) -> Agent:
    """An agent connected with a valid token; ``answer()`` answers the token check when the
    hub's store calls wait."""
    token, _ = AgentTokens(store).create(name, now=1.0)
    link, transport = connect(hub)
    hello = encode_hello(token)
    for i in range(len(hello)):  # one byte at a time
        link.dataReceived(hello[i : i + 1])
    if answer is not None:
        assert transport.value() == b""  # the token check waits on the store
        answer()
    line, _, rest = transport.value().partition(b"\n")
    assert line == f"OK {name}".encode()
    transport.clear()
    transport.write(rest)  # the gateway's HTTP/2 preface, for the agent
    return Agent(link, transport)


def test_a_valid_token_brings_the_agent_online(hub: AgentHub, store: SQLiteStore) -> None:
    agent = welcomed(hub, store)
    assert hub.online == {"edge": agent.link}
    record = store.get_agent("edge")
    assert record is not None and record.online and record.address == "10.0.0.2:4000"


@pytest.mark.parametrize("hello", [b"HOOPGW-AGENT/1 hga_000000000000_x\n", b"GET / HTTP/1.1\r\n"])
def test_a_bad_hello_is_refused_and_closed(hub: AgentHub, store: SQLiteStore, hello: bytes) -> None:
    AgentTokens(store).create("edge", now=1.0)
    link, transport = connect(hub)
    link.dataReceived(hello)
    assert transport.value().startswith(b"ERR ")
    assert transport.disconnecting
    assert hub.online == {}


def test_no_hello_in_time_drops_the_connection(hub: AgentHub) -> None:
    _, transport = connect(hub)
    hub.reactor.advance(HELLO_TIMEOUT + 0.1)
    assert transport.disconnecting


def test_an_offline_agent_fails_new_upstreams_at_once(hub: AgentHub) -> None:
    failures: list[Any] = []
    hub.connector("edge").connect("db", 5432, Protocol()).addErrback(failures.append)
    [failure] = failures
    assert failure.check(UpstreamUnavailable)
    assert failure.getErrorMessage() == "agent 'edge' is offline"


def test_a_stream_the_agent_opens_is_spliced_to_the_protocol(
    hub: AgentHub, store: SQLiteStore
) -> None:
    agent = welcomed(hub, store)
    proto = Protocol()
    connected: list[Any] = []
    hub.connector("edge").connect("db.internal", 5432, proto).addCallback(connected.append)
    agent.pump()
    stream, asked = agent.requests.pop()
    assert asked == ("db.internal", 5432)
    agent.mux.answer(stream, stream_answer(), end=False)
    assert connected == [proto]
    assert [p for _, p in hub.spliced] == [proto]  # type: ignore[attr-defined]


def test_a_refusal_reaches_the_protocol_with_the_agents_reason(
    hub: AgentHub, store: SQLiteStore
) -> None:
    agent = welcomed(hub, store)
    failures: list[Any] = []
    hub.connector("edge").connect("10.9.9.9", 22, Protocol()).addErrback(failures.append)
    agent.pump()
    stream, _ = agent.requests.pop()
    agent.mux.answer(
        stream, stream_answer("10.9.9.9:22 is not on the agent's allow-list"), end=True
    )
    [failure] = failures
    assert failure.check(UpstreamUnavailable)
    assert failure.getErrorMessage() == (
        "agent 'edge' could not open 10.9.9.9:22: 10.9.9.9:22 is not on the agent's allow-list"
    )


def test_an_unanswered_stream_times_out(hub: AgentHub, store: SQLiteStore) -> None:
    welcomed(hub, store)
    failures: list[Any] = []
    hub.connector("edge").connect("db", 5432, Protocol(), timeout=3).addErrback(failures.append)
    hub.reactor.advance(3.1)
    [failure] = failures
    assert failure.getErrorMessage() == "agent 'edge' did not open db:5432 within 3s"


def test_losing_the_agent_ends_the_sessions_of_its_connections(
    hub: AgentHub, store: SQLiteStore
) -> None:
    mine, other, direct, unauthenticated = (
        FakeSession("edge"),
        FakeSession("dc2"),
        FakeSession(None),
        FakeSession("edge", authenticated=False),
    )
    hub.sessions = [mine, other, direct, unauthenticated]
    agent = welcomed(hub, store)
    pending: list[Any] = []
    hub.connector("edge").connect("db", 5432, Protocol()).addErrback(pending.append)
    agent.link.connectionLost()
    assert mine.terminated == ["agent 'edge' lost its connection to the gateway"]
    assert other.terminated == direct.terminated == unauthenticated.terminated == []
    assert pending[0].getErrorMessage().endswith("agent 'edge' lost its connection to the gateway")
    assert hub.online == {}
    record = store.get_agent("edge")
    assert record is not None and not record.online


def test_a_new_connection_of_the_same_agent_replaces_the_old(
    hub: AgentHub, store: SQLiteStore
) -> None:
    first = welcomed(hub, store)
    token, _ = AgentTokens(store).create("other", now=1.0)
    # The same agent again (its token, from another process).
    second_link, second_transport = connect(hub)
    record = store.get_agent("edge")
    assert record is not None
    hub.sessions = [FakeSession("edge")]
    second_link.name = "edge"
    second_link.mux = Multiplexer(second_transport.write, client_side=True)
    hub.attached(second_link)
    assert first.transport.disconnecting
    first.link.connectionLost()
    # The old connection's end neither takes the new one offline nor ends sessions.
    assert hub.online == {"edge": second_link}
    assert hub.sessions[0].terminated == []  # type: ignore[index]
    assert token


def test_rounds_ping_record_and_drop_revoked_or_silent_agents(
    hub: AgentHub, store: SQLiteStore
) -> None:
    agent = welcomed(hub, store)
    welcomed(hub, store, "quiet")
    hub.start()
    hub.reactor.advance(PING_INTERVAL)
    agent.pump()  # the agent answers the ping
    assert not agent.transport.disconnecting
    AgentTokens(store).revoke("edge", now=2.0)
    hub.reactor.advance(PING_INTERVAL)
    assert agent.transport.disconnecting
    quiet = hub.online["quiet"]
    hub.reactor.advance(3 * PING_INTERVAL)
    assert quiet.transport.disconnecting
    hub.stop()


def test_an_unregistered_or_revoked_agent_is_warned_about(
    hub: AgentHub, store: SQLiteStore
) -> None:
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn and event.get("log_namespace") == "hoopgw.agent":
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        hub.check_registered("pg", "ghost")
        AgentTokens(store).create("edge", now=1.0)
        hub.check_registered("pg", "edge")
        AgentTokens(store).revoke("edge", now=2.0)
        hub.check_registered("pg", "edge")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(seen) == 2
    assert "agent ghost is not registered (hoopgw agents create ghost)" in seen[0]
    assert "the token of agent edge is revoked" in seen[1]


def test_the_rounds_read_the_store_through_the_calls_in_order(store: SQLiteStore) -> None:
    # With a PostgreSQL store the rounds' reads and the agents' states go through the store's
    # threads (hoopgw.store.calls): a revocation is acted on when the read answers, and one
    # agent's states are written in the order they happened, one call after the other.
    from twisted.internet import defer

    queued: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []

    def slow(fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        queued.append((d, fn, args, kwargs))
        return d

    def answer_next() -> None:
        d, fn, args, kwargs = queued.pop(0)
        d.callback(fn(*args, **kwargs))

    hub = AgentHub(
        tokens=AgentTokens(store),
        store=store,
        reactor=MemoryReactorClock(),
        sessions=[],
        wall_clock=lambda: 1000.0,
        calls=slow,
    )
    agent = welcomed(hub, store, answer=answer_next)
    assert len(queued) == 1  # its "online" state, on the way
    hub.start()
    AgentTokens(store).revoke("edge", now=2.0)
    hub.reactor.advance(PING_INTERVAL)
    assert len(queued) == 1  # the round waits for the state before it
    answer_next()
    assert len(queued) == 1 and not agent.transport.disconnecting
    answer_next()  # the round's read: revoked
    assert agent.transport.disconnecting
    hub.stop()


def test_the_token_check_reads_the_store_through_the_calls(store: SQLiteStore) -> None:
    # With a PostgreSQL store the token check runs on the store's threads: what the agent
    # sends meanwhile waits for it, and a connection lost meanwhile is never attached.
    from twisted.internet import defer

    queued: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

    def slow(fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        queued.append((d, fn, args))
        return d

    hub = AgentHub(
        tokens=AgentTokens(store),
        store=store,
        reactor=MemoryReactorClock(),
        sessions=[],
        wall_clock=lambda: 1000.0,
        calls=slow,
    )
    token, _ = AgentTokens(store).create("edge", now=1.0)
    link, transport = connect(hub)
    link.dataReceived(encode_hello(token))
    assert len(queued) == 1 and transport.value() == b""
    link.connectionLost(Failure(ConnectionDone()))
    d, fn, args = queued.pop()
    d.callback(fn(*args))
    assert transport.value() == b"" and hub.online == {}
