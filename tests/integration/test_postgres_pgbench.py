"""pgbench through the real gateway: initialisation (COPY, DDL) and a short extended-protocol run
with several clients."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def pgbench(login: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pgbench", *args],
        env=login.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pgbench_initialise_and_run(recorded_gateway: Any) -> None:
    init = pgbench(recorded_gateway, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.stderr
    assert "done in" in init.stderr

    run = pgbench(recorded_gateway, "-T", "3", "-c", "4", "-j", "2", "-M", "extended")
    assert run.returncode == 0, run.stderr
    assert "query mode: extended" in run.stdout
    processed = re.search(r"number of transactions actually processed: (\d+)", run.stdout)
    # How many is the benchmark's business (bench/); here: some ran, none failed.
    assert processed is not None and int(processed.group(1)) > 0, run.stdout
    assert "number of failed transactions: 0 " in run.stdout
    # The transactions reached the target: pgbench_history holds one row per transaction.
    count = subprocess.run(
        ["psql", "-X", "-At", "-c", "SELECT count(*) FROM pgbench_history"],
        env=recorded_gateway.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert int(count.stdout) == int(processed.group(1))
