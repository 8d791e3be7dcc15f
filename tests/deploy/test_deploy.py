"""The deployment files (Dockerfile, compose.yaml, the systemd unit) checked without a
container engine, which the development and CI machines cannot run: their structure, the
hardening they promise, that every file they name exists, and that the config they mount is one
the gateway accepts."""

from __future__ import annotations

import os
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
    # The gateway's certificate and key, which the bootstrap service makes.
    for name in ("gateway.crt", "gateway.key"):
        (tmp_path / name).write_text("placeholder")
    text = text.replace("/run/hoopgw-tls/", f"{tmp_path}/")
    config = parse_config(text, base_dir=tmp_path)
    [connection] = config.connections
    assert connection.target == "target:5432"
    assert connection.via == "site"
    assert config.gateway.agent_listen is not None
    # The store service, by its name on the store network, as the same user the service makes.
    assert config.gateway.store.startswith("postgresql://hoopgw@store:5432/hoopgw?")
    assert config.gateway.instance == "gw-1"
    assert str(config.gateway.journal_dir) == "/var/lib/hoopgw"


def test_compose_puts_the_target_where_only_the_agent_reaches_it(compose: dict[str, Any]) -> None:
    services, networks = compose["services"], compose["networks"]
    assert "private" not in services["hoopgw"]["networks"]
    assert set(services["agent"]["networks"]) == {"private", "uplink"}
    assert "uplink" in services["hoopgw"]["networks"]
    assert networks["uplink"]["internal"] is True
    agent = services["agent"]
    assert agent["read_only"] is True and agent["cap_drop"] == ["ALL"]
    assert "ports" not in agent and not agent["user"].startswith("0")
    assert services["bootstrap"]["networks"] == ["store"]


def test_compose_keeps_the_store_where_only_the_gateway_reaches_it(
    compose: dict[str, Any],
) -> None:
    services, networks = compose["services"], compose["networks"]
    store = services["store"]
    assert "ports" not in store
    assert store["networks"] == ["store"] and networks["store"]["internal"] is True
    on_store = {name for name, s in services.items() if "store" in s.get("networks", [])}
    assert on_store == {"store", "hoopgw", "bootstrap"}
    environment = store["environment"]
    assert (environment["POSTGRES_DB"], environment["POSTGRES_USER"]) == ("hoopgw", "hoopgw")
    assert environment["POSTGRES_PASSWORD_FILE"] == "/run/secrets/store_password"
    # The gateway reads the password file bootstrap writes into the volume they share.
    pgpass = services["hoopgw"]["environment"]["PGPASSFILE"]
    assert services["bootstrap"]["environment"]["PGPASSFILE"] == pgpass
    assert pgpass.startswith("/var/lib/hoopgw/")
    assert "store_password" in services["bootstrap"]["secrets"]
    assert "store_password" not in services["hoopgw"]["secrets"]
    for name in ("hoopgw", "bootstrap"):
        assert services[name]["depends_on"]["store"]["condition"] == "service_healthy"


def test_the_agent_config_compose_mounts_is_valid(compose: dict[str, Any], tmp_path: Path) -> None:
    from hoopgw.agent.config import parse_agent_config

    [mount] = [v for v in compose["services"]["agent"]["volumes"] if "agent.toml" in v]
    text = (ROOT / mount.split(":")[0]).read_text()
    (tmp_path / "agent.token").write_text("hga_0123456789ab_" + "x" * 43)
    (tmp_path / "ca.crt").write_text("placeholder")
    config = parse_agent_config(
        text.replace("/run/hoopgw-agent/", f"{tmp_path}/"), base_dir=tmp_path
    )
    assert (config.gateway_host, config.gateway_port) == ("hoopgw", 8444)
    assert [rule.text for rule in config.allow.rules] == ["target:5432"]


