"""Reconnection delays: exponential ceilings, full jitter, reset on a welcome."""

from __future__ import annotations

import random

import pytest

from hoopgw.agent.backoff import Backoff


def test_ceilings_double_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(7):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_delays_are_jittered_within_the_ceiling() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, rng=random.Random(7))
    delays = []
    for _ in range(200):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        delays.append(delay)
    # Full jitter: the delays at the ceiling of 4 s spread over the whole range.
    late = delays[10:]
    assert min(late) < 1.0 and max(late) > 3.0


def test_reset_makes_the_next_failure_the_first() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, rng=random.Random(3))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.ceiling() == 16.0
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, rng=random.Random(3))
    backoff.failures = 10_000
    assert backoff.ceiling() == 30.0


def test_initial_must_be_positive_and_at_most_the_maximum() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0, maximum=1)
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)
