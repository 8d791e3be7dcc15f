"""Compare pgbench throughput: PostgreSQL directly, through pgbouncer, and through hoopgw.

Initialises a dedicated database once (``pgbench -i``), then runs interleaved rounds -- every
workload against every target, round after round -- so that drift of the machine affects all
targets alike. Reports the median TPS per target and workload, the ratios hoopgw/direct and
hoopgw/pgbouncer, and writes every run to ``bench/results/latest.json``.

pgbouncer (session pooling) and hoopgw (plugin ``recording``) are started privately on free
loopback ports and stopped at the end. Run it with ``./dev bench [--quick]``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    PLUGINS,
    BenchError,
    Endpoint,
    cpu_seconds,
    free_port,
    program,
    run_tool,
    running_gateway,
    running_server,
)

GATEWAY_PLUGINS: dict[str, dict[str, dict[str, Any]]] = {
    "hoopgw": PLUGINS["hoopgw"],
    "hoopgw-os": PLUGINS["hoopgw"],
    **{target: plugins for target, plugins in PLUGINS.items() if target != "hoopgw"},
    "hoopgw-full": {**PLUGINS["hoopgw-guardrails"], "masking": {}},
}
"""The gateway targets of this comparison and their plugins: those of :data:`PLUGINS`,
``hoopgw-os``, recording like ``hoopgw`` but with ``audit_durability = "os"``, and
``hoopgw-full``, the full chain: ``recording`` (``os``), ``guardrails`` (``agent-readonly``) and
``masking`` (its defaults)."""
GATEWAY_OPTIONS: dict[str, dict[str, Any]] = {
    "hoopgw-os": {"audit_durability": "os"},
    "hoopgw-full": {"audit_durability": "os"},
}
"""``[gateway]`` options of the gateway targets that do not run with the defaults (``hoopgw``
records with the default ``audit_durability = "fsync"``)."""
WORKER_TARGETS = {"hoopgw-bare-w2": "hoopgw-bare", "hoopgw-os-w2": "hoopgw-os"}
"""Targets that run their base target's gateway with ``[gateway] workers = 2``; ``--workers``
adds them and their bases, and the table shows each one's TPS over its base's."""
GATEWAY_PLUGINS.update({target: GATEWAY_PLUGINS[base] for target, base in WORKER_TARGETS.items()})
GATEWAY_OPTIONS.update(
    {
        target: {**GATEWAY_OPTIONS.get(base, {}), "workers": 2}
        for target, base in WORKER_TARGETS.items()
    }
)
TARGETS = ("direct", "pgbouncer", *GATEWAY_PLUGINS)
"""``direct``, ``pgbouncer``, and the gateway targets of :data:`GATEWAY_PLUGINS`."""
DEFAULT_TARGETS = tuple(t for t in TARGETS if t not in WORKER_TARGETS)
"""What runs without ``--targets``: every target but the :data:`WORKER_TARGETS`."""
FDATASYNC_SAMPLES = 200
"""``fdatasync`` calls timed per round on the store's disk (:func:`measure_fdatasync`)."""
FDATASYNC_LINE = b"x" * 300 + b"\n"
"""What each timed ``fdatasync`` follows: an appended line about the size of an audit entry."""
RESULTS_PATH = Path(__file__).parent / "results" / "latest.json"
BENCH_IDENTITY = "bench-agent"
BENCH_GROUP = "bench"
_TPS_LINE = re.compile(r"^tps = ([0-9]+(?:\.[0-9]+)?) \(without initial connection time\)$", re.M)
_TRANSACTIONS_LINE = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.M)


@attrs.frozen(kw_only=True)
class Workload:
    """One pgbench invocation shape."""

    name: str
    """Short name used in the table and the JSON results."""
    pgbench_args: tuple[str, ...]
    """pgbench options besides connection, duration and database."""

    @property
    def clients(self) -> int:
        """How many clients pgbench runs (its ``-c``)."""
        return int(self.pgbench_args[self.pgbench_args.index("-c") + 1])


