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

    def drain(self) -> None:
        """Nothing unread: the lines a test routes are read already."""


@pytest.fixture
def supervisor() -> Supervisor:
    config: Any = SimpleNamespace(gateway=SimpleNamespace(workers=3, shutdown_grace=5))
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
    assert json.loads(supervisor._published["sessions", 3])["worker"] == 3


@pytest.mark.parametrize("sender, target", [(1, 3), (0, 0), (0, -1), (0, 4)])
def test_a_session_end_goes_only_from_worker_1_to_a_worker_that_exists(
    supervisor: Supervisor, sender: int, target: int
) -> None:
    """Only worker 1 serves the admin API that ends sessions; worker 0 or -1 would have
    reached the last worker through a negative index."""
    end = json.dumps({"op": "terminate", "worker": target, "id": "x", "reason": "r"}).encode()
    supervisor._route(supervisor._workers[sender], end)
    assert _lines(supervisor) == [[], [], []]


class FakeProcess:
    pid = 1234

    def __init__(self) -> None:
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


@pytest.fixture
def running(supervisor: Supervisor) -> Supervisor:
    """Every worker's process runs; spawning records the worker."""
    spawned: list[int] = []
    for worker in supervisor._workers:
        worker.process = FakeProcess()
    supervisor._spawn = lambda worker: spawned.append(worker.index)  # type: ignore[method-assign]
    supervisor.spawned = spawned  # type: ignore[attr-defined]
    return supervisor


def _answer(supervisor: Supervisor, index: int, **answer: Any) -> None:
    [asked] = [
        json.loads(line)
        for line in supervisor._workers[index - 1].control.lines  # type: ignore[union-attr]
        if json.loads(line)["op"] == "reload"
    ][-1:]
    line = json.dumps({"op": "reloaded", "id": asked["id"], **answer}).encode()
    supervisor._route(supervisor._workers[index - 1], line)


def _sent_ops(supervisor: Supervisor, index: int) -> list[dict[str, Any]]:
    lines = supervisor._workers[index - 1].control.lines  # type: ignore[union-attr]
    return [json.loads(line) for line in lines]


def test_sighup_asks_every_worker_and_logs_one_summary(running: Supervisor) -> None:
    from twisted.logger import LogLevel, globalLogPublisher

    logged: list[Any] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        running.hang_up()
        for k in (1, 2, 3):
            assert _sent_ops(running, k) == [{"op": "reload", "id": 1, "by": "SIGHUP"}]
            _answer(running, k, ok=True, result={"added": ["pg2"], "ended_sessions": []})
    finally:
        globalLogPublisher.removeObserver(logged.append)
    [summary] = [e for e in logged if e.get("log_namespace") == "hoopgw.workers"]
    assert summary["line"] == "config reload (by SIGHUP) applied by every worker (3)"
    assert summary["log_level"] == LogLevel.info
    assert running._reload is None and running.spawned == []  # type: ignore[attr-defined]


def test_workers_that_refuse_what_others_applied_are_restarted(running: Supervisor) -> None:
    """Two workers enforcing different configs is what a reload must not leave: the one that
    refused starts again, with the file's config; told to stop, it gets no new client."""
    for worker in running._workers:
        running._route(worker, b'{"op": "ready"}')
    running.hang_up()
    _answer(running, 1, ok=True, result={"added": [], "ended_sessions": ["a"]})
    _answer(running, 2, ok=False, error="cannot record the reload")
    _answer(running, 3, ok=True, result={"added": [], "ended_sessions": ["b"]})
    assert _sent_ops(running, 2)[-1] == {"op": "stop"}
    assert _sent_ops(running, 3)[-1]["op"] == "reload"  # nothing more for those that applied
    worker = running._workers[1]
    assert worker.restart_now
    assert [k for k, slot in running._handoff._slots.items() if slot.stopping] == [2]
    running._worker_ended(worker, Failure(error.ProcessDone(0)))
    assert running.spawned == [2] and worker.timer is None  # type: ignore[attr-defined]


