"""Tests for hoopgw.audit: the hash chain, verify_chain and the AuditWriter.

The writer's thread is replaced by a worker that runs jobs when the test says so, and the
reactor by one that queues ``callFromThread`` calls, so every step is deterministic.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest

from hoopgw.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    AuditWriter,
    ThreadWorker,
    canonical_json,
    record_hash,
    verify_chain,
)
from hoopgw.errors import StoreError
from hoopgw.store import SQLiteStore


class StepWorker:
    """A Worker that runs its jobs only when ``run()`` is called."""

    def __init__(self):
        self.jobs = []
        self.quitted = False

    def do(self, job):
        assert not self.quitted, "job queued after quit"
        self.jobs.append(job)

    def quit(self):
        self.quitted = True

    def run(self):
        while self.jobs:
            self.jobs.pop(0)()


class ThreadlessReactor:
    """Queues callFromThread calls; ``drain()`` runs them as the reactor thread would."""

    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args):
        self.calls.append((f, args))

    def drain(self):
        while self.calls:
            f, args = self.calls.pop(0)
            f(*args)


class SpyStore:
    """A store that records what it was asked to append and can be told to fail."""

    def __init__(self):
        self.appends = []
        self.fail_with = None
        self.closed = False
        self.during_append = None
        self._seq = 0

    def append(self, entries):
        if self.during_append is not None:
            hook, self.during_append = self.during_append, None
            hook()
        if self.fail_with is not None:
            raise self.fail_with
        self.appends.append(list(entries))
        records = []
        for entry in entries:
            self._seq += 1
            records.append(
                AuditRecord(
                    seq=self._seq,
                    kind=entry.kind,
                    session_id=entry.session_id,
                    time=entry.time,
                    data=entry.data,
                    prev_hash="p",
                    hash="h",
                )
            )
        return records

    def close(self):
        self.closed = True


def entry(n=1, session_id="s1", **data):
    return AuditEntry(
        kind="command_received", session_id=session_id, time=float(n), data={"seq": n, **data}
    )


@pytest.fixture
def parts():
    store, worker, reactor = SpyStore(), StepWorker(), ThreadlessReactor()
    writer = AuditWriter(lambda: store, reactor, worker_factory=lambda: worker)
    return store, worker, reactor, writer


def settle(worker, reactor):
    worker.run()
    reactor.drain()


def results(d):
    out = []
    d.addBoth(out.append)
    return out


# -- the hash ----------------------------------------------------------------------------------


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})
    with pytest.raises(TypeError):
        canonical_json({"x": b"bytes"})


def test_record_hash_covers_every_field():
    fields = dict(seq=1, kind="k", session_id="s", time=1.5, data={"a": 1}, prev_hash=GENESIS_HASH)
    base = record_hash(**fields)
    assert len(base) == 64
    assert base == record_hash(**dict(fields))
    for name, other in [
        ("seq", 2),
        ("kind", "x"),
        ("session_id", "t"),
        ("time", 1.25),
        ("data", {"a": 2}),
        ("prev_hash", "1" * 64),
    ]:
        assert record_hash(**{**fields, name: other}) != base, name


# -- verify_chain on records -------------------------------------------------------------------


def chain(n):
    records, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        digest = record_hash(
            seq=seq, kind="k", session_id="s", time=float(seq), data={"n": seq}, prev_hash=prev
        )
        records.append(
            AuditRecord(
                seq=seq,
                kind="k",
                session_id="s",
                time=float(seq),
                data={"n": seq},
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    return records


def test_verify_intact_and_empty_chains():
    intact = verify_chain(chain(5))
    assert intact.ok and intact.checked == 5 and intact.first_bad_seq is None
    result = verify_chain([])
    assert result.ok and result.checked == 0 and result.first_bad_seq is None


def test_verify_reports_several_missing_records():
    records = chain(6)
    result = verify_chain(records[:1] + records[4:])
    assert not result.ok
    assert result.first_bad_seq == 2
    assert result.problem == "records 2 to 4 are missing"


def test_verify_reports_a_repeated_seq():
    records = chain(3)
    result = verify_chain([records[0], records[1], records[1]])
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "appears after record 2" in result.problem


# -- verify_chain on a tampered SQLite file ------------------------------------------------------


@pytest.fixture
def tampered(tmp_path):
    """A store holding 6 records, and a raw connection to tamper with its file."""
    path = str(tmp_path / "audit.db")
    store = SQLiteStore(path)
    store.migrate()
    store.append([entry(n) for n in range(1, 7)])
    raw = sqlite3.connect(path, isolation_level=None)
    yield store, raw
    raw.close()
    store.close()


def test_verify_intact_store(tampered):
    store, _ = tampered
    result = verify_chain(store.records())
    assert result.ok
    assert result.checked == 6
    assert result.problem == ""


def test_verify_detects_a_changed_record(tampered):
    store, raw = tampered
    raw.execute("""UPDATE audit_records SET data = '{"seq":3,"text":"harmless"}' WHERE seq = 3""")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "changed" in result.problem


def test_verify_detects_a_changed_time(tampered):
    store, raw = tampered
    raw.execute("UPDATE audit_records SET time = time + 1 WHERE seq = 5")
    assert verify_chain(store.records()).first_bad_seq == 5


def test_verify_detects_a_removed_record(tampered):
    store, raw = tampered
    raw.execute("DELETE FROM audit_records WHERE seq = 4")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem == "record 4 is missing"


def test_verify_detects_a_removed_and_renumbered_record(tampered):
    store, raw = tampered
    raw.execute("DELETE FROM audit_records WHERE seq = 4")
    raw.execute("UPDATE audit_records SET seq = seq - 1 WHERE seq > 4")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4


def test_verify_detects_an_inserted_record(tampered):
    store, raw = tampered
    # A forger who knows the hash function makes a valid-looking record 3 and shifts the rest.
    prev = raw.execute("SELECT hash FROM audit_records WHERE seq = 2").fetchone()[0]
    data = {"seq": 99, "text": "forged"}
    digest = record_hash(
        seq=3, kind="command_received", session_id="s1", time=2.5, data=data, prev_hash=prev
    )
    for seq in range(6, 2, -1):
        raw.execute("UPDATE audit_records SET seq = seq + 1 WHERE seq = ?", (seq,))
    raw.execute(
        "INSERT INTO audit_records VALUES (3, 'command_received', 's1', 2.5, ?, ?, ?)",
        (canonical_json(data), prev, digest),
    )
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.checked == 4


def test_verify_detects_reordered_records(tampered):
    store, raw = tampered
    raw.execute("UPDATE audit_records SET seq = -1 WHERE seq = 2")
    raw.execute("UPDATE audit_records SET seq = 2 WHERE seq = 3")
    raw.execute("UPDATE audit_records SET seq = 3 WHERE seq = -1")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 2


# -- AuditWriter ---------------------------------------------------------------------------------


def test_write_fires_only_once_durable(parts):
    store, worker, reactor, writer = parts
    writer.start()
    done = results(writer.write(entry(1)))
    assert done == [] and store.appends == []
    worker.run()
    assert len(store.appends) == 1
    assert done == []  # committed, but Deferreds fire on the reactor thread only
    reactor.drain()
    [record] = done
    assert isinstance(record, AuditRecord)
    assert record.seq == 1


def test_start_fires_once_the_store_is_open(parts):
    _, worker, reactor, writer = parts
    started = results(writer.start())
    assert started == []
    settle(worker, reactor)
    assert started == [None]


def test_start_twice_is_a_programming_error(parts):
    *_, writer = parts
    writer.start()
    with pytest.raises(RuntimeError):
        writer.start()


def test_entries_queued_together_share_one_transaction(parts):
    store, worker, reactor, writer = parts
    writer.start()
    done = [results(writer.write(entry(n, session_id=f"s{n}"))) for n in range(1, 5)]
    settle(worker, reactor)
    assert [[e.session_id for e in batch] for batch in store.appends] == [["s1", "s2", "s3", "s4"]]
    assert [d[0].seq for d in done] == [1, 2, 3, 4]


def test_entries_written_during_a_commit_go_in_the_next_one(parts):
    store, worker, reactor, writer = parts
    writer.start()
    late = []
    store.during_append = lambda: late.extend(
        [results(writer.write(entry(2))), results(writer.write(entry(3)))]
    )
    first = results(writer.write(entry(1)))
    settle(worker, reactor)
    assert [[e.data["seq"] for e in batch] for batch in store.appends] == [[1], [2, 3]]
    assert first[0].seq == 1
    assert [d[0].seq for d in late] == [2, 3]


def test_store_failure_fails_the_batch_with_store_error(parts):
    store, worker, reactor, writer = parts
    writer.start()
    store.fail_with = StoreError("database or disk is full")
    done = [results(writer.write(entry(n))) for n in (1, 2)]
    settle(worker, reactor)
    for d in done:
        d[0].trap(StoreError)
        assert "full" in str(d[0].value)
    store.fail_with = None
    again = results(writer.write(entry(3)))
    settle(worker, reactor)
    assert again[0].seq == 1


def test_unexpected_store_exception_becomes_store_error(parts):
    store, worker, reactor, writer = parts
    writer.start()
    store.fail_with = OSError("boom")
    done = results(writer.write(entry(1)))
    settle(worker, reactor)
    done[0].trap(StoreError)
    assert "boom" in str(done[0].value)


def test_store_that_cannot_open_fails_start_and_writes():
    worker, reactor = StepWorker(), ThreadlessReactor()

    def cannot_open():
        raise StoreError("cannot open SQLite store")

    writer = AuditWriter(cannot_open, reactor, worker_factory=lambda: worker)
    started = results(writer.start())
    done = results(writer.write(entry(1)))
    settle(worker, reactor)
    started[0].trap(StoreError)
    done[0].trap(StoreError)


def test_store_factory_crash_is_a_store_error():
    worker, reactor = StepWorker(), ThreadlessReactor()

    def crashing():
        raise sqlite3.OperationalError("unable to open database file")

    writer = AuditWriter(crashing, reactor, worker_factory=lambda: worker)
    started = results(writer.start())
    settle(worker, reactor)
    started[0].trap(StoreError)


def test_write_before_start_fails(parts):
    *_, writer = parts
    results(writer.write(entry(1)))[0].trap(StoreError)


def test_unserialisable_entry_fails_at_once(parts):
    store, worker, reactor, writer = parts
    writer.start()
    done = results(
        writer.write(AuditEntry(kind="k", session_id="s", time=1.0, data={"x": object()}))
    )
    done[0].trap(StoreError)
    settle(worker, reactor)
    assert store.appends == []


def test_stop_flushes_then_closes(parts):
    store, worker, reactor, writer = parts
    writer.start()
    done = results(writer.write(entry(1)))
    stopped = results(writer.stop())
    assert worker.quitted
    assert stopped == [] and not store.closed
    settle(worker, reactor)
    assert done[0].seq == 1
    assert store.closed
    assert stopped == [None]
    results(writer.write(entry(2)))[0].trap(StoreError)
    assert results(writer.stop()) == [None]


def test_stop_before_start(parts):
    *_, writer = parts
    assert results(writer.stop()) == [None]


def test_writer_with_a_real_sqlite_store(tmp_path):
    worker, reactor = StepWorker(), ThreadlessReactor()
    path = str(tmp_path / "audit.db")

    def open_migrated():
        store = SQLiteStore(path)
        store.migrate()
        return store

    writer = AuditWriter(open_migrated, reactor, worker_factory=lambda: worker)
    writer.start()
    done = [results(writer.write(entry(n))) for n in range(1, 4)]
    writer.stop()
    settle(worker, reactor)
    assert [d[0].seq for d in done] == [1, 2, 3]
    reader = SQLiteStore(path)
    try:
        assert list(reader.records()) == [d[0] for d in done]
        assert verify_chain(reader.records()).ok
    finally:
        reader.close()


# -- the production worker -----------------------------------------------------------------------


def test_thread_worker_runs_jobs_in_order_on_its_own_thread():
    seen = []
    finished = threading.Event()
    worker = ThreadWorker(name="test-audit-writer")
    worker.do(lambda: seen.append(threading.current_thread().name))
    worker.do(lambda: 1 / 0)  # a failing job must not end the thread
    worker.do(lambda: seen.append("second"))
    worker.do(finished.set)
    worker.quit()
    assert finished.wait(timeout=10)
    worker._thread.join(timeout=10)
    assert not worker._thread.is_alive()
    assert seen == ["test-audit-writer", "second"]


# -- records that need no commit of their own ---------------------------------------------------


class ClockReactor(ThreadlessReactor):
    """A ThreadlessReactor with timers (``callLater``) driven by a task.Clock."""

    def __init__(self):
        super().__init__()
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.callLater = self.clock.callLater


@pytest.fixture
def lazy_parts():
    store, worker, reactor = SpyStore(), StepWorker(), ClockReactor()
    writer = AuditWriter(lambda: store, reactor, worker_factory=lambda: worker, lazy_delay=0.5)
    writer.start()
    settle(worker, reactor)
    return store, worker, reactor, writer


def test_lazy_write_joins_the_next_urgent_commit(lazy_parts):
    store, worker, reactor, writer = lazy_parts
    lazy = results(writer.write(entry(1), urgent=False))
    assert worker.jobs == []  # no commit of its own
    urgent = results(writer.write(entry(2)))
    settle(worker, reactor)
    assert [[e.data["seq"] for e in batch] for batch in store.appends] == [[1, 2]]
    assert lazy[0].seq == 1 and urgent[0].seq == 2


def test_lazy_write_is_committed_after_lazy_delay(lazy_parts):
    store, worker, reactor, writer = lazy_parts
    lazy = results(writer.write(entry(1), urgent=False))
    reactor.clock.advance(0.4)
    assert worker.jobs == []
    reactor.clock.advance(0.1)
    settle(worker, reactor)
    assert len(store.appends) == 1 and lazy[0].seq == 1


def test_stop_commits_lazy_writes(lazy_parts):
    store, worker, reactor, writer = lazy_parts
    lazy = results(writer.write(entry(1), urgent=False))
    stopped = results(writer.stop())
    settle(worker, reactor)
    assert len(store.appends) == 1 and lazy[0].seq == 1
    assert stopped == [None]
    assert reactor.clock.getDelayedCalls() == []


def test_record_hash_with_prepared_json_equals_the_canonical_document():
    data = {"text": "SELECT 'ü'", "seq": 3, "nested": {"b": 1, "a": [1.5, None]}}
    fields = dict(seq=7, kind="command_received", session_id="s", time=12.25, prev_hash="ab" * 32)
    document = canonical_json({**fields, "data": data})
    expected = hashlib.sha256(document.encode("utf-8")).hexdigest()
    assert record_hash(**fields, data=data) == expected
    assert record_hash(**fields, data=data, data_json=canonical_json(data)) == expected
