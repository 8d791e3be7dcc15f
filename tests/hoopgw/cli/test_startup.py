"""What ``hoopgw`` commands import before they do their work (issue 18: start-up time).

Each case runs the command in a fresh interpreter, so that what other tests imported does not
hide an import; ``bench/cli_startup.py`` measures the time itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hoopgw.audit import export
from hoopgw.cli import export as cli_export

# Slow to import, and not needed to parse the command line or list keys: Twisted's endpoint
# parser pulls in the TLS stack (pyOpenSSL, cryptography); PyJWT and cryptography come with the
# OIDC and checkpoint modules.
HEAVY = ("twisted.internet.endpoints", "twisted.internet.ssl", "OpenSSL", "cryptography", "jwt")

PROBE = """
import json, sys
from hoopgw.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

CONFIG = """\
[gateway]
store = "sqlite:///./hoopgw.db"

[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["dev"]
plugins = ["recording"]

[connections.credential]
user = "postgres"
"""


def imported_by(*argv: str, cwd: Path) -> tuple[int, set[str]]:
    """The exit status of ``hoopgw ARGV`` run in a new interpreter, and the modules it had
    imported when it ended."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, check=False
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["keys", "--help"]])
def test_the_command_line_is_built_without_twisted_or_cryptography(argv, tmp_path):
    code, modules = imported_by(*argv, cwd=tmp_path)
    assert code == 0
    assert heavy(modules) == []
    assert not [m for m in modules if m == "twisted" or m.startswith("twisted.")]
    # Nor any command's implementation: the config loader, the store, the gateway.
    assert not modules & {
        "hoopgw.config",
        "hoopgw.store",
        "hoopgw.audit.writer",
        "hoopgw.runtime.gateway",
    }


def test_keys_list_loads_the_config_without_the_tls_stack(tmp_path):
    (tmp_path / "hoopgw.toml").write_text(CONFIG, encoding="utf-8")
    code, modules = imported_by("keys", "list", "-c", str(tmp_path / "hoopgw.toml"), cwd=tmp_path)
    assert code == 0
    assert "hoopgw.config" in modules and "hoopgw_recording" in modules  # it validated
    assert heavy(modules) == []


def test_a_tls_listen_string_is_still_judged_by_twisted(tmp_path):
    config = CONFIG.replace("tcp:15432:interface=127.0.0.1", "ssl:15432:privateKey=k.pem")
    (tmp_path / "hoopgw.toml").write_text(config, encoding="utf-8")
    code, modules = imported_by(
        "config", "check", "-c", str(tmp_path / "hoopgw.toml"), cwd=tmp_path
    )
    assert code == 2
    assert "twisted.internet.endpoints" in modules


def test_export_formats_offered_are_the_exporters():
    assert cli_export.EXPORT_FORMATS == export.FORMATS
