"""A real OpenSSH ``sshd`` for integration tests: own config, host key, port and authorized key.

:func:`start_sshd` runs ``/usr/sbin/sshd -D -e -f CONFIG`` (Debian's openssh-server) on a free
loopback port as the current user (root in the test containers; sshd needs root to log users
in), with the user's key in its own ``authorized_keys`` file. The system's sshd and its keys
are never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import attrs

SSHD = "/usr/sbin/sshd"
PASSWORD_USER = "hoopgw-ssh-test"
"""A system user that may log in to the test sshd with a password (see :func:`password_user`)."""
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
START_TIMEOUT = 10.0


@attrs.define(kw_only=True)
class SshServer:
    """A running sshd."""

    host: str
    port: int
    user: str
    """The login user (the user running the tests)."""
    directory: Path
    """Holds the config, keys, ``known_hosts`` and the log."""
    client_key: Path
    """Private key authorized for :attr:`user` (the gateway's stored credential)."""
    host_key: Path
    """The server's private host key."""
    known_hosts: Path
    """An OpenSSH ``known_hosts`` file naming this server's host key."""
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        """``HOST:PORT`` for a connection's ``target``."""
        return f"{self.host}:{self.port}"

    def fingerprint(self) -> str:
        """The host key's ``SHA256:...`` fingerprint, as ``ssh-keygen -lf`` prints it."""
        return key_fingerprint(self.host_key.with_suffix(".pub"))

    def log_text(self) -> str:
        """What sshd logged so far."""
        return (self.directory / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop sshd (SIGTERM, then kill)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def available() -> str | None:
    """Why sshd cannot run here, or None when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (Debian package openssh-server; ./dev setup installs it)"
    if os.geteuid() != 0:
        return "sshd must run as root to log a user in"
    return None


def generate_key(path: Path, kind: str = "ed25519") -> Path:
    """Make an unencrypted key pair at ``path`` and ``path.pub``; return ``path``."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", f"test@{path.name}", "-f", str(path)],
        check=True,
    )
    return path


def key_fingerprint(public_key: Path) -> str:
    """``SHA256:...`` of a public key file."""
    listed = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    )
    return listed.stdout.split()[1]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_sshd(directory: Path, *, host: str = "127.0.0.1", extra_config: str = "") -> SshServer:
    """Start sshd with everything in ``directory``; wait until it accepts connections."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    host_key = directory / "ssh_host_ed25519_key"
    if not host_key.exists():
        generate_key(host_key)
    client_key = directory / "client_key"
    if not client_key.exists():
        generate_key(client_key)
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    port = _free_port(host)
    config = directory / "sshd_config"
    config.write_text(
        f"""ListenAddress {host}:{port}
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
X11Forwarding no
PermitTTY yes
AcceptEnv LANG LC_* HOOPGW_*
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
{extra_config}
Match User {PASSWORD_USER}
    PasswordAuthentication yes
"""
    )
    public_host_key = host_key.with_suffix(".pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {public_host_key[0]} {public_host_key[1]}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = (directory / "sshd.log").open("ab")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    log.close()
    server = SshServer(
        host=host,
        port=port,
        user=_user_name(),
        directory=directory,
        client_key=client_key,
        host_key=host_key,
        known_hosts=known_hosts,
        process=process,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{server.log_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as probe:
                if probe.recv(4).startswith(b"SSH-"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"sshd did not answer on {host}:{port}:\n{server.log_text()}")


def password_user(password: str) -> str:
    """Make sure :data:`PASSWORD_USER` exists (a system user with a home folder) and has
    ``password``; return its name. Only the tests' sshd accepts passwords for it."""
    import pwd

    try:
        pwd.getpwnam(PASSWORD_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--create-home",
                "--home-dir",
                f"/var/lib/{PASSWORD_USER}",
                "--shell",
                "/bin/sh",
                PASSWORD_USER,
            ],
            check=True,
        )
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{password}\n", text=True, check=True)
    return PASSWORD_USER


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
