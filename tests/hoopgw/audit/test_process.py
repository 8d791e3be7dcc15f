"""Tests for the audit writer process: its loop (with in-memory pipes) and the real process."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from hoopgw.audit import process as audit_process
from hoopgw.audit.chain import DURABILITY_KIND, Durability, verify_chain
from hoopgw.audit.checkpoints import (
    Checkpointer,
    CheckpointError,
    generate_signing_key,
    private_key_pem,
    read_checkpoint_file,
)
from hoopgw.audit.journal import AuditJournal, JournalError, journal_path
from hoopgw.audit.syncing import GroupSyncer, SyncSchedule
from hoopgw.audit.writer import SIGNING_KEY_ENV, decode_entry, encode_entry
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.store import SQLiteStore

KEY = generate_signing_key()
WRITER = [sys.executable, "-m", "hoopgw.audit.process"]


def entry(n: int) -> AuditEntry:
    return AuditEntry(kind="command_received", session_id="s", time=float(n), data={"seq": n})


class Chunked(io.RawIOBase):
    """A pipe that hands out its data in the given chunks, as a real pipe may; ``before(i)``
    runs before chunk ``i`` (and before end of input, ``i == len(chunks)``) is handed out."""

    def __init__(self, chunks: list[bytes], before=None) -> None:
        self._chunks = list(chunks)
        self._given = 0
        self._before = before

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._before is not None:
            self._before(self._given)
        self._given += 1
        return self._chunks.pop(0) if self._chunks else b""


def migrated(path) -> SQLiteStore:
    store = SQLiteStore(str(path))
    store.migrate()
    return store


def stored(path) -> list[int]:
    """The entries in the store (not the writer's own mode records)."""
    store = migrated(path)
    try:
        return [r.data["seq"] for r in store.records() if r.kind != DURABILITY_KIND]
    finally:
        store.close()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def run(tmp_path, stdin, stdout=None, *, store=None, journal=None, **kwargs) -> int:
    """serve() on a.db and its journal (or the store and journal given)."""
    return audit_process.serve(
        store or (lambda: migrated(tmp_path / "a.db")),
        journal or (lambda: AuditJournal(str(tmp_path / "a.db.audit-journal"))),
        stdin,
        io.BytesIO() if stdout is None else stdout,
        **kwargs,
    )


def test_each_chunk_is_journaled_answered_and_then_stored(tmp_path):
    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([lines[0] + lines[1], lines[2]]), stdout) == 0
    assert stdout.getvalue() == b"ready\nok 2\nok 1\n"
    assert stored(tmp_path / "a.db") == [1, 2, 3]
    assert verify_chain(migrated(tmp_path / "a.db").records()).ok
    # Everything is in the store at the end: the journal is emptied.
    assert (tmp_path / "a.db.audit-journal").stat().st_size == 0


def test_a_journal_left_by_a_gateway_before_record_format_2_is_stored_at_start(tmp_path):
    """An upgrade after a crash: the journal holds lines of the older wire format."""
    (tmp_path / "a.db.audit-journal").write_bytes(
        b'1 ["command_received","s",1.0,{"seq":1,"text":"SELECT 1"}]\n'
    )
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([encode_entry(entry(2))]), stdout) == 0
    assert stdout.getvalue() == b"ready\nok 1\n"
    assert stored(tmp_path / "a.db") == [1, 2]
    records = list(migrated(tmp_path / "a.db").records())
    assert [r.format for r in records] == [2, 2]
    assert records[0].data == {"seq": 1, "text": "SELECT 1"}
    assert verify_chain(records).ok


