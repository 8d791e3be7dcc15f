"""The audit journal: where the writer process makes audit entries durable before the store.

A command may be forwarded once its ``command_received`` entry is durable (design invariant 2):
synced to disk here, or, with ``audit_durability = "os"``, written here and synced in groups
(:class:`hoopgw.audit.process.GroupSyncer`).
Appending to the store takes a transaction (hash chain, projections, index pages) and an fsync
of several pages; appending a line to a file takes one ``write`` and one ``fdatasync``. So the
writer process (:mod:`hoopgw.audit.process`) first appends each batch of entries here, answers
the gateway, and only then appends them to the store, off the path every command waits on.

The file holds one line per entry: ``NUMBER SP ENTRY-LINE LF``, where NUMBER counts up without
end (it does not restart when the file is emptied) and ENTRY-LINE is
:func:`hoopgw.audit.writer.encode_entry`'s line. The store remembers the number of the last entry it
holds (:meth:`hoopgw.store.base.Store.append`'s ``journal_mark``), so after a crash the entries
with a higher number are exactly those to append again (:meth:`AuditJournal.unapplied`). The
file is emptied once the store holds everything in it and it has grown past
:data:`RESET_SIZE`, and when the writer stops cleanly. :func:`backlog` lets ``hoopgw audit
verify`` and evidence packs see, read-only, whether a stopped gateway left entries behind.

One writer process at a time may use a journal: it is locked (``flock``) while open.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence

import attrs

from hoopgw.audit.chain import EncodedEntry
from hoopgw.audit.writer import decode_entry
from hoopgw.errors import HoopgwError

RESET_SIZE = 8 << 20
"""Bytes past which the journal is emptied once the store holds everything in it."""
READ_SIZE = 1 << 20


class JournalError(HoopgwError):
    """The journal cannot be opened, read or written."""


def journal_path(store_url: str) -> str | None:
    """Where the audit journal of ``store_url`` lives: beside the SQLite file, symbolic links
    resolved (``PATH.audit-journal``; one journal, and so one lock, per store however its path is
    spelled); None for a store in memory, whose journal is a temporary file (the URL is checked
    when the store is opened)."""
    path = store_url.removeprefix("sqlite:///")
    if path == store_url or path in ("", ":memory:"):
        return None
    return f"{os.path.realpath(path)}.audit-journal"


@attrs.frozen(kw_only=True)
class JournalBacklog:
    """What a journal holds that its store does not (see :func:`backlog`)."""

    path: str
    """The journal file."""
    entries: int
    """Complete entries numbered above the store's mark."""
    in_use: bool
    """Whether an audit writer has the journal open (the gateway runs): its entries are on
    their way to the store. Otherwise they wait for the next start."""

    @property
    def stranded(self) -> bool:
        """Entries wait and no writer has the journal: they reach the store only when the
        gateway next starts, and until then the audit log is incomplete."""
        return self.entries > 0 and not self.in_use


def backlog(path: str | None, applied: int) -> JournalBacklog | None:
    """Look, without changing anything, at what the journal file ``path`` holds beyond the
    store's mark ``applied``; None when there is no journal file (or ``path`` is None).

    :raises JournalError: if the file cannot be read.
    """
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read the audit journal {path!r}: {exc.strerror}") from exc
    try:
        try:
            # Released at once: a writer starting now must not find it taken.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            in_use = False
        except BlockingIOError:
            in_use = True
        with os.fdopen(os.dup(fd), "rb") as journal:
            data = journal.read()
    except OSError as exc:
        raise JournalError(f"cannot read the audit journal {path!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    entries = 0
    for line in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]:
        try:
            number = int(line.partition(b" ")[0])
        except ValueError:
            raise JournalError(f"the audit journal {path!r} is damaged: {line[:40]!r}") from None
        entries += number > applied
    return JournalBacklog(path=path, entries=entries, in_use=in_use)


