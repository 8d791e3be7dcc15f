"""Measure how long ``hoopgw`` commands take to start and finish, against the interpreter's own
start.

Each round runs, one after the other, ``python -c pass`` (the floor no command can go below),
``hoopgw --version``, ``hoopgw --help`` and ``hoopgw keys list -c CONFIG`` (a config with one
PostgreSQL connection and ``recording``, a SQLite store holding a few keys made with
``hoopgw keys create``). Rounds interleave the commands so that a busy machine slows them all
alike. For each command it reports the median and 90th percentile of the wall time and of the
CPU time (user + system of the child process, which load on other cores does not inflate), and
the median as a multiple of, and in milliseconds over, the interpreter's. The commands run with
bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed from their environment, one warm-up
run of each first), as after ``pip install``, which compiles every module. Goal (issue 18):
``--version`` and ``keys list`` under 0.5 s. Run it with ``./dev bench cli``; see
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GOAL_SECONDS = 0.5
"""Issue 18: ``hoopgw --version`` and ``hoopgw keys list`` finish within this (wall, median)."""
GOAL_COMMANDS = ("version", "keys-list")
KEYS = 3
"""API keys in the store that ``keys list`` lists."""
CONFIG = """\
[gateway]
store = "sqlite:///./hoopgw.db"

[[connections]]
name = "bench"
protocol = "postgres"
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["bench"]
plugins = ["recording"]

[connections.credential]
user = "postgres"
"""
"""A small realistic config: loading it validates a listener, a protocol and a plugin."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line: ``--runs``, ``--quick``, ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=None, help="rounds; each runs every command once (default 20)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 rounds")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).parent / "results" / "cli_startup.json",
        help="JSON results (default bench/results/cli_startup.json)",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 20
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def hoopgw_command() -> list[str]:
    """The ``hoopgw`` console script of this environment (what an operator runs), else
    ``python -m hoopgw``."""
    script = Path(sys.executable).parent / "hoopgw"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hoopgw"]


def commands(hoopgw: Sequence[str], config: Path) -> dict[str, list[str]]:
    """The measured command lines by name, the interpreter's bare start (``python``) first."""
    return {
        "python": [sys.executable, "-c", "pass"],
        "version": [*hoopgw, "--version"],
        "help": [*hoopgw, "--help"],
        "keys-list": [*hoopgw, "keys", "list", "-c", str(config)],
    }


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without ``PYTHONDONTWRITEBYTECODE``: an installed hoopgw starts from cached
    bytecode, and a command that compiles its modules each time measures the compiler."""
    return {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: Sequence[str]) -> tuple[float, float]:
    """Run ``argv`` to its end; its wall time and its CPU time (user + system), in seconds.

    :raises RuntimeError: the command failed (its standard error says why).
    """
    env = child_environment(os.environ)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` by the nearest-rank method (p90: 0.9)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(samples: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, Any]]:
    """Medians and p90 per command and measure, in milliseconds, with the median's ratio to and
    excess over the ``python`` baseline's.

    :param samples: seconds by command, then by measure (``wall``, ``cpu``).
    """
    base = {measure: statistics.median(samples["python"][measure]) for measure in ("wall", "cpu")}
    summary: dict[str, dict[str, Any]] = {}
    for name, measures in samples.items():
        row: dict[str, Any] = {"runs": len(measures["wall"])}
        for measure in ("wall", "cpu"):
            median = statistics.median(measures[measure])
            row[f"{measure}_median_ms"] = round(median * 1000, 1)
            row[f"{measure}_p90_ms"] = round(percentile(measures[measure], 0.9) * 1000, 1)
            row[f"{measure}_ratio"] = round(median / base[measure], 2) if base[measure] else None
            row[f"{measure}_over_python_ms"] = round((median - base[measure]) * 1000, 1)
        summary[name] = row
    return summary


def goals(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Whether each goal command's median wall time is under :data:`GOAL_SECONDS`."""
    return {
        f"{name}_under_{GOAL_SECONDS:g}s": summary[name]["wall_median_ms"] < GOAL_SECONDS * 1000
        for name in GOAL_COMMANDS
    }


def format_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary as a text table, one row per command."""
    header = (
        f"{'command':<10} {'wall med':>9} {'wall p90':>9} {'x python':>8} {'+ms':>7}"
        f" {'cpu med':>8} {'cpu p90':>8} {'x python':>8} {'+ms':>7}"
    )
    lines = [header]
    for name, row in summary.items():
        lines.append(
            f"{name:<10} {row['wall_median_ms']:>9.1f} {row['wall_p90_ms']:>9.1f}"
            f" {row['wall_ratio'] or 0:>8.2f} {row['wall_over_python_ms']:>7.1f}"
            f" {row['cpu_median_ms']:>8.1f} {row['cpu_p90_ms']:>8.1f}"
            f" {row['cpu_ratio'] or 0:>8.2f} {row['cpu_over_python_ms']:>7.1f}"
        )
    return "\n".join(lines)


def prepare(folder: Path, hoopgw: Sequence[str]) -> Path:
    """Write the config into ``folder`` and create :data:`KEYS` keys in its store; the config's
    path."""
    config = folder / "hoopgw.toml"
    config.write_text(CONFIG, encoding="utf-8")
    for index in range(KEYS):
        subprocess.run(
            [
                *hoopgw,
                "keys",
                "create",
                "-c",
                str(config),
                "--identity",
                f"b{index}",
                "--group",
                "b",
            ],
            capture_output=True,
            check=True,
        )
    return config


def measure(lines: Mapping[str, Sequence[str]], runs: int) -> dict[str, dict[str, list[float]]]:
    """Run every command once per round for ``runs`` rounds; seconds by command and measure."""
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in lines}
    for _ in range(runs):
        for name, argv in lines.items():
            wall, cpu = timed(argv)
            samples[name]["wall"].append(wall)
            samples[name]["cpu"].append(cpu)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON results."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    hoopgw = hoopgw_command()
    with tempfile.TemporaryDirectory(prefix="hoopgw-cli-bench-") as folder:
        config = prepare(Path(folder), hoopgw)
        lines = commands(hoopgw, config)
        for argv in lines.values():  # warm the page cache, write the bytecode caches
            timed(argv)
        samples = measure(lines, args.runs)
    summary = summarize(samples)
    print(format_table(summary))
    met = goals(summary)
    for goal, ok in met.items():
        print(f"{goal}: {'met' if ok else 'NOT met'}")
    result = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()),
        "runs": args.runs,
        "summary": summary,
        "goals": met,
        "samples": samples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
