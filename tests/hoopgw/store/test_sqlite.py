"""Tests for hoopgw.store.sqlite and hoopgw.store.open_store: the store contract on a real SQLite
file in tmp_path and on a real PostgreSQL database (conftest.py), and SQLite's own behaviour."""

from __future__ import annotations

import errno
import itertools
import os
import sqlite3

import attrs
import pytest

from hoopgw.audit.chain import (
    GENESIS_HASH,
    Durability,
    canonical_json,
    durability_entry,
    record_hash,
    record_hash_v2,
    verify_chain,
)
from hoopgw.audit.hashing import RECORD_FORMAT
from hoopgw.errors import ConfigError, StoreError
from hoopgw.records import AuditEntry
from hoopgw.secrets import make_verifier
from hoopgw.store import SQLiteStore, open_store
from hoopgw.store.base import ApiKeyRecord

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
"""For tests of SQLite's own behaviour (its file, its pragmas, its locks)."""


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store.db")


@pytest.fixture
def store(any_store):
    # Each back end (conftest.py): the contract is the same.
    return any_store


def session_started(session_id="s1", *, time=100.0, **overrides):
    data = {
        "identity": "agent",
        "groups": ["agents", "ci"],
        "method": "api-key",
        "credential_id": "0123456789ab",
        "client_address": "127.0.0.1:5000",
        "connection": "pg",
        "protocol": "postgres",
        "target": "db:5432",
        "client_tls": True,
        "upstream_tls": False,
        "started_at": time,
        "attributes": {"database": "app"},
    }
    data.update(overrides)
    return AuditEntry(kind="session_started", session_id=session_id, time=time, data=data)


def command(record_kind, session_id="s1", *, time=101.0, **data):
    return AuditEntry(kind=record_kind, session_id=session_id, time=time, data=data)


def a_session(session_id="s1", *, start=100.0):
    """A complete session with one allowed and one blocked command."""
    return [
        session_started(session_id, time=start),
        command(
            "command_received",
            session_id,
            time=start + 1,
            seq=1,
            kind="query",
            text="SELECT 1",
            parameter_count=0,
            statement_name="",
        ),
        command(
            "command_decided",
            session_id,
            time=start + 1,
            seq=1,
            verdict="allow",
            reason="",
            plugin="",
            rule="",
        ),
        command(
            "command_completed",
            session_id,
            time=start + 2,
            seq=1,
            status="ok",
            rows=1,
            bytes=12,
            duration=0.5,
            error_code="",
            error_message="",
            sample=[["1"]],
        ),
        command(
            "command_received",
            session_id,
            time=start + 3,
            seq=2,
            kind="parse",
            text="DROP TABLE t",
            parameter_count=2,
            statement_name="s",
        ),
        command(
            "command_decided",
            session_id,
            time=start + 3,
            seq=2,
            verdict="block",
            reason="no drops",
            plugin="guardrails",
            rule="r1",
        ),
        command(
            "command_completed",
            session_id,
            time=start + 3,
            seq=2,
            status="blocked",
            rows=0,
            bytes=0,
            duration=0.0,
            error_code="42501",
            error_message="no drops",
        ),
        command("session_closed", session_id, time=start + 4, reason="client closed"),
    ]


# -- opening ---------------------------------------------------------------------------------


def test_open_store_sqlite_url(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == f"{tmp_path}/x.db"
        store.migrate()
    finally:
        store.close()


def test_open_store_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///./rel.db")
    store.close()
    assert (tmp_path / "rel.db").exists()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://gw:secret@db/hoopgw", "'mysql'"),
        ("hoopgw.db", "sqlite:///PATH"),
        ("sqlite:///", "sqlite:///PATH"),
        ("sqlite://relative.db", "sqlite:///PATH"),
    ],
)
def test_open_store_refuses_other_urls(url, named):
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert named in str(caught.value)
    assert "secret" not in str(caught.value)


def test_the_journal_mark_is_kept_with_the_records_it_names(store):
    assert store.journal_mark() == 0
    store.append(a_session()[:1], journal_mark=7)
    store.append(a_session("s2")[:1])
    assert store.journal_mark() == 7
    with pytest.raises(StoreError):
        store.append([command("x", data=object())], journal_mark=9)
    assert store.journal_mark() == 7


@sqlite_only
def test_store_is_in_wal_mode_with_full_sync(store, path):
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous FULL = 2
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


