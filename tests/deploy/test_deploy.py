"""The deployment files (Dockerfile, compose.yaml, the systemd unit) checked without a
container engine, which the development and CI machines cannot run: their structure, the
hardening they promise, that every file they name exists, and that the config they mount is one
the gateway accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hoopgw.config.load import parse_config

ROOT = Path(__file__).resolve().parents[2]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def test_the_dockerfile_builds_wheels_apart_and_runs_unprivileged() -> None:
    build, final = _stages(ROOT / "Dockerfile")
    for keyword, rest in build + final:
        assert keyword != "ADD", "ADD can fetch URLs and unpack archives; use COPY"
        if keyword == "COPY" and "--from=" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY of a missing path {source}"
    final_keywords = dict(final)
    user = final_keywords["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "hoopgw[all]" in final_keywords["RUN"] or any(
        k == "RUN" and "hoopgw[all]" in r for k, r in final
    )
    assert "/readyz" in final_keywords["HEALTHCHECK"]
    assert final_keywords["ENTRYPOINT"] == '["hoopgw"]'
    assert final_keywords["STOPSIGNAL"] == "SIGTERM"
    assert '"/var/lib/hoopgw"' in final_keywords["VOLUME"]


def test_the_all_extra_names_every_protocol_and_plugin() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {
        tomllib.loads(p.read_text())["project"]["name"]
        for folder in ("protocols", "plugins")
        for p in (ROOT / folder).glob("*/pyproject.toml")
    }
    # ... and the client of the PostgreSQL store that several instances share.
    assert set(extras["all"]) == names | set(extras["postgresql-store"])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def test_compose_runs_the_gateway_read_only_and_unprivileged(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["hoopgw"]
    assert gateway["read_only"] is True
    assert gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gateway["security_opt"]
    assert not gateway["user"].startswith("0")
    for published in gateway["ports"]:
        assert published.startswith("127.0.0.1:"), "published beyond the host's loopback"


def test_compose_keeps_the_target_on_an_internal_network(compose: dict[str, Any]) -> None:
    target = compose["services"]["target"]
    assert "ports" not in target
    assert target["networks"] == ["private"]
    assert compose["networks"]["private"]["internal"] is True


def test_every_file_compose_mounts_exists(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"compose mounts a missing {source}"
    for secret in compose["secrets"].values():
        assert (ROOT / secret["file"]).exists()


def test_the_config_compose_mounts_is_valid(compose: dict[str, Any], tmp_path: Path) -> None:
    [mount] = [v for v in compose["services"]["hoopgw"]["volumes"] if "/etc/hoopgw/" in v]
    source = ROOT / mount.split(":")[0]
    # The container's secret file, where this machine has one.
    secret = tmp_path / "secret"
    secret.write_text("x")
    text = source.read_text().replace("/run/secrets/target_app_password", str(secret))
    config = parse_config(text, base_dir=tmp_path)
    [connection] = config.connections
    assert connection.target == "target:5432"
    assert config.gateway.store == "sqlite:////var/lib/hoopgw/hoopgw.db"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "hoopgw.service").read_text()
    assert "ExecStart=/opt/hoopgw/bin/hoopgw run -c /etc/hoopgw/hoopgw.toml" in unit
    # verify checks that the program exists: point it at this environment's.
    local = tmp_path / "hoopgw.service"
    local.write_text(
        unit.replace("/opt/hoopgw/bin/hoopgw", str(Path(sys.executable).with_name("hoopgw")))
    )
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    # An exposure of at most 2.0 on systemd's 0-10 scale ("OK").
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(local)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-2000:]
