"""Tests for hoopgw.cli.kubeconfig: the caller's kubeconfig, never the cluster's token."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from hoopgw.cli.main import main

CONFIG = """
[gateway]
store = "sqlite:///./hoopgw.db"
tls_cert = "gateway.crt"
tls_key = "gateway.key"

[[connections]]
name = "cluster"
protocol = "kubernetes"
listen = "tcp:16443:interface=0.0.0.0"
target = "10.0.0.1:6443"
allow_groups = ["agents"]
credential = { user = "hoopgw", password = "env:HOOPGW_TEST_CLUSTER_TOKEN" }
upstream_tls = { sslmode = "verify-full", ca_file = "ca.crt" }

[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
credential = { user = "app" }
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOOPGW_TEST_CLUSTER_TOKEN", "cluster-secret-token")
    (tmp_path / "gateway.crt").write_text("-----BEGIN CERTIFICATE-----\nX\n")
    (tmp_path / "gateway.key").write_text("key")
    (tmp_path / "ca.crt").write_text("ca")
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    return path


def test_a_kubeconfig_with_the_callers_token(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOOPGW_TOKEN", "hgw_caller")
    assert main(["kubeconfig", "-c", str(config), "--connection", "cluster"]) == 0
    printed = capsys.readouterr().out
    assert "cluster-secret-token" not in printed
    document = yaml.safe_load(printed)
    [cluster] = document["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:16443"  # a wildcard is not reachable
    ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    assert ca == (config.parent / "gateway.crt").read_bytes()
    assert document["users"][0]["user"] == {"token": "hgw_caller"}
    assert document["current-context"] == "hoopgw-cluster"


def test_a_token_file_and_another_address(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HOOPGW_TOKEN", raising=False)
    argv = ["kubeconfig", "-c", str(config), "--connection", "cluster", "--token-file", "t"]
    assert main([*argv, "--server", "https://gw.example:443"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["users"][0]["user"] == {"tokenFile": str(Path("t").resolve())}
    assert document["clusters"][0]["cluster"]["server"] == "https://gw.example:443"


@pytest.mark.parametrize(
    ("connection", "token", "message"),
    [
        ("pg", "hgw_x", "no Kubernetes connection named 'pg'"),
        ("nope", "hgw_x", "no Kubernetes connection named 'nope'"),
        ("cluster", "", "set HOOPGW_TOKEN"),
    ],
)
def test_refusals_say_why(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    connection: str,
    token: str,
    message: str,
) -> None:
    monkeypatch.setenv("HOOPGW_TOKEN", token)
    assert main(["kubeconfig", "-c", str(config), "--connection", connection]) != 0
    assert message in capsys.readouterr().err
