"""The agent's side: dial out to the gateway, keep the connection, open the streams it asks
for to the targets on the allow-list, and dial again with back-off when the connection ends.

The agent sends its token only after TLS has verified the gateway (its certificate chains to
``ca_file`` and carries ``server_name``, or its SHA-256 is ``pin``). Every stream request is
judged against the allow-list before any connection is made; a refusal is answered with the
reason and logged here too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import h2.events
import h2.exceptions
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet import defer, protocol, ssl, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.agent.allowlist import normalise_host
from hoopgw.agent.backoff import Backoff
from hoopgw.agent.config import AgentConfig
from hoopgw.agent.mux import MAX_STREAMS, Multiplexer, Pipe, Stream
from hoopgw.agent.wire import (
    STATUS_BAD_REQUEST,
    STATUS_BUSY,
    STATUS_UNREACHABLE,
    LineReader,
    ProtocolViolation,
    StreamRefused,
    encode_hello,
    parse_connect_request,
    parse_reply,
    stream_answer,
)
from hoopgw.transport import QuietFactory, set_no_delay

__all__ = ["AgentClient", "GatewayLink", "tls_creator"]

log = Logger(namespace="hoopgw.agent")

MAX_CONNECTING = MAX_STREAMS
"""Target connections one gateway connection may have being opened at once: a stream the
gateway resets leaves HTTP/2's stream limit at once, but its connection attempt goes on."""


