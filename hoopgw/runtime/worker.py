"""One worker process among ``[gateway] workers = N``: what it inherits from the supervising
parent (:mod:`hoopgw.runtime.workers`) and how it talks to it.

The parent hands each worker, as inherited file descriptors named in the environment variable
:data:`WORKER_ENV`:

- worker 1: the admin API's listening socket (the parent bound it);
- an *audit link*: a UNIX socket to the gateway's one audit writer process, which the parent
  started (:mod:`hoopgw.runtime.shared_writer`), speaking the line protocol of
  :mod:`hoopgw.audit.process`, so the gateway keeps one hash chain and one journal;
- a *control link*: a UNIX socket on which the parent passes it client connections (the
  parent accepts them: :mod:`hoopgw.runtime.handoff`) and the worker reports how many it holds;
  the worker asks the other workers, through the parent, to forward a PostgreSQL cancel
  request that names none of its own sessions, and publishes its live sessions and metrics
  for worker 1's admin API; the parent asks it to reload the config (the worker answers with
  the result) and to stop, and its end (the parent died) stops the worker.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.admin.metrics import GatewayMetrics, families
from hoopgw.admin.sessions import describe_session
from hoopgw.errors import ReloadError, StartupError
from hoopgw.runtime.registry import SessionRegistry

__all__ = [
    "WORKER_ENV",
    "ControlLink",
    "SingleConnection",
    "WorkerLink",
    "local_address",
    "worker_instance",
]

log = Logger(namespace="hoopgw.worker")

PUBLISH_INTERVAL = 0.5
"""Seconds between looks at whether a worker's live sessions or metrics changed (worker 1's
list of the others' sessions, and their samples on ``/metrics``, are at most this old)."""

