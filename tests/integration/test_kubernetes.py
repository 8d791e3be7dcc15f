"""The Kubernetes protocol end to end: the real ``kubectl`` and the official Python client
through the gateway to the API server double (``k8sapiserver.py``), which runs exec commands
as real subprocesses."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
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


def _guarded(kube: Callable[..., Kube], **guardrails: Any) -> Kube:
    return kube(
        plugins=("recording", "masking", "guardrails", "approval"),
        options={
            "guardrails": {"kubernetes_rules": EXAMPLE_RULES, **guardrails},
            "approval": {"approvers": ["dba"], "timeout": 60},
        },
    )


def test_exec_returns_output_and_exit_code(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube)
    done = k.kubectl("exec", "web-1", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert done.returncode == 3, done.stderr + k.gateway.stderr_text()
    assert done.stdout == "hello\n"
    assert "oops" in done.stderr
    assert cluster.exec_commands == [["sh", "-c", "echo hello; echo oops >&2; exit 3"]]
    [command] = [c for c in k.commands() if c["kind"] == "exec"]
    assert command["verdict"] == "allow" and command["status"] == "error"
    assert command["text"] == "sh -c 'echo hello; echo oops >&2; exit 3'"


def test_denied_exec_never_runs_on_the_target(
    kube: Callable[..., Kube], cluster: Any, tmp_path: Path
) -> None:
    k = _guarded(kube, deny_commands=["touch"])
    done = k.kubectl("exec", "web-1", "--", "touch", "marker")
    assert done.returncode == 126, done.stderr
    assert "hoopgw refused the command" in done.stderr
    assert "code=HGW-DENIED" in done.stderr  # the rule and what to do next, as docs/errors.md says
    assert not (cluster.workdir / "marker").exists()
    assert cluster.exec_commands == []
    [command] = [c for c in k.commands() if c["kind"] == "exec"]
    assert command["verdict"] == "block" and command["status"] == "blocked"


def test_held_exec_runs_once_approved(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube, review_commands=["touch"])
    alice = helpers.Admin(k.admin_url, k.gateway.create_key("alice", ["dba"]))
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(k.kubectl("exec", "web-1", "--", "touch", "marker"))
    )
    worker.start()
    try:
        [review] = helpers.wait_for(
            lambda: alice.cli_json("reviews", "list", "--pending") or None, what="a review"
        )
        assert "touch marker" in str(review)
        assert not (cluster.workdir / "marker").exists()
        decided = alice.cli("reviews", "approve", review["id"])
        assert decided.returncode == 0, decided.stderr
    finally:
        worker.join(60)
    [done] = results
    assert done.returncode == 0, done.stderr
    assert (cluster.workdir / "marker").exists()


def test_get_is_allowed_and_delete_held_under_the_example_policy(
    kube: Callable[..., Kube], cluster: Any
) -> None:
    k = _guarded(kube)
    alice = helpers.Admin(k.admin_url, k.gateway.create_key("alice", ["dba"]))
    assert k.kubectl("get", "pods").returncode == 0
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(k.kubectl("delete", "pod", "web-1", "--wait=false"))
    )
    worker.start()
    try:
        [review] = helpers.wait_for(
            lambda: alice.cli_json("reviews", "list", "--pending") or None, what="a review"
        )
        assert "delete pods/web-1 -n default" in str(review)
        assert ("default", "web-1") in cluster.objects["pods"]
        decided = alice.cli("reviews", "approve", review["id"])
        assert decided.returncode == 0, decided.stderr
    finally:
        worker.join(60)
    [done] = results
    assert done.returncode == 0, done.stderr
    assert ("default", "web-1") not in cluster.objects["pods"]


def test_secrets_and_logs_are_masked(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube)
    shown = k.kubectl("get", "secret", "db", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)["data"]
    owner = base64.b64decode(data["owner"]).decode()
    assert "alice@example.com" not in owner and owner
    logs = k.kubectl("logs", "web-1")
    assert logs.returncode == 0, logs.stderr
    assert "started" in logs.stdout and "bob@example.com" not in logs.stdout
    recorded = json.dumps(k.commands())
    assert "alice@example.com" not in recorded and "bob@example.com" not in recorded


def test_secrets_are_denied_by_default(kube: Callable[..., Kube], cluster: Any) -> None:
    k = kube(plugins=("recording", "guardrails"))
    done = k.kubectl("get", "secret", "db")
    assert done.returncode == 1
    assert "secrets are denied by default" in done.stderr
    assert not any("/secrets" in line for line in cluster.requests)


def test_watch_streams_events(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube)
    done = k.kubectl("get", "--raw", "/api/v1/namespaces/default/pods?watch=true")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "web-1")]
    assert any(c["text"] == "watch pods -n default" for c in k.commands())


def test_python_client_stream_api(kube: Callable[..., Kube], cluster: Any, tmp_path: Path) -> None:
    client = pytest.importorskip("kubernetes.client")
    stream = pytest.importorskip("kubernetes.stream")
    k = _guarded(kube)
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{k.gateway.port}"
    configuration.ssl_ca_cert = str(tmp_path / "gateway-tls" / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {k.key}"}
    api = client.CoreV1Api(client.ApiClient(configuration))
    assert [p.metadata.name for p in api.list_namespaced_pod("default").items] == ["web-1"]
    response = stream.stream(
        api.connect_get_namespaced_pod_exec,
        "web-1",
        "default",
        command=["sh", "-c", "echo from-python; exit 2"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    response.run_forever(timeout=20)
    assert response.returncode == 2, k.gateway.stderr_text()
    assert "from-python" in response.read_stdout()
    assert cluster.exec_commands == [["sh", "-c", "echo from-python; exit 2"]]


def test_no_token_crosses_over(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube)
    done = k.kubectl("get", "pods", "-v=9")  # kubectl logs every response header at -v=9
    assert done.returncode == 0, done.stderr
    assert CLUSTER_TOKEN not in done.stdout + done.stderr
    assert set(cluster.authorizations) == {f"Bearer {CLUSTER_TOKEN}"}
    assert not any(k.key in a for a in cluster.authorizations)
    reached = len(cluster.requests)
    unauthenticated = k.kubectl("--token", "hgw_wrong", "get", "pods")
    assert unauthenticated.returncode == 1
    assert "You must be logged in to the server (hoopgw: invalid API key)" in unauthenticated.stderr
    assert len(cluster.requests) == reached  # nothing reached the cluster


def _raw(k: Kube, data: bytes) -> bytes:
    """``data`` sent to the gateway over TLS as one write; what it answers until it closes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a test client; the gateway's answer is what is checked
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection((k.gateway.host, k.gateway.port), timeout=20) as plain,
        context.wrap_socket(plain) as tls,
    ):
        tls.sendall(data)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return answer


