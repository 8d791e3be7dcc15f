"""Tests for :mod:`hoopgw.runtime.audit_relay`: the workers' entries reach the one writer
process in arrival order, whole lines only, and each answer is split among the workers whose
lines it answers; no real process or socket."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hoopgw.runtime.audit_relay import AuditRelay


class FakeProcess:
    def __init__(self) -> None:
        self.stdin = b""
        self.closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class Harness:
    def __init__(self) -> None:
        self.process = FakeProcess()
        self.output: Any = None
        self.lost = 0
        self.relay = AuditRelay(self._spawn, "sqlite:///x.db", task.Clock(), self._lost)
        self.started = self.relay.start()

    def _spawn(self, output: Any, store_url: str, reactor: Any) -> FakeProcess:
        self.output = output
        return self.process

    def _lost(self) -> None:
        self.lost += 1

    def say(self, *lines: str) -> None:
        self.output.outReceived("".join(f"{line}\n" for line in lines).encode())

    def link(self) -> tuple[Any, StringTransport]:
        link = self.relay.link()
        transport = StringTransport()
        link.makeConnection(transport)
        return link, transport


@pytest.fixture
def ready() -> Harness:
    harness = Harness()
    harness.say("ready")
    assert harness.started.called
    return harness


def test_a_link_is_told_ready_and_its_lines_reach_the_writer_whole(ready: Harness) -> None:
    link, transport = ready.link()
    assert transport.value() == b"ready\n"
    link.dataReceived(b"one\ntw")
    assert ready.process.stdin == b"one\n"
    link.dataReceived(b"o\n")
    assert ready.process.stdin == b"one\ntwo\n"


def test_answers_are_split_among_the_workers_in_the_order_their_lines_went(
    ready: Harness,
) -> None:
    (first, one), (second, two) = ready.link(), ready.link()
    one.clear()
    two.clear()
    first.dataReceived(b"a\nb\n")
    second.dataReceived(b"c\n")
    first.dataReceived(b"d\n")
    assert ready.process.stdin == b"a\nb\nc\nd\n"
    ready.say("ok 3")
    assert (one.value(), two.value()) == (b"ok 2\n", b"ok 1\n")
    ready.say("error 1 disk full")
    assert one.value() == b"ok 2\nerror 1 disk full\n"


def test_one_answer_may_cover_part_of_a_workers_lines(ready: Harness) -> None:
    link, transport = ready.link()
    transport.clear()
    link.dataReceived(b"a\nb\nc\n")
    ready.say("ok 2", "ok 1")
    assert transport.value() == b"ok 2\nok 1\n"


def test_a_worker_that_stops_is_closed_once_its_lines_are_answered(ready: Harness) -> None:
    link, transport = ready.link()
    link.dataReceived(b"a\n")
    link.readConnectionLost()
    assert not transport.disconnecting
    ready.say("ok 1")
    assert transport.disconnecting


def test_a_worker_that_dies_mid_line_leaves_no_half_entry(ready: Harness) -> None:
    link, _ = ready.link()
    link.dataReceived(b"a\npart")
    link.connectionLost(Failure(error.ConnectionLost()))
    assert ready.process.stdin == b"a\n"
    ready.say("ok 1")  # the answer for a worker that is gone goes nowhere


def test_an_answer_that_fits_nothing_stops_the_writer(ready: Harness) -> None:
    ready.say("maybe 3")
    assert ready.process.signals == ["KILL"]


def test_the_writers_end_closes_every_link_and_stops_the_gateway(ready: Harness) -> None:
    link, transport = ready.link()
    link.dataReceived(b"a\n")
    ready.output.processEnded(Failure(error.ProcessTerminated(1)))
    assert transport.disconnecting and ready.lost == 1


def test_a_writer_that_ends_before_ready_fails_the_start() -> None:
    harness = Harness()
    harness.output.processEnded(Failure(error.ProcessTerminated(1)))
    failures: list[Failure] = []
    harness.started.addErrback(failures.append)
    assert failures and harness.lost == 0


def test_stop_closes_the_writers_input_and_waits_for_its_end(ready: Harness) -> None:
    stopped = ready.relay.stop()
    assert ready.process.closed and not stopped.called
    ready.output.processEnded(Failure(error.ProcessDone(0)))
    assert stopped.called and ready.lost == 0
