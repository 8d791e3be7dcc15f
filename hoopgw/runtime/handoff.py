"""How the parent of ``[gateway] workers`` spreads client connections: it accepts each one on
the listening socket and passes it (``SCM_RIGHTS`` over the worker's control link) to the
worker holding the fewest live connections, the lowest-numbered on a tie.

Why the parent and not the kernel: with every worker accepting on the shared socket, the one
that wakes first takes whatever is queued (Twisted accepts in batches), so 8 connections made
in a burst could all land on one worker. The parent's count is exact, not published at
intervals: a connection counts for its worker from the moment it is passed until the worker
says it closed, so a burst alternates between equal workers.

Nothing is lost to a worker that dies: a connection waits in the kernel's queue until the
parent accepts it, which it does only while a worker is ready; the parent keeps its copy of
each passed connection until the worker says it took it (``taken`` in its ``load`` report),
and passes those a dead worker had not taken to another.
"""

from __future__ import annotations

import collections
import errno
import json
import socket
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.runtime.worker import local_address

__all__ = ["Handoff"]

log = Logger(namespace="hoopgw.workers")

ACCEPT_BATCH = 16
"""Connections accepted per readable event of one listener (each goes to the then
least-loaded worker, so a batch is spread too)."""

FULL_FOR = 5.0
"""Seconds a worker that lost a passed client for want of descriptors gets new clients only
if every worker did: ended at once, those clients make it look the least loaded."""

_ACCEPT_RETRY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR})


class _Slot:
    """A ready worker as the parent counts it."""

    def __init__(self, control: Any) -> None:
        self.control = control
        """The parent's end of the worker's control link."""
        self.passed = 0
        self.ended = 0
        self.stopping = False
        """Told to stop: it serves no new client (its listeners are gone or going)."""
        self.lost = 0
        self.full_until = 0.0
        """Until when it is passed clients only if every worker is: it lost one for want of
        descriptors (its live count is low because it cannot hold more)."""
        self.untaken: collections.deque[tuple[socket.socket, str]] = collections.deque()
        """Passed connections the worker has not said it took, oldest first (the parent's
        copies: passed again if the worker dies)."""

    @property
    def live(self) -> int:
        """Connections passed to the worker and not closed yet."""
        return self.passed - self.ended


class Handoff:
    """Accepts on the gateway's connection listeners and passes each client to a worker."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._acceptors: list[_Acceptor] = []
        self._slots: dict[int, _Slot] = {}
        self._orphans: collections.deque[tuple[socket.socket, str]] = collections.deque()
        """Connections a dead worker had not taken, while no worker is ready."""

    def accept_on(self, port: Any, description: str) -> None:
        """Accept on the listening ``port`` (a Twisted port, not reading) whose config
        ``listen`` is ``description``, whenever a worker is ready."""
        acceptor = _Acceptor(self, port.socket, description)
        self._acceptors.append(acceptor)
        if self._slots:
            self._reactor.addReader(acceptor)

    def worker_ready(self, index: int, control: Any) -> None:
        """Worker ``index`` serves its listeners: pass it connections on ``control``."""
        if index in self._slots:  # said twice: its count and the copies it has not taken stay
            return
        if not self._slots:
            for acceptor in self._acceptors:
                self._reactor.addReader(acceptor)
        self._slots[index] = _Slot(control)
        while self._orphans:
            self._pass(*self._orphans.popleft())

    def worker_load(self, index: int, taken: int, ended: int, lost: int = 0) -> None:
        """Worker ``index`` has taken ``taken`` of the connections passed to it since it
        became ready, and closed ``ended`` of them, ``lost`` of those for want of
        descriptors."""
        slot = self._slots.get(index)
        if slot is None:
            return
        if lost > slot.lost:
            slot.lost = lost
            slot.full_until = self._reactor.seconds() + FULL_FOR
        while len(slot.untaken) > slot.passed - taken:
            sock, _ = slot.untaken.popleft()
            sock.close()
        slot.ended = ended

    def worker_stopping(self, index: int) -> None:
        """Worker ``index`` was told to stop (to be restarted): pass it nothing more. It still
        reports what it took; those it had not taken when it ends go to another."""
        slot = self._slots.get(index)
        if slot is not None:
            slot.stopping = True

    def worker_gone(self, index: int) -> None:
        """Worker ``index`` ended: the connections it had not taken go to another."""
        slot = self._slots.pop(index, None)
        if slot is None:
            return
        if not self._slots:
            for acceptor in self._acceptors:
                self._reactor.removeReader(acceptor)
        for sock, description in slot.untaken:
            self._pass(sock, description)

    def live(self) -> dict[int, int]:
        """Live connections by ready worker, as the parent counts them."""
        return {index: slot.live for index, slot in sorted(self._slots.items())}

    def stop(self) -> None:
        """Stop accepting and close the connections no worker has taken."""
        for acceptor in self._acceptors:
            self._reactor.removeReader(acceptor)
        self._acceptors = []
        for slot in self._slots.values():
            self._orphans.extend(slot.untaken)
        self._slots = {}
        while self._orphans:
            self._orphans.popleft()[0].close()

    def accepted(self, sock: socket.socket, description: str) -> None:
        """A client connected on the listener ``description``."""
        self._pass(sock, description)

    def _pass(self, sock: socket.socket, description: str) -> None:
        # A worker whose link just closed is about to be reported gone; one told to stop
        # closes every client passed to it from then on, and its live count falls as it ends
        # its sessions: it would get nearly every new client until it is gone.
        linked = [
            k
            for k, slot in self._slots.items()
            if slot.control.transport is not None and not slot.stopping
        ]
        if not linked:
            self._orphans.append((sock, description))
            return
        try:
            local = local_address(sock.fileno())
        except OSError:  # gone already
            sock.close()
            return
        now = self._reactor.seconds()
        index = min(linked, key=lambda k: (self._slots[k].full_until > now, self._slots[k].live, k))
        slot = self._slots[index]
        # The descriptor travels with the first byte of the line that names its listener, and
        # its local address: a worker that finds another descriptor there (one was dropped on
        # the way) closes it rather than serve it with this listener's connection.
        slot.control.transport.sendFileDescriptor(sock.fileno())
        line = {"op": "connection", "listen": description, "local": local}
        slot.control.sendLine(json.dumps(line).encode())
        slot.passed += 1
        slot.untaken.append((sock, description))


@implementer(IReadDescriptor)
class _Acceptor:
    """Reads one listening socket for the parent: accepts and hands over."""

    def __init__(self, handoff: Handoff, sock: socket.socket, description: str) -> None:
        self._handoff = handoff
        self._socket = sock
        self._description = description

    def fileno(self) -> int:
        return self._socket.fileno()

    def doRead(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._socket.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    # Out of descriptors or memory: the client waits in the queue meanwhile.
                    log.error("cannot accept on {listen}: {why}", listen=self._description, why=exc)
                return
            self._handoff.accepted(sock, self._description)

    def connectionLost(self, reason: Failure) -> None:
        """The listening socket closed (the parent stops)."""

    def logPrefix(self) -> str:
        return "hoopgw-accept"
