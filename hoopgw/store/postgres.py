"""The shared store: one PostgreSQL database that several gateway instances use at once.

``postgresql://USER@HOST:PORT/DATABASE`` (a libpq URL; a password in it is never shown in an
error). Each gateway instance appends to its own hash chain, named by its instance id
(``[gateway] instance``), with its own ``seq`` from 1; keys, SSH keys, sessions, reviews and
grants are shared. The schema comes from the same migrations as SQLite's
(:mod:`hoopgw.store.migrations`, rendered with :data:`~hoopgw.store.migrations.POSTGRESQL`).

The queries are :class:`~hoopgw.store.sqlite.SQLiteStore`'s: they are written in the subset of
SQL both databases run alike, and :class:`PgConnection` gives them the slice of
:class:`sqlite3.Connection` they use (``?`` placeholders, ``BEGIN``/``COMMIT`` statements,
:mod:`sqlite3` exception types), so each query exists once. :class:`PostgresStore` overrides
the few places where the dialects differ. Connections come from a :mod:`psycopg_pool` pool:
one is pinned from ``BEGIN`` to ``COMMIT`` or ``ROLLBACK``, any other statement borrows one,
and a connection that broke is replaced at the next checkout.

An append locks its instance's chain head (``pg_advisory_xact_lock``), so two writers of one
chain cannot both take the same ``seq``, and the ``(instance, seq)`` unique index refuses it
if they ever did.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.logger import Logger

from hoopgw.audit.chain import AuditRecord
from hoopgw.errors import StoreError
from hoopgw.reviews import GrantRecord, ReviewRecord
from hoopgw.store import migrations
from hoopgw.store.base import WriterState
from hoopgw.store.calls import STORE_THREADS
from hoopgw.store.notices import CHANNEL
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.store.sqlite_rows import audit_record, writer_state

log = Logger(namespace="hoopgw.store")

POOL_SIZE = STORE_THREADS + 1
"""Most connections one store object keeps open: one per thread of the gateway's store calls
(:mod:`hoopgw.store.calls`) and one for the reactor thread (the audit writer, in its own
process, pins one per transaction)."""

CONNECT_TIMEOUT = 10
"""Seconds to wait for the server when connecting."""

WRITER_LOCKS = 0x686F6F70
"""First key of the advisory locks that keep one audit writer per instance (the second is
``hashtext(instance)``)."""


def redacted(url: str) -> str:
    """``url`` without its password (and query string), for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class _Rows:
    """What :meth:`PgConnection.execute` returns: the rows, read at once, and the row count."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


def _query(sql: str) -> str:
    # The store's statements never hold a literal '?' or '%': placeholders only.
    return sql.replace("%", "%%").replace("?", "%s")


def _parameters(params: Sequence[Any]) -> tuple[Any, ...]:
    # SQLite keeps booleans as integers in INTEGER columns; PostgreSQL's BIGINT wants an int.
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


@contextlib.contextmanager
def _as_sqlite_errors() -> Iterator[None]:
    """Raise psycopg's errors as the :mod:`sqlite3` types the store's queries catch."""
    import psycopg
    import psycopg_pool

    try:
        yield
    except psycopg.IntegrityError as exc:
        raise sqlite3.IntegrityError(str(exc).strip()) from exc
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise sqlite3.OperationalError(str(exc).strip()) from exc


class _ThreadState(threading.local):
    pinned: Any = None
    total_changes = 0


class PgConnection:
    """The slice of :class:`sqlite3.Connection` (autocommit mode) the store's queries use, on a
    pool of psycopg connections.

    Safe to share between threads (:mod:`hoopgw.store.calls` runs the gateway's store calls on
    several): each thread borrows its own connection per statement, pins its own for a
    transaction, and counts its own changes.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._state = _ThreadState()

    @property
    def _pinned(self) -> Any:
        return self._state.pinned

    @_pinned.setter
    def _pinned(self, conn: Any) -> None:
        self._state.pinned = conn

    @property
    def total_changes(self) -> int:
        """Rows changed by the statements this thread ran through this object (as sqlite3's)."""
        return self._state.total_changes

    @total_changes.setter
    def total_changes(self, count: int) -> None:
        self._state.total_changes = count

    @property
    def in_transaction(self) -> bool:
        """Whether this thread has a ``BEGIN`` open."""
        return self._pinned is not None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        """Run one statement; ``BEGIN`` pins a connection until ``COMMIT`` or ``ROLLBACK``."""
        word = sql.strip().split(None, 1)[0].upper()
        with _as_sqlite_errors():
            if word == "BEGIN":
                if self._pinned is not None:
                    raise sqlite3.OperationalError("a transaction is open already")
                self._pinned = self._pool.getconn()
            elif word in ("COMMIT", "ROLLBACK") and self._pinned is not None:
                conn, self._pinned = self._pinned, None
                try:
                    conn.execute(sql)
                finally:
                    self._pool.putconn(conn)
                return _Rows([], 0)
            if self._pinned is not None:
                return self._run(self._pinned, sql, params)
            with self._pool.connection() as conn:
                return self._run(conn, sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _Rows:
        """Run one statement once per parameter row."""
        with _as_sqlite_errors():
            if self._pinned is not None:
                return self._run_many(self._pinned, sql, rows)
            with self._pool.connection() as conn:
                return self._run_many(conn, sql, rows)

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> _Rows:
        cursor = conn.execute(_query(sql), _parameters(params))
        rows = cursor.fetchall() if cursor.description is not None else []
        changed = max(cursor.rowcount, 0) if cursor.description is None else 0
        self.total_changes += changed
        return _Rows(rows, cursor.rowcount)

    def _run_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> _Rows:
        with conn.cursor() as cursor:
            cursor.executemany(_query(sql), [_parameters(row) for row in rows])
            self.total_changes += max(cursor.rowcount, 0)
            return _Rows([], cursor.rowcount)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A psycopg connection of the pool, for what the slice above cannot do."""
        with _as_sqlite_errors(), self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        """Close every connection of the pool."""
        if self._pinned is not None:
            self._pool.putconn(self._pinned)
            self._pinned = None
        self._pool.close()


class PostgresStore(SQLiteStore):
    """A :class:`~hoopgw.store.base.Store` in a PostgreSQL database shared by gateway instances.

    See the module docstring for why it shares :class:`SQLiteStore`'s queries.
    """

    _APPROVER_MATCH = (
        "EXISTS (SELECT 1 FROM json_array_elements_text(reviews.approvers::json) AS a (value)"
        " WHERE a.value IN ({marks}))"
    )

    def __init__(self, url: str, *, instance: str, pool_size: int = POOL_SIZE) -> None:
        """
        :param url: a ``postgresql://`` URL.
        :param instance: this gateway instance's id: the chain it appends to.
        :raises StoreError: if the server cannot be reached or refuses the login.
        """
        import psycopg
        import psycopg_pool

        self.path = redacted(url)
        self.instance = instance
        self._url = url
        try:
            # One connection first, so that a wrong host or password is reported as the server
            # said it (the pool would only time out).
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store {self.path}: {exc}") from exc
        pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name="hoopgw-store",
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout as exc:
            pool.close()
            raise StoreError(f"cannot open the PostgreSQL store {self.path}: {exc}") from exc
        self._conn: Any = PgConnection(pool)
        self._writer_lock: Any = None

    def writer_started(self, journal: str, *, now: float) -> None:
        """See :meth:`Store.writer_started`: a session-level advisory lock on the instance id,
        held on a connection of its own until :meth:`close`, keeps a second writer out."""
        import psycopg

        try:
            lock = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store {self.path}: {exc}") from exc
        try:
            row = lock.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (WRITER_LOCKS, self.instance)
            ).fetchone()
        except psycopg.Error as exc:
            lock.close()
            raise StoreError(f"cannot lock instance {self.instance!r}: {exc}") from exc
        if not (row and row[0]):
            lock.close()
            holder = next((w.journal for w in self.writers() if w.instance == self.instance), "")
            raise StoreError(
                f"an audit writer of instance {self.instance!r} runs already (journal {holder}):"
                " give each gateway sharing the store its own [gateway] instance"
            )
        self._writer_lock = lock
        super().writer_started(journal, now=now)

    def writers(self) -> list[WriterState]:
        """See :meth:`Store.writers`: ``running`` says whether the writer holds its lock."""
        with self._errors_as_store_error("read the audit writers"):
            rows = self._conn.execute(
                "SELECT w.instance, w.journal, w.started_at, w.stopped_at, EXISTS (SELECT 1"
                " FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
                " AND l.classid = ? AND l.objid = (hashtext(w.instance)::bigint & 4294967295)::oid"
                " AND l.objsubid = 2) FROM audit_writers AS w ORDER BY w.instance",
                (WRITER_LOCKS,),
            ).fetchall()
        return [writer_state(row) for row in rows]

    def chain(self, instance: str) -> PostgresStore:
        """See :meth:`Store.chain`: a store object on the same pool."""
        if instance == self.instance:
            return self
        other = object.__new__(PostgresStore)
        other.__dict__.update(self.__dict__)
        other.instance = instance
        return other

    def migrate(self) -> None:
        """See :meth:`Store.migrate`."""
        migrations.migrate(self._conn, dialect=migrations.POSTGRESQL)

    def close(self) -> None:
        """See :meth:`Store.close` (it also lets go of the instance's writer lock)."""
        if self._writer_lock is not None:
            self._writer_lock.close()
            self._writer_lock = None
        self._conn.close()

    def writable(self) -> bool:
        """See :meth:`Store.writable`: the server answers and is no read-only standby."""
        try:
            row = self._conn.execute(
                "SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'"
            ).fetchone()
        except sqlite3.Error:
            return False
        return bool(row and row[0])

    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        """See :meth:`Store.records`: read through a server-side cursor, 1000 rows at a time."""
        with self._errors_as_store_error("read audit records"), self._conn.connection() as conn:
            with conn.transaction(), conn.cursor(name="hoopgw_records") as cursor:
                cursor.itersize = 1000
                cursor.execute(
                    "SELECT seq, kind, session_id, time, data, prev_hash, hash, instance, format"
                    " FROM audit_records WHERE instance = %s AND seq > %s ORDER BY seq",
                    (self.instance, after_seq),
                )
                for row in cursor:
                    yield audit_record(row)

    def session_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """See :meth:`Store.session_ids_starting` (by code point, whatever the collation)."""
        with self._errors_as_store_error("find sessions"):
            rows = self._conn.execute(
                'SELECT id FROM sessions WHERE id COLLATE "C" >= ? AND id COLLATE "C" < ?'
                ' ORDER BY id COLLATE "C" LIMIT ?',
                (prefix, prefix + "\U0010ffff", limit),
            ).fetchall()
        return [row[0] for row in rows]

    # -- change notices for the other instances (hoopgw.store.notices) ------------------------

    def replace_review(self, review: ReviewRecord, *, expected_status: str) -> bool:
        """See :meth:`ReviewStore.replace_review`; a change is announced."""
        replaced = super().replace_review(review, expected_status=expected_status)
        if replaced:
            self._announce("review", review.id)
        return replaced

    def add_grant(self, grant: GrantRecord) -> None:
        """See :meth:`ReviewStore.add_grant`; announced."""
        super().add_grant(grant)
        self._announce("grant", grant.id)

    def replace_grant(self, grant: GrantRecord) -> None:
        """See :meth:`ReviewStore.replace_grant`; announced."""
        super().replace_grant(grant)
        self._announce("grant", grant.id)

    def revoke_key(self, key_id: str, *, when: float) -> bool:
        """See :meth:`Store.revoke_key`; a revocation is announced."""
        revoked = super().revoke_key(key_id, when=when)
        if revoked:
            self._announce("key", key_id)
        return revoked

    def revoke_ssh_key(self, fingerprint: str, *, when: float) -> bool:
        """See :meth:`SshKeyStore.revoke_ssh_key`; a revocation is announced."""
        revoked = super().revoke_ssh_key(fingerprint, when=when)
        if revoked:
            self._announce("ssh_key", fingerprint)
        return revoked

    def _announce(self, kind: str, ident: str) -> None:
        # After the change is committed, so a listener reads it. A lost notice only delays
        # the other instances until their next look at the store.
        try:
            self._conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{kind}:{ident}"))
        except sqlite3.Error as exc:
            log.warn(
                "cannot announce a change of {kind} {ident}: {why}", kind=kind, ident=ident, why=exc
            )

    def sync(self) -> None:
        """See :meth:`Store.sync`: every commit is synced already."""

    @contextlib.contextmanager
    def _unsynced(self, unsynced: bool) -> Iterator[None]:
        # Always synced: the server may crash while this writer goes on, and its journal
        # would then be emptied of entries the store lost.
        yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # The chain head is read at the start of an append: the lock (on the instance id) keeps
        # a second writer of the same chain out until this one commits.
        self._conn.execute("BEGIN")
        try:
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (self.instance,))
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _errors_as_store_error(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, TypeError, ValueError, OverflowError) as exc:
            raise StoreError(f"cannot {action} in the PostgreSQL store {self.path}: {exc}") from exc