def test_the_store_thread_gathers_what_arrives_within_its_interval(tmp_path):
    appended = []

    class Counting(SQLiteStore):
        def append(self, entries, *, journal_mark=None, sync=True):
            appended.append(len(entries))
            return super().append(entries, journal_mark=journal_mark, sync=sync)

    def store():
        opened = Counting(str(tmp_path / "a.db"))
        opened.migrate()
        return opened

    journal = AuditJournal(str(tmp_path / "a.db.audit-journal"))
    appender = audit_process.StoreAppender(
        store, journal, None, retry_delay=1.0, store_interval=0.5
    )
    appender.start()
    appender.ready.wait()
    try:
        lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
        appender.put([decode_entry(lines[0])], journal.append(lines[:1]))
        assert appender.wait_applied(1, 10)  # idle: at once
        started = time.monotonic()
        appender.put([decode_entry(lines[1])], journal.append(lines[1:2]))
        appender.put([decode_entry(lines[2])], journal.append(lines[2:]))
        assert appender.wait_applied(3, 10)
        assert time.monotonic() - started >= 0.3  # the interval since the first passed first
        assert appended == [1, 2]  # one transaction for both
    finally:
        appender.finish()
        appender.join()
        journal.close()
    assert stored(tmp_path / "a.db") == [1, 2, 3]


def test_the_journal_is_emptied_as_it_goes_once_the_store_holds_it(tmp_path):
    path = tmp_path / "a.db.audit-journal"
    sizes = []
    lines = [encode_entry(entry(n)) for n in range(1, 6)]
    stdin = Chunked(lines, lambda i: sizes.append(path.stat().st_size))
    # Past its (here tiny) reset size, each append first waits for the store, empties the file.
    assert run(tmp_path, stdin, journal=lambda: AuditJournal(str(path), reset_size=1)) == 0
    assert sizes == [0] + [len(b"%d " % n + line) for n, line in enumerate(lines, 1)]
    assert path.stat().st_size == 0
    assert stored(tmp_path / "a.db") == [1, 2, 3, 4, 5]


def test_the_journal_lets_entries_go_only_once_the_store_holding_them_is_synced(tmp_path):
    events = []

    class Recording(SQLiteStore):
        def append(self, entries, *, journal_mark=None, sync=True):
            events.append(("append", sync))
            return super().append(entries, journal_mark=journal_mark, sync=sync)

        def sync(self):
            events.append(("sync", None))
            super().sync()

    class Journal(AuditJournal):
        def reset(self, applied):
            emptied = super().reset(applied)
            events.append(("reset", emptied))
            return emptied

    def store():
        opened = Recording(str(tmp_path / "a.db"))
        opened.migrate()
        return opened

    path = str(tmp_path / "a.db.audit-journal")
    stdin = Chunked([encode_entry(entry(n)) for n in range(1, 5)])
    assert run(tmp_path, stdin, store=store, journal=lambda: Journal(path, reset_size=1)) == 0
    assert stored(tmp_path / "a.db") == [1, 2, 3, 4]
    # The writer's appends are not synced one by one (the catching up at start is)...
    assert {sync for kind, sync in events if kind == "append"} == {False}
    # ...so each emptying of the journal follows a sync of the store after its last append.
    resets = [i for i, (kind, emptied) in enumerate(events) if kind == "reset" and emptied]
    assert len(resets) >= 2
    for i in resets:
        before = [kind for kind, _ in events[:i] if kind != "reset"]
        assert before[-1] == "sync"


def test_a_checkpoint_signs_only_a_synced_head():
    calls = []
    store = SimpleNamespace(
        sync=lambda: calls.append("sync"), last_record=lambda: calls.append("head") or "HEAD"
    )
    assert audit_process.synced_head(store)() == "HEAD"
    assert calls == ["sync", "head"]


def test_an_answer_leaves_only_after_the_journal_is_synced(tmp_path):
    stdout = io.BytesIO()
    answered_at_sync = []

    def sync(fd):
        answered_at_sync.append(stdout.getvalue().count(b"ok"))
        os.fdatasync(fd)

    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    journal = tmp_path / "j"
    run(tmp_path, Chunked(lines), stdout, journal=lambda: AuditJournal(str(journal), sync=sync))
    assert answered_at_sync == [0, 1, 2]
    assert stdout.getvalue() == b"ready\nok 1\nok 1\nok 1\n"


