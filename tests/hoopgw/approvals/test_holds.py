"""Held statements whose store calls are slow (a PostgreSQL store's, off the reactor thread):
the store calls wait on a pool the test runs by hand; a Clock, an in-memory store and the fake
audit writer, no real threads or time."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from twisted.internet import defer

from hoopgw.approvals.common import ApprovalError
from hoopgw.approvals.holds import LOOKUP_REFUSED, RECORD_REFUSED, STOPPING
from hoopgw.errors import StoreError
from hoopgw.reviews import ReviewPolicy
from hoopgw.testing import make_command, make_session
from hoopgw.verdicts import Allow, Block, Hold

POLICY = ReviewPolicy(approvers=("dba",), required=1, timeout=60, valid_for=600)
HOLD = Hold(reason="write: DELETE needs approval", rule="write")

# The shared world (tests/hoopgw/approvals/world.py), loaded by tests/conftest.py.
helpers: Any = sys.modules["hoopgw_tests_approvals_world"]
ALICE = helpers.ALICE
World = helpers.World


@pytest.fixture
def slow() -> tuple[Any, Any]:
    calls, pool = helpers.slow_calls()
    return helpers.make_world(calls), pool


def hold(world: Any, text: str = "DELETE FROM t WHERE id = 1") -> tuple[Any, Any]:
    session = make_session()
    command = make_command(text, session_id=session.id)
    return session, world.service.hold(session, command, HOLD, POLICY)


def decide(world: Any, pool: Any, review_id: str) -> Any:
    """Alice approves ``review_id``; what the decision fired with (raised when it failed)."""
    decided = world.service.decide(review_id, ALICE, approve=True, reason="ok")
    pool.drain()
    return world.sync(decided)


def failed_with(d: defer.Deferred[Any], kind: type[BaseException]) -> bool:
    box: list[Any] = []
    d.addErrback(box.append)
    return bool(box) and box[0].check(kind) is not None


def test_a_hold_waits_for_its_store_calls_and_is_then_decided(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    assert len(pool.queued) == 1  # the look for an earlier approval
    assert world.store.list_reviews() == []
    pool.run_one()
    assert world.store.list_reviews() == []  # storing the review waits on the store too
    pool.drain()
    [review] = world.store.list_reviews()
    assert review.status == "pending" and not decision.called
    decided = world.service.decide(review.id, ALICE, approve=True, reason="ok")
    assert not decided.called and not decision.called  # the vote waits on the store
    pool.drain()
    assert world.result(decision) == Allow(reason=f"approved by alice in review {review.id}")
    assert world.sync(decided).decision_recorded_at is not None
    assert world.audit.kinds() == ["review_requested", "review_decided"]


def test_a_client_leaving_while_its_review_is_stored_withdraws_the_review(slow: Any) -> None:
    world, pool = slow
    session, decision = hold(world)
    pool.run_one()  # the look; now the review is on its way into the store
    decision.cancel()
    assert failed_with(decision, defer.CancelledError)
    pool.drain()
    [review] = world.store.list_reviews()
    assert review.status == "withdrawn"
    assert review.decision_reason == "the client cancelled or disconnected"
    assert world.audit.kinds() == ["review_requested", "review_decided"]
    assert world.events == [(review.id, "requested"), (review.id, "withdrawn")]
    assert world.sessions.held_statement(session.id) is None
    # Nobody can approve it now, and it opens no re-run.
    with pytest.raises(ApprovalError, match="is withdrawn"):
        decide(world, pool, review.id)
    _, again = hold(world)
    pool.drain()
    assert not again.called and len(world.store.list_reviews()) == 2


def test_the_core_timeout_while_the_review_is_stored_times_the_review_out(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.run_one()
    world.clock.advance(60)  # the core's approval timeout cancels the hold
    decision.cancel()
    pool.drain()
    [review] = world.store.list_reviews()
    assert review.status == "pending" and review.timed_out_at is not None
    assert world.audit.kinds() == ["review_requested", "review_timed_out"]
    # As for a hold that timed out: a later approval lets the identical statement run once.
    assert decide(world, pool, review.id).valid_until is not None
    _, rerun = hold(world)
    pool.drain()
    assert isinstance(world.result(rerun), Allow)


def test_a_client_leaving_before_the_look_answers_leaves_no_review(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    decision.cancel()
    pool.drain()
    assert world.store.list_reviews() == []
    assert world.audit.kinds() == []
    assert failed_with(decision, defer.CancelledError)


def test_an_approval_landing_after_the_client_left_runs_nothing(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.drain()
    [review] = world.store.list_reviews()
    decided = world.service.decide(review.id, ALICE, approve=True, reason="ok")
    pool.run_one()  # the vote is stored; the approval is on its way into the store
    decision.cancel()  # queued behind it: the withdrawal finds the review approved
    pool.drain()
    assert failed_with(decision, defer.CancelledError)
    approved = world.sync(decided)
    assert approved.status == "approved" and approved.valid_until is None
    # The approval opens no re-run: the identical statement needs a review of its own.
    _, again = hold(world)
    pool.drain()
    assert not again.called and len(world.store.list_reviews()) == 2


def test_a_withdrawal_landing_before_the_approval_refuses_it(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.drain()
    [review] = world.store.list_reviews()
    decision.cancel()  # the withdrawal is on its way into the store
    decided = world.service.decide(review.id, ALICE, approve=True, reason="ok")
    pool.drain()
    assert failed_with(decided, ApprovalError)
    assert world.store.get_review(review.id).status == "withdrawn"


@pytest.mark.parametrize(
    ("method", "reason"),
    [("find_rerun_approvals", LOOKUP_REFUSED), ("add_review", RECORD_REFUSED)],
)
def test_a_store_error_refuses_the_statement(
    slow: Any, monkeypatch: pytest.MonkeyPatch, method: str, reason: str
) -> None:
    world, pool = slow

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("the store is down")

    monkeypatch.setattr(world.store, method, broken)
    _, decision = hold(world)
    pool.drain()
    assert world.result(decision) == Block(reason=reason)
    assert world.store.list_reviews() == [] and world.audit.kinds() == []


def test_a_store_error_storing_the_decision_refuses_the_statement(
    slow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.drain()
    [review] = world.store.list_reviews()
    replace = world.store.replace_review

    def broken_once_decided(record: Any, **kwargs: Any) -> bool:
        if record.decision_recorded_at is not None:
            raise StoreError("the store is down")
        return bool(replace(record, **kwargs))

    monkeypatch.setattr(world.store, "replace_review", broken_once_decided)
    decided = world.service.decide(review.id, ALICE, approve=True, reason="ok")
    pool.drain()
    assert world.result(decision) == Block(reason="cannot record the decision; refused")
    assert failed_with(decided, StoreError)


def test_a_hold_timing_out_answers_once_the_time_out_is_stored(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.drain()
    [review] = world.store.list_reviews()
    world.clock.advance(60)
    assert not decision.called
    pool.drain()
    verdict = world.result(decision)
    assert isinstance(verdict, Block) and "not decided in time" in verdict.reason
    assert world.store.get_review(review.id).timed_out_at is not None
    # A later approval opens the re-run window: the identical statement runs once.
    assert decide(world, pool, review.id).valid_until is not None
    _, rerun = hold(world)
    pool.drain()
    assert isinstance(world.result(rerun), Allow)
    assert world.audit.kinds()[-1] == "review_rerun"


def test_a_review_stored_while_the_gateway_stops_ends_aborted(slow: Any) -> None:
    world, pool = slow
    _, decision = hold(world)
    pool.run_one()  # the review is on its way into the store
    stopped = world.service.stop()
    pool.drain()
    assert world.result(decision) == Block(reason=STOPPING)
    [review] = world.store.list_reviews()
    assert review.status == "aborted"
    assert world.result(stopped) is None
