"""Versioned schema migrations for the SQLite store.

The ``schema_version`` table holds one row: the version the schema is at. :func:`migrate`
applies, each in its own transaction, the migrations above that version, so it is idempotent
and a store left half-way by a crash resumes where it stopped. A store whose version is newer
than the code knows is refused: an older gateway must not write records a newer one would
misread.

Migrations are append-only: never edit a released one, add the next version instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from hoopgw.errors import StoreError


@attrs.frozen(kw_only=True)
class Migration:
    """One step of the schema."""

    version: int
    """The version the schema is at after this step (1, 2, ... without gaps)."""
    statements: tuple[str, ...]
    """SQL statements run in one transaction."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        statements=(
            """
            CREATE TABLE audit_records (
                seq INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                session_id TEXT NOT NULL,
                time REAL NOT NULL,
                data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )
            """,
            "CREATE INDEX audit_records_session ON audit_records (session_id, seq)",
            """
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                connection TEXT NOT NULL,
                protocol TEXT NOT NULL,
                target TEXT NOT NULL,
                identity TEXT NOT NULL,
                groups TEXT NOT NULL,
                method TEXT NOT NULL,
                credential_id TEXT NOT NULL,
                client_address TEXT NOT NULL,
                client_tls INTEGER NOT NULL,
                upstream_tls INTEGER NOT NULL,
                started_at REAL NOT NULL,
                ended_at REAL,
                end_reason TEXT,
                command_count INTEGER NOT NULL DEFAULT 0,
                attributes TEXT NOT NULL
            )
            """,
            "CREATE INDEX sessions_started ON sessions (started_at)",
            "CREATE INDEX sessions_connection ON sessions (connection, started_at)",
            "CREATE INDEX sessions_identity ON sessions (identity, started_at)",
            """
            CREATE TABLE commands (
                session_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                text TEXT NOT NULL,
                parameter_count INTEGER NOT NULL,
                statement_name TEXT NOT NULL,
                received_at REAL NOT NULL,
                verdict TEXT,
                verdict_reason TEXT,
                verdict_plugin TEXT,
                rule TEXT,
                status TEXT,
                rows INTEGER,
                bytes INTEGER,
                duration REAL,
                error_code TEXT,
                error_message TEXT,
                sample TEXT,
                completed_at REAL,
                PRIMARY KEY (session_id, seq)
            )
            """,
            """
            CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                groups TEXT NOT NULL,
                secret_sha256 TEXT NOT NULL,
                scram_salt BLOB NOT NULL,
                scram_iterations INTEGER NOT NULL,
                scram_stored_key BLOB NOT NULL,
                scram_server_key BLOB NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL,
                revoked_at REAL,
                last_used_at REAL
            )
            """,
            "CREATE INDEX api_keys_identity ON api_keys (identity, created_at)",
        ),
    ),
    Migration(
        version=2,
        statements=(
            # Reviews, approvers' answers and just-in-time grants (hoopgw.approvals.service).
            """
            CREATE TABLE reviews (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                requester TEXT NOT NULL,
                requester_groups TEXT NOT NULL,
                connection TEXT NOT NULL,
                reason TEXT NOT NULL,
                approvers TEXT NOT NULL,
                required INTEGER NOT NULL,
                created_at REAL NOT NULL,
                session_id TEXT NOT NULL,
                command_seq INTEGER NOT NULL,
                statement TEXT NOT NULL,
                hold_until REAL,
                timed_out_at REAL,
                valid_for REAL NOT NULL,
                duration REAL,
                decided_at REAL,
                decided_by TEXT NOT NULL,
                decision_reason TEXT NOT NULL,
                valid_until REAL,
                used_at REAL,
                grant_id TEXT NOT NULL
            )
            """,
            "CREATE INDEX reviews_status ON reviews (status, created_at)",
            "CREATE INDEX reviews_rerun ON reviews (requester, connection, status)",
            """
            CREATE TABLE review_votes (
                review_id TEXT NOT NULL REFERENCES reviews (id),
                identity TEXT NOT NULL,
                approve INTEGER NOT NULL,
                reason TEXT NOT NULL,
                decided_at REAL NOT NULL,
                PRIMARY KEY (review_id, identity)
            )
            """,
            """
            CREATE TABLE grants (
                id TEXT PRIMARY KEY,
                review_id TEXT NOT NULL REFERENCES reviews (id),
                identity TEXT NOT NULL,
                connection TEXT NOT NULL,
                reason TEXT NOT NULL,
                approved_by TEXT NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                revoked_at REAL,
                revoked_by TEXT NOT NULL,
                revoke_reason TEXT NOT NULL,
                ended_at REAL
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
                created_at REAL NOT NULL,
                revoked_at REAL,
                last_used_at REAL
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
                id INTEGER PRIMARY KEY CHECK (id = 1),
                applied INTEGER NOT NULL
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
                created_at REAL NOT NULL,
                revoked_at REAL,
                last_seen_at REAL,
                online INTEGER NOT NULL DEFAULT 0,
                address TEXT
            )
            """,
        ),
    ),
)
"""Every migration, in order."""

LATEST_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the store behind ``conn``; 0 for an empty store."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the migrations the store has not had yet.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each migration runs in its
    own ``BEGIN IMMEDIATE`` transaction, which also keeps two processes from migrating at once.

    :return: the schema version now in place.
    :raises StoreError: if the store is newer than ``migrations`` know, or a statement fails.
    """
    known = migrations[-1].version if migrations else 0
    try:
        for migration in migrations:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = _checked_version(conn, known)
                if version < migration.version:
                    for statement in migration.statements:
                        conn.execute(statement)
                    _set_version(conn, migration.version)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return _checked_version(conn, known)
    except sqlite3.Error as exc:
        raise StoreError(f"store migration failed: {exc}") from exc


def _checked_version(conn: sqlite3.Connection, known: int) -> int:
    version = current_version(conn)
    if version > known:
        raise StoreError(
            f"the store's schema is at version {version}, newer than this hoopgw knows "
            f"({known}); upgrade hoopgw"
        )
    return version


def _set_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
