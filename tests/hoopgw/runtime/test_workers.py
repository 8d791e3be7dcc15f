"""Tests for :mod:`hoopgw.runtime.workers`: the supervising parent's routing between workers
and its restart back-off; no real process (tests/integration/test_workers.py runs them)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hoopgw.runtime.workers import MAX_RESTART_DELAY, RESTART_DELAY, STABLE_AFTER, Supervisor


class FakeControl:
    def __init__(self) -> None:
        self.transport = StringTransport()
        self.lines: list[bytes] = []

    def sendLine(self, line: bytes) -> None:
        self.lines.append(line)


@pytest.fixture
def supervisor() -> Supervisor:
    config: Any = SimpleNamespace(gateway=SimpleNamespace(workers=3))
    found = Supervisor(config, "hoopgw.toml", task.Clock())
    for worker in found._workers:
        worker.control = FakeControl()  # type: ignore[assignment]
    found._spawn = lambda worker: None  # type: ignore[method-assign]
    return found


def _lines(supervisor: Supervisor) -> list[list[bytes]]:
    return [w.control.lines for w in supervisor._workers]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "message",
    [{"op": "cancel", "pid": 7, "key": "00"}, {"op": "cancel_matched", "from": "10.0.0.1:1"}],
)
def test_a_cancel_request_goes_to_every_other_worker(
    supervisor: Supervisor, message: dict[str, object]
) -> None:
    line = json.dumps(message).encode()
    supervisor._route(supervisor._workers[1], line)
    assert _lines(supervisor) == [[line], [], [line]]


def test_sessions_go_to_worker_1_and_a_session_end_to_its_worker(supervisor: Supervisor) -> None:
    published = json.dumps({"op": "sessions", "worker": 3, "sessions": []}).encode()
    supervisor._route(supervisor._workers[2], published)
    end = json.dumps({"op": "terminate", "worker": 3, "id": "x", "reason": "r"}).encode()
    supervisor._route(supervisor._workers[0], end)
    assert _lines(supervisor) == [[published], [], [end]]


def test_a_worker_that_ends_takes_its_published_sessions_with_it(supervisor: Supervisor) -> None:
    shown = {"op": "sessions", "worker": 2, "sessions": [{"id": "x"}]}
    supervisor._route(supervisor._workers[1], json.dumps(shown).encode())
    supervisor._worker_ended(supervisor._workers[1], Failure(error.ProcessTerminated(1)))
    assert json.loads(supervisor._workers[0].control.lines[-1]) == {  # type: ignore[union-attr]
        "op": "sessions",
        "worker": 2,
        "sessions": [],
    }


def test_an_unreadable_message_is_dropped(supervisor: Supervisor) -> None:
    supervisor._route(supervisor._workers[0], b"{")
    supervisor._route(supervisor._workers[0], b'{"op": "terminate", "worker": 9}')
    assert _lines(supervisor) == [[], [], []]


def test_a_worker_failing_fast_waits_longer_each_time(supervisor: Supervisor) -> None:
    clock: Any = supervisor.reactor
    worker = supervisor._workers[0]
    delays = []
    for _ in range(8):
        worker.started_at = clock.seconds()
        supervisor._worker_ended(worker, Failure(error.ProcessTerminated(1)))
        delays.append(worker.timer.getTime() - clock.seconds())
        clock.advance(worker.timer.getTime() - clock.seconds())
    assert delays[:3] == [RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY]
    assert delays[-1] == MAX_RESTART_DELAY
    # A worker that ran a while before it ended starts over from the shortest delay.
    worker.started_at = clock.seconds()
    clock.advance(STABLE_AFTER)
    supervisor._worker_ended(worker, Failure(error.ProcessTerminated(1)))
    assert worker.timer.getTime() - clock.seconds() == RESTART_DELAY


def test_no_worker_is_started_again_while_stopping(supervisor: Supervisor) -> None:
    supervisor._stopping = True
    supervisor._worker_ended(supervisor._workers[0], Failure(error.ProcessDone(0)))
    assert supervisor._workers[0].timer is None


def test_published_sessions_are_stamped_with_the_worker_that_sent_them(
    supervisor: Supervisor,
) -> None:
    """Worker 1 ends a listed session on the worker the list names: a worker cannot have its
    sessions listed as another's (and so a kill sent to the wrong process)."""
    claimed = {"op": "sessions", "worker": 2, "sessions": [{"id": "x"}]}
    supervisor._route(supervisor._workers[2], json.dumps(claimed).encode())
    [line] = supervisor._workers[0].control.lines  # type: ignore[union-attr]
    assert json.loads(line)["worker"] == 3
    assert json.loads(supervisor._published[3])["worker"] == 3


@pytest.mark.parametrize("sender, target", [(1, 3), (0, 0), (0, -1), (0, 4)])
def test_a_session_end_goes_only_from_worker_1_to_a_worker_that_exists(
    supervisor: Supervisor, sender: int, target: int
) -> None:
    """Only worker 1 serves the admin API that ends sessions; worker 0 or -1 would have
    reached the last worker through a negative index."""
    end = json.dumps({"op": "terminate", "worker": target, "id": "x", "reason": "r"}).encode()
    supervisor._route(supervisor._workers[sender], end)
    assert _lines(supervisor) == [[], [], []]
