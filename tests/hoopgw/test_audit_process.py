"""Tests for the audit writer process: its loop (with in-memory pipes) and the real process."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from hoopgw import audit_process
from hoopgw.audit import SIGNING_KEY_ENV, AuditEntry, encode_entry, verify_chain
from hoopgw.checkpoints import (
    Checkpointer,
    CheckpointError,
    generate_signing_key,
    private_key_pem,
    read_checkpoint_file,
)
from hoopgw.errors import StoreError
from hoopgw.store import SQLiteStore

KEY = generate_signing_key()


def entry(n: int) -> AuditEntry:
    return AuditEntry(kind="command_received", session_id="s", time=float(n), data={"seq": n})


class Chunked(io.RawIOBase):
    """A pipe that hands out its data in the given chunks, as a real pipe may."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def migrated(path) -> SQLiteStore:
    store = SQLiteStore(str(path))
    store.migrate()
    return store


def test_each_chunk_is_one_commit_answered_in_order(tmp_path):
    lines = [encode_entry(entry(n)) for n in (1, 2, 3)]
    stdin = Chunked([lines[0] + lines[1], lines[2]])
    stdout = io.BytesIO()
    assert audit_process.serve(lambda: migrated(tmp_path / "a.db"), stdin, stdout) == 0
    assert stdout.getvalue() == b"ready\nok 2 2\nok 1 3\n"
    store = migrated(tmp_path / "a.db")
    assert [r.data["seq"] for r in store.records()] == [1, 2, 3]
    assert verify_chain(store.records()).ok


def test_a_line_split_across_chunks_is_joined(tmp_path):
    line = encode_entry(entry(1))
    stdout = io.BytesIO()
    audit_process.serve(lambda: migrated(tmp_path / "a.db"), Chunked([line[:5], line[5:]]), stdout)
    assert stdout.getvalue() == b"ready\nok 1 1\n"


def test_an_unterminated_last_line_is_still_committed(tmp_path):
    stdout = io.BytesIO()
    stdin = Chunked([encode_entry(entry(1)).rstrip(b"\n")])
    audit_process.serve(lambda: migrated(tmp_path / "a.db"), stdin, stdout)
    assert stdout.getvalue() == b"ready\nok 1 1\n"


class FailingOnce:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.failed = False

    def append(self, entries):
        if not self.failed:
            self.failed = True
            raise StoreError("database or disk is full")
        return self._store.append(entries)

    def close(self) -> None:
        self._store.close()


def test_a_failed_commit_is_answered_and_the_loop_goes_on(tmp_path):
    store = FailingOnce(migrated(tmp_path / "a.db"))
    stdin = Chunked([encode_entry(entry(1)) + encode_entry(entry(2)), encode_entry(entry(3))])
    stdout = io.BytesIO()
    audit_process.serve(lambda: store, stdin, stdout)
    assert stdout.getvalue() == b"ready\nerror 2 database or disk is full\nok 1 1\n"


def test_a_garbled_line_fails_its_batch_only(tmp_path):
    stdout = io.BytesIO()
    stdin = Chunked([b"not json\n", encode_entry(entry(1))])
    audit_process.serve(lambda: migrated(tmp_path / "a.db"), stdin, stdout)
    first, second, third = stdout.getvalue().splitlines()
    assert first == b"ready" and first != second
    assert second.startswith(b"error 1 ")
    assert third == b"ok 1 1"


def test_a_store_that_cannot_open_exits_1_without_ready(capsys):
    def cannot_open():
        raise StoreError("unable to open database file")

    stdout = io.BytesIO()
    assert audit_process.serve(cannot_open, Chunked([]), stdout) == 1
    assert stdout.getvalue() == b""
    assert "unable to open database file" in capsys.readouterr().err


def test_main_needs_exactly_the_store_url(capsys):
    assert audit_process.main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.integration
def test_the_real_process_writes_durably_and_ends_at_end_of_input(tmp_path):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    lines = b"".join(encode_entry(entry(n)) for n in (1, 2))
    done = subprocess.run(
        [sys.executable, "-m", "hoopgw.audit_process", url],
        input=lines,
        capture_output=True,
        timeout=30,
        check=True,
    )
    answers = done.stdout.splitlines()
    assert answers[0] == b"ready"
    assert sum(int(a.split()[1]) for a in answers[1:]) == 2
    assert [r.data["seq"] for r in migrated(tmp_path / "real.db").records()] == [1, 2]


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
    return [read_checkpoint_file(p, KEY.public_key()).seq for p in sorted(folder.iterdir())]


def test_checkpoints_are_written_every_n_records_and_at_the_end(tmp_path):
    lines = [encode_entry(entry(n)) for n in range(1, 6)]
    stdin = Chunked([lines[0], lines[1] + lines[2], lines[3] + lines[4]])
    stdout = io.BytesIO()
    folder = tmp_path / "cp"
    make = checkpointing(folder, Now(), every=3)
    assert (
        audit_process.serve(lambda: migrated(tmp_path / "a.db"), stdin, stdout, checkpoints=make)
        == 0
    )
    assert stdout.getvalue() == b"ready\nok 1 1\nok 2 3\nok 2 5\n"
    assert checkpoint_seqs(folder) == [3, 5]


def test_a_checkpoint_is_written_when_the_interval_passes_without_input(tmp_path):
    clock = Now()
    folder = tmp_path / "cp"
    waits = []

    def wait_readable(timeout):
        waits.append(timeout)
        if len(waits) == 2:  # after the first commit, nothing arrives for a while
            clock.now += timeout
            return False
        return True

    stdin = Chunked([encode_entry(entry(1)), encode_entry(entry(2))])
    audit_process.serve(
        lambda: migrated(tmp_path / "a.db"),
        stdin,
        io.BytesIO(),
        checkpoints=checkpointing(folder, clock, every=100, interval=60.0),
        wait_readable=wait_readable,
    )
    assert waits[:3] == [60.0, 60.0, 60.0]
    assert checkpoint_seqs(folder) == [1, 2]  # at the interval, then at the end


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_records(tmp_path, capsys):
    blocker = tmp_path / "file"
    stdout = io.BytesIO()

    def make(store):
        made = checkpointing(blocker, Now(), every=1)(store)
        blocker.write_text("")  # a file where the folder should be
        return made

    stdin = Chunked([encode_entry(entry(1)), encode_entry(entry(2))])
    audit_process.serve(lambda: migrated(tmp_path / "a.db"), stdin, stdout, checkpoints=make)
    assert stdout.getvalue() == b"ready\nok 1 1\nok 1 2\n"
    assert "checkpoint not written: cannot write checkpoint" in capsys.readouterr().err


def test_checkpoints_that_cannot_start_exit_1_without_ready(tmp_path, capsys):
    def make(store):
        raise CheckpointError("cannot list checkpoints")

    stdout = io.BytesIO()
    assert (
        audit_process.serve(
            lambda: migrated(tmp_path / "a.db"), Chunked([]), stdout, checkpoints=make
        )
        == 1
    )
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
        [sys.executable, "-m", "hoopgw.audit_process", url, "--checkpoint-dir", str(folder)],
        input=b"".join(encode_entry(entry(n)) for n in (1, 2, 3)),
        capture_output=True,
        timeout=30,
        check=True,
        env=env,
    )
    assert checkpoint_seqs(folder) == [3]
