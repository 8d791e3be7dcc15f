"""Replay, search and export of a session recorded by the real gateway in front of the real
PostgreSQL server; and an export of one million records in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from hoopgw.records import AuditEntry
from hoopgw.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.store]

STATEMENTS = [
    "CREATE TABLE t (id int, name text)",
    "INSERT INTO t VALUES (1, 'ann'), (2, 'bo')",
    "SELECT id, name FROM t ORDER BY id",
    "SELECT 1/0",
    "DROP TABLE t",
]


def cli_json(running: Any, *args: str) -> Any:
    done = running.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ended_session(running: Any) -> dict[str, Any]:
    """The recording is written asynchronously: wait until the one session has ended."""
    deadline = time.monotonic() + 10
    while True:
        [session] = cli_json(running, "sessions", "list")
        if session["ended_at"] or time.monotonic() > deadline:
            return session
        time.sleep(0.1)


def test_replay_of_a_recorded_session_reproduces_its_statements_in_order(
    gateway: Any, pg_database: str
) -> None:
    running = gateway(
        plugins=["recording"],
        connection={"client_tls": "disabled", "recording": {"sample_rows": 5}},
    )
    key = running.create_key("agent", ["agents"])
    conninfo = (
        f"host={running.host} port={running.port} user=agent password={key}"
        f" dbname={pg_database} sslmode=disable"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in STATEMENTS:
            if statement == "SELECT 1/0":
                with pytest.raises(errors.DivisionByZero):
                    conn.execute(statement)
            else:
                conn.execute(statement)
            time.sleep(0.05)
    session = ended_session(running)

    replayed = cli_json(running, "replay", session["id"])
    steps = replayed["steps"]
    assert [s["text"] for s in steps] == STATEMENTS
    assert [s["seq"] for s in steps] == list(range(1, len(STATEMENTS) + 1))
    offsets = [s["offset"] for s in steps]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] >= 0.2
    selected = steps[2]
    assert (selected["verdict"], selected["status"], selected["rows"]) == ("allow", "ok", 2)
    assert selected["sample"] == [["1", "ann"], ["2", "bo"]]
    assert (steps[3]["status"], steps[3]["error_code"]) == ("error", "22012")

    transcript = running.cli("replay", session["id"])
    assert transcript.returncode == 0, transcript.stderr
    shown = [line.strip() for line in transcript.stdout.splitlines()]
    positions = [shown.index(statement) for statement in STATEMENTS]
    assert positions == sorted(positions)
    assert "| 1 | ann |" in shown

    found = cli_json(running, "audit", "search", "--session", session["id"], "--text", "from t")
    assert [c["text"] for c in found] == ["SELECT id, name FROM t ORDER BY id"]

    exported = running.cli("audit", "export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    texts = [r["data"]["text"] for r in records if r["kind"] == "command_received"]
    assert texts == STATEMENTS
    assert {r["identity"] for r in records if r["session_id"]} == {"agent"}
    # The one record of no session: the audit writer's mode at start.
    [mode] = [r for r in records if not r["session_id"]]
    assert (mode["kind"], mode["identity"], mode["data"]["mode"]) == (
        "audit_durability",
        None,
        "fsync",
    )


# -- one million records -------------------------------------------------------------------------

MILLION = 1_000_000
RSS_GROWTH_BOUND_KIB = 32 * 1024
"""Peak resident memory an export may add over exporting a small store (see
docs/audit-export.md for the measured figure)."""

# Runs the CLI in a fresh interpreter and prints its peak resident memory (KiB on Linux).
_MEASURED_EXPORT = (
    "import resource, sys\n"
    "from hoopgw.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def build_store(path: Path, count: int) -> None:
    """A real store of ``count`` records: sessions of 20 commands with received, decided and
    completed records each."""
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    per_session = 2 + 3 * 20
    batch: list[AuditEntry] = []
    t0 = 1_764_090_000.0
    for index in range(count):
        session, position = divmod(index, per_session)
        session_id = f"session-{session:06d}"
        at = t0 + index / 100
        if position == 0:
            kind, data = "session_started", {"identity": "agent", "connection": "pg"}
        elif position == per_session - 1 or index == count - 1:
            kind, data = "session_closed", {"reason": "client closed"}
        else:
            command, step = divmod(position - 1, 3)
            kind = ("command_received", "command_decided", "command_completed")[step]
            data = {"seq": command + 1, "text": f"SELECT * FROM orders WHERE id = {index}"}
        batch.append(AuditEntry(kind=kind, session_id=session_id, time=at, data=data))
        if len(batch) == 20_000:
            store.append(batch)
            batch = []
    store.append(batch)
    store.close()


def measured_export(tmp_path: Path, name: str, count: int) -> tuple[int, int]:
    """Build a store of ``count`` records, export it; return (peak RSS KiB, lines written)."""
    folder = tmp_path / name
    folder.mkdir()
    build_store(folder / "audit.db", count)
    config = folder / "hoopgw.toml"
    config.write_text('[gateway]\nstore = "sqlite:///./audit.db"\n')
    target = folder / "audit.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED_EXPORT,
            "audit",
            "export",
            "-c",
            str(config),
            "--format",
            "jsonl",
            "--out",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with target.open("rb") as lines:
        written = sum(1 for _ in lines)
    return int(done.stdout.strip()), written


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_export_of_one_million_records_stays_within_a_fixed_memory_bound(tmp_path: Path) -> None:
    small_peak, small_lines = measured_export(tmp_path, "small", 1_000)
    large_peak, large_lines = measured_export(tmp_path, "large", MILLION)

    assert (small_lines, large_lines) == (1_000, MILLION)
    growth = large_peak - small_peak
    print(f"peak RSS: {small_peak} KiB for 1k records, {large_peak} KiB for 1M (+{growth} KiB)")
    assert growth < RSS_GROWTH_BOUND_KIB