WORKLOADS = (
    Workload(name="select-c1", pgbench_args=("-S", "-c", "1", "-j", "1")),
    Workload(name="select-c8", pgbench_args=("-S", "-c", "8", "-j", "2")),
    Workload(
        name="select-extended-c8", pgbench_args=("-S", "-M", "extended", "-c", "8", "-j", "2")
    ),
)


@attrs.frozen(kw_only=True)
class RunResult:
    """The throughput of one pgbench run."""

    round: int
    """1-based round number."""
    workload: str
    """Workload name."""
    target: str
    """Target name."""
    tps: float
    """Transactions per second without initial connection time."""
    cpu_us_per_transaction: dict[str, float] = attrs.field(factory=dict)
    """CPU microseconds per transaction of each of the target's processes, by role (hoopgw:
    ``reactor`` and ``writer``); empty for targets not measured."""


@attrs.frozen(kw_only=True)
class Settings:
    """What to run, from the command line."""

    targets: tuple[str, ...]
    """Targets in the order each round visits them."""
    duration: int
    """Seconds per pgbench run."""
    rounds: int
    """How many times every (workload, target) pair runs."""
    scale: int
    """pgbench scale factor for ``pgbench -i``."""
    pghost: str
    """PostgreSQL host (the direct target)."""
    pgport: int
    """PostgreSQL port (the direct target)."""
    database: str
    """Dedicated benchmark database; dropped and re-created."""
    output: Path
    """Where the JSON results go."""
    quick: bool
    """Short smoke run."""


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Parse the command line; the server defaults come from ``HOOPGW_TEST_PGHOST/PGPORT``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, one round")
    parser.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="comma-separated subset"
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="also run the gateway with [gateway] workers = 2 (hoopgw-bare-w2, hoopgw-os-w2)"
        " beside its one-process base",
    )
    parser.add_argument("--duration", type=int, help="seconds per run (default 30, quick 3)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    parser.add_argument("--pghost", default=environ.get("HOOPGW_TEST_PGHOST") or "127.0.0.1")
    parser.add_argument(
        "--pgport", type=int, default=int(environ.get("HOOPGW_TEST_PGPORT") or "5432")
    )
    parser.add_argument("--database", default="hoopgw_bench")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)

    targets = tuple(name.strip() for name in args.targets.split(",") if name.strip())
    if args.workers:
        targets += tuple(t for pair in WORKER_TARGETS.items() for t in reversed(pair))
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        parser.error(f"--targets takes a subset of {','.join(TARGETS)}, got {args.targets!r}")
    duration = args.duration if args.duration is not None else (3 if args.quick else 30)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if duration < 1 or rounds < 1 or args.scale < 1:
        parser.error("--duration, --rounds and --scale must be positive")
    return Settings(
        targets=tuple(dict.fromkeys(targets)),
        duration=duration,
        rounds=rounds,
        scale=args.scale,
        pghost=args.pghost,
        pgport=args.pgport,
        database=args.database,
        output=args.output,
        quick=args.quick,
    )


def run_plan(
    rounds: int, workloads: Sequence[Workload], targets: Sequence[str]
) -> list[tuple[int, Workload, str]]:
    """Return the runs in order: per round, per workload, every target in turn."""
    return [
        (round_number, workload, target)
        for round_number in range(1, rounds + 1)
        for workload in workloads
        for target in targets
    ]


def parse_tps(output: str) -> float:
    """Return the TPS that pgbench reports without initial connection time.

    :raises BenchError: the line is missing.
    """
    match = _TPS_LINE.search(output)
    if match is None:
        raise BenchError(
            f"no 'tps = N (without initial connection time)' in pgbench output:\n{output}"
        )
    return float(match.group(1))


