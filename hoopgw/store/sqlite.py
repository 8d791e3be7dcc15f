"""The embedded store: one SQLite file, shared by the gateway and the CLI.

The database runs in WAL mode with ``synchronous=FULL``, so a committed transaction survives a
crash or power loss, and readers (the CLI) never block the writer. A busy timeout lets two
processes share the file: a writer waits for the lock instead of failing at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from hoopgw.audit.chain import (
    DURABILITY_KIND,
    PRUNED_KIND,
    AuditRecord,
    Durability,
    EncodedEntry,
    canonical_json,
    chain_genesis,
    encoded_entry,
    pruned_entry,
)
from hoopgw.audit.hashing import RECORD_FORMAT, record_hash_v2
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.store import migrations
from hoopgw.store.base import ApiKeyRecord, Store
from hoopgw.store.projections import SESSION_COLUMNS, project
from hoopgw.store.sqlite_agents import SQLiteAgentStore
from hoopgw.store.sqlite_instances import SQLiteInstanceStore
from hoopgw.store.sqlite_reviews import SQLiteReviewStore
from hoopgw.store.sqlite_rows import (
    COMMAND_COLUMNS,
    audit_record,
    command_dict,
    key_record,
    session_dict,
)
from hoopgw.store.sqlite_ssh_keys import SQLiteSshKeyStore

_RECORD_COLUMNS = "seq, kind, session_id, time, data, prev_hash, hash, instance, format"
_KEY_COLUMNS = (
    "key_id, identity, groups, secret_sha256, scram_salt, scram_iterations, scram_stored_key, "
    "scram_server_key, created_at, expires_at, revoked_at, last_used_at"
)


def _create_private(path: str) -> None:
    """Create the store file 0600 (and its folder 0700, when its parent exists) if absent,
    whatever the umask.

    SQLite gives the ``-wal`` and ``-shm`` files it makes the mode of the database file, so
    they are private too. An existing file or folder keeps its mode: ``hoopgw run`` refuses
    one that others can use (:func:`hoopgw.store.check_store_private`).

    :raises StoreError: if the folder or the file cannot be made.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(folder):
            # Only the store's own folder: a missing parent is more likely a wrong path.
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)  # mkdir's mode passes through the umask
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create SQLite store {path!r}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # os.open's mode passes through the umask too
    finally:
        os.close(fd)


