"""The gateway's store calls, off the reactor thread when the store is a network away.

The running gateway looks at the store for logins (API keys, SSH keys, SCRAM verifiers), for
the periodic key check, for just-in-time grants and for the shared login back-off, and for
held statements and the decisions of their reviews (see :mod:`hoopgw.approvals.holds`). With the
PostgreSQL store each of those is a network round trip: run on the reactor thread, one slow
answer would stall every session of the gateway (design invariant 6, isolation). So
:class:`StoreCalls` runs them on a dedicated, bounded pool of :data:`STORE_THREADS` threads and
hands each result back on the reactor thread as a Deferred; the PostgreSQL store keeps a
connection per thread (:class:`hoopgw.store.postgres.PgConnection`).

A SQLite store is a local file: its calls run at once on the reactor thread (``inline``), which
``bench/store_calls.py`` measures as several times cheaper than the hop to a thread and back;
its connection also belongs to the thread that opened it.

Calls run concurrently: a caller that needs one call to follow another makes the second in the
first's callback (or makes both in one function run by :meth:`StoreCalls.call`). A failure,
:class:`~hoopgw.errors.StoreError` or any other, fails the Deferred: callers fail closed on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = ["STORE_LOOK_INTERVAL", "STORE_THREADS", "StoreCalls", "StoreReadiness"]

log = Logger(namespace="hoopgw.store")

STORE_THREADS = 4
"""Threads of the gateway's store pool (PostgreSQL): at most this many look-ups wait on the
store at once; the others queue. The store's connection pool has one connection more, for the
calls that stay on the reactor thread (the console's reads)."""

STORE_LOOK_INTERVAL = 5.0
"""Seconds between :class:`StoreReadiness` looks at whether the store takes writes."""

T = TypeVar("T")


class StoreCalls:
    """Runs store calls for the reactor: on a thread pool, or at once (``inline``).

    :param reactor: where results are delivered.
    :param pool: the thread pool to run calls on; None runs them at once on the calling thread.
    """

    def __init__(self, reactor: Any, *, pool: ThreadPool | None = None) -> None:
        self._reactor = reactor
        self._pool = pool

    @classmethod
    def inline(cls) -> StoreCalls:
        """Calls run at once, on the calling thread (SQLite; tests)."""
        return cls(None)

    @classmethod
    def threaded(cls, reactor: Any, *, size: int = STORE_THREADS) -> StoreCalls:
        """Calls run on a new pool of ``size`` threads named ``hoopgw-store``; call
        :meth:`start` before the first call and :meth:`stop` at the end."""
        return cls(reactor, pool=ThreadPool(minthreads=0, maxthreads=size, name="hoopgw-store"))

    @property
    def threaded_pool(self) -> bool:
        """Whether calls leave the calling thread."""
        return self._pool is not None

    def start(self) -> None:
        """Start the pool's threads (none for ``inline``)."""
        if self._pool is not None and not self._pool.started:
            self._pool.start()

    def stop(self) -> None:
        """Let the calls under way finish, then stop the threads. Calls made afterwards fail."""
        if self._pool is not None and self._pool.started:
            self._pool.stop()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """Run ``fn(*args, **kwargs)``; the Deferred fires on the reactor thread with its
        result, or fails with what it raised."""
        if self._pool is None:
            return defer.maybeDeferred(fn, *args, **kwargs)
        if not self._pool.started or self._pool.joined:
            return defer.fail(RuntimeError("the store's threads are stopped"))
        return threads.deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


class StoreReadiness:
    """Whether a store reached through threaded :class:`StoreCalls` takes writes, for
    ``/readyz``: looked at every :data:`STORE_LOOK_INTERVAL` seconds on the store's threads,
    so that no readiness probe waits on the store on the reactor thread. A look the store
    leaves unanswered longer than that interval makes it not ready."""

    def __init__(self, calls: StoreCalls, reactor: Any) -> None:
        self._calls = calls
        self._reactor = reactor
        self._store: Any = None
        self._ok = False
        self._since: float | None = None
        self._loop = task.LoopingCall(self._look)
        self._loop.clock = reactor

    def start(self, store: Any) -> None:
        """Start looking at ``store`` (nothing to do when the calls are inline)."""
        if not self._calls.threaded_pool or self._loop.running:
            return
        self._store = store
        self._loop.start(STORE_LOOK_INTERVAL, now=True).addErrback(
            lambda f: log.failure("the store's readiness look stopped", f)
        )

    def stop(self) -> None:
        """Stop looking."""
        if self._loop.running:
            self._loop.stop()

    def writable(self) -> bool:
        """The last look's answer; False while a look waits too long."""
        if self._since is not None and self._reactor.seconds() - self._since > STORE_LOOK_INTERVAL:
            return False
        return self._ok

    def _look(self) -> defer.Deferred[None]:
        self._since = self._reactor.seconds()

        def seen(writable: bool) -> None:
            self._ok, self._since = bool(writable), None

        def failed(_: Any) -> None:
            self._ok, self._since = False, None

        return self._calls.call(self._store.writable).addCallbacks(seen, failed)
