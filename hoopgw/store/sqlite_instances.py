"""The SQLite store's queries about several gateway instances: which chains there are, their
audit writers, and the failed logins they count together (the PostgreSQL store runs them
too)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hoopgw.store.base import WriterState
from hoopgw.store.sqlite_rows import writer_state


class SQLiteInstanceStore:
    """Mixed into :class:`~hoopgw.store.sqlite.SQLiteStore`; uses its ``_conn``, ``instance``
    and ``_errors_as_store_error``."""

    _conn: Any
    instance: str

    _errors_as_store_error: Callable[[str], contextlib.AbstractContextManager[None]]

    def instances(self) -> list[str]:
        """See :meth:`Store.instances`."""
        with self._errors_as_store_error("list the audit chains"):
            rows = self._conn.execute(
                "SELECT instance FROM audit_journal_marks"
                " UNION SELECT DISTINCT instance FROM audit_records ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def writer_started(self, journal: str, *, now: float) -> None:
        """See :meth:`Store.writer_started` (one writer per SQLite store: the journal's lock
        keeps a second one out)."""
        with self._errors_as_store_error("note the audit writer's start"):
            self._conn.execute(
                "INSERT INTO audit_writers (instance, journal, started_at, stopped_at)"
                " VALUES (?, ?, ?, NULL) ON CONFLICT (instance) DO UPDATE SET"
                " journal = excluded.journal, started_at = excluded.started_at, stopped_at = NULL",
                (self.instance, journal, now),
            )

    def writer_stopped(self, *, now: float) -> None:
        """See :meth:`Store.writer_stopped`."""
        with self._errors_as_store_error("note the audit writer's stop"):
            self._conn.execute(
                "UPDATE audit_writers SET stopped_at = ? WHERE instance = ?", (now, self.instance)
            )

    def writers(self) -> list[WriterState]:
        """See :meth:`Store.writers`."""
        with self._errors_as_store_error("read the audit writers"):
            rows = self._conn.execute(
                "SELECT instance, journal, started_at, stopped_at, NULL FROM audit_writers"
                " ORDER BY instance"
            ).fetchall()
        return [writer_state(row) for row in rows]

    # -- login back-off ------------------------------------------------------------------------

    def count_login_failure(self, host: str, *, now: float, forget_after: float) -> int:
        """See :meth:`Store.count_login_failure`: one atomic upsert (and the idle counts go)."""
        with self._errors_as_store_error("count a failed login"):
            self._conn.execute(
                "DELETE FROM login_failures WHERE last_at <= ? AND host <> ?",
                (now - forget_after, host),
            )
            row = self._conn.execute(
                "INSERT INTO login_failures (host, failures, last_at) VALUES (?, 1, ?)"
                " ON CONFLICT (host) DO UPDATE SET failures = CASE"
                " WHEN excluded.last_at - login_failures.last_at >= ? THEN 1"
                " ELSE login_failures.failures + 1 END, last_at = excluded.last_at"
                " RETURNING failures",
                (host, now, forget_after),
            ).fetchone()
        return int(row[0])
