"""bench/store_calls.py runs on a SQLite store and reports both ways (a smoke test: a file in
tmp_path, no figures checked)."""

from __future__ import annotations

import sys
from typing import Any

bench: Any = sys.modules["hoopgw_bench_store_calls"]  # loaded by tests/bench/conftest.py


def test_it_reports_inline_and_threaded_figures(capsys: Any) -> None:
    assert bench.main(["--count", "100"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("sqlite: key read inline ") and " threaded " in line
