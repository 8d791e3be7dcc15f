"""The one audit writer process of a gateway of several worker processes (``[gateway]
workers``), owned by the supervising parent.

The parent starts the writer (:mod:`hoopgw.audit.process`) with a *links* socket and, for each
worker it starts, makes a socket pair: one end goes to the writer over the links socket
(:func:`hoopgw.audit.links.send_link`), the other to the worker, whose
:class:`~hoopgw.audit.writer.AuditWriter` talks to the writer on it exactly as to a writer
process of its own. So the gateway keeps one hash chain and one journal, and no record passes
through the parent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit.links import send_link
from hoopgw.audit.writer import WRITER_INFO_PREFIX

__all__ = ["SharedWriter"]

log = Logger(namespace="hoopgw.audit")


class SharedWriter:
    """The writer process every worker writes to.

    :param spawn: starts the writer process (``spawn_writer_process`` with the config's
        settings bound; called with ``links_fd``).
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
        self._links: socket.socket | None = None
        self._ready: defer.Deferred[None] = defer.Deferred()
        self._ended: defer.Deferred[None] = defer.Deferred()
        self._stopping = False

    def start(self) -> defer.Deferred[None]:
        """Start the writer process; fires once it is ready, fails if it ends first."""
        self._links, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = self._spawn(
                _WriterOutput(self), self._store_url, self._reactor, links_fd=theirs.fileno()
            )
        finally:
            theirs.close()
        return self._ready

    def link(self) -> socket.socket:
        """A new worker's end of a socket to the writer (the writer has the other end).

        :raises OSError: the writer is gone.
        """
        assert self._links is not None, "start() first"
        worker_end, writer_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            send_link(self._links, writer_end)
        except OSError:
            worker_end.close()
            raise
        finally:
            writer_end.close()
        return worker_end

    def stop(self) -> defer.Deferred[None]:
        """Close the writer's input (call once every worker has ended): it appends what it
        holds and ends. Fires when it has."""
        self._stopping = True
        if self._process is not None and not self._ended.called:
            self._process.closeStdin()
        return self._ended

    def _said(self, line: str) -> None:
        if line == "ready" and not self._ready.called:
            self._ready.callback(None)
        else:
            log.error("audit writer process said {line!r}", line=line)

    def _process_ended(self, reason: Failure) -> None:
        if self._links is not None:
            self._links.close()
            self._links = None
        if not self._ready.called:
            self._ready.errback(reason)
        elif not self._stopping:
            log.error("audit writer process ended: {why}", why=reason.getErrorMessage())
            self._on_lost()
        self._ended.callback(None)


class _WriterOutput(protocol.ProcessProtocol):
    def __init__(self, writer: SharedWriter) -> None:
        self._writer = writer
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._writer._said(line.decode("utf-8", "replace"))

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
        self._writer._process_ended(reason)
