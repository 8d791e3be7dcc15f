"""The gateway's side of network agents: it accepts their connections and routes the upstream
TCP streams of ``via`` connections through them.

An agent connects over TLS (the gateway's ``tls_cert``), sends its token, and is online until
its connection ends. :class:`AgentConnector` is the upstream connector of a connection with
``via = "NAME"``: each upstream connection becomes a stream of that agent's connection, or
fails at once with "agent NAME is offline". When an agent's connection ends, the sessions of
its connections are ended with that reason (each protocol says it in its own error form).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import h2.events
import h2.exceptions
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.agent.mux import Multiplexer
from hoopgw.agent.splice import splice
from hoopgw.agent.tokens import AgentRecord, AgentTokens
from hoopgw.agent.wire import (
    LineReader,
    ProtocolViolation,
    StreamRefused,
    encode_reply,
    parse_hello,
)
from hoopgw.errors import AuthenticationError, StoreError, UpstreamUnavailable
from hoopgw.transport import CONNECT_TIMEOUT, set_no_delay

__all__ = ["AgentConnector", "AgentHub", "AgentLink"]

log = Logger(namespace="hoopgw.agent")

HELLO_TIMEOUT = 10.0
"""Seconds an agent has, once connected, to send its hello."""
PING_INTERVAL = 10.0
"""Seconds between the gateway's HTTP/2 pings (and store updates) for each agent."""
SILENCE_LIMIT = 3
"""Ping intervals without a byte from the agent after which its connection is dropped."""


class AgentLink(protocol.Protocol):
    """One agent's connection, as the gateway sees it."""

    transport: Any

    def __init__(self, hub: AgentHub) -> None:
        self.hub = hub
        self.name: str | None = None
        self.mux: Multiplexer | None = None
        self.heard = 0.0
        self._reader: LineReader | None = LineReader()
        self._producing = False
        self._hello_timeout: Any = None
        self._early: bytearray | None = None  # what came while the token was being checked
        self._lost = False

    @property
    def address(self) -> str:
        """The agent's address as ``IP:PORT``."""
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"

    def connectionMade(self) -> None:
        """Wait for the hello, not forever."""
        # Many small frames share this connection: Nagle's algorithm would hold them back.
        set_no_delay(self.transport)
        self.heard = self.hub.reactor.seconds()
        self._hello_timeout = self.hub.reactor.callLater(HELLO_TIMEOUT, self._no_hello)

    def _no_hello(self) -> None:
        log.warn(
            "agent connection from {address}: no hello within {s:g}s",
            address=self.address,
            s=HELLO_TIMEOUT,
        )
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """The hello first, then HTTP/2."""
        self.heard = self.hub.reactor.seconds()
        if self._reader is not None:
            try:
                line = self._reader.feed(data)
            except ProtocolViolation as exc:
                self._refuse(str(exc))
                return
            if line is None:
                return
            self._reader = None
            self._hello(*line)
            return
        if self._early is not None:
            self._early += data
            return
        if self.mux is None:
            return
        try:
            events = self.mux.received(data)
        except h2.exceptions.ProtocolError as exc:
            log.warn("agent {name}: HTTP/2 error, dropping it: {why}", name=self.name, why=exc)
            self.transport.abortConnection()
            return
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.close()

    def _hello(self, line: str, rest: bytes) -> None:
        if self._hello_timeout is not None and self._hello_timeout.active():
            self._hello_timeout.cancel()
        try:
            token = parse_hello(line)
        except ProtocolViolation as exc:
            self._refuse(str(exc))
            return
        # The token is checked through the hub's store calls (off the reactor thread with a
        # PostgreSQL store); what the agent sends meanwhile waits.
        self._early = bytearray(rest)
        checked = self.hub.check_token(token)
        checked.addCallbacks(self._welcome, self._not_welcome)

    def _welcome(self, record: AgentRecord) -> None:
        early, self._early = bytes(self._early or b""), None
        if self._lost:
            return
        self.name = record.name
        self.transport.write(encode_reply(name=record.name))
        self.mux = Multiplexer(self.transport.write, client_side=True)
        self.transport.registerProducer(self.mux, True)
        self._producing = True
        self.hub.attached(self)
        if early:
            self.dataReceived(early)

    def _not_welcome(self, failure: Failure) -> None:
        self._early = None
        if self._lost:
            return
        if failure.check(AuthenticationError):
            self._refuse(str(failure.value))
            return
        log.error(
            "agent connection from {address}: store error: {why}",
            address=self.address,
            why=failure.getErrorMessage(),
        )
        self._refuse("the gateway cannot check agent tokens now")

    def close(self) -> None:
        """Close the connection after what is queued (TLS closes only once no producer is
        registered, so the multiplexer stops being one first)."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _refuse(self, why: str) -> None:
        log.warn("agent connection from {address} refused: {why}", address=self.address, why=why)
        self.transport.write(encode_reply(error=why))
        self.transport.loseConnection()

    def ping(self) -> None:
        """Check the agent still answers; drop it after :data:`SILENCE_LIMIT` silent rounds."""
        if self.mux is None:
            return
        silent = self.hub.reactor.seconds() - self.heard
        if silent > SILENCE_LIMIT * self.hub.ping_interval:
            log.warn(
                "agent {name}: nothing heard for {s:.0f}s, dropping its connection",
                name=self.name,
                s=silent,
            )
            self.transport.abortConnection()
            return
        try:
            self.mux.h2.ping(b"hoopgw-p")
        except h2.exceptions.ProtocolError:
            return
        self.mux.flush()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Offline: the streams it carried end, and so do the sessions of its connections."""
        self._lost = True
        if self._hello_timeout is not None and self._hello_timeout.active():
            self._hello_timeout.cancel()
        if self.name is not None:
            self.hub.detached(self, reason.getErrorMessage())


