"""Tests for hoopgw.audit.progress: the one way long commands report how far they are."""

from __future__ import annotations

from hoopgw.audit.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reports_at_most_once_per_interval_with_count_and_rate():
    clock = FakeClock()
    lines: list[str] = []
    progress = Progress(lines.append, clock=clock, verb="exported", interval=1.0)

    progress(10)
    clock.now += 0.5
    progress(20)
    clock.now += 0.5
    progress(1000)
    clock.now += 0.2
    progress(1100)
    clock.now += 1.0
    progress.finish(2000)

    assert lines == [
        "read 1,000 records in 1.0 s, 1,000/s",
        "exported 2,000 records in 2.2 s, 909/s",
    ]


def test_progress_without_elapsed_time_has_no_rate():
    lines: list[str] = []

    Progress(lines.append, clock=FakeClock(), verb="exported").finish(0)

    assert lines == ["exported 0 records in 0.0 s"]


def test_track_counts_items_and_finish_reports_the_last_count():
    clock = FakeClock()
    lines: list[str] = []
    progress = Progress(lines.append, clock=clock, verb="verified", interval=0)

    assert list(progress.track("abc")) == ["a", "b", "c"]
    progress.finish()

    assert lines == [f"read {n} records in 0.0 s" for n in (1, 2, 3)] + [
        "verified 3 records in 0.0 s"
    ]
