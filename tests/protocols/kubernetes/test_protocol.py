"""The ``[connections.kubernetes]`` table and the cluster credential, as the config loader
reads them through the protocol's declared options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hoopgw_kubernetes.options import KubernetesOptions, kubernetes_options

from hoopgw.config.load import load_config, parse_config
from hoopgw.errors import ConfigError
from hoopgw.runtime import logs

REPO = Path(__file__).resolve().parents[3]
CONNECTION = """
[[connections]]
name = "k8s"
protocol = "kubernetes"
listen = "tcp:16443:interface=127.0.0.1"
target = "127.0.0.1:6443"
allow_groups = ["agents"]
credential = {{ user = "hoopgw"{password} }}
upstream_tls = {{ sslmode = "verify-full", ca_file = "/dev/null" }}
{extra}
"""


def _config(extra: str = "", password: str = ', password = "env:HOOPGW_TEST_TOKEN"') -> Any:
    text = CONNECTION.format(extra=extra, password=password)
    return parse_config(text, base_dir=Path("/etc/hoopgw")).connections[0]


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOPGW_TEST_TOKEN", "cluster-token")
    monkeypatch.setattr(logs, "_secrets", ())


def test_defaults() -> None:
    options = kubernetes_options(_config().protocol_options)
    assert options == KubernetesOptions(record_body_limit=65536, judge_shell_lines=False)


def test_a_client_certificate_instead_of_a_token(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "client.crt").write_text("pem")
    monkeypatch.setenv("HOOPGW_TEST_KEY", "key")
    extra = 'kubernetes = { client_certificate = "%s", client_key = "env:HOOPGW_TEST_KEY" }'
    options = kubernetes_options(
        _config(extra % (tmp_path / "client.crt"), password="").protocol_options
    )
    assert options.client_certificate == str(tmp_path / "client.crt")
    assert options.client_key is not None and options.client_key.reveal() == "key"


@pytest.mark.parametrize(
    ("extra", "password", "message"),
    [
        ("kubernetes = { record_body_limit = -1 }", None, "'kubernetes.record_body_limit'"),
        ("kubernetes = { record_body = 1 }", None, "'kubernetes.record_body': unknown"),
        ("kubernetes = { judge_shell_lines = 1 }", None, "expected bool, got int"),
        ('kubernetes = { client_key = "env:HOOPGW_TEST_TOKEN" }', None, "go together"),
        ('kubernetes = { client_certificate = "/nonexistent" }', None, "go together"),
        ("", "", "key 'credential.password': the cluster credential"),
    ],
)
def test_errors_name_the_key(extra: str, password: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(extra, *(() if password is None else (password,)))
    assert message in str(caught.value)


def test_the_example_loads(tmp_path: Path) -> None:
    text = (REPO / "examples" / "kubernetes.toml").read_text()
    (tmp_path / "kubernetes.toml").write_text(text)
    for name in ("gateway.crt", "gateway.key", "cluster-ca.crt", "cluster.token"):
        (tmp_path / name).write_text("placeholder")
    [cluster] = load_config(tmp_path / "kubernetes.toml").connections
    assert cluster.protocol == "kubernetes"
    assert kubernetes_options(cluster.protocol_options).judge_shell_lines is True
    assert len(cluster.plugin_options["guardrails"]["kubernetes_rules"]) == 3
