"""Compare a MySQL client loop directly against MariaDB and through hoopgw.

A PyMySQL client runs each workload for a fixed time against every target, in interleaved
rounds (so drift of the machine affects all targets alike); the median queries per second per
target and workload, and the ratio gateway/direct, are printed and written to
``bench/results/mysql-latest.json``. The gateways (``hoopgw`` with ``recording``,
``hoopgw-bare`` with no plugin, ``hoopgw-guardrails`` with ``recording`` and ``guardrails``)
are started privately on free loopback ports and stopped at the end.

Run it with ``./dev bench mysql [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).parent))
from common import PLUGINS, free_port, running_gateway

TARGETS = ("direct", *PLUGINS)
RESULTS_PATH = Path(__file__).parent / "results" / "mysql-latest.json"
DATABASE = "hoopgw_bench_my"
ROWS = 10_000


def _point_select(cur: Any, i: int) -> None:
    cur.execute("SELECT id, k, c FROM bench WHERE id = %s", (i % ROWS + 1,))
    cur.fetchall()


def _range_select(cur: Any, i: int) -> None:
    start = i % (ROWS - 100) + 1
    cur.execute("SELECT id, k, c FROM bench WHERE id BETWEEN %s AND %s", (start, start + 99))
    cur.fetchall()


def _update(cur: Any, i: int) -> None:
    cur.execute("UPDATE bench SET k = k + 1 WHERE id = %s", (i % ROWS + 1,))


WORKLOADS: dict[str, Callable[[Any, int], None]] = {
    "point-select": _point_select,
    "range-select-100": _range_select,
    "update": _update,
}
READ_ONLY = {"point-select", "range-select-100"}


def prepare(host: str, port: int) -> tuple[str, str]:
    """Create the database, its table and a user; return the user and its password."""
    password = secrets.token_urlsafe(12)
    user = "hoopgw_bench"
    with pymysql.connect(host=host, port=port, user="root", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cur.execute(f"CREATE DATABASE {DATABASE}")
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL ON {DATABASE}.* TO '{user}'@'%'")
        cur.execute(f"USE {DATABASE}")
        cur.execute("CREATE TABLE bench (id INT PRIMARY KEY, k INT, c CHAR(120))")
        cur.executemany(
            "INSERT INTO bench VALUES (%s, %s, %s)",
            [(i, i * 7 % 1000, f"row-{i}".ljust(120, "x")) for i in range(1, ROWS + 1)],
        )
    return user, password


@contextlib.contextmanager
def gateway(
    target: str, host: str, port: int, user: str, password: str, workdir: Path
) -> Iterator[tuple[int, str]]:
    """Run ``hoopgw run`` with the target's plugins; yield its port and a key."""
    folder = workdir / target
    folder.mkdir()
    (folder / "password").write_text(password)
    listen = free_port()
    plugins = PLUGINS[target]
    connection: dict[str, Any] = {
        "name": "bench",
        "protocol": "mysql",
        "listen": f"tcp:{listen}:interface=127.0.0.1",
        "target": f"{host}:{port}",
        "allow_groups": ["bench"],
        "plugins": list(plugins),
        "credential": {"user": user, "password": f"file:{folder / 'password'}"},
        "upstream_tls": {"sslmode": "disable"},
        **{name: options for name, options in plugins.items() if options},
    }
    document = {
        "gateway": {"store": f"sqlite:///{folder / 'hoopgw.db'}", "log_level": "warn"},
        "connections": [connection],
    }
    with running_gateway(
        document, workdir=folder, port=listen, identity="bench", group="bench"
    ) as gateway:
        yield listen, gateway.key


def run(connect: Callable[[], Any], workload: str, duration: float) -> float:
    """Queries per second of one client running ``workload`` for ``duration`` seconds."""
    step = WORKLOADS[workload]
    with connect() as conn, conn.cursor() as cur:
        count = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration:
            step(cur, count)
            count += 1
    return count / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print the table; write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--host", default=os.environ.get("HOOPGW_TEST_MYHOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("HOOPGW_TEST_MYPORT", "3306"))
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    duration = args.duration or (2.0 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 3)
    user, password = prepare(args.host, args.port)
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hoopgw-bench-")))
        endpoints: dict[str, tuple[int, str, str]] = {"direct": (args.port, user, password)}
        for target in PLUGINS:
            port, key = stack.enter_context(
                gateway(target, args.host, args.port, user, password, workdir)
            )
            endpoints[target] = (port, "bench", key)
        for round_number in range(1, rounds + 1):
            for workload in WORKLOADS:
                for target in TARGETS:
                    if target == "hoopgw-guardrails" and workload not in READ_ONLY:
                        continue  # agent-readonly refuses writes
                    port, login, secret = endpoints[target]
                    host = args.host if target == "direct" else "127.0.0.1"

                    def connect(
                        host: str = host, port: int = port, login: str = login, secret: str = secret
                    ) -> Any:
                        return pymysql.connect(
                            host=host,
                            port=port,
                            user=login,
                            password=secret,
                            database=DATABASE,
                            autocommit=True,
                        )

                    qps = run(connect, workload, duration)
                    print(
                        f"round {round_number} {workload:17} {target:18} {qps:9.1f} q/s", flush=True
                    )
                    results.append(
                        {"round": round_number, "workload": workload, "target": target, "qps": qps}
                    )
    summary = []
    print(f"\n{'workload':17} " + " ".join(f"{t:>18}" for t in TARGETS) + "   hoopgw/direct")
    for workload in WORKLOADS:
        medians = {
            t: statistics.median(
                r["qps"] for r in results if r["workload"] == workload and r["target"] == t
            )
            for t in TARGETS
            if any(r["workload"] == workload and r["target"] == t for r in results)
        }
        ratio = medians["hoopgw"] / medians["direct"]
        summary.append({"workload": workload, "median_qps": medians, "hoopgw_over_direct": ratio})
        cells = " ".join(f"{medians[t]:18.1f}" if t in medians else f"{'-':>18}" for t in TARGETS)
        print(f"{workload:17} {cells}   {ratio:.2f}")
    document = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"duration_s": duration, "rounds": rounds, "rows": ROWS},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": results,
        "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\n==> results written to {args.output}")
    with pymysql.connect(host=args.host, port=args.port, user="root", autocommit=True) as conn:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.cursor().execute(f"DROP USER IF EXISTS '{user}'@'%'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