def _sha256(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedTLS:
    """TLS 1.2+ to a gateway whose certificate has a pinned SHA-256 (a self-signed one, say)."""

    def __init__(self, server_name: str, pin: bytes) -> None:
        self._server_name = server_name
        self._pin = pin
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.set_verify(SSL.VERIFY_PEER, self._verify)

    def _verify(self, connection: Any, certificate: Any, errno: int, depth: int, ok: int) -> bool:
        # The pin replaces the chain check; only the gateway's own certificate (depth 0) counts.
        if depth != 0:
            return True
        der = certificate.to_cryptography().public_bytes(_DER)
        return hmac.compare_digest(_sha256(der), self._pin)

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        """A client connection with the pin check (Twisted's interface)."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        connection.set_tlsext_host_name(self._server_name.encode("idna"))
        connection.set_connect_state()
        return connection


_DER = Encoding.DER


def tls_creator(config: AgentConfig) -> Any:
    """How the agent checks the gateway: against ``ca_file`` and ``server_name``, or the pin."""
    if config.pin is not None:
        return _PinnedTLS(config.server_name, config.pin)
    assert config.ca_file is not None
    with open(config.ca_file, "rb") as f:
        trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(
        config.server_name,
        trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


@implementer(IHandshakeListener)
class GatewayLink(protocol.Protocol):
    """The agent's connection to the gateway."""

    transport: Any

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.name: str | None = None
        self.mux: Multiplexer | None = None
        self._reader: LineReader | None = LineReader()
        self._producing = False
        self.heard = 0.0
        self.connecting = 0
        """Target connections being opened for this link's streams."""

    def handshakeCompleted(self) -> None:
        """TLS verified the gateway: send the token."""
        if self.transport.disconnecting:
            return  # verification failed (the TLS layer aborts, then reports it)
        pin = self.client.config.pin
        if pin is not None:
            certificate = self.transport.getPeerCertificate()
            der = certificate.to_cryptography().public_bytes(_DER) if certificate else b""
            if not hmac.compare_digest(_sha256(der), pin):
                log.error("the gateway's certificate does not match the pin; not sending the token")
                self.transport.abortConnection()
                return
        self.heard = self.client.reactor.seconds()
        # Many small frames share this connection: Nagle's algorithm would hold them back.
        set_no_delay(self.transport)
        self.transport.write(encode_hello(self.client.config.token.reveal()))

    def dataReceived(self, data: bytes) -> None:
        """The gateway's reply first, then HTTP/2."""
        self.heard = self.client.reactor.seconds()
        if self._reader is not None:
            try:
                line = self._reader.feed(data)
                if line is None:
                    return
                self.name = parse_reply(line[0])
            except StreamRefused as exc:
                log.error("the gateway refused this agent: {why}", why=str(exc))
                self.transport.loseConnection()
                return
            except ProtocolViolation as exc:
                log.error("the gateway broke the agent protocol: {why}", why=str(exc))
                self.transport.abortConnection()
                return
            self._reader = None
            self.mux = Multiplexer(
                self.transport.write, client_side=False, on_request=self._requested
            )
            self.transport.registerProducer(self.mux, True)
            self._producing = True
            self.client.connected(self)
            data = line[1]
            if not data:
                return
        assert self.mux is not None
        try:
            events = self.mux.received(data)
        except h2.exceptions.ProtocolError as exc:
            log.error("HTTP/2 error from the gateway, reconnecting: {why}", why=exc)
            self.transport.abortConnection()
            return
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.close()

    def close(self) -> None:
        """Close the connection after what is queued (TLS closes only once no producer is
        registered, so the multiplexer stops being one first)."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _requested(self, stream: Stream, headers: list[tuple[str, str]]) -> None:
        assert self.mux is not None
        try:
            host, port = parse_connect_request(headers)
        except ValueError as exc:
            log.warn(
                "stream {id}: malformed request from the gateway: {why}", id=stream.id, why=exc
            )
            self.mux.answer(stream, stream_answer(str(exc), status=STATUS_BAD_REQUEST), end=True)
            return
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not self.client.config.allow.permits(host, port):
            log.warn("refused a stream to {where}: not on this agent's allow-list", where=where)
            self.mux.answer(
                stream, stream_answer(f"{where} is not on the agent's allow-list"), end=True
            )
            return
        # Connect to what was judged: "10.0.0.5." passes as 10.0.0.5 but would be resolved as a
        # name; "[10.0.0.5]" and upper case are no address or name a resolver takes as such.
        host = normalise_host(host)
        self.client.open_target(self, stream, host, port, where)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Cut the streams it carried and let the client dial again."""
        if self.mux is not None:
            self.mux.connection_lost("the connection to the gateway ended")
        self.client.lost(self, reason)


class AgentClient:
    """Keeps one connection to the gateway up, dialling again with back-off.

    :param dial: opens a connection with a protocol factory (default: TLS to the gateway);
        tests pass their own.
    :param connect_target: opens a TCP connection to a target with a protocol (default:
        :class:`HostnameEndpoint`); tests pass their own.
    """

    def __init__(
        self,
        config: AgentConfig,
        reactor: Any,
        *,
        backoff: Backoff | None = None,
        dial: Callable[[protocol.Factory], defer.Deferred[Any]] | None = None,
        connect_target: Callable[[str, int, protocol.Protocol], defer.Deferred[Any]] | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.backoff = backoff or Backoff(maximum=config.backoff_max)
        self._dial = dial or self._dial_gateway
        self._connect_target = connect_target or self._connect_tcp
        self.link: GatewayLink | None = None
        self._retry: Any = None
        self._watchdog: task.LoopingCall | None = None
        self._stopped = False
        self.attempts = 0

    def _dial_gateway(self, factory: protocol.Factory) -> defer.Deferred[Any]:
        endpoint: Any = HostnameEndpoint(
            self.reactor,
            self.config.gateway_host,
            self.config.gateway_port,
            timeout=self.config.connect_timeout,
        )
        tls_endpoint: Any = wrapClientTLS(tls_creator(self.config), endpoint)
        connecting: defer.Deferred[Any] = tls_endpoint.connect(factory)
        return connecting

    def _connect_tcp(self, host: str, port: int, proto: protocol.Protocol) -> defer.Deferred[Any]:
        endpoint: Any = HostnameEndpoint(
            self.reactor, host, port, timeout=self.config.connect_timeout
        )
        connecting: defer.Deferred[Any] = endpoint.connect(QuietFactory(proto))
        return connecting

    def start(self) -> None:
        """Dial now, and watch the connection for silence."""
        self._watchdog = task.LoopingCall(self._check_silence)
        self._watchdog.clock = self.reactor
        self._watchdog.start(self.config.silence_limit / 3, now=False)
        self._attempt()

    def stop(self) -> None:
        """Stop dialling and close the connection."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self.link is not None:
            self.link.close()

    def _attempt(self) -> None:
        self._retry = None
        if self._stopped:
            return
        self.attempts += 1
        factory = QuietFactory(GatewayLink(self))
        dialling = self._dial(factory)
        dialling.addErrback(self._dial_failed)

    def _dial_failed(self, failure: Failure) -> None:
        log.warn(
            "cannot reach the gateway at {host}:{port}: {why}",
            host=self.config.gateway_host,
            port=self.config.gateway_port,
            why=failure.getErrorMessage(),
        )
        self._schedule()

    def _schedule(self) -> None:
        if self._stopped or self._retry is not None:
            return
        delay = self.backoff.next_delay()
        log.info("dialling the gateway again in {delay:.1f}s", delay=delay)
        self._retry = self.reactor.callLater(delay, self._attempt)

    def _check_silence(self) -> None:
        link = self.link
        if link is None:
            return
        silent = self.reactor.seconds() - link.heard
        if silent > self.config.silence_limit:
            log.warn("nothing heard from the gateway for {s:.0f}s: reconnecting", s=silent)
            link.transport.abortConnection()

    def connected(self, link: GatewayLink) -> None:
        """The gateway welcomed the agent."""
        self.link = link
        self.backoff.reset()
        log.info(
            "connected to the gateway as agent {name}; {count} allow-list entr{ies}",
            name=link.name,
            count=len(self.config.allow.rules),
            ies="y" if len(self.config.allow.rules) == 1 else "ies",
        )

    def lost(self, link: GatewayLink, reason: Failure) -> None:
        """The connection ended: dial again after the back-off."""
        if link is self.link:
            self.link = None
            log.warn("connection to the gateway lost: {why}", why=reason.getErrorMessage())
        elif link.name is None and reason.check(SSL.Error):
            log.error("TLS with the gateway failed: {why}", why=reason.getErrorMessage())
        self._schedule()

    def open_target(
        self, link: GatewayLink, stream: Stream, host: str, port: int, where: str
    ) -> None:
        """Connect to an allowed target and join it to ``stream``."""
        if link.connecting >= MAX_CONNECTING:
            log.warn("stream to {where} refused: too many connections being opened", where=where)
            assert link.mux is not None
            answer = stream_answer("too many target connections being opened", status=STATUS_BUSY)
            link.mux.answer(stream, answer, end=True)
            return
        link.connecting += 1
        pipe = Pipe()
        connecting = self._connect_target(host, port, pipe)

        def settled(result: Any) -> Any:
            link.connecting -= 1
            return result

        connecting.addBoth(settled)

        def opened(_: Any) -> None:
            if link.mux is None or stream.closed:
                pipe.transport.loseConnection()
                return
            set_no_delay(pipe.transport)
            link.mux.answer(stream, stream_answer(), end=False)
            stream.attach(pipe)
            log.info("stream {id} open to {where}", id=stream.id, where=where)

        def failed(failure: Failure) -> None:
            why = failure.getErrorMessage()
            log.warn("stream to {where} failed: {why}", where=where, why=why)
            if link.mux is not None:
                answer = stream_answer(
                    f"cannot connect to {where}: {why}", status=STATUS_UNREACHABLE
                )
                link.mux.answer(stream, answer, end=True)

        connecting.addCallbacks(opened, failed)