def _smuggling(key: str) -> dict[str, bytes]:
    """Requests a lenient parser and the gateway could frame differently; behind each body, a
    request that must never be read."""
    head = f"Host: gw\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    post = "POST /api/v1/namespaces/default/pods HTTP/1.1\r\n" + head
    behind = f"DELETE /api/v1/namespaces/default/pods/web-1 HTTP/1.1\r\n{head}\r\n".encode()
    return {
        "two Content-Length": (post + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}").encode()
        + behind,
        "Transfer-Encoding and Content-Length": (
            post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        ).encode()
        + behind,
        "obs-fold": (
            "GET /api/v1/namespaces/default/pods HTTP/1.1\r\n" + head + "X-A: 1\r\n b\r\n\r\n"
        ).encode(),
        "bad chunk size": (
            post + "Transfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n"
        ).encode()
        + behind,
    }


def test_what_two_parsers_could_read_differently_never_reaches_the_cluster(
    kube: Callable[..., Kube], cluster: Any
) -> None:
    k = kube()
    listing = (
        "GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {k.key}\r\nConnection: close\r\n\r\n"
    )
    answer = _raw(k, listing.encode())  # the raw client works: a plain request is relayed
    assert answer.startswith(b"HTTP/1.1 200 ") and b"web-1" in answer, answer[:500]
    reached = list(cluster.requests)
    for shape, data in _smuggling(k.key).items():
        answer = _raw(k, data)
        assert answer.startswith(b"HTTP/1.1 400 "), (shape, answer[:500])
        assert answer.count(b"HTTP/1.1 ") == 1, shape  # nothing behind it was read
        status = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert status["reason"] == "BadRequest" and "malformed HTTP request" in status["message"]
    assert cluster.requests == reached  # nothing reached the cluster
    assert k.kubectl("get", "pod", "web-1").returncode == 0  # and the gateway serves on


def test_sessions_are_listed_and_exec_replays_as_asciicast(
    kube: Callable[..., Kube], cluster: Any
) -> None:
    from hoopgw.audit.asciicast import read_asciicast

    k = _guarded(kube)
    done = k.kubectl("exec", "web-1", "--", "sh", "-c", "echo line-one; echo line-two")
    assert done.returncode == 0, done.stderr
    [command] = [c for c in k.commands() if c["kind"] == "exec"]
    replayed = k.gateway.cli(
        "replay", "--asciicast", "--channel", str(command["seq"]), command["session"]
    )
    assert replayed.returncode == 0, replayed.stderr
    cast = read_asciicast(io.StringIO(replayed.stdout))
    assert "line-one" in cast.output() and "line-two" in cast.output()


