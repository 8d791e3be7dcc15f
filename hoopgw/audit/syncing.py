"""The audit journal's group syncs with ``[gateway] audit_durability = "os"``: the writer
process (:mod:`hoopgw.audit.process`) answers a batch once it is written to the journal, and
:class:`GroupSyncer` syncs the journal in groups, on a :class:`SyncSchedule`."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from hoopgw.audit.journal import AuditJournal
from hoopgw.errors import HoopgwError

__all__ = ["GroupSyncer", "SyncSchedule"]


class SyncSchedule:
    """When :class:`GroupSyncer` syncs the journal: as soon as something unsynced was written,
    but never sooner than ``interval`` seconds after the previous sync started. So the disk
    sees at most one sync per interval, however many records arrive, and a record is on disk at
    most ``interval`` plus one ``fdatasync`` after it was written. Pure: the caller passes the
    time."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._unsynced = False
        self._last_start: float | None = None

    def written(self) -> bool:
        """Something was written that no sync started so far covers; say whether nothing was
        waiting for a sync before (only then does the syncer need waking: else it is syncing,
        or waiting for the time :meth:`due_in` gave it)."""
        was_waiting = self._unsynced
        self._unsynced = True
        return not was_waiting

    def due_in(self, now: float) -> float | None:
        """Seconds from ``now`` until the next sync is due: 0 for now, None while nothing
        waits."""
        if not self._unsynced:
            return None
        if self._last_start is None:
            return 0.0
        return max(0.0, self._last_start + self.interval - now)

    def starting(self, now: float) -> None:
        """A sync starts at ``now``; it covers everything written before."""
        self._unsynced = False
        self._last_start = now


class GroupSyncer(threading.Thread):
    """The thread that syncs the journal in groups (``audit_durability = "os"``), on the
    :class:`SyncSchedule`. A sync that fails stops it and sets :attr:`failure`: the entries
    written since may never reach the disk, so every later batch is refused."""

    def __init__(
        self,
        journal: AuditJournal,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="audit-journal-sync", daemon=True)
        self._journal = journal
        self._schedule = SyncSchedule(interval)
        self._clock = clock
        self._cond = threading.Condition()
        self._finishing = False
        self.failure: str | None = None
        """Why the journal could not be synced; None while syncing works."""

    def written(self) -> None:
        """The journal holds unsynced entries."""
        with self._cond:
            # Waking the thread for every batch would cost two thread switches (and the GIL)
            # each time, for nothing: it waits for the due time of what is unsynced already.
            if self._schedule.written():
                self._cond.notify_all()

    def finish(self) -> None:
        """Sync what is unsynced at once, then end."""
        with self._cond:
            self._finishing = True
            self._cond.notify_all()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            # A defect here must not leave answered entries unsynced unnoticed: refuse all.
            self.failure = f"internal error of the audit journal sync: {exc!r}"
            sys.stderr.write(f"{self.failure}\n")
            raise

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due_in = self._schedule.due_in(self._clock())
                    if due_in is None and self._finishing:
                        return
                    if due_in == 0 or (due_in is not None and self._finishing):
                        break
                    self._cond.wait(due_in)
                self._schedule.starting(self._clock())
            try:
                self._journal.sync()
            except HoopgwError as exc:
                self.failure = str(exc)
                sys.stderr.write(f"{exc}; refusing every later audit entry\n")
                return