_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""Why a worker cannot take a passed client: out of descriptors or memory."""

WORKER_ENV = "HOOPGW_WORKER"
"""Environment variable that tells ``hoopgw run`` it is worker ``index`` of a supervising
parent, and which inherited descriptors are its listeners and links (JSON)."""


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class WorkerLink:
    """What a worker process inherited from its parent."""

    index: int
    """The worker's number, from 1."""
    instance: str
    """The worker's id among gateway processes sharing the store: owner of the reviews it
    holds (``w1``, or ``INSTANCE/w1`` with a PostgreSQL store's ``[gateway] instance``)."""
    listeners: Mapping[str, int]
    """Listen description (as in the config) -> inherited listening socket: the admin API's,
    for worker 1."""
    audit_fd: int
    """The audit link to the parent."""
    control_fd: int
    """The control link to the parent."""
    serves_admin: bool
    """Whether this worker serves the admin API (worker 1 only)."""
    passed: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    """Listen descriptions of the connections whose clients the parent accepts and passes on
    the control link."""

    def to_env(self) -> str:
        """The value of :data:`WORKER_ENV` that :meth:`from_env` reads back."""
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WorkerLink | None:
        """The link this process inherited, or None when it is not a worker."""
        text = environ.get(WORKER_ENV)
        if not text:
            return None
        return cls(**json.loads(text))

    def listen(
        self, reactor: Any, control: ControlLink, description: str, factory: Any, what: str
    ) -> defer.Deferred[Any]:
        """Serve ``factory`` on the listener ``description`` the parent bound: the clients it
        passes on ``control``, or the inherited socket (the admin API's).

        :raises StartupError: (as the Deferred's failure) the parent bound no such listener.
        """
        if description in self.passed:
            return defer.succeed(control.listen(description, factory))
        if description in self.listeners:
            return defer.succeed(self.adopt_port(reactor, description, factory))
        # The parent bound the listeners at start; a worker cannot bind a new one.
        return defer.fail(
            StartupError(
                f"{what} cannot listen on {description}: workers serve the listeners"
                " the gateway started with; restart it to listen on a new address"
            )
        )

    def adopt_port(self, reactor: Any, description: str, factory: Any) -> Any:
        """Accept on the inherited listening socket of ``description`` with ``factory``.

        :raises KeyError: the parent bound no socket for ``description``.
        """
        fd = self.listeners[description]
        # The reactor accepts on its own duplicate; the inherited descriptor stays open for
        # the life of the worker, so a reload that lets the listener go and takes it again
        # (a renamed connection) adopts the parent's socket, never a reused number.
        return reactor.adoptStreamPort(fd, _family(fd), factory)

    def audit_spawner(self) -> Callable[[protocol.ProcessProtocol, str, Any], Any]:
        """A ``spawn`` for :class:`~hoopgw.audit.writer.AuditWriter`: instead of starting a
        writer process, talk to the gateway's one writer process on the inherited link."""

        def spawn(process_protocol: protocol.ProcessProtocol, store_url: str, reactor: Any) -> Any:
            link = _AuditLinkProtocol(process_protocol)
            reactor.adoptStreamConnection(self.audit_fd, socket.AF_UNIX, SingleConnection(link))
            os.close(self.audit_fd)
            return link

        return spawn

    def connect_control(
        self,
        reactor: Any,
        sessions: SessionRegistry,
        *,
        reload: Callable[[str], defer.Deferred[Any]],
        metrics: GatewayMetrics,
        digest: Callable[[], str] = str,
    ) -> ControlLink:
        """Open the control link for the live sessions ``sessions``: cancel requests and
        session ends other workers pass on reach them, and (but in worker 1) they and
        ``metrics`` are published; the parent's reloads run ``reload(by)`` (answered with
        ``digest()``, the config file's digest then). From now on the
        worker stops when the parent says so or is gone, and ignores SIGTERM, SIGINT and
        SIGHUP."""
        link = ControlLink(
            sessions, self.index, reactor, reload=reload, metrics=metrics, digest=digest
        )
        reactor.adoptStreamConnection(self.control_fd, socket.AF_UNIX, SingleConnection(link))
        # The parent decides when workers stop and reload: a signal sent to the whole process
        # group (systemd's default, a terminal, pkill) must not make each act on its own (a
        # reload the parent did not ask for would not be reported, nor the workers kept alike).
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        os.close(self.control_fd)
        sessions.ask_peers = link.ask_cancel
        sessions.tell_peers_matched = link.cancel_matched
        if self.serves_admin:
            metrics.serve_workers(self.index, link.peer_metrics)
        else:
            link.publish_sessions(reactor)
        return link


def worker_instance(instance: str, index: int) -> str:
    """The id of worker ``index`` of the gateway instance ``instance`` (``""`` with SQLite)."""
    return f"{instance}/w{index}" if instance else f"w{index}"


def local_address(fd: int) -> str:
    """The local address of the socket ``fd`` as the parent and a worker compare it: a passed
    client's, which tells its listener apart from the others'."""
    sock = socket.socket(fileno=fd)
    try:
        return repr(sock.getsockname())
    finally:
        sock.detach()


