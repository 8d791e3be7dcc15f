"""Tests for :mod:`hoopgw.runtime.registry`: the live sessions of the gateway."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from hoopgw.errors import HeldStatement
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.runtime.throttle import CancelLimit


class Live:
    session_info: object = None

    def terminate(self, reason: str) -> None:
        """Not needed here."""


def test_registry_tracks_sessions() -> None:
    registry = SessionRegistry()
    first, second = Live(), Live()
    registry.add(first)
    registry.add(second)
    assert len(registry) == 2
    assert set(registry) == {first, second}
    registry.remove(first)
    assert list(registry) == [second]


def test_registry_iterates_over_a_copy() -> None:
    registry = SessionRegistry()
    sessions = [Live(), Live()]
    for session in sessions:
        registry.add(session)
    for session in registry:
        registry.remove(session)
    assert len(registry) == 0


def test_cancel_keys_are_unique_and_forgotten_with_the_session() -> None:
    registry = SessionRegistry()
    owner, other = Live(), Live()
    registry.add(owner)
    assert registry.add_cancel_key(1, b"k", owner)
    assert not registry.add_cancel_key(1, b"k", other)
    assert registry.by_cancel_key(1, b"k") is owner
    registry.remove(owner)
    registry.remove(owner)
    assert registry.by_cancel_key(1, b"k") is None
    assert registry.add_cancel_key(1, b"k", other)


def test_a_cancel_key_needs_both_the_process_id_and_the_secret() -> None:
    """Two targets may hand out the same process id: each session keeps its own secret, and a
    request with the right id but another session's secret (or none) reaches nobody."""
    registry = SessionRegistry()
    first, second = Live(), Live()
    assert registry.add_cancel_key(7, b"aaaa", first)
    assert registry.add_cancel_key(7, b"bbbb", second)
    assert registry.by_cancel_key(7, b"bbbb") is second
    assert registry.by_cancel_key(7, b"aaaa") is first
    assert registry.by_cancel_key(7, b"aaab") is None
    assert registry.by_cancel_key(7, b"") is None
    assert registry.by_cancel_key(8, b"aaaa") is None
    registry.remove(first)
    assert registry.by_cancel_key(7, b"aaaa") is None
    assert registry.by_cancel_key(7, b"bbbb") is second


class Waiting:
    """A live session whose protocol tells its client about a held statement."""

    def __init__(self, session_id: str) -> None:
        self.session_info = SimpleNamespace(id=session_id)
        self.told: list[object] = []

    def terminate(self, reason: str) -> None:
        """Not needed here."""

    def statement_held(self, statement: HeldStatement) -> None:
        self.told.append(statement)

    def statement_released(self, review_id: str) -> None:
        self.told.append(("released", review_id))


def test_a_held_statement_is_told_to_its_session_and_kept_until_released() -> None:
    registry = SessionRegistry()
    waiting, other, plain = Waiting("s1"), Waiting("s2"), Live()
    for session in (waiting, other, plain):
        registry.add(session)
    statement = HeldStatement(review_id="r1", command_seq=2, approvers=("dba",), hold_until=9.0)
    registry.statement_held("s1", statement)
    assert waiting.told == [statement] and other.told == []
    assert registry.held_statement("s1") == statement
    assert registry.held_statement("s2") is None
    registry.statement_released("s1", "another review")
    assert registry.held_statement("s1") == statement
    registry.statement_released("s1", "r1")
    assert registry.held_statement("s1") is None
    assert waiting.told == [statement, ("released", "r1")]


def test_a_session_that_cannot_tell_its_client_still_shows_its_review() -> None:
    registry = SessionRegistry()
    silent = Live()
    silent.session_info = SimpleNamespace(id="s3")
    registry.add(silent)
    statement = HeldStatement(review_id="r2", command_seq=1, approvers=(), hold_until=1.0)
    registry.statement_held("s3", statement)
    assert registry.held_statement("s3") == statement
    registry.statement_released("s3", "r2")
    assert registry.held_statement("s3") is None


class Cancellable(Live):
    def __init__(self) -> None:
        self.cancelled = 0

    def forward_cancel(self) -> None:
        self.cancelled += 1


