"""Reviews, votes and grants in the store (SQLite and PostgreSQL): round trips,
compare-and-set, queries."""

from __future__ import annotations

import attrs
import pytest

from hoopgw.errors import StoreError
from hoopgw.reviews import GrantRecord, ReviewRecord, ReviewVote
from hoopgw.store.sqlite import SQLiteStore

REVIEW = ReviewRecord(
    id="aaaaaaaaaaaa",
    kind="statement",
    status="pending",
    requester="agent",
    requester_groups=("agents", "ops"),
    connection="pg",
    reason="write",
    approvers=("dba",),
    required=2,
    created_at=100.0,
    session_id="s1",
    command_seq=3,
    statement="DELETE FROM t",
    hold_until=160.0,
    valid_for=600.0,
)
GRANT = GrantRecord(
    id="bbbbbbbbbbbb",
    review_id="aaaaaaaaaaaa",
    identity="agent",
    connection="pg",
    reason="INC-1",
    approved_by=("lead",),
    created_at=100.0,
    expires_at=200.0,
)


@pytest.fixture
def store(any_store) -> SQLiteStore:  # type: ignore[no-untyped-def]
    # Each back end (conftest.py): the queries are shared, the dialects differ.
    return any_store


def test_a_review_reads_back_equal(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    assert store.get_review(REVIEW.id) == REVIEW
    assert store.get_review("cccccccccccc") is None
    with pytest.raises(StoreError, match="exists already"):
        store.add_review(REVIEW)


def test_replace_is_compare_and_set(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    approved = attrs.evolve(REVIEW, status="approved", decided_by="alice")
    assert store.replace_review(approved, expected_status="pending")
    denied = attrs.evolve(REVIEW, status="denied")
    assert not store.replace_review(denied, expected_status="pending")
    assert store.get_review(REVIEW.id) == approved


def test_lists_filter_and_order(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    newer = attrs.evolve(REVIEW, id="dddddddddddd", created_at=101.0, requester="eve")
    store.add_review(newer)
    assert [r.id for r in store.list_reviews()] == [newer.id, REVIEW.id]
    assert [r.id for r in store.list_reviews(requester="agent")] == [REVIEW.id]
    assert store.list_reviews(status="approved") == []
    assert len(store.list_reviews(limit=1)) == 1


def test_visibility_is_filtered_before_the_limit(store: SQLiteStore) -> None:
    store.add_review(REVIEW)  # oldest: approvers ("dba",), requested by agent
    for n in range(50):
        hidden = attrs.evolve(
            REVIEW, id=f"{n:012x}", created_at=200.0 + n, requester="eve", approvers=("hr",)
        )
        store.add_review(hidden)
    alice = ("alice", frozenset({"dba", "x"}))
    assert [r.id for r in store.list_reviews(visible_to=alice, limit=1)] == [REVIEW.id]
    assert [r.id for r in store.list_reviews(visible_to=("agent", frozenset()))] == [REVIEW.id]
    assert store.list_reviews(visible_to=("bob", frozenset({"ops"}))) == []
    assert len(store.list_reviews(visible_to=("bob", frozenset({"hr"})), limit=5)) == 5
    assert store.list_reviews(visible_to=alice, status="approved") == []


def test_grant_visibility_is_filtered_before_the_limit(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    store.add_grant(GRANT)  # oldest: agent's, on pg
    for n in range(50):
        hidden = attrs.evolve(
            GRANT, id=f"{n:012x}", created_at=200.0 + n, identity="eve", connection="hr"
        )
        store.add_grant(hidden)
    approver = ("alice", frozenset({"pg", "x"}))  # approves grants on pg
    assert [g.id for g in store.list_grants(visible_to=approver, limit=1)] == [GRANT.id]
    assert [g.id for g in store.list_grants(visible_to=("agent", frozenset()))] == [GRANT.id]
    assert store.list_grants(visible_to=("bob", frozenset())) == []
    assert len(store.list_grants(visible_to=("bob", frozenset({"hr"})), limit=5)) == 5
    assert store.list_grants(visible_to=approver, active_at=250.0) == []


def test_rerun_approval_lookup(store: SQLiteStore) -> None:
    usable = attrs.evolve(REVIEW, status="approved", valid_until=700.0)
    store.add_review(usable)
    kwargs = {"requester": "agent", "connection": "pg", "statement": "DELETE FROM t"}
    assert store.find_rerun_approvals(**kwargs, now=699.0) == [usable]
    assert store.find_rerun_approvals(**kwargs, now=700.0) == []
    assert store.find_rerun_approvals(**{**kwargs, "statement": "DELETE FROM u"}, now=1) == []
    store.replace_review(attrs.evolve(usable, used_at=300.0), expected_status="approved")
    assert store.find_rerun_approvals(**kwargs, now=400.0) == []


def test_rerun_approvals_match_the_parameter_values_too(store: SQLiteStore) -> None:
    bound = attrs.evolve(
        REVIEW,
        status="approved",
        valid_until=700.0,
        statement="DELETE FROM t WHERE id = $1",
        parameters=("1", None),
    )
    store.add_review(bound)
    assert store.get_review(bound.id) == bound  # NULL and text values read back as written
    kwargs = {"requester": "agent", "connection": "pg", "statement": bound.statement, "now": 1.0}
    assert store.find_rerun_approvals(**kwargs, parameters=("1", None)) == [bound]
    assert store.find_rerun_approvals(**kwargs, parameters=("2", None)) == []
    assert store.find_rerun_approvals(**kwargs, parameters=("1", "")) == []
    assert store.find_rerun_approvals(**kwargs) == []


def test_votes_are_one_per_identity(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    vote = ReviewVote(review_id=REVIEW.id, identity="alice", approve=True, reason="", decided_at=1)
    store.add_vote(vote)
    with pytest.raises(StoreError):
        store.add_vote(attrs.evolve(vote, approve=False))
    assert store.list_votes(REVIEW.id) == [vote]


def test_grants(store: SQLiteStore) -> None:
    store.add_review(REVIEW)
    store.add_grant(GRANT)
    assert store.get_grant(GRANT.id) == GRANT
    assert store.list_grants(identity="agent", connection="pg", active_at=150.0) == [GRANT]
    assert store.list_grants(active_at=200.0) == []
    revoked = attrs.evolve(GRANT, revoked_at=120.0, revoked_by="lead")
    store.replace_grant(revoked)
    assert store.list_grants(active_at=150.0) == []
    assert store.list_grants() == [revoked]
    assert revoked.status(150.0) == "revoked" and GRANT.status(250.0) == "expired"
