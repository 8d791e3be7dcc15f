"""The audit trail: record values, the hash chain, and the one writer of audit records.

Every audit record is hash-chained: its ``hash`` is the SHA-256 of a canonical JSON document
holding its ``seq``, ``kind``, ``session_id``, ``time``, ``data`` and the previous record's hash
(``prev_hash``; the first record's is :data:`GENESIS_HASH`). A changed, removed, inserted or
reordered record breaks the chain, and :func:`verify_chain` reports the first record where it
breaks. The chain is computed by the store inside the transaction that appends the records.

:class:`AuditWriter` is how the gateway writes records. It lives on the reactor thread and owns
one dedicated writer thread (SQLite connections belong to the thread that opened them). Entries
written while the thread is busy are committed together in the next transaction ("group commit"),
so under load many sessions share one fsync, and each caller's Deferred fires once its record is
durable.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import StoreError

if TYPE_CHECKING:
    from hoopgw.store.base import Store

log = Logger(namespace="hoopgw.audit")

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record of a store."""


@attrs.frozen(kw_only=True)
class AuditEntry:
    """A record to be written; the store assigns its place in the chain."""

    kind: str
    """What happened: ``session_started``, ``command_received``, ``command_decided``, ..."""
    session_id: str
    """The session it belongs to."""
    time: float
    """POSIX time it happened."""
    data: dict[str, Any]
    """Details; JSON-serialisable (str keys; str, int, float, bool, None, lists, dicts)."""


@attrs.frozen(kw_only=True)
class AuditRecord:
    """A durable record: an :class:`AuditEntry` with its place in the hash chain."""

    seq: int
    """Position in the store, from 1, without gaps."""
    kind: str
    """See :attr:`AuditEntry.kind`."""
    session_id: str
    """See :attr:`AuditEntry.session_id`."""
    time: float
    """See :attr:`AuditEntry.time`."""
    data: dict[str, Any]
    """See :attr:`AuditEntry.data` (as read back from JSON: tuples become lists)."""
    prev_hash: str
    """Hex SHA-256 of the previous record, or :data:`GENESIS_HASH` for the first."""
    hash: str
    """Hex SHA-256 of this record's canonical form (see :func:`record_hash`)."""


