"""Tests for hoopgw.store.calls: store calls at once (SQLite) or on the store's threads
(PostgreSQL), with a thread pool that runs only when the test says so (no real threads)."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_tests_slow_pool import ImmediateReactor, SlowPool
from twisted.internet import defer

from hoopgw.errors import StoreError
from hoopgw.store.calls import STORE_LOOK_INTERVAL, STORE_THREADS, StoreCalls, StoreReadiness


def test_inline_calls_run_at_once() -> None:
    calls = StoreCalls.inline()
    assert not calls.threaded_pool
    assert calls.call(lambda a, *, b: a + b, 1, b=2).result == 3


def test_inline_calls_fail_with_what_the_store_raised() -> None:
    def broken() -> None:
        raise StoreError("down")

    d = StoreCalls.inline().call(broken)
    with pytest.raises(StoreError, match="down"):
        d.result.raiseException()
    d.addErrback(lambda _: None)


def test_threaded_calls_wait_for_their_thread_and_leave_the_caller_free() -> None:
    pool = SlowPool()
    calls = StoreCalls(ImmediateReactor(), pool=pool)  # type: ignore[arg-type]
    calls.start()
    slow = calls.call(lambda: "slow")
    other = calls.call(lambda: "other")
    # Nothing ran on the calling thread: the caller goes on with its other work.
    assert not slow.called and not other.called
    pool.run_all()
    assert (slow.result, other.result) == ("slow", "other")


def test_threaded_calls_deliver_a_store_error_as_a_failure() -> None:
    pool = SlowPool()
    calls = StoreCalls(ImmediateReactor(), pool=pool)  # type: ignore[arg-type]
    calls.start()

    def broken() -> None:
        raise StoreError("connection refused")

    d = calls.call(broken)
    pool.run_all()
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(StoreError)


def test_calls_after_stop_fail_without_running() -> None:
    pool = SlowPool()
    calls = StoreCalls(ImmediateReactor(), pool=pool)  # type: ignore[arg-type]
    calls.start()
    calls.stop()
    ran: list[int] = []
    d = calls.call(ran.append, 1)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and not ran and not pool.queued


def test_a_real_pool_is_bounded_and_named() -> None:
    calls = StoreCalls.threaded(object())
    pool: Any = calls._pool
    assert (pool.max, pool.name) == (STORE_THREADS, "hoopgw-store")
    assert calls.threaded_pool and not pool.started


def test_a_real_pool_runs_calls_off_the_calling_thread() -> None:
    import threading

    from twisted.internet.testing import MemoryReactor

    class _Delivering(MemoryReactor):
        def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
            f(*args, **kwargs)

    calls = StoreCalls.threaded(_Delivering(), size=1)
    calls.start()
    try:
        done = threading.Event()
        d: defer.Deferred[str] = calls.call(lambda: threading.current_thread().name)
        d.addBoth(lambda name: (done.set(), name)[1])
        assert done.wait(10)
        assert d.result != threading.current_thread().name
    finally:
        calls.stop()


def test_readiness_answers_from_the_last_look_at_the_store() -> None:
    # /readyz must not wait on a PostgreSQL store on the reactor thread: the store is looked
    # at through its calls every STORE_LOOK_INTERVAL seconds, and a look it leaves unanswered
    # longer than that makes it not ready.
    from twisted.internet.task import Clock

    class Clocked(ImmediateReactor, Clock):
        pass

    class Store:
        writable_now = True

        def writable(self) -> bool:
            return self.writable_now

    pool, clock, store = SlowPool(), Clocked(), Store()
    calls = StoreCalls(clock, pool=pool)  # type: ignore[arg-type]
    calls.start()
    ready = StoreReadiness(calls, clock)
    ready.start(store)
    assert not ready.writable()  # no answer yet
    pool.run_all()
    assert ready.writable()
    clock.advance(STORE_LOOK_INTERVAL)
    assert len(pool.queued) == 1 and ready.writable()  # waiting, but not too long yet
    clock.advance(STORE_LOOK_INTERVAL + 0.1)
    assert not ready.writable()
    store.writable_now = False
    pool.run_all()
    assert not ready.writable()
    store.writable_now = True
    clock.advance(STORE_LOOK_INTERVAL)
    pool.run_all()
    assert ready.writable()
    ready.stop()


def test_readiness_does_not_look_with_inline_calls() -> None:
    ready = StoreReadiness(StoreCalls.inline(), None)
    ready.start(object())
    assert not ready.writable()
