"""The review rules, on a Clock, an in-memory store and the fake audit writer."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import pytest

from hoopgw.approvals.common import ApprovalError, roles_of
from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.errors import StoreError
from hoopgw.reviews import ReviewPolicy
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity
from hoopgw.testing import FakeAuditWriter, make_command, make_session
from hoopgw.verdicts import Allow, Block, Hold

POLICY = ReviewPolicy(approvers=("dba",), required=1, timeout=60, valid_for=600)
HOLD = Hold(reason="write: DELETE needs approval", rule="write")

# The shared world (tests/hoopgw/approvals/world.py), loaded by tests/conftest.py.
helpers: Any = sys.modules["hoopgw_tests_approvals_world"]
ALICE, BOB, EVE, AUDITOR, AGENT = (
    helpers.ALICE,
    helpers.BOB,
    helpers.EVE,
    helpers.AUDITOR,
    helpers.AGENT,
)
World = helpers.World
connection = helpers.connection


@pytest.fixture
def world() -> World:
    return helpers.make_world()


def hold(world: World, text: str = "DELETE FROM t WHERE id = 1", **kw: Any) -> Any:
    session = make_session(**kw)
    return world.service.hold(session, make_command(text, session_id=session.id), HOLD, POLICY)


def test_approval_by_an_approver_releases_the_statement(world: World) -> None:
    decision = hold(world)
    assert not decision.called
    [review] = world.store.list_reviews()
    assert (review.status, review.requester, review.approvers) == ("pending", "agent", ("dba",))
    decided = world.result(world.service.decide(review.id, ALICE, approve=True, reason="ok"))
    assert decided.status == "approved" and decided.decided_by == "alice"
    assert decided.valid_until is None  # released at once, nothing to re-run
    assert world.result(decision) == Allow(reason=f"approved by alice in review {review.id}")
    assert world.audit.kinds() == ["review_requested", "review_decided"]
    assert world.events == [(review.id, "requested"), (review.id, "approved")]


@pytest.mark.parametrize("end", ["approve", "cancel", "time out"])
def test_the_live_session_knows_its_held_statement_until_the_review_ends(
    world: World, end: str
) -> None:
    session = make_session()
    command = make_command("DELETE FROM t WHERE id = 1", session_id=session.id)
    decision = world.service.hold(session, command, HOLD, POLICY)
    [review] = world.store.list_reviews()
    held = world.sessions.held_statement(session.id)
    assert held is not None
    assert (held.review_id, held.command_seq, held.approvers) == (
        review.id,
        command.seq,
        review.approvers,
    )
    assert held.hold_until == review.hold_until and held.reason == HOLD.reason
    if end == "approve":
        world.service.decide(review.id, ALICE, approve=True, reason="ok")
    elif end == "cancel":
        decision.cancel()
    else:
        world.clock.advance(300)
    assert world.sessions.held_statement(session.id) is None
    decision.addErrback(lambda failure: None)


def test_denial_refuses_with_the_reason(world: World) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    with pytest.raises(ApprovalError, match="a denial needs a reason"):
        world.sync(world.service.decide(review.id, ALICE, approve=False, reason=" "))
    world.service.decide(review.id, ALICE, approve=False, reason="not now")
    verdict = world.result(decision)
    assert isinstance(verdict, Block)
    assert verdict.reason == f"denied by alice in review {review.id}: not now"


@pytest.mark.parametrize(
    ("who", "code", "message"),
    [
        (Identity(name="agent", groups=frozenset({"agents", "dba"})), "forbidden", "own request"),
        (AUDITOR, "forbidden", "only members of dba"),
        (EVE, "not_found", "no review"),
    ],
)
def test_who_may_not_decide(world: World, who: Identity, code: str, message: str) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    with pytest.raises(ApprovalError, match=message) as refused:
        world.sync(world.service.decide(review.id, who, approve=True, reason=""))
    assert refused.value.code == code
    assert not decision.called


def test_several_distinct_approvals_may_be_required(world: World) -> None:
    session = make_session()
    policy = attrs.evolve(POLICY, required=2)
    decision = world.service.hold(session, make_command("DELETE FROM t"), HOLD, policy)
    [review] = world.store.list_reviews()
    world.service.decide(review.id, ALICE, approve=True, reason="")
    assert not decision.called
    with pytest.raises(ApprovalError, match=r"answered review .* already"):
        world.sync(world.service.decide(review.id, ALICE, approve=True, reason=""))
    world.service.decide(review.id, BOB, approve=True, reason="")
    assert isinstance(world.result(decision), Allow)
    assert world.store.get_review(review.id).decided_by == "alice,bob"  # type: ignore[union-attr]
    assert world.audit.kinds() == ["review_requested", "review_voted", "review_decided"]


def test_a_timed_out_review_allows_one_rerun_after_a_later_approval(world: World) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    world.clock.advance(60)
    verdict = world.result(decision)
    assert isinstance(verdict, Block) and f"review {review.id} was not decided in time" in (
        verdict.reason
    )
    assert world.store.get_review(review.id).timed_out_at is not None  # type: ignore[union-attr]
    decided = world.result(world.service.decide(review.id, ALICE, approve=True, reason=""))
    assert decided.valid_until == world.clock.seconds() + 600
    # Another statement, another identity: a new review.
    assert not hold(world, "DELETE FROM t WHERE id = 2").called
    assert not hold(world, identity="eve").called
    # The identical statement of the same identity: runs, once.
    assert isinstance(world.result(hold(world)), Allow)
    assert not hold(world).called
    assert "review_rerun" in world.audit.kinds()


def test_an_approval_for_a_rerun_expires(world: World) -> None:
    hold(world)
    [review] = world.store.list_reviews()
    world.clock.advance(60)
    world.service.decide(review.id, ALICE, approve=True, reason="")
    world.clock.advance(601)
    assert not hold(world).called


def test_the_core_timeout_cancelling_the_hold_counts_as_a_timeout(world: World) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    world.clock.advance(60)  # our timer fires first; a cancel now finds nothing held
    decision.cancel()
    assert world.store.get_review(review.id).status == "pending"  # type: ignore[union-attr]


def test_cancel_withdraws_the_review(world: World) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    decision.cancel()
    withdrawn = world.store.get_review(review.id)
    assert withdrawn is not None and withdrawn.status == "withdrawn"
    with pytest.raises(ApprovalError, match="is withdrawn"):
        world.sync(world.service.decide(review.id, ALICE, approve=True, reason=""))
    assert world.events[-1] == (review.id, "withdrawn")
    world.clock.advance(120)  # the hold timer was stopped
    assert world.store.get_review(review.id).timed_out_at is None  # type: ignore[union-attr]


def test_stop_and_start_abort_pending_reviews(world: World) -> None:
    decision = hold(world)
    hold(world, "DELETE FROM t WHERE id = 2")
    world.clock.advance(60)  # both time out, and stay pending (approvable)
    decision2 = hold(world, "DELETE FROM t WHERE id = 3")
    world.service.stop()
    assert isinstance(world.result(decision2), Block)
    assert "aborted: the gateway is stopping" in world.result(decision2).reason
    assert {r.status for r in world.store.list_reviews()} == {"aborted"}
    assert isinstance(world.result(decision), Block)
    assert isinstance(world.result(hold(world)), Block)  # stopping: refused at once


def test_start_aborts_reviews_a_crash_left_pending(world: World) -> None:
    hold(world)
    fresh = ReviewService(
        store=world.store,
        audit=world.audit,  # type: ignore[arg-type]
        reactor=world.clock,
        grants=world.grants,
        roles={},
        sessions=world.sessions,
        approval_timeout=300,
    )
    world.result(fresh.start())
    [review] = world.store.list_reviews()
    assert (review.status, review.decision_reason) == ("aborted", "the gateway restarted")


def test_no_approver_group_means_refused(world: World) -> None:
    service = ReviewService(
        store=world.store,
        audit=world.audit,  # type: ignore[arg-type]
        reactor=world.clock,
        grants=world.grants,
        roles={},
        sessions=world.sessions,
        approval_timeout=300,
    )
    session = make_session()
    policy = attrs.evolve(POLICY, approvers=())
    verdict = world.result(service.hold(session, make_command("DELETE FROM t"), HOLD, policy))
    assert isinstance(verdict, Block) and "no approver group" in verdict.reason


def test_hold_timeout_never_exceeds_the_gateway_approval_timeout(world: World) -> None:
    session = make_session()
    policy = attrs.evolve(POLICY, timeout=10_000)
    world.service.hold(session, make_command("DELETE FROM t"), HOLD, policy)
    [review] = world.store.list_reviews()
    assert review.hold_until == review.created_at + 300


def test_visibility(world: World) -> None:
    hold(world)
    assert len(world.service.list_reviews(AGENT, status=None, limit=10)) == 1  # own
    assert len(world.service.list_reviews(ALICE, status="pending", limit=10)) == 1  # approver
    assert len(world.service.list_reviews(AUDITOR, status=None, limit=10)) == 1  # role
    assert world.service.list_reviews(EVE, status=None, limit=10) == []


def test_older_visible_reviews_are_listed_behind_many_hidden_ones(world: World) -> None:
    hold(world)
    [mine] = world.store.list_reviews()
    for n in range(1001):
        hidden = attrs.evolve(
            mine,
            id=f"{n:012x}",
            created_at=mine.created_at + 1 + n,
            requester="x",
            approvers=("hr",),
        )
        world.store.add_review(hidden)
    assert world.service.list_reviews(ALICE, status=None, limit=1) == [mine]
    assert world.service.list_reviews(AGENT, status="pending", limit=1) == [mine]
    assert len(world.service.list_reviews(AUDITOR, status=None, limit=3)) == 3
    assert roles_of(AUDITOR, world.service.roles) == {"auditor"}


# -- just-in-time access ------------------------------------------------------------------------


def test_reviews_keep_the_recorded_text_and_reruns_match_the_real_one(world: World) -> None:
    session = make_session()
    masked = "UPDATE people SET ssn = '***' WHERE id = 1"

    def command(ssn: str) -> Any:
        text = f"UPDATE people SET ssn = '{ssn}' WHERE id = 1"
        return attrs.evolve(make_command(text), recorded_text=masked)

    world.service.hold(session, command("123-45-6789"), HOLD, POLICY)
    [review] = world.store.list_reviews()
    assert review.statement == masked
    world.clock.advance(60)
    world.service.decide(review.id, ALICE, approve=True, reason="")
    assert "123-45" not in repr([r.data for r in world.audit.records])
    # Same recorded text, different real statement: not what was approved.
    assert not world.service.hold(session, command("999-99-9999"), HOLD, POLICY).called
    assert isinstance(
        world.result(world.service.hold(session, command("123-45-6789"), HOLD, POLICY)), Allow
    )


def test_a_failing_store_never_breaks_a_cancel_or_a_timeout(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hoopgw.errors import StoreError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk gone")

    cancelled = hold(world)
    timed_out = hold(world, "DELETE FROM t WHERE id = 2")
    monkeypatch.setattr(world.store, "get_review", broken)
    cancelled.cancel()  # does not raise
    world.clock.advance(60)
    verdict = world.result(timed_out)
    assert isinstance(verdict, Block) and "was not decided in time" in verdict.reason


def test_the_approver_role_alone_shows_no_other_connections_reviews(world: World) -> None:
    # ALICE holds the approver role (dba); this review is for the hr group only.
    session = make_session()
    policy = attrs.evolve(POLICY, approvers=("hr",))
    world.service.hold(session, make_command("DELETE FROM salaries"), HOLD, policy)
    [review] = world.store.list_reviews()
    assert world.service.list_reviews(ALICE, status=None, limit=10) == []
    with pytest.raises(ApprovalError, match="no review") as refused:
        world.service.get(review.id, ALICE)
    assert refused.value.code == "not_found"
    hr = Identity(name="harry", groups=frozenset({"hr"}))
    assert world.service.list_reviews(hr, status=None, limit=10) == [review]
    admin = Identity(name="olga", groups=frozenset({"ops"}))
    assert world.service.list_reviews(admin, status=None, limit=10) == [review]


def test_an_approval_whose_record_fails_allows_no_rerun(world: World) -> None:
    hold(world)
    [review] = world.store.list_reviews()
    world.clock.advance(60)  # the hold timed out; a later approval would allow one re-run
    world.audit.failing = True
    world.service.decide(review.id, ALICE, approve=True, reason="").addErrback(lambda _: None)
    world.audit.failing = False
    rerun = hold(world)
    assert not rerun.called  # a new review, not the unrecorded approval
    assert len(world.store.list_reviews(status="pending")) == 1


def test_a_second_key_of_the_same_identity_neither_approves_its_own_nor_counts_twice(
    world: World,
) -> None:
    # Another key (or an OIDC token) of the same identity: same name, other credential.
    agent_as_approver = Identity(
        name="agent", groups=frozenset({"dba"}), method="oidc", credential_id="other"
    )
    decision = hold(world)
    [review] = world.store.list_reviews()
    with pytest.raises(ApprovalError, match="own request"):
        world.sync(world.service.decide(review.id, agent_as_approver, approve=True, reason=""))
    policy = attrs.evolve(POLICY, required=2)
    session = make_session()
    twice = world.service.hold(session, make_command("DELETE FROM u"), HOLD, policy)
    second = next(r for r in world.store.list_reviews() if r.statement == "DELETE FROM u")
    world.service.decide(second.id, ALICE, approve=True, reason="")
    alice_again = Identity(name="alice", groups=frozenset({"dba"}), credential_id="key-2")
    with pytest.raises(ApprovalError, match="already"):
        world.sync(world.service.decide(second.id, alice_again, approve=True, reason=""))
    assert not twice.called and not decision.called


def test_a_decided_or_withdrawn_review_takes_no_further_decision(world: World) -> None:
    decided = hold(world)
    [review] = world.store.list_reviews()
    world.service.decide(review.id, ALICE, approve=True, reason="")
    assert isinstance(world.result(decided), Allow)
    for who in (ALICE, BOB):  # a replay, and a late second approver
        with pytest.raises(ApprovalError, match="is approved") as refused:
            world.sync(world.service.decide(review.id, who, approve=False, reason="late"))
        assert refused.value.code == "conflict"
    withdrawn = hold(world, "DELETE FROM t WHERE id = 9")
    review = next(r for r in world.store.list_reviews() if r.status == "pending")
    withdrawn.addErrback(lambda _: None)
    withdrawn.cancel()
    with pytest.raises(ApprovalError, match="is withdrawn"):
        world.sync(world.service.decide(review.id, BOB, approve=True, reason=""))


def test_a_held_statement_whose_review_is_not_recorded_can_never_be_approved(
    world: World,
) -> None:
    world.audit.failing = True
    verdict = world.result(hold(world))
    assert isinstance(verdict, Block) and "cannot record the review" in verdict.reason
    world.audit.failing = False
    [review] = world.store.list_reviews()
    assert review.status == "aborted"
    with pytest.raises(ApprovalError, match="is aborted"):
        world.sync(world.service.decide(review.id, ALICE, approve=True, reason=""))
    assert not hold(world).called  # no re-run: a new review


def test_an_approval_that_cannot_be_recorded_refuses_the_held_statement(world: World) -> None:
    decision = hold(world)
    [review] = world.store.list_reviews()
    world.audit.manual = True  # the approval's record is not durable yet
    decided = world.service.decide(review.id, ALICE, approve=True, reason="")
    assert not decision.called  # nothing runs before the record is durable
    world.audit.failing = True
    world.audit.flush()
    verdict = world.result(decision)
    assert isinstance(verdict, Block) and verdict.reason == "cannot record the decision; refused"
    assert world.result(decided).check(StoreError)
    decided.addErrback(lambda _: None)


# -- approvals bind to the parameter values (issue 14, class 8) ------------------------------


def _bound(*values: bytes | None, format: int = 0, type: str = "23", masked: str = "") -> Any:
    from hoopgw.session import Parameter

    parameters = tuple(
        Parameter(
            value=v, format=format, type=type, shown=None if v is None else v.decode("latin-1")
        )
        for v in values
    )
    command = attrs.evolve(
        make_command("DELETE FROM t WHERE id = $1"),
        kind="parse",
        parameter_count=len(values),
        parameters=parameters,
    )
    if masked:
        command = attrs.evolve(command, recorded_parameters=tuple(masked for _ in values))
    return command


def test_a_review_shows_the_parameter_values_and_the_rerun_needs_the_same(world: World) -> None:
    session = make_session()
    decision = world.service.hold(session, _bound(b"1"), HOLD, POLICY)
    [review] = world.store.list_reviews()
    assert review.statement == "DELETE FROM t WHERE id = $1"
    assert review.parameters == ("1",)
    requested = [r.data for r in world.audit.records if r.kind == "review_requested"]
    assert requested[0]["parameters"] == ["1"]
    world.clock.advance(60)
    assert isinstance(world.result(decision), Block)
    world.service.decide(review.id, ALICE, approve=True, reason="")
    # The same text with another value, format, type or a NULL is other work: a new review.
    for other in (
        _bound(b"2"),
        _bound(b"1", format=1),
        _bound(b"1", type="20"),
        _bound(None),
        _bound(b"1", b"1"),
    ):
        assert not world.service.hold(session, other, HOLD, POLICY).called, other.parameters
    assert isinstance(world.result(world.service.hold(session, _bound(b"1"), HOLD, POLICY)), Allow)
    [rerun] = [r.data for r in world.audit.records if r.kind == "review_rerun"]
    assert rerun["parameters"] == ["1"]


def test_reviews_keep_masked_parameters_and_reruns_match_the_real_values(world: World) -> None:
    session = make_session()
    world.service.hold(session, _bound(b"4111111111111111", masked="****"), HOLD, POLICY)
    [review] = world.store.list_reviews()
    assert review.parameters == ("****",)
    world.clock.advance(60)
    world.service.decide(review.id, ALICE, approve=True, reason="")
    assert "4111" not in repr([r.data for r in world.audit.records])
    # Masked alike, but another real value: not what was approved.
    other = _bound(b"5555555555554444", masked="****")
    assert not world.service.hold(session, other, HOLD, POLICY).called
    same = _bound(b"4111111111111111", masked="****")
    assert isinstance(world.result(world.service.hold(session, same, HOLD, POLICY)), Allow)


def test_of_two_approvals_alike_in_the_review_the_one_with_the_real_values_is_used(
    world: World,
) -> None:
    session = make_session()
    first = _bound(b"4111111111111111", masked="****")
    second = _bound(b"5555555555554444", masked="****")
    for command in (first, second):
        world.service.hold(session, command, HOLD, POLICY)
    world.clock.advance(60)
    for review in world.store.list_reviews():
        world.service.decide(review.id, ALICE, approve=True, reason="")
    assert isinstance(world.result(world.service.hold(session, second, HOLD, POLICY)), Allow)
    assert isinstance(world.result(world.service.hold(session, first, HOLD, POLICY)), Allow)


def test_a_statement_only_prepared_needs_no_review_its_executions_do(world: World) -> None:
    session = make_session()
    prepare = attrs.evolve(
        make_command("DELETE FROM t WHERE id = $1"), kind="parse", prepared_only=True
    )
    verdict = world.result(world.service.hold(session, prepare, HOLD, POLICY))
    assert isinstance(verdict, Allow) and "each execution is reviewed" in verdict.reason
    assert world.store.list_reviews() == []
    assert not world.service.hold(session, _bound(b"1"), HOLD, POLICY).called


# -- several gateway instances on one store ---------------------------------------------------


@attrs.define
class Instances:
    """Two gateway instances' approval services on one store (as on a PostgreSQL store)."""

    world: World
    a: ReviewService
    b: ReviewService
    b_audit: FakeAuditWriter


