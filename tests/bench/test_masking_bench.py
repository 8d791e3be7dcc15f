"""Unit tests for the pure parts of bench/masking_bench.py (no server, no subprocess)."""

from __future__ import annotations

import sys
from typing import Any

bench: Any = sys.modules["hoopgw_bench_masking"]  # loaded by tests/bench/conftest.py


def test_summary_and_goals() -> None:
    summary = bench.summarize(
        {
            "direct": {1000: 2.0, 100000: 200.0},
            "hoopgw-bare": {1000: 4.0, 100000: 300.0},
            "hoopgw-masking": {1000: 6.5, 100000: 500.0},
        }
    )
    assert summary["1000"] == {
        "direct_ms": 2.0,
        "bare_ms": 4.0,
        "masking_ms": 6.5,
        "added_ms": 4.5,
        "masking_only_ms": 2.5,
        "ratio": 3.25,
    }
    assert bench.goals(summary) == {
        "1000_rows_added_under_5ms": True,
        "100000_rows_under_3x_direct": True,
    }


def test_quick_mode_and_defaults() -> None:
    quick = bench.parse_args(["--quick"], environ={})
    assert quick.sizes == (1000, 10_000) and quick.rounds == 2
    full = bench.parse_args([], environ={"HOOPGW_TEST_PGPORT": "5433"})
    assert full.sizes == (1000, 100_000) and full.pgport == 5433 and full.rounds == 5


def test_every_gateway_target_reads_through_masking_or_nothing() -> None:
    assert bench.TARGETS["hoopgw-masking"] == {"masking": {}}
    assert bench.TARGETS["hoopgw-bare"] == {}
    assert bench.TARGETS["hoopgw-masking-noprefilter"] == {"masking": {"prefilter": False}}


def test_successive_reads_get_other_rows_while_the_table_has_them() -> None:
    starts = [bench.offset(1000, read, 100_000) for read in range(6)]
    assert starts == [0, 1000, 2000, 3000, 4000, 5000]
    assert {bench.offset(100_000, read, 100_000) for read in range(6)} == {0}


def test_summary_keeps_cpu_per_row_and_the_run_without_prefilter() -> None:
    summary = bench.summarize(
        {
            "direct": {1000: 2.0},
            "hoopgw-masking": {1000: 3.0},
            "hoopgw-masking-noprefilter": {1000: 20.0},
        },
        {"hoopgw-masking": {1000: 1.5}, "hoopgw-masking-noprefilter": {1000: 19.0}},
    )
    row = summary["1000"]
    assert row["noprefilter_ms"] == 20.0 and row["noprefilter_ratio"] == 10.0
    assert row["masking_cpu_us_per_row"] == 1.5 and row["noprefilter_cpu_us_per_row"] == 19.0
    assert "| 1,000 | 2.0 | None | 3.0 | 1.0 | 1.5x | None | 1.5 | 20.0 (10.0x, 19.0) |" in (
        bench.render(summary)
    )


def test_the_sparse_workload_has_seven_text_columns_and_about_five_percent_pii() -> None:
    rows = bench.orders(4000)
    assert {len(row) for row in rows} == {7}
    assert 0.04 <= bench.decoded_share(rows) <= 0.06
    assert bench.decoded_share(bench.people(50)) == 1.0
    assert bench.parse_args([], environ={}).workload == "sparse"
    assert bench.parse_args([], environ={}).output.name == "masking-sparse.json"
    assert bench.parse_args(["--workload", "dense"], environ={}).output.name == "masking.json"