def test_the_bootstrap_makes_the_certificate_and_registers_the_agent_once(tmp_path: Path) -> None:
    from cryptography import x509

    from hoopgw.agent.tokens import AgentTokens
    from hoopgw.store import SQLiteStore

    config = tmp_path / "hoopgw.toml"
    config.write_text(f'[gateway]\nstore = "sqlite:///{tmp_path}/hoopgw.db"\n')
    (tmp_path / "tls").mkdir()
    (tmp_path / "agent").mkdir()
    env = {
        **os.environ,
        "HOOPGW_BOOTSTRAP_TLS": str(tmp_path / "tls"),
        "HOOPGW_BOOTSTRAP_AGENT": str(tmp_path / "agent"),
        "HOOPGW_BOOTSTRAP_CONFIG": str(config),
        "HOOPGW_BOOTSTRAP_UID": str(os.getuid()),
        "HOOPGW_BOOTSTRAP_STORE_PASSWORD": str(tmp_path / "store_password"),
        "PGPASSFILE": str(tmp_path / "store.pgpass"),
    }
    (tmp_path / "store_password").write_text("pa:ss\\word\n")
    script = str(ROOT / "deploy" / "compose" / "bootstrap.py")
    for _ in range(2):  # the second run changes nothing
        done = subprocess.run(
            [sys.executable, script], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    token = (tmp_path / "agent" / "agent.token").read_text().strip()
    store = SQLiteStore(str(tmp_path / "hoopgw.db"))
    assert AgentTokens(store).authenticate(token).name == "site"
    assert len(store.list_agents()) == 1
    store.close()
    assert (tmp_path / "agent" / "agent.token").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls" / "gateway.key").stat().st_mode & 0o777 == 0o600
    pgpass = tmp_path / "store.pgpass"
    assert pgpass.read_text() == "store:5432:hoopgw:hoopgw:pa\\:ss\\\\word\n"
    assert pgpass.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "agent" / "gateway.key").exists()
    certificate = x509.load_pem_x509_certificate((tmp_path / "tls" / "gateway.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hoopgw"]
    ca = x509.load_pem_x509_certificate((tmp_path / "agent" / "ca.crt").read_bytes())
    certificate.verify_directly_issued_by(ca)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("hoopgw.service", "run -c /etc/hoopgw/hoopgw.toml"),
        ("hoopgw-agent.service", "agent -c /etc/hoopgw/agent.toml"),
    ],
)
def test_the_systemd_unit_verifies_and_is_hardened(tmp_path: Path, name: str, command: str) -> None:
    unit = (ROOT / "deploy" / name).read_text()
    assert f"ExecStart=/opt/hoopgw/bin/hoopgw {command}" in unit
    # verify checks that the program exists: point it at this environment's.
    local = tmp_path / name
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


@pytest.mark.integration
def test_the_bootstrap_registers_the_agent_in_a_postgresql_store(
    tmp_path: Path, pg_server: Any, pg_database: str
) -> None:
    # compose.yaml's store, on the test server: bootstrap runs the CLI against it, the
    # password coming from the file it writes (trust authentication ignores it here).
    from hoopgw.agent.tokens import AgentTokens
    from hoopgw.store import open_store

    url = f"postgresql://postgres@{pg_server.host}:{pg_server.port}/{pg_database}"
    config = tmp_path / "hoopgw.toml"
    config.write_text(
        f'[gateway]\nstore = "{url}"\ninstance = "gw-1"\njournal_dir = "{tmp_path}"\n'
    )
    for folder in ("tls", "agent"):
        (tmp_path / folder).mkdir()
    (tmp_path / "store_password").write_text("secret\n")
    env = {
        **os.environ,
        "HOOPGW_BOOTSTRAP_TLS": str(tmp_path / "tls"),
        "HOOPGW_BOOTSTRAP_AGENT": str(tmp_path / "agent"),
        "HOOPGW_BOOTSTRAP_CONFIG": str(config),
        "HOOPGW_BOOTSTRAP_UID": str(os.getuid()),
        "HOOPGW_BOOTSTRAP_STORE_PASSWORD": str(tmp_path / "store_password"),
        "HOOPGW_BOOTSTRAP_STORE_HOST": f"{pg_server.host}:{pg_server.port}:*:postgres",
        "PGPASSFILE": str(tmp_path / "store.pgpass"),
    }
    script = str(ROOT / "deploy" / "compose" / "bootstrap.py")
    done = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    token = (tmp_path / "agent" / "agent.token").read_text().strip()
    store = open_store(url, instance="")
    try:
        assert AgentTokens(store).authenticate(token).name == "site"
    finally:
        store.close()
