"""Tests for :mod:`hoopgw.ledger`: decided once, completed once, closed once."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from hoopgw.ledger import CommandLedger
from hoopgw.plugin import hookimpl
from hoopgw.runtime.chain import PluginChain
from hoopgw.session import CommandOutcome
from hoopgw.testing import FakeApprover, HookLog, make_command, make_session
from hoopgw.verdicts import Allow, Block, Hold


class Slow:
    """Answers every command with a Deferred the test fires."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []

    @hookimpl
    def client_command(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


class Holding:
    @hookimpl
    def client_command(self) -> Hold:
        return Hold(reason="risky", approvers=("dba",))


def ledger_with(*plugins: tuple[str, object]) -> tuple[CommandLedger, HookLog]:
    log = HookLog()
    chain = PluginChain([*plugins, ("log", log)], reactor=MemoryReactorClock())
    return CommandLedger(chain, make_session()), log


def test_commands_are_numbered_from_one() -> None:
    ledger, _ = ledger_with()
    assert [ledger.next_seq() for _ in range(3)] == [1, 2, 3]


def test_a_decided_command_completes_once_the_first_report_wins() -> None:
    ledger, log = ledger_with()
    command = make_command("SELECT 1")
    verdicts: list[Any] = []
    ledger.decide(command).addCallback(verdicts.append)
    assert verdicts == [Allow(reason="", plugin="")]
    assert ledger.complete(command, CommandOutcome(status="ok"))
    assert not ledger.complete(command, CommandOutcome(status="error"))
    ledger.close("client closed")
    assert not ledger.close("again")
    assert log.events == [
        ("decided", "SELECT 1", "Allow"),
        ("completed", "SELECT 1", "ok"),
        ("closed", "client closed"),
    ]


@pytest.mark.parametrize("held", [False, True], ids=["slow plugin", "held for approval"])
def test_closing_while_a_decision_is_pending_cancels_and_completes_it(held: bool) -> None:
    slow, approver = Slow(), FakeApprover()
    plugins = [("hold", Holding()), ("approver", approver)] if held else [("slow", slow)]
    ledger, log = ledger_with(*plugins)
    command = make_command("DELETE FROM t")
    failures: list[Any] = []
    ledger.decide(command).addErrback(failures.append)
    assert log.events == []
    ledger.close("client closed")
    assert failures[0].check(defer.CancelledError)
    assert approver.withdrawn == (1 if held else 0)
    assert log.events == [
        ("decided", "DELETE FROM t", "Block"),
        ("completed", "DELETE FROM t", "cancelled"),
        ("closed", "client closed"),
    ]


def test_closing_with_a_command_forwarded_aborts_it() -> None:
    ledger, log = ledger_with()
    command = make_command("SELECT pg_sleep(10)")
    ledger.decide(command)
    ledger.close("client closed")
    assert log.events[1:] == [
        ("completed", "SELECT pg_sleep(10)", "aborted"),
        ("closed", "client closed"),
    ]


def test_a_protocol_refusal_is_decided_and_completed_once() -> None:
    ledger, log = ledger_with()
    command = make_command("SELECT 'x'")
    ledger.decided(command, Block(reason="cannot read it"))
    ledger.complete(command, CommandOutcome(status="blocked"))
    ledger.close("client closed")
    assert log.events == [
        ("decided", "SELECT 'x'", "Block"),
        ("completed", "SELECT 'x'", "blocked"),
        ("closed", "client closed"),
    ]


def test_a_decision_withdrawn_before_the_close_completes_as_cancelled() -> None:
    # A protocol may cancel the decision itself (a cancel request, its own teardown) first.
    slow = Slow()
    ledger, log = ledger_with(("slow", slow))
    command = make_command("DELETE FROM t")
    ledger.decide(command).addErrback(lambda failure: failure.trap(defer.CancelledError))
    slow.pending[0].cancel()
    ledger.close("client closed")
    assert log.events == [
        ("decided", "DELETE FROM t", "Block"),
        ("completed", "DELETE FROM t", "cancelled"),
        ("closed", "client closed"),
    ]


def test_nothing_is_decided_after_the_close() -> None:
    slow = Slow()
    ledger, log = ledger_with(("slow", slow))
    ledger.close("client closed")
    failures: list[Any] = []
    ledger.decide(make_command("DELETE FROM t")).addErrback(failures.append)
    ledger.decided(make_command("SELECT 'x'", seq=2), Block(reason="cannot read it"))
    assert failures[0].check(defer.CancelledError)
    assert slow.pending == []
    assert log.events == [("closed", "client closed")]


def test_without_a_judge_a_command_is_decided_at_once() -> None:
    # No client_command implementation: Allow without a Deferred, reported once, and the
    # command counts as allowed (aborted, not cancelled, when the session ends).
    ledger, log = ledger_with()
    command = make_command("SELECT pg_sleep(10)")
    assert ledger.decide_at_once(command) == Allow()
    ledger.close("client closed")
    assert log.events == [
        ("decided", "SELECT pg_sleep(10)", "Allow"),
        ("completed", "SELECT pg_sleep(10)", "aborted"),
        ("closed", "client closed"),
    ]


def test_with_a_judge_or_after_the_close_nothing_is_decided_at_once() -> None:
    slow = Slow()
    ledger, log = ledger_with(("slow", slow))
    assert ledger.decide_at_once(make_command("DELETE FROM t")) is None
    assert log.events == []
    ledger.close("client closed")
    closed, _ = ledger_with()
    closed.close("client closed")
    assert closed.decide_at_once(make_command("SELECT 1")) is None
