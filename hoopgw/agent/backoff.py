"""Reconnection delays: exponential back-off with full jitter.

After the ``n``-th failure in a row the delay is drawn uniformly from
``[0, min(maximum, initial * 2**n)]`` ("full jitter", as AWS's architecture blog describes it):
many agents cut off at once do not come back in lock-step. A connection the gateway welcomed
resets the count (:meth:`Backoff.reset`); one it refused does not, so a revoked token does not
dial in a tight loop.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays before each reconnection attempt."""

    def __init__(
        self,
        *,
        initial: float = 0.5,
        maximum: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """
        :param initial: the ceiling of the first delay, in seconds.
        :param maximum: the largest ceiling, in seconds.
        :param rng: the random source (tests pass a seeded one).
        """
        if not 0 < initial <= maximum:
            raise ValueError("initial must be positive and not above maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.SystemRandom()
        self.failures = 0
        """Failures since the last welcomed connection."""

    def ceiling(self) -> float:
        """The largest delay the next :meth:`next_delay` may return."""
        return min(self.maximum, self.initial * 2.0 ** min(self.failures, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """The gateway welcomed the agent: the next failure counts as the first."""
        self.failures = 0
