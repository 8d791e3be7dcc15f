"""Tests for hoopgw.store.migrations."""

from __future__ import annotations

import sqlite3

import pytest

from hoopgw.errors import StoreError
from hoopgw.store import SQLiteStore
from hoopgw.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    current_version,
    migrate,
)


@pytest.fixture
def conn(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "m.db"), isolation_level=None)
    yield conn
    conn.close()


def tables(conn):
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_versions_are_consecutive_from_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == MIGRATIONS[-1].version


def test_empty_store_is_version_zero(conn):
    assert current_version(conn) == 0


def test_migrate_creates_the_schema(conn):
    assert migrate(conn) == LATEST_VERSION
    assert current_version(conn) == LATEST_VERSION
    assert {"schema_version", "audit_records", "sessions", "commands", "api_keys"} <= tables(conn)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def test_migrate_is_idempotent(conn):
    migrate(conn)
    conn.execute(
        "INSERT INTO audit_records VALUES (1, 'k', 's', 1.0, '{}', ?, ?, '', 2)",
        ("0" * 64, "1" * 64),
    )
    assert migrate(conn) == LATEST_VERSION
    assert conn.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def test_migrate_applies_only_missing_steps(conn):
    first = Migration(version=1, statements=("CREATE TABLE a (x)",))
    second = Migration(version=2, statements=("CREATE TABLE b (x)",))
    assert migrate(conn, [first]) == 1
    assert migrate(conn, [first, second]) == 2
    assert {"a", "b"} <= tables(conn)
    assert migrate(conn, [first, second]) == 2


def test_store_newer_than_the_code_is_refused(conn):
    first = Migration(version=1, statements=("CREATE TABLE a (x)",))
    second = Migration(version=2, statements=("CREATE TABLE b (x)",))
    migrate(conn, [first, second])
    with pytest.raises(StoreError, match="version 2, newer than this hoopgw knows \\(1\\)"):
        migrate(conn, [first])
    assert not conn.in_transaction


def test_failed_step_rolls_back_and_keeps_the_version(conn):
    first = Migration(version=1, statements=("CREATE TABLE a (x)",))
    broken = Migration(version=2, statements=("CREATE TABLE b (x)", "NOT SQL"))
    migrate(conn, [first])
    with pytest.raises(StoreError, match="migration failed"):
        migrate(conn, [first, broken])
    assert current_version(conn) == 1
    assert "b" not in tables(conn)
    assert not conn.in_transaction


def test_sqlite_store_migrate(tmp_path):
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    store.migrate()
    store.migrate()
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert current_version(conn) == LATEST_VERSION
        conn.execute("UPDATE schema_version SET version = ?", (LATEST_VERSION + 1,))
        conn.commit()
    finally:
        conn.close()
    newer = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="upgrade hoopgw"):
            newer.migrate()
    finally:
        newer.close()