@pytest.fixture
def instances(world: World) -> Instances:
    def service(instance: str, audit: FakeAuditWriter) -> ReviewService:
        sessions = SessionRegistry()
        grants = GrantService(
            store=world.store,
            audit=audit,  # type: ignore[arg-type]
            reactor=world.clock,
            connections={"test": connection()},
            roles={"approver": ("dba",)},
            sessions=sessions,
        )
        return ReviewService(
            store=world.store,
            audit=audit,  # type: ignore[arg-type]
            reactor=world.clock,
            grants=grants,
            roles={"approver": ("dba",)},
            sessions=sessions,
            approval_timeout=300,
            instance=instance,
            poll_interval=1.0,
        )

    b_audit = FakeAuditWriter()
    a, b = service("gw-a", world.audit), service("gw-b", b_audit)
    world.result(a.start())
    world.result(b.start())
    return Instances(world, a, b, b_audit)


def hold_on(service: ReviewService) -> Any:
    session = make_session()
    return service.hold(session, make_command("DELETE FROM t", session_id=session.id), HOLD, POLICY)


def test_a_statement_held_on_one_instance_runs_once_another_approves_it(
    instances: Instances,
) -> None:
    world = instances.world
    decision = hold_on(instances.a)
    [review] = world.store.list_reviews()
    assert review.instance == "gw-a"
    decided = world.result(instances.b.decide(review.id, ALICE, approve=True, reason="ok"))
    # Held elsewhere: no re-run window opens, the statement runs once, on gw-a.
    assert decided.valid_until is None
    assert decided.decision_recorded_at is not None
    assert not decision.called
    instances.a.review_changed(review.id)
    verdict = world.result(decision)
    assert isinstance(verdict, Allow)
    assert verdict.reason == f"approved by alice in review {review.id}"


