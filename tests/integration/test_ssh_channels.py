"""SFTP, scp and port forwarding through the gateway: refused by default, allowed by config,
with SFTP file operations recorded as commands."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _ssh_tests() -> Any:
    name = "hoopgw_tests_test_ssh"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_ssh.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ssh_tests = _ssh_tests()


def _client(gateway: Any, tmp_path: Path, name: str = "client") -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = tmp_path / f"{name}_key"
    if not key.exists():
        ssh_tests.generate_key(key)
        ssh_tests.add_ssh_key(gateway, key)
    return ssh_tests.Client(gateway, tmp_path / name, key=key, token=None)


def _sftp(client: Any, batch: str) -> subprocess.CompletedProcess[bytes]:
    options = [o.replace("-p", "-P") if o == "-p" else o for o in client.options()]
    script = client.workdir / "batch"
    script.write_text(batch)
    return subprocess.run(
        ["sftp", *options, "-b", str(script), f"agent@{client.gateway.host}"],
        capture_output=True,
        env=client.env(),
        timeout=60,
        check=False,
    )


def test_sftp_refused_by_default_then_recorded_file_operations(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    source = tmp_path / "upload.txt"
    source.write_text("payload\n")
    remote = tmp_path / "remote"
    remote.mkdir()
    batch = (
        f"put {source} {remote}/a.txt\n"
        f"rename {remote}/a.txt {remote}/b.txt\n"
        f"get {remote}/b.txt {tmp_path}/back.txt\n"
        f"rm {remote}/b.txt\n"
    )

    refused = _sftp(_client(ssh_gateway(), tmp_path / "off"), batch)
    assert refused.returncode != 0
    assert b"subsystem request failed" in refused.stderr, refused.stderr

    gateway = ssh_gateway(plugins=["recording"], ssh={"allow_sftp": True})
    done = _sftp(_client(gateway, tmp_path / "on"), batch)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back.txt").read_text() == "payload\n"
    assert list(remote.iterdir()) == []
    [session_id] = ssh_tests.session_ids(gateway)
    commands = ssh_tests.recorded_commands(gateway, session_id)
    assert commands[0]["kind"] == "subsystem" and commands[0]["text"] == "sftp"
    texts = [(c["text"], c["status"]) for c in commands[1:]]
    assert (f"open {remote}/a.txt write,create,truncate", "ok") in texts
    assert (f"posix-rename@openssh.com {remote}/a.txt {remote}/b.txt", "ok") in texts or (
        f"rename {remote}/a.txt {remote}/b.txt",
        "ok",
    ) in texts
    assert (f"open {remote}/b.txt read", "ok") in texts
    assert (f"remove {remote}/b.txt", "ok") in texts


def test_sftp_download_that_masking_would_change_is_cut(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    secret = tmp_path / "customers.txt"
    secret.write_text("mail: alice.liddell@example.com\n")
    gateway = ssh_gateway(plugins=["masking", "recording"], ssh={"allow_sftp": True})
    done = _sftp(_client(gateway, tmp_path), f"get {secret} {tmp_path}/copy.txt\n")
    assert done.returncode != 0
    copy = tmp_path / "copy.txt"
    assert not copy.exists() or b"alice.liddell" not in copy.read_bytes()


def test_scp_over_exec_and_over_sftp(ssh_gateway: Callable[..., Any], tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(bytes(range(256)) * 64)
    gateway = ssh_gateway(ssh={"allow_sftp": True})
    client = _client(gateway, tmp_path)
    options = [o.replace("-p", "-P") if o == "-p" else o for o in client.options()]
    for mode, target in (("-O", "legacy.bin"), ("-s", "sftp.bin")):
        done = subprocess.run(
            ["scp", mode, *options, str(source), f"agent@{gateway.host}:{tmp_path / target}"],
            capture_output=True,
            env=client.env(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (mode, done.stderr)
        assert (tmp_path / target).read_bytes() == source.read_bytes()


def _banner_through_forward(client: Any, ssh_server: Any) -> bytes:
    local = ssh_tests.free_local_port()
    forward = subprocess.Popen(
        [
            ssh_tests.SSH,
            *client.options(),
            "-N",
            "-L",
            f"127.0.0.1:{local}:{ssh_server.host}:{ssh_server.port}",
            f"agent@{client.gateway.host}",
        ],
        env=client.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
                    conn.settimeout(5)
                    try:
                        return conn.recv(64)
                    except (TimeoutError, ConnectionResetError):
                        return b""
            except OSError:
                time.sleep(0.1)
        raise AssertionError("ssh -L did not listen")
    finally:
        forward.terminate()
        try:
            forward.wait(10)
        except subprocess.TimeoutExpired:
            # ssh may linger on SIGTERM while it says goodbye on a loaded machine.
            forward.kill()
            forward.wait(10)


def test_port_forwarding_refused_by_default_then_allowed(
    ssh_gateway: Callable[..., Any], ssh_server: Any, tmp_path: Path
) -> None:
    refused = _banner_through_forward(_client(ssh_gateway(), tmp_path / "off"), ssh_server)
    assert refused == b""
    gateway = ssh_gateway(plugins=["recording"], ssh={"allow_port_forwarding": True})
    banner = _banner_through_forward(_client(gateway, tmp_path / "on"), ssh_server)
    assert banner.startswith(b"SSH-2.0-")
    [session_id] = ssh_tests.session_ids(gateway)
    [command] = ssh_tests.recorded_commands(gateway, session_id)
    assert command["kind"] == "direct-tcpip"
    assert command["text"] == f"{ssh_server.host}:{ssh_server.port}"


def test_agent_forwarding_refused_by_default_then_allowed(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env_lines = dict(
        part.split("=", 1)
        for line in agent.stdout.splitlines()
        for part in line.split(";")[:1]
        if "=" in part
    )
    try:
        results = {}
        for allowed in (False, True):
            gateway = ssh_gateway(ssh={"allow_agent_forwarding": allowed})
            client = _client(gateway, tmp_path / f"agent-{allowed}")
            env = {**client.env(), **env_lines}
            subprocess.run(["ssh-add", str(client.key)], env=env, capture_output=True, check=True)
            results[allowed] = subprocess.run(
                [ssh_tests.SSH, *client.options(), "-A", f"agent@{gateway.host}", "ssh-add -l"],
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
        assert results[False].returncode != 0
        assert results[True].returncode == 0, results[True].stderr
        assert b"ED25519" in results[True].stdout
    finally:
        subprocess.run(["kill", env_lines["SSH_AGENT_PID"]], check=False)
