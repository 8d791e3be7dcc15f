"""Back-off for failed authentication, per client address, so secrets cannot be guessed at speed.

After ``free_failures`` failures from one address (its host, an IPv6 host by its /64 network;
the port changes with every connection), each further failure is answered only after a delay
that doubles from ``base_delay`` up to ``max_delay``. A failure still occupies its address's
slot until its delay has passed, even when the client hung up: with at most ``max_pending``
such slots per address, opening many connections at once does not multiply the guessing rate,
and an address that has all its slots busy is refused at once without its secret being
checked. An address's count is forgotten ``forget_after`` seconds after its last failure.

Successful logins neither wait nor reset the count (otherwise a caller with one valid key could
interleave it with guesses).

Gateway instances that share a store count failures together (``shared``): the delay follows
the address's failures on every instance, so spreading guesses over instances does not reset
it; the slots of pending failures are each instance's own.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import HoopgwError

log = Logger(namespace="hoopgw.throttle")

__all__ = ["BackoffSettings", "CancelLimit", "FailureThrottle", "client_host", "throttle_key"]


@attrs.frozen(kw_only=True)
class BackoffSettings:
    """The ``[identity.backoff]`` table."""

    free_failures: int = 3
    """Failures per address answered without delay."""
    base_delay: float = 1.0
    """Delay of the first delayed failure, in seconds; it doubles with each further one."""
    max_delay: float = 30.0
    """Longest delay, in seconds."""
    forget_after: float = 600.0
    """Seconds after an address's last failure when its count starts again from zero."""
    max_pending: int = 8
    """Delayed failures an address may have outstanding; beyond, attempts are refused unread."""
    max_addresses: int = 100_000
    """Addresses tracked at most; the stalest are forgotten first (bounds memory)."""


def client_host(client_address: str) -> str:
    """The host part of ``HOST:PORT`` (``[V6]:PORT`` or ``V6:PORT``); the address itself when
    it has no port."""
    if client_address.startswith("["):
        return client_address[1:].partition("]")[0]
    host, sep, port = client_address.rpartition(":")
    return host if sep and port.isdigit() else client_address


def throttle_key(client_address: str) -> str:
    """What failures are counted by: the client's host, with an IPv4 address mapped into IPv6
    counted as itself, and an IPv6 address by its /64 network (the smallest block a site is
    given: a single host can use every address in it)."""
    host = client_host(client_address)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@attrs.define
class _Record:
    failures: int = 0
    last: float = 0.0
    pending: int = 0


class FailureThrottle:
    """Counts failures per client host and says how long to wait before answering one.

    :param clock: ``seconds()`` and ``callLater`` (the reactor, or a ``Clock`` in tests).
    """

    def __init__(
        self,
        clock: Any,
        settings: BackoffSettings | None = None,
        *,
        shared: Callable[[str, float], Any] | None = None,
    ) -> None:
        """
        :param shared: counts a failure of a host (:func:`throttle_key`) at a time where every
            gateway instance sees it, and returns the host's failures there, or a Deferred of
            them (:meth:`hoopgw.store.base.Store.count_login_failure`, run off the reactor
            thread); None counts here only.
        """
        self._clock = clock
        self.settings = settings or BackoffSettings()
        self._records: dict[str, _Record] = {}
        self._shared = shared

    def _record(self, host: str, now: float) -> _Record | None:
        record = self._records.get(host)
        if record is not None and record.pending == 0:
            if now - record.last >= self.settings.forget_after:
                del self._records[host]
                return None
        return record

    def delayed_hosts(self) -> int:
        """How many client hosts would wait before their next failure is answered."""
        now = self._clock.seconds()
        return sum(
            1
            for host in list(self._records)
            if (record := self._record(host, now)) is not None
            and self._delay(record.failures + 1) > 0
        )

    def saturated(self, client_address: str) -> bool:
        """Whether the address has every slot busy: refuse it now, without checking."""
        record = self._record(throttle_key(client_address), self._clock.seconds())
        return record is not None and record.pending >= self.settings.max_pending

    def delay(self, client_address: str) -> float:
        """Seconds the next failure from this address would wait."""
        record = self._record(throttle_key(client_address), self._clock.seconds())
        return self._delay(record.failures + 1 if record else 1)

    def _delay(self, failures: int) -> float:
        s = self.settings
        excess = failures - s.free_failures
        if excess <= 0:
            return 0.0
        return float(min(s.max_delay, s.base_delay * 2 ** min(excess - 1, 32)))

    def failed(self, client_address: str) -> defer.Deferred[None]:
        """Count a failure from the address.

        :return: a Deferred that fires once the failure may be answered.
        """
        now = self._clock.seconds()
        host = throttle_key(client_address)
        record = self._record(host, now)
        if record is None:
            self._trim()
            record = _Record()
        # Kept in the order of the last failure, so that _trim finds the stalest first.
        self._records.pop(host, None)
        self._records[host] = record
        record.failures += 1
        record.last = now
        failures = record.failures
        if self._shared is None:
            return self._wait(record, failures)
        # The slot is taken while the store counts (off the reactor thread), so that a client
        # cannot open more checks than max_pending while the store is slow.
        record.pending += 1

        def counted(shared: int) -> int:
            return max(failures, shared)

        def uncounted(failure: Failure) -> int:
            # Fail closed: without the shared count, answer as late as the back-off allows.
            if failure.check(HoopgwError):
                log.warn("cannot count a failed login in the store: {why}", why=failure.value)
            else:
                log.failure("cannot count a failed login in the store", failure)
            return self.settings.free_failures + 64

        answer: defer.Deferred[None] = defer.Deferred()

        def release(total: int) -> None:
            record.pending -= 1
            self._wait(record, total).chainDeferred(answer)

        d = defer.maybeDeferred(self._shared, host, now)
        d.addCallbacks(counted, uncounted).addCallback(release)
        return answer

    def _wait(self, record: _Record, failures: int) -> defer.Deferred[None]:
        wait = self._delay(failures)
        if wait <= 0:
            return defer.succeed(None)
        record.pending += 1
        answer: defer.Deferred[None] = defer.Deferred()

        def elapsed() -> None:
            record.pending -= 1
            record.last = max(record.last, self._clock.seconds())
            answer.callback(None)

        # The slot is released by the timer, never by the caller going away.
        self._clock.callLater(wait, elapsed)
        return answer

    def _trim(self) -> None:
        excess = len(self._records) - self.settings.max_addresses + 1
        if excess <= 0:
            return
        # Oldest failure first (see failed), without sorting: this runs on every new address.
        idle: list[str] = []
        for host, record in self._records.items():
            if len(idle) == excess:
                break
            if record.pending == 0:
                idle.append(host)
        for host in idle:
            del self._records[host]