def summarize(
    results: Sequence[RunResult],
    targets: Sequence[str],
    workloads: Sequence[Workload],
    fdatasync_s: float | None = None,
) -> list[dict[str, Any]]:
    """Return per workload the median TPS per target and the hoopgw ratios (``None`` if n/a).

    :param fdatasync_s: the median ``fdatasync`` time of the store's disk (S); with the bare
        gateway's TPS it gives the ``ceiling`` of recording with ``fsync`` (:func:`ceiling`).
    """
    summary = []
    for workload in workloads:
        medians = {
            target: statistics.median(
                result.tps
                for result in results
                if result.workload == workload.name and result.target == target
            )
            for target in targets
            if any(r.workload == workload.name and r.target == target for r in results)
        }
        limit = ceiling(workload.clients, fdatasync_s, medians.get("hoopgw-bare"))
        summary.append(
            {
                "workload": workload.name,
                "median_tps": medians,
                "hoopgw/direct": _ratio(medians, "hoopgw", "direct"),
                "hoopgw/pgbouncer": _ratio(medians, "hoopgw", "pgbouncer"),
                "hoopgw-os/pgbouncer": _ratio(medians, "hoopgw-os", "pgbouncer"),
                "hoopgw-bare/pgbouncer": _ratio(medians, "hoopgw-bare", "pgbouncer"),
                "hoopgw-full/pgbouncer": _ratio(medians, "hoopgw-full", "pgbouncer"),
                **{
                    f"{target}/{base}": _ratio(medians, target, base)
                    for target, base in WORKER_TARGETS.items()
                },
                "ceiling_tps": limit,
                "hoopgw/ceiling": (
                    None if limit is None or "hoopgw" not in medians else medians["hoopgw"] / limit
                ),
                "guardrails_us_per_statement": _added_cost(medians, "hoopgw-guardrails", "hoopgw"),
                "cpu_us_per_transaction": _median_cpu(results, workload.name, targets),
            }
        )
    return summary


def ceiling(clients: int, fdatasync_s: float | None, bare_tps: float | None) -> float | None:
    """The most statements per second that ``clients`` closed-loop clients can get when each
    statement waits for an ``fdatasync`` before it is forwarded: ``N / (S + R)``, with S the
    disk's ``fdatasync`` time and R the rest of a round trip, taken as the bare gateway's
    (``N / TPS_bare``). None when either is unknown."""
    if fdatasync_s is None or not bare_tps:
        return None
    return clients / (fdatasync_s + clients / bare_tps)


