"""``[gateway] workers = N``: a supervising parent process and N gateway worker processes.

The parent binds every listener of the config once (the connections' and the admin API's) and
hands the listening sockets to each worker as inherited descriptors; every worker accepts on
them (Twisted's ``adoptStreamPort``), so the kernel's one accept queue per listener feeds
whichever worker is free. Inherited sockets rather than ``SO_REUSEPORT``: a worker that
crashes leaves the connections still queued to the others instead of resetting them (with
``SO_REUSEPORT`` each socket has its own queue), bind errors and ``port 0`` are settled once
in the parent, and no other process of the same user can bind into the group.

What stays single, and where (docs/deploy.md, "Several workers on one host"):

- **the audit chain**: one writer process, started by the parent, which hands it a socket to
  each worker (:mod:`hoopgw.runtime.shared_writer`): one journal and one hash chain, so
  ``hoopgw audit verify``, search and evidence see one chain as with one process;
- **cancel requests** (PostgreSQL): the worker that gets one and holds no session with that key
  asks the others through the parent (a control link per worker); the worker that holds it
  forwards it, with the target's secret only it knows; a wrong secret matches nothing;
- **reviews**: each worker holds its own (owner id ``w<k>`` in the store, as several instances
  do) and looks at them every second, so a hold on one worker decided through the admin API of
  another is released where it waits;
- **login back-off**: counted in the store, as with several instances;
- **the admin API** (and ``/metrics``): served by worker 1 alone. The other workers publish
  their live sessions to it through the parent (at most
  :data:`~hoopgw.runtime.worker.PUBLISH_INTERVAL` old), so ``hoopgw sessions live`` lists
  every worker's, and ``kill`` ends a session on the worker that holds it, the record written
  first; revoked keys and grants end sessions on every worker, each checking the store as
  separate instances do.

The parent restarts a worker that ends unexpectedly (after 1 s, doubling to 30 s while it keeps
failing fast), ends every worker on SIGTERM or SIGINT, and forwards SIGHUP to each. If the
audit writer process ends, nothing can be recorded: the parent stops the gateway (exit 1).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from hoopgw.audit.writer import spawn_writer_process
from hoopgw.config.load import Config
from hoopgw.errors import HoopgwError, StartupError
from hoopgw.runtime.shared_writer import SharedWriter
from hoopgw.runtime.worker import WORKER_ENV, SingleConnection, WorkerLink, worker_instance

__all__ = ["Supervisor", "run_supervisor"]

log = Logger(namespace="hoopgw.workers")

RESTART_DELAY = 1.0
"""Seconds before a worker that ended unexpectedly is started again (doubling while it keeps
failing within :data:`STABLE_AFTER` seconds, up to :data:`MAX_RESTART_DELAY`)."""
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
"""A worker that ran this long before it ended is restarted after :data:`RESTART_DELAY` again."""
STOP_MARGIN = 10.0
"""Seconds beyond ``shutdown_grace`` a worker gets to end on SIGTERM before it is killed."""


class _Worker:
    """One worker slot: its process (while it runs) and its restart back-off."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.control: _Control | None = None
        self.started_at = 0.0
        self.delay = RESTART_DELAY
        self.ended: defer.Deferred[None] | None = None
        self.timer: Any = None

    def send(self, line: bytes) -> None:
        """Send a line on the control link, if the worker runs."""
        if self.control is not None and self.control.transport is not None:
            self.control.sendLine(line)