def test_a_reload_every_worker_refuses_restarts_none(running: Supervisor) -> None:
    running.hang_up()
    for k in (1, 2, 3):
        _answer(running, k, ok=False, error="[gateway] changed")
    assert not any(w.restart_now for w in running._workers)
    assert all(_sent_ops(running, k)[-1]["op"] == "reload" for k in (1, 2, 3))


def test_a_worker_silent_past_the_timeout_is_restarted_killed_if_need_be(
    running: Supervisor,
) -> None:
    from hoopgw.runtime.reload_workers import RELOAD_TIMEOUT
    from hoopgw.runtime.workers import STOP_MARGIN

    clock: Any = running.reactor
    running.hang_up()
    _answer(running, 1, ok=True, result={"ended_sessions": []})
    _answer(running, 2, ok=True, result={"ended_sessions": []})
    clock.advance(RELOAD_TIMEOUT)
    silent = running._workers[2]
    assert silent.restart_now and running._reload is None
    assert _sent_ops(running, 3)[-1] == {"op": "stop"}
    clock.advance(5 + STOP_MARGIN)  # it does not answer that either
    assert silent.process.signals == ["KILL"]  # type: ignore[attr-defined]


def test_the_admin_api_s_reload_is_answered_with_every_worker_s_result(
    running: Supervisor,
) -> None:
    running._route(running._workers[0], b'{"op": "reload", "by": "root (admin API)"}')
    assert _sent_ops(running, 2) == [{"op": "reload", "id": 1, "by": "root (admin API)"}]
    # A second one while it runs is refused at once.
    running._route(running._workers[0], b'{"op": "reload", "by": "bob (admin API)"}')
    assert _sent_ops(running, 1)[-1] == {
        "op": "reload_result",
        "ok": False,
        "error": "another reload is being applied; try again",
    }
    _answer(running, 1, ok=True, result={"added": ["x"], "ended_sessions": ["s1"]})
    _answer(running, 2, ok=True, result={"added": ["x"], "ended_sessions": ["s2"]})
    _answer(running, 3, ok=False, error="the gateway is not serving")
    answer = _sent_ops(running, 1)[-1]
    assert answer["op"] == "reload_result" and answer["ok"]
    assert answer["result"]["ended_sessions"] == ["s1", "s2"]
    assert answer["result"]["workers"] == {
        "applied": [1, 2],
        "refused": {"3": "the gateway is not serving"},
        "restarted": [3],
    }


def test_only_worker_1_may_ask_for_a_reload(running: Supervisor) -> None:
    running._route(running._workers[1], b'{"op": "reload", "by": "x"}')
    assert running._reload is None


def test_a_sighup_during_a_reload_runs_after_it(running: Supervisor) -> None:
    running.hang_up()
    running.hang_up()
    for k in (1, 2, 3):
        _answer(running, k, ok=True, result={"ended_sessions": []})
    assert running._reload is not None and running._reload.ident == 2


def test_a_worker_that_ends_during_a_reload_counts_as_refused(running: Supervisor) -> None:
    running.hang_up()
    _answer(running, 1, ok=True, result={"ended_sessions": []})
    _answer(running, 2, ok=True, result={"ended_sessions": []})
    running._worker_ended(running._workers[2], Failure(error.ProcessTerminated(1)))
    assert running._reload is None  # summed up: it is started again by its back-off


def test_ready_and_load_reports_reach_the_handoff(supervisor: Supervisor) -> None:
    supervisor._route(supervisor._workers[1], b'{"op": "ready"}')
    assert supervisor._handoff.live() == {2: 0}
    supervisor._route(supervisor._workers[1], b'{"op": "load", "taken": 0, "ended": 0}')
    supervisor._worker_ended(supervisor._workers[1], Failure(error.ProcessTerminated(1)))
    assert supervisor._handoff.live() == {}


