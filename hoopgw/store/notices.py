"""Change notices between gateway instances that share a PostgreSQL store.

When one instance decides a review, revokes a key or changes a grant, the store sends a notice
on the channel :data:`CHANNEL` (``pg_notify``, in the transaction or statement that made the
change, so it is sent only if the change is committed). Every instance listens with a
:class:`ChangeListener` and acts at once: it releases a statement it holds, or ends the sessions
of a revoked key or grant. Notices are a shortcut, not the guarantee: a listener that is
disconnected misses them, so each instance also looks at the store on its own (held reviews
every second, keys every ``key_check_interval``, grants every few seconds).

A notice's payload is ``KIND:ID``: ``review:<id>``, ``grant:<id>``, ``key:<key id>`` or
``ssh_key:<fingerprint>``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="hoopgw.store")

CHANNEL = "hoopgw_changes"
"""The ``LISTEN``/``NOTIFY`` channel."""

NOTICE_KINDS = ("review", "grant", "key", "ssh_key")
"""What a notice can be about."""

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to listen again after the connection is lost (the last repeats)."""


def parse_notice(payload: str) -> tuple[str, str] | None:
    """``(kind, id)`` of a notice's payload, or None for one this gateway does not know."""
    kind, separator, ident = payload.partition(":")
    if not separator or kind not in NOTICE_KINDS or not ident:
        return None
    return kind, ident


class ChangeListener:
    """A thread that listens on :data:`CHANNEL` with a connection of its own and hands every
    notice to ``deliver(kind, id)`` on the reactor thread; it listens again after a lost
    connection (notices sent meanwhile are lost: the periodic looks cover them)."""

    def __init__(
        self, url: str, deliver: Callable[[str, str], None], reactor: Any, *, wait: float = 1.0
    ) -> None:
        """
        :param url: the store's ``postgresql://`` URL.
        :param deliver: called on the reactor thread with each notice's kind and id.
        :param wait: seconds each wait for notices lasts before the thread checks for
            :meth:`stop` (and the longest a stop waits).
        """
        self._url = url
        self._deliver = deliver
        self._reactor = reactor
        self._wait = wait
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-notices", daemon=True)
        self.listening = threading.Event()
        """Set while a connection listens (tests wait on it)."""

    def start(self) -> None:
        """Start listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: the thread ends within about ``wait`` seconds (not waited for)."""
        self._stopping.set()

    def _run(self) -> None:
        import psycopg

        attempt = 0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    attempt = 0
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=self._wait):
                            self._received(notice.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warn(
                    "store change notices interrupted ({why}); listening again in {delay} s,"
                    " and looking at the store meanwhile",
                    why=str(exc).strip(),
                    delay=delay,
                )
                self._stopping.wait(delay)
        self.listening.clear()

    def _received(self, payload: str) -> None:
        notice = parse_notice(payload)
        if notice is not None:
            self._reactor.callFromThread(self._deliver, *notice)