def _family(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    try:
        return int(sock.family)
    finally:
        sock.detach()


class SingleConnection(protocol.Factory):
    """A factory for exactly one adopted connection, with its protocol made in advance."""

    noisy = False

    def __init__(self, made: protocol.Protocol) -> None:
        self._made = made

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self._made


class _AuditLinkProtocol(protocol.Protocol):
    """The worker's side of the audit link, shaped as the writer process's transport and
    pipes for :class:`~hoopgw.audit.writer.AuditWriter`: what it writes goes to the parent's
    writer, what it answers arrives as the process's output, and the link's end as the
    process's end."""

    transport: Any

    def __init__(self, process_protocol: protocol.ProcessProtocol) -> None:
        self._process = process_protocol

    def writeSequence(self, lines: list[bytes]) -> None:
        """Send entry lines to the writer (the process transport's method)."""
        self.transport.writeSequence(lines)

    def closeStdin(self) -> None:
        """No more entries: the writer answers those sent, then closes the link."""
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self._process.outReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._process.processEnded(reason)


class PassedListener:
    """A connection's listener in a worker: the clients the parent passes for it reach
    ``factory`` (a reload may let it go, and take it again, as a port)."""

    def __init__(self, link: ControlLink, description: str, factory: Any) -> None:
        self._link = link
        self.description = description
        self.factory = factory

    def stopListening(self) -> None:
        """Clients passed for this listener from now on are closed."""
        self._link.unlisten(self)


class _Counted(protocol.Factory):
    """Builds one passed client's protocol with ``factory`` and tells the control link when
    its connection ends (the parent counts each worker's live connections)."""

    noisy = False

    def __init__(self, factory: Any, ended: Callable[[], None]) -> None:
        self._factory = factory
        self._ended = ended

    def buildProtocol(self, addr: Any) -> Any:
        built = self._factory.buildProtocol(addr)
        if built is None:
            self._ended()
            return None
        lost = built.connectionLost

        # On the instance, not by wrapping the protocol: a wrapper would sit on every byte of
        # the session; this runs once, when the transport reports the end.
        def connection_lost(reason: Failure = protocol.connectionDone) -> Any:
            self._ended()
            return lost(reason)

        built.connectionLost = connection_lost
        return built


@implementer(IFileDescriptorReceiver)
class ControlLink(LineOnlyReceiver):
    """The worker's side of the control link: JSON lines to and from the parent.

    The parent passes client connections (a descriptor, then a ``connection`` line naming its
    listener); the worker reports ``load`` (passed connections taken and ended) at each change.
    Every worker but the first publishes its live sessions and metrics (when they change, at
    most every :data:`PUBLISH_INTERVAL` seconds); the parent passes them to worker 1, whose
    admin API lists them beside its own and ends them through the parent (a
    :class:`PeerSessions`), and whose ``/metrics`` shows them.
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 << 20

    def __init__(
        self,
        sessions: SessionRegistry,
        index: int,
        reactor: Any,
        *,
        reload: Callable[[str], defer.Deferred[Any]] | None = None,
        metrics: GatewayMetrics | None = None,
        digest: Callable[[], str] = str,
    ) -> None:
        self._sessions = sessions
        self._digest = digest
        """The digest of the config file the worker runs (sent with a reload applied)."""
        self._index = index
        self._reactor = reactor
        self._reload = reload
        self._metrics = metrics
        self._remote: dict[int, list[dict[str, Any]]] = {}
        self._remote_metrics: dict[int, list[dict[str, Any]]] = {}
        self._published: list[dict[str, Any]] | None = None
        self._published_metrics: list[dict[str, Any]] | None = None
        self._publisher: task.LoopingCall | None = None
        self._descriptors: collections.deque[int] = collections.deque()
        # Description -> its listeners, oldest first: the oldest serves. A reload takes a
        # listener's address again before it commits (a renamed connection) and lets the old
        # one go after, or the new one if it fails.
        self._listeners: dict[str, list[PassedListener]] = {}
        self._taken = 0
        self._ended = 0
        self._lost = 0
        """Passed clients lost for want of descriptors (the parent avoids this worker a while
        after each)."""
        self._reloading: defer.Deferred[Any] | None = None

    # -- asked by this worker ----------------------------------------------------------------

    def listen(self, description: str, factory: Any) -> PassedListener:
        """Serve the clients the parent passes for the listener ``description`` with
        ``factory`` (until the listener's ``stopListening``)."""
        listener = PassedListener(self, description, factory)
        self._listeners.setdefault(description, []).append(listener)
        return listener

    def unlisten(self, listener: PassedListener) -> None:
        """Let ``listener`` go."""
        listeners = self._listeners.get(listener.description, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(listener.description, None)

    def started(self, digest: str) -> None:
        """The gateway serves its listeners, with the config file whose digest is ``digest``:
        the parent may pass it clients (if the other workers run that file too)."""
        self._send({"op": "ready", "digest": digest})

    def ask_cancel(self, pid: int, secret: bytes, client_address: str = "") -> None:
        """Ask the other workers to forward the cancel request ``pid``/``secret`` from
        ``client_address`` (the one of them whose session it names does; the others count
        the miss against the address: :meth:`SessionRegistry.cancel_for_peer`)."""
        self._send({"op": "cancel", "pid": pid, "key": secret.hex(), "from": client_address})

    def cancel_matched(self, client_address: str) -> None:
        """Tell the other workers that a cancel request from ``client_address`` they passed
        on or counted matched a session here (:meth:`SessionRegistry.peer_matched`)."""
        self._send({"op": "cancel_matched", "from": client_address})

    def sessions(self) -> list[tuple[int, dict[str, Any]]]:
        """See :meth:`hoopgw.admin.sessions.PeerSessions.sessions`."""
        return [(k, shown) for k, listed in sorted(self._remote.items()) for shown in listed]

    def peer_metrics(self) -> dict[int, list[dict[str, Any]]]:
        """The other workers' metrics as they last published them, by worker."""
        return dict(self._remote_metrics)

    def terminate(self, worker: int, session_id: str, reason: str) -> None:
        """See :meth:`hoopgw.admin.sessions.PeerSessions.terminate`."""
        self._send({"op": "terminate", "worker": worker, "id": session_id, "reason": reason})

    def reload_all(self, by: str) -> defer.Deferred[dict[str, Any]]:
        """Ask the parent to reload every worker (worker 1's admin API); fires with the
        result the parent summed up, or fails with :class:`~hoopgw.errors.ReloadError`."""
        if self._reloading is not None:
            return defer.fail(ReloadError("another reload is being applied; try again"))
        if self.transport is None:
            return defer.fail(ReloadError("the parent process is gone; nothing reloaded"))
        self._reloading = defer.Deferred()
        self._send({"op": "reload", "by": by})
        return self._reloading

    def publish_sessions(self, reactor: Any) -> None:
        """Send this worker's live sessions and metrics to the parent whenever they change."""
        self._publisher = task.LoopingCall(self._publish)
        self._publisher.clock = reactor
        self._publisher.start(PUBLISH_INTERVAL)

    # -- from the parent ---------------------------------------------------------------------

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """A client connection the next ``connection`` line names the listener of."""
        # The parent's accept left it blocking (the flag travels with the descriptor): a
        # reactor's blocking send would stall every session of this worker on one slow client.
        os.set_blocking(descriptor, False)
        os.set_inheritable(descriptor, False)
        self._descriptors.append(descriptor)

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            op = message.get("op")
            if op == "connection":
                self._connection(str(message["listen"]), str(message["local"]))
            elif op == "cancel":
                self._sessions.cancel_for_peer(
                    int(message["pid"]), bytes.fromhex(message["key"]), str(message.get("from", ""))
                )
            elif op == "cancel_matched":
                self._sessions.peer_matched(str(message["from"]))
            elif op == "sessions":
                self._remote[int(message["worker"])] = list(message["sessions"])
            elif op == "metrics":
                self._remote_metrics[int(message["worker"])] = list(message["families"])
            elif op == "stop":
                self._stop("the parent process asks")
            elif op == "terminate":
                # The full id, from this worker's own list: it names one session.
                for session in self._sessions.find(str(message["id"])):
                    session.terminate(str(message["reason"]))
            elif op == "reload":
                self._reload_here(int(message["id"]), str(message["by"]))
            elif op == "reload_result":
                self._reload_answered(message)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            log.error("unreadable message from the parent process: {line!r}", line=line[:200])

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._publisher is not None and self._publisher.running:
            self._publisher.stop()
        self.transport = None
        while self._descriptors:
            os.close(self._descriptors.popleft())
        if self._reloading is not None:
            reloading, self._reloading = self._reloading, None
            reloading.errback(ReloadError("the parent process is gone; the result is unknown"))
        # No parent: nobody would restart or stop this worker, nor pass its cancel requests.
        self._stop("the parent process is gone")

    def _connection(self, description: str, local: str) -> None:
        """A client the parent accepted on ``description`` (its socket's local address
        ``local``): serve it (or close it, when a reload let that listener go)."""
        self._taken += 1
        if not self._descriptors:
            # The kernel dropped its descriptor (this worker was out of them): the parent
            # closes its copy once this is reported taken, and passes the next clients to
            # the others a while.
            self._ended += 1
            self._lost += 1
            log.error("a client passed for {listen} came without descriptor", listen=description)
            self._report_load()
            return
        descriptor = self._descriptors.popleft()
        try:
            listeners = self._listeners.get(description)
            if local_address(descriptor) != local:
                # Not the client of this line: a descriptor of an earlier line was dropped
                # and this one came early. Served here, a client of one listener would be
                # served with another's connection.
                self._ended += 1
                self._lost += 1
                log.error("a client passed for {listen} is not its own: closed", listen=description)
            elif not listeners:
                self._ended += 1
            else:
                counted = _Counted(listeners[0].factory, self._connection_ended)
                self._reactor.adoptStreamConnection(descriptor, _family(descriptor), counted)
        except Exception as exc:
            # As a listening port does: this client is lost, the worker serves on. A client
            # that reset before it was taken has no peer address (ENOTCONN): an error out of
            # this line would close the control link and end the worker, and the parent would
            # pass the same descriptor to the next worker.
            self._ended += 1
            if isinstance(exc, OSError) and exc.errno in _EXHAUSTED:
                self._lost += 1
            log.failure("cannot serve a client passed for {listen}", listen=description)
        finally:
            os.close(descriptor)  # the reactor serves its own duplicate
            self._report_load()

    def _connection_ended(self) -> None:
        self._ended += 1
        self._report_load()

    def _report_load(self) -> None:
        load = {"op": "load", "taken": self._taken, "ended": self._ended, "lost": self._lost}
        self._send(load)

    def _reload_here(self, reload_id: int, by: str) -> None:
        """The parent asks this worker to reload: answer with the result."""

        def applied(result: dict[str, Any]) -> None:
            answer = {"op": "reloaded", "id": reload_id, "ok": True, "result": result}
            self._send({**answer, "digest": self._digest()})

        def refused(failure: Failure) -> None:
            why = failure.getErrorMessage() if failure.check(ReloadError) else repr(failure.value)
            self._send({"op": "reloaded", "id": reload_id, "ok": False, "error": why})

        if self._reload is None:
            refused(Failure(ReloadError("this worker cannot reload")))
            return
        defer.maybeDeferred(self._reload, by).addCallbacks(applied, refused)

    def _reload_answered(self, message: dict[str, Any]) -> None:
        """The parent's summary of a reload worker 1's admin API asked for."""
        reloading, self._reloading = self._reloading, None
        if reloading is None:
            return
        if message["ok"]:
            reloading.callback(dict(message["result"]))
        else:
            reloading.errback(ReloadError(str(message["error"])))

    def _stop(self, why: str) -> None:
        if self._reactor.running:
            log.info("worker {index} stopping: {why}", index=self._index, why=why)
            self._reactor.stop()

    def _publish(self) -> None:
        shown = [
            describe_session(s, self._sessions.held_statement(s.session_info.id))
            for s in self._sessions
            if s.session_info is not None
        ]
        if shown != self._published:
            self._published = shown
            self._send({"op": "sessions", "worker": self._index, "sessions": shown})
        if self._metrics is not None:
            found = families(self._metrics.registry)
            if found != self._published_metrics:
                self._published_metrics = found
                self._send({"op": "metrics", "worker": self._index, "families": found})

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.sendLine(json.dumps(message).encode())
