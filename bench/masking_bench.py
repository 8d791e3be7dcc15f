"""Measure what masking adds to reading results: direct, through hoopgw without plugins, and
through hoopgw with ``masking`` (with its Hyperscan prefilter, and without it).

Two workloads. ``sparse`` (the default; issue 16's goal): a table of orders with seven text
columns of which about 5 % of the rows hold one piece of personal data (an email, a phone, a
card number, an SSN or an IBAN in a note). ``dense``: generated people with five text columns
that all hold personal data (email, phone, SSN, card number, and a note embedding an email and
a phone). Rows are read with psycopg, 1,000 and 100,000 at a time; each read is timed from
``execute`` to the last row fetched, and the gateway's CPU time per row is taken from
``/proc``. Reads are interleaved (every target in each round) and the median is reported; the
1,000-row reads of successive rounds read different rows. Goals: under 5 ms added for 1,000
rows, under 3x the direct time for 100,000 rows. Run it with ``./dev bench masking``; see
docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
from common import BenchError, Endpoint, cpu_seconds
from pgbench_compare import hoopgw_endpoint

TARGETS: dict[str, dict[str, dict[str, Any]]] = {
    "direct": {},
    "hoopgw-bare": {},
    "hoopgw-masking": {"masking": {}},
    "hoopgw-masking-noprefilter": {"masking": {"prefilter": False}},
}
"""Targets and the plugins of the gateway ones (``direct`` has none: no gateway)."""
SIZES = (1000, 100_000)
RESULTS_DIR = Path(__file__).parent / "results"
QUERIES = {
    "sparse": "SELECT customer, city, status, product, reference, shipping, note FROM orders"
    " ORDER BY id LIMIT {} OFFSET {}",
    "dense": "SELECT email, phone, ssn, card, note FROM people ORDER BY id LIMIT {} OFFSET {}",
}
"""The read of each workload."""
PII_SHARE = 0.05
"""The share of the sparse workload's rows that hold personal data."""
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
    parser.add_argument("--workload", choices=sorted(QUERIES), default="sparse")
    parser.add_argument("--database", default="hoopgw_bench_masking")
    parser.add_argument("--output", type=Path, help="JSON results (default: results/...)")
    args = parser.parse_args(argv)
    if args.output is None:
        name = "masking.json" if args.workload == "dense" else f"masking-{args.workload}.json"
        args.output = RESULTS_DIR / name
    args.sizes = (1000, 10_000) if args.quick else SIZES
    if args.quick:
        args.rounds = 2
    return args


def prepare_database(args: Any) -> None:
    """Re-create the database with ``max(sizes)`` rows of the workload's table."""
    count = max(args.sizes)
    print(f"==> generating {count} rows ({args.workload}) into {args.database}", flush=True)
    with psycopg.connect(
        host=args.pghost, port=args.pgport, user="postgres", dbname="postgres", autocommit=True
    ) as admin:
        name = sql.Identifier(args.database)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with psycopg.connect(
        host=args.pghost, port=args.pgport, user="postgres", dbname=args.database
    ) as conn:
        if args.workload == "dense":
            conn.execute(
                "CREATE TABLE people (id int PRIMARY KEY, email text, phone text, ssn text,"
                " card text, note text)"
            )
            table, rows = "people", people(count)
        else:
            conn.execute(
                "CREATE TABLE orders (id int PRIMARY KEY, customer text, city text, status text,"
                " product text, reference text, shipping text, note text)"
            )
            table, rows = "orders", orders(count)
        with conn.cursor().copy(
            sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))
        ) as copy:
            for i, row in enumerate(rows):
                copy.write_row((i, *row))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def people(count: int) -> list[tuple[str, ...]]:
    """The dense workload: every value is personal data."""
    from hoopgw_masking.corpus import card, email, phone, ssn

    rng = random.Random(11)
    phones = [phone(rng) for _ in range(min(count, 5000))]
    out: list[tuple[str, ...]] = []
    for i in range(count):
        mail, tel = f"{i}.{email(rng)}", phones[i % len(phones)]
        note = f"Customer asked to be called at {tel} or mailed at {mail} after 5pm."
        out.append((mail, tel, ssn(rng), card(rng), note))
    return out


