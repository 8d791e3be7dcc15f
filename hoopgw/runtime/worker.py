"""One worker process among ``[gateway] workers = N``: what it inherits from the supervising
parent (:mod:`hoopgw.runtime.workers`) and how it talks to it.

The parent hands each worker, as inherited file descriptors named in the environment variable
:data:`WORKER_ENV`:

- the listening sockets of the config (the parent bound them; every worker accepts on them);
- an *audit link*: a UNIX socket to the parent, which relays the worker's audit entries to the
  one audit writer process of the gateway and its answers back (the line protocol of
  :mod:`hoopgw.audit.process`, unchanged), so the gateway keeps one hash chain and one journal;
- a *control link*: a UNIX socket on which the worker asks the other workers, through the
  parent, to forward a PostgreSQL cancel request that names none of its own sessions.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

__all__ = ["WORKER_ENV", "SingleConnection", "WorkerLink", "worker_instance"]

log = Logger(namespace="hoopgw.worker")

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
        family = _family(fd)
        port = reactor.adoptStreamPort(fd, family, factory)
        os.close(fd)  # the reactor accepts on its own duplicate
        return port

    def audit_spawner(self) -> Callable[[protocol.ProcessProtocol, str, Any], Any]:
        """A ``spawn`` for :class:`~hoopgw.audit.writer.AuditWriter`: instead of starting a
        writer process, connect to the parent's relay to the gateway's one writer process."""

        def spawn(process_protocol: protocol.ProcessProtocol, store_url: str, reactor: Any) -> Any:
            relay = _AuditLinkProtocol(process_protocol)
            reactor.adoptStreamConnection(self.audit_fd, socket.AF_UNIX, SingleConnection(relay))
            os.close(self.audit_fd)
            return relay

        return spawn

    def connect_control(self, reactor: Any, cancel: Callable[[int, bytes], object]) -> ControlLink:
        """Open the control link; ``cancel(pid, secret)`` is called for each cancel request
        another worker passes on."""
        link = ControlLink(cancel)
        reactor.adoptStreamConnection(self.control_fd, socket.AF_UNIX, SingleConnection(link))
        os.close(self.control_fd)
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
    relay, what the relay answers arrives as the process's output, and the link's end as the
    process's end."""

    transport: Any

    def __init__(self, process_protocol: protocol.ProcessProtocol) -> None:
        self._process = process_protocol

    def writeSequence(self, lines: list[bytes]) -> None:
        """Send entry lines to the writer (the process transport's method)."""
        self.transport.writeSequence(lines)

    def closeStdin(self) -> None:
        """No more entries: the relay answers those sent, then closes the link."""
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self._process.outReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._process.processEnded(reason)


class ControlLink(LineOnlyReceiver):
    """The worker's side of the control link: JSON lines to and from the parent."""

    delimiter = b"\n"

    def __init__(self, cancel: Callable[[int, bytes], object]) -> None:
        self._cancel = cancel

    def ask_cancel(self, pid: int, secret: bytes) -> None:
        """Ask the other workers to forward the cancel request ``pid``/``secret`` (the one of
        them whose session it names does; the others ignore it)."""
        if self.transport is not None:
            self.sendLine(json.dumps({"op": "cancel", "pid": pid, "key": secret.hex()}).encode())

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if message.get("op") == "cancel":
                self._cancel(int(message["pid"]), bytes.fromhex(message["key"]))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable message from the parent process: {line!r}", line=line[:200])

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.transport = None
