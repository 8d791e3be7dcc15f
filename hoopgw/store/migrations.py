"""Versioned schema migrations of the store, one definition for SQLite and PostgreSQL.

Each migration's statements are written once, with placeholders where the two dialects spell a
column differently (:class:`Dialect`: ``{int}`` is SQLite's 64-bit INTEGER and PostgreSQL's
BIGINT, ``{real}`` a double, ``{blob}`` bytes, ``{rowid}`` gives a PostgreSQL table the insertion
order SQLite's implicit ``rowid`` gives, ``{seq_key}`` leaves the audit chain's key to the
``(instance, seq)`` index of version 6 on PostgreSQL). :meth:`Dialect.render` fills them in;
rendered for SQLite, every released migration is the exact text it was.

The ``schema_version`` table holds one row: the version the schema is at. :func:`migrate`
applies, each in its own transaction, the migrations above that version, so it is idempotent
and a store left half-way by a crash resumes where it stopped. A store whose version is newer
than the code knows is refused: an older gateway must not write records a newer one would
misread.

Migrations are append-only: never edit a released one, add the next version instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hoopgw.errors import StoreError


@attrs.frozen(kw_only=True)
class Migration:
    """One step of the schema."""

    version: int
    """The version the schema is at after this step (1, 2, ... without gaps)."""
    statements: tuple[str, ...]
    """SQL statements run in one transaction, with the placeholders of :class:`Dialect`."""


@attrs.frozen(kw_only=True)
class Dialect:
    """How one database spells what the migrations leave open."""

    name: str
    """``sqlite`` or ``postgresql``."""
    types: Mapping[str, str]
    """The text of each placeholder (``int``, ``real``, ``blob``, ``rowid``, ``seq_key``)."""
    begin: tuple[str, ...]
    """Start a migration's transaction; they also keep two processes from migrating at once."""
    has_table: str
    """A query with one parameter, a table name, that returns a row if the table exists."""

    def render(self, statement: str) -> str:
        """``statement`` with its placeholders filled in."""
        return statement.format(**self.types)


SQLITE = Dialect(
    name="sqlite",
    types={"int": "INTEGER", "real": "REAL", "blob": "BLOB", "rowid": "", "seq_key": "PRIMARY KEY"},
    # IMMEDIATE takes the write lock at once, so a second migrating process waits here.
    begin=("BEGIN IMMEDIATE",),
    has_table="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
)
"""The embedded store."""

