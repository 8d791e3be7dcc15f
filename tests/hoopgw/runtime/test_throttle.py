"""Tests for hoopgw.runtime.throttle: per-address back-off of failed authentication, on a Clock."""

from __future__ import annotations

import time

import pytest
from twisted.internet.task import Clock

from hoopgw.runtime.throttle import (
    BackoffSettings,
    CancelLimit,
    FailureThrottle,
    client_host,
    throttle_key,
)


def _throttle(**settings):
    clock = Clock()
    clock.advance(1000)
    return clock, FailureThrottle(clock, BackoffSettings(**settings))


def test_the_first_failures_are_answered_at_once():
    _, throttle = _throttle(free_failures=3)
    for _ in range(3):
        assert throttle.failed("10.0.0.1:5000").called


def test_further_failures_wait_doubling_up_to_the_maximum():
    clock, throttle = _throttle(free_failures=1, base_delay=1.0, max_delay=4.0, max_pending=100)
    throttle.failed("10.0.0.1:1")
    delays = []
    for _ in range(5):
        d = throttle.failed("10.0.0.1:1")
        waited = 0.0
        while not d.called:
            clock.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_addresses_are_counted_by_host_not_port():
    _, throttle = _throttle(free_failures=1)
    throttle.failed("10.0.0.1:1")
    assert throttle.delay("10.0.0.1:2") == 1.0
    assert throttle.delay("10.0.0.2:1") == 0.0


def test_the_count_is_forgotten_after_a_quiet_period():
    clock, throttle = _throttle(free_failures=1, forget_after=60.0)
    throttle.failed("10.0.0.1:1")
    clock.advance(30)
    assert throttle.delay("10.0.0.1:1") == 1.0
    clock.advance(31)
    assert throttle.delay("10.0.0.1:1") == 0.0


def test_parallel_attempts_are_capped_until_their_delays_pass():
    clock, throttle = _throttle(free_failures=0, base_delay=10.0, max_delay=10.0, max_pending=2)
    first = throttle.failed("10.0.0.1:1")
    throttle.failed("10.0.0.1:2")
    assert throttle.saturated("10.0.0.1:3")
    # The callers going away does not release the slots; the time does.
    del first
    clock.advance(10)
    assert not throttle.saturated("10.0.0.1:3")


def test_memory_is_bounded():
    _, throttle = _throttle(free_failures=5, max_addresses=10)
    for n in range(100):
        throttle.failed(f"10.0.{n}.1:1")
    assert len(throttle._records) <= 10


def test_the_addresses_of_one_ipv6_64_share_a_count():
    # A single IPv6 host can use every address of its /64: one address each guess would
    # otherwise never be slowed down.
    _, throttle = _throttle(free_failures=1)
    throttle.failed("[2001:db8:1:2::1]:1")
    assert throttle.delay("[2001:db8:1:2:ffff:ffff:ffff:ffff]:2") == 1.0
    assert throttle.delay("2001:db8:1:2::abcd:3") == 1.0
    assert throttle.delay("[2001:db8:1:3::1]:1") == 0.0


def test_an_ipv4_address_mapped_into_ipv6_is_counted_as_itself():
    _, throttle = _throttle(free_failures=1)
    throttle.failed("10.0.0.1:1")
    assert throttle.delay("[::ffff:10.0.0.1]:2") == 1.0
    assert throttle.delay("::ffff:10.0.0.1:3") == 1.0


def test_the_stalest_idle_address_is_forgotten_first():
    clock, throttle = _throttle(free_failures=5, max_addresses=3)
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.failed(f"{host}:1")
        clock.advance(1)
    throttle.failed("10.0.0.1:1")  # now the most recent
    throttle.failed("10.0.0.4:1")
    assert sorted(throttle._records) == ["10.0.0.1", "10.0.0.3", "10.0.0.4"]


def test_a_full_table_is_trimmed_without_sorting_it():
    # Once the table is full, every new address forgets one: that must not cost a sort of
    # the whole table on the reactor thread (about 10 ms at 50,000 addresses).
    _, throttle = _throttle(free_failures=5, max_addresses=50_000)
    for n in range(50_000):
        throttle.failed(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}:1")
    started = time.perf_counter()
    for n in range(500):
        throttle.failed(f"10.200.{n >> 8}.{n & 255}:1")
    assert time.perf_counter() - started < 1.0
    assert len(throttle._records) == 50_000


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.1:5432", "127.0.0.1"),
        ("[::1]:5432", "::/64"),
        ("[2001:DB8::1]:5432", "2001:db8::/64"),
        ("[::ffff:192.0.2.1]:5432", "192.0.2.1"),
        ("/tmp/.s.PGSQL.5432", "/tmp/.s.PGSQL.5432"),
    ],
)
def test_throttle_key(address, key):
    assert throttle_key(address) == key


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("127.0.0.1:5432", "127.0.0.1"),
        ("[::1]:5432", "::1"),
        ("::1:5432", "::1"),
        ("/tmp/.s.PGSQL.5432", "/tmp/.s.PGSQL.5432"),
    ],
)
def test_client_host(address, host):
    assert client_host(address) == host


