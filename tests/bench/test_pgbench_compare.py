"""Unit tests for the pure parts of bench/pgbench_compare.py (no server, no subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

bench: Any = sys.modules["hoopgw_bench_pgbench_compare"]  # loaded by tests/bench/conftest.py

PGBENCH_OUTPUT = """\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 44531
number of failed transactions: 0 (0.000%)
latency average = 0.538 ms
initial connection time = 11.502 ms
tps = 14843.912345 (without initial connection time)
"""


def test_parse_tps_reads_the_rate_without_connection_time() -> None:
    assert bench.parse_tps(PGBENCH_OUTPUT) == pytest.approx(14843.912345)


def test_parse_tps_fails_with_the_output_when_the_line_is_missing() -> None:
    with pytest.raises(bench.BenchError, match="connection to server"):
        bench.parse_tps("pgbench: error: connection to server failed\n")


def test_parse_tps_ignores_the_old_including_connections_line() -> None:
    with pytest.raises(bench.BenchError):
        bench.parse_tps("tps = 100.0 (including connections establishing)\n")


def test_defaults_are_a_full_run_against_every_target() -> None:
    settings = bench.parse_args([], environ={})
    assert settings.targets == bench.DEFAULT_TARGETS
    assert set(bench.TARGETS) >= {"direct", "pgbouncer", "hoopgw", "hoopgw-bare"}
    assert (settings.duration, settings.rounds, settings.scale) == (30, 3, 10)
    assert (settings.pghost, settings.pgport) == ("127.0.0.1", 5432)
    assert settings.output == bench.RESULTS_PATH


def test_workers_adds_the_two_worker_targets_beside_their_bases() -> None:
    settings = bench.parse_args(["--workers", "--targets", "direct,hoopgw-os"], environ={})
    assert settings.targets == (
        "direct",
        "hoopgw-os",
        "hoopgw-bare",
        "hoopgw-bare-w2",
        "hoopgw-os-w2",
    )
    assert bench.GATEWAY_OPTIONS["hoopgw-os-w2"] == {"audit_durability": "os", "workers": 2}
    assert bench.GATEWAY_PLUGINS["hoopgw-os-w2"] == bench.GATEWAY_PLUGINS["hoopgw-os"]


def test_quick_shortens_duration_and_rounds() -> None:
    settings = bench.parse_args(["--quick"], environ={})
    assert (settings.duration, settings.rounds, settings.quick) == (3, 1, True)


def test_explicit_duration_wins_over_quick() -> None:
    assert bench.parse_args(["--quick", "--duration", "7"], environ={}).duration == 7


def test_server_address_comes_from_the_test_environment() -> None:
    environ = {"HOOPGW_TEST_PGHOST": "10.0.0.9", "HOOPGW_TEST_PGPORT": "6543"}
    settings = bench.parse_args([], environ=environ)
    assert (settings.pghost, settings.pgport) == ("10.0.0.9", 6543)


def test_targets_subset_keeps_order_and_drops_duplicates() -> None:
    settings = bench.parse_args(["--targets", "pgbouncer, direct,pgbouncer"], environ={})
    assert settings.targets == ("pgbouncer", "direct")


@pytest.mark.parametrize(
    "argv", [["--targets", "direct,mysql"], ["--targets", ","], ["--rounds", "0"]]
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv, environ={})


def test_run_plan_interleaves_targets_within_each_workload_and_round() -> None:
    first, second = bench.WORKLOADS[:2]
    plan = bench.run_plan(2, [first, second], ["direct", "hoopgw"])
    assert [(r, w.name, t) for r, w, t in plan] == [
        (1, first.name, "direct"),
        (1, first.name, "hoopgw"),
        (1, second.name, "direct"),
        (1, second.name, "hoopgw"),
        (2, first.name, "direct"),
        (2, first.name, "hoopgw"),
        (2, second.name, "direct"),
        (2, second.name, "hoopgw"),
    ]


def _result(round_number: int, target: str, tps: float, workload: str = "select-c1") -> Any:
    return bench.RunResult(round=round_number, workload=workload, target=target, tps=tps)


def test_summarize_takes_medians_and_hoopgw_ratios() -> None:
    workload = bench.WORKLOADS[0]
    results = [
        _result(1, "direct", 1000.0),
        _result(2, "direct", 3000.0),
        _result(3, "direct", 2000.0),
        _result(1, "pgbouncer", 1600.0),
        _result(1, "hoopgw", 800.0),
    ]
    [entry] = bench.summarize(results, ["direct", "pgbouncer", "hoopgw"], [workload])
    assert entry["median_tps"] == {"direct": 2000.0, "pgbouncer": 1600.0, "hoopgw": 800.0}
    assert entry["hoopgw/direct"] == pytest.approx(0.4)
    assert entry["hoopgw/pgbouncer"] == pytest.approx(0.5)


def test_summarize_has_no_ratio_without_hoopgw() -> None:
    results = [_result(1, "direct", 1000.0), _result(1, "pgbouncer", 900.0)]
    [entry] = bench.summarize(results, ["direct", "pgbouncer"], bench.WORKLOADS[:1])
    assert entry["hoopgw/direct"] is None
    assert entry["hoopgw/pgbouncer"] is None


def test_render_table_aligns_medians_and_ratios() -> None:
    results = [_result(1, "direct", 1000.0), _result(1, "hoopgw", 500.0)]
    summary = bench.summarize(results, ["direct", "hoopgw"], bench.WORKLOADS[:1])
    lines = bench.render_table(summary, ["direct", "hoopgw"]).splitlines()
    assert lines[0].split() == [
        "workload",
        "direct",
        "hoopgw",
        "hoopgw/direct",
        "hoopgw/pgbouncer",
        "hoopgw-os/pgbouncer",
        "hoopgw-bare/pgbouncer",
        "hoopgw-full/pgbouncer",
        "ceiling_tps",
        "hoopgw/ceiling",
        "guardrails_us_per_statement",
    ]
    assert lines[1].split() == ["select-c1", "1000.0", "500.0", "0.500", *["-"] * 7]
    assert len({len(line) for line in lines}) == 1


def test_pgbouncer_ini_pools_sessions_on_loopback(tmp_path: Path) -> None:
    ini = bench.pgbouncer_ini(
        workdir=tmp_path, listen_port=6499, server_host="127.0.0.1", server_port=5432
    )
    assert "* = host=127.0.0.1 port=5432" in ini
    for setting in (
        "listen_addr = 127.0.0.1",
        "listen_port = 6499",
        "pool_mode = session",
        "auth_type = trust",
        "max_client_conn = 100",
        "default_pool_size = 20",
        f"auth_file = {tmp_path / 'userlist.txt'}",
    ):
        assert setting in ini.splitlines()


def test_hoopgw_config_enables_recording_for_the_bench_group(tmp_path: Path) -> None:
    document = bench.hoopgw_config(
        store_path=tmp_path / "hoopgw.db", listen_port=16432, target="127.0.0.1:5432"
    )
    [connection] = document["connections"]
    assert document["gateway"]["store"] == f"sqlite:///{tmp_path / 'hoopgw.db'}"
    assert connection["listen"] == "tcp:16432:interface=127.0.0.1"
    assert connection["plugins"] == ["recording"]
    assert connection["allow_groups"] == [bench.BENCH_GROUP]
    assert connection["credential"] == {"user": "postgres"}
    assert tomllib.loads(tomli_w.dumps(document)) == document


def test_bare_gateway_runs_without_plugins(tmp_path: Path) -> None:
    document = bench.hoopgw_config(
        store_path=tmp_path / "hoopgw.db",
        listen_port=16432,
        target="127.0.0.1:5432",
        plugins=bench.PLUGINS["hoopgw-bare"],
    )
    assert document["connections"][0]["plugins"] == []


def test_guardrails_target_configures_its_preset(tmp_path: Path) -> None:
    document = bench.hoopgw_config(
        store_path=tmp_path / "hoopgw.db",
        listen_port=16432,
        target="127.0.0.1:5432",
        plugins=bench.PLUGINS["hoopgw-guardrails"],
    )
    [connection] = document["connections"]
    assert connection["plugins"] == ["recording", "guardrails"]
    assert connection["guardrails"] == {"preset": "agent-readonly"}


def test_added_cost_per_statement_in_microseconds() -> None:
    results = [_result(1, "hoopgw", 1000.0), _result(1, "hoopgw-guardrails", 800.0)]
    [entry] = bench.summarize(results, ["hoopgw", "hoopgw-guardrails"], bench.WORKLOADS[:1])
    assert entry["guardrails_us_per_statement"] == pytest.approx(250.0)


# -- CPU time of the gateway's processes -------------------------------------------------------


def test_parse_transactions_reads_the_processed_count() -> None:
    assert bench.parse_transactions(PGBENCH_OUTPUT) == 44531
    with pytest.raises(bench.BenchError, match="actually processed"):
        bench.parse_transactions("tps = 1.0 (without initial connection time)\n")


def test_cpu_per_transaction_leaves_out_what_could_not_be_read() -> None:
    before = {"reactor": 10.0, "writer": None}
    after = {"reactor": 10.5, "writer": 3.0}
    assert bench.cpu_per_transaction(before, after, 1000) == {"reactor": pytest.approx(500.0)}
    assert bench.cpu_per_transaction(before, after, 0) == {}


def test_summarize_takes_the_median_cpu_per_target_and_role() -> None:
    def run(round_number: int, reactor: float, writer: float) -> Any:
        return bench.RunResult(
            round=round_number,
            workload="select-c1",
            target="hoopgw",
            tps=1.0,
            cpu_us_per_transaction={"reactor": reactor, "writer": writer},
        )

    results = [run(1, 100.0, 10.0), run(2, 300.0, 30.0), run(3, 200.0, 20.0)]
    results.append(_result(1, "direct", 5.0))
    [entry] = bench.summarize(results, ["direct", "hoopgw"], bench.WORKLOADS[:1])
    assert entry["cpu_us_per_transaction"] == {"hoopgw": {"reactor": 200.0, "writer": 20.0}}
    lines = bench.render_cpu_table([entry]).splitlines()
    assert lines[0].split() == ["cpu", "us/txn", "hoopgw", "reactor", "hoopgw", "writer"]
    assert lines[1].split() == ["select-c1", "200", "20"]


def test_no_cpu_table_without_measurements() -> None:
    summary = bench.summarize([_result(1, "direct", 5.0)], ["direct"], bench.WORKLOADS[:1])
    assert bench.render_cpu_table(summary) == ""


def test_cpu_seconds_and_children_come_from_proc() -> None:
    common = sys.modules["common"]  # bench/common.py, imported by the script
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in common.child_pids(os.getpid())
        used = common.cpu_seconds(os.getpid())
        assert used is not None and used > 0
    finally:
        child.kill()
        child.wait()
    assert common.cpu_seconds(child.pid) is None
    assert common.child_pids(child.pid) == []


def test_the_os_durability_target_records_with_audit_durability_os(tmp_path: Path) -> None:
    assert {"hoopgw", "hoopgw-os"} <= set(bench.TARGETS)
    fsync, os_mode = (
        bench.hoopgw_config(
            store_path=tmp_path / "hoopgw.db",
            listen_port=16432,
            target="127.0.0.1:5432",
            plugins=bench.GATEWAY_PLUGINS[target],
            gateway_options=bench.GATEWAY_OPTIONS.get(target),
        )
        for target in ("hoopgw", "hoopgw-os")
    )
    assert (
        fsync["connections"][0]["plugins"] == os_mode["connections"][0]["plugins"] == ["recording"]
    )
    assert "audit_durability" not in fsync["gateway"]  # the default: fsync
    assert os_mode["gateway"]["audit_durability"] == "os"


def test_the_ceiling_is_n_over_s_plus_r() -> None:
    # 8 clients, S = 1 ms, bare 16000 TPS (R = 0.5 ms): 8 / 1.5 ms.
    assert bench.ceiling(8, 0.001, 16000.0) == pytest.approx(5333.33, rel=1e-4)
    assert bench.ceiling(8, None, 16000.0) is None
    assert bench.ceiling(8, 0.001, None) is None
    assert [w.clients for w in bench.WORKLOADS] == [1, 8, 8]


def test_summarize_reports_the_ceiling_and_the_durability_ratios() -> None:
    c8 = bench.WORKLOADS[1]
    results = [
        _result(1, "pgbouncer", 20000.0, c8.name),
        _result(1, "hoopgw", 4000.0, c8.name),
        _result(1, "hoopgw-os", 8000.0, c8.name),
        _result(1, "hoopgw-bare", 16000.0, c8.name),
    ]
    targets = ["pgbouncer", "hoopgw", "hoopgw-os", "hoopgw-bare"]
    [entry] = bench.summarize(results, targets, [c8], 0.001)
    assert entry["ceiling_tps"] == pytest.approx(8 / 0.0015)
    assert entry["hoopgw/ceiling"] == pytest.approx(4000 * 0.0015 / 8)
    assert entry["hoopgw-os/pgbouncer"] == pytest.approx(0.4)
    [unknown] = bench.summarize(results, targets, [c8])
    assert (unknown["ceiling_tps"], unknown["hoopgw/ceiling"]) == (None, None)


def test_summarize_reports_two_workers_over_one() -> None:
    c8 = bench.WORKLOADS[1]
    results = [
        _result(1, "hoopgw-os", 8000.0, c8.name),
        _result(1, "hoopgw-os-w2", 10000.0, c8.name),
    ]
    [entry] = bench.summarize(results, ["hoopgw-os", "hoopgw-os-w2"], [c8])
    assert entry["hoopgw-os-w2/hoopgw-os"] == pytest.approx(1.25)
    assert entry["hoopgw-bare-w2/hoopgw-bare"] is None
    assert "hoopgw-os-w2/hoopgw-os" in bench.render_table([entry], ["hoopgw-os", "hoopgw-os-w2"])


def test_fdatasync_is_timed_after_each_appended_line(tmp_path: Path) -> None:
    ticks = iter(range(100))
    synced: list[int] = []

    def sync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)

    times = bench.measure_fdatasync(
        tmp_path, samples=3, sync=sync, clock=lambda: float(next(ticks)) / 1000
    )
    assert times == pytest.approx([0.001, 0.001, 0.001])
    line = len(bench.FDATASYNC_LINE)
    assert synced == [line, 2 * line, 3 * line]
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone


def test_the_full_target_records_with_os_and_judges_and_masks(tmp_path: Path) -> None:
    document = bench.hoopgw_config(
        store_path=tmp_path / "hoopgw.db",
        listen_port=16432,
        target="127.0.0.1:5432",
        plugins=bench.GATEWAY_PLUGINS["hoopgw-full"],
        gateway_options=bench.GATEWAY_OPTIONS.get("hoopgw-full"),
    )
    [connection] = document["connections"]
    assert connection["plugins"] == ["recording", "guardrails", "masking"]
    assert connection["guardrails"] == {"preset": "agent-readonly"}
    assert document["gateway"]["audit_durability"] == "os"
    c8 = bench.WORKLOADS[1]
    results = [
        _result(1, "pgbouncer", 20000.0, c8.name),
        _result(1, "hoopgw-full", 7000.0, c8.name),
    ]
    [entry] = bench.summarize(results, ["pgbouncer", "hoopgw-full"], [c8])
    assert entry["hoopgw-full/pgbouncer"] == pytest.approx(0.35)
