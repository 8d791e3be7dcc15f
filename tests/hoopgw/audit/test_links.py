"""Tests for :mod:`hoopgw.audit.links`: the writer process's loop serving several workers'
sockets (with in-process socket pairs and the real journal and store in ``tmp_path``)."""

from __future__ import annotations

import io
import os
import socket
import threading
from typing import Any

from hoopgw.audit import process as audit_process
from hoopgw.audit.chain import DURABILITY_KIND, verify_chain
from hoopgw.audit.journal import AuditJournal
from hoopgw.audit.links import send_link
from hoopgw.audit.writer import encode_entry
from hoopgw.records import AuditEntry
from hoopgw.store import SQLiteStore


def line(worker: int, n: int) -> bytes:
    return encode_entry(
        AuditEntry(kind="command_received", session_id=f"w{worker}", time=1.0, data={"n": n})
    )


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "the writer closed the link"
        data += chunk
    return data


class Writer:
    """serve() with links, on a thread; stdin is a pipe the test closes to end it."""

    def __init__(self, tmp_path: Any) -> None:
        self.path = tmp_path / "a.db"
        self.links, theirs = socket.socketpair()
        stdin_read, self._stdin = os.pipe()
        self.stdout = io.BytesIO()
        self.status: list[int] = []

        def store() -> SQLiteStore:
            opened = SQLiteStore(str(self.path))
            opened.migrate()
            return opened

        def run() -> None:
            with os.fdopen(stdin_read, "rb", buffering=0) as stdin:
                self.status.append(
                    audit_process.serve(
                        store,
                        lambda: AuditJournal(str(tmp_path / "a.db.audit-journal")),
                        stdin,
                        self.stdout,
                        links=theirs,
                    )
                )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def worker(self) -> socket.socket:
        mine, writers = socket.socketpair()
        send_link(self.links, writers)
        writers.close()
        assert read_line(mine) == b"ready\n"
        return mine

    def stop(self) -> int:
        os.close(self._stdin)
        self.thread.join(10)
        return self.status[0]

    def stored(self) -> list[tuple[str, int]]:
        store = SQLiteStore(str(self.path))
        try:
            records = list(store.records())
            assert verify_chain(records).ok
            return [(r.session_id, r.data["n"]) for r in records if r.kind != DURABILITY_KIND]
        finally:
            store.close()


def test_every_workers_entries_reach_the_one_chain_each_answered_on_its_link(tmp_path):
    writer = Writer(tmp_path)
    first, second = writer.worker(), writer.worker()
    first.sendall(line(1, 1) + line(1, 2))
    assert read_line(first) == b"ok 2\n"
    second.sendall(line(2, 1))
    assert read_line(second) == b"ok 1\n"
    first.sendall(line(1, 3))
    assert read_line(first) == b"ok 1\n"
    first.close()
    second.close()
    assert writer.stop() == 0
    assert writer.stored() == [("w1", 1), ("w1", 2), ("w2", 1), ("w1", 3)]
    assert writer.stdout.getvalue() == b"ready\n"  # the parent is told only that


def test_a_line_split_across_sends_is_joined_and_a_half_line_of_a_dead_worker_dropped(
    tmp_path,
):
    writer = Writer(tmp_path)
    worker = writer.worker()
    whole = line(1, 1)
    worker.sendall(whole[:10])
    worker.sendall(whole[10:] + line(1, 2)[:5])
    assert read_line(worker) == b"ok 1\n"
    worker.close()  # died in the middle of its second line
    assert writer.stop() == 0
    assert writer.stored() == [("w1", 1)]


def test_a_garbled_line_is_refused_on_its_link_only(tmp_path):
    writer = Writer(tmp_path)
    bad, good = writer.worker(), writer.worker()
    bad.sendall(b"not json\n")
    assert read_line(bad).startswith(b"error 1 unreadable audit entry")
    good.sendall(line(2, 1))
    assert read_line(good) == b"ok 1\n"
    bad.close()
    good.close()
    assert writer.stop() == 0
    assert writer.stored() == [("w2", 1)]
