"""The audit writer process: appends the gateway's audit entries to the store, durably.

Started by :class:`hoopgw.audit.AuditWriter` as ``python -m hoopgw.audit_process STORE_URL``.
It reads one entry per line on stdin (:func:`hoopgw.audit.encode_entry`), commits every entry
that has arrived in one transaction, and answers on stdout, in order:

- ``ready`` once the store is open and migrated;
- ``ok COUNT LAST_SEQ`` when the next COUNT entries are durable, the last with ``seq`` LAST_SEQ;
- ``error COUNT WHY`` when the next COUNT entries could not be written.

At end of input it commits what it holds, closes the store and exits 0. A store that cannot be
opened is reported on stderr, with exit status 1.

With ``--checkpoint-dir DIR`` it also signs checkpoints of the chain head
(:mod:`hoopgw.checkpoints`) with the Ed25519 key it finds, as PEM, in the environment variable
:data:`hoopgw.audit.SIGNING_KEY_ENV` (removed from its environment at once): after a commit
that grows the chain by ``--checkpoint-every`` records, after ``--checkpoint-interval`` seconds
when it has grown at all, and at end of input. It knows the head right after each commit, so no
other process needs to read the store for that. A checkpoint that cannot be written is reported
on stderr and retried at the next interval; records keep being committed.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hoopgw.audit import SIGNING_KEY_ENV, decode_entry
from hoopgw.checkpoints import Checkpointer, CheckpointError, load_signing_key
from hoopgw.errors import HoopgwError
from hoopgw.store import Store, open_store

READ_SIZE = 1 << 16


def serve(
    open_migrated: Callable[[], Store],
    stdin: BinaryIO,
    stdout: BinaryIO,
    *,
    checkpoints: Callable[[Store], Checkpointer] | None = None,
    wait_readable: Callable[[float], bool] | None = None,
) -> int:
    """Run the writer loop until end of input; return the exit status.

    :param checkpoints: makes the :class:`~hoopgw.checkpoints.Checkpointer` for the opened store;
        None writes no checkpoints.
    :param wait_readable: waits at most the given seconds for input and says whether some came;
        without it, a checkpoint due by interval is written only once more input arrives.
    """
    try:
        store = open_migrated()
    except HoopgwError as exc:
        sys.stderr.write(f"cannot open the audit store: {exc}\n")
        return 1
    try:
        checkpointer = None if checkpoints is None else checkpoints(store)
    except HoopgwError as exc:
        store.close()
        sys.stderr.write(f"cannot start writing checkpoints: {exc}\n")
        return 1
    stdout.write(b"ready\n")
    stdout.flush()
    pending = b""
    try:
        while True:
            if checkpointer is not None:
                due_in = checkpointer.seconds_until_due()
                if due_in == 0 or (wait_readable is not None and not wait_readable(due_in)):
                    _checkpoint(checkpointer.write)
                    continue
            chunk = _read_available(stdin)
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                _commit(store, lines, stdout, checkpointer)
        if pending:
            _commit(store, [pending], stdout, checkpointer)
        if checkpointer is not None:
            _checkpoint(checkpointer.write)
    finally:
        store.close()
    return 0


def _read_available(stdin: BinaryIO) -> bytes:
    """Whatever has arrived (at least one byte), or b"" at end of input."""
    read1 = getattr(stdin, "read1", None)
    return read1(READ_SIZE) if read1 is not None else stdin.read(READ_SIZE)


def _commit(
    store: Store, lines: list[bytes], stdout: BinaryIO, checkpointer: Checkpointer | None
) -> None:
    try:
        records = store.append([decode_entry(line) for line in lines])
    except (HoopgwError, ValueError, TypeError) as exc:
        answer = f"error {len(lines)} {' '.join(str(exc).split())}\n"
        records = []
    else:
        answer = f"ok {len(records)} {records[-1].seq}\n"
    stdout.write(answer.encode())
    stdout.flush()
    # After the answer: the gateway must not wait for a signature to forward a command.
    if checkpointer is not None and records:
        head = records[-1].seq
        _checkpoint(lambda: checkpointer.committed(head))


def _checkpoint(write: Callable[[], object]) -> None:
    try:
        write()
    except HoopgwError as exc:
        sys.stderr.write(f"checkpoint not written: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hoopgw.audit_process STORE_URL [--checkpoint-dir DIR ...]``."""
    parser = argparse.ArgumentParser(prog="python -m hoopgw.audit_process")
    parser.add_argument("store_url", metavar="STORE_URL")
    parser.add_argument("--checkpoint-dir", metavar="DIR")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="RECORDS")
    parser.add_argument("--checkpoint-interval", type=float, default=300.0, metavar="SECONDS")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    # Popped whatever the arguments: the key must not linger in this process's environment.
    pem = os.environ.pop(SIGNING_KEY_ENV, None)
    url = args.store_url

    def open_migrated() -> Store:
        store = open_store(url)
        store.migrate()
        return store

    checkpoints = None
    if args.checkpoint_dir is not None:
        if pem is None:
            sys.stderr.write(f"--checkpoint-dir needs the signing key in ${SIGNING_KEY_ENV}\n")
            return 2
        try:
            key = load_signing_key(pem)
        except CheckpointError as exc:
            sys.stderr.write(f"cannot load the checkpoint signing key: {exc}\n")
            return 1
        directory = Path(args.checkpoint_dir)

        def checkpoints(store: Store) -> Checkpointer:
            return Checkpointer(
                key=key,
                directory=directory,
                read_head=store.last_record,
                every=args.checkpoint_every,
                interval=args.checkpoint_interval,
            )

    # Unbuffered binary pipes: answers must leave at once, input is read as it comes.
    stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    stdout = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)

    def wait_readable(timeout: float) -> bool:
        return bool(select.select([stdin], [], [], timeout)[0])

    return serve(open_migrated, stdin, stdout, checkpoints=checkpoints, wait_readable=wait_readable)


if __name__ == "__main__":
    sys.exit(main())