def test_a_cancel_request_reaches_the_session_its_key_names() -> None:
    registry = SessionRegistry()
    session = Cancellable()
    registry.add_cancel_key(7, b"aaaa", session)
    asked: list[tuple[int, bytes]] = []
    registry.ask_peers = lambda pid, secret, _address: asked.append((pid, secret))
    registry.cancel(7, b"aaaa")
    assert session.cancelled == 1 and asked == []


def test_a_cancel_request_for_no_session_here_goes_to_the_other_workers() -> None:
    """With ``[gateway] workers``, the worker that takes the request may not hold the
    session: it asks the others, and one with the key forwards it (cancel_here)."""
    here, there = SessionRegistry(), SessionRegistry()
    session = Cancellable()
    there.add_cancel_key(7, b"aaaa", session)
    here.ask_peers = lambda pid, secret, _address: there.cancel_here(pid, secret)
    here.cancel(7, b"aaaa")
    assert session.cancelled == 1
    here.cancel(7, b"bbbb")  # a wrong secret: no worker cancels anything
    assert session.cancelled == 1
    assert not there.cancel_here(7, b"bbbb")


def test_a_cancel_request_without_other_workers_is_dropped() -> None:
    registry = SessionRegistry()
    registry.cancel(7, b"aaaa")  # nothing to do, nowhere to ask
    assert registry.ask_peers is None


def test_cancel_requests_matching_no_session_are_limited_per_address() -> None:
    """Guessing a secret takes many misses: past the address's budget its requests are dropped
    unread, neither compared here nor passed to the other workers; a request that matches
    spends nothing, so a client cancelling its own queries is never limited."""
    clock = Clock()
    registry = SessionRegistry(cancel_limit=CancelLimit(clock, burst=2, rate=1.0))
    session = Cancellable()
    registry.add_cancel_key(7, b"aaaa", session)
    asked: list[tuple[int, bytes]] = []
    registry.ask_peers = lambda pid, secret, _address: asked.append((pid, secret))
    outcomes: list[str] = []
    registry.on_cancel = outcomes.append
    for _ in range(5):
        assert registry.cancel(7, b"aaaa", "10.0.0.1:5000") == "forwarded"
    for guess in (b"bbbb", b"cccc", b"dddd"):
        registry.cancel(7, guess, "10.0.0.1:5001")
    assert asked == [(7, b"bbbb"), (7, b"cccc")]
    assert registry.cancel(7, b"aaaa", "10.0.0.1:5002") == "limited"  # dropped unread
    assert registry.cancel(7, b"aaaa", "10.0.0.2:5000") == "forwarded"  # another address
    assert session.cancelled == 6
    clock.advance(1)
    assert registry.cancel(7, b"aaaa", "10.0.0.1:5002") == "forwarded"
    assert (
        outcomes == ["forwarded"] * 5 + ["asked", "asked", "limited", "limited"] + ["forwarded"] * 2
    )


def test_workers_share_one_cancel_budget_per_address() -> None:
    """Every worker accepts from the same queue, so a guesser's connections spread over them:
    a miss one worker passes on is counted by the others too, and the address gets one
    budget in all, not one per worker."""
    clock = Clock()
    workers = [SessionRegistry(cancel_limit=CancelLimit(clock, burst=2, rate=1.0)) for _ in "ab"]
    for me in workers:
        peers = [w for w in workers if w is not me]
        me.ask_peers = lambda pid, secret, address, peers=peers: [
            p.cancel_for_peer(pid, secret, address) for p in peers
        ]
        me.tell_peers_matched = lambda address, peers=peers: [
            p.peer_matched(address) for p in peers
        ]
    a, b = workers
    assert [a.cancel(7, g, "10.0.0.1:1") for g in (b"bbbb", b"cccc")] == ["asked", "asked"]
    assert b.cancel(7, b"dddd", "10.0.0.1:2") == "limited"  # b counted a's misses
    session = Cancellable()
    a.add_cancel_key(7, b"aaaa", session)
    for _ in range(5):  # a client cancelling its own queries through b spends nothing
        assert b.cancel(7, b"aaaa", "10.0.0.3:1") == "asked"
    assert session.cancelled == 5
    assert (a.cancel(7, b"aaaa", "10.0.0.3:2"), b.cancel(7, b"aaaa", "10.0.0.3:3")) == (
        "forwarded",
        "asked",
    )
    clock.advance(1)
    assert b.cancel(7, b"eeee", "10.0.0.1:3") == "asked"
    assert a.cancel(7, b"ffff", "10.0.0.1:4") == "limited"
