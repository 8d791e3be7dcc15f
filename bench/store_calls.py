"""What a gateway store look-up costs at once on the calling thread, and through the store's
thread pool (:mod:`hoopgw.store.calls`): the figure behind running SQLite's calls inline.

One key read (``KeyService.check_active``: one ``get_key``, what every login starts with) is
timed ``--count`` times each way, the two ways interleaved in rounds of 100, on a SQLite store
in a temporary folder, and with ``--postgresql URL`` also on that PostgreSQL database (a store
made in it, left there)::

    .venv/bin/python bench/store_calls.py
    .venv/bin/python bench/store_calls.py --postgresql postgresql://postgres@127.0.0.1/hgw_bench

"threaded" is the wall time from the call to the result back on the calling thread, through a
one-thread pool whose store connection belongs to that thread (SQLite's must).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.python.threadpool import ThreadPool

from hoopgw.identity.keys import KeyService
from hoopgw.store import open_store


def _timed(work: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


class _OneThread:
    """A one-thread pool whose thread has its own store (SQLite's connection must), with the
    result handed back as deferToThreadPool hands it to the reactor (a queue here)."""

    def __init__(self, make: Callable[[], Callable[[], Any]]) -> None:
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="bench-store")
        self._answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._make = make
        self._work: Callable[[], Any] | None = None
        self._pool.start()

    def _run(self) -> None:
        if self._work is None:
            self._work = self._make()
        self._answers.put(self._work())

    def __call__(self) -> Any:
        self._pool.callInThread(self._run)
        return self._answers.get()

    def close(self, stores: list[Any]) -> None:
        """Close ``stores`` on the thread, then stop it."""
        self._work = lambda: [store.close() for store in stores]
        self()
        self._pool.stop()


def _key_read(url: str, key_id: str, opened: list[Any]) -> Callable[[], Any]:
    store = open_store(url, instance="bench" if url.startswith("postgres") else "")
    opened.append(store)
    keys = KeyService(store)
    return lambda: keys.check_active(key_id, now=time.time())


def _measure(url: str, count: int) -> dict[str, float]:
    opened: list[Any] = []
    store = open_store(url, instance="bench" if url.startswith("postgres") else "")
    opened.append(store)
    store.migrate()
    _, record = KeyService(store).create("bench", ["bench"], now=time.time())
    inline = _key_read(url, record.key_id, opened)
    in_thread: list[Any] = []  # closed on its own thread
    threaded = _OneThread(lambda: _key_read(url, record.key_id, in_thread))
    threaded()  # the thread's store is opened
    inline_times: list[float] = []
    threaded_times: list[float] = []
    try:
        for _ in range(max(1, count // 100)):
            threaded_times += _timed(threaded, 100)
            inline_times += _timed(inline, 100)
    finally:
        threaded.close(in_thread)
        for each in opened:
            each.close()
    return {
        "inline_us": statistics.median(inline_times) * 1e6,
        "threaded_us": statistics.median(threaded_times) * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the median microseconds per key read, inline and threaded, per store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="look-ups per way (2000)")
    parser.add_argument("--postgresql", metavar="URL", help="also measure this PostgreSQL store")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        stores = {"sqlite": f"sqlite:///{Path(folder) / 'bench.db'}"}
        if args.postgresql:
            stores["postgresql"] = args.postgresql
        for name, url in stores.items():
            figures = _measure(url, args.count)
            print(
                f"{name}: key read inline {figures['inline_us']:.0f} us,"
                f" threaded {figures['threaded_us']:.0f} us (median of {args.count})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
