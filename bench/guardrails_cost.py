"""What guardrails costs per PostgreSQL statement, in process CPU time, without sockets.

One ``guardrails`` plugin on a ``postgres`` connection, built as the gateway builds it, judges
statements through its ``client_command`` hook, as the chain calls it for each Query. Two
workloads, each under the presets ``agent-readonly`` and ``agent-safe-write``:

- **repeated shape**: pgbench ``-S`` as its simple protocol sends it, ``SELECT abalance FROM
  pgbench_accounts WHERE aid = N;`` with a new random ``N`` each time (the analysis cache's
  case: a new text of a shape it has seen);
- **new text**: the statements of pgbench's built-in scripts (``select-only`` and
  ``tpcb-like``), each time with a column alias or table alias never seen before, so the
  analysis cache cannot answer (a full parse and analysis).

Each figure is the best of ``--rounds`` runs of ``--count`` statements, after a warm-up::

    .venv/bin/python bench/guardrails_cost.py
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/guardrails_cost.py --workload shape --count 3000

The instruction count per statement under callgrind is the difference of two runs with
different ``--count`` divided by the difference of the counts.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hoopgw_guardrails import GuardrailsPlugin
from twisted.internet import task
from twisted.logger import Logger

from hoopgw.plugin import PluginContext, validate_options
from hoopgw.session import Command, ConnectionInfo, Identity, SessionInfo

PRESETS = ("agent-readonly", "agent-safe-write")
WORKLOADS = ("shape", "new")
WARM_UP = 200
ACCOUNTS = 1_000_000  # pgbench -s 10
CONNECTION = ConnectionInfo(name="pg", protocol="postgres", target="127.0.0.1:5432")

_TPCB = (
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
    "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
    " VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
)


def repeated_shape(rng: random.Random) -> Iterator[str]:
    """pgbench ``-S`` statements, each with a new random account id."""
    while True:
        yield f"SELECT abalance FROM pgbench_accounts WHERE aid = {rng.randint(1, ACCOUNTS)};"


def new_texts(rng: random.Random) -> Iterator[str]:
    """pgbench's built-in statements, each with an identifier never used before."""
    serial = 0
    while True:
        for template in _TPCB:
            serial += 1
            text = template.format(
                aid=rng.randint(1, ACCOUNTS),
                tid=rng.randint(1, 100),
                bid=rng.randint(1, 10),
                delta=rng.randint(-5000, 5000),
            )
            if text.startswith("SELECT"):
                text = text.replace("abalance FROM", f"abalance AS balance_{serial} FROM")
            elif text.startswith("UPDATE"):
                table = text.split()[1]
                text = text.replace(f"{table} SET", f"{table} AS t{serial} SET")
            else:
                text = text.replace("pgbench_history (", f"pgbench_history AS h{serial} (")
            yield text


GENERATORS: dict[str, Callable[[random.Random], Iterator[str]]] = {
    "shape": repeated_shape,
    "new": new_texts,
}


def make_plugin(preset: str) -> GuardrailsPlugin:
    """A guardrails plugin on a ``postgres`` connection with ``preset``, as the gateway makes
    it (validated options, its own reactor stand-in)."""
    options = validate_options(
        "guardrails", GuardrailsPlugin.options, {"preset": preset}, connection="pg"
    )
    context = PluginContext(
        connection=CONNECTION,
        options=options,
        audit=None,
        log=Logger(),
        reactor=task.Clock(),
    )
    return GuardrailsPlugin(context)


def run(workload: str, preset: str, count: int, *, seed: int = 16) -> float:
    """Judge ``count`` statements of ``workload`` after a warm-up; the CPU seconds they took."""
    plugin = make_plugin(preset)
    session = SessionInfo(
        id="bench",
        connection=CONNECTION,
        identity=Identity(name="bench-agent", groups=frozenset({"bench"})),
        client_address="127.0.0.1:50000",
        client_tls=False,
        upstream_tls=False,
        started_at=0.0,
    )
    texts = GENERATORS[workload](random.Random(seed))
    commands = [
        Command(session_id=session.id, seq=seq, text=next(texts), kind="query")
        for seq in range(WARM_UP + count)
    ]
    judge: Any = plugin.client_command
    for command in commands[:WARM_UP]:
        judge(session, command)
    start = time.process_time()
    for command in commands[WARM_UP:]:
        judge(session, command)
    return time.process_time() - start


def main(argv: Sequence[str] | None = None) -> int:
    """Print the CPU microseconds per statement of each workload and preset (best of
    ``--rounds``), or run one ``--workload`` ``--count`` times and print nothing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workload", choices=WORKLOADS, help="run only this workload")
    parser.add_argument("--preset", choices=PRESETS, help="run only this preset")
    parser.add_argument("--count", type=int, default=5000, help="statements per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs; the best is reported")
    parser.add_argument("--once", action="store_true", help="one run, print nothing (callgrind)")
    args: Any = parser.parse_args(argv)
    workloads = [args.workload] if args.workload else list(WORKLOADS)
    presets = [args.preset] if args.preset else list(PRESETS)
    if args.once:
        for workload in workloads:
            for preset in presets:
                run(workload, preset, args.count)
        return 0
    print("| workload | preset | CPU µs per statement |")
    print("|---|---|---:|")
    for workload in workloads:
        for preset in presets:
            best = min(run(workload, preset, args.count) for _ in range(args.rounds))
            label = "repeated shape" if workload == "shape" else "new text"
            print(f"| {label} | {preset} | {best / args.count * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