def test_an_approval_from_another_instance_waits_for_its_record(instances: Instances) -> None:
    world = instances.world
    decision = hold_on(instances.a)
    [review] = world.store.list_reviews()
    instances.b_audit.manual = True
    instances.b.decide(review.id, ALICE, approve=True, reason="ok")
    assert world.store.get_review(review.id).status == "approved"  # type: ignore[union-attr]
    world.clock.advance(5)  # the look at held reviews finds it approved, but unrecorded
    assert not decision.called
    instances.b_audit.flush()
    world.clock.advance(1)
    assert isinstance(world.result(decision), Allow)


def test_an_approval_whose_record_fails_on_the_other_instance_never_runs(
    instances: Instances,
) -> None:
    world = instances.world
    decision = hold_on(instances.a)
    [review] = world.store.list_reviews()
    instances.b_audit.manual = instances.b_audit.failing = True
    failed = instances.b.decide(review.id, ALICE, approve=True, reason="ok")
    instances.b_audit.flush()
    failed.addErrback(lambda _: None)
    world.clock.advance(30)
    assert not decision.called
    world.clock.advance(30)  # the hold (POLICY: 60 s) times out
    assert world.result(decision).rule == "review-timeout"


def test_a_denial_on_another_instance_refuses_at_the_next_look(instances: Instances) -> None:
    world = instances.world
    decision = hold_on(instances.a)
    [review] = world.store.list_reviews()
    world.result(instances.b.decide(review.id, ALICE, approve=False, reason="not now"))
    world.clock.advance(1)
    verdict = world.result(decision)
    assert isinstance(verdict, Block)
    assert "denied by alice" in verdict.reason and "not now" in verdict.reason


