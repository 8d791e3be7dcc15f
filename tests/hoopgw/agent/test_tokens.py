"""Agent tokens: made once, stored hashed, checked in constant time, revocable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hoopgw.agent.tokens import AgentTokens, check_agent_name
from hoopgw.errors import AuthenticationError, StoreError
from hoopgw.store import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "agents.db"))
    store.migrate()
    return store


def test_a_token_authenticates_its_agent_and_only_its_hash_is_stored(store: SQLiteStore) -> None:
    tokens = AgentTokens(store)
    token, record = tokens.create("edge", now=100.0)
    assert token.startswith(f"hga_{record.token_id}_")
    assert tokens.authenticate(token).name == "edge"
    stored = store.get_agent("edge")
    assert stored is not None and stored.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(stored)
    dump = "\n".join(store._conn.iterdump())
    assert token not in dump


def test_wrong_unknown_and_malformed_tokens_get_the_same_answer(store: SQLiteStore) -> None:
    tokens = AgentTokens(store)
    token, _record = tokens.create("edge", now=100.0)
    unknown = f"hga_{'f' * 12}_{token.rsplit('_', 1)[1]}"
    wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (wrong, unknown, "hga_nothing", "", token + "x"):
        with pytest.raises(AuthenticationError) as refused:
            tokens.authenticate(bad)
        assert str(refused.value) == "invalid agent token"
        assert token not in str(refused.value)


def test_a_revoked_token_is_refused_and_says_so(store: SQLiteStore) -> None:
    tokens = AgentTokens(store)
    token, _ = tokens.create("edge", now=100.0)
    assert tokens.revoke("edge", now=200.0)
    assert not tokens.revoke("edge", now=300.0)
    assert not tokens.revoke("nobody", now=300.0)
    with pytest.raises(AuthenticationError, match="has been revoked"):
        tokens.authenticate(token)


def test_names_are_checked_and_never_reused(store: SQLiteStore) -> None:
    tokens = AgentTokens(store)
    tokens.create("edge", now=1.0)
    tokens.revoke("edge", now=2.0)
    with pytest.raises(StoreError, match="exists already"):
        tokens.create("edge", now=3.0)
    for bad in ("", "Edge", "a b", "-x", "x" * 64, "é"):
        with pytest.raises(ValueError, match="must match"):
            check_agent_name(bad)


def test_the_store_keeps_each_agents_state(store: SQLiteStore) -> None:
    tokens = AgentTokens(store)
    tokens.create("b-edge", now=1.0)
    tokens.create("a-edge", now=2.0)
    store.agent_seen("a-edge", when=10.0, online=True, address="10.0.0.2:4000")
    [first, second] = tokens.list()
    assert (first.name, first.online, first.last_seen_at, first.address) == (
        "a-edge",
        True,
        10.0,
        "10.0.0.2:4000",
    )
    assert (second.name, second.online, second.last_seen_at) == ("b-edge", False, None)