class Supervisor:
    """Binds the listeners, runs the shared audit writer and keeps N workers running."""

    def __init__(self, config: Config, config_path: str, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self._config_path = config_path
        self._ports: dict[str, Any] = {}
        self._workers = [_Worker(k) for k in range(1, config.gateway.workers + 1)]
        self._writer: SharedWriter | None = None
        self._stopping = False
        self._published: dict[int, bytes] = {}  # worker -> its latest list of live sessions
        self.exit_code = 0

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Bind every listener, start the audit writer, then the workers."""
        gw = self.config.gateway
        try:
            for what, description in self._listen_descriptions():
                self._ports[description] = yield self._bind(description, what)
            settings = None
            if gw.signing_key is not None:
                from hoopgw.audit.writer import CheckpointSettings

                settings = CheckpointSettings(
                    directory=str(self.config.chain_checkpoint_path(gw.instance)),
                    every=gw.checkpoint_every,
                    interval=gw.checkpoint_interval,
                    signing_key=gw.signing_key,
                )
            spawn = functools.partial(
                spawn_writer_process,
                checkpoints=settings,
                durability=gw.durability,
                instance=gw.instance,
                journal=self.config.journal_path,
            )
            self._writer = SharedWriter(
                spawn, self.config.store_url, self.reactor, self._writer_lost
            )
            yield self._writer.start()
        except BaseException:
            self._close_ports()
            raise
        for worker in self._workers:
            self._spawn(worker)
        log.info("supervising {count} workers", count=len(self._workers))

    def _listen_descriptions(self) -> list[tuple[str, str]]:
        found = [(f"connection {c.name!r}", c.listen) for c in self.config.connections]
        if self.config.gateway.admin_listen is not None:
            found.append(("the admin API", self.config.gateway.admin_listen))
        return found

    def _bind(self, description: str, what: str) -> defer.Deferred[Any]:
        """Listen on ``description`` without accepting: the workers accept."""

        def bound(port: Any) -> Any:
            port.stopReading()
            return port

        def failed(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, CannotListenError):
                why = error.socketError
                reason = getattr(why, "strerror", None) or str(why)
                raise StartupError(f"{what} cannot listen on {description}: {reason}")
            return failure

        factory = protocol.Factory.forProtocol(protocol.Protocol)
        factory.noisy = False
        listening = serverFromString(self.reactor, description).listen(factory)
        return listening.addCallbacks(bound, failed)

    # -- workers -----------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        assert self._writer is not None
        worker.timer = None
        audit_child = self._writer.link()
        control_parent, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        listeners = {}
        fd = 3
        for description, port in self._ports.items():
            child_fds[fd] = port.fileno()
            listeners[description] = fd
            fd += 1
        child_fds[fd] = audit_child.fileno()
        child_fds[fd + 1] = control_child.fileno()
        gw = self.config.gateway
        link = WorkerLink(
            index=worker.index,
            instance=worker_instance(gw.instance, worker.index),
            listeners=listeners,
            audit_fd=fd,
            control_fd=fd + 1,
            serves_admin=worker.index == 1,
        )
        env = dict(os.environ)
        env[WORKER_ENV] = link.to_env()
        argv = [sys.executable, "-m", "hoopgw", "run", "-c", self._config_path]
        worker.ended = defer.Deferred()
        worker.started_at = self.reactor.seconds()
        try:
            worker.process = self.reactor.spawnProcess(
                _WorkerProcess(self, worker), sys.executable, argv, env=env, childFDs=child_fds
            )
        finally:
            audit_child.close()
            control_child.close()
        worker.control = _Control(self, worker)
        self.reactor.adoptStreamConnection(
            control_parent.detach(), socket.AF_UNIX, SingleConnection(worker.control)
        )
        if worker.index == 1:  # a new admin worker: the others' sessions as last published
            for line in self._published.values():
                worker.send(line)
        log.info("worker {index} started (pid {pid})", index=worker.index, pid=worker.process.pid)

    def _worker_ended(self, worker: _Worker, reason: Failure) -> None:
        worker.process = None
        control, worker.control = worker.control, None
        transport: Any = None if control is None else control.transport
        if transport is not None:
            transport.loseConnection()
        if worker.index in self._published:  # its sessions ended with it
            self._published[worker.index] = json.dumps(
                {"op": "sessions", "worker": worker.index, "sessions": []}
            ).encode()
            self._workers[0].send(self._published[worker.index])
        ended, worker.ended = worker.ended, None
        if ended is not None:
            ended.callback(None)
        if self._stopping:
            log.info("worker {index} ended", index=worker.index)
            return
        ran = self.reactor.seconds() - worker.started_at
        worker.delay = RESTART_DELAY if ran >= STABLE_AFTER else worker.delay
        log.error(
            "worker {index} ended unexpectedly ({why}); starting it again in {delay:g} s",
            index=worker.index,
            why=reason.getErrorMessage(),
            delay=worker.delay,
        )
        worker.timer = self.reactor.callLater(worker.delay, self._spawn, worker)
        worker.delay = min(worker.delay * 2, MAX_RESTART_DELAY)

    def _route(self, sender: _Worker, line: bytes) -> None:
        """A message on a worker's control link: pass it where it goes."""
        try:
            message = json.loads(line)
            op = message["op"]
            if op in ("cancel", "cancel_matched"):
                # The sender holds no session with that key: the others may (or, matched:
                # the others counted it as a miss).
                for worker in self._workers:
                    if worker is not sender:
                        worker.send(line)
            elif op == "sessions":
                # Stamped with the sender: its sessions are listed, and ended, as its own.
                message["worker"] = sender.index
                line = json.dumps(message).encode()
                self._published[sender.index] = line
                self._workers[0].send(line)
            elif op == "terminate" and sender.index == 1:  # the admin API's worker only
                target = int(message["worker"])
                if not 1 <= target <= len(self._workers):
                    raise IndexError(target)
                self._workers[target - 1].send(line)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("unreadable message from worker {index}", index=sender.index)

    def hang_up(self) -> None:
        """SIGHUP: pass it on to every worker (each reloads its own config)."""
        for worker in self._workers:
            if worker.process is not None:
                worker.process.signalProcess("HUP")

    # -- stopping ----------------------------------------------------------------------------

    def _writer_lost(self) -> None:
        self.exit_code = 1
        log.error("nothing can be recorded any more: stopping the gateway")
        self.reactor.stop()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """End every worker (told on its control link; SIGKILL after ``shutdown_grace`` plus
        a margin), then the audit writer."""
        if self._stopping:
            return
        self._stopping = True
        self._close_ports()
        waits = []
        for worker in self._workers:
            if worker.timer is not None and worker.timer.active():
                worker.timer.cancel()
            if worker.process is not None and worker.ended is not None:
                if worker.control is not None and worker.control.transport is not None:
                    worker.send(b'{"op": "stop"}')
                else:
                    worker.process.signalProcess("TERM")
                waits.append(worker.ended)
        grace = self.config.gateway.shutdown_grace + STOP_MARGIN
        killer = self.reactor.callLater(grace, self._kill_workers)
        yield defer.DeferredList(waits)
        if killer.active():
            killer.cancel()
        if self._writer is not None:
            yield self._writer.stop()
        log.info("gateway stopped")

    def _kill_workers(self) -> None:
        for worker in self._workers:
            if worker.process is not None:
                log.warn("worker {index} did not end: killing it", index=worker.index)
                worker.process.signalProcess("KILL")

    def _close_ports(self) -> None:
        ports, self._ports = self._ports, {}
        for port in ports.values():
            port.stopListening()


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, worker: _Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker

    def processEnded(self, reason: Failure) -> None:
        self._supervisor._worker_ended(self._worker, reason)


class _Control(LineOnlyReceiver):
    """The parent's end of one worker's control link."""

    delimiter = b"\n"

    MAX_LENGTH = 64 << 20

    def __init__(self, supervisor: Supervisor, worker: _Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker

    def lineReceived(self, line: bytes) -> None:
        self._supervisor._route(self._worker, line)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.transport = None


def run_supervisor(config: Config, config_path: str) -> int:
    """Run the parent of ``[gateway] workers`` processes until SIGTERM or SIGINT."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    supervisor = Supervisor(config, config_path, reactor)

    def failed(failure: Failure) -> None:
        if failure.check(HoopgwError):
            log.error("gateway failed to start: {why}", why=failure.getErrorMessage())
        else:
            log.failure("gateway failed to start", failure)
        supervisor.exit_code = 1
        reactor.stop()

    def hang_up(signum: int, frame: Any) -> None:
        reactor.callFromThread(supervisor.hang_up)

    signal.signal(signal.SIGHUP, hang_up)
    reactor.callWhenRunning(lambda: supervisor.start().addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    reactor.run()
    return supervisor.exit_code
