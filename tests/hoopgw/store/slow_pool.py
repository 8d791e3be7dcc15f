"""A store thread pool and reactor for unit tests of store calls: the pool's work waits until
the test runs it (a slow store, without real threads or real time); the reactor delivers what a
store thread hands back at once. Loaded by tests/conftest.py as ``hoopgw_tests_slow_pool``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure


class ImmediateReactor:
    """Delivers what a store thread hands back at once (``callFromThread``)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class SlowPool:
    """A store thread pool whose work waits until the test runs it."""

    def __init__(self) -> None:
        self.started = False
        self.joined = False
        self.queued: list[Callable[[], None]] = []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.joined = True

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        def work() -> None:
            try:
                result = f(*a, **kw)
            except BaseException as exc:
                on_result(False, Failure(exc))
            else:
                on_result(True, result)

        self.queued.append(work)

    def run_one(self) -> None:
        """Run the oldest store call waiting (its answer arrives at once)."""
        self.queued.pop(0)()

    def run_all(self) -> None:
        """Run the store calls waiting now (not those their answers make)."""
        work, self.queued = self.queued, []
        for item in work:
            item()

    def drain(self) -> None:
        """Run store calls, also those their answers make, until none waits."""
        while self.queued:
            self.run_one()