class SQLiteStore(
    SQLiteReviewStore, SQLiteSshKeyStore, SQLiteAgentStore, SQLiteInstanceStore, Store
):
    """A :class:`~hoopgw.store.base.Store` in one SQLite file.

    The connection is opened by the constructor and belongs to the thread that made it. Its
    one hash chain is that of instance ``""``.
    """

    instance = ""
    """The gateway instance whose chain :meth:`append`, :meth:`records`, :meth:`prune` and the
    journal mark are about (see :attr:`hoopgw.audit.AuditRecord.instance`)."""

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        """
        :param path: the database file (created if absent), or ``:memory:``.
        :param busy_timeout: seconds to wait for another process's lock before failing.
        :raises StoreError: if the file cannot be opened or put in WAL mode.
        """
        self.path = path
        if path != ":memory:":
            _create_private(path)
        try:
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc
        try:
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and path != ":memory:":
                raise StoreError(f"cannot put SQLite store {path!r} in WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous = FULL")
            # Where SQLite keeps the WAL: beside the file as it resolved it (symbolic links
            # followed), which need not be beside ``path`` (see sync()).
            main_file = self._conn.execute("PRAGMA database_list").fetchone()[2]
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc
        except StoreError:
            self._conn.close()
            raise
        self._wal_path = f"{main_file}-wal" if main_file else None
        self._sync_failure: str | None = None

    def migrate(self) -> None:
        """See :meth:`Store.migrate`."""
        migrations.migrate(self._conn)

    def close(self) -> None:
        """See :meth:`Store.close`."""
        self._conn.close()

    def writable(self) -> bool:
        """See :meth:`Store.writable`: the connection answers, and the database file and its
        folder (where the WAL lives) are writable."""
        try:
            self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        if self.path == ":memory:":
            return True
        return os.access(self.path, os.W_OK) and os.access(
            os.path.dirname(os.path.abspath(self.path)), os.W_OK
        )

    # -- audit ---------------------------------------------------------------------------------

    def chain(self, instance: str) -> Store:
        """See :meth:`Store.chain`: a SQLite store holds the one chain ``""``."""
        if instance != self.instance:
            raise StoreError(f"a SQLite store holds no chain of instance {instance!r}")
        return self

    def append(
        self,
        entries: Sequence[AuditEntry | EncodedEntry],
        *,
        journal_mark: int | None = None,
        sync: bool = True,
    ) -> list[AuditRecord]:
        """See :meth:`Store.append`: with ``sync=False`` the transaction commits with
        ``synchronous=NORMAL`` (in WAL mode: written to the WAL file, not synced), and the
        connection is back to ``FULL`` for everything else."""
        if not entries:
            return []
        with (
            self._errors_as_store_error("append audit records"),
            self._unsynced(not sync),
            self._transaction(),
        ):
            records = self._append(entries)
            if journal_mark is not None:
                self._conn.execute(
                    "INSERT INTO audit_journal_marks (instance, applied) VALUES (?, ?)"
                    " ON CONFLICT (instance) DO UPDATE SET applied = excluded.applied",
                    (self.instance, journal_mark),
                )
            return records

    def sync(self) -> None:
        """See :meth:`Store.sync`: syncs the WAL file, which holds every commit not yet
        checkpointed into the database file (a checkpoint syncs what it copies).

        Once a sync failed, every later one fails too: the kernel reports a failed writeback
        once and may drop its pages, so a later ``fdatasync`` can succeed without the commits
        before it on disk."""
        if self._sync_failure is not None:
            raise StoreError(self._sync_failure)
        if self._wal_path is None:
            return  # in memory
        try:
            fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no WAL: everything is in the database file, synced by its checkpoint
        except OSError as exc:
            raise StoreError(f"cannot sync SQLite store {self.path!r}: {exc.strerror}") from exc
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._sync_failure = (
                f"cannot sync SQLite store {self.path!r}: {exc.strerror}"
                " (commits before it may not be on disk)"
            )
            raise StoreError(self._sync_failure) from exc
        finally:
            os.close(fd)

    def journal_mark(self) -> int:
        """See :meth:`Store.journal_mark`."""
        with self._errors_as_store_error("read the audit journal mark"):
            row = self._conn.execute(
                "SELECT applied FROM audit_journal_marks WHERE instance = ?", (self.instance,)
            ).fetchone()
            return 0 if row is None else int(row[0])

    def _append(self, entries: Sequence[AuditEntry | EncodedEntry]) -> list[AuditRecord]:
        """Append inside the caller's transaction, in record format 2: each entry's data text
        is stored and hashed as it was serialised (:func:`record_hash_v2`)."""
        last = self._conn.execute(
            "SELECT seq, hash FROM audit_records WHERE instance = ? ORDER BY seq DESC LIMIT 1",
            (self.instance,),
        ).fetchone()
        seq, prev_hash = (last[0], last[1]) if last else (0, chain_genesis(self.instance))
        records = []
        rows = []
        instance = self.instance
        for entry in entries:
            seq += 1
            kind, session_id, time, data, text = encoded_entry(entry)
            time = float(time)
            digest = record_hash_v2(
                seq=seq,
                kind=kind,
                session_id=session_id,
                time=time,
                prev_hash=prev_hash,
                data_json=text,
            )
            rows.append(
                (seq, kind, session_id, time, text, prev_hash, digest, instance, RECORD_FORMAT)
            )
            records.append(
                AuditRecord(
                    seq=seq,
                    kind=kind,
                    session_id=session_id,
                    time=time,
                    data=data,
                    prev_hash=prev_hash,
                    hash=digest,
                    instance=instance,
                    format=RECORD_FORMAT,
                    data_json=text,
                )
            )
            prev_hash = digest
        self._conn.executemany(
            f"INSERT INTO audit_records ({_RECORD_COLUMNS})"  # noqa: S608 -- fixed fragments
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        project(self._conn, records)
        return records

    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        """See :meth:`Store.records`."""
        with self._errors_as_store_error("read audit records"):
            cursor = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM audit_records"  # noqa: S608 -- fixed fragments
                " WHERE instance = ? AND seq > ? ORDER BY seq",
                (self.instance, after_seq),
            )
            for row in cursor:
                yield audit_record(row)

    def session_records(self, session_id: str, kind: str) -> Iterator[AuditRecord]:
        """See :meth:`Store.session_records`."""
        with self._errors_as_store_error("read audit records"):
            cursor = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM audit_records"  # noqa: S608 -- fixed fragments
                " WHERE session_id = ? AND kind = ? ORDER BY seq",
                (session_id, kind),
            )
            for row in cursor:
                yield audit_record(row)

    def last_record(self) -> AuditRecord | None:
        """See :meth:`Store.last_record`."""
        with self._errors_as_store_error("read the last audit record"):
            row = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM audit_records"  # noqa: S608 -- fixed fragments
                " WHERE instance = ? ORDER BY seq DESC LIMIT 1",
                (self.instance,),
            ).fetchone()
            return None if row is None else audit_record(row)

    def prune(self, *, older_than: float, now: float) -> AuditRecord | None:
        """See :meth:`Store.prune`."""
        with self._errors_as_store_error("prune audit records"), self._transaction():
            instance = self.instance
            bounds = self._conn.execute(
                "SELECT min(seq), max(seq) FROM audit_records WHERE instance = ?", (instance,)
            ).fetchone()
            if bounds[0] is None:
                return None
            first_seq, head_seq = bounds
            # By seq, not by time alone: only a prefix may go, or the chain would have a gap.
            young = self._conn.execute(
                "SELECT seq FROM audit_records WHERE instance = ? AND time >= ?"
                " ORDER BY seq LIMIT 1",
                (instance, older_than),
            ).fetchone()
            last_seq = head_seq if young is None else young[0] - 1
            if last_seq < first_seq:
                return None
            (last_hash,) = self._conn.execute(
                "SELECT hash FROM audit_records WHERE instance = ? AND seq = ?",
                (instance, last_seq),
            ).fetchone()
            self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS pruned_sessions (id TEXT PRIMARY KEY)"
            )
            self._conn.execute("DELETE FROM pruned_sessions")
            self._conn.execute(
                "INSERT INTO pruned_sessions SELECT DISTINCT old.session_id"
                " FROM audit_records AS old WHERE old.instance = ? AND old.seq <= ? AND NOT EXISTS"
                " (SELECT 1 FROM audit_records AS kept WHERE kept.session_id = old.session_id"
                " AND (kept.instance <> ? OR kept.seq > ?))",
                (instance, last_seq, instance, last_seq),
            )
            (sessions_removed,) = self._conn.execute(
                "SELECT count(*) FROM sessions WHERE id IN (SELECT id FROM pruned_sessions)"
            ).fetchone()
            # Appended before the deletion, so it chains to the head even if everything goes.
            [record] = self._append(
                [
                    pruned_entry(
                        first_seq=first_seq,
                        last_seq=last_seq,
                        last_hash=last_hash,
                        older_than=older_than,
                        sessions_removed=sessions_removed,
                        now=now,
                        durability=self._durability_after(first_seq, last_seq),
                    )
                ]
            )
            self._conn.execute(
                "DELETE FROM commands WHERE session_id IN (SELECT id FROM pruned_sessions)"
            )
            self._conn.execute("DELETE FROM sessions WHERE id IN (SELECT id FROM pruned_sessions)")
            self._conn.execute(
                "DELETE FROM audit_records WHERE instance = ? AND seq <= ?", (instance, last_seq)
            )
            self._conn.execute("DELETE FROM pruned_sessions")
        return record

    def _durability_after(self, first_seq: int, last_seq: int) -> Durability | None:
        """The audit durability in force after record ``last_seq`` as the records up to it say:
        their last mode record, else what the ``pruned`` record that accounts for the chain's
        start (``first_seq``) carried. The index on (session_id, seq) finds records of no
        session."""
        mode = self._conn.execute(
            "SELECT data FROM audit_records WHERE session_id = '' AND kind = ? AND instance = ?"
            " AND seq <= ? ORDER BY seq DESC LIMIT 1",
            (DURABILITY_KIND, self.instance, last_seq),
        ).fetchone()
        if mode is not None:
            return Durability.from_dict(json.loads(mode[0]))
        for (data,) in self._conn.execute(
            "SELECT data FROM audit_records WHERE session_id = '' AND kind = ? AND instance = ?"
            " ORDER BY seq DESC",
            (PRUNED_KIND, self.instance),
        ):
            pruning = json.loads(data)
            if pruning.get("last_seq") == first_seq - 1:
                return Durability.from_dict(pruning.get("durability"))
        return None

    # -- projections (hoopgw.store.projections) -----------------------------------------------

    def list_sessions(
        self, *, limit: int = 100, connection: str | None = None, identity: str | None = None
    ) -> list[dict[str, Any]]:
        """See :meth:`Store.list_sessions`."""
        where, params = [], []
        if connection is not None:
            where.append("connection = ?")
            params.append(connection)
        if identity is not None:
            where.append("identity = ?")
            params.append(identity)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self._errors_as_store_error("list sessions"):
            rows = self._conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions {clause}"  # noqa: S608 -- fixed fragments
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (*params, max(limit, 0)),
            ).fetchall()
        return [session_dict(row) for row in rows]

    def session_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """See :meth:`Store.session_ids_starting`."""
        # A range scan on the primary key, not LIKE (whose wildcards a prefix could hold).
        with self._errors_as_store_error("find sessions"):
            rows = self._conn.execute(
                "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            ).fetchall()
        return [row[0] for row in rows]

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """See :meth:`Store.get_session`."""
        with self._errors_as_store_error("read a session"):
            row = self._conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?",  # noqa: S608
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            commands = self._conn.execute(
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE session_id = ? ORDER BY seq",  # noqa: S608
                (session_id,),
            ).fetchall()
        session = session_dict(row)
        session["commands"] = [command_dict(command) for command in commands]
        return session

    # -- API keys ------------------------------------------------------------------------------

    def add_key(self, key: ApiKeyRecord) -> None:
        """See :meth:`Store.add_key`."""
        try:
            self._conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) "  # noqa: S608 -- fixed fragments
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.identity,
                    canonical_json(list(key.groups)),
                    key.secret_sha256,
                    key.scram.salt,
                    key.scram.iterations,
                    key.scram.stored_key,
                    key.scram.server_key,
                    key.created_at,
                    key.expires_at,
                    key.revoked_at,
                    key.last_used_at,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"an API key with id {key.key_id!r} already exists") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add an API key: {exc}") from exc

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """See :meth:`Store.get_key`."""
        with self._errors_as_store_error("read an API key"):
            row = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?",  # noqa: S608
                (key_id,),
            ).fetchone()
        return None if row is None else key_record(row)

    def find_keys_by_identity(self, identity: str) -> list[ApiKeyRecord]:
        """See :meth:`Store.find_keys_by_identity`."""
        with self._errors_as_store_error("read API keys"):
            rows = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE identity = ?"  # noqa: S608
                " ORDER BY created_at DESC, rowid DESC",
                (identity,),
            ).fetchall()
        return [key_record(row) for row in rows]

    def list_keys(self) -> list[ApiKeyRecord]:
        """See :meth:`Store.list_keys`."""
        with self._errors_as_store_error("list API keys"):
            rows = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, rowid"  # noqa: S608
            ).fetchall()
        return [key_record(row) for row in rows]

    def revoke_key(self, key_id: str, *, when: float) -> bool:
        """See :meth:`Store.revoke_key`."""
        with self._errors_as_store_error("revoke an API key"):
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (when, key_id),
            )
        return cursor.rowcount == 1

    def touch_key(self, key_id: str, when: float) -> None:
        """See :meth:`Store.touch_key`."""
        with self._errors_as_store_error("record API key use"):
            self._conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (when, key_id)
            )

    # -- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _unsynced(self, unsynced: bool) -> Iterator[None]:
        """Commit without syncing inside the block when ``unsynced`` (see :meth:`append`)."""
        if not unsynced:
            yield
            return
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous = FULL")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so the seq read at the start stays the last
        # one even when another process shares the file.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
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
            raise StoreError(f"cannot {action} in SQLite store {self.path!r}: {exc}") from exc
