"""Unit tests for the pure parts of bench/cli_startup.py (no subprocess)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

bench: Any = sys.modules["hoopgw_bench_cli_startup"]  # loaded by tests/bench/conftest.py


def test_percentile_is_the_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert bench.percentile(values, 0.9) == 9.0
    assert bench.percentile(values, 0.5) == 5.0
    assert bench.percentile([3.0], 0.9) == 3.0


def test_summary_compares_each_command_with_the_bare_interpreter() -> None:
    summary = bench.summarize(
        {
            "python": {"wall": [0.02, 0.02, 0.03], "cpu": [0.01, 0.01, 0.01]},
            "version": {"wall": [0.08, 0.1, 0.3], "cpu": [0.04, 0.05, 0.05]},
        }
    )
    assert summary["python"]["wall_ratio"] == 1.0
    assert summary["version"] == {
        "runs": 3,
        "wall_median_ms": 100.0,
        "wall_p90_ms": 300.0,
        "wall_ratio": 5.0,
        "wall_over_python_ms": 80.0,
        "cpu_median_ms": 50.0,
        "cpu_p90_ms": 50.0,
        "cpu_ratio": 5.0,
        "cpu_over_python_ms": 40.0,
    }


def test_goals_are_half_a_second_of_wall_time() -> None:
    summary = {"version": {"wall_median_ms": 499.0}, "keys-list": {"wall_median_ms": 500.0}}
    assert bench.goals(summary) == {"version_under_0.5s": True, "keys-list_under_0.5s": False}


def test_commands_run_with_bytecode_caching() -> None:
    env = bench.child_environment({"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}
    lines = bench.commands(["hoopgw"], Path("/c.toml"))
    assert list(lines) == ["python", "version", "help", "keys-list"]
    assert lines["keys-list"] == ["hoopgw", "keys", "list", "-c", "/c.toml"]


def test_defaults_and_quick_mode() -> None:
    assert bench.parse_args([]).runs == 20
    assert bench.parse_args(["--quick"]).runs == 5
    assert bench.parse_args(["--runs", "3"]).runs == 3