def test_an_instance_that_starts_or_stops_aborts_only_its_own_reviews(
    instances: Instances,
) -> None:
    world = instances.world
    held_on_a = hold_on(instances.a)
    held_on_b = hold_on(instances.b)
    world.result(instances.b.stop())
    assert isinstance(world.result(held_on_b), Block)
    assert not held_on_a.called
    statuses = {r.instance: r.status for r in world.store.list_reviews()}
    assert statuses == {"gw-a": "pending", "gw-b": "aborted"}


def test_the_look_at_a_held_review_reads_the_store_off_the_reactor(instances: Instances) -> None:
    # With a PostgreSQL store the read runs on the store's threads (hoopgw.store.calls): the
    # statement is released when the answer comes, and a slow answer delays the next look.
    from twisted.internet import defer

    from hoopgw.store.calls import StoreCalls

    queued: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

    class Slow(StoreCalls):
        def call(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            queued.append((d, fn, args))
            return d

    world = instances.world
    decision = hold_on(instances.a)
    [review] = world.store.list_reviews()
    instances.a.calls = Slow(None)
    world.result(instances.b.decide(review.id, ALICE, approve=True, reason="ok"))
    world.clock.advance(1)
    world.clock.advance(1)  # the first look waits for its read: no second one
    assert len(queued) == 1 and not decision.called
    d, fn, args = queued.pop()
    d.callback(fn(*args))
    assert isinstance(world.result(decision), Allow)
