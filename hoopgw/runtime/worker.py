"""One worker process among ``[gateway] workers = N``: what it inherits from the supervising
parent (:mod:`hoopgw.runtime.workers`) and how it talks to it.

The parent hands each worker, as inherited file descriptors named in the environment variable
:data:`WORKER_ENV`:

- the listening sockets of the config (the parent bound them; every worker accepts on them);
- an *audit link*: a UNIX socket to the gateway's one audit writer process, which the parent
  started (:mod:`hoopgw.runtime.shared_writer`), speaking the line protocol of
  :mod:`hoopgw.audit.process`, so the gateway keeps one hash chain and one journal;
- a *control link*: a UNIX socket on which the worker asks the other workers, through the
  parent, to forward a PostgreSQL cancel request that names none of its own sessions, and
  publishes its live sessions for worker 1's admin API; the parent tells it to stop on it, and
  its end (the parent died) stops the worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet import protocol, task
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from hoopgw.admin.sessions import describe_session
from hoopgw.runtime.registry import SessionRegistry

__all__ = ["WORKER_ENV", "SingleConnection", "WorkerLink", "worker_instance"]

log = Logger(namespace="hoopgw.worker")

PUBLISH_INTERVAL = 0.5
"""Seconds between looks at whether a worker's live sessions changed (worker 1's list of the
others' sessions is at most this old)."""

WORKER_ENV = "HOOPGW_WORKER"
"""Environment variable that tells ``hoopgw run`` it is worker ``index`` of a supervising
parent, and which inherited descriptors are its listeners and links (JSON)."""


@attrs.frozen(kw_only=True)
class WorkerLink:
    """What a worker process inherited from its parent."""

    index: int
    """The worker's number, from 1."""
    instance: str
    """The worker's id among gateway processes sharing the store: owner of the reviews it
    holds (``w1``, or ``INSTANCE/w1`` with a PostgreSQL store's ``[gateway] instance``)."""
    listeners: Mapping[str, int]
    """Listen description (as in the config) -> inherited listening socket."""
    audit_fd: int
    """The audit link to the parent."""
    control_fd: int
    """The control link to the parent."""
    serves_admin: bool
    """Whether this worker serves the admin API (worker 1 only)."""

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

    def connect_control(self, reactor: Any, sessions: SessionRegistry) -> ControlLink:
        """Open the control link for the live sessions ``sessions``: cancel requests and
        session ends other workers pass on reach them, and (but in worker 1) they are
        published. From now on the worker stops when the parent says so or is gone, and
        ignores SIGTERM and SIGINT."""
        link = ControlLink(sessions, self.index, reactor)
        reactor.adoptStreamConnection(self.control_fd, socket.AF_UNIX, SingleConnection(link))
        # The parent decides when workers stop: SIGTERM or Ctrl-C sent to the whole process
        # group (systemd's default, a terminal) must not make each stop on its own.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.close(self.control_fd)
        sessions.ask_peers = link.ask_cancel
        sessions.tell_peers_matched = link.cancel_matched
        if not self.serves_admin:
            link.publish_sessions(reactor)
        return link


def worker_instance(instance: str, index: int) -> str:
    """The id of worker ``index`` of the gateway instance ``instance`` (``""`` with SQLite)."""
    return f"{instance}/w{index}" if instance else f"w{index}"


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


class ControlLink(LineOnlyReceiver):
    """The worker's side of the control link: JSON lines to and from the parent.

    Every worker but the first publishes its live sessions (when they change, at most every
    :data:`PUBLISH_INTERVAL` seconds); the parent passes them to worker 1, whose admin API lists
    them beside its own and ends them through the parent (a :class:`PeerSessions`).
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 << 20

    def __init__(self, sessions: SessionRegistry, index: int, reactor: Any) -> None:
        self._sessions = sessions
        self._index = index
        self._reactor = reactor
        self._remote: dict[int, list[dict[str, Any]]] = {}
        self._published: list[dict[str, Any]] | None = None
        self._publisher: task.LoopingCall | None = None

    # -- asked by this worker ----------------------------------------------------------------

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

    def terminate(self, worker: int, session_id: str, reason: str) -> None:
        """See :meth:`hoopgw.admin.sessions.PeerSessions.terminate`."""
        self._send({"op": "terminate", "worker": worker, "id": session_id, "reason": reason})

    def publish_sessions(self, reactor: Any) -> None:
        """Send this worker's live sessions to the parent whenever they change."""
        self._publisher = task.LoopingCall(self._publish)
        self._publisher.clock = reactor
        self._publisher.start(PUBLISH_INTERVAL)

    # -- from the parent ---------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            op = message.get("op")
            if op == "cancel":
                self._sessions.cancel_for_peer(
                    int(message["pid"]), bytes.fromhex(message["key"]), str(message.get("from", ""))
                )
            elif op == "cancel_matched":
                self._sessions.peer_matched(str(message["from"]))
            elif op == "sessions":
                self._remote[int(message["worker"])] = list(message["sessions"])
            elif op == "stop":
                self._stop("the parent process asks")
            elif op == "terminate":
                # The full id, from this worker's own list: it names one session.
                for session in self._sessions.find(str(message["id"])):
                    session.terminate(str(message["reason"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("unreadable message from the parent process: {line!r}", line=line[:200])

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._publisher is not None and self._publisher.running:
            self._publisher.stop()
        self.transport = None
        # No parent: nobody would restart or stop this worker, nor pass its cancel requests.
        self._stop("the parent process is gone")

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

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.sendLine(json.dumps(message).encode())
