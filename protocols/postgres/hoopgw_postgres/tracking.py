"""Which client request each server message answers (sans-io).

PostgreSQL answers requests strictly in order (protocol chapter, "Message Flow"): a simple
Query runs until ReadyForQuery; each extended-protocol message gets its own reply, and after an
error the server discards every message up to the next Sync. :class:`ResponseTracker` mirrors
that queue so the proxy can attribute rows, errors and completion to the command that caused
them, and swap the server's error for the gateway's own when a refused command was replaced by a
harmless one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs

# Server messages that may arrive at any time and answer no request.
ASYNC_TYPES = frozenset(b"NAS")

# What completes each kind of request (besides ErrorResponse).
_COMPLETES = {
    "parse": frozenset(b"1"),
    "bind": frozenset(b"2"),
    "describe": frozenset(b"Tn"),
    "execute": frozenset(b"CIs"),
    "close": frozenset(b"3"),
    "sync": frozenset(b"Z"),
    "query": frozenset(b"Z"),
}
BARRIERS = frozenset({"sync", "query"})
# Requests that may run code, and so may change a setting the server reports (set_config() can
# be called by any function, trigger or operator): what they changed is reported just before the
# ReadyForQuery that ends them.
RUNS_CODE = frozenset({"query", "parse", "bind", "execute"})


@attrs.define(kw_only=True)
class CommandProgress:
    """Outcome of one command, accumulated while its results flow back."""

    command: Any
    """The :class:`hoopgw.session.Command`."""
    forwarded_at: float
    """When it was forwarded (reactor time)."""
    barrier: int
    """Number of the ReadyForQuery that ends it."""
    rows: int = 0
    """Rows returned or affected by the result sets completed so far."""
    result_rows: int = 0
    """Rows of the result set in progress."""
    bytes: int = 0
    error_code: str = ""
    error_message: str = ""

    def result_complete(self, tag_rows: int) -> None:
        """A result set ended (CommandComplete); its tag's count covers statements that
        return no rows (``INSERT 0 5``) and rows sent (``SELECT 2``, ``FETCH 2``) alike."""
        self.rows += max(tag_rows, self.result_rows)
        self.result_rows = 0


@attrs.define(kw_only=True)
class Request:
    """One forwarded client message still waiting for its reply."""

    kind: str
    """``query``, ``parse``, ``bind``, ``describe``, ``execute``, ``close`` or ``sync``."""
    progress: CommandProgress | None = None
    """The command this request works for, if any."""
    replace_error: bytes | None = None
    """If set, the request stands in for a refused command: its ErrorResponse is swallowed
    and these bytes (the gateway's own error) go to the client instead."""
    portal: str | None = None
    """The portal a ``bind``, ``execute``, portal ``describe`` or portal ``close`` names
    (``""`` for the unnamed one); None for other requests."""
    barrier: int = 0
    """Set by the tracker: for a ``sync`` or ``query``, the number of its ReadyForQuery."""
    copy_ends: int = 0
    """Set by the tracker: how many CopyDone or CopyFail the client sent before it."""
    statement: str | None = None
    """The prepared statement a ``parse`` defines or a statement ``close`` drops."""
    text: str = ""
    """For a ``parse``: the statement's text, what its name runs once the server accepts it."""


class Attribution(NamedTuple):
    """Where one server message belongs (a plain tuple: one is made per server message)."""

    request: Request | None
    """The request it answers, None for asynchronous or unsolicited messages."""
    completed: Sequence[CommandProgress]
    """Commands that ended with this message (at a ReadyForQuery)."""


_UNSOLICITED = Attribution(None, ())


class ResponseTracker:
    """The queue of requests the server has yet to answer, for one session."""

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()
        self._open: deque[CommandProgress] = deque()
        self._barriers_sent = 0
        self._barriers_seen = 0
        # Number of the ReadyForQuery after which every request that may run code is answered.
        self._unsettled_until = 0
        self._copy_ends = 0  # CopyDone and CopyFail messages forwarded so far
        # While the server is in copy-in mode it ignores Sync (protocol chapter, "COPY
        # Operations"): the copy_ends count of the COPY's request until the client ends it.
        self._copying: int | None = None

    @property
    def idle(self) -> bool:
        """Whether every forwarded request has been answered."""
        return not self._queue

    @property
    def head(self) -> Request | None:
        """The request the next (non-error, non-completing) server message answers: what a
        DataRow belongs to. None when nothing is pending."""
        return self._queue[0] if self._queue else None

    @property
    def barriers_seen(self) -> int:
        """Number of ReadyForQuery messages the server sent so far."""
        return self._barriers_seen

    @property
    def next_barrier(self) -> int:
        """Number of the ReadyForQuery that will end what is forwarded next."""
        return self._barriers_sent + 1

    @property
    def settled(self) -> bool:
        """Whether every forwarded request that may run code has been answered up to its
        ReadyForQuery, so the server has reported every setting it changed."""
        return self._barriers_seen >= self._unsettled_until

    @property
    def settling(self) -> bool:
        """Whether a ReadyForQuery that settles the session is on its way: a Sync or Query
        was forwarded after the last request that may run code."""
        return self._barriers_sent >= self._unsettled_until

    def expect(self, request: Request) -> None:
        """Record that ``request`` was forwarded."""
        request.copy_ends = self._copy_ends
        if request.kind == "sync" and self._copying == self._copy_ends:
            return  # the server ignores it: no answer will come
        if request.kind in RUNS_CODE:
            self._unsettled_until = self.next_barrier
        if request.kind in BARRIERS:
            self._barriers_sent += 1
            request.barrier = self._barriers_sent
        self._queue.append(request)

    def copy_ended(self) -> None:
        """Record that the client's CopyDone or CopyFail was forwarded."""
        self._copy_ends += 1

    def track(self, progress: CommandProgress) -> None:
        """Record a forwarded command whose outcome ends at ``progress.barrier``."""
        self._open.append(progress)

    def open_commands(self) -> list[CommandProgress]:
        """Commands forwarded but not yet ended; the caller reports them when a session ends."""
        items = list(self._open)
        self._open.clear()
        return items

    def attribute(self, msg_type: int) -> Attribution:
        """Attribute one server message (by its type byte) and advance the queue."""
        if msg_type in ASYNC_TYPES or not self._queue:
            return _UNSOLICITED
        head = self._queue[0]
        if msg_type == 0x45:  # 'E' ErrorResponse
            if head.kind not in BARRIERS:
                # Extended protocol: the server now skips everything up to the next Sync, a
                # simple Query included, whose ReadyForQuery therefore never comes.
                self._queue.popleft()
                while self._queue and self._queue[0].kind != "sync":
                    if self._queue.popleft().kind == "query":
                        self._barriers_seen += 1
            return Attribution(head, ())
        if msg_type == 0x47:  # 'G' CopyInResponse
            self._copy_in(head)
        if msg_type in _COMPLETES[head.kind]:
            self._queue.popleft()
            if msg_type == 0x5A:  # 'Z' ReadyForQuery
                self._barriers_seen += 1
                return Attribution(head, self._complete_through(self._barriers_seen))
        return Attribution(head, ())

    def _copy_in(self, head: Request) -> None:
        """The server entered copy-in mode for ``head``: every Sync the client sent after it
        and before its CopyDone or CopyFail is ignored, and so will later ones be."""
        ignored = [r for r in self._queue if r.kind == "sync" and r.copy_ends == head.copy_ends]
        for request in ignored:
            self._queue.remove(request)
            self._drop_barrier(request.barrier)
        if head.copy_ends == self._copy_ends:
            self._copying = head.copy_ends  # expect() drops Syncs until copy_ended()

    def _drop_barrier(self, number: int) -> None:
        """Forget ReadyForQuery ``number``, which will never come: every later one moves up."""
        self._barriers_sent -= 1
        for request in self._queue:
            if request.barrier > number:
                request.barrier -= 1
        for progress in self._open:
            if progress.barrier > number:
                progress.barrier -= 1
        if self._unsettled_until > number:
            self._unsettled_until -= 1

    def _complete_through(self, barrier: int) -> list[CommandProgress]:
        done = []
        while self._open and self._open[0].barrier <= barrier:
            done.append(self._open.popleft())
        return done