_NAMES = ("Ann Lee", "Bo Chen", "Carla Ruiz", "Dev Patel", "Eve Martin", "Femi Ade", "Gus Berg")
_CITIES = ("Lyon", "Porto", "Leeds", "Austin", "Osaka", "Turin", "Graz", "Cork", "Tartu")
_STATUSES = ("pending", "shipped", "delivered", "returned", "cancelled")
_PRODUCTS = ("desk lamp", "oak shelf", "USB-C cable", "tea kettle", "wool scarf", "mug set")
_NOTES = ("", "left at the door", "gift wrap, no invoice", "customer called twice", "fragile")


def orders(count: int) -> list[tuple[str, ...]]:
    """The sparse workload: seven text columns, about :data:`PII_SHARE` of the rows with one
    piece of personal data in the note; the others hold short numbers (quantities, house
    numbers, six-digit references) as such tables do."""
    from hoopgw_masking.corpus import card, email, iban, phone, ssn

    rng = random.Random(12)
    kinds = (
        lambda: f"call {phone(rng)} before delivery",
        lambda: f"send the invoice to {email(rng)}",
        lambda: f"paid with {card(rng)}",
        lambda: f"tax id {ssn(rng)}",
        lambda: f"refund to {iban(rng)}",
    )
    out: list[tuple[str, ...]] = []
    for _ in range(count):
        note = rng.choice(_NOTES)
        if rng.random() < PII_SHARE:
            note = rng.choice(kinds)()
        out.append(
            (
                rng.choice(_NAMES),
                rng.choice(_CITIES),
                rng.choice(_STATUSES),
                f"{rng.choice(_PRODUCTS)} x{rng.randint(1, 9)}",
                f"ORD-{rng.randint(0, 999999):06d}",
                f"{rng.randint(1, 250)} {rng.choice(_CITIES)} Road, box {rng.randint(1, 99)}",
                note,
            )
        )
    return out


def decoded_share(rows: Sequence[Sequence[str]], batch: int = 500) -> float:
    """The share of ``rows`` the masking prefilter (default entities) has the gateway decode,
    in batches of ``batch`` rows (about what one read of 64 KiB from the target holds)."""
    from hoopgw_masking.detectors import BUILTIN_ENTITIES
    from hoopgw_masking.prefilter import Prefilter
    from hoopgw_postgres.messages import encode_data_row

    prefilter = Prefilter(BUILTIN_ENTITIES)
    decoded = 0
    for first in range(0, len(rows), batch):
        wires = [encode_data_row([v.encode() for v in row]) for row in rows[first : first + batch]]
        starts = list(itertools.accumulate((len(w) for w in wires[:-1]), initial=0))
        found = prefilter.rows(b"".join(wires), starts)
        decoded += len(wires) if found is None else len(found)
    return decoded / max(1, len(rows))


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


def timed_read(
    conn: psycopg.Connection[Any], query: str, rows: int, start: int = 0, pid: int | None = None
) -> tuple[float, float | None]:
    """Milliseconds to run the query and fetch every row, and the CPU microseconds per row
    process ``pid`` (the gateway) spent meanwhile."""
    cpu = cpu_seconds(pid) if pid is not None else None
    started = time.perf_counter()
    fetched = conn.execute(query.format(rows, start)).fetchall()
    elapsed = (time.perf_counter() - started) * 1000
    if len(fetched) != rows:
        raise BenchError(f"expected {rows} rows, got {len(fetched)}")
    after = cpu_seconds(pid) if pid is not None else None
    per_row = None if cpu is None or after is None else (after - cpu) * 1e6 / rows
    return elapsed, per_row


