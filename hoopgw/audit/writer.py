"""The one writer of audit records (the hash chain itself: :mod:`hoopgw.audit.chain`).

:class:`AuditWriter` is how the gateway writes records. It lives on the reactor thread and hands
entries to a writer process of its own (:mod:`hoopgw.audit.process`), which makes them durable
in its journal (:mod:`hoopgw.audit.journal`), answers, and then appends them to the store.
Entries sent while the process is busy syncing are synced together next ("group commit"), so
under load many sessions share one fsync, and each caller's Deferred fires once its record is
in the journal: synced to disk with ``audit_durability = "fsync"``, written to the operating
system (and synced in groups) with ``"os"`` (:class:`~hoopgw.audit.chain.Durability`).
A process, not a thread: hashing, SQLite and fsync then run beside the reactor instead of
competing with it for the GIL, which on CPython made every commit wait for the reactor's busy
turns.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

import attrs
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit.chain import (
    Durability,
    EncodedEntry,
    encode_data,
    encoded_entry,
    exact_text,
)
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.secrets import Secret

log = Logger(namespace="hoopgw.audit")

# -- the wire between the gateway and its writer process ------------------------------------------


def encode_entry(entry: AuditEntry | EncodedEntry) -> bytes:
    """One line that carries ``entry`` to the writer process: the JSON array ``[kind,
    session_id, time]``, a TAB, and ``data`` serialised once (:func:`encode_data`), which the
    store keeps and hashes as they are. Texts of ``data`` that are not valid UTF-8 are carried
    exactly (:func:`hoopgw.audit.chain.exact_text`). No JSON holds a raw TAB, so the first one
    ends the header.

    :raises TypeError, ValueError: if the entry's data is not JSON-serialisable, or its kind or
        session id is not valid UTF-8 (UnicodeEncodeError; never the gateway's own).
    """
    kind, session_id, time = entry.kind, entry.session_id, entry.time
    if time.__class__ is float and math.isfinite(time):
        # What _encode_header makes of it, without building a list: this runs per record.
        header = f"[{_json_text(kind)},{_json_text(session_id)},{float.__repr__(time)}]"
    else:
        header = _encode_header([kind, session_id, time])
    if isinstance(entry, EncodedEntry):
        return f"{header}\t{entry.data_json}\n".encode()
    try:
        return f"{header}\t{encode_data(entry.data)}\n".encode()
    except UnicodeEncodeError:  # rare: walk the data only when it needs it
        return f"{header}\t{encode_data(exact_text(entry.data))}\n".encode()


_encode_header = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_json_text = encode_basestring  # a str as JSON with ensure_ascii=False (C when available)


def decode_entry(line: bytes) -> EncodedEntry:
    """The entry that :func:`encode_entry` wrote (in the writer process), its data text as it
    came. A line without a TAB is one written before record format 2 (a journal left by an
    older gateway): a JSON array ``[kind, session_id, time, data]``, whose data is then
    serialised here (:func:`hoopgw.audit.chain.encode_data`).

    :raises ValueError, TypeError: if the line is not such an entry.
    """
    header, tab, data_bytes = line.rstrip(b"\n").partition(b"\t")
    if not tab:
        kind, session_id, time, data = json.loads(header)
        return encoded_entry(AuditEntry(kind=kind, session_id=session_id, time=time, data=data))
    kind, session_id, time = json.loads(header)
    data_json = data_bytes.decode("utf-8")
    return EncodedEntry(kind, session_id, time, json.loads(data_json), data_json)


# -- the writer ----------------------------------------------------------------------------------


SIGNING_KEY_ENV = "HOOPGW_AUDIT_SIGNING_KEY"
"""Environment variable that hands the checkpoint signing key (PEM) to the writer process,
which removes it from its environment at once; the key never appears on a command line."""


STORE_URL_ENV = "HOOPGW_AUDIT_STORE_URL"
"""Environment variable that hands a PostgreSQL store's URL to the writer process."""


@attrs.frozen(kw_only=True)
class CheckpointSettings:
    """What the writer process needs to sign checkpoints (see :mod:`hoopgw.audit.checkpoints`)."""

    directory: str
    """Absolute path of the folder the checkpoint files are written to."""
    every: int
    """Write a checkpoint once the chain has grown by this many records."""
    interval: float
    """Seconds after which a checkpoint is written if the chain has grown at all."""
    signing_key: Secret
    """The Ed25519 private key, PKCS#8 PEM."""


def spawn_writer_process(
    process_protocol: protocol.ProcessProtocol,
    store_url: str,
    reactor: Any,
    *,
    checkpoints: CheckpointSettings | None = None,
    durability: Durability = Durability(),  # noqa: B008 -- frozen, so a shared default is safe
    instance: str = "",
    journal: str | None = None,
    links_fd: int | None = None,
) -> Any:
    """Start ``python -m hoopgw.audit.process STORE_URL`` with pipes to ``process_protocol``.

    Bind the keyword arguments with :func:`functools.partial` to pass this function as
    ``AuditWriter(spawn=...)``. A URL other than ``sqlite:`` (which may hold a password) goes
    in the environment variable :data:`STORE_URL_ENV`, not on the command line others can read.

    :param checkpoints: when given, the process also signs and writes checkpoints.
    :param durability: when the process answers for a record (and records it in the chain).
    :param instance: the gateway instance whose chain the process appends to.
    :param journal: the audit journal file; None for the store's default.
    :param links_fd: a socket on which the parent of worker processes hands the writer their
        sockets (:mod:`hoopgw.audit.links`); the child gets it as fd 3.
    """
    env = dict(os.environ)
    env.pop(SIGNING_KEY_ENV, None)
    env.pop(STORE_URL_ENV, None)
    if not store_url.startswith("sqlite:"):
        env[STORE_URL_ENV] = store_url
        store_url = "env:" + STORE_URL_ENV
    argv = [
        sys.executable,
        "-m",
        "hoopgw.audit.process",
        store_url,
        "--durability",
        durability.mode,
        "--sync-interval",
        repr(durability.sync_interval),
    ]
    if instance:
        argv += ["--instance", instance]
    if journal is not None:
        argv += ["--journal", journal]
    if checkpoints is not None:
        argv += [
            "--checkpoint-dir",
            checkpoints.directory,
            "--checkpoint-every",
            str(checkpoints.every),
            "--checkpoint-interval",
            repr(checkpoints.interval),
        ]
        env[SIGNING_KEY_ENV] = checkpoints.signing_key.reveal()
    child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    if links_fd is not None:
        argv += ["--links-fd", "3"]
        child_fds[3] = links_fd
    return reactor.spawnProcess(process_protocol, sys.executable, argv, env=env, childFDs=child_fds)


WRITER_INFO_PREFIX = "info: "
"""Starts a line the writer process writes on stderr to inform (a journal replayed at start, a
store that works again); every other line reports a fault and is logged as an error."""


class WriterProcessLines(protocol.ProcessProtocol):
    """Carries a writer process's lines: each stdout line to ``answered``, each stderr line to
    the log (information or error), and its end to ``ended``."""

    def __init__(self, answered: Callable[[str], None], ended: Callable[[Failure], None]) -> None:
        self._answered = answered
        self._ended = ended
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._answered(line.decode("utf-8", "replace"))

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith(WRITER_INFO_PREFIX):
                log.info("audit writer process: {line}", line=text[len(WRITER_INFO_PREFIX) :])
            else:
                log.error("audit writer process: {line}", line=text)

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


class AuditWriter:
    """Writes audit records durably, through a writer process, with group commit.

    Use from the reactor thread only. Call :meth:`start` once, :meth:`write` per record, and
    :meth:`stop` when the gateway stops. If the writer process cannot start or dies, every
    pending and later write fails with :class:`~hoopgw.errors.StoreError`, so commands that need
    a record are refused (fail closed).
    """

    def __init__(
        self,
        store_url: str,
        reactor: Any,
        *,
        spawn: Callable[[protocol.ProcessProtocol, str, Any], Any] = spawn_writer_process,
        lazy_delay: float = 0.02,
    ) -> None:
        """
        :param store_url: the store the writer process opens (and migrates).
        :param reactor: spawns the process and runs the lazy timer.
        :param spawn: starts the writer process; tests pass one that connects a fake.
        :param lazy_delay: longest time a record written with ``urgent=False`` waits for a commit
            that another write would have started anyway.
        """
        self._store_url = store_url
        self._reactor = reactor
        self._spawn = spawn
        self._lazy_delay = lazy_delay
        self._process: Any = None
        self._started: defer.Deferred[None] | None = None
        self._stopped: defer.Deferred[None] | None = None
        self._failure: StoreError | None = None
        self._held: list[bytes] = []  # lazy lines not yet sent
        # Who to tell about each record queued and not yet answered, in order.
        self._in_flight: deque[Callable[[StoreError | None], object]] = deque()
        # Each send not yet wholly answered: [lines of it not yet answered, when it went out].
        self._sent_at: deque[list[Any]] = deque()
        self._lazy_timer: Any = None
        self.on_committed: Callable[[float], None] | None = None
        """Called with the seconds from sending the oldest record of each answer to the answer
        (the gateway's ``hoopgw_audit_commit_seconds``)."""

    def start(self) -> defer.Deferred[None]:
        """Start the writer process; it opens and migrates the store.

        :return: a Deferred that fires once the store is open, or fails with
            :class:`~hoopgw.errors.StoreError` (and every write then fails).
        """
        if self._process is not None:
            raise RuntimeError("AuditWriter.start() called twice")
        self._started = defer.Deferred()
        self._process = self._spawn(
            WriterProcessLines(self._answered, self._ended), self._store_url, self._reactor
        )
        return self._started

    def write(self, entry: AuditEntry, *, urgent: bool = True) -> defer.Deferred[None]:
        """Queue ``entry`` for the writer process.

        An urgent write (the default; write-ahead records) is sent at once, so its commit starts
        at once. A write with ``urgent=False`` (records of what already happened: verdicts,
        outcomes, session ends) joins the next urgent write, or is sent at most ``lazy_delay``
        later, so a command costs one commit instead of three. Records keep their order in the
        chain.

        :return: a Deferred that fires once the record is in the journal (synced to disk, or
            written to the operating system, as the writer's :class:`Durability` says), or fails
            with :class:`~hoopgw.errors.StoreError` if it cannot be written (store unavailable,
            data not JSON-serialisable, writer not started or stopped).
        """
        done: defer.Deferred[None] = defer.Deferred()

        def answered(error: StoreError | None) -> None:
            if error is None:
                done.callback(None)
            else:
                done.errback(Failure(error))

        self.submit(entry, answered, urgent=urgent)
        return done

    def submit(
        self,
        entry: AuditEntry,
        then: Callable[[StoreError | None], object],
        *,
        urgent: bool = True,
    ) -> None:
        """Queue ``entry`` as :meth:`write` does, and call ``then(None)`` once it is in the
        journal, or ``then(error)`` (a :class:`~hoopgw.errors.StoreError`) if it cannot be
        written -- at once, before this returns, when it cannot even be queued.

        The same guarantees as :meth:`write` without a Deferred per record: the hot path
        (the ``recording`` plugin's records of every command) uses this. ``then`` should not
        raise; an exception it raises is logged.
        """
        if self._failure is not None:
            then(self._failure)
            return
        if self._process is None or self._stopped is not None:
            then(StoreError("audit writer is not running"))
            return
        try:
            line = encode_entry(entry)
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: a cycle
            then(StoreError(f"audit record {entry.kind!r} is not serialisable: {exc}"))
            return
        self._in_flight.append(then)
        self._held.append(line)
        if urgent:
            self._send()
        elif self._lazy_timer is None:
            # Armed at most once per lazy_delay, not once per record: urgent sends in between
            # leave it running (it then finds less or nothing held).
            self._lazy_timer = self._reactor.callLater(self._lazy_delay, self._lazy_due)

    @property
    def running(self) -> bool:
        """Whether the writer process has started, is not stopping and has not failed."""
        return (
            self._started is not None
            and self._started.called
            and self._stopped is None
            and self._failure is None
        )

    @property
    def pending_records(self) -> int:
        """Records written and not yet durable (the writer's queue depth)."""
        return len(self._in_flight)

    def stop(self) -> defer.Deferred[None]:
        """Send what is held, let the process commit everything and close the store.

        :return: a Deferred that fires once the process has ended. Later writes fail.
        """
        if self._process is None:
            return defer.succeed(None)
        if self._stopped is None:
            self._stopped = defer.Deferred()
            self._cancel_lazy_timer()
            if self._failure is None:
                self._send()
                self._process.closeStdin()
            else:
                self._stopped.callback(None)
        return self._stopped

    # -- talking to the process --------------------------------------------------------------

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        self._send()

    def _cancel_lazy_timer(self) -> None:
        if self._lazy_timer is not None:
            if self._lazy_timer.active():
                self._lazy_timer.cancel()
            self._lazy_timer = None

    def _send(self) -> None:
        if self._held and self._failure is None:
            lines, self._held = self._held, []
            self._sent_at.append([len(lines), self._reactor.seconds()])
            self._process.writeSequence(lines)

    def _answered(self, line: str) -> None:
        """One line from the process: ``ready``, ``ok COUNT`` or ``error COUNT WHY``."""
        word, _, rest = line.partition(" ")
        if word == "ready":
            if self._started is not None and not self._started.called:
                self._started.callback(None)
            return
        count_text, _, detail = rest.partition(" ")
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if (
            word not in ("ok", "error")
            or (word == "ok" and detail)
            or not 0 < count <= len(self._in_flight)
        ):
            # An answer that does not fit what was sent: nothing it says can be trusted.
            self._fail(StoreError(f"audit writer process said {line!r}"))
            return
        if self._sent_at:
            if self.on_committed is not None:
                self.on_committed(self._reactor.seconds() - self._sent_at[0][1])
            left = count
            while left and self._sent_at:
                oldest = self._sent_at[0]
                if oldest[0] <= left:
                    left -= oldest[0]
                    self._sent_at.popleft()
                else:
                    oldest[0] -= left
                    left = 0
        error = None
        if word != "ok":
            log.error("audit write of {count} records failed: {why}", count=count, why=detail)
            error = StoreError(f"audit write failed: {detail}")
        popleft = self._in_flight.popleft
        for _ in range(count):
            self._tell(popleft(), error)

    @staticmethod
    def _tell(then: Callable[[StoreError | None], object], error: StoreError | None) -> None:
        try:
            then(error)
        except Exception:
            log.failure("an audit write's callback failed")

    def _ended(self, reason: Failure) -> None:
        if self._stopped is None or self._in_flight:
            self._fail(StoreError(f"audit writer process ended: {reason.getErrorMessage()}"))
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    def _fail(self, error: StoreError) -> None:
        """Fail closed: every pending and later write fails."""
        if self._failure is None:
            log.error("audit writer failed: {error}", error=error)
        self._failure = error
        self._cancel_lazy_timer()
        self._held = []
        self._sent_at.clear()
        if self._started is not None and not self._started.called:
            self._started.errback(Failure(error))
        while self._in_flight:
            self._tell(self._in_flight.popleft(), error)
