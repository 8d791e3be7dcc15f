"""Tests for bench/relay_cost.py: the transaction it repeats really goes through the session."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hoopgw_postgres import messages as m

bench: Any = sys.modules["hoopgw_bench_relay_cost"]  # loaded by tests/bench/conftest.py


@pytest.mark.parametrize("recording", [False, True], ids=["bare", "recording"])
def test_each_transaction_is_forwarded_and_answered(recording: bool) -> None:
    session, transport, upstream = bench.logged_in_session(recording=recording)
    assert session.chain.names == (("recording",) if recording else ())
    session.dataReceived(bench.QUERY)
    assert upstream.transport.value() == bench.QUERY
    session.upstream_messages(*m.MessageReader().feed_block(bench.ANSWER))
    assert transport.value() == bench.ANSWER
    assert bench.run(20, recording=recording) >= 0.0
