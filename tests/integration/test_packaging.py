"""The wheels as an operator installs them: every distribution built with ``./dev wheels``,
installed with ``pip install "hoopgw[all]"`` into a fresh virtual environment (no test tools),
and that environment's gateway serving a real psql session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def test_the_wheels_install_a_gateway_without_test_tools(pg_server: Any, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = _run("bash", str(ROOT / "dev"), "wheels", str(wheels), timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    names = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert names == sorted(
        [
            "hoopgw",
            "hoopgw_approval",
            "hoopgw_guardrails",
            "hoopgw_http",
            "hoopgw_kubernetes",
            "hoopgw_ldap",
            "hoopgw_masking",
            "hoopgw_mysql",
            "hoopgw_postgres",
            "hoopgw_recording",
            "hoopgw_saml",
            "hoopgw_ssh",
            "hoopgw_webhook",
        ]
    )
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    python, hoopgw = venv / "bin" / "python", venv / "bin" / "hoopgw"
    installed = _run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--find-links",
        str(wheels),
        "hoopgw[all]",
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr
    assert _run(str(python), "-c", "import pytest").returncode != 0, "test tools were installed"
    # The console's templates, script and vendored player (with its licence) are in the wheel.
    console_files = (
        "from importlib import resources; f = resources.files('hoopgw.console');"
        " assert f.joinpath('templates/base.html').is_file();"
        " assert f.joinpath('static/console.js').is_file();"
        " assert f.joinpath('static/vendor/asciinema-player/LICENSE.txt').is_file()"
    )
    assert _run(str(python), "-c", console_files).returncode == 0, "console files are missing"
    # The evidence pack's control map is data in the wheel, and it loads.
    control_map = (
        "from hoopgw.evidence.controls import control_map; assert len(control_map()) == 11"
    )
    assert _run(str(python), "-c", control_map).returncode == 0, "controls.toml is missing"

    port = free_port()
    config = tmp_path / "hoopgw.toml"
    config.write_text(
        f"""[gateway]
store = "sqlite:///{tmp_path / "hoopgw.db"}"

[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:{port}:interface=127.0.0.1"
target = "{pg_server.host}:{pg_server.port}"
allow_groups = ["agents"]
plugins = ["recording", "guardrails", "masking"]

[connections.credential]
user = "postgres"
"""
    )
    created = _run(
        str(hoopgw), "keys", "create", "-c", str(config), "--identity", "op", "--group", "agents"
    )
    assert created.returncode == 0, created.stderr
    gateway = subprocess.Popen(
        [str(hoopgw), "run", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gateway.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        env = {**os.environ, "PGPASSWORD": created.stdout.strip()}
        answered = _run(
            "psql",
            "-X",
            "-At",
            "-c",
            "SELECT 40 + 2",
            f"host=127.0.0.1 port={port} dbname=postgres user=op sslmode=disable",
            env=env,
            timeout=60,
        )
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.strip() == "42"
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    listed = _run(str(hoopgw), "sessions", "list", "--json", "-c", str(config))
    assert '"identity": "op"' in listed.stdout