def canonical_json(value: Any) -> str:
    """The one JSON form used for hashing and storing: sorted keys, no spaces, no NaN.

    :raises TypeError: if ``value`` is not JSON-serialisable.
    :raises ValueError: for NaN or infinite floats.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def record_hash(
    *,
    seq: int,
    kind: str,
    session_id: str,
    time: float,
    data: dict[str, Any],
    prev_hash: str,
    data_json: str | None = None,
) -> str:
    """Hex SHA-256 over the canonical JSON of a record's fields and its predecessor's hash.

    :param data_json: ``canonical_json(data)`` when the caller has it already (the store does),
        to spare serialising ``data`` twice; the hash is the same either way.
    """
    if data_json is None:
        data_json = canonical_json(data)
    # Exactly canonical_json() of the whole record: keys sorted, no spaces.
    document = "".join(
        (
            '{"data":',
            data_json,
            ',"kind":',
            canonical_json(kind),
            ',"prev_hash":',
            canonical_json(prev_hash),
            ',"seq":',
            canonical_json(seq),
            ',"session_id":',
            canonical_json(session_id),
            ',"time":',
            canonical_json(time),
            "}",
        )
    )
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


@attrs.frozen(kw_only=True)
class VerifyResult:
    """The outcome of :func:`verify_chain`."""

    ok: bool
    """Whether every record checked is intact and in place."""
    checked: int
    """How many records were read."""
    first_bad_seq: int | None = None
    """The first seq at which the chain breaks (for a removed record: the missing seq)."""
    problem: str = ""
    """What is wrong there, for a person; empty when ``ok``."""


def verify_chain(records: Iterable[AuditRecord]) -> VerifyResult:
    """Check a whole chain, from seq 1, in seq order (as :meth:`Store.records` yields it).

    Detects a changed record (its hash no longer matches), a removed one (a gap in seq), and an
    inserted or reordered one (a hash or ``prev_hash`` that no longer fits its place). Removing
    records from the *end* leaves a valid, shorter chain; compare ``checked`` with a count kept
    elsewhere to detect truncation.
    """
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    for record in records:
        checked += 1
        if record.seq > expected_seq:
            missing = (
                f"record {expected_seq} is missing"
                if record.seq == expected_seq + 1
                else f"records {expected_seq} to {record.seq - 1} are missing"
            )
            return VerifyResult(
                ok=False, checked=checked, first_bad_seq=expected_seq, problem=missing
            )
        if record.seq < expected_seq:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=record.seq,
                problem=f"record {record.seq} appears after record {expected_seq - 1}",
            )
        if record.prev_hash != prev_hash:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=record.seq,
                problem=f"record {record.seq} does not follow record {record.seq - 1} "
                "(prev_hash differs)",
            )
        actual = record_hash(
            seq=record.seq,
            kind=record.kind,
            session_id=record.session_id,
            time=record.time,
            data=record.data,
            prev_hash=record.prev_hash,
        )
        if actual != record.hash:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=record.seq,
                problem=f"record {record.seq} was changed (its content does not match its hash)",
            )
        prev_hash = record.hash
        expected_seq += 1
    return VerifyResult(ok=True, checked=checked)


# -- the writer --------------------------------------------------------------------------------


class Worker(Protocol):
    """Runs jobs one at a time, in order, on one thread of its own."""

    def do(self, job: Callable[[], None]) -> None:
        """Queue ``job``; called from the reactor thread."""

    def quit(self) -> None:
        """Finish the queued jobs, then end the thread."""


class ThreadWorker:
    """The production :class:`Worker`: one daemon thread draining a FIFO of jobs."""

    def __init__(self, name: str = "hoopgw-audit-writer") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def do(self, job: Callable[[], None]) -> None:
        """Queue ``job`` for the thread."""
        self._jobs.put(job)

    def quit(self) -> None:
        """Let the thread end after the jobs queued so far."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                # A job reports its own failures; this only keeps the thread alive for the next.
                log.failure("audit writer job failed")


@attrs.frozen(kw_only=True)
class _Pending:
    entry: AuditEntry
    done: defer.Deferred[AuditRecord]