POSTGRESQL = Dialect(
    name="postgresql",
    types={
        "int": "BIGINT",
        "real": "DOUBLE PRECISION",
        "blob": "BYTEA",
        "rowid": "rowid BIGINT GENERATED ALWAYS AS IDENTITY,",
        "seq_key": "NOT NULL",
    },
    # The transaction-scoped advisory lock (key: "hoopgw" in ASCII) makes a second gateway
    # instance that migrates at the same time wait, then find the step done.
    begin=("BEGIN", "SELECT pg_advisory_xact_lock(110105415645047)"),
    has_table=(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?"
    ),
)
"""The shared store of several gateway instances."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        statements=(
            """
            CREATE TABLE audit_records (
                seq {int} {seq_key},
                kind TEXT NOT NULL,
                session_id TEXT NOT NULL,
                time {real} NOT NULL,
                data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )
            """,
            "CREATE INDEX audit_records_session ON audit_records (session_id, seq)",
            """
            CREATE TABLE sessions (
                {rowid}
                id TEXT PRIMARY KEY,
                connection TEXT NOT NULL,
                protocol TEXT NOT NULL,
                target TEXT NOT NULL,
                identity TEXT NOT NULL,
                groups TEXT NOT NULL,
                method TEXT NOT NULL,
                credential_id TEXT NOT NULL,
                client_address TEXT NOT NULL,
                client_tls {int} NOT NULL,
                upstream_tls {int} NOT NULL,
                started_at {real} NOT NULL,
                ended_at {real},
                end_reason TEXT,
                command_count {int} NOT NULL DEFAULT 0,
                attributes TEXT NOT NULL
            )
            """,
            "CREATE INDEX sessions_started ON sessions (started_at)",
            "CREATE INDEX sessions_connection ON sessions (connection, started_at)",
            "CREATE INDEX sessions_identity ON sessions (identity, started_at)",
            """
            CREATE TABLE commands (
                session_id TEXT NOT NULL,
                seq {int} NOT NULL,
                kind TEXT NOT NULL,
                text TEXT NOT NULL,
                parameter_count {int} NOT NULL,
                statement_name TEXT NOT NULL,
                received_at {real} NOT NULL,
                verdict TEXT,
                verdict_reason TEXT,
                verdict_plugin TEXT,
                rule TEXT,
                status TEXT,
                rows {int},
                bytes {int},
                duration {real},
                error_code TEXT,
                error_message TEXT,
                sample TEXT,
                completed_at {real},
                PRIMARY KEY (session_id, seq)
            )
            """,
            """
            CREATE TABLE api_keys (
                {rowid}
                key_id TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                groups TEXT NOT NULL,
                secret_sha256 TEXT NOT NULL,
                scram_salt {blob} NOT NULL,
                scram_iterations {int} NOT NULL,
                scram_stored_key {blob} NOT NULL,
                scram_server_key {blob} NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real},
                revoked_at {real},
                last_used_at {real}
            )
            """,
            "CREATE INDEX api_keys_identity ON api_keys (identity, created_at)",
        ),
    ),
    Migration(
        version=2,
        statements=(
            # Reviews, approvers' answers and just-in-time grants (hoopgw.approvals).
            """
            CREATE TABLE reviews (
                {rowid}
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                requester TEXT NOT NULL,
                requester_groups TEXT NOT NULL,
                connection TEXT NOT NULL,
                reason TEXT NOT NULL,
                approvers TEXT NOT NULL,
                required {int} NOT NULL,
                created_at {real} NOT NULL,
                session_id TEXT NOT NULL,
                command_seq {int} NOT NULL,
                statement TEXT NOT NULL,
                hold_until {real},
                timed_out_at {real},
                valid_for {real} NOT NULL,
                duration {real},
                decided_at {real},
                decided_by TEXT NOT NULL,
                decision_reason TEXT NOT NULL,
                valid_until {real},
                used_at {real},
                grant_id TEXT NOT NULL
            )
            """,
            "CREATE INDEX reviews_status ON reviews (status, created_at)",
            "CREATE INDEX reviews_rerun ON reviews (requester, connection, status)",
            """
            CREATE TABLE review_votes (
                {rowid}
                review_id TEXT NOT NULL REFERENCES reviews (id),
                identity TEXT NOT NULL,
                approve {int} NOT NULL,
                reason TEXT NOT NULL,
                decided_at {real} NOT NULL,
                PRIMARY KEY (review_id, identity)
            )
            """,
            """
            CREATE TABLE grants (
                {rowid}
                id TEXT PRIMARY KEY,
                review_id TEXT NOT NULL REFERENCES reviews (id),
                identity TEXT NOT NULL,
                connection TEXT NOT NULL,
                reason TEXT NOT NULL,
                approved_by TEXT NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                revoked_at {real},
                revoked_by TEXT NOT NULL,
                revoke_reason TEXT NOT NULL,
                ended_at {real}
            )
            """,
            "CREATE INDEX grants_identity ON grants (identity, connection, expires_at)",
        ),
    ),
    Migration(
        version=3,
        statements=(
            # SSH public keys registered to identities (hoopgw.records).
            """
            CREATE TABLE ssh_keys (
                fingerprint TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                groups TEXT NOT NULL,
                public_key TEXT NOT NULL,
                comment TEXT NOT NULL,
                created_at {real} NOT NULL,
                revoked_at {real},
                last_used_at {real}
            )
            """,
        ),
    ),
    Migration(
        version=4,
        statements=(
            # The number of the last audit journal entry the store holds (hoopgw.audit.journal):
            # set in the transaction that appends it, so a restart knows what to append again.
            """
            CREATE TABLE audit_journal_mark (
                id {int} PRIMARY KEY CHECK (id = 1),
                applied {int} NOT NULL
            )
            """,
            "INSERT INTO audit_journal_mark (id, applied) VALUES (1, 0)",
        ),
    ),
    Migration(
        version=5,
        statements=(
            # A statement review's bind parameter values as reviewers see them (a JSON array):
            # an approval covers the statement's text and these values.
            "ALTER TABLE reviews ADD COLUMN parameters TEXT NOT NULL DEFAULT '[]'",
        ),
    ),
    Migration(
        version=6,
        statements=(
            # Network agents and their tokens (hoopgw.store.agents).
            """
            CREATE TABLE agents (
                name TEXT PRIMARY KEY,
                token_id TEXT NOT NULL UNIQUE,
                token_sha256 TEXT NOT NULL,
                created_at {real} NOT NULL,
                revoked_at {real},
                last_seen_at {real},
                online {int} NOT NULL DEFAULT 0,
                address TEXT
            )
            """,
        ),
    ),
    Migration(
        version=7,
        statements=(
            # Several gateway instances share a PostgreSQL store: each appends its own hash
            # chain, named by its instance id ('' for the one chain of a SQLite store), with its
            # own seq from 1 and its own local audit journal.
            "ALTER TABLE audit_records ADD COLUMN instance TEXT NOT NULL DEFAULT ''",
            "CREATE UNIQUE INDEX audit_records_chain ON audit_records (instance, seq)",
            """
            CREATE TABLE audit_journal_marks (
                instance TEXT PRIMARY KEY,
                applied {int} NOT NULL
            )
            """,
            "INSERT INTO audit_journal_marks (instance, applied)"
            " SELECT '', applied FROM audit_journal_mark WHERE applied > 0",
            "DROP TABLE audit_journal_mark",
            # The instance that holds a review's statement (or took the access request): only
            # it aborts the review when it restarts or stops.
            "ALTER TABLE reviews ADD COLUMN instance TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE reviews ADD COLUMN decision_recorded_at {real}",
            # Each instance's audit writer: when it started and whether it stopped with its
            # journal drained (hoopgw audit verify reports one that did not).
            """
            CREATE TABLE audit_writers (
                instance TEXT PRIMARY KEY,
                journal TEXT NOT NULL,
                started_at {real} NOT NULL,
                stopped_at {real}
            )
            """,
            # Failed logins per client host, counted by every instance (hoopgw.throttle).
            """
            CREATE TABLE login_failures (
                host TEXT PRIMARY KEY,
                failures {int} NOT NULL,
                last_at {real} NOT NULL
            )
            """,
            "CREATE INDEX login_failures_last ON login_failures (last_at)",
        ),
    ),
    Migration(
        version=8,
        statements=(
            # How each record's hash is computed (hoopgw.audit.hashing.RECORD_FORMAT): the
            # records already written keep format 1; new ones are written in format 2.
            "ALTER TABLE audit_records ADD COLUMN format {int} NOT NULL DEFAULT 1",
        ),
    ),
)
"""Every migration, in order."""

LATEST_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


def current_version(conn: Any, dialect: Dialect = SQLITE) -> int:
    """The schema version of the store behind ``conn``; 0 for an empty store."""
    exists = conn.execute(dialect.has_table, ("schema_version",)).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(
    conn: Any, migrations: Sequence[Migration] = MIGRATIONS, dialect: Dialect = SQLITE
) -> int:
    """Apply the migrations the store has not had yet.

    ``conn`` is a :mod:`sqlite3` connection in autocommit mode (``isolation_level=None``), or
    one that behaves like it (:class:`hoopgw.store.postgres.PgConnection`): each migration runs
    in its own transaction, begun with :attr:`Dialect.begin`.

    :return: the schema version now in place.
    :raises StoreError: if the store is newer than ``migrations`` know, or a statement fails.
    """
    known = migrations[-1].version if migrations else 0
    try:
        for migration in migrations:
            for statement in dialect.begin:
                conn.execute(statement)
            try:
                version = _checked_version(conn, known, dialect)
                if version < migration.version:
                    for statement in migration.statements:
                        conn.execute(dialect.render(statement))
                    _set_version(conn, migration.version)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return _checked_version(conn, known, dialect)
    except sqlite3.Error as exc:
        raise StoreError(f"store migration failed: {exc}") from exc


def _checked_version(conn: Any, known: int, dialect: Dialect) -> int:
    version = current_version(conn, dialect)
    if version > known:
        raise StoreError(
            f"the store's schema is at version {version}, newer than this hoopgw knows "
            f"({known}); upgrade hoopgw"
        )
    return version


def _set_version(conn: Any, version: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
