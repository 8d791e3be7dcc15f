"""Tests for hoopgw.store.notices: change notices between instances, on a real database."""

from __future__ import annotations

import queue
from typing import Any

import attrs
import pytest

from hoopgw.reviews import GrantRecord, ReviewRecord
from hoopgw.secrets import make_verifier
from hoopgw.store.base import ApiKeyRecord
from hoopgw.store.notices import ChangeListener, parse_notice

postgresql = pytest.mark.parametrize("backend", ["postgresql"])


class ThreadReactor:
    """Collects what the listener hands to the reactor thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def callFromThread(self, function: Any, *args: Any) -> None:
        self.calls.put(args)


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ("review:0123456789ab", ("review", "0123456789ab")),
        ("ssh_key:SHA256:abc", ("ssh_key", "SHA256:abc")),
        ("key:", None),
        ("nonsense", None),
        ("session:1", None),
    ],
)
def test_parse_notice(payload: str, parsed: Any) -> None:
    assert parse_notice(payload) == parsed


@postgresql
def test_changes_made_through_one_store_reach_a_listener(store_url, open_test_store) -> None:
    store = open_test_store("gw-b")
    reactor = ThreadReactor()
    listener = ChangeListener(store_url, lambda *_: None, reactor, wait=0.2)
    listener.start()
    try:
        assert listener.listening.wait(10)
        key = ApiKeyRecord(
            key_id="0123456789ab",
            identity="agent",
            groups=("agents",),
            secret_sha256="0" * 64,
            scram=make_verifier("x", b"0123456789abcdef", 4096),
            created_at=1.0,
        )
        store.add_key(key)
        store.revoke_key(key.key_id, when=2.0)
        assert reactor.calls.get(timeout=10) == ("key", "0123456789ab")
        review = ReviewRecord(
            id="aaaaaaaaaaaa",
            kind="access",
            status="pending",
            requester="agent",
            requester_groups=(),
            connection="pg",
            reason="r",
            approvers=("leads",),
            required=1,
            created_at=1.0,
        )
        store.add_review(review)
        assert not store.replace_review(review, expected_status="approved")  # no change
        store.replace_review(attrs.evolve(review, status="denied"), expected_status="pending")
        assert reactor.calls.get(timeout=10) == ("review", "aaaaaaaaaaaa")
        grant = GrantRecord(
            id="bbbbbbbbbbbb",
            review_id="aaaaaaaaaaaa",
            identity="agent",
            connection="pg",
            reason="r",
            approved_by=("lead",),
            created_at=1.0,
            expires_at=2.0,
        )
        store.add_grant(grant)
        assert reactor.calls.get(timeout=10) == ("grant", "bbbbbbbbbbbb")
    finally:
        listener.stop()