def summarize(
    medians: Mapping[str, Mapping[int, float]],
    cpu: Mapping[str, Mapping[int, float]] | None = None,
) -> dict[str, Any]:
    """Per size: the medians, what masking adds over direct, the ratio, the gateway's CPU time
    per row, and the same for masking without its prefilter when it was measured."""
    summary: dict[str, Any] = {}
    cpu = cpu or {}
    for size in sorted(medians["direct"]):
        direct = medians["direct"][size]
        masked = medians["hoopgw-masking"][size]
        bare = medians.get("hoopgw-bare", {}).get(size)
        row: dict[str, Any] = {
            "direct_ms": round(direct, 2),
            "bare_ms": None if bare is None else round(bare, 2),
            "masking_ms": round(masked, 2),
            "added_ms": round(masked - direct, 2),
            "masking_only_ms": None if bare is None else round(masked - bare, 2),
            "ratio": round(masked / direct, 2),
        }
        full = medians.get("hoopgw-masking-noprefilter", {}).get(size)
        if full is not None:
            row["noprefilter_ms"] = round(full, 2)
            row["noprefilter_ratio"] = round(full / direct, 2)
        for target, key in (
            ("hoopgw-bare", "bare_cpu_us_per_row"),
            ("hoopgw-masking", "masking_cpu_us_per_row"),
            ("hoopgw-masking-noprefilter", "noprefilter_cpu_us_per_row"),
        ):
            if size in cpu.get(target, {}):
                row[key] = round(cpu[target][size], 2)
        summary[str(size)] = row
    return summary


def goals(summary: Mapping[str, Any]) -> dict[str, bool]:
    """Whether each goal is met (only for the sizes measured)."""
    met = {}
    if "1000" in summary:
        met["1000_rows_added_under_5ms"] = summary["1000"]["added_ms"] < ADDED_GOAL_MS
    if "100000" in summary:
        met["100000_rows_under_3x_direct"] = summary["100000"]["ratio"] < RATIO_GOAL
    return met


def render(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| rows | direct ms | hoopgw bare ms | + masking ms | added ms | x direct"
        " | CPU µs/row bare | CPU µs/row masking | no prefilter ms (x direct, CPU µs/row) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, row in summary.items():
        full = (
            f"{row['noprefilter_ms']} ({row['noprefilter_ratio']}x,"
            f" {row.get('noprefilter_cpu_us_per_row')})"
            if "noprefilter_ms" in row
            else "-"
        )
        lines.append(
            f"| {int(size):,} | {row['direct_ms']} | {row['bare_ms']} | {row['masking_ms']}"
            f" | {row['added_ms']} | {row['ratio']}x | {row.get('bare_cpu_us_per_row')}"
            f" | {row.get('masking_cpu_us_per_row')} | {full} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON results."""
    args = parse_args(argv)
    prepare_database(args)
    query = QUERIES[args.workload]
    times: dict[str, dict[int, list[float]]] = {t: {s: [] for s in args.sizes} for t in TARGETS}
    cpu: dict[str, dict[int, list[float]]] = {t: {s: [] for s in args.sizes} for t in TARGETS}
    with contextlib.ExitStack() as stack:
        conns = {}
        pids: dict[str, int | None] = {}
        for target in TARGETS:
            ep = stack.enter_context(endpoint(args, target))
            pids[target] = ep.processes.get("reactor")
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
                timed_read(conn, query, size, offset(size, args.rounds, total))  # warm up
            for round_ in range(args.rounds):
                for target, conn in conns.items():
                    start = offset(size, round_, total)
                    elapsed, per_row = timed_read(conn, query, size, start, pids[target])
                    times[target][size].append(elapsed)
                    if per_row is not None:
                        cpu[target][size].append(per_row)
                print(f"==> {size} rows, round {round_ + 1}/{args.rounds}", flush=True)
    medians = {t: {s: statistics.median(v) for s, v in by.items()} for t, by in times.items()}
    cpu_medians = {
        t: {s: statistics.median(v) for s, v in by.items() if v} for t, by in cpu.items()
    }
    summary = summarize(medians, cpu_medians)
    met = goals(summary)
    share = decoded_share(orders(total) if args.workload == "sparse" else people(total))
    print(f"\nworkload {args.workload}: the prefilter has {share:.1%} of the rows decoded\n")
    print(render(summary))
    print(f"\ngoals: {met}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "started_at": datetime.now(UTC).isoformat(),
                "settings": {
                    "rounds": args.rounds,
                    "sizes": list(args.sizes),
                    "workload": args.workload,
                },
                "environment": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
                "decoded_share": round(share, 4),
                "runs": {t: {str(s): v for s, v in by.items()} for t, by in times.items()},
                "cpu_us_per_row": {t: {str(s): v for s, v in by.items()} for t, by in cpu.items()},
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
