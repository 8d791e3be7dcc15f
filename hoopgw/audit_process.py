"""The audit writer process: appends the gateway's audit entries to the store, durably.

Started by :class:`hoopgw.audit.AuditWriter` as ``python -m hoopgw.audit_process STORE_URL``.
It reads one entry per line on stdin (:func:`hoopgw.audit.encode_entry`), commits every entry
that has arrived in one transaction, and answers on stdout, in order:

- ``ready`` once the store is open and migrated;
- ``ok COUNT LAST_SEQ`` when the next COUNT entries are durable, the last with ``seq`` LAST_SEQ;
- ``error COUNT WHY`` when the next COUNT entries could not be written.

At end of input it commits what it holds, closes the store and exits 0. A store that cannot be
opened is reported on stderr, with exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import BinaryIO

from hoopgw.audit import decode_entry
from hoopgw.errors import HoopgwError
from hoopgw.store import Store, open_store

READ_SIZE = 1 << 16


def serve(open_migrated: Callable[[], Store], stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Run the writer loop until end of input; return the exit status."""
    try:
        store = open_migrated()
    except HoopgwError as exc:
        sys.stderr.write(f"cannot open the audit store: {exc}\n")
        return 1
    stdout.write(b"ready\n")
    stdout.flush()
    pending = b""
    try:
        while chunk := _read_available(stdin):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                _commit(store, lines, stdout)
        if pending:
            _commit(store, [pending], stdout)
    finally:
        store.close()
    return 0


def _read_available(stdin: BinaryIO) -> bytes:
    """Whatever has arrived (at least one byte), or b"" at end of input."""
    read1 = getattr(stdin, "read1", None)
    return read1(READ_SIZE) if read1 is not None else stdin.read(READ_SIZE)


def _commit(store: Store, lines: list[bytes], stdout: BinaryIO) -> None:
    try:
        records = store.append([decode_entry(line) for line in lines])
    except (HoopgwError, ValueError, TypeError) as exc:
        answer = f"error {len(lines)} {' '.join(str(exc).split())}\n"
    else:
        answer = f"ok {len(records)} {records[-1].seq}\n"
    stdout.write(answer.encode())
    stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hoopgw.audit_process STORE_URL``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m hoopgw.audit_process STORE_URL\n")
        return 2
    url = args[0]

    def open_migrated() -> Store:
        store = open_store(url)
        store.migrate()
        return store

    # Unbuffered binary pipes: answers must leave at once, input is read as it comes.
    stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    stdout = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    return serve(open_migrated, stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
