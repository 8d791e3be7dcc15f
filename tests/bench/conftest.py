"""Loads the benchmark scripts by path (``bench/`` is no package) under the names the tests
take them by from ``sys.modules``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"
SCRIPTS = {
    "hoopgw_bench_pgbench_compare": "pgbench_compare.py",
    "hoopgw_bench_masking": "masking_bench.py",
    "hoopgw_bench_cli_startup": "cli_startup.py",
    "hoopgw_bench_relay_cost": "relay_cost.py",
    "hoopgw_bench_store_calls": "store_calls.py",
    "hoopgw_bench_guardrails_cost": "guardrails_cost.py",
}

for _name, _file_name in SCRIPTS.items():
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, BENCH / _file_name)
        assert _spec is not None and _spec.loader is not None
        sys.modules[_name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[_name])
