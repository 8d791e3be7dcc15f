"""Measure what masking adds to reading results: direct, through hoopgw without plugins, and
through hoopgw with ``masking``.

A table of generated people with five text columns that all hold personal data (email, phone,
SSN, card number, and a note embedding an email and a phone) is read with psycopg, 1,000 and
100,000 rows at a time; each read is timed from ``execute`` to the last row fetched. Reads are
interleaved (every target in each round) and the median is reported; the 1,000-row reads of
successive rounds read different rows. Goals: under 5 ms added
for 1,000 rows, under 3x the direct time for 100,000 rows. Run it with ``./dev bench masking``;
see docs/masking.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from common import BenchError, Endpoint
from pgbench_compare import hoopgw_endpoint

TARGETS: dict[str, dict[str, dict[str, Any]]] = {
    "direct": {},
    "hoopgw-bare": {},
    "hoopgw-masking": {"masking": {}},
}
"""Targets and the plugins of the gateway ones (``direct`` has none: no gateway)."""
SIZES = (1000, 100_000)
RESULTS_PATH = Path(__file__).parent / "results" / "masking.json"
QUERY = "SELECT email, phone, ssn, card, note FROM people ORDER BY id LIMIT {} OFFSET {}"
ADDED_GOAL_MS = 5.0
RATIO_GOAL = 3.0


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed reads per target and size")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 10,000 rows at most")
    parser.add_argument("--pghost", default=environ.get("HOOPGW_TEST_PGHOST") or "127.0.0.1")
    parser.add_argument(
        "--pgport", type=int, default=int(environ.get("HOOPGW_TEST_PGPORT") or 5432)
    )
    parser.add_argument("--database", default="hoopgw_bench_masking")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    args.sizes = (1000, 10_000) if args.quick else SIZES
    if args.quick:
        args.rounds = 2
    return args


def prepare_database(args: Any) -> None:
    """Re-create the database with ``max(sizes)`` generated people."""
    from hoopgw_masking.corpus import card, email, phone, ssn

    rng = random.Random(11)
    count = max(args.sizes)
    print(f"==> generating {count} people into {args.database}", flush=True)
    with psycopg.connect(
        host=args.pghost, port=args.pgport, user="postgres", dbname="postgres", autocommit=True
    ) as admin:
        name = sql.Identifier(args.database)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    phones = [phone(rng) for _ in range(min(count, 5000))]
    with psycopg.connect(
        host=args.pghost, port=args.pgport, user="postgres", dbname=args.database
    ) as conn:
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, email text, phone text, ssn text,"
            " card text, note text)"
        )
        with conn.cursor().copy("COPY people FROM STDIN") as copy:
            for i in range(count):
                mail, tel = f"{i}.{email(rng)}", phones[i % len(phones)]
                note = f"Customer asked to be called at {tel} or mailed at {mail} after 5pm."
                copy.write_row((i, mail, tel, ssn(rng), card(rng), note))
        conn.execute("ANALYZE people")


@contextlib.contextmanager
def endpoint(args: Any, target: str) -> Iterator[Endpoint]:
    """Direct, or a private gateway with the target's plugins on a fresh store."""
    if target == "direct":
        yield Endpoint(target=target, host=args.pghost, port=args.pgport, user="postgres")
        return
    with hoopgw_endpoint(
        pghost=args.pghost, pgport=args.pgport, target=target, plugins=TARGETS[target]
    ) as gateway:
        yield gateway


def offset(size: int, read: int, total: int) -> int:
    """Where read number ``read`` of ``size`` rows starts: each read of a size gets other rows
    while the table has them, so that no read is faster for having seen its values before
    (masking remembers recent candidates)."""
    return (read * size) % (total - size + 1)


def timed_read(conn: psycopg.Connection[Any], rows: int, start: int = 0) -> float:
    """Milliseconds to run the query and fetch every row."""
    started = time.perf_counter()
    fetched = conn.execute(QUERY.format(rows, start)).fetchall()
    elapsed = (time.perf_counter() - started) * 1000
    if len(fetched) != rows:
        raise BenchError(f"expected {rows} rows, got {len(fetched)}")
    return elapsed


def summarize(medians: Mapping[str, Mapping[int, float]]) -> dict[str, Any]:
    """Per size: the medians, what masking adds over direct, the ratio, and the goals."""
    summary: dict[str, Any] = {}
    for size in sorted(medians["direct"]):
        direct = medians["direct"][size]
        masked = medians["hoopgw-masking"][size]
        bare = medians.get("hoopgw-bare", {}).get(size)
        summary[str(size)] = {
            "direct_ms": round(direct, 2),
            "bare_ms": None if bare is None else round(bare, 2),
            "masking_ms": round(masked, 2),
            "added_ms": round(masked - direct, 2),
            "masking_only_ms": None if bare is None else round(masked - bare, 2),
            "ratio": round(masked / direct, 2),
        }
    return summary


def goals(summary: Mapping[str, Any]) -> dict[str, bool]:
    """Whether each goal is met (only for the sizes measured)."""
    met = {}
    if "1000" in summary:
        met["1000_rows_added_under_5ms"] = summary["1000"]["added_ms"] < ADDED_GOAL_MS
    if "100000" in summary:
        met["100000_rows_under_3x_direct"] = summary["100000"]["ratio"] < RATIO_GOAL
    return met


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON results."""
    args = parse_args(argv)
    prepare_database(args)
    times: dict[str, dict[int, list[float]]] = {t: {s: [] for s in args.sizes} for t in TARGETS}
    with contextlib.ExitStack() as stack:
        conns = {}
        for target in TARGETS:
            ep = stack.enter_context(endpoint(args, target))
            conns[target] = stack.enter_context(
                psycopg.connect(
                    host=ep.host,
                    port=ep.port,
                    user=ep.user,
                    password=ep.password or "",
                    dbname=args.database,
                    sslmode="disable",
                    autocommit=True,
                )
            )
        total = max(args.sizes)
        for size in args.sizes:
            for conn in conns.values():
                timed_read(conn, size, offset(size, args.rounds, total))  # warm caches, plans
            for round_ in range(args.rounds):
                for target, conn in conns.items():
                    times[target][size].append(timed_read(conn, size, offset(size, round_, total)))
                print(f"==> {size} rows, round {round_ + 1}/{args.rounds}", flush=True)
    medians = {t: {s: statistics.median(v) for s, v in by.items()} for t, by in times.items()}
    summary = summarize(medians)
    met = goals(summary)
    print("\n| rows | direct ms | hoopgw bare ms | hoopgw+masking ms | added ms | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, row in summary.items():
        print(
            f"| {int(size):,} | {row['direct_ms']} | {row['bare_ms']} | {row['masking_ms']}"
            f" | {row['added_ms']} | {row['ratio']}x |"
        )
    print(f"\ngoals: {met}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "started_at": datetime.now(UTC).isoformat(),
                "settings": {"rounds": args.rounds, "sizes": list(args.sizes)},
                "environment": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
                "runs": {t: {str(s): v for s, v in by.items()} for t, by in times.items()},
                "summary": summary,
                "goals": met,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