@sqlite_only
def test_an_unsynced_append_is_synced_by_sync_and_nothing_else_goes_unsynced(
    store, path, monkeypatch
):
    synced = []
    real = os.fdatasync

    def fdatasync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    store.append(a_session()[:1], journal_mark=1, sync=False)
    # Only that transaction committed with NORMAL: every other write is synced as before.
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.sync()
    assert synced == [f"{path}-wal"]  # the WAL holds every commit not checkpointed
    assert store.journal_mark() == 1
    assert [r.seq for r in store.records()] == [1]


def test_sync_finds_the_wal_of_a_store_reached_through_a_symbolic_link(tmp_path, monkeypatch):
    # SQLite keeps the WAL beside the file a link points to; sync must fdatasync that one, not
    # find nothing beside the link and let the journal go of entries a host crash can take.
    (tmp_path / "data").mkdir()
    link = tmp_path / "store.db"
    link.symlink_to(tmp_path / "data" / "store.db")
    store = SQLiteStore(str(link))
    store.migrate()
    synced = []
    real = os.fdatasync

    def fdatasync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    try:
        store.append(a_session()[:1], journal_mark=1, sync=False)
        store.sync()
    finally:
        store.close()
    assert synced == [f"{tmp_path / 'data' / 'store.db'}-wal"]


@sqlite_only
def test_once_a_sync_failed_no_later_sync_vouches_for_the_store(store, monkeypatch):
    # Linux reports a failed writeback once and may drop the pages: a later fdatasync then
    # succeeds without the commits before it on disk. Were it believed, the writer would empty
    # its journal and sign a checkpoint over records a host crash can take.
    failures = [OSError(errno.EIO, "Input/output error")]
    real = os.fdatasync

    def fdatasync(fd):
        if failures:
            raise failures.pop()
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    store.append(a_session()[:1], journal_mark=1, sync=False)
    with pytest.raises(StoreError, match="Input/output error"):
        store.sync()
    store.append(a_session()[1:2], journal_mark=2, sync=False)
    with pytest.raises(StoreError, match="Input/output error"):
        store.sync()


def test_an_unsynced_append_is_an_append_like_any_other(store):
    store.append(a_session()[:2], journal_mark=2, sync=False)
    store.sync()
    store.append(a_session()[2:], journal_mark=4)
    assert verify_chain(store.records(), instance=store.instance).ok
    assert store.journal_mark() == 4


def test_unopenable_file_is_a_store_error(tmp_path):
    with pytest.raises(StoreError):
        SQLiteStore(str(tmp_path / "missing-dir" / "missing-too" / "x.db"))


def test_unmigrated_store_fails_with_store_error(path):
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError):
            store.append([session_started()])
        with pytest.raises(StoreError):
            store.list_sessions()
    finally:
        store.close()


# -- append and the chain --------------------------------------------------------------------


def test_append_assigns_seq_and_chains_hashes(store):
    records = store.append(a_session())
    assert [r.seq for r in records] == list(range(1, 9))
    assert records[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    first = records[0]
    assert first.format == RECORD_FORMAT == 2
    assert first.hash == record_hash_v2(
        seq=1,
        kind=first.kind,
        session_id="s1",
        time=100.0,
        prev_hash=GENESIS_HASH,
        data_json=first.data_json,
    )
    more = store.append([command("session_closed", "s2", time=200.0, reason="x")])
    assert more[0].seq == 9
    assert more[0].prev_hash == records[-1].hash


def write_the_old_way(store, entries):
    """Append ``entries`` as a gateway before record format 2 did: canonical JSON data, a
    format 1 hash (the rows a store migrated from version 7 holds)."""
    prev = GENESIS_HASH
    for seq, entry in enumerate(entries, start=1):
        digest = record_hash(
            seq=seq,
            kind=entry.kind,
            session_id=entry.session_id,
            time=entry.time,
            data=entry.data,
            prev_hash=prev,
        )
        store._conn.execute(
            "INSERT INTO audit_records (seq, kind, session_id, time, data, prev_hash, hash,"
            " instance, format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                seq,
                entry.kind,
                entry.session_id,
                entry.time,
                canonical_json(entry.data),
                prev,
                digest,
                store.instance,
            ),
        )
        prev = digest


