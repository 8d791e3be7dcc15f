"""Tests for :mod:`hoopgw.runtime.handoff`: the parent spreads accepted connections over the
workers by their live counts, and loses none to a worker that dies; no real socket
(tests/integration/test_workers.py passes real ones)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from hoopgw.runtime import handoff as handoff_module
from hoopgw.runtime.handoff import FULL_FOR, Handoff


class FakeSocket:
    count = 100

    def __init__(self) -> None:
        FakeSocket.count += 1
        self.fd = FakeSocket.count
        self.closed = False
        self.local = "('127.0.0.1', 5432)"

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self) -> None:
        self.descriptors: list[int] = []

    def sendFileDescriptor(self, fd: int) -> None:
        self.descriptors.append(fd)


class FakeControl:
    """The parent's end of a worker's control link."""

    def __init__(self) -> None:
        self.transport: Any = FakeTransport()
        self.lines: list[dict[str, Any]] = []

    def sendLine(self, line: bytes) -> None:
        self.lines.append(json.loads(line))

    @property
    def passed(self) -> list[int]:
        return list(self.transport.descriptors)


class FakePort:
    def __init__(self) -> None:
        self.socket = FakeSocket()


@pytest.fixture(autouse=True)
def _local_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake sockets have no real descriptor: their local address is what they say."""
    sockets: dict[int, FakeSocket] = {}
    made = FakeSocket.__init__

    def init(self: FakeSocket) -> None:
        made(self)
        sockets[self.fd] = self

    monkeypatch.setattr(FakeSocket, "__init__", init)
    monkeypatch.setattr(handoff_module, "local_address", lambda fd: sockets[fd].local)


def _handoff(workers: int = 2) -> tuple[Handoff, MemoryReactorClock, list[FakeControl]]:
    reactor = MemoryReactorClock()
    handoff = Handoff(reactor)
    handoff.accept_on(FakePort(), "tcp:5432")
    controls = [FakeControl() for _ in range(workers)]
    for index, control in enumerate(controls, 1):
        handoff.worker_ready(index, control)
    return handoff, reactor, controls


def test_eight_connections_in_a_burst_end_four_on_each_of_two_workers() -> None:
    """In flight counts: none of the 8 has logged in, nor been taken, when the next comes."""
    handoff, _, controls = _handoff()
    sockets = [FakeSocket() for _ in range(8)]
    for sock in sockets:
        handoff.accepted(sock, "tcp:5432")  # type: ignore[arg-type]
    assert handoff.live() == {1: 4, 2: 4}
    assert controls[0].passed == [s.fd for s in sockets[0::2]]
    assert controls[1].passed == [s.fd for s in sockets[1::2]]
    assert controls[0].lines[0] == {
        "op": "connection",
        "listen": "tcp:5432",
        "local": "('127.0.0.1', 5432)",
    }


def test_a_connection_goes_to_the_worker_with_the_fewest_live_ones() -> None:
    handoff, _, controls = _handoff(3)
    for _ in range(6):
        handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_load(2, taken=2, ended=2)  # both of worker 2's ended
    handoff.worker_load(3, taken=2, ended=1)
    assert handoff.live() == {1: 2, 2: 0, 3: 1}
    for _ in range(3):
        handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    assert handoff.live() == {1: 2, 2: 2, 3: 2}
    assert [len(c.passed) for c in controls] == [2, 4, 3]


def test_the_parent_keeps_its_copy_until_the_worker_took_it() -> None:
    handoff, _, _ = _handoff(1)
    first, second = FakeSocket(), FakeSocket()
    handoff.accepted(first, "tcp:5432")  # type: ignore[arg-type]
    handoff.accepted(second, "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_load(1, taken=1, ended=0)
    assert first.closed and not second.closed


def test_a_dead_worker_s_untaken_connections_go_to_another() -> None:
    handoff, _, controls = _handoff()
    sockets = [FakeSocket() for _ in range(4)]
    for sock in sockets:
        handoff.accepted(sock, "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_load(2, taken=1, ended=0)  # worker 2 took the first of its two
    handoff.worker_gone(2)
    # The one it took ended with it; the one it never took is served by worker 1.
    assert controls[0].passed == [sockets[0].fd, sockets[2].fd, sockets[3].fd]
    assert sockets[1].closed and not sockets[3].closed
    assert handoff.live() == {1: 3}


def test_with_no_worker_ready_nothing_is_accepted_and_nothing_lost() -> None:
    """The kernel queues the clients while no worker can take them (at start, or while every
    worker restarts); those a dead worker had not taken wait in the parent."""
    reactor = MemoryReactorClock()
    handoff = Handoff(reactor)
    handoff.accept_on(FakePort(), "tcp:5432")
    assert reactor.getReaders() == []
    first = FakeControl()
    handoff.worker_ready(1, first)
    assert len(reactor.getReaders()) == 1
    sock = FakeSocket()
    handoff.accepted(sock, "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_gone(1)
    assert reactor.getReaders() == []
    second = FakeControl()
    handoff.worker_ready(1, second)
    assert second.passed == [sock.fd] and len(reactor.getReaders()) == 1


def test_a_worker_whose_link_closed_gets_nothing_more() -> None:
    handoff, _, controls = _handoff()
    controls[0].transport = None  # closed; its process end is reported next
    handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    assert handoff.live() == {1: 0, 2: 2}


def test_stopping_closes_what_no_worker_took() -> None:
    handoff, reactor, _ = _handoff()
    sock = FakeSocket()
    handoff.accepted(sock, "tcp:5432")  # type: ignore[arg-type]
    handoff.stop()
    assert sock.closed and reactor.getReaders() == []


def test_a_worker_told_to_stop_gets_no_new_client() -> None:
    """A worker restarted after a reload it refused stops listening at once and ends its
    sessions over ``shutdown_grace``: its live count falls, yet every client passed to it
    meanwhile would be closed. The others serve them; what it had not taken goes to another
    when it ends."""
    handoff, _, controls = _handoff()
    waiting = FakeSocket()
    handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    handoff.accepted(waiting, "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_stopping(2)
    handoff.worker_load(2, taken=0, ended=0)
    for _ in range(3):
        handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    assert len(controls[0].passed) == 4 and controls[1].passed == [waiting.fd]
    handoff.worker_gone(2)
    assert controls[0].passed[-1] == waiting.fd


def test_a_second_ready_from_a_worker_loses_nothing() -> None:
    """A worker that says ready again (a bug, or a worker not to be trusted) keeps its count
    and the parent its copies: none leaks, none is forgotten if the worker dies."""
    handoff, _, controls = _handoff()
    waiting = FakeSocket()
    handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    handoff.accepted(waiting, "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_ready(2, controls[1])
    assert handoff.live() == {1: 1, 2: 1}
    handoff.worker_gone(2)
    assert controls[0].passed[-1] == waiting.fd


def test_a_worker_that_lost_clients_for_want_of_descriptors_is_avoided_a_while() -> None:
    """Lost clients end at once, so a worker out of descriptors would look the least loaded
    and get every next client, to lose it too."""
    handoff, reactor, controls = _handoff()
    for _ in range(4):
        handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    handoff.worker_load(2, taken=2, ended=2, lost=2)
    for _ in range(3):
        handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    assert [len(c.passed) for c in controls] == [5, 2]
    reactor.advance(FULL_FOR)
    handoff.accepted(FakeSocket(), "tcp:5432")  # type: ignore[arg-type]
    assert [len(c.passed) for c in controls] == [5, 3]