def test_a_line_split_across_chunks_is_joined(tmp_path):
    line = encode_entry(entry(1))
    stdout = io.BytesIO()
    run(tmp_path, Chunked([line[:5], line[5:]]), stdout)
    assert stdout.getvalue() == b"ready\nok 1\n"


def test_an_unterminated_last_line_is_still_written(tmp_path):
    stdout = io.BytesIO()
    run(tmp_path, Chunked([encode_entry(entry(1)).rstrip(b"\n")]), stdout)
    assert stdout.getvalue() == b"ready\nok 1\n"
    assert stored(tmp_path / "a.db") == [1]


def test_a_garbled_line_fails_its_batch_only_and_never_reaches_the_journal(tmp_path):
    stdout = io.BytesIO()
    syncs = []

    def sync(fd):
        syncs.append(fd)
        os.fdatasync(fd)

    journal = lambda: AuditJournal(str(tmp_path / "j"), sync=sync)  # noqa: E731
    run(tmp_path, Chunked([b"not json\n", encode_entry(entry(1))]), stdout, journal=journal)
    first, second, third = stdout.getvalue().splitlines()
    assert first == b"ready"
    assert second.startswith(b"error 1 unreadable audit entry")
    assert third == b"ok 1"
    assert len(syncs) == 1 and stored(tmp_path / "a.db") == [1]


def test_a_journal_that_cannot_be_written_is_answered_with_an_error(tmp_path):
    failing = [True]

    def sync(fd):
        if failing.pop(0) if failing else False:
            raise OSError(28, "No space left on device")
        os.fdatasync(fd)

    stdout = io.BytesIO()
    journal = lambda: AuditJournal(str(tmp_path / "j"), sync=sync)  # noqa: E731
    run(
        tmp_path, Chunked([encode_entry(entry(1)), encode_entry(entry(2))]), stdout, journal=journal
    )
    answers = stdout.getvalue().splitlines()
    assert answers[1].startswith(b"error 1 cannot write the audit journal")
    assert b"No space left on device" in answers[1]
    assert answers[2] == b"ok 1"
    assert stored(tmp_path / "a.db") == [2]


class FailingStore:
    """A store whose appends fail while ``failing`` is set, counting the attempts; pass
    :meth:`open` to serve(), which opens the store on its own thread."""

    def __init__(self, path) -> None:
        self._path = path
        self._store = None
        self.failing = True
        self.attempts = 0

    def open(self):
        self._store = migrated(self._path)
        return self

    def append(self, entries, *, journal_mark=None, sync=True):
        self.attempts += 1
        if self.failing:
            raise StoreError("database or disk is full")
        return self._store.append(entries, journal_mark=journal_mark, sync=sync)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_while_the_store_fails_new_entries_are_refused_and_journaled_ones_are_retried(
    tmp_path, capsys
):
    store = FailingStore(tmp_path / "a.db")

    def before(i):
        if i == 1:  # the first entry was answered; its append has failed twice since
            wait_until(lambda: store.attempts >= 2)
        if i == 2:
            store.failing = False
            wait_until(lambda: stored(tmp_path / "a.db") == [1])

    stdout = io.BytesIO()
    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    assert run(tmp_path, Chunked(lines, before), stdout, store=store.open, retry_delay=0.01) == 0
    answers = stdout.getvalue().splitlines()
    assert answers[1] == b"ok 1"
    assert answers[2] == b"error 1 the audit store cannot be written: database or disk is full"
    assert answers[3] == b"ok 1"
    assert stored(tmp_path / "a.db") == [1, 3]
    err = capsys.readouterr().err
    assert "audit store append failed, retrying" in err and "works again" in err


def test_entries_the_store_cannot_take_before_the_end_stay_in_the_journal(tmp_path, capsys):
    store = FailingStore(tmp_path / "a.db")
    assert run(tmp_path, Chunked([encode_entry(entry(1))]), store=store.open) == 1
    assert "1 audit entries are in the journal but not in the store" in capsys.readouterr().err
    # The next start appends them before it says ready.
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout) == 0
    assert stdout.getvalue() == b"ready\n"
    assert stored(tmp_path / "a.db") == [1]