CANCEL_BURST = 10
"""Cancel requests matching no session an address may send at once (:class:`CancelLimit`)."""
CANCEL_RATE = 1.0
"""Cancel requests matching no session an address may send per second, after its burst."""


class CancelLimit:
    """A token bucket per client host (:func:`throttle_key`) for PostgreSQL cancel requests.

    A cancel request carries a 4-byte secret: guessing it is only a matter of rate. Each request
    that matches no session spends a token of its address; the bucket holds ``burst`` and
    refills at ``rate`` per second. While an address has no token left its requests are dropped
    unread (not compared, not passed to other workers), so it cannot guess faster than ``rate``.
    A request that matches spends nothing: a client that only cancels its own queries is never
    limited.

    :param clock: ``seconds()`` (the reactor, or a ``Clock`` in tests).
    """

    def __init__(
        self,
        clock: Any,
        *,
        burst: int = CANCEL_BURST,
        rate: float = CANCEL_RATE,
        max_addresses: int = 100_000,
    ) -> None:
        self._clock = clock
        self.burst = burst
        self.rate = rate
        self._max_addresses = max_addresses
        # Host -> (tokens, when they were counted, whether its refusal was logged); kept in
        # the order of the last miss, so that the stalest are forgotten first.
        self._buckets: dict[str, tuple[float, float, bool]] = {}

    def _tokens(self, host: str, now: float) -> float:
        bucket = self._buckets.get(host)
        if bucket is None:
            return float(self.burst)
        tokens, at, _ = bucket
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def allows(self, client_address: str) -> bool:
        """Whether a request from ``client_address`` may be read: False while its address has
        spent its budget (the first refusal of each run is logged)."""
        host = throttle_key(client_address)
        now = self._clock.seconds()
        tokens = self._tokens(host, now)
        if tokens >= 1:
            return True
        tokens_, at, logged = self._buckets[host]
        if not logged:
            log.warn(
                "cancel requests from {host} that match no session exceed {burst} then {rate:g}"
                " per second: dropping them unread",
                host=host,
                burst=self.burst,
                rate=self.rate,
            )
            self._buckets[host] = (tokens_, at, True)
        return False

    def missed(self, client_address: str) -> None:
        """A request from ``client_address`` matched no session: spend one of its tokens."""
        host = throttle_key(client_address)
        now = self._clock.seconds()
        tokens = self._tokens(host, now) - 1
        if self._buckets.pop(host, None) is None:
            self._trim(now)
        self._buckets[host] = (tokens, now, False)

    def refund(self, client_address: str) -> None:
        """A request from ``client_address`` this process counted as a miss matched a session
        of another worker after all: give its token back (never above the burst)."""
        host = throttle_key(client_address)
        if host in self._buckets:
            now = self._clock.seconds()
            self._buckets[host] = (min(float(self.burst), self._tokens(host, now) + 1), now, False)

    def _trim(self, now: float) -> None:
        if len(self._buckets) < self._max_addresses:
            return
        # A full bucket is the same as none: forget the stalest ones that are full again, and
        # the stalest one if none is (bounds memory; a few looked at per new address).
        stalest = list(itertools.islice(self._buckets, 16))
        full = [h for h in stalest if self._tokens(h, now) >= self.burst]
        for host in full or stalest[:1]:
            del self._buckets[host]
