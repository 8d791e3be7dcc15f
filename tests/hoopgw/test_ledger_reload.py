"""Tests for :mod:`hoopgw.ledger` across a config reload: a live session takes the connection's
newest chain at its next command; kept instances keep their state, replaced ones get
``session_closed`` exactly once, new ones are introduced with ``session_adopted`` and
``session_started``."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from hoopgw.hookspecs import HANDED_OVER
from hoopgw.ledger import CommandLedger
from hoopgw.plugin import hookimpl
from hoopgw.runtime.chain import PluginChain
from hoopgw.session import CommandOutcome, SessionInfo
from hoopgw.testing import make_command, make_session
from hoopgw.verdicts import Block, Hold, Verdict


class Observer:
    """Records every session and command hook it gets, tagged with its own label."""

    def __init__(self, label: str, events: list[tuple[str, ...]], *, refuse: str = "") -> None:
        self.label = label
        self.events = events
        self.refuse = refuse
        self.adopted_from: object | None = "never"

    @hookimpl
    def session_adopted(self, session: SessionInfo, previous: object | None) -> None:
        self.adopted_from = previous
        self.events.append((self.label, "adopted"))

    @hookimpl
    def session_started(self, session: SessionInfo) -> Block | None:
        self.events.append((self.label, "started"))
        return Block(reason=self.refuse) if self.refuse else None

    @hookimpl
    def client_command(self, command: Any) -> None:
        self.events.append((self.label, "command", command.text))

    @hookimpl
    def command_decided(self, command: Any, verdict: Verdict) -> None:
        self.events.append((self.label, "decided", command.text, type(verdict).__name__))

    @hookimpl
    def command_completed(self, command: Any, outcome: CommandOutcome) -> None:
        self.events.append((self.label, "completed", command.text))

    @hookimpl
    def session_closed(self, reason: str) -> None:
        self.events.append((self.label, "closed", reason))


def chain_of(*plugins: tuple[str, object], reactor: Any = None) -> PluginChain:
    return PluginChain(list(plugins), reactor=reactor or MemoryReactorClock())


def run(ledger: CommandLedger, text: str, *, complete: bool = True) -> Any:
    command = make_command(text, seq=ledger.next_seq())
    verdicts: list[Any] = []
    ledger.decide(command).addBoth(verdicts.append)
    if complete:
        ledger.complete(command, CommandOutcome(status="ok"))
    return command, verdicts


def of(events: list[tuple[str, ...]], label: str) -> list[tuple[str, ...]]:
    return [e[1:] for e in events if e[0] == label]


def test_the_session_keeps_its_chain_until_its_next_command() -> None:
    events: list[tuple[str, ...]] = []
    kept, old = Observer("kept", events), Observer("old", events)
    first = chain_of(("kept", kept), ("policy", old))
    ledger = CommandLedger(first, make_session())
    run(ledger, "before")
    new = Observer("new", events)
    first.successor = chain_of(("kept", kept), ("policy", new))
    assert ledger.chain is first  # nothing happens until the next command
    assert of(events, "new") == []
    run(ledger, "after")
    assert ledger.chain is first.successor
    assert of(events, "old") == [
        ("command", "before"),
        ("decided", "before", "Allow"),
        ("completed", "before"),
        ("closed", HANDED_OVER),
    ]
    assert of(events, "new") == [
        ("adopted",),
        ("started",),
        ("command", "after"),
        ("decided", "after", "Allow"),
        ("completed", "after"),
    ]
    assert new.adopted_from is old  # the replaced instance of the same plugin name
    # The kept instance is the same object: it saw both commands and nothing of the reload.
    assert of(events, "kept") == [
        ("command", "before"),
        ("decided", "before", "Allow"),
        ("completed", "before"),
        ("command", "after"),
        ("decided", "after", "Allow"),
        ("completed", "after"),
    ]
    ledger.close("client closed")
    assert of(events, "old").count(("closed", HANDED_OVER)) == 1
    assert ("closed", "client closed") not in of(events, "old")
    assert of(events, "kept")[-1] == ("closed", "client closed")
    assert of(events, "new")[-1] == ("closed", "client closed")


def test_a_plugin_new_to_the_connection_is_adopted_without_a_previous_instance() -> None:
    events: list[tuple[str, ...]] = []
    first = chain_of()
    ledger = CommandLedger(first, make_session())
    added = Observer("added", events)
    first.successor = chain_of(("masking", added))
    run(ledger, "after")
    assert added.adopted_from is None
    assert of(events, "added")[:2] == [("adopted",), ("started",)]


def test_an_open_command_completes_through_the_chain_that_decided_it() -> None:
    events: list[tuple[str, ...]] = []
    old = Observer("old", events)
    first = chain_of(("policy", old))
    ledger = CommandLedger(first, make_session())
    running, _ = run(ledger, "long", complete=False)  # a COPY, a tail -f on another channel
    new = Observer("new", events)
    first.successor = chain_of(("policy", new))
    run(ledger, "next")
    assert ("closed", HANDED_OVER) not in of(events, "old")  # it still owes "long"
    ledger.complete(running, CommandOutcome(status="ok"))
    assert of(events, "old")[-2:] == [("completed", "long"), ("closed", HANDED_OVER)]
    assert ("completed", "long") not in of(events, "new")


def test_the_session_closing_first_still_closes_a_replaced_instance_once() -> None:
    events: list[tuple[str, ...]] = []
    old = Observer("old", events)
    first = chain_of(("policy", old))
    ledger = CommandLedger(first, make_session())
    run(ledger, "long", complete=False)
    first.successor = chain_of(("policy", Observer("new", events)))
    run(ledger, "next")
    ledger.close("client closed")
    assert of(events, "old")[-2:] == [("completed", "long"), ("closed", HANDED_OVER)]
    assert [e for e in of(events, "old") if e[0] == "closed"] == [("closed", HANDED_OVER)]
    assert [e for e in of(events, "new") if e[0] == "closed"] == [("closed", "client closed")]


def test_two_reloads_before_the_next_command_take_the_newest_chain() -> None:
    events: list[tuple[str, ...]] = []
    first = chain_of(("policy", Observer("one", events)))
    ledger = CommandLedger(first, make_session())
    second = first.successor = chain_of(("policy", Observer("two", events)))
    third = second.successor = chain_of(("policy", Observer("three", events)))
    run(ledger, "next")
    assert ledger.chain is third
    assert of(events, "two") == []  # never part of the session: nothing owed to it
    assert of(events, "one") == [("closed", HANDED_OVER)]


def test_a_new_policy_refusing_the_session_ends_it() -> None:
    events: list[tuple[str, ...]] = []
    reactor = MemoryReactorClock()
    first = chain_of(("policy", Observer("old", events)), reactor=reactor)
    ended: list[str] = []
    ledger = CommandLedger(first, make_session(), end_session=ended.append)
    strict = Observer("new", events, refuse="identity not allowed any more")
    first.successor = chain_of(("policy", strict), reactor=reactor)
    _command, verdicts = run(ledger, "after", complete=False)
    assert isinstance(verdicts[0], Block)
    assert "identity not allowed any more" in verdicts[0].reason
    assert ("command", "after") not in of(events, "new")  # refused without asking
    assert of(events, "new")[-1] == ("decided", "after", "Block")
    reactor.advance(0)
    assert ended and "the reloaded config ended this session" in ended[0]
    assert ledger.decide_at_once(make_command("more", seq=ledger.next_seq())) is None


def test_a_failing_adoption_ends_the_session_and_skips_its_session_closed() -> None:
    events: list[tuple[str, ...]] = []

    class Failing(Observer):
        @hookimpl
        def session_adopted(self, session: SessionInfo, previous: object | None) -> None:
            raise RuntimeError("cannot take the state over")

    reactor = MemoryReactorClock()
    first = chain_of(("policy", Observer("old", events)), reactor=reactor)
    ended: list[str] = []
    ledger = CommandLedger(first, make_session(), end_session=ended.append)
    first.successor = chain_of(("policy", Failing("new", events)), reactor=reactor)
    _, verdicts = run(ledger, "after")
    assert isinstance(verdicts[0], Block)
    reactor.advance(0)
    assert ended
    ledger.close("ended")
    assert ("closed", "ended") not in of(events, "new")  # never introduced
    assert ("started",) not in of(events, "new")


def test_the_next_command_waits_for_the_introduction() -> None:
    events: list[tuple[str, ...]] = []
    pending: defer.Deferred[Any] = defer.Deferred()

    class Slow(Observer):
        @hookimpl
        def session_started(self, session: SessionInfo) -> defer.Deferred[Any]:
            self.events.append((self.label, "started"))
            return pending

    first = chain_of()
    ledger = CommandLedger(first, make_session())
    first.successor = chain_of(("recording", Slow("new", events)))
    command = make_command("after", seq=ledger.next_seq())
    assert ledger.decide_at_once(command) is None  # the introduction is pending
    verdicts: list[Any] = []
    ledger.decide(command).addBoth(verdicts.append)
    assert verdicts == [] and ("command", "after") not in of(events, "new")
    pending.callback(None)
    assert ("command", "after") in of(events, "new") and verdicts


def test_a_command_withdrawn_while_the_introduction_is_pending_is_decided_once() -> None:
    events: list[tuple[str, ...]] = []

    class Slow(Observer):
        @hookimpl
        def session_started(self, session: SessionInfo) -> defer.Deferred[Any]:
            return defer.Deferred()

    first = chain_of()
    ledger = CommandLedger(first, make_session())
    first.successor = chain_of(("recording", Slow("new", events)))
    command = make_command("after", seq=ledger.next_seq())
    ledger.decide(command).addErrback(lambda f: f.trap(defer.CancelledError))
    ledger.close("client closed")
    assert of(events, "new") == [
        ("adopted",),
        ("decided", "after", "Block"),
        ("completed", "after"),
        ("closed", "client closed"),
    ]


def test_a_session_started_on_a_retired_chain_is_refused_and_ended() -> None:
    """A client that was still logging in when a reload removed its connection, changed its
    protocol or made it read-only starts on the old runtime (its target login made without
    the new requirements): its commands are refused and it is ended, never run."""
    events: list[tuple[str, ...]] = []
    reactor = MemoryReactorClock()
    old = chain_of(("policy", Observer("old", events)), reactor=reactor)
    old.retired = 'connection "pg" now requires read-only sessions on the target'
    ended: list[str] = []
    ledger = CommandLedger(old, make_session(), end_session=ended.append)
    _, verdicts = run(ledger, "DELETE FROM t")
    [verdict] = verdicts
    assert isinstance(verdict, Block) and "read-only" in verdict.reason
    assert ("old", "command", "DELETE FROM t") not in events
    reactor.advance(0)
    assert ended and "read-only" in ended[0]
    assert ledger.decide_at_once(make_command("SELECT 1", seq=ledger.next_seq())) is None


class HoldsSessions:
    """Answers ``session_started`` with a Hold (the hook treats it as a Block)."""

    @hookimpl
    def session_started(self, session: SessionInfo) -> Hold:
        return Hold(reason="sessions need a ticket")


def test_a_new_instance_holding_the_session_at_its_start_ends_it() -> None:
    reactor = MemoryReactorClock()
    events: list[tuple[str, ...]] = []
    first = chain_of(("kept", Observer("kept", events)), reactor=reactor)
    ended: list[str] = []
    ledger = CommandLedger(first, make_session(), end_session=ended.append)
    run(ledger, "before")
    first.successor = chain_of(("policy", HoldsSessions()), reactor=reactor)
    _, verdicts = run(ledger, "after")
    [verdict] = verdicts
    assert isinstance(verdict, Block) and "sessions need a ticket" in verdict.reason
    reactor.advance(0)
    assert ended and "sessions need a ticket" in ended[0]
