"""The audit writer process: makes the gateway's audit entries durable, then appends them to
the store.

Started by :class:`hoopgw.audit.writer.AuditWriter` as ``python -m hoopgw.audit.process STORE_URL
[--durability fsync|os] [--sync-interval SECONDS]``. It reads one entry per line on stdin
(:func:`hoopgw.audit.writer.encode_entry`) and answers on stdout, in order:

- ``ready`` once the store is open and migrated and the journal's leftovers are in it;
- ``ok COUNT`` when the next COUNT entries are durable;
- ``error COUNT WHY`` when the next COUNT entries were not written (an entry that cannot be
  read, a journal that cannot be written, or a store that is failing).

Durable means in the audit journal (:mod:`hoopgw.audit.journal`): every batch of lines that has
arrived is appended there with one ``fdatasync`` and answered at once. A thread of this process
then appends the entries to the store, in transactions that also record how far the journal is
applied, so a crash between the answer and the store loses nothing: at the next start the
entries the store lacks are appended before ``ready``. Those transactions are not synced one by
one (:meth:`hoopgw.store.base.Store.append`'s ``sync``): the journal is emptied, and a checkpoint
signed, only once the store is synced (:meth:`StoreAppender.synced_applied`), so a crash of the
host that takes the store's last transactions leaves their entries in the journal. What arrives
within :data:`STORE_INTERVAL` of the last store transaction joins the next. While the store
fails, new entries are refused (the gateway refuses the commands that need them) and the thread
retries.

With ``--durability os`` (``[gateway] audit_durability = "os"``) a batch is answered as soon as
``write`` has handed it to the journal in the operating system, which keeps it whatever happens
to this process or the gateway, and a :class:`GroupSyncer` thread syncs the journal in groups,
at most every ``--sync-interval`` seconds (:class:`SyncSchedule`): only a crash of the whole
host can lose that window. At every start, once the journal's leftovers are in the store, the
process appends a record of the mode in force (:func:`hoopgw.audit.chain.durability_entry`),
synced,
before it says ``ready``.

With ``--links-fd FD`` (a gateway of several worker processes) the entries come on the
workers' own sockets, handed over on FD, each answered on its own (:mod:`hoopgw.audit.links`);
stdin then only ends the process.

It ignores SIGINT and SIGTERM (a Ctrl-C or a stop sent to the gateway's whole process group):
it ends when its input ends, that is when the gateway closes it or dies. At end of input it
appends what it holds to the store, closes it and exits 0 (1 if the store
could not take everything; the journal keeps it for the next start). A store or journal that
cannot be opened is reported on stderr, with exit status 1.

With ``--checkpoint-dir DIR`` it also signs checkpoints of the chain head
(:mod:`hoopgw.audit.checkpoints`) with the Ed25519 key it finds, as PEM, in the environment variable
:data:`hoopgw.audit.writer.SIGNING_KEY_ENV` (removed from its environment at once): after store
appends that grow the chain by ``--checkpoint-every`` records, after ``--checkpoint-interval``
seconds when it has grown at all, and at end of input. A checkpoint that cannot be written is
reported on stderr and retried at the next interval; records keep being written.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hoopgw.audit.chain import (
    DURABILITY_MODES,
    AuditRecord,
    Durability,
    EncodedEntry,
    durability_entry,
    encoded_entry,
)
from hoopgw.audit.checkpoints import Checkpointer, CheckpointError, load_signing_key
from hoopgw.audit.hashing import encode_data
from hoopgw.audit.journal import AuditJournal, journal_path
from hoopgw.audit.links import serve_links
from hoopgw.audit.syncing import GroupSyncer
from hoopgw.audit.writer import (
    SIGNING_KEY_ENV,
    STORE_URL_ENV,
    WRITER_INFO_PREFIX,
    decode_entry,
    encode_entry,
)
from hoopgw.errors import HoopgwError
from hoopgw.store import Store, open_store

READ_SIZE = 1 << 16
RECOVERY_BATCH = 1000
"""Journal entries appended to the store per transaction when catching up at start."""
RESET_WAIT = 1.0
"""Seconds the journal waits for the store to catch up before it is emptied (answers wait too,
so only once per :data:`hoopgw.audit.journal.RESET_SIZE` of growth)."""
STORE_INTERVAL = 0.002
"""Shortest time, in seconds, between two store transactions of the writer: what arrives
meanwhile is appended in one (the store is off the path a command waits on; the journal holds
the entries until then). Fewer, larger transactions spend less of the machine per record."""
SWITCH_INTERVAL = 0.0002
"""Seconds the store thread may hold the GIL while the journal loop waits (CPython's default,
5 ms, would hold answers back that long)."""


def serve(
    open_migrated: Callable[[], Store],
    open_journal: Callable[[], AuditJournal],
    stdin: BinaryIO,
    stdout: BinaryIO,
    *,
    checkpoints: Callable[[Store], Checkpointer] | None = None,
    retry_delay: float = 1.0,
    durability: Durability | None = None,
    links: socket.socket | None = None,
    store_interval: float = 0.0,
) -> int:
    """Run the writer until end of input; return the exit status.

    :param open_migrated: opens the migrated store; called on the store thread.
    :param open_journal: opens and locks the journal.
    :param checkpoints: makes the :class:`~hoopgw.audit.checkpoints.Checkpointer` for the opened
    store;
        None writes no checkpoints.
    :param retry_delay: seconds between attempts while the store fails.
    :param durability: when to answer, recorded in the chain at start; None syncs every batch
        and records no mode (tests of other behaviour; :func:`main` always passes one).
    :param links: where the worker processes' own sockets arrive (:mod:`hoopgw.audit.links`);
        entries then come on those, and ``stdin`` only says when to end.
    :param store_interval: shortest time between two store transactions
        (:data:`STORE_INTERVAL` from :func:`main`; 0 appends each batch at once).
    """
    try:
        journal = open_journal()
    except HoopgwError as exc:
        sys.stderr.write(f"cannot open the audit journal: {exc}\n")
        return 1
    appender = StoreAppender(
        open_migrated, journal, checkpoints, retry_delay=retry_delay, store_interval=store_interval
    )
    appender.start()
    appender.ready.wait()
    if appender.startup_error is not None:
        appender.join()
        journal.close()
        sys.stderr.write(f"{appender.startup_error}\n")
        return 1
    syncer = None
    if durability is not None and durability.mode == "os":
        syncer = GroupSyncer(journal, durability.sync_interval)
        syncer.start()
    pending = b""
    try:
        if durability is not None:
            entry = encoded_entry(durability_entry(durability, now=time.time()))
            try:
                appender.put([entry], journal.append([encode_entry(entry)]))
            except HoopgwError as exc:
                sys.stderr.write(f"cannot record the audit durability: {exc}\n")
                return 1
        stdout.write(b"ready\n")
        stdout.flush()
        if links is not None:
            serve_links(
                stdin,
                links,
                lambda lines, out: _journal_batch(lines, journal, appender, out, syncer),
            )
        while chunk := _read_available(stdin):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                _journal_batch(lines, journal, appender, stdout, syncer)
        if pending:
            _journal_batch([pending], journal, appender, stdout, syncer)
    finally:
        if syncer is not None:
            syncer.finish()
            syncer.join()
        appender.finish()
        appender.join()
        if appender.applied >= journal.last_number:
            _reset(journal, appender.synced_applied())
        journal.close()
    if appender.applied < journal.last_number:
        sys.stderr.write(
            f"{journal.last_number - appender.applied} audit entries are in the journal but not "
            "in the store; they are appended at the next start\n"
        )
        return 1
    return 0


def _read_available(stdin: BinaryIO) -> bytes:
    """Whatever has arrived (at least one byte), or b"" at end of input."""
    read1 = getattr(stdin, "read1", None)
    return read1(READ_SIZE) if read1 is not None else stdin.read(READ_SIZE)


def _journal_batch(
    lines: list[bytes],
    journal: AuditJournal,
    appender: StoreAppender,
    stdout: BinaryIO,
    syncer: GroupSyncer | None = None,
) -> None:
    """Make ``lines`` durable in the journal (synced, or written and left to ``syncer``),
    answer, then hand them to the store."""
    count = len(lines)
    if appender.failure is not None:
        _answer(stdout, _error(count, f"the audit store cannot be written: {appender.failure}"))
        return
    if syncer is not None and syncer.failure is not None:
        _answer(stdout, _error(count, syncer.failure))
        return
    try:
        entries = [_storable_entry(line) for line in lines]
    except (ValueError, TypeError) as exc:
        _answer(stdout, _error(count, f"unreadable audit entry: {exc}"))
        return
    if journal.wants_reset() and not (
        appender.wait_applied(journal.last_number, RESET_WAIT)
        and _reset(journal, appender.synced_applied())
    ):
        journal.postpone_reset()
    try:
        last = journal.append(lines, sync=syncer is None)
    except HoopgwError as exc:
        _answer(stdout, _error(count, str(exc)))
        return
    # Answered before the store and sync threads wake: they would hold the GIL while the
    # answer waits.
    _answer(stdout, b"ok %d\n" % count)
    if syncer is not None:
        syncer.written()
    appender.put(entries, last)


def _storable_entry(line: bytes) -> EncodedEntry:
    """The entry ``line`` holds, refused (ValueError) if the store could not append it.

    Once journaled and answered, an entry must reach the store: one it rejects would stop every
    later append and, at the next start, the catching up.
    """
    entry = decode_entry(line)
    time = entry.time
    if not (
        isinstance(entry.kind, str)
        and isinstance(entry.session_id, str)
        and isinstance(time, int | float)
        and not isinstance(time, bool)
        and math.isfinite(time)
        and isinstance(entry.data, dict)
    ):
        raise ValueError("expected [kind, session_id, time, data]")
    # A lone surrogate (JSON may escape one) is no text the store can keep.
    entry.kind.encode()
    entry.session_id.encode()
    # The hash covers the data bytes as they came: any other form of the same JSON (spaces,
    # escapes, NaN, a key twice, which parsers read differently) would give one record two
    # readings, both vouched for by the chain. Only the gateway's own serialisation is kept.
    if encode_data(entry.data) != entry.data_json:
        raise ValueError("data is not in its one serialisation")
    return entry


def _inform(text: str) -> None:
    """Tell the gateway something that is no fault (it logs the line as information)."""
    sys.stderr.write(f"{WRITER_INFO_PREFIX}{text}\n")


def _answer(stdout: BinaryIO, answer: bytes) -> None:
    stdout.write(answer)
    stdout.flush()


def _error(count: int, why: str) -> bytes:
    return f"error {count} {' '.join(why.split())}\n".encode()


def _reset(journal: AuditJournal, applied: int) -> bool:
    """Empty the journal if the store holds (synced) every entry up to ``applied``; say
    whether it was emptied."""
    try:
        return journal.reset(applied)
    except HoopgwError as exc:
        sys.stderr.write(f"{exc}\n")
        return False


class StoreAppender(threading.Thread):
    """The thread that owns the store: appends journaled entries and writes checkpoints."""

    def __init__(
        self,
        open_migrated: Callable[[], Store],
        journal: AuditJournal,
        checkpoints: Callable[[Store], Checkpointer] | None,
        *,
        retry_delay: float,
        store_interval: float = 0.0,
    ) -> None:
        super().__init__(name="audit-store", daemon=True)
        self._store_interval = store_interval
        self._last_append = -math.inf
        self._open_migrated = open_migrated
        self._journal = journal
        self._checkpoints = checkpoints
        self._retry_delay = retry_delay
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[list[EncodedEntry], int]] = collections.deque()
        self._finishing = False
        self.ready = threading.Event()
        """Set once the store is open and caught up with the journal, or failed to."""
        self.startup_error: str | None = None
        """Why the store could not be opened or caught up; None when it was."""
        self.failure: str | None = None
        """Why the last append failed; None while appending works."""
        self.applied = 0
        """The journal number of the last entry in the store."""
        self._store: Store | None = None

    def put(self, entries: list[EncodedEntry], last_number: int) -> None:
        """Queue journaled ``entries``, the last numbered ``last_number``, for the store."""
        with self._cond:
            # Only a thread waiting for something to append needs waking: one gathering what
            # arrives (STORE_INTERVAL) or appending takes it anyway, and waking it for every
            # batch would cost thread switches and the GIL for nothing.
            if not self._queue:
                self._cond.notify_all()
            self._queue.append((entries, last_number))

    def finish(self) -> None:
        """No more input: append what is queued, write a last checkpoint, close the store."""
        with self._cond:
            self._finishing = True
            self._cond.notify_all()

    def synced_applied(self) -> int:
        """Sync the store (its appends are not synced one by one: :meth:`Store.sync`) and return
        the journal number of the last entry it then holds on disk: what the journal may let
        go of. 0 when the store cannot be synced (nothing may go). Any thread may call it, also
        once the store is closed."""
        applied = self.applied
        if self._store is None:
            return 0
        try:
            self._store.sync()
        except HoopgwError as exc:
            sys.stderr.write(f"{exc}; the audit journal keeps its entries\n")
            return 0
        return applied

    def wait_applied(self, number: int, timeout: float) -> bool:
        """Wait until the store holds journal entry ``number``; say whether it does."""
        with self._cond:
            return self._cond.wait_for(lambda: self.applied >= number, timeout)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            # A defect here must not leave entries answered for but never stored: refuse all.
            self.failure = f"internal error of the audit writer: {exc!r}"
            sys.stderr.write(f"{self.failure}\n")
            if not self.ready.is_set():
                self._report_start(self.failure)
            raise

    def _run(self) -> None:
        try:
            store = self._open_migrated()
        except HoopgwError as exc:
            self._report_start(f"cannot open the audit store: {exc}")
            return
        self._store = store
        try:
            checkpointer = None if self._checkpoints is None else self._checkpoints(store)
            store.writer_started(
                f"{socket.gethostname()}:{os.path.abspath(self._journal.path)}", now=time.time()
            )
            self._catch_up(store)
        except HoopgwError as exc:
            store.close()
            problem = "start writing checkpoints" if isinstance(exc, CheckpointError) else "start"
            self._report_start(f"cannot {problem}: {exc}")
            return
        self._report_start(None)
        try:
            self._append_until_finished(store, checkpointer)
            if checkpointer is not None:
                _checkpoint(checkpointer.write)
            if self.applied >= self._journal.last_number:
                _note_drained(store)
        finally:
            store.close()

    def _report_start(self, error: str | None) -> None:
        self.startup_error = error
        self.ready.set()

    def _catch_up(self, store: Store) -> None:
        """Append what the journal holds beyond the store's mark (left by a crash)."""
        mark = store.journal_mark()
        found = self._journal.unapplied(mark)
        for start in range(0, len(found), RECOVERY_BATCH):
            batch = found[start : start + RECOVERY_BATCH]
            store.append([entry for _, entry in batch], journal_mark=batch[-1][0])
        if found:
            _inform(f"appended {len(found)} audit entries left in the journal")
        self.applied = self._journal.last_number

    def _append_until_finished(self, store: Store, checkpointer: Checkpointer | None) -> None:
        while True:
            with self._cond:
                due_in = None if checkpointer is None else checkpointer.seconds_until_due()
                if not self._queue and not self._finishing and due_in != 0:
                    self._cond.wait(due_in)
                hold = self._last_append + self._store_interval - time.monotonic()
                if self._queue and hold > 0:
                    # Gather what arrives meanwhile into this transaction.
                    self._cond.wait_for(lambda: self._finishing, hold)
                batches = list(self._queue)
                self._queue.clear()
                finishing = self._finishing
            if not batches:
                if finishing:
                    return
                if checkpointer is not None and checkpointer.seconds_until_due() == 0:
                    _checkpoint(checkpointer.write)
                continue
            if not self._append(store, batches, checkpointer):
                with self._cond:
                    self._queue.extendleft(reversed(batches))
                    if finishing:
                        return  # the journal keeps them for the next start
                    self._cond.wait(self._retry_delay)

    def _append(
        self,
        store: Store,
        batches: list[tuple[list[EncodedEntry], int]],
        checkpointer: Checkpointer | None,
    ) -> bool:
        self._last_append = time.monotonic()
        entries = [entry for batch, _ in batches for entry in batch]
        last_number = batches[-1][1]
        try:
            # Not synced: the journal keeps the entries until synced_applied() says the store
            # holds them on disk, and a checkpoint signs only a synced head (main()).
            records = store.append(entries, journal_mark=last_number, sync=False)
        except HoopgwError as exc:
            if self.failure is None:
                sys.stderr.write(f"audit store append failed, retrying: {exc}\n")
            self.failure = str(exc)
            return False
        if self.failure is not None:
            _inform("audit store append works again")
        with self._cond:
            self.failure = None
            self.applied = last_number
            self._cond.notify_all()
        if checkpointer is not None and records:
            head = records[-1].seq
            _checkpoint(lambda: checkpointer.committed(head))
        return True