def test_lines_into_an_interactive_exec_are_judged(kube: Callable[..., Kube], cluster: Any) -> None:
    k = kube(
        plugins=("recording", "guardrails"),
        options={
            "guardrails": {"deny_commands": ["touch"]},
            "kubernetes": {"judge_shell_lines": True},
        },
    )
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(k.kubeconfig), "exec", "-i", "web-1", "--", "sh"],
        input="echo one\ntouch marker\necho two\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(k.folder), "PATH": os.environ.get("PATH", "")},
    )
    assert done.stdout == "one\n", done.stderr
    assert "hoopgw refused the command" in done.stderr
    assert not (cluster.workdir / "marker").exists()
    lines = [(c["text"], c["verdict"]) for c in k.commands() if c["kind"] == "shell-line"]
    assert lines == [("echo one", "allow"), ("touch marker", "block")]


def test_large_exec_output_arrives_whole(kube: Callable[..., Kube], cluster: Any) -> None:
    k = _guarded(kube)
    script = "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end"
    done = k.kubectl("exec", "web-1", "--", "sh", "-c", script, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x" * 3000000 + "\nend\n"


def test_a_terminal_exec_is_resized_and_its_lines_judged(
    kube: Callable[..., Kube], cluster: Any
) -> None:
    pexpect = pytest.importorskip("pexpect")
    k = kube(
        plugins=("recording", "guardrails"),
        options={
            "guardrails": {"deny_commands": ["touch"]},
            "kubernetes": {"judge_shell_lines": True},
        },
    )
    shell = pexpect.spawn(
        KUBECTL or "kubectl",
        ["--kubeconfig", str(k.kubeconfig), "exec", "-it", "web-1", "--", "sh"],
        env={"HOME": str(k.folder), "PATH": os.environ.get("PATH", ""), "TERM": "xterm"},
        dimensions=(33, 101),
        timeout=30,
    )
    try:
        shell.sendline("export PS1='READ''Y> '")
        shell.expect("READY> ")
        shell.sendline("stty size")
        shell.expect("33 101")
        shell.expect("READY> ")
        shell.sendline("touch marker")
        shell.expect("hoopgw refused the command")
        shell.expect("READY> ")
        shell.send("echo typo\x7f\x7f\x7f\x7fok-$((1+1))\r")
        shell.expect("ok-2")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert not (cluster.workdir / "marker").exists()
    lines = [(c["text"], c["verdict"]) for c in k.commands() if c["kind"] == "shell-line"]
    assert ("touch marker", "block") in lines
    assert ("echo ok-$((1+1))", "allow") in lines
    [command] = [c for c in k.commands() if c["kind"] == "exec"]
    replayed = k.gateway.cli(
        "replay", "--asciicast", "--channel", str(command["seq"]), command["session"]
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "ok-2" in replayed.stdout


def _client_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a client certificate it signed for ``CN=hoopgw-gateway``: (ca, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("client CA"))
        .issuer_name(name("client CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("hoopgw-gateway"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "client-ca.crt", folder / "client.crt", folder / "client.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_the_gateway_can_log_in_with_a_client_certificate(
    gateway_document: Callable[..., Any], tmp_path: Path
) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (./dev setup installs it)")
    (tmp_path / "cluster-tls").mkdir()
    tls = certs.write_tls_files(tmp_path / "cluster-tls")
    client_ca, client_cert, client_key = _client_certificate(tmp_path)
    workdir = tmp_path / "pod"
    workdir.mkdir()
    server = k8s.ApiServer(
        cert=tls.server_cert,
        key=tls.server_key,
        token=CLUSTER_TOKEN,
        workdir=workdir,
        client_ca=client_ca,
    )
    server.add("pods", k8s.pod("web-1"))
    server.start()
    (tmp_path / "gateway-tls").mkdir()
    gateway_tls = certs.write_tls_files(tmp_path / "gateway-tls")
    try:

        def document(folder: Path, port: int) -> dict[str, Any]:
            return {
                "gateway": {
                    "store": f"sqlite:///{folder / 'hoopgw.db'}",
                    "tls_cert": str(gateway_tls.server_cert),
                    "tls_key": str(gateway_tls.server_key),
                },
                "connections": [
                    {
                        "name": "k8s",
                        "protocol": "kubernetes",
                        "listen": f"tcp:{port}:interface=127.0.0.1",
                        "target": server.target,
                        "allow_groups": ["agents"],
                        "plugins": ["recording"],
                        "credential": {"user": "gateway"},
                        "upstream_tls": {
                            "sslmode": "verify-full",
                            "ca_file": str(tls.ca_cert),
                            "server_name": "localhost",
                        },
                        "kubernetes": {
                            "client_certificate": str(client_cert),
                            "client_key": f"file:{client_key}",
                        },
                    }
                ],
            }

        k = Kube(gateway_document(document), "", tmp_path)
        done = k.kubectl("get", "pods")
        assert done.returncode == 0, done.stderr + k.gateway.stderr_text()
        assert "web-1" in done.stdout
        assert set(server.authorizations) == {"client-certificate:hoopgw-gateway"}
    finally:
        server.stop()
