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
from typing import Any

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


@attrs.frozen
class Attribution:
    """Where one server message belongs."""

    request: Request | None
    """The request it answers, None for asynchronous or unsolicited messages."""
    completed: list[CommandProgress]
    """Commands that ended with this message (at a ReadyForQuery)."""


class ResponseTracker:
    """The queue of requests the server has yet to answer, for one session."""

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()
        self._open: deque[CommandProgress] = deque()
        self._barriers_sent = 0
        self._barriers_seen = 0

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

    def expect(self, request: Request) -> None:
        """Record that ``request`` was forwarded."""
        if request.kind in BARRIERS:
            self._barriers_sent += 1
        self._queue.append(request)

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
            return Attribution(None, [])
        head = self._queue[0]
        if msg_type == 0x45:  # 'E' ErrorResponse
            if head.kind not in BARRIERS:
                # Extended protocol: the server now skips everything up to the next Sync, a
                # simple Query included, whose ReadyForQuery therefore never comes.
                self._queue.popleft()
                while self._queue and self._queue[0].kind != "sync":
                    if self._queue.popleft().kind == "query":
                        self._barriers_seen += 1
            return Attribution(head, [])
        if msg_type in _COMPLETES[head.kind]:
            self._queue.popleft()
            if msg_type == 0x5A:  # 'Z' ReadyForQuery
                self._barriers_seen += 1
                return Attribution(head, self._complete_through(self._barriers_seen))
        return Attribution(head, [])

    def _complete_through(self, barrier: int) -> list[CommandProgress]:
        done = []
        while self._open and self._open[0].barrier <= barrier:
            done.append(self._open.popleft())
        return done
