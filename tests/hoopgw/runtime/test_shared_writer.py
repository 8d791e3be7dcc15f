"""Tests for :mod:`hoopgw.runtime.shared_writer`: the parent's one audit writer process and the
sockets it hands each worker and the writer; no real process."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import error, task
from twisted.python.failure import Failure

from hoopgw.runtime.shared_writer import SharedWriter


class FakeProcess:
    def __init__(self) -> None:
        self.closed = False

    def closeStdin(self) -> None:
        self.closed = True


class Harness:
    def __init__(self) -> None:
        self.process = FakeProcess()
        self.output: Any = None
        self.links: socket.socket | None = None
        self.lost = 0
        self.writer = SharedWriter(self._spawn, "sqlite:///x.db", task.Clock(), self._lost)
        self.started = self.writer.start()

    def _spawn(self, output: Any, store_url: str, reactor: Any, *, links_fd: int) -> FakeProcess:
        self.output = output
        self.links = socket.socket(fileno=socket.dup(links_fd))  # what the child inherits
        return self.process

    def _lost(self) -> None:
        self.lost += 1


@pytest.fixture
def ready() -> Harness:
    harness = Harness()
    harness.output.outReceived(b"ready\n")
    assert harness.started.called
    return harness


def test_each_worker_gets_a_socket_whose_other_end_goes_to_the_writer(ready: Harness) -> None:
    worker = ready.writer.link()
    assert ready.links is not None
    _, fds, _, _ = socket.recv_fds(ready.links, 1, 1)
    with socket.socket(fileno=fds[0]) as writers_end, worker:
        worker.sendall(b"entry\n")
        assert writers_end.recv(16) == b"entry\n"


def test_the_writers_end_before_stop_stops_the_gateway(ready: Harness) -> None:
    ready.output.processEnded(Failure(error.ProcessTerminated(1)))
    assert ready.lost == 1
    with pytest.raises(AssertionError):
        ready.writer.link()


def test_a_writer_that_ends_before_ready_fails_the_start() -> None:
    harness = Harness()
    harness.output.processEnded(Failure(error.ProcessTerminated(1)))
    failures: list[Failure] = []
    harness.started.addErrback(failures.append)
    assert failures and harness.lost == 0


def test_stop_closes_the_writers_input_and_waits_for_its_end(ready: Harness) -> None:
    stopped = ready.writer.stop()
    assert ready.process.closed and not stopped.called
    ready.output.processEnded(Failure(error.ProcessDone(0)))
    assert stopped.called and ready.lost == 0
