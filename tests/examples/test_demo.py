"""``./dev demo`` as a newcomer runs it: the script seeds a sample database, starts a gateway,
and the three things it prints to try behave as it says (with real psql)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HOOPGW_COMMAND, admin_connection

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "demo.py"


@pytest.fixture
def demo(pg_server: Any, tmp_path: Path) -> Iterator[tuple[dict[str, str], str, Path]]:
    """The demo running in ``tmp_path`` on a database and role of its own; yields the psql
    environment, the printed instructions and the demo folder."""
    suffix = secrets.token_hex(4)
    env = {
        **os.environ,
        "HOOPGW_DEMO_PGHOST": pg_server.host,
        "HOOPGW_DEMO_PGPORT": str(pg_server.port),
        "HOOPGW_DEMO_DATABASE": f"hgw_demo_{suffix}",
        "HOOPGW_DEMO_ROLE": f"hgw_demo_app_{suffix}",
    }
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(DEMO), str(tmp_path)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "hoopgw ready" not in out.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, out.read_text()
            time.sleep(0.1)
        printed = out.read_text()
        assert "hoopgw ready" in printed, printed
        port = re.search(r"on 127\.0\.0\.1:(\d+) in front of", printed)
        assert port is not None, printed
        psql_env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": port.group(1),
            "PGUSER": "demo-agent",
            "PGDATABASE": env["HOOPGW_DEMO_DATABASE"],
            "PGPASSWORD": (tmp_path / ".hoopgw-demo" / "demo-agent.key").read_text().strip(),
        }
        yield psql_env, printed, tmp_path / ".hoopgw-demo"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        with admin_connection(pg_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{env["HOOPGW_DEMO_DATABASE"]}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{env["HOOPGW_DEMO_ROLE"]}"')


def _psql(env: dict[str, str], sql: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-c", sql], env=env, capture_output=True, text=True, check=False, **kwargs
    )


def test_the_three_things_the_demo_prints_to_try(demo: Any, tmp_path: Path) -> None:
    env, printed, folder = demo
    assert not list((DEMO.parent).glob("*.db*")), "the demo left files in examples/"

    shown = _psql(env, "SELECT * FROM customers ORDER BY id LIMIT 3")
    assert shown.returncode == 0, shown.stderr
    assert "Ada Lovelace" in shown.stdout
    assert "ada.lovelace@example.com" not in shown.stdout
    assert "4111 1111 1111 1111" not in shown.stdout

    dropped = _psql(env, "DROP TABLE customers")
    assert dropped.returncode != 0
    assert "refused" in dropped.stderr

    admin_url = re.search(r"HOOPGW_URL=(\S+)", printed)
    assert admin_url is not None
    held = subprocess.Popen(
        ["psql", "-X", "-c", "DELETE FROM customers WHERE id = 8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    approver = {
        **os.environ,
        "HOOPGW_URL": admin_url.group(1),
        "HOOPGW_TOKEN": (folder / "demo-approver.key").read_text().strip(),
    }
    deadline = time.monotonic() + 30
    listed = ""
    while time.monotonic() < deadline and "DELETE FROM customers" not in listed:
        listed = subprocess.run(
            [*HOOPGW_COMMAND, "reviews", "list", "--pending"],
            env=approver,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        time.sleep(0.2)
    review_id = listed.splitlines()[1].split()[0]
    approved = subprocess.run(
        [*HOOPGW_COMMAND, "reviews", "approve", review_id],
        env=approver,
        capture_output=True,
        text=True,
        check=False,
    )
    assert approved.returncode == 0, approved.stderr
    out, err = held.communicate(timeout=30)
    assert held.returncode == 0, err
    assert "DELETE 1" in out