def measure_fdatasync(
    directory: Path,
    *,
    samples: int = FDATASYNC_SAMPLES,
    sync: Callable[[int], None] = os.fdatasync,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Time ``samples`` appends of :data:`FDATASYNC_LINE` to a scratch file in ``directory``
    (on the store's disk), each followed by ``sync``, as the audit journal does; return the
    seconds of each sync."""
    times = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="hoopgw-bench-fdatasync-") as scratch:
        fd = scratch.fileno()
        for _ in range(samples):
            os.write(fd, FDATASYNC_LINE)
            start = clock()
            sync(fd)
            times.append(clock() - start)
    return times


def _median_cpu(
    results: Sequence[RunResult], workload: str, targets: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per target and process role, the median CPU microseconds per transaction."""
    medians: dict[str, dict[str, float]] = {}
    for target in targets:
        runs = [r for r in results if r.workload == workload and r.target == target]
        roles = sorted({role for r in runs for role in r.cpu_us_per_transaction})
        if roles:
            medians[target] = {
                role: statistics.median(
                    r.cpu_us_per_transaction[role] for r in runs if role in r.cpu_us_per_transaction
                )
                for role in roles
            }
    return medians


def _added_cost(medians: Mapping[str, float], target: str, baseline: str) -> float | None:
    """Microseconds ``target`` adds per transaction over ``baseline`` (1/TPS difference)."""
    if not medians.get(target) or not medians.get(baseline):
        return None
    return (1 / medians[target] - 1 / medians[baseline]) * 1e6


def _ratio(medians: Mapping[str, float], numerator: str, denominator: str) -> float | None:
    if numerator not in medians or not medians.get(denominator):
        return None
    return medians[numerator] / medians[denominator]


def _cell(value: float | None, column: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if column.endswith(("_us_per_statement", "_tps")) else f"{value:.3f}"


def render_cpu_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """Return the gateway processes' median CPU per transaction as a fixed-width text table
    (one column per target and role); empty when nothing was measured."""
    columns = sorted(
        {
            (target, role)
            for entry in summary
            for target, roles in entry.get("cpu_us_per_transaction", {}).items()
            for role in roles
        }
    )
    if not columns:
        return ""
    rows = [
        [
            entry["workload"],
            *(
                _cpu_cell(entry.get("cpu_us_per_transaction", {}).get(target, {}).get(role))
                for target, role in columns
            ),
        ]
        for entry in summary
    ]
    return _aligned(["cpu us/txn", *(f"{target} {role}" for target, role in columns)], rows)


def _cpu_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_table(summary: Sequence[Mapping[str, Any]], targets: Sequence[str]) -> str:
    """Return the summary as a fixed-width text table (median TPS, then ratios)."""
    ratios = (
        "hoopgw/direct",
        "hoopgw/pgbouncer",
        "hoopgw-os/pgbouncer",
        "hoopgw-bare/pgbouncer",
        "hoopgw-full/pgbouncer",
        # Shown when run (--workers): two worker processes' TPS over one's.
        *(f"{target}/{base}" for target, base in WORKER_TARGETS.items() if target in targets),
        "ceiling_tps",
        "hoopgw/ceiling",
        "guardrails_us_per_statement",
    )
    headers = ["workload", *targets, *ratios]
    rows = [
        [
            entry["workload"],
            *(
                f"{entry['median_tps'][t]:.1f}" if t in entry["median_tps"] else "-"
                for t in targets
            ),
            *(_cell(entry.get(ratio), ratio) for ratio in ratios),
        ]
        for entry in summary
    ]
    return _aligned(headers, rows)


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Headers and rows as columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def pgbouncer_ini(*, workdir: Path, listen_port: int, server_host: str, server_port: int) -> str:
    """Return a pgbouncer.ini for a private session-pooling pgbouncer in ``workdir``."""
    return f"""\
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
"""


def hoopgw_config(
    *,
    store_path: Path,
    listen_port: int,
    target: str,
    plugins: Mapping[str, Mapping[str, Any]] = PLUGINS["hoopgw"],
    gateway_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the hoopgw config document: one postgres connection with ``plugins`` on (plugin
    name to its options), and ``gateway_options`` in the ``[gateway]`` table."""
    connection: dict[str, Any] = {
        "name": "bench",
        "protocol": "postgres",
        "listen": f"tcp:{listen_port}:interface=127.0.0.1",
        "target": target,
        "allow_groups": [BENCH_GROUP],
        "plugins": list(plugins),
        "credential": {"user": "postgres"},
    }
    for name, options in plugins.items():
        if options:
            connection[name] = dict(options)
    gateway = {"store": f"sqlite:///{store_path}", **(gateway_options or {})}
    return {"gateway": gateway, "connections": [connection]}


def _unprivileged_user() -> str | None:
    """Return the user to run pgbouncer as: it refuses root, so as root use ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise BenchError("running as root needs the OS user 'postgres' for pgbouncer") from None


def prepare_database(settings: Settings) -> str:
    """Re-create the benchmark database, run ``pgbench -i``; return the server version."""
    with psycopg.connect(
        host=settings.pghost,
        port=settings.pgport,
        user="postgres",
        dbname="postgres",
        autocommit=True,
    ) as admin:
        database = sql.Identifier(settings.database)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
        (version,) = admin.execute("SHOW server_version").fetchone() or ("unknown",)
    print(f"==> pgbench -i -s {settings.scale} {settings.database}", flush=True)
    run_tool(
        [
            program("pgbench"),
            "-i",
            "-q",
            "-s",
            str(settings.scale),
            "-h",
            settings.pghost,
            "-p",
            str(settings.pgport),
            "-U",
            "postgres",
            settings.database,
        ],
        timeout=600,
    )
    return str(version)


@contextlib.contextmanager
def pgbouncer_endpoint(settings: Settings) -> Iterator[Endpoint]:
    """Run a private pgbouncer in front of the server; yield its endpoint."""
    user = _unprivileged_user()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hoopgw-bench-pgbouncer-") as tmp:
        workdir = Path(tmp)
        ini = workdir / "pgbouncer.ini"
        ini.write_text(
            pgbouncer_ini(
                workdir=workdir,
                listen_port=port,
                server_host=settings.pghost,
                server_port=settings.pgport,
            )
        )
        (workdir / "userlist.txt").write_text('"postgres" ""\n')
        if user is not None:
            for path in (workdir, *workdir.iterdir()):
                shutil.chown(path, user=user)
        print(f"==> starting pgbouncer on 127.0.0.1:{port}", flush=True)
        with running_server(
            [program("pgbouncer"), str(ini)],
            name="pgbouncer",
            port=port,
            log_path=workdir / "stderr.log",
            user=user,
        ):
            yield Endpoint(target="pgbouncer", host="127.0.0.1", port=port, user="postgres")


@contextlib.contextmanager
def hoopgw_endpoint(
    *,
    pghost: str,
    pgport: int,
    target: str = "hoopgw",
    plugins: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Endpoint]:
    """Run ``hoopgw run`` with ``plugins`` (default: the target's in :data:`GATEWAY_PLUGINS`)
    and the target's :data:`GATEWAY_OPTIONS` in front of ``pghost:pgport`` on a fresh store
    (in the temporary folder, where :func:`measure_fdatasync` times the disk) and key; yield its
    endpoint."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hoopgw-bench-gateway-") as tmp:
        workdir = Path(tmp)
        document = hoopgw_config(
            store_path=workdir / "hoopgw.db",
            listen_port=port,
            target=f"{pghost}:{pgport}",
            plugins=GATEWAY_PLUGINS[target] if plugins is None else plugins,
            gateway_options=GATEWAY_OPTIONS.get(target),
        )
        print(f"==> starting {target} on 127.0.0.1:{port}", flush=True)
        with running_gateway(
            document, workdir=workdir, port=port, identity=BENCH_IDENTITY, group=BENCH_GROUP
        ) as gateway:
            yield Endpoint(
                target=target,
                host="127.0.0.1",
                port=port,
                user=BENCH_IDENTITY,
                password=gateway.key,
                processes=gateway.processes,
            )


@attrs.frozen(kw_only=True)
class PgbenchRun:
    """What one pgbench run measured."""

    tps: float
    """Transactions per second without initial connection time."""
    cpu_us_per_transaction: dict[str, float]
    """CPU microseconds per transaction of each of the endpoint's processes, by role."""


def run_pgbench(endpoint: Endpoint, workload: Workload, settings: Settings) -> PgbenchRun:
    """Run one timed pgbench against ``endpoint``; return its TPS and, for an endpoint with
    processes to watch, their CPU time per transaction."""
    argv = [
        program("pgbench"),
        "-n",
        *workload.pgbench_args,
        "-T",
        str(settings.duration),
        "-h",
        endpoint.host,
        "-p",
        str(endpoint.port),
        "-U",
        endpoint.user,
        settings.database,
    ]
    env = {"PGPASSWORD": endpoint.password} if endpoint.password is not None else {}
    before = {role: cpu_seconds(pid) for role, pid in endpoint.processes.items()}
    output = run_tool(argv, env=env, timeout=settings.duration + 120)
    after = {role: cpu_seconds(pid) for role, pid in endpoint.processes.items()}
    return PgbenchRun(
        tps=parse_tps(output),
        cpu_us_per_transaction=cpu_per_transaction(before, after, parse_transactions(output)),
    )


def parse_transactions(output: str) -> int:
    """Return the number of transactions pgbench processed.

    :raises BenchError: the line is missing.
    """
    match = _TRANSACTIONS_LINE.search(output)
    if match is None:
        raise BenchError(f"no 'number of transactions actually processed' line:\n{output}")
    return int(match.group(1))


def cpu_per_transaction(
    before: Mapping[str, float | None], after: Mapping[str, float | None], transactions: int
) -> dict[str, float]:
    """CPU microseconds per transaction by role, from CPU seconds read before and after a run
    (roles whose CPU time could not be read, or a run without transactions, are left out)."""
    measured = {}
    for role, start in before.items():
        end = after.get(role)
        if start is not None and end is not None and transactions > 0:
            measured[role] = (end - start) * 1e6 / transactions
    return measured


def tool_version(argv: Sequence[str]) -> str:
    """Return the first line a tool prints for its version."""
    return run_tool(argv, timeout=30).splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print progress and the table; write the JSON results."""
    settings = parse_args(argv)
    started_at = datetime.now(UTC)
    server_version = prepare_database(settings)
    environment = {
        "server_version": server_version,
        "pgbench": tool_version([program("pgbench"), "--version"]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if "pgbouncer" in settings.targets:
        environment["pgbouncer"] = tool_version([program("pgbouncer"), "--version"])

    results: list[RunResult] = []
    fdatasync_s: list[float] = []
    with contextlib.ExitStack() as stack:
        endpoints = {
            "direct": Endpoint(
                target="direct", host=settings.pghost, port=settings.pgport, user="postgres"
            )
        }
        if "pgbouncer" in settings.targets:
            endpoints["pgbouncer"] = stack.enter_context(pgbouncer_endpoint(settings))
        for target in GATEWAY_PLUGINS:
            if target in settings.targets:
                endpoints[target] = stack.enter_context(
                    hoopgw_endpoint(pghost=settings.pghost, pgport=settings.pgport, target=target)
                )
        plan = run_plan(settings.rounds, WORKLOADS, settings.targets)
        for index, (round_number, workload, target) in enumerate(plan, start=1):
            if index == 1 or plan[index - 2][0] != round_number:
                # S, once per round, so that it sees the same moments of the machine.
                round_syncs = measure_fdatasync(Path(tempfile.gettempdir()))
                fdatasync_s.extend(round_syncs)
                print(
                    f"round {round_number}: fdatasync p50"
                    f" {statistics.median(round_syncs) * 1e6:.0f} us",
                    flush=True,
                )
            run = run_pgbench(endpoints[target], workload, settings)
            cpu = "".join(
                f", {role} {us:.0f} us/txn" for role, us in run.cpu_us_per_transaction.items()
            )
            print(
                f"[{index}/{len(plan)}] round {round_number} {workload.name} {target}: "
                f"{run.tps:.1f} tps{cpu}",
                flush=True,
            )
            results.append(
                RunResult(
                    round=round_number,
                    workload=workload.name,
                    target=target,
                    tps=run.tps,
                    cpu_us_per_transaction=run.cpu_us_per_transaction,
                )
            )

    sync_p50 = statistics.median(fdatasync_s)
    summary = summarize(results, settings.targets, WORKLOADS, sync_p50)
    print()
    print(f"fdatasync p50 of the store's disk: {sync_p50 * 1e6:.0f} us")
    print(render_table(summary, settings.targets))
    cpu_table = render_cpu_table(summary)
    if cpu_table:
        print()
        print(cpu_table)
    document = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "targets": list(settings.targets),
            "duration_s": settings.duration,
            "rounds": settings.rounds,
            "scale": settings.scale,
            "quick": settings.quick,
            "workloads": {w.name: " ".join(w.pgbench_args) for w in WORKLOADS},
        },
        "environment": environment,
        "runs": [attrs.asdict(result) for result in results],
        "fdatasync_us": {
            "p50": sync_p50 * 1e6,
            "p90": statistics.quantiles(fdatasync_s, n=10)[-1] * 1e6,
            "samples": len(fdatasync_s),
        },
        "summary": summary,
    }
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\n==> results written to {settings.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"pgbench_compare: {error}", file=sys.stderr)
        sys.exit(1)
