"""Find the MariaDB (or MySQL) server that integration tests use, or start a throwaway one.

Integration tests read the server's address from ``HOOPGW_TEST_MYHOST`` (default ``127.0.0.1``)
and ``HOOPGW_TEST_MYPORT`` (default ``3306``) and connect as ``root`` without a password.
``./dev test`` runs this file as a script when nothing answers there::

    python tests/integration/mysqlserver.py check --host 127.0.0.1 --port 3306
    eval "$(python tests/integration/mysqlserver.py start --base-dir .hoopgw-test)"
    python tests/integration/mysqlserver.py stop --data-dir "$HOOPGW_TEST_MYDATA"

``start`` prints ``HOOPGW_TEST_MYHOST``, ``HOOPGW_TEST_MYPORT`` and ``HOOPGW_TEST_MYDATA`` as
shell assignments.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3306
START_TIMEOUT = 60.0


class MyServerError(RuntimeError):
    """A throwaway server could not be created, started or stopped."""


@attrs.frozen(kw_only=True)
class MyAddress:
    """Where a MySQL or MariaDB server listens."""

    host: str
    """Host name or IP address."""
    port: int
    """TCP port."""


def address_from_env(environ: Mapping[str, str] = os.environ) -> MyAddress:
    """The test server's address from ``HOOPGW_TEST_MYHOST`` and ``HOOPGW_TEST_MYPORT``."""
    host = environ.get("HOOPGW_TEST_MYHOST") or DEFAULT_HOST
    raw_port = environ.get("HOOPGW_TEST_MYPORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"HOOPGW_TEST_MYPORT must be a TCP port, not {raw_port!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"HOOPGW_TEST_MYPORT must be in 1-65535, not {port}")
    return MyAddress(host=host, port=port)


def server_answers(address: MyAddress, *, timeout: float = 2.0) -> bool:
    """Whether a MySQL-protocol server greets at ``address`` (protocol version 10), so a port
    held by another kind of server does not count."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            header = sock.recv(5)
            return len(header) == 5 and header[4] == 10
    except OSError:
        return False


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port on ``host`` that nothing listens on (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _program(name: str, *alternatives: str) -> str:
    for candidate in (name, *alternatives):
        found = shutil.which(candidate) or (
            f"/usr/sbin/{candidate}" if Path(f"/usr/sbin/{candidate}").exists() else None
        )
        if found:
            return found
    raise MyServerError(f"{name} is not installed (Debian package mariadb-server)")


def _os_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        return "root"
    return "mysql"


def start_server(
    base_dir: Path,
    *,
    host: str = DEFAULT_HOST,
    preferred_port: int = DEFAULT_PORT,
    options: Sequence[str] = (),
) -> tuple[MyAddress, Path]:
    """Create and start a throwaway server with ``root`` and no password, on ``host`` at
    ``preferred_port`` when it is free, else on a free port; ``options`` are further server
    options (``--ssl-cert=...``).

    :returns: the address and the data directory (give it to :func:`stop_server`).
    :raises MyServerError: the server could not be initialised or did not answer in time.
    """
    user = _os_user()
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="my-", dir=base_dir.resolve()))
    if user not in (None, "root"):
        shutil.chown(data_dir, user=user)
    port = free_port(host)
    if preferred_port:
        with socket.socket() as probe:
            try:
                probe.bind((host, preferred_port))
                port = preferred_port
            except OSError:
                pass
    install = subprocess.run(
        [
            _program("mariadb-install-db", "mysql_install_db"),
            f"--datadir={data_dir / 'data'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *([f"--user={user}"] if user else []),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode != 0:
        raise MyServerError(f"mariadb-install-db failed:\n{install.stdout}{install.stderr}")
    log = data_dir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                _program("mariadbd", "mysqld"),
                "--no-defaults",
                f"--datadir={data_dir / 'data'}",
                f"--port={port}",
                f"--bind-address={host}",
                f"--socket={data_dir / 'mysqld.sock'}",
                f"--pid-file={data_dir / 'mysqld.pid'}",
                "--innodb-flush-log-at-trx-commit=0",
                "--max-allowed-packet=1G",
                *options,
                *([f"--user={user}"] if user else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (data_dir / "server.pid").write_text(str(process.pid))
    address = MyAddress(host=host, port=port)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MyServerError(f"mariadbd exited:\n{log.read_text(errors='replace')}")
        if server_answers(address, timeout=0.5):
            return address, data_dir
        time.sleep(0.2)
    process.kill()
    raise MyServerError(f"mariadbd did not answer in {START_TIMEOUT:.0f} s")


def stop_server(data_dir: Path) -> None:
    """Stop the server started in ``data_dir`` and delete the directory."""
    pid = int((data_dir / "server.pid").read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            # Reap it when this process started it (a test), else it lingers as a zombie.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise MyServerError(f"mariadbd {pid} did not stop; {data_dir} kept")
    shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line for ``./dev``: ``check``, ``start`` and ``stop``."""
    parser = argparse.ArgumentParser(prog="mysqlserver.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="exit 0 when a server answers")
    start = commands.add_parser("start", help="start a throwaway server; print its address")
    for sub in (check, start):
        sub.add_argument("--host", default=DEFAULT_HOST)
        sub.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--base-dir", type=Path, required=True)
    stop = commands.add_parser("stop", help="stop a throwaway server and delete its data")
    stop.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "check":
        return 0 if server_answers(MyAddress(host=args.host, port=args.port)) else 1
    try:
        if args.command == "start":
            address, data_dir = start_server(
                args.base_dir, host=args.host, preferred_port=args.port
            )
            print(f"HOOPGW_TEST_MYHOST={shlex.quote(address.host)}")
            print(f"HOOPGW_TEST_MYPORT={address.port}")
            print(f"HOOPGW_TEST_MYDATA={shlex.quote(str(data_dir))}")
        else:
            stop_server(args.data_dir)
    except MyServerError as error:
        print(f"mysqlserver: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