def test_at_start_the_entries_a_crash_left_in_the_journal_are_stored_once(tmp_path, capsys):
    store = migrated(tmp_path / "a.db")
    store.append([entry(1)], journal_mark=1)
    store.close()
    journal = AuditJournal(str(tmp_path / "a.db.audit-journal"))
    journal.unapplied(0)
    journal.append([encode_entry(entry(n)) for n in (1, 2, 3)])  # answered; died before 2, 3
    journal.close()
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([encode_entry(entry(4))]), stdout) == 0
    assert stdout.getvalue() == b"ready\nok 1\n"
    assert stored(tmp_path / "a.db") == [1, 2, 3, 4]
    assert verify_chain(migrated(tmp_path / "a.db").records()).ok
    # Information, not a fault: the gateway logs a line so marked at the info level.
    assert "info: appended 2 audit entries left in the journal\n" in capsys.readouterr().err


def test_a_damaged_journal_exits_1_without_ready(tmp_path, capsys):
    (tmp_path / "a.db.audit-journal").write_bytes(b"1 not json\n")
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout) == 1
    assert stdout.getvalue() == b""
    assert "damaged at byte 0" in capsys.readouterr().err


def test_a_journal_in_use_by_another_writer_exits_1_without_ready(tmp_path, capsys):
    held = AuditJournal(str(tmp_path / "a.db.audit-journal"))
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout) == 1
    held.close()
    assert stdout.getvalue() == b""
    assert "in use by another audit writer" in capsys.readouterr().err


def test_a_store_that_cannot_open_exits_1_without_ready(tmp_path, capsys):
    def cannot_open():
        raise StoreError("unable to open database file")

    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout, store=cannot_open) == 1
    assert stdout.getvalue() == b""
    assert "unable to open database file" in capsys.readouterr().err


def test_the_journal_lives_beside_the_sqlite_file():
    assert journal_path("sqlite:////var/lib/h.db") == "/var/lib/h.db.audit-journal"
    relative = os.path.join(os.getcwd(), "rel.db.audit-journal")
    assert journal_path("sqlite:///rel.db") == relative
    assert journal_path("sqlite:///:memory:") is None


def test_main_needs_exactly_the_store_url(capsys):
    assert audit_process.main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.integration
