"""Tests for :mod:`hoopgw.runtime.registry`: the live sessions of the gateway."""

from __future__ import annotations

from hoopgw.runtime.registry import SessionRegistry


class Live:
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