class AuditJournal:
    """An open, locked journal file. Not thread-safe: one thread appends and resets."""

    def __init__(
        self, path: str, *, sync: Callable[[int], None] = os.fdatasync, reset_size: int = RESET_SIZE
    ) -> None:
        """Open (creating it, mode 0600) and lock the journal at ``path``.

        :param sync: makes written data durable (``os.fdatasync``); tests count its calls.
        :param reset_size: see :data:`RESET_SIZE`.
        :raises JournalError: if the file cannot be opened, or another process holds it.
        """
        self.path = path
        self._sync = sync
        self._reset_size = reset_size
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the audit journal {path!r}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            raise JournalError(
                f"the audit journal {path!r} is in use by another audit writer (is another "
                "gateway running on the same store?)"
            ) from exc
        try:
            _sync_folder(path)
        except OSError as exc:
            os.close(self._fd)
            raise JournalError(
                f"cannot make the audit journal {path!r} durable: {exc.strerror}"
            ) from exc
        self._size = os.fstat(self._fd).st_size
        self._reset_at = reset_size
        self._last = 0
        self._read = False
        self._broken: str | None = None

    @property
    def last_number(self) -> int:
        """The number of the last entry appended (or found when reading), 0 for none yet."""
        return self._last

    def unapplied(self, applied: int) -> list[tuple[int, EncodedEntry]]:
        """The entries numbered above ``applied``, in order; call once, before :meth:`append`.

        A torn last line (the process died while writing it, so it was never answered) is cut
        off. Numbering goes on after the highest number seen, here or in ``applied``.

        :param applied: the store's journal mark: the number of the last entry it holds.
        :raises JournalError: if a complete line cannot be read back or numbers do not follow
            each other (the file was damaged), or if the file starts beyond ``applied + 1``
            (the store is older than the journal: the entries between are in neither).
        """
        if self._read:
            raise RuntimeError("AuditJournal.unapplied() called twice")
        self._read = True
        data = self._read_all()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self._truncate(complete)
        found: list[tuple[int, EncodedEntry]] = []
        last = 0
        offset = 0
        # Split on LF only, as append() frames: an entry line may hold other line breaks (CR).
        for line in data[: complete - 1].split(b"\n") if complete else []:
            number_text, _, entry_line = line.partition(b" ")
            try:
                number = int(number_text)
                if number < 1 or (last and number != last + 1):
                    raise ValueError(f"entry number {number} does not follow {last}")
                entry = decode_entry(entry_line)
            except (ValueError, TypeError) as exc:
                raise JournalError(
                    f"the audit journal {self.path!r} is damaged at byte {offset}: {exc}"
                ) from exc
            if not last and number > applied + 1:
                raise JournalError(
                    f"the audit journal {self.path!r} starts at entry {number}, but the store "
                    f"holds entries up to {applied} only: the store is older than the journal "
                    "(restored from a copy?) and lacks the entries between"
                )
            last = number
            offset += len(line) + 1
            if number > applied:
                found.append((number, entry))
        self._last = max(last, applied)
        return found

    def append(self, lines: Sequence[bytes], *, sync: bool = True) -> int:
        """Append entry lines (each as :func:`hoopgw.audit.writer.encode_entry` made it) durably.

        :param sync: sync them to disk before returning; False (``audit_durability = "os"``)
            returns once ``write`` did, and the caller syncs with :meth:`sync` later.
        :return: the number of the last one.
        :raises JournalError: if they cannot be written or synced; what was written then is not
            counted as durable (the caller must not answer for it).
        """
        if not self._read:
            raise RuntimeError("AuditJournal.unapplied() must come before append()")
        if self._broken is not None:
            raise JournalError(self._broken)
        first = self._last + 1
        data = b"".join(
            b"%d %s\n" % (number, line.rstrip(b"\n")) for number, line in enumerate(lines, first)
        )
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                self._sync(self._fd)
        except OSError as exc:
            problem = f"cannot write the audit journal {self.path!r}: {exc}"
            self._take_back(problem)
            raise JournalError(problem) from exc
        self._size += len(data)
        self._last = first + len(lines) - 1
        return self._last

    def sync(self) -> None:
        """Sync everything appended so far to disk. Safe to call from a thread other than the
        one appending (``fdatasync`` covers whatever was written before it started), but not
        after :meth:`close`.

        :raises JournalError: if the disk reports an error; what it held may then be lost on a
            host crash, and nothing appended since may be trusted to be synced either.
        """
        try:
            self._sync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot sync the audit journal {self.path!r}: {exc}") from exc

    def _take_back(self, problem: str) -> None:
        """Cut off what a failed append may have left, so that no entry the caller was not
        answered for can come back at the next start; if even that fails, refuse every later
        append (the file can no longer be trusted to hold only answered entries)."""
        try:
            self._truncate(self._size)
        except OSError as exc:
            self._broken = f"{problem}; it cannot be repaired ({exc.strerror}): restart the gateway"

    def wants_reset(self) -> bool:
        """Whether the file has grown past its reset size (see :meth:`postpone_reset`)."""
        return self._size >= self._reset_at

    def postpone_reset(self) -> None:
        """Ask again only once the file has grown by another reset size (the store is behind;
        waiting for it at every append would hold every answer up)."""
        self._reset_at = self._size + self._reset_size

    def reset(self, applied: int) -> bool:
        """Empty the file if the store holds every entry in it (``applied`` is the last).

        :return: whether it was emptied.
        :raises JournalError: if it cannot be emptied.
        """
        if applied < self._last or self._size == 0:
            return False
        try:
            self._truncate(0)
        except OSError as exc:
            raise JournalError(f"cannot empty the audit journal {self.path!r}: {exc}") from exc
        return True

    def close(self) -> None:
        """Unlock and close the file."""
        os.close(self._fd)

    def _read_all(self) -> bytes:
        chunks = []
        os.lseek(self._fd, 0, os.SEEK_SET)
        while chunk := os.read(self._fd, READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        # The file has this size now even if the sync below fails: later appends and take-backs
        # count from it (else a take-back would extend the file with zeros).
        self._size = size
        if size == 0:
            self._reset_at = self._reset_size
        os.fsync(self._fd)


def _sync_folder(path: str) -> None:
    """Flush the folder holding ``path``: a new file's name in it is durable only then."""
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