def test_a_chain_written_the_old_way_still_verifies_and_new_records_follow_it(store):
    write_the_old_way(store, a_session("old"))
    new = store.append(a_session("new", start=300.0))
    records = list(store.records())
    assert [r.format for r in records] == [1] * 8 + [2] * 8
    assert new[0].prev_hash == records[7].hash
    result = verify_chain(records, instance=store.instance)
    assert result.ok and result.checked == 16


@pytest.mark.parametrize("seq", [2, 10])
def test_a_changed_record_is_detected_in_either_format(store, seq):
    write_the_old_way(store, a_session("old"))
    store.append(a_session("new", start=300.0))
    store._conn.execute(
        "UPDATE audit_records SET data = replace(data, 'SELECT 1', 'SELECT 2')"
        " WHERE instance = ? AND seq = ?",
        (store.instance, seq),
    )
    result = verify_chain(store.records(), instance=store.instance)
    assert (result.ok, result.first_bad_seq) == (False, seq)


@pytest.mark.parametrize(
    "rewrite",
    [
        # Same value to json.loads (the last key wins), another verdict to a reader that keeps
        # the first: a format 1 hash covers the value, not the stored text.
        """replace(data, '{', '{"verdict":"allow",')""",
        "replace(data, ',', ', ')",
    ],
)
def test_a_format_1_record_whose_text_was_rewritten_to_the_same_value_is_detected(store, rewrite):
    write_the_old_way(store, a_session("old"))
    store._conn.execute(
        f"UPDATE audit_records SET data = {rewrite} WHERE instance = ? AND seq = 3",
        (store.instance,),
    )
    result = verify_chain(store.records(), instance=store.instance)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_a_record_whose_format_was_changed_is_detected(store):
    store.append(a_session())
    store._conn.execute(
        "UPDATE audit_records SET format = 1 WHERE instance = ? AND seq = 2", (store.instance,)
    )
    result = verify_chain(store.records(), instance=store.instance)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_a_verdict_that_joined_the_completion_fills_the_commands_projection(store):
    store.append(
        [
            session_started(),
            command("command_received", seq=1, kind="query", text="SELECT 1",
                    parameter_count=0, statement_name=""),
            command("command_completed", time=102.0, seq=1, verdict="allow", reason="ok",
                    plugin="p", rule="", status="ok", rows=1, bytes=5, duration=0.1,
                    error_code="", error_message=""),
        ]
    )  # fmt: skip
    [projected] = store.get_session("s1")["commands"]
    assert (projected["verdict"], projected["verdict_reason"], projected["verdict_plugin"]) == (
        "allow",
        "ok",
        "p",
    )
    assert (projected["status"], projected["rows"], projected["completed_at"]) == ("ok", 1, 102.0)


def test_records_read_back_equal_what_append_returned(store):
    written = store.append(a_session())
    assert list(store.records()) == written
    assert list(store.records(after_seq=6)) == written[6:]
    assert verify_chain(store.records()).ok


def test_append_stores_data_as_json_and_hashes_what_it_stores(store):
    [record] = store.append(
        [AuditEntry(kind="note", session_id="s", time=1.0, data={"t": (1, 2), "u": "é"})]
    )
    [stored] = store.records()
    assert stored.data == {"t": [1, 2], "u": "é"}
    assert stored.hash == record.hash
    assert verify_chain([stored]).ok


def test_append_of_nothing_writes_nothing(store):
    assert store.append([]) == []
    assert list(store.records()) == []


def test_unserialisable_entry_fails_the_whole_batch(store):
    with pytest.raises(StoreError):
        store.append(
            [
                session_started(),
                AuditEntry(kind="x", session_id="s", time=1.0, data={"bad": object()}),
            ]
        )
    with pytest.raises(StoreError):
        store.append([AuditEntry(kind="x", session_id="s", time=1.0, data={"n": float("nan")})])
    assert list(store.records()) == []
    assert store.list_sessions() == []


def test_a_count_beyond_64_bits_stays_in_the_record_and_out_of_the_projection(store):
    # A MySQL target may report up to 2**64 - 1 affected rows; an SQLite column cannot hold it.
    completed = command(
        "command_completed", seq=1, status="ok", rows=2**64 - 1, bytes=0, duration=0.0
    )
    store.append([*a_session()[:2], completed])
    assert list(store.records())[-1].data["rows"] == 2**64 - 1
    [shown] = store.get_session("s1")["commands"]
    assert (shown["status"], shown["rows"]) == ("ok", None)