class AgentConnector:
    """The upstream connector of a connection with ``via = "NAME"`` (see
    :class:`hoopgw.transport.UpstreamConnector`)."""

    def __init__(self, hub: AgentHub, name: str) -> None:
        self.hub = hub
        self.name = name

    def connect(
        self, host: str, port: int, proto: protocol.Protocol, *, timeout: float = CONNECT_TIMEOUT
    ) -> defer.Deferred[Any]:
        """Open a stream to ``host:port`` through the agent and connect ``proto`` to it.

        :return: fires with ``proto`` once the agent reached the target; fails with
            :class:`~hoopgw.errors.UpstreamUnavailable` saying why not (offline, refused by
            its allow-list, target unreachable from the agent).
        """
        link = self.hub.online.get(self.name)
        if link is None or link.mux is None:
            return defer.fail(UpstreamUnavailable(f"agent {self.name!r} is offline"))
        where = f"{host}:{port}"

        def refused(failure: Failure) -> Failure:
            if failure.check(StreamRefused):
                why = failure.getErrorMessage()
                log.warn(
                    "agent {name}: stream to {where} failed: {why}",
                    name=self.name,
                    where=where,
                    why=why,
                )
                raise UpstreamUnavailable(f"agent {self.name!r} could not open {where}: {why}")
            if failure.check(defer.TimeoutError):
                raise UpstreamUnavailable(
                    f"agent {self.name!r} did not open {where} within {timeout:g}s"
                )
            return failure

        opening = link.mux.open(host, port)
        opening.addTimeout(timeout, self.hub.reactor)
        opening.addCallback(lambda stream: self.hub.splice(self.hub.reactor, stream, proto))
        return opening.addErrback(refused)