class AuditWriter:
    """Writes audit records durably, off the reactor thread, with group commit.

    Use from the reactor thread only. Call :meth:`start` once, :meth:`write` per record, and
    :meth:`stop` when the gateway stops.
    """

    def __init__(
        self,
        store_factory: Callable[[], Store],
        reactor: Any,
        *,
        worker_factory: Callable[[], Worker] = ThreadWorker,
        lazy_delay: float = 0.02,
    ) -> None:
        """
        :param store_factory: opens the store; called once, on the writer thread. It should
            return a migrated store (see :meth:`hoopgw.store.base.Store.migrate`).
        :param reactor: provides ``callFromThread``, to fire Deferreds on the reactor thread.
        :param worker_factory: makes the writer thread; tests pass one that runs jobs on demand.
        :param lazy_delay: longest time a record written with ``urgent=False`` waits for a commit
            that another write would have started anyway.
        """
        self._store_factory = store_factory
        self._reactor = reactor
        self._worker_factory = worker_factory
        self._worker: Worker | None = None
        self._stopping = False
        # Shared by the reactor thread (appends) and the writer thread (takes everything).
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._commit_scheduled = False
        self._lazy_delay = lazy_delay
        self._lazy_timer: Any = None
        # Touched only on the writer thread.
        self._store: Store | None = None

    def start(self) -> defer.Deferred[None]:
        """Start the writer thread and open the store.

        :return: a Deferred that fires once the store is open, or fails with
            :class:`~hoopgw.errors.StoreError` (writes are still attempted later; each fails
            closed while the store stays unavailable).
        """
        if self._worker is not None:
            raise RuntimeError("AuditWriter.start() called twice")
        self._worker = self._worker_factory()
        opened: defer.Deferred[None] = defer.Deferred()

        def open_store() -> None:
            try:
                self._open_store()
            except StoreError as exc:
                self._reactor.callFromThread(opened.errback, Failure(exc))
            else:
                self._reactor.callFromThread(opened.callback, None)

        self._worker.do(open_store)
        return opened

    def write(self, entry: AuditEntry, *, urgent: bool = True) -> defer.Deferred[AuditRecord]:
        """Queue ``entry`` for the next commit.

        An urgent write (the default; write-ahead records) starts a commit at once. A write with
        ``urgent=False`` (records of what already happened: verdicts, outcomes, session ends)
        joins the next commit that an urgent write starts, or one ``lazy_delay`` later, so a
        command costs one commit instead of three. Both keep their order in the chain.

        :return: a Deferred that fires with the :class:`AuditRecord` once it is durable, or
            fails with :class:`~hoopgw.errors.StoreError` if it cannot be written (store
            unavailable, data not JSON-serialisable, writer not started or stopped).
        """
        if self._worker is None:
            return defer.fail(StoreError("audit writer is not started"))
        if self._stopping:
            return defer.fail(StoreError("audit writer is stopped"))
        try:
            canonical_json(entry.data)
        except (TypeError, ValueError) as exc:
            return defer.fail(StoreError(f"audit record {entry.kind!r} is not serialisable: {exc}"))
        done: defer.Deferred[AuditRecord] = defer.Deferred()
        with self._lock:
            self._pending.append(_Pending(entry=entry, done=done))
            schedule = urgent and not self._commit_scheduled
            if schedule:
                self._commit_scheduled = True
        if schedule:
            self._worker.do(self._commit_pending)
        elif not urgent and self._lazy_timer is None:
            self._lazy_timer = self._reactor.callLater(self._lazy_delay, self._commit_lazy)
        return done

    def _commit_lazy(self) -> None:
        """Start a commit for records written with ``urgent=False`` (reactor thread)."""
        self._lazy_timer = None
        with self._lock:
            schedule = bool(self._pending) and not self._commit_scheduled
            if schedule:
                self._commit_scheduled = True
        if schedule and self._worker is not None:
            self._worker.do(self._commit_pending)

    def stop(self) -> defer.Deferred[None]:
        """Commit everything queued so far, close the store, end the thread.

        :return: a Deferred that fires once the store is closed. Later writes fail.
        """
        if self._worker is None or self._stopping:
            return defer.succeed(None)
        self._stopping = True
        stopped: defer.Deferred[None] = defer.Deferred()

        def close_store() -> None:
            if self._store is not None:
                try:
                    self._store.close()
                except StoreError:
                    log.failure("closing the audit store failed")
                self._store = None
            self._reactor.callFromThread(stopped.callback, None)

        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        # Jobs run in order: this commit (of anything still queued) runs before the store closes.
        self._worker.do(self._commit_pending)
        self._worker.do(close_store)
        self._worker.quit()
        return stopped

    # -- on the writer thread ------------------------------------------------------------------

    def _open_store(self) -> Store:
        if self._store is None:
            try:
                self._store = self._store_factory()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot open the audit store: {exc}") from exc
        return self._store

    def _commit_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._commit_scheduled = False
        if not batch:
            return
        try:
            records = self._open_store().append([p.entry for p in batch])
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"audit write failed: {exc}")
            log.error(
                "audit write of {count} records failed: {error}", count=len(batch), error=error
            )
            self._reactor.callFromThread(_fail_all, batch, error)
        else:
            self._reactor.callFromThread(_succeed_all, batch, records)


def _succeed_all(batch: Sequence[_Pending], records: Sequence[AuditRecord]) -> None:
    for pending, record in zip(batch, records, strict=True):
        pending.done.callback(record)


def _fail_all(batch: Sequence[_Pending], error: StoreError) -> None:
    for pending in batch:
        pending.done.errback(Failure(error))