def test_failures_counted_on_another_instance_lengthen_the_delay():
    # Two gateway instances on one store: the store's count covers both.
    shared: dict[str, int] = {}

    def count(host: str, now: float) -> int:
        shared[host] = shared.get(host, 0) + 1
        return shared[host]

    clock = Clock()
    settings = BackoffSettings(free_failures=2, base_delay=1.0, max_delay=8.0)
    a = FailureThrottle(clock, settings, shared=count)
    b = FailureThrottle(clock, settings, shared=count)
    assert a.failed("10.0.0.1:1").called
    assert b.failed("10.0.0.1:2").called
    third = a.failed("10.0.0.1:3")  # the third failure of the host, the first here
    assert not third.called
    clock.advance(1.0)
    assert third.called


def test_a_store_that_cannot_count_answers_with_the_longest_delay():
    from hoopgw.errors import StoreError

    def failing(host: str, now: float) -> int:
        raise StoreError("store down")

    clock = Clock()
    throttle = FailureThrottle(clock, BackoffSettings(max_delay=8.0), shared=failing)
    answer = throttle.failed("10.0.0.1:1")
    clock.advance(7.9)
    assert not answer.called
    clock.advance(0.1)
    assert answer.called


def test_a_failure_holds_its_slot_while_the_store_counts_it():
    # The shared count runs off the reactor thread (hoopgw.store.calls): while the store is
    # slow, the failures waiting on it count toward max_pending.
    from twisted.internet import defer

    counts: list[defer.Deferred[int]] = []

    def slow(host: str, now: float) -> defer.Deferred[int]:
        counts.append(defer.Deferred())
        return counts[-1]

    clock = Clock()
    throttle = FailureThrottle(clock, BackoffSettings(max_pending=2), shared=slow)
    first, second = throttle.failed("10.0.0.1:1"), throttle.failed("10.0.0.1:2")
    assert throttle.saturated("10.0.0.1:3")
    counts[0].callback(1)
    counts[1].callback(2)
    assert first.called and second.called
    assert not throttle.saturated("10.0.0.1:3")


# -- cancel requests ------------------------------------------------------------------------------


def _cancel_limit(**settings):
    clock = Clock()
    clock.advance(1000)
    return clock, CancelLimit(clock, **settings)


def test_cancel_misses_beyond_the_burst_are_refused_until_a_token_refills():
    clock, limit = _cancel_limit(burst=3, rate=0.5)
    for _ in range(3):
        assert limit.allows("10.0.0.1:5000")
        limit.missed("10.0.0.1:5000")
    assert not limit.allows("10.0.0.1:5001")  # by host, whatever the port
    assert limit.allows("10.0.0.2:5000")  # another address has its own bucket
    clock.advance(1.9)
    assert not limit.allows("10.0.0.1:5000")
    clock.advance(0.1)  # one token after 2 s at 0.5 per second
    assert limit.allows("10.0.0.1:5000")
    limit.missed("10.0.0.1:5000")
    assert not limit.allows("10.0.0.1:5000")
    clock.advance(100)  # refills up to the burst, no more
    for _ in range(3):
        assert limit.allows("10.0.0.1:5000")
        limit.missed("10.0.0.1:5000")
    assert not limit.allows("10.0.0.1:5000")


def test_cancel_limit_counts_an_ipv6_host_by_its_network():
    _, limit = _cancel_limit(burst=1)
    limit.missed("[2001:db8::1]:5000")
    assert not limit.allows("[2001:db8::ffff]:5000")
    assert limit.allows("[2001:db8:0:1::1]:5000")


def test_cancel_limit_forgets_full_buckets_first_when_it_tracks_too_many():
    clock, limit = _cancel_limit(burst=2, rate=1.0, max_addresses=2)
    limit.missed("10.0.0.1:1")
    limit.missed("10.0.0.1:1")
    clock.advance(10)  # 10.0.0.1 is full again
    limit.missed("10.0.0.2:1")
    limit.missed("10.0.0.2:1")
    limit.missed("10.0.0.3:1")  # over the bound: the full bucket goes
    limit.missed("10.0.0.3:1")
    assert len(limit._buckets) == 2
    assert not limit.allows("10.0.0.2:1")
    assert not limit.allows("10.0.0.3:1")
