"""SSH through the real gateway with the real ``ssh`` client, against a real OpenSSH sshd."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SSH = "/usr/bin/ssh"


class Client:
    """Runs the real ``ssh`` client against a gateway, pinned to the gateway's host key."""

    def __init__(self, gateway: Any, workdir: Path, *, key: Path | None, token: str | None):
        self.gateway = gateway
        self.workdir = workdir
        self.key = key
        self.token = token
        workdir.mkdir(parents=True, exist_ok=True)
        host_key = gateway.config_path.parent / "ssh.ssh_host_ed25519_key"
        public = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(host_key)], check=True, capture_output=True, text=True
        ).stdout.split()
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(f"[{gateway.host}]:{gateway.port} {public[0]} {public[1]}\n")

    def options(self) -> list[str]:
        """``ssh`` options: no user config, strict host key check against the gateway's key."""
        args = [
            "-F",
            "/dev/null",
            "-p",
            str(self.gateway.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
        ]
        if self.key is not None:
            args += ["-i", str(self.key), "-o", "PreferredAuthentications=publickey"]
            args += ["-o", "BatchMode=yes"]
        else:
            args += ["-o", "PreferredAuthentications=password,keyboard-interactive"]
            args += ["-o", "NumberOfPasswordPrompts=1"]
        return args

    def env(self) -> dict[str, str]:
        """Environment that answers a password prompt with the token (``SSH_ASKPASS``)."""
        env = dict(os.environ)
        if self.token is not None:
            askpass = self.workdir / "askpass"
            token_file = self.workdir / "token"
            token_file.write_text(self.token)
            askpass.write_text(f"#!/bin/sh\ncat {token_file}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        return env

    def run(
        self, command: str, *extra: str, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """``ssh ... agent@HOST COMMAND`` to completion."""
        return subprocess.run(
            [SSH, *self.options(), *extra, f"agent@{self.gateway.host}", command],
            input=stdin,
            capture_output=True,
            env=self.env(),
            timeout=60,
            check=False,
        )


def generate_key(path: Path) -> Path:
    """An unencrypted Ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def add_ssh_key(gateway: Any, key: Path, identity: str = "robot", group: str = "agents") -> str:
    """Register ``key.pub`` for ``identity``; return its fingerprint."""
    added = gateway.cli(
        "keys", "add-ssh", "--identity", identity, "--group", group, "--public-key", f"{key}.pub"
    )
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    """A fresh key pair for the gateway's client (not the one sshd authorizes)."""
    return generate_key(tmp_path / "agent_key")


def test_exec_with_exit_code_and_stderr(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    done = client.run("echo out; echo err >&2; exit 3")
    assert done.stdout == b"out\n", (done.stderr, gateway.stderr_text())
    assert done.stderr == b"err\n"
    assert done.returncode == 3


def test_token_as_password_and_keyboard_interactive(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    token = gateway.create_key("robot", ["agents"])
    client = Client(gateway, tmp_path / "client", key=None, token=token)
    for method in ("password", "keyboard-interactive"):
        done = client.run("id -un", "-o", f"PreferredAuthentications={method}")
        assert done.returncode == 0, (method, done.stderr, gateway.stderr_text())
        assert done.stdout.strip() == b"root" or done.stdout.strip()


def test_wrong_key_wrong_token_and_wrong_group_are_refused(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    unregistered = Client(gateway, tmp_path / "a", key=client_key, token=None)
    done = unregistered.run("true")
    assert done.returncode == 255
    assert b"Permission denied" in done.stderr

    bad_token = Client(gateway, tmp_path / "b", key=None, token="hgw_000000000000_" + "x" * 43)
    done = bad_token.run("true")
    assert done.returncode == 255
    assert b"Permission denied" in done.stderr

    add_ssh_key(gateway, client_key, identity="outsider", group="visitors")
    outsider = Client(gateway, tmp_path / "c", key=client_key, token=None)
    done = outsider.run("true")
    assert done.returncode == 255
    assert b"may not use connection" in done.stderr, done.stderr
    import sqlite3

    gateway.stop()  # flushes records written without waiting
    with sqlite3.connect(gateway.config_path.parent / "hoopgw.db") as db:
        kinds = [
            (kind, json.loads(data).get("method"))
            for kind, data in db.execute("SELECT kind, data FROM audit_records ORDER BY seq")
        ]
    assert ("authentication_failed", "ssh-key") in kinds
    assert ("authentication_failed", "api-key") in kinds
    assert ("access_denied", "ssh-key") in kinds


def test_revoked_key_is_refused(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    fingerprint = add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    assert client.run("true").returncode == 0
    listed = gateway.cli("keys", "list-ssh", "--json")
    assert '"last_used_at": "20' in listed.stdout
    assert gateway.cli("keys", "revoke-ssh", fingerprint).returncode == 0
    done = client.run("true")
    assert done.returncode == 255
    assert b"Permission denied" in done.stderr


def test_revoking_a_key_ends_its_live_session(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    fingerprint = add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    running = subprocess.Popen(
        [SSH, *client.options(), f"agent@{gateway.host}", "echo started; sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client.env(),
    )
    try:
        assert running.stdout is not None
        assert running.stdout.readline() == b"started\n"
        assert gateway.cli("keys", "revoke-ssh", fingerprint).returncode == 0
        # The gateway checks keys every [identity] key_check_interval (10 s by default).
        _, stderr = running.communicate(timeout=30)
    finally:
        running.kill()
    assert running.returncode == 255
    assert f"SSH key {fingerprint} has been revoked".encode() in stderr


def test_host_key_is_persistent_and_shown_by_config_check(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    gateway = ssh_gateway()
    key_file = gateway.config_path.parent / "ssh.ssh_host_ed25519_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key_file)],
        check=True,
        capture_output=True,
        text=True,
    )
    fingerprint = listed.stdout.split()[1]
    assert f"host key {fingerprint}" in gateway.stderr_text()
    checked = gateway.cli("config", "check")
    assert checked.returncode == 0
    assert f"ssh: host key: {fingerprint}" in checked.stdout
    before = key_file.read_bytes()
    gateway.stop()
    gateway.process = subprocess.Popen(
        [*gateway_command(), "run", "-c", str(gateway.config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=gateway.config_path.parent,
    )
    try:
        wait_listening(gateway.host, gateway.port)
        assert key_file.read_bytes() == before
    finally:
        gateway.stop()


def test_unknown_or_changed_target_host_key_is_refused(
    ssh_gateway: Callable[..., Any], ssh_server: Any, client_key: Path, tmp_path: Path
) -> None:
    other = generate_key(tmp_path / "other_host_key")
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[{ssh_server.host}]:{ssh_server.port} {kind} {blob}\n")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    for known_hosts, expected in ((changed, b"CHANGED"), (empty, b"is unknown")):
        gateway = ssh_gateway(ssh={"known_hosts": str(known_hosts)})
        add_ssh_key(gateway, client_key)
        done = Client(
            gateway, tmp_path / f"client-{known_hosts.stem}", key=client_key, token=None
        ).run("true")
        assert done.returncode == 255
        assert expected in done.stderr, done.stderr
        assert "refused" in gateway.stderr_text()


def test_host_key_fingerprints_instead_of_known_hosts(
    ssh_gateway: Callable[..., Any], ssh_server: Any, client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway(connection={"ssh": {"host_key_fingerprints": [ssh_server.fingerprint()]}})
    add_ssh_key(gateway, client_key)
    done = Client(gateway, tmp_path / "client", key=client_key, token=None).run("echo ok")
    assert done.stdout == b"ok\n", done.stderr


def test_exec_commands_and_exit_codes_are_recorded(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway(plugins=["recording"])
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    assert client.run("exit 0").returncode == 0
    assert client.run("exit 4").returncode == 4
    # An exit signal comes back as exit-signal; OpenSSH's client then exits with 255.
    assert client.run("kill -TERM $$").returncode == 255
    commands = [recorded_commands(gateway, s)[0] for s in session_ids(gateway)]
    outcomes = {(c["text"], c["kind"], c["status"], c["error_code"]) for c in commands}
    assert outcomes == {
        ("exit 0", "exec", "ok", ""),
        ("exit 4", "exec", "error", "4"),
        ("kill -TERM $$", "exec", "error", "SIGTERM"),
    }, commands
    session = gateway.cli("sessions", "show", session_ids(gateway)[0], "--json")
    described = json.loads(session.stdout)
    assert described["identity"] == "robot"
    assert described["method"] == "ssh-key"
    assert described["protocol"] == "ssh"
    assert described["attributes"]["ssh_user"] == "agent"


def session_ids(gateway: Any) -> list[str]:
    """Ids of the gateway's recorded sessions, newest first."""
    listed = gateway.cli("sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [s["id"] for s in json.loads(listed.stdout)]


def recorded_commands(gateway: Any, session_id: str) -> list[dict[str, Any]]:
    """The recorded commands of one session."""
    shown = gateway.cli("sessions", "show", session_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout)["commands"])


def test_env_only_from_the_allow_list(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway = ssh_gateway(ssh={"env_allow": ["LC_*"]})
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    env = {"LC_HOOPGW": "allowed", "HOOPGW_SECRET": "refused"}
    done = subprocess.run(
        [
            SSH,
            *client.options(),
            "-o",
            "SendEnv=LC_HOOPGW HOOPGW_SECRET",
            f"agent@{gateway.host}",
            'echo "$LC_HOOPGW/$HOOPGW_SECRET"',
        ],
        capture_output=True,
        env={**client.env(), **env},
        timeout=60,
        check=False,
    )
    assert done.stdout == b"allowed/\n", done.stderr


def _interactive_shell(
    pexpect: Any, gateway: Any, client_key: Path, tmp_path: Path, dimensions: tuple[int, int]
) -> tuple[Client, Any]:
    """A client of ``gateway`` (``client_key`` added for ``agent``) and its interactive shell
    on a pty of ``dimensions`` (rows, columns), spawned with pexpect."""
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    shell = pexpect.spawn(
        SSH,
        [*client.options(), "-tt", f"agent@{gateway.host}"],
        env=client.env(),
        dimensions=dimensions,
        timeout=20,
    )
    return client, shell


def test_interactive_shell_over_a_pty(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    gateway = ssh_gateway()
    _, shell = _interactive_shell(pexpect, gateway, client_key, tmp_path, (24, 80))
    try:
        shell.sendline("export PS1='READY> '; stty -echo")
        shell.expect("READY> ")
        shell.sendline("tty; stty size")
        shell.expect(r"/dev/pts/\d+")
        shell.expect("24 80")
        shell.expect("READY> ")
        shell.setwinsize(40, 120)
        shell.sendline("stty size")
        shell.expect("40 120")
        shell.expect("READY> ")
        shell.sendline("echo SLEEPING; sleep 30")
        shell.expect("SLEEPING")
        # Ctrl-C through the pty, once sleep is the foreground job (a ^C that reaches the
        # shell before it forks is ignored by the interactive shell, under load).
        time.sleep(0.5)
        shell.sendintr()
        shell.expect("READY> ")
        shell.sendline("exit 7")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert shell.exitstatus == 7


def gateway_command() -> list[str]:
    """How conftest starts the gateway."""
    import sys

    return [sys.executable, "-m", "hoopgw"]


def wait_listening(host: str, port: int, timeout: float = 20.0) -> None:
    """Wait until ``host:port`` accepts TCP connections."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port}")


def test_session_channels_replay_as_asciicast(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    from hoopgw.audit.asciicast import read_asciicast

    pexpect = pytest.importorskip("pexpect")
    gateway = ssh_gateway(plugins=["recording"])
    client, shell = _interactive_shell(pexpect, gateway, client_key, tmp_path, (30, 100))
    try:
        shell.sendline("export PS1='READY> '")
        shell.expect("READY> ")
        shell.sendline("echo hello-$((6*7))")
        shell.expect("hello-42")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    done = client.run("echo out; echo err >&2")
    assert done.returncode == 0

    exec_session, shell_session = session_ids(gateway)
    replayed = gateway.cli("replay", shell_session, "--asciicast")
    assert replayed.returncode == 0, replayed.stderr
    cast = read_asciicast(io.StringIO(replayed.stdout))
    assert cast.header["width"] == 100
    assert cast.header["height"] == 30
    assert cast.header["env"]["TERM"]
    assert "hello-42" in cast.output()
    offsets = [offset for offset, _, _ in cast.events]
    assert offsets == sorted(offsets)

    played = gateway.cli("replay", shell_session, "--terminal")
    assert "hello-42" in played.stdout

    replayed = gateway.cli("replay", "--asciicast", "--channel", "1", exec_session)
    cast = read_asciicast(io.StringIO(replayed.stdout))
    assert (cast.header["width"], cast.header["height"]) == (80, 24)
    assert "out\n" in cast.output()
    assert "err\n" in cast.output()
    transcript = gateway.cli("replay", exec_session)
    assert "echo out; echo err >&2" in transcript.stdout


def free_local_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_gateway_stop_ends_sessions_with_a_goodbye(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    import time

    gateway = ssh_gateway(plugins=["recording"])
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    running = subprocess.Popen(
        [SSH, *client.options(), f"agent@{gateway.host}", "echo started; sleep 30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client.env(),
    )
    assert running.stdout is not None
    assert running.stdout.readline() == b"started\n"
    started = time.monotonic()
    gateway.stop()
    _, stderr = running.communicate(timeout=20)
    assert time.monotonic() - started < 15
    assert running.returncode == 255
    assert b"gateway stopping" in stderr, stderr
    [session_id] = session_ids(gateway)
    shown = json.loads(gateway.cli("sessions", "show", session_id, "--json").stdout)
    assert shown["end_reason"] == "gateway stopping"
    [command] = shown["commands"]
    assert command["status"] == "aborted"


def test_gateway_logs_in_to_the_target_with_a_stored_password(
    ssh_gateway: Callable[..., Any], ssh_server: Any, client_key: Path, tmp_path: Path
) -> None:
    import secrets
    import sys

    password = secrets.token_urlsafe(16)
    user = sys.modules["hoopgw_tests_sshserver"].password_user(password)
    password_file = tmp_path / "target-password"
    password_file.write_text(password)
    gateway = ssh_gateway(
        connection={"credential": {"user": user, "password": f"file:{password_file}"}}
    )
    add_ssh_key(gateway, client_key)
    client = Client(gateway, tmp_path / "client", key=client_key, token=None)
    done = client.run("id -un")
    assert done.returncode == 0, (done.stderr, gateway.stderr_text())
    assert done.stdout == f"{user}\n".encode()
    assert password.encode() not in Path(gateway.stderr_path).read_bytes()

    password_file.write_text("wrong")
    wrong = ssh_gateway(
        connection={"credential": {"user": user, "password": f"file:{password_file}"}}
    )
    add_ssh_key(wrong, client_key)
    done = Client(wrong, tmp_path / "client2", key=client_key, token=None).run("id -un")
    assert done.returncode == 255
    assert b"refused the gateway's credential" in done.stderr, done.stderr
