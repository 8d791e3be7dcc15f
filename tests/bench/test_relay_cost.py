"""Tests for bench/relay_cost.py: the transaction it repeats really goes through the session."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hoopgw_postgres import messages as m

bench: Any = sys.modules["hoopgw_bench_relay_cost"]  # loaded by tests/bench/conftest.py


@pytest.mark.parametrize("chain", sorted(bench.CHAINS))
def test_each_transaction_is_forwarded_and_answered(chain: str) -> None:
    session, transport, upstream, process = bench.logged_in_session(chain)
    assert session.chain.names == tuple(bench.CHAINS[chain])
    session.dataReceived(bench.QUERY)
    if process is not None:
        assert upstream.transport.value() == b""  # waits for its record
        process.answer()
    assert upstream.transport.value() == bench.QUERY
    session.upstream_messages(*m.MessageReader().feed_block(bench.ANSWER))
    assert transport.value() == bench.ANSWER
    assert bench.run(20, chain=chain) >= 0.0
