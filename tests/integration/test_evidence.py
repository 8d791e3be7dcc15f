"""``hoopgw evidence`` on the store of a real gateway after real PostgreSQL sessions."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

pytestmark = [pytest.mark.integration, pytest.mark.store]


def wait_for_ended(running: Any, count: int) -> list[dict[str, Any]]:
    """Records are written asynchronously: poll until ``count`` sessions have ended."""
    deadline = time.monotonic() + 10
    while True:
        listed = running.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found = list(json.loads(listed.stdout))
        if sum(1 for s in found if s["ended_at"]) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def build(running: Any, folder: Path) -> subprocess.CompletedProcess[str]:
    return running.cli("evidence", "--since", "1h", "--out", str(folder))


def assert_manifest_valid(folder: Path) -> None:
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (folder / "manifest.sha256").read_text().splitlines()
    )
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(listed) == files - {"manifest.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    if shutil.which("sha256sum"):
        checked = subprocess.run(
            ["sha256sum", "--strict", "-c", "manifest.sha256"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_pack_of_a_recorded_session(recorded_gateway: Any, tmp_path: Path) -> None:
    with psycopg.connect(recorded_gateway.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE r (v int)")
        conn.execute("INSERT INTO r SELECT generate_series(1, 5)")
        conn.execute("SELECT v FROM r WHERE v > %s", (2,)).fetchall()
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
    [session] = wait_for_ended(recorded_gateway.gateway, 1)
    shown = recorded_gateway.gateway.cli("sessions", "show", session["id"], "--json")
    commands = json.loads(shown.stdout)["commands"]
    folder = tmp_path / "pack"

    built = build(recorded_gateway.gateway, folder)

    assert built.returncode == 0, built.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verification"]["ok"] is True
    assert summary["sessions"]["count"] == 1
    assert summary["sessions"]["identities"] == ["agent"]
    assert summary["sessions"]["by_connection"] == {"pg": 1}
    assert summary["commands"]["count"] == len(commands) >= 4
    assert summary["commands"]["by_verdict"] == {
        "allow": len(commands),
        "block": 0,
        "hold": 0,
        "undecided": 0,
    }
    assert summary["commands"]["by_status"] == {"error": 1, "ok": len(commands) - 1}
    recorded = [json.loads(line) for line in (folder / "commands.jsonl").read_text().splitlines()]
    assert [c["text"] for c in recorded] == [c["text"] for c in commands]
    [row] = json.loads((folder / "sessions.json").read_text())
    assert row["id"] == session["id"]
    assert row["command_count"] == len(commands)
    assert_manifest_valid(folder)


def test_pack_with_guardrails_shows_the_blocked_command(
    gateway: Any, pg_database: str, tmp_path: Path
) -> None:
    running = gateway(
        plugins=["recording", "guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"deny": ["drop"]}},
    )
    key = running.create_key("agent", ["agents"])
    conninfo = (
        f"host={running.host} port={running.port} user=agent password={key} "
        f"dbname={pg_database} sslmode=disable"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE orders /* <script>alert(1)</script> */")
        conn.execute("SELECT count(*) FROM orders").fetchone()
    wait_for_ended(running, 1)
    folder = tmp_path / "pack"

    built = build(running, folder)

    assert built.returncode == 0, built.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["commands"]["by_verdict"]["block"] == 1
    assert summary["commands"]["blocked_by_rule"] == {"drop": 1}
    [blocked] = summary["commands"]["blocked_listed"]
    assert blocked["text"].startswith("DROP TABLE orders")
    page = (folder / "index.html").read_text()
    assert "<script>" not in page
    assert "DROP TABLE orders /* &lt;script&gt;" in page
    policy = json.loads((folder / "policies" / "pg.json").read_text())
    assert policy["options"]["guardrails"]["deny"] == ["drop"]
    assert "credential" not in policy
    assert_manifest_valid(folder)
