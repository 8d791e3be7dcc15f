"""Progress of long work on the command line: records so far, at most once per interval.

Every long-running command (``audit verify``, ``audit export``, ``evidence``) reports the same
way, on standard error, so a person watching a terminal sees that work goes on and how fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Reports a running count on a stream of text, then the total.

    Call it with the number of records handled so far (or wrap an iterable with :meth:`track`);
    it writes a line when ``interval`` seconds passed since the last one. :meth:`finish` writes
    the final line.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        clock: Callable[[], float],
        verb: str = "read",
        interval: float = 1.0,
    ) -> None:
        """
        :param write: receives each report line (without a line end).
        :param clock: monotonic seconds (``time.monotonic``; a fake in tests).
        :param verb: what was done to the records in the end, e.g. ``exported``.
        :param interval: seconds between reports (0 reports every count).
        """
        self._write = write
        self._clock = clock
        self._verb = verb
        self._interval = interval
        self._started = clock()
        self._next = self._started + interval
        self.count = 0
        """The last count reported to this object."""

    def __call__(self, count: int) -> None:
        """Note ``count`` records so far; report it if ``interval`` passed since the last report."""
        self.count = count
        now = self._clock()
        if now >= self._next:
            self._next = now + self._interval
            self._report("read", count, now)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items`` unchanged, counting them as they pass."""
        count = self.count
        for item in items:
            count += 1
            self(count)
            yield item

    def finish(self, count: int | None = None) -> None:
        """Report the final ``count`` (by default, the last one noted)."""
        self._report(self._verb, self.count if count is None else count, self._clock())

    def _report(self, verb: str, count: int, now: float) -> None:
        elapsed = now - self._started
        rate = f", {count / elapsed:,.0f}/s" if elapsed > 0 else ""
        self._write(f"{verb} {count:,} records in {elapsed:.1f} s{rate}")