@sqlite_only
def test_records_are_durable_across_connections(store, path):
    store.append(a_session())
    other = SQLiteStore(path)
    try:
        assert len(list(other.records())) == 8
        assert other.get_session("s1")["command_count"] == 2
    finally:
        other.close()


@sqlite_only
def test_two_connections_append_to_one_chain(store, path):
    other = SQLiteStore(path)
    try:
        store.append(a_session("s1"))
        other.append(a_session("s2", start=300.0))
        store.append([command("session_closed", "s3", time=400.0, reason="x")])
    finally:
        other.close()
    result = verify_chain(store.records())
    assert result.ok
    assert result.checked == 17


@sqlite_only
def test_read_only_database_is_a_store_error(store):
    store._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="readonly"):
        store.append([session_started()])


@sqlite_only
def test_full_disk_is_a_store_error_and_writes_nothing(store):
    store.append(a_session("s0"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    big = AuditEntry(kind="note", session_id="s", time=1.0, data={"blob": "x" * 100_000})
    with pytest.raises(StoreError, match="full"):
        store.append([session_started("s1"), big])
    assert store.get_session("s1") is None
    assert len(list(store.records())) == 8


@sqlite_only
def test_locked_database_is_a_store_error(store, path):
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waiting = SQLiteStore(path, busy_timeout=0.0)
    try:
        with pytest.raises(StoreError, match="locked"):
            waiting.append([session_started()])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        waiting.close()


def test_unreadable_record_data_is_a_store_error(store):
    store.append(a_session())
    store._conn.execute("UPDATE audit_records SET data = 'not json' WHERE seq = 2")
    with pytest.raises(StoreError, match="record 2"):
        list(store.records())


# -- projections -----------------------------------------------------------------------------


def test_session_projection(store):
    store.append(a_session())
    [session] = store.list_sessions()
    assert session == {
        "id": "s1",
        "connection": "pg",
        "protocol": "postgres",
        "target": "db:5432",
        "identity": "agent",
        "groups": ["agents", "ci"],
        "method": "api-key",
        "credential_id": "0123456789ab",
        "client_address": "127.0.0.1:5000",
        "client_tls": True,
        "upstream_tls": False,
        "started_at": 100.0,
        "ended_at": 104.0,
        "end_reason": "client closed",
        "command_count": 2,
        "attributes": {"database": "app"},
    }


def test_open_session_has_no_end(store):
    store.append(a_session()[:2])
    session = store.get_session("s1")
    assert session["ended_at"] is None
    assert session["end_reason"] is None
    assert session["commands"][0]["verdict"] is None
    assert session["commands"][0]["status"] is None


def test_get_session_with_commands(store):
    store.append(a_session())
    session = store.get_session("s1")
    assert session["id"] == "s1"
    first, second = session["commands"]
    assert first == {
        "seq": 1,
        "kind": "query",
        "text": "SELECT 1",
        "parameter_count": 0,
        "statement_name": "",
        "received_at": 101.0,
        "verdict": "allow",
        "verdict_reason": "",
        "verdict_plugin": "",
        "rule": "",
        "status": "ok",
        "rows": 1,
        "bytes": 12,
        "duration": 0.5,
        "error_code": "",
        "error_message": "",
        "sample": [["1"]],
        "completed_at": 102.0,
    }
    assert second["verdict"] == "block"
    assert second["verdict_reason"] == "no drops"
    assert second["verdict_plugin"] == "guardrails"
    assert second["rule"] == "r1"
    assert second["status"] == "blocked"
    assert second["error_code"] == "42501"
    assert second["sample"] is None
    assert second["parameter_count"] == 2
    assert second["statement_name"] == "s"


def test_get_unknown_session(store):
    assert store.get_session("nope") is None


def test_list_sessions_newest_first_with_filters(store):
    store.append(a_session("old", start=100.0))
    store.append([session_started("new", time=500.0, identity="bob", connection="other")])
    store.append(a_session("mid", start=300.0))
    assert [s["id"] for s in store.list_sessions()] == ["new", "mid", "old"]
    assert [s["id"] for s in store.list_sessions(limit=2)] == ["new", "mid"]
    assert [s["id"] for s in store.list_sessions(connection="pg")] == ["mid", "old"]
    assert [s["id"] for s in store.list_sessions(identity="bob")] == ["new"]
    assert store.list_sessions(identity="bob", connection="pg") == []
    assert store.list_sessions(limit=0) == []


def test_projections_tolerate_malformed_entries(store):
    records = store.append(
        [
            AuditEntry(kind="session_started", session_id="s", time=5.0, data={"groups": "x"}),
            AuditEntry(kind="command_received", session_id="s", time=6.0, data={"seq": "one"}),
            AuditEntry(kind="command_completed", session_id="s", time=7.0, data={"rows": True}),
            AuditEntry(kind="something_new", session_id="s", time=8.0, data={}),
        ]
    )
    assert len(records) == 4
    session = store.get_session("s")
    assert session["groups"] == []
    assert session["started_at"] == 5.0
    assert session["identity"] == ""


def test_repeated_records_do_not_double_count(store):
    store.append(a_session()[:2])
    store.append(a_session()[:2])
    assert store.get_session("s1")["command_count"] == 1
    assert len(list(store.records())) == 4


# -- last record and pruning -------------------------------------------------------------------


def test_last_record_is_the_chain_head(store):
    assert store.last_record() is None
    records = store.append(a_session())
    assert store.last_record() == records[-1]


def test_prune_removes_the_old_prefix_and_appends_a_pruned_record(store):
    old = store.append(a_session("old", start=100.0))  # seq 1..8, times 100..104
    store.append(a_session("new", start=1000.0))  # seq 9..16
    record = store.prune(older_than=500.0, now=2000.0)
    assert record.kind == "pruned" and record.seq == 17 and record.session_id == ""
    assert record.time == 2000.0
    assert record.data == {
        "first_seq": 1,
        "last_seq": 8,
        "last_hash": old[-1].hash,
        "older_than": 500.0,
        "sessions_removed": 1,
    }
    remaining = list(store.records())
    assert [r.seq for r in remaining] == list(range(9, 18))
    assert remaining[0].prev_hash == old[-1].hash
    result = verify_chain(remaining)
    assert result.ok, result.problem
    assert [(p.first_seq, p.last_seq) for p in result.pruned] == [(1, 8)]
    assert store.get_session("old") is None
    assert [s["id"] for s in store.list_sessions()] == ["new"]
    assert len(store.get_session("new")["commands"]) == 2


def durability_periods(store):
    return [
        (p.durability and p.durability.mode, p.first_seq, p.last_seq)
        for p in verify_chain(store.records()).durability
    ]


def test_prune_carries_the_durability_in_force_on_to_the_remaining_records(store):
    os_mode = Durability(mode="os", sync_interval=0.05)
    store.append([durability_entry(Durability(), now=50.0)])  # seq 1
    store.append([durability_entry(os_mode, now=99.0)])  # seq 2
    store.append(a_session("old", start=100.0))  # seq 3..10
    store.append(a_session("new", start=1000.0))  # seq 11..18
    record = store.prune(older_than=500.0, now=2000.0)
    # The mode record of records 11 on (seq 2) is gone: the pruned record says it.
    assert record.data["durability"] == {"mode": "os", "sync_interval": 0.05}
    assert durability_periods(store) == [("os", 11, 19)]
    # A second pruning that removes no mode record carries on what the first one carried.
    store.append([durability_entry(Durability(), now=3000.0)])  # seq 20
    store.append(a_session("newer", start=4000.0))  # seq 21..28
    second = store.prune(older_than=1500.0, now=5000.0)
    assert (second.data["last_seq"], second.data["durability"]["mode"]) == (18, "os")
    assert durability_periods(store) == [("os", 19, 19), ("fsync", 20, 29)]


def test_prune_of_records_that_name_no_mode_carries_none(store):
    store.append(a_session("old", start=100.0))
    store.append(a_session("new", start=1000.0))
    assert "durability" not in store.prune(older_than=500.0, now=2000.0).data
    assert durability_periods(store) == [(None, 9, 17)]


def test_prune_stops_at_the_first_young_record_even_if_older_ones_follow(store):
    store.append([command("x", "a", time=10.0), command("x", "b", time=900.0)])
    store.append([command("x", "c", time=20.0)])  # old, but after a young one
    record = store.prune(older_than=500.0, now=1000.0)
    assert (record.data["first_seq"], record.data["last_seq"]) == (1, 1)
    assert [r.seq for r in store.records()] == [2, 3, 4]


def test_prune_keeps_the_projection_of_a_session_that_keeps_records(store):
    records = a_session("long", start=100.0)
    store.append(records[:3])
    store.append([attrs.evolve(e, time=1000.0) for e in records[3:]])
    record = store.prune(older_than=500.0, now=2000.0)
    assert record.data["sessions_removed"] == 0
    assert len(store.get_session("long")["commands"]) == 2


@sqlite_only
def test_prune_with_nothing_old_enough_changes_nothing(store):
    store.append(a_session(start=1000.0))
    assert store.prune(older_than=500.0, now=2000.0) is None
    assert len(list(store.records())) == 8
    empty = SQLiteStore(":memory:")
    empty.migrate()
    assert empty.prune(older_than=500.0, now=2000.0) is None


def test_prune_everything_leaves_only_the_pruned_record(store):
    records = store.append(a_session(start=100.0))
    record = store.prune(older_than=500.0, now=2000.0)
    assert list(store.records()) == [record]
    assert record.prev_hash == records[-1].hash
    assert verify_chain(store.records()).ok
    assert store.list_sessions() == []


def test_pruning_twice_keeps_the_chain_verifiable(store):
    store.append(a_session("a", start=100.0))
    store.append(a_session("b", start=1000.0))
    store.prune(older_than=500.0, now=2000.0)  # removes 1..8, appends 17
    store.append(a_session("c", start=3000.0))  # 18..25
    second = store.prune(older_than=2500.0, now=4000.0)  # removes 9..17
    assert (second.data["first_seq"], second.data["last_seq"]) == (9, 17)
    result = verify_chain(store.records())
    assert result.ok, result.problem
    assert result.first_seq == 18
    assert [(p.first_seq, p.last_seq) for p in result.pruned] == [(9, 17)]


@sqlite_only
def test_a_failed_prune_changes_nothing(store, path):
    store.append(a_session(start=100.0))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    locked = SQLiteStore(path, busy_timeout=0.01)
    with pytest.raises(StoreError, match="prune"):
        locked.prune(older_than=500.0, now=2000.0)
    other.execute("ROLLBACK")
    other.close()
    locked.close()
    assert len(list(store.records())) == 8


# -- API keys --------------------------------------------------------------------------------


def key(key_id="0123456789ab", identity="agent", created_at=10.0, **overrides):
    fields = {
        "key_id": key_id,
        "identity": identity,
        "groups": ("agents", "ci"),
        "secret_sha256": "ab" * 32,
        "scram": make_verifier("pw", b"0123456789abcdef", 4096),
        "created_at": created_at,
    }
    fields.update(overrides)
    return ApiKeyRecord(**fields)


def test_add_and_get_key(store):
    store.add_key(key(expires_at=99.0))
    assert store.get_key("0123456789ab") == key(expires_at=99.0)
    assert store.get_key("ffffffffffff") is None


def test_duplicate_key_id_is_refused(store):
    store.add_key(key())
    with pytest.raises(StoreError, match="already exists"):
        store.add_key(key())


def test_find_and_list_keys(store):
    store.add_key(key("000000000001", created_at=1.0))
    store.add_key(key("000000000003", created_at=3.0, identity="bob"))
    store.add_key(key("000000000002", created_at=2.0))
    assert [k.key_id for k in store.find_keys_by_identity("agent")] == [
        "000000000002",
        "000000000001",
    ]
    assert store.find_keys_by_identity("nobody") == []
    assert [k.key_id for k in store.list_keys()] == [
        "000000000001",
        "000000000002",
        "000000000003",
    ]


def test_revoke_key(store):
    store.add_key(key())
    assert store.revoke_key("0123456789ab", when=50.0) is True
    assert store.revoke_key("0123456789ab", when=60.0) is False
    assert store.revoke_key("ffffffffffff", when=60.0) is False
    assert store.get_key("0123456789ab").revoked_at == 50.0


def test_touch_key(store):
    store.add_key(key())
    store.touch_key("0123456789ab", 77.0)
    assert store.get_key("0123456789ab").last_used_at == 77.0


def test_key_repr_hides_hashes():
    text = repr(key())
    assert "abab" not in text
    assert "stored_key" not in text


# -- file permissions (issue 14, class 10) ---------------------------------------------------


@pytest.fixture
def no_umask():
    import os

    old = os.umask(0)
    yield
    os.umask(old)


def test_store_wal_shm_and_journal_are_private_whatever_the_umask(tmp_path, no_umask) -> None:
    import os
    import stat

    from hoopgw.audit.journal import AuditJournal, journal_path

    folder = tmp_path / "hoopgw"
    path = folder / "hoopgw.db"
    store = SQLiteStore(str(path))
    store.migrate()
    store.append([AuditEntry(kind="gateway_started", session_id="", time=1.0, data={})])
    journal = AuditJournal(str(journal_path(f"sqlite:///{path}")))
    try:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        for name in ("hoopgw.db", "hoopgw.db-wal", "hoopgw.db-shm", "hoopgw.db.audit-journal"):
            assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    finally:
        journal.close()
        store.close()


def test_an_existing_store_keeps_its_folder_mode(tmp_path, no_umask) -> None:
    import os
    import stat

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    SQLiteStore(str(folder / "hoopgw.db")).close()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755  # not ours to change
    assert stat.S_IMODE(os.stat(folder / "hoopgw.db").st_mode) == 0o600


@pytest.mark.parametrize(
    ("target", "mode", "named"),
    [
        ("hoopgw.db", 0o644, "hoopgw.db"),
        ("hoopgw.db", 0o620, "hoopgw.db"),
        ("hoopgw.db-wal", 0o604, "hoopgw.db-wal"),
        ("hoopgw.db.audit-journal", 0o640, "hoopgw.db.audit-journal"),
        (".", 0o775, "folder"),
        (".", 0o1777, "folder"),
    ],
)
def test_a_store_others_can_read_or_write_is_refused(tmp_path, target, mode, named) -> None:
    import os

    from hoopgw.store import check_store_private

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    path = folder / "hoopgw.db"
    SQLiteStore(str(path)).close()
    (folder / "hoopgw.db-wal").touch(mode=0o600)
    (folder / "hoopgw.db.audit-journal").touch(mode=0o600)
    url = f"sqlite:///{path}"
    check_store_private(url)  # private: no complaint
    os.chmod(folder / target, mode)
    with pytest.raises(StoreError) as raised:
        check_store_private(url)
    message = str(raised.value)
    where = folder if target == "." else folder / target
    assert str(where) in message and oct(mode)[2:] in message
    assert ("chmod 700" if target == "." else "chmod 600") in message, message
    assert named in message


@pytest.mark.parametrize(
    ("target", "mode"), [("hoopgw.db-wal", 0o644), ("hoopgw.db.audit-journal", 0o644), (".", 0o777)]
)
def test_a_store_reached_through_a_link_is_checked_where_its_files_are(
    tmp_path, target, mode
) -> None:
    # SQLite keeps the WAL, and the writer its journal, beside the file the link points to.
    import os

    from hoopgw.store import check_store_private

    state, data = tmp_path / "state", tmp_path / "data"
    state.mkdir(mode=0o700)
    data.mkdir(mode=0o700)
    SQLiteStore(str(data / "hoopgw.db")).close()
    (data / "hoopgw.db-wal").touch(mode=0o600)
    (data / "hoopgw.db.audit-journal").touch(mode=0o600)
    (state / "hoopgw.db").symlink_to(data / "hoopgw.db")
    url = f"sqlite:///{state / 'hoopgw.db'}"
    check_store_private(url)
    os.chmod(data / target, mode)
    with pytest.raises(StoreError) as raised:
        check_store_private(url)
    assert str(data if target == "." else data / target) in str(raised.value)


def test_a_store_in_memory_or_not_yet_made_needs_no_check(tmp_path) -> None:
    from hoopgw.store import check_store_private

    check_store_private("sqlite:///:memory:")
    check_store_private(f"sqlite:///{tmp_path / 'new.db'}")


def test_failed_logins_are_counted_per_host_and_forgotten_when_idle(store):
    count = store.count_login_failure
    assert [count("10.0.0.1", now=t, forget_after=60) for t in (1, 2, 3)] == [1, 2, 3]
    assert count("10.0.0.2", now=4, forget_after=60) == 1
    assert count("10.0.0.1", now=62, forget_after=60) == 4  # idle 59 s: still counted
    assert count("10.0.0.1", now=122, forget_after=60) == 1  # idle 60 s: forgotten