def _note_drained(store: Store) -> None:
    """Tell the store this instance's journal is drained (``hoopgw audit verify`` reports an
    instance whose writer stopped without it)."""
    try:
        store.writer_stopped(now=time.time())
    except HoopgwError as exc:
        sys.stderr.write(f"cannot note in the store that the journal is drained: {exc}\n")


def synced_head(store: Store) -> Callable[[], AuditRecord | None]:
    """What a checkpoint signs: the chain head once the store is synced (the writer's appends
    are not synced one by one), so no checkpoint vouches for records a host crash can take."""

    def read() -> AuditRecord | None:
        store.sync()
        return store.last_record()

    return read


def _checkpoint(write: Callable[[], object]) -> None:
    try:
        write()
    except HoopgwError as exc:
        sys.stderr.write(f"checkpoint not written: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hoopgw.audit.process STORE_URL [--durability MODE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m hoopgw.audit.process")
    parser.add_argument("store_url", metavar="STORE_URL")
    parser.add_argument("--checkpoint-dir", metavar="DIR")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="RECORDS")
    parser.add_argument("--checkpoint-interval", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--durability", choices=DURABILITY_MODES, default="fsync")
    parser.add_argument("--sync-interval", type=float, default=0.01, metavar="SECONDS")
    parser.add_argument("--instance", default="", help="the gateway instance's chain")
    parser.add_argument("--journal", default=None, metavar="PATH", help="the audit journal")
    parser.add_argument("--links-fd", type=int, default=None, metavar="FD", help="worker links")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not 0 < args.sync_interval < math.inf:
        sys.stderr.write("--sync-interval must be a finite number of seconds greater than 0\n")
        return 2
    # Popped whatever the arguments: the key must not linger in this process's environment.
    pem = os.environ.pop(SIGNING_KEY_ENV, None)
    url = args.store_url
    if url == "env:" + STORE_URL_ENV:
        url = os.environ.pop(STORE_URL_ENV, "")
    instance = args.instance

    def open_migrated() -> Store:
        store = open_store(url, instance=instance)
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
                read_head=synced_head(store),
                every=args.checkpoint_every,
                interval=args.checkpoint_interval,
            )

    # The process ends when its input ends (the gateway closed it, or died), never on a Ctrl-C
    # or a SIGTERM sent to the gateway's whole process group: the gateway may still be handing
    # over its last records then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Unbuffered binary pipes: answers must leave at once, input is read as it comes.
    stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    stdout = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    sys.setswitchinterval(SWITCH_INTERVAL)
    path = args.journal if args.journal is not None else journal_path(url)
    with tempfile.TemporaryDirectory(prefix="hoopgw-journal-") as scratch:
        where = path if path is not None else os.path.join(scratch, "audit-journal")
        return serve(
            open_migrated,
            lambda: AuditJournal(where),
            stdin,
            stdout,
            checkpoints=checkpoints,
            durability=Durability(mode=args.durability, sync_interval=args.sync_interval),
            links=None if args.links_fd is None else socket.socket(fileno=args.links_fd),
            store_interval=STORE_INTERVAL,
        )


if __name__ == "__main__":
    sys.exit(main())