def test_the_real_process_writes_durably_and_ends_at_end_of_input(tmp_path):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    lines = b"".join(encode_entry(entry(n)) for n in (1, 2))
    done = subprocess.run(
        [sys.executable, "-m", "hoopgw.audit.process", url],
        input=lines,
        capture_output=True,
        timeout=30,
        check=True,
    )
    answers = done.stdout.splitlines()
    assert answers[0] == b"ready"
    assert sum(int(a.split()[1]) for a in answers[1:]) == 2
    assert stored(tmp_path / "real.db") == [1, 2]
    assert (tmp_path / "real.db.audit-journal").stat().st_size == 0


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["fsync", "os"])
def test_entries_answered_before_a_crash_are_in_the_store_after_the_next_start(tmp_path, mode):
    """kill -9 of the writer loses nothing in either mode: with "os" the answered entries are
    in the operating system's copy of the journal, which outlives the process."""
    db = tmp_path / "real.db"
    url = f"sqlite:///{db}"
    migrated(db).close()
    # Another process holds the store's write lock: the writer can journal and answer, but
    # not append to the store, when it is killed.
    blocker = sqlite3.connect(str(db), isolation_level=None)
    process = subprocess.Popen(
        # A long sync interval: with "os" the entries are surely not synced yet at the kill.
        [*WRITER, url, "--durability", mode, "--sync-interval", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == b"ready\n"
        blocker.execute("BEGIN IMMEDIATE")
        for n in (1, 2, 3):
            process.stdin.write(encode_entry(entry(n)))
            process.stdin.flush()
            assert process.stdout.readline() == b"ok 1\n"
    finally:
        process.kill()
        process.wait(timeout=30)
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stored(db) == []
    done = subprocess.run(
        [sys.executable, "-m", "hoopgw.audit.process", url],
        input=encode_entry(entry(4)),
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == b"ready\nok 1\n"
    assert b"audit entries left in the journal" in done.stderr
    assert stored(db) == [1, 2, 3, 4]
    chain = verify_chain(migrated(db).records())
    assert chain.ok
    # The killed run's mode, then the next start's (the default, fsync).
    modes = [p.durability.mode for p in chain.durability if p.durability is not None]
    assert modes == ([mode] if mode == "fsync" else [mode, "fsync"])


def test_the_process_ends_with_its_input_not_with_a_signal_to_its_group(tmp_path):
    """A Ctrl-C (SIGINT) or SIGTERM sent to the gateway's whole process group must not end the
    writer before the gateway has handed over its last records: it ends when its input does
    (the gateway closed it, or died)."""
    db = tmp_path / "a.db"
    process = subprocess.Popen(
        [*WRITER, f"sqlite:///{db}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        process.stdin.write(encode_entry(entry(1)))
        process.stdin.flush()
        assert process.stdout.readline() == b"ok 1\n"
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr.read() == b""
    assert stored(db) == [1]


# -- checkpoints -----------------------------------------------------------------------------


class Now:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checkpointing(folder, clock, *, every=2, interval=60.0):
    def make(store):
        return Checkpointer(
            key=KEY,
            directory=folder,
            read_head=store.last_record,
            every=every,
            interval=interval,
            clock=clock,
        )

    return make


def checkpoint_seqs(folder):
    # Not the temporary file a checkpoint is written to before its rename.
    files = sorted(folder.glob("checkpoint-*"))
    return [read_checkpoint_file(p, KEY.public_key()).seq for p in files]


def test_checkpoints_are_written_every_n_records_and_at_the_end(tmp_path):
    lines = [encode_entry(entry(n)) for n in range(1, 6)]
    held = [1, 3, 5]  # records in the store before each chunk (and end of input) is read

    def before(i):
        if i:
            wait_until(lambda: len(stored(tmp_path / "a.db")) == held[i - 1])

    stdout = io.BytesIO()
    folder = tmp_path / "cp"
    make = checkpointing(folder, Now(), every=3)
    stdin = Chunked([lines[0], lines[1] + lines[2], lines[3] + lines[4]], before)
    assert run(tmp_path, stdin, stdout, checkpoints=make) == 0
    assert stdout.getvalue() == b"ready\nok 1\nok 2\nok 2\n"
    assert checkpoint_seqs(folder) == [3, 5]


def test_a_checkpoint_is_written_when_the_interval_passes_without_input(tmp_path):
    folder = tmp_path / "cp"

    def before(i):
        if i == 1:  # after the first entry, nothing arrives until the interval's checkpoint
            wait_until(lambda: folder.exists() and checkpoint_seqs(folder) == [1])

    stdin = Chunked([encode_entry(entry(1)), encode_entry(entry(2))], before)
    make = checkpointing(folder, time.time, every=100, interval=0.05)
    assert run(tmp_path, stdin, checkpoints=make) == 0
    assert checkpoint_seqs(folder) == [1, 2]  # at the interval, then at the end


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_records(tmp_path, capsys):
    blocker = tmp_path / "file"
    stdout = io.BytesIO()

    def make(store):
        made = checkpointing(blocker, Now(), every=1)(store)
        blocker.write_text("")  # a file where the folder should be
        return made

    stdin = Chunked([encode_entry(entry(1)), encode_entry(entry(2))])
    assert run(tmp_path, stdin, stdout, checkpoints=make) == 0
    assert stdout.getvalue() == b"ready\nok 1\nok 1\n"
    assert stored(tmp_path / "a.db") == [1, 2]
    assert "checkpoint not written: cannot write checkpoint" in capsys.readouterr().err


def test_checkpoints_that_cannot_start_exit_1_without_ready(tmp_path, capsys):
    def make(store):
        raise CheckpointError("cannot list checkpoints")

    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout, checkpoints=make) == 1
    assert stdout.getvalue() == b""
    assert "cannot list checkpoints" in capsys.readouterr().err


def test_main_needs_the_signing_key_in_its_environment(monkeypatch, capsys):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    assert audit_process.main(["sqlite:///x.db", "--checkpoint-dir", "/tmp/cp"]) == 2
    assert SIGNING_KEY_ENV in capsys.readouterr().err


def test_main_refuses_a_bad_signing_key_and_forgets_it(monkeypatch, capsys):
    monkeypatch.setenv(SIGNING_KEY_ENV, "not a key")
    assert audit_process.main(["sqlite:///x.db", "--checkpoint-dir", "/tmp/cp"]) == 1
    assert "signing key" in capsys.readouterr().err
    assert SIGNING_KEY_ENV not in os.environ


@pytest.mark.integration
def test_the_real_process_signs_a_checkpoint_at_end_of_input(tmp_path):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    folder = tmp_path / "cp"
    env = {**os.environ, SIGNING_KEY_ENV: private_key_pem(KEY).decode()}
    subprocess.run(
        [sys.executable, "-m", "hoopgw.audit.process", url, "--checkpoint-dir", str(folder)],
        input=b"".join(encode_entry(entry(n)) for n in (1, 2, 3)),
        capture_output=True,
        timeout=30,
        check=True,
        env=env,
    )
    assert checkpoint_seqs(folder) == [4]  # the writer's mode record, then the three entries


@pytest.mark.parametrize(
    "line",
    [
        b'[1,"s",2.0,{}]\n',
        b'["command_received",null,2.0,{"seq":1}]\n',
        b'["command_received","s",2.0,[]]\n',
        b'["command_received","s","later",{"seq":1}]\n',
    ],
)
def test_an_entry_the_store_cannot_take_is_refused_before_it_is_journaled(tmp_path, line):
    # Answered "ok", it could reach neither the store nor, at the next start, the gateway.
    stdout = io.BytesIO()
    after = encode_entry(entry(2))
    assert run(tmp_path, Chunked([line, after]), stdout) == 0
    ready, second, third = stdout.getvalue().splitlines()
    assert ready == b"ready"
    assert second.startswith(b"error 1 unreadable audit entry")
    assert third == b"ok 1"
    assert stored(tmp_path / "a.db") == [2]
    stdout = io.BytesIO()
    assert run(tmp_path, Chunked([]), stdout) == 0
    assert stdout.getvalue() == b"ready\n"


def test_a_store_reached_through_a_symlink_has_the_same_journal(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real = journal_path(f"sqlite:///{tmp_path / 'real' / 'h.db'}")
    linked = journal_path(f"sqlite:///{tmp_path / 'link' / 'h.db'}")
    # Else two gateways could each lock a journal of their own and trample the store's mark.
    assert real == linked


# -- durability ------------------------------------------------------------------------------


def test_at_start_the_mode_in_force_is_recorded_in_the_chain_before_ready(tmp_path):
    stdout = io.BytesIO()
    os_mode = Durability(mode="os", sync_interval=0.02)
    assert run(tmp_path, Chunked([encode_entry(entry(1))]), stdout, durability=os_mode) == 0
    assert stdout.getvalue() == b"ready\nok 1\n"  # the mode record is the writer's own
    store = migrated(tmp_path / "a.db")
    first, second = store.records()
    assert (first.kind, first.session_id) == (DURABILITY_KIND, "")
    assert first.data == {"mode": "os", "sync_interval": 0.02}
    assert second.data == {"seq": 1}
    [period] = verify_chain(store.records()).durability
    assert (period.durability, period.first_seq, period.last_seq) == (os_mode, 1, 2)


def test_with_fsync_the_mode_record_and_every_batch_are_synced_before_their_answer(tmp_path):
    stdout = io.BytesIO()
    answered_at_sync = []

    def sync(fd):
        answered_at_sync.append(stdout.getvalue().count(b"ok"))
        os.fdatasync(fd)

    lines = [encode_entry(entry(n)) for n in (1, 2)]
    journal = lambda: AuditJournal(str(tmp_path / "j"), sync=sync)  # noqa: E731
    run(tmp_path, Chunked(lines), stdout, journal=journal, durability=Durability())
    assert answered_at_sync == [0, 0, 1]
    assert stdout.getvalue() == b"ready\nok 1\nok 1\n"


def test_with_os_an_answer_leaves_once_written_while_a_group_sync_is_under_way(tmp_path):
    stdout = io.BytesIO()
    disk = threading.Event()
    answered_at_sync = []

    def sync(fd):
        answered_at_sync.append(stdout.getvalue().count(b"ok"))
        if len(answered_at_sync) > 1:  # the first is the mode record's, before ready
            assert disk.wait(10)
        os.fdatasync(fd)

    def before(i):
        if i == 1:  # entry 1 was answered and its sync is stuck on the (slow) disk
            wait_until(lambda: len(answered_at_sync) == 2)
        if i == 3:  # entries 2 and 3 were written and answered all the same
            assert stdout.getvalue() == b"ready\nok 1\nok 1\nok 1\n"
            assert len(answered_at_sync) == 2
            disk.set()

    path = tmp_path / "a.db.audit-journal"
    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    os_mode = Durability(mode="os", sync_interval=0.001)
    journal = lambda: AuditJournal(str(path), sync=sync)  # noqa: E731
    assert run(tmp_path, Chunked(lines, before), stdout, journal=journal, durability=os_mode) == 0
    # One sync for the mode record, one for entry 1, one group for entries 2 and 3; a sync
    # never came before the answer of what it covers.
    assert answered_at_sync == [0, 1, 3]
    assert stored(tmp_path / "a.db") == [1, 2, 3]
    assert path.stat().st_size == 0


def test_the_sync_schedule_syncs_at_once_when_idle_and_groups_under_load():
    schedule = SyncSchedule(0.01)
    assert schedule.due_in(100.0) is None  # nothing written
    schedule.written()
    assert schedule.due_in(100.0) == 0.0  # the first sync is due at once
    schedule.starting(100.0)
    assert schedule.due_in(100.001) is None
    # Written while that sync runs: due one interval after it started, not sooner...
    schedule.written()
    schedule.written()
    assert schedule.due_in(100.002) == pytest.approx(0.008)
    assert schedule.due_in(100.01) == 0.0
    # ...and at once if the disk took longer than the interval.
    assert schedule.due_in(100.5) == 0.0
    schedule.starting(100.5)
    assert schedule.due_in(100.5) is None
    schedule.written()
    assert schedule.due_in(100.505) == pytest.approx(0.005)


def test_only_a_write_after_a_sync_started_wakes_the_syncer():
    schedule = SyncSchedule(0.01)
    assert schedule.written()  # the syncer waits for something to sync: wake it
    assert not schedule.written()  # it waits for the due time of the first already
    schedule.starting(100.0)
    assert schedule.written()


class CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_only_a_batch_for_an_empty_queue_wakes_the_store_thread(tmp_path):
    journal = AuditJournal(str(tmp_path / "a.db.audit-journal"))
    appender = audit_process.StoreAppender(
        lambda: migrated(tmp_path / "a.db"), journal, None, retry_delay=1.0
    )
    appender._cond = condition = CountingCondition()  # not started: nothing takes the queue
    appender.put([], 1)
    appender.put([], 2)  # the thread would take it with the first, or after its interval
    assert condition.notified == 1
    journal.close()


def test_with_os_an_answer_leaves_only_once_the_entry_is_written_to_the_journal(
    tmp_path, monkeypatch
):
    path = tmp_path / "a.db.audit-journal"
    real_write = os.write
    full = [False]

    def write(fd, data):
        if full[0] and os.readlink(f"/proc/self/fd/{fd}") == str(path):
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    def before(i):
        if i == 1:  # entry 1 was answered: it is in the journal file (not necessarily on disk)
            assert b' ["command_received","s",1.0]\t{"seq":1}\n' in path.read_bytes()
            full[0] = True
        if i == 2:
            full[0] = False

    monkeypatch.setattr(audit_process.os, "write", write)
    stdout = io.BytesIO()
    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    os_mode = Durability(mode="os", sync_interval=0.001)
    assert run(tmp_path, Chunked(lines, before), stdout, durability=os_mode) == 0
    ready, first, second, third = stdout.getvalue().splitlines()
    assert (ready, first, third) == (b"ready", b"ok 1", b"ok 1")
    assert second.startswith(b"error 1 cannot write the audit journal")
    assert stored(tmp_path / "a.db") == [1, 3]


class FakeJournal:
    def __init__(self, fail: bool = False) -> None:
        self.syncs = 0
        self.fail = fail

    def sync(self) -> None:
        self.syncs += 1
        if self.fail:
            raise JournalError("cannot sync the audit journal 'j': [Errno 5] EIO")


def test_the_syncer_syncs_what_is_unsynced_when_it_finishes_without_waiting():
    journal = FakeJournal()
    syncer = GroupSyncer(journal, 3600.0, clock=lambda: 0.0)
    syncer.start()
    syncer.written()  # the first sync starts at once
    wait_until(lambda: journal.syncs == 1)
    syncer.written()  # due in an hour...
    syncer.finish()  # ...but synced now
    syncer.join(10)
    assert not syncer.is_alive()
    assert (journal.syncs, syncer.failure) == (2, None)


def test_a_sync_that_fails_refuses_every_later_batch(tmp_path, capsys):
    journal = FakeJournal(fail=True)
    syncer = GroupSyncer(journal, 0.01)
    syncer.start()
    syncer.written()
    syncer.join(10)
    assert syncer.failure == "cannot sync the audit journal 'j': [Errno 5] EIO"
    assert "refusing every later audit entry" in capsys.readouterr().err
    stdout = io.BytesIO()
    audit_process._journal_batch(
        [encode_entry(entry(1))], journal, SimpleNamespace(failure=None), stdout, syncer
    )
    assert stdout.getvalue() == b"error 1 cannot sync the audit journal 'j': [Errno 5] EIO\n"


# The thread re-raises the defect (so its traceback is printed), as the store thread does.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_defect_in_the_syncer_refuses_every_later_batch_too(capsys):
    class Broken:
        def sync(self) -> None:
            raise RuntimeError("bug")

    syncer = GroupSyncer(Broken(), 0.01)
    syncer.start()
    syncer.written()
    syncer.join(10)
    assert syncer.failure == "internal error of the audit journal sync: RuntimeError('bug')"
    assert "internal error of the audit journal sync" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["sqlite:///x.db", "--durability", "none"],
        ["sqlite:///x.db", "--sync-interval", "0"],
        ["sqlite:///x.db", "--sync-interval", "nan"],
    ],
)
def test_main_refuses_an_unknown_durability(argv, capsys):
    assert audit_process.main(argv) == 2
    err = capsys.readouterr().err
    assert "--durability" in err or "--sync-interval" in err


@pytest.mark.parametrize(
    "data",
    [
        # Read as "block" by json.loads (the last key wins), as "allow" by a reader that keeps
        # the first: the hash covers these bytes, so the chain would vouch for both readings.
        b'{"seq":1,"verdict":"allow","verdict":"block"}',
        b'{"seq": 1}',
        b'{"seq":1} ',
        b'{"seq":NaN}',
        b'{"text":"\\u00e9"}',
        b'{"text":"\\ud800"}',
    ],
)
def test_data_not_in_its_one_serialisation_is_refused_before_it_is_journaled(tmp_path, data):
    """A format 2 hash covers the data bytes as they came: only the one serialisation the
    gateway makes (encode_data) may be stored, so every reader reads what was hashed."""
    stdout = io.BytesIO()
    line = b'["command_decided","s",2.0]\t' + data + b"\n"
    assert run(tmp_path, Chunked([line, encode_entry(entry(2))]), stdout) == 0
    _, second, third = stdout.getvalue().splitlines()
    assert second.startswith(b"error 1 unreadable audit entry")
    assert third == b"ok 1"
    assert stored(tmp_path / "a.db") == [2]
