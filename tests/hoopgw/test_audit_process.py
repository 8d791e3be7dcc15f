"""Tests for the audit writer process: its loop (with in-memory pipes) and the real process."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from hoopgw import audit_process
from hoopgw.audit import AuditEntry, encode_entry, verify_chain
from hoopgw.errors import StoreError
from hoopgw.store import SQLiteStore


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
