"""The rules of access requests and just-in-time grants, on a Clock, an in-memory store and the
fake audit writer."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import pytest

from hoopgw.approvals.common import ApprovalError
from hoopgw.approvals.grants import GRANT_SWEEP_INTERVAL
from hoopgw.errors import StoreError
from hoopgw.session import Identity

# The shared world (tests/hoopgw/approvals/world.py), loaded by tests/conftest.py.
helpers: Any = sys.modules["hoopgw_tests_approvals_world"]
ALICE, EVE, AUDITOR, AGENT = helpers.ALICE, helpers.EVE, helpers.AUDITOR, helpers.AGENT
World = helpers.World
FakeLive = helpers.FakeLive
connection = helpers.connection


@pytest.fixture
def world() -> World:
    return helpers.make_world()


LEAD = Identity(name="lead", groups=frozenset({"leads"}))


def grant(world: World, duration: float = 600) -> Any:
    review = world.result(
        world.service.request_access(AGENT, connection="jit", duration=duration, reason="INC-1")
    )
    decided = world.result(world.service.decide(review.id, LEAD, approve=True, reason=""))
    return world.store.get_grant(decided.grant_id)


@pytest.mark.parametrize(
    ("who", "target", "duration", "reason", "message"),
    [
        (AGENT, "nope", 60, "x", "no connection named 'nope'"),
        (AGENT, "test", 60, "x", "does not use just-in-time access"),
        (ALICE, "jit", 60, "x", "may not use connection 'jit'"),
        (AGENT, "jit", 3601, "x", "at most 1h"),
        (AGENT, "jit", 60, " ", "a reason is required"),
    ],
)
def test_access_requests_are_checked(
    world: World, who: Identity, target: str, duration: float, reason: str, message: str
) -> None:
    with pytest.raises(ApprovalError, match=message):
        world.sync(
            world.service.request_access(who, connection=target, duration=duration, reason=reason)
        )


def test_an_approved_request_grants_access_until_it_expires(world: World) -> None:
    assert world.grants.active_grant("agent", "jit") is None
    granted = grant(world)
    assert world.grants.active_grant("agent", "jit") == granted
    assert world.audit.kinds() == ["review_requested", "review_decided", "grant_created"]
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    other = FakeLive(identity=AGENT, runtime=helpers.runtime("test"))
    world.sessions.add(live)  # type: ignore[arg-type]
    world.sessions.add(other)  # type: ignore[arg-type]
    world.clock.advance(599)
    assert live.ended == []
    world.clock.advance(1)
    assert world.grants.active_grant("agent", "jit") is None
    assert live.ended == [f"access grant {granted.id} expired"]
    assert other.ended == []
    assert world.audit.kinds()[-1] == "grant_expired"
    assert world.audit.records[-1].data["sessions_ended"] == [""]


def test_an_undecided_access_request_expires(world: World) -> None:
    review = world.result(
        world.service.request_access(AGENT, connection="jit", duration=600, reason="INC-1")
    )
    world.clock.advance(24 * 3600 - 1)
    assert world.store.get_review(review.id).status == "pending"
    world.clock.advance(1)
    expired = world.store.get_review(review.id)
    assert (expired.status, expired.decided_at) == ("expired", world.clock.seconds())
    assert expired.decision_reason == "not decided within 24h (jit_request_ttl)"
    record = world.audit.records[-1]
    assert (record.kind, record.time) == ("review_decided", world.clock.seconds())
    assert record.data["status"] == "expired" and record.data["by"] == "gateway"
    assert record.data["reason"] == expired.decision_reason
    with pytest.raises(ApprovalError, match="is expired") as refused:
        world.sync(world.service.decide(review.id, LEAD, approve=True, reason=""))
    assert refused.value.code == "conflict"
    assert world.service.list_reviews(AGENT, status="expired", limit=10) == [expired]
    assert world.grants.active_grant("agent", "jit") is None


def test_a_decided_access_request_does_not_expire(world: World) -> None:
    granted = grant(world)
    world.clock.advance(24 * 3600)
    assert world.store.get_review(granted.review_id).status == "approved"
    assert "expired" not in [r.status for r in world.store.list_reviews()]
    assert world.clock.getDelayedCalls() == []


def test_stop_cancels_the_expiry_of_access_requests(world: World) -> None:
    world.result(
        world.service.request_access(AGENT, connection="jit", duration=600, reason="INC-1")
    )
    world.result(world.service.stop())
    assert world.clock.getDelayedCalls() == []
    assert {r.status for r in world.store.list_reviews()} == {"aborted"}


def test_revocation_ends_sessions_and_is_limited(world: World) -> None:
    granted = grant(world)
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(live)  # type: ignore[arg-type]
    with pytest.raises(ApprovalError, match="may not revoke"):
        world.sync(world.grants.revoke(granted.id, EVE, "x"))
    revoked = world.result(world.grants.revoke(granted.id, LEAD, "done"))
    assert revoked.revoked_by == "lead" and revoked.status(world.clock.seconds()) == "revoked"
    assert live.ended == [f"access grant {granted.id} revoked"]
    with pytest.raises(ApprovalError, match="is revoked"):
        world.sync(world.grants.revoke(granted.id, LEAD, "again"))
    world.clock.advance(1000)  # the expiry timer was stopped
    assert world.audit.kinds().count("grant_expired") == 0


def test_start_ends_grants_that_expired_while_down(world: World) -> None:
    granted = grant(world)
    world.service.stop()
    world.clock.advance(700)
    world.result(world.service.start())
    assert world.store.get_grant(granted.id).ended_at is not None  # type: ignore[union-attr]
    assert world.audit.kinds()[-1] == "grant_expired"


def test_a_grant_ends_its_sessions_even_when_the_store_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hoopgw.errors import StoreError

    granted = grant(world)
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(live)  # type: ignore[arg-type]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk gone")

    monkeypatch.setattr(world.store, "replace_grant", broken)
    world.clock.advance(600)
    assert live.ended == [f"access grant {granted.id} expired"]


# -- security review ------------------------------------------------------------------------------


def test_grants_are_listed_to_the_grantee_its_approvers_auditors_and_admins(world: World) -> None:
    granted = grant(world)
    assert world.grants.list_grants(ALICE, active=False, limit=10) == []  # approver role only
    assert world.grants.list_grants(EVE, active=False, limit=10) == []
    for who in (AGENT, LEAD, AUDITOR):
        assert world.grants.list_grants(who, active=False, limit=10) == [granted]


def test_an_access_approval_whose_record_fails_grants_nothing(world: World) -> None:
    review = world.result(
        world.service.request_access(AGENT, connection="jit", duration=600, reason="INC-1")
    )
    world.audit.failing = True
    decided = world.service.decide(review.id, LEAD, approve=True, reason="")
    failure = world.result(decided)
    assert failure is not None and failure.check(StoreError)
    decided.addErrback(lambda _: None)
    assert world.grants.active_grant("agent", "jit") is None
    assert world.store.list_grants() == []


def test_a_session_registered_after_its_grant_ended_is_ended_by_the_sweep(world: World) -> None:
    # A protocol that registers a session only after its upstream login (SSH does) misses
    # the grant's end when the grant ends during that login.
    world.service.start()
    grant(world)
    world.clock.advance(600)  # the grant ends; nothing is registered yet
    late = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(late)  # type: ignore[arg-type]
    other = FakeLive(identity=AGENT, runtime=helpers.runtime("test"))  # not a jit connection
    world.sessions.add(other)  # type: ignore[arg-type]
    world.clock.advance(GRANT_SWEEP_INTERVAL)
    assert late.ended == ["no live access grant of 'agent' on 'jit'"]
    assert other.ended == []
    assert world.audit.kinds()[-1] == "grant_session_ended"
    world.service.stop()


def test_the_sweep_leaves_sessions_under_a_live_grant(world: World) -> None:
    world.service.start()
    grant(world)
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(live)  # type: ignore[arg-type]
    world.clock.advance(GRANT_SWEEP_INTERVAL * 3)
    assert live.ended == []
    world.service.stop()


def test_an_access_request_that_is_not_recorded_can_never_be_approved(world: World) -> None:
    world.audit.failing = True
    requested = world.service.request_access(AGENT, connection="jit", duration=600, reason="INC-1")
    assert world.result(requested).check(StoreError)
    requested.addErrback(lambda _: None)
    world.audit.failing = False
    [review] = world.store.list_reviews()
    assert review.status == "aborted"
    with pytest.raises(ApprovalError, match="is aborted"):
        world.sync(world.service.decide(review.id, LEAD, approve=True, reason=""))


def test_a_revocation_s_own_store_notice_leaves_the_ending_to_it(world: World) -> None:
    # With a PostgreSQL store the revocation's own NOTIFY can reach the gateway before the
    # store call's answer: its sweep ended the session as "no live access grant" first.
    granted = grant(world)
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(live)  # type: ignore[arg-type]
    replace = world.store.replace_grant

    def replace_then_notice(record: Any) -> None:
        replace(record)
        world.grants.grant_changed(record.id)

    world.store.replace_grant = replace_then_notice  # type: ignore[method-assign]
    world.result(world.grants.revoke(granted.id, LEAD, "done"))
    assert live.ended == [f"access grant {granted.id} revoked"]


def test_a_grant_changed_elsewhere_ends_its_sessions_at_once(world: World) -> None:
    granted = grant(world)
    live = FakeLive(identity=AGENT, runtime=helpers.runtime("jit"))
    world.sessions.add(live)  # type: ignore[arg-type]
    world.store.replace_grant(
        attrs.evolve(granted, revoked_at=world.clock.seconds(), revoked_by="lead")
    )
    world.grants.grant_changed(granted.id)
    assert live.ended == ["no live access grant of 'agent' on 'jit'"]
