"""The Kubernetes protocol end to end: the real ``kubectl`` and the official Python client
through the gateway to the API server double (``k8sapiserver.py``), which runs exec commands
as real subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _load(name: str, file_name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


k8s = _load("hoopgw_tests_k8sapiserver", "k8sapiserver.py")
certs = _load("hoopgw_tests_certs", "certs.py")
helpers = _load("hoopgw_tests_approvals_helpers", "approvals_helpers.py")

KUBECTL = shutil.which("kubectl")
CLUSTER_TOKEN = "cluster-token-7f3a9c-never-shown"
EXAMPLE_RULES = [
    {
        "verbs": ["delete", "deletecollection"],
        "action": "review",
        "message": "deletes are reviewed",
    },
    {"resources": ["secrets"], "verbs": ["get"], "action": "allow"},
]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """The API server double with a pod ``web-1`` and a secret ``db``."""
    (tmp_path / "cluster-tls").mkdir()
    tls = certs.write_tls_files(tmp_path / "cluster-tls")
    workdir = tmp_path / "pod"
    workdir.mkdir()
    server = k8s.ApiServer(
        cert=tls.server_cert, key=tls.server_key, token=CLUSTER_TOKEN, workdir=workdir
    )
    server.tls = tls
    server.add("pods", k8s.pod("web-1"))
    server.add(
        "secrets",
        k8s.secret("db", {"password": "hunter2", "owner": "alice@example.com"}),
    )
    server.logs["web-1"] = "started\nuser bob@example.com logged in\n"
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Kube:
    """A gateway with one ``kubernetes`` connection, and kubectl pointed at it."""

    def __init__(self, gateway: Any, admin_url: str, folder: Path) -> None:
        self.gateway = gateway
        self.admin_url = admin_url
        self.key = gateway.create_key("agent", ["agents"])
        self.folder = folder
        env = {**os.environ, "HOOPGW_TOKEN": self.key}
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "hoopgw",
                "kubeconfig",
                "-c",
                str(gateway.config_path),
                "--connection",
                "k8s",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        self.kubeconfig = folder / "kubeconfig"
        self.kubeconfig.write_text(made.stdout)

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"HOME": str(self.folder), "PATH": os.environ.get("PATH", "")},
        )

    def sessions(self) -> list[dict[str, Any]]:
        listed = self.gateway.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout))

    def commands(self) -> list[dict[str, Any]]:
        found = []
        for session in self.sessions():
            shown = self.gateway.cli("sessions", "show", session["id"], "--json")
            assert shown.returncode == 0, shown.stderr
            found += [{**c, "session": session["id"]} for c in json.loads(shown.stdout)["commands"]]
        return found


@pytest.fixture
def kube(cluster: Any, gateway_document: Callable[..., Any], tmp_path: Path) -> Callable[..., Kube]:
    """Starts a gateway in front of ``cluster``: ``kube(plugins=[...], guardrails={...})``."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (./dev setup installs it)")
    (tmp_path / "gateway-tls").mkdir()
    gateway_tls = certs.write_tls_files(tmp_path / "gateway-tls")

    def start(
        *,
        plugins: tuple[str, ...] = ("recording",),
        options: dict[str, Any] | None = None,
    ) -> Kube:
        admin_port = helpers.free_port()

        def document(workdir: Path, port: int) -> dict[str, Any]:
            return {
                "gateway": {
                    "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                    "tls_cert": str(gateway_tls.server_cert),
                    "tls_key": str(gateway_tls.server_key),
                    "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
                },
                "roles": {"approver": ["dba"]},
                "connections": [
                    {
                        "name": "k8s",
                        "protocol": "kubernetes",
                        "listen": f"tcp:{port}:interface=127.0.0.1",
                        "target": cluster.target,
                        "allow_groups": ["agents"],
                        "plugins": list(plugins),
                        "credential": {"user": "gateway", "password": "env:HOOPGW_TEST_K8S_TOKEN"},
                        "upstream_tls": {
                            "sslmode": "verify-full",
                            "ca_file": str(cluster.tls.ca_cert),
                            "server_name": "localhost",
                        },
                        **(options or {}),
                    }
                ],
            }

        os.environ["HOOPGW_TEST_K8S_TOKEN"] = CLUSTER_TOKEN
        gateway = gateway_document(document)
        return Kube(gateway, f"http://127.0.0.1:{admin_port}", tmp_path)

    return start


def test_get_pods_through_the_gateway_with_the_callers_token(
    kube: Callable[..., Kube], cluster: Any
) -> None:
    k = kube()
    done = k.kubectl("get", "pods")
    assert done.returncode == 0, done.stderr + k.gateway.stderr_text()
    assert "web-1" in done.stdout and "Running" in done.stdout
    assert cluster.authorizations and set(cluster.authorizations) == {f"Bearer {CLUSTER_TOKEN}"}
    assert CLUSTER_TOKEN not in k.kubeconfig.read_text()
    commands = k.commands()
    assert any(c["text"] == "list pods -n default" for c in commands), commands
