"""Tests for bench/guardrails_cost.py: its workloads are what they claim to be."""

from __future__ import annotations

import random
import sys
from itertools import islice
from typing import Any

import pytest
from hoopgw_postgres.analysis import PostgresDialect

from hoopgw.session import Command
from hoopgw.testing import make_session

bench: Any = sys.modules["hoopgw_bench_guardrails_cost"]  # loaded by tests/bench/conftest.py


def test_the_repeated_shape_is_one_shape_of_new_texts() -> None:
    texts = list(islice(bench.repeated_shape(random.Random(1)), 50))
    dialect = PostgresDialect()
    assert len(set(texts)) > 45
    assert len({dialect.shape(t) for t in texts}) == 1


def test_new_texts_are_new_shapes_of_pgbench_statements() -> None:
    texts = list(islice(bench.new_texts(random.Random(1)), 50))
    dialect = PostgresDialect()
    assert len({dialect.shape(t) for t in texts}) == 50
    kinds = {dialect.analyze(t).statements[0].kind for t in texts}
    assert kinds == {"SelectStmt", "UpdateStmt", "InsertStmt"}


@pytest.mark.parametrize("preset", bench.PRESETS)
def test_each_workload_is_judged_and_timed(preset: str) -> None:
    plugin = bench.make_plugin(preset)
    session = make_session(session_id="s")
    text = next(bench.repeated_shape(random.Random(1)))
    assert (
        plugin.client_command(session, Command(session_id="s", seq=1, text=text, kind="query"))
        is None
    )
    for workload in bench.WORKLOADS:
        assert bench.run(workload, preset, 20) >= 0.0
    assert bench.main(["--count", "10", "--rounds", "1", "--workload", "shape"]) == 0
