"""``[gateway] workers = N``: a supervising parent process and N gateway worker processes.

The parent binds every listener of the config once (the connections' and the admin API's),
accepts each client connection and passes it to the worker with the fewest live connections
(:mod:`hoopgw.runtime.handoff`); worker 1 inherits the admin API's listening socket. One
listening socket per address in the parent rather than ``SO_REUSEPORT``: a worker that
crashes leaves the connections still queued (with ``SO_REUSEPORT`` each socket has its own
queue, reset with it), bind errors and ``port 0`` are settled once in the parent, and no other
process of the same user can bind into the group.

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
  their live sessions and metrics to it through the parent (at most
  :data:`~hoopgw.runtime.worker.PUBLISH_INTERVAL` old), so ``hoopgw sessions live`` lists
  every worker's, ``kill`` ends a session on the worker that holds it, the record written
  first, and ``/metrics`` shows every worker's samples labelled ``worker``; revoked keys and
  grants end sessions on every worker, each checking the store as separate instances do.
- **reloads**: SIGHUP to the parent, or ``hoopgw reload`` through worker 1, makes the parent
  ask every worker and sum up their answers (:mod:`hoopgw.runtime.reload_workers`).

The parent restarts a worker that ends unexpectedly (after 1 s, doubling to 30 s while it keeps
failing fast) and ends every worker on SIGTERM or SIGINT. If the audit writer process ends,
nothing can be recorded: the parent stops the gateway (exit 1).
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
from hoopgw.runtime.handoff import Handoff
from hoopgw.runtime.reload_workers import ReloadRound
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
        self.restart_now = False
        """Stopped to be restarted at once (it refused a reload the others applied)."""

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
        # (op, worker) -> its latest list of live sessions ("sessions") or metrics ("metrics")
        self._published: dict[tuple[str, int], bytes] = {}
        self._handoff = Handoff(reactor)
        self._reload: ReloadRound | None = None
        self._reload_count = 0
        self._digest: str | None = None
        """The config file (its digest) the ready workers run."""
        self._reload_again: str | None = None
        """Who asked for a reload while one ran (SIGHUP): run it when that one ends."""
        self.exit_code = 0

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Bind every listener, start the audit writer, then the workers."""
        gw = self.config.gateway
        try:
            for what, description in self._listen_descriptions():
                self._ports[description] = yield self._bind(description, what)
            for connection in self.config.connections:
                self._handoff.accept_on(self._ports[connection.listen], connection.listen)
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
        """Listen on ``description`` without accepting (:class:`Handoff` accepts)."""

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
        gw = self.config.gateway
        listeners = {}
        fd = 3
        if worker.index == 1 and gw.admin_listen is not None:
            child_fds[fd] = self._ports[gw.admin_listen].fileno()
            listeners[gw.admin_listen] = fd
            fd += 1
        child_fds[fd] = audit_child.fileno()
        child_fds[fd + 1] = control_child.fileno()
        link = WorkerLink(
            index=worker.index,
            instance=worker_instance(gw.instance, worker.index),
            listeners=listeners,
            audit_fd=fd,
            control_fd=fd + 1,
            serves_admin=worker.index == 1,
            passed=tuple(c.listen for c in self.config.connections),
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
        if worker.control is not None:
            worker.control.drain()  # its last reports first: what it took is not passed on
        self._handoff.worker_gone(worker.index)
        control, worker.control = worker.control, None
        transport: Any = None if control is None else control.transport
        if transport is not None:
            transport.loseConnection()
        for op, key in (("sessions", "sessions"), ("metrics", "families")):
            if (op, worker.index) in self._published:  # they ended with it
                line = json.dumps({"op": op, "worker": worker.index, key: []}).encode()
                self._published[op, worker.index] = line
                self._workers[0].send(line)
        if self._reload is not None:
            self._reload.worker_ended(worker.index)
        ended, worker.ended = worker.ended, None
        if ended is not None:
            ended.callback(None)
        if self._stopping:
            log.info("worker {index} ended", index=worker.index)
            return
        if worker.restart_now:
            worker.restart_now = False
            log.info("worker {index} ended; starting it with the new config", index=worker.index)
            self._spawn(worker)
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
            elif op == "load":
                self._handoff.worker_load(
                    sender.index,
                    int(message["taken"]),
                    int(message["ended"]),
                    int(message.get("lost", 0)),
                )
            elif op in ("sessions", "metrics"):
                # Stamped with the sender: its sessions are listed, and ended, as its own.
                message["worker"] = sender.index
                line = json.dumps(message).encode()
                self._published[op, sender.index] = line
                self._workers[0].send(line)
            elif op == "ready" and sender.control is not None:
                self._ready(sender, str(message.get("digest", "")))
            elif op == "terminate" and sender.index == 1:  # the admin API's worker only
                target = int(message["worker"])
                if not 1 <= target <= len(self._workers):
                    raise IndexError(target)
                self._workers[target - 1].send(line)
            elif op == "reload" and sender.index == 1:  # asked through the admin API
                self.reload(str(message["by"]), reply_to=1)
            elif op == "reloaded" and self._reload is not None:
                if int(message["id"]) == self._reload.ident:
                    self._reload.answered(sender.index, message)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("unreadable message from worker {index}", index=sender.index)

    def _ready(self, worker: _Worker, digest: str) -> None:
        """``worker`` serves the config file whose digest is ``digest``. Another file than the
        other ready workers run (changed since, and not reloaded or refused by them) is not
        served: the worker is stopped, and started again after its back-off (the file
        applied by the others, or their end, lets it in)."""
        assert worker.control is not None
        if any(k != worker.index for k in self._handoff.live()) and digest != self._digest:
            log.error(
                "worker {index} started with another config file ({digest}) than the other"
                " workers run ({running}): stopping it; reload to apply the file to every"
                " worker, or restart the gateway",
                index=worker.index,
                digest=digest,
                running=self._digest,
            )
            worker.send(b'{"op": "stop"}')
            return
        self._digest = digest
        self._handoff.worker_ready(worker.index, worker.control)

    def hang_up(self) -> None:
        """SIGHUP: reload every worker's config."""
        self.reload("SIGHUP")

    def reload(self, by: str, *, reply_to: int | None = None) -> None:
        """Ask every running worker to reload the config; sum up their answers, restart those
        that refused if others applied, and answer worker ``reply_to`` (its admin API asked).
        """
        if self._stopping:
            return
        if self._reload is not None:
            if reply_to is not None:
                self._reply(reply_to, ok=False, error="another reload is being applied; try again")
            else:
                log.info("config reload (by {by}) waits for the one under way", by=by)
                self._reload_again = by
            return
        self._reload_count += 1
        asked = [w for w in self._workers if w.process is not None and w.control is not None]
        line = json.dumps({"op": "reload", "id": self._reload_count, "by": by}).encode()
        for worker in asked:
            worker.send(line)
        self._reload = ReloadRound(
            self._reload_count,
            by,
            [w.index for w in asked],
            self.reactor,
            self._reloaded,
            reply_to=reply_to,
        )

    def _reloaded(self, done: ReloadRound) -> None:
        self._reload = None
        outcome = done.outcome()
        if outcome.refused:
            (log.warn if outcome.applied else log.error)("{line}", line=outcome.describe(done.by))
        else:
            log.info("{line}", line=outcome.describe(done.by))
        restart = set(outcome.restart)
        if outcome.applied:
            # The file the first applied; one that changed during the reload is not served.
            digests = {k: done.digests.get(k, "") for k in outcome.applied}
            self._digest = digests[outcome.applied[0]]
            for index, digest in sorted(digests.items()):
                if digest != self._digest:
                    log.error(
                        "worker {index} applied another config file than worker {first} (it"
                        " changed during the reload): restarting it",
                        index=index,
                        first=outcome.applied[0],
                    )
                    restart.add(index)
        for index in sorted(restart):
            self._restart(self._workers[index - 1])
        if done.reply_to is not None:
            if outcome.result is not None:
                self._reply(done.reply_to, ok=True, result=outcome.result)
            else:
                reasons = dict.fromkeys(outcome.refused.values())  # each once, in worker order
                why = "; ".join(reasons) or "no worker is running"
                self._reply(done.reply_to, ok=False, error=why)
        again, self._reload_again = self._reload_again, None
        if again is not None:
            self.reload(again)

    def _restart(self, worker: _Worker) -> None:
        """Stop ``worker`` (killed if it has not ended ``shutdown_grace`` plus a margin later:
        one that did not answer may not answer this either) and start it again at once."""
        process = worker.process
        if process is None:
            return  # ended already: its back-off restart starts it with the file's config
        worker.restart_now = True
        self._handoff.worker_stopping(worker.index)
        worker.send(b'{"op": "stop"}')

        def kill() -> None:
            if worker.process is process:
                log.warn("worker {index} did not end: killing it", index=worker.index)
                process.signalProcess("KILL")

        self.reactor.callLater(self.config.gateway.shutdown_grace + STOP_MARGIN, kill)

    def _reply(self, index: int, **answer: Any) -> None:
        self._workers[index - 1].send(json.dumps({"op": "reload_result", **answer}).encode())

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
        self._handoff.stop()
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

    def drain(self) -> None:
        """Read now what the worker wrote before it ended: the parent may learn of the
        process's end before it has read the link."""
        sock = getattr(self.transport, "socket", None)
        while sock is not None and self.transport is not None:
            try:
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    return  # the link's end: all read
            except OSError:
                return  # nothing more now (a child of the worker holds the link), or broken
            self.transport.doRead()

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
