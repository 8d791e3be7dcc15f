"""The supervising parent's relay between the workers and the gateway's one audit writer
process (``[gateway] workers = N``).

Every worker's :class:`~hoopgw.audit.writer.AuditWriter` talks to this relay over its audit
link (:mod:`hoopgw.runtime.worker`) exactly as it would to a writer process of its own: entry
lines one way; ``ready``, ``ok COUNT`` and ``error COUNT WHY`` lines back. The relay forwards
whole lines to the one writer process in the order they arrive, remembers whose they were, and
splits each answer among the workers that sent the lines it answers. So the gateway keeps one
hash chain, one journal and one group commit, and each worker's entries keep their order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.audit.writer import WRITER_INFO_PREFIX

__all__ = ["AuditRelay"]

log = Logger(namespace="hoopgw.audit")


class AuditRelay:
    """Relays the workers' audit entries to one writer process and its answers back.

    :param spawn: starts the writer process (``spawn_writer_process`` with the config's
        settings bound), as :class:`~hoopgw.audit.writer.AuditWriter` takes it.
    :param on_lost: called once if the writer process ends before :meth:`stop` (the gateway
        cannot record anything any more).
    """

    def __init__(
        self, spawn: Callable[..., Any], store_url: str, reactor: Any, on_lost: Callable[[], None]
    ) -> None:
        self._spawn = spawn
        self._store_url = store_url
        self._reactor = reactor
        self._on_lost = on_lost
        self._process: Any = None
        self._ready: defer.Deferred[None] = defer.Deferred()
        self._ended: defer.Deferred[None] = defer.Deferred()
        self._stopping = False
        self._sent: deque[list[Any]] = deque()  # [link, lines not yet answered], in send order

    def start(self) -> defer.Deferred[None]:
        """Start the writer process; fires once it is ready, fails if it ends first."""
        self._process = self._spawn(_WriterOutput(self), self._store_url, self._reactor)
        return self._ready

    def link(self) -> protocol.Protocol:
        """A protocol for one worker's end of an audit link."""
        return _Link(self)

    def stop(self) -> defer.Deferred[None]:
        """Close the writer's input (call once every worker has ended): it appends what it
        holds and ends. Fires when it has."""
        self._stopping = True
        if self._process is not None and not self._ended.called:
            self._process.closeStdin()
        return self._ended

    # -- from the links ----------------------------------------------------------------------

    def _forward(self, link: _Link, lines: bytes, count: int) -> None:
        if self._sent and self._sent[-1][0] is link:
            self._sent[-1][1] += count
        else:
            self._sent.append([link, count])
        self._process.write(lines)

    # -- from the process --------------------------------------------------------------------

    def _answered(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "ready":
            if not self._ready.called:
                self._ready.callback(None)
            return
        count_text, _, detail = rest.partition(" ")
        try:
            count = int(count_text)
        except ValueError:
            count = 0
        if word not in ("ok", "error") or count <= 0:
            log.error("audit writer process said {line!r}; stopping", line=line)
            self._process.signalProcess("KILL")
            return
        tail = f" {detail}" if detail else ""
        while count and self._sent:
            head = self._sent[0]
            taken = min(count, head[1])
            head[0].answer(f"{word} {taken}{tail}")
            head[1] -= taken
            count -= taken
            if not head[1]:
                self._sent.popleft()
                head[0].answered_all_maybe()

    def _process_ended(self, reason: Failure) -> None:
        for link in {entry[0] for entry in self._sent}:
            link.lose()
        self._sent.clear()
        if not self._ready.called:
            self._ready.errback(reason)
        elif not self._stopping:
            log.error("audit writer process ended: {why}", why=reason.getErrorMessage())
            self._on_lost()
        self._ended.callback(None)

    def _pending(self, link: _Link) -> bool:
        return any(entry[0] is link for entry in self._sent)


class _WriterOutput(protocol.ProcessProtocol):
    def __init__(self, relay: AuditRelay) -> None:
        self._relay = relay
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._relay._answered(line.decode("utf-8", "replace"))

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith(WRITER_INFO_PREFIX):
                log.info("audit writer process: {line}", line=text[len(WRITER_INFO_PREFIX) :])
            else:
                log.error("audit writer process: {line}", line=text)

    def processEnded(self, reason: Failure) -> None:
        self._relay._process_ended(reason)


@implementer(IHalfCloseableProtocol)
class _Link(protocol.Protocol):
    """The parent's end of one worker's audit link."""

    transport: Any

    def __init__(self, relay: AuditRelay) -> None:
        self._relay = relay
        self._partial = b""
        self._input_done = False

    def connectionMade(self) -> None:
        self.transport.write(b"ready\n")  # the relay starts workers once the writer is ready

    def dataReceived(self, data: bytes) -> None:
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if end:
            # Only whole lines: a worker that dies mid-line leaves no half entry in the chain.
            self._relay._forward(self, data[:end], data.count(b"\n", 0, end))

    def answer(self, line: str) -> None:
        if self.transport is not None:
            self.transport.write(line.encode() + b"\n")

    def answered_all_maybe(self) -> None:
        if self._input_done and not self._relay._pending(self):
            self.lose()

    def lose(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        # The worker's AuditWriter stopped: close once its last lines are answered.
        self._input_done = True
        self.answered_all_maybe()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.transport = None