def test_published_metrics_go_to_worker_1_and_end_with_their_worker(
    supervisor: Supervisor,
) -> None:
    shown = {"op": "metrics", "worker": 9, "families": [{"name": "x"}]}
    supervisor._route(supervisor._workers[2], json.dumps(shown).encode())
    supervisor._worker_ended(supervisor._workers[2], Failure(error.ProcessTerminated(1)))
    sent = _sent_ops(supervisor, 1)
    assert sent[0]["worker"] == 3 and sent[0]["families"] == [{"name": "x"}]
    assert sent[-1] == {"op": "metrics", "worker": 3, "families": []}


def test_what_a_worker_reported_before_it_ended_counts_before_its_end(
    supervisor: Supervisor,
) -> None:
    """A worker reports a client taken, then ends; the parent may see the end first (the
    process's end and the link's data are separate events). Its clients not taken go to
    another, so the report is read first: a client the worker served is not passed again
    (served twice, from the middle of its stream)."""
    import socket

    from twisted.internet import unix
    from twisted.internet.testing import MemoryReactor

    from hoopgw.runtime.workers import _Control

    worker = supervisor._workers[1]
    parent_end, worker_end = socket.socketpair()
    parent_end.setblocking(False)
    control = _Control(supervisor, worker)
    control.makeConnection(unix.Server(parent_end, control, None, None, 1, MemoryReactor()))
    worker.control = control
    supervisor._route(worker, b'{"op": "ready"}')
    client, _ = socket.socketpair()
    supervisor._handoff.accepted(client, "tcp:5432")
    worker_end.sendall(b'{"op": "load", "taken": 1, "ended": 0}\n')
    worker_end.close()  # the process ended: every line it wrote waits, then the link's end
    supervisor._worker_ended(worker, Failure(error.ProcessTerminated(1)))
    assert client.fileno() == -1  # taken: the parent's copy closed, passed to nobody
    assert not supervisor._handoff._orphans


def _ready(supervisor: Supervisor, index: int, digest: str) -> None:
    line = json.dumps({"op": "ready", "digest": digest}).encode()
    supervisor._route(supervisor._workers[index - 1], line)


def test_a_worker_started_with_another_config_file_serves_no_client(running: Supervisor) -> None:
    """The file was changed (and not reloaded, or the reload refused by every worker): a
    worker restarted after a crash reads it, and would enforce another policy than the others.
    It is stopped until the others apply that file."""
    _ready(running, 1, "sha256:old")
    _ready(running, 2, "sha256:old")
    _ready(running, 3, "sha256:new")
    assert list(running._handoff.live()) == [1, 2]
    assert _sent_ops(running, 3)[-1] == {"op": "stop"}
    running._worker_ended(running._workers[2], Failure(error.ProcessTerminated(1)))
    running.hang_up()  # the others apply it
    for k in (1, 2):
        _answer(running, k, ok=True, result={"ended_sessions": []}, digest="sha256:new")
    running._workers[2].control = FakeControl()  # type: ignore[assignment]
    _ready(running, 3, "sha256:new")  # started again after its back-off
    assert list(running._handoff.live()) == [1, 2, 3]


def test_a_worker_that_applied_a_file_changed_during_the_reload_is_restarted(
    running: Supervisor,
) -> None:
    for k in (1, 2, 3):
        _ready(running, k, "sha256:old")
    running.hang_up()
    _answer(running, 1, ok=True, result={"ended_sessions": []}, digest="sha256:v2")
    _answer(running, 2, ok=True, result={"ended_sessions": []}, digest="sha256:v3")
    _answer(running, 3, ok=True, result={"ended_sessions": []}, digest="sha256:v2")
    assert [_sent_ops(running, k)[-1]["op"] for k in (1, 2, 3)] == ["reload", "stop", "reload"]


def test_a_worker_alone_serves_the_file_it_started_with(running: Supervisor) -> None:
    _ready(running, 1, "sha256:old")
    running._worker_ended(running._workers[0], Failure(error.ProcessTerminated(1)))
    running._workers[0].control = FakeControl()  # type: ignore[assignment]
    _ready(running, 1, "sha256:new")
    _ready(running, 2, "sha256:new")
    assert list(running._handoff.live()) == [1, 2]