class AgentHub:
    """Every agent connection of one gateway.

    :param tokens: checks agent tokens (and revocations) in the store.
    :param store: records each agent's state (``hoopgw agents list`` reads it); None for none.
    :param sessions: the gateway's live sessions, ended when their agent goes away.
    :param calls: runs the store reads and writes of the rounds and of each connect and loss
        (:meth:`hoopgw.store.calls.StoreCalls.call`, off the reactor thread with a PostgreSQL
        store); by default at once.
    """

    def __init__(
        self,
        *,
        tokens: AgentTokens,
        store: Any,
        reactor: Any,
        sessions: Iterable[Any],
        ping_interval: float = PING_INTERVAL,
        splice: Callable[[Any, Any, Any], Any] = splice,
        wall_clock: Callable[[], float] = time.time,
        calls: Callable[..., defer.Deferred[Any]] = defer.maybeDeferred,
    ) -> None:
        self.tokens = tokens
        self._calls = calls
        self._store_work: defer.Deferred[None] = defer.succeed(None)
        self.store = store
        self.reactor = reactor
        self.sessions = sessions
        self.ping_interval = ping_interval
        self.splice = splice
        self._wall_clock = wall_clock
        self.online: dict[str, AgentLink] = {}
        self._rounds: task.LoopingCall | None = None

    def factory(self) -> Any:
        """The factory of the agent listener (the gateway wraps it in TLS)."""
        factory: Any = protocol.Factory.forProtocol(lambda: AgentLink(self))
        factory.noisy = False
        return factory

    def connector(self, name: str) -> AgentConnector:
        """The upstream connector for connections with ``via = name``."""
        return AgentConnector(self, name)

    def start(self) -> None:
        """Ping the agents, and record their state, every ``ping_interval``."""
        self._rounds = task.LoopingCall(self._round)
        self._rounds.clock = self.reactor
        self._rounds.start(self.ping_interval, now=False)

    def stop(self) -> None:
        """Stop the rounds and close every agent connection."""
        if self._rounds is not None and self._rounds.running:
            self._rounds.stop()
        for link in list(self.online.values()):
            link.close()

    def check_registered(self, connection: str, name: str) -> None:
        """Warn (not fatal) when the connection's ``via`` names no registered agent: its
        sessions will be refused as offline until one is registered and connects."""
        try:
            record = self.store.get_agent(name) if self.store is not None else None
        except StoreError as exc:
            log.warn("cannot read agent {name}: {why}", name=name, why=exc)
            return
        if record is None:
            log.warn(
                "connection {connection}: agent {name} is not registered (hoopgw agents create"
                " {name}); its sessions are refused until it is and connects",
                connection=connection,
                name=name,
            )
        elif record.revoked_at is not None:
            log.warn(
                "connection {connection}: the token of agent {name} is revoked; its sessions"
                " are refused",
                connection=connection,
                name=name,
            )

    def _round(self) -> defer.Deferred[None]:
        links = dict(self.online)
        # The store is read and written through the calls; the links are acted on here.
        checked = self._in_order(self._revoked_and_seen, {n: k.address for n, k in links.items()})
        checked.addCallback(self._after_round, links)
        return checked.addErrback(lambda f: log.failure("the agents' round failed", f))

    def check_token(self, token: str) -> defer.Deferred[AgentRecord]:
        """The agent ``token`` belongs to, read through the calls; fails with
        :class:`~hoopgw.errors.AuthenticationError` (see :meth:`AgentTokens.authenticate`) or
        the store's error."""
        return self._calls(self.tokens.authenticate, token)

    def _in_order(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run ``fn`` through the calls once the store work asked for before it is done, so
        that an agent's states reach the store in the order they happened."""
        answer: defer.Deferred[Any] = defer.Deferred()

        def run(_: object) -> defer.Deferred[None]:
            done = self._calls(fn, *args, **kwargs)
            done.addBoth(answer.callback)
            return done.addBoth(lambda _: None)

        self._store_work.addCallback(run)
        return answer

    def _revoked_and_seen(self, addresses: dict[str, str | None]) -> set[str]:
        revoked = set()
        for name, address in addresses.items():
            try:
                record = self.store.get_agent(name) if self.store is not None else None
            except StoreError as exc:
                log.warn("agent {name}: cannot read its record: {why}", name=name, why=exc)
                record = None
            if record is not None and record.revoked_at is not None:
                revoked.add(name)
            else:
                self._seen(name, online=True, address=address)
        return revoked

    def _after_round(self, revoked: set[str], links: dict[str, AgentLink]) -> None:
        for name, link in links.items():
            if name in revoked:
                log.warn("agent {name}: its token was revoked, dropping it", name=name)
                link.close()
            elif self.online.get(name) is link:
                link.ping()

    def _record(self, name: str, *, online: bool, address: str | None) -> None:
        self._in_order(self._seen, name, online=online, address=address).addErrback(
            lambda f: log.failure("cannot record the state of agent {name}", f, name=name)
        )

    def _seen(self, name: str, *, online: bool, address: str | None) -> None:
        if self.store is None:
            return
        try:
            self.store.agent_seen(name, when=self._wall_clock(), online=online, address=address)
        except StoreError as exc:
            log.warn("agent {name}: cannot record its state: {why}", name=name, why=exc)

    def attached(self, link: AgentLink) -> None:
        """``link`` authenticated: it is the agent's connection now (a previous one is dropped)."""
        assert link.name is not None
        previous = self.online.get(link.name)
        self.online[link.name] = link
        if previous is not None:
            log.warn(
                "agent {name} connected again from {address}: dropping its previous connection",
                name=link.name,
                address=link.address,
            )
            previous.transport.abortConnection()
        log.info("agent {name} online from {address}", name=link.name, address=link.address)
        self._record(link.name, online=True, address=link.address)

    def detached(self, link: AgentLink, why: str) -> None:
        """``link`` ended: its streams end, and the sessions of its connections."""
        assert link.name is not None
        name = link.name
        current = self.online.get(name) is link
        if current:
            del self.online[name]
        reason = f"agent {name!r} lost its connection to the gateway"
        if current:
            for session in list(self.sessions):
                config = session.runtime.config
                if getattr(config, "via", None) == name and session.session_info is not None:
                    session.terminate(reason)
        if link.mux is not None:
            link.mux.connection_lost(reason)
        if current:
            log.warn("agent {name} offline: {why}", name=name, why=why)
            self._record(name, online=False, address=link.address)
