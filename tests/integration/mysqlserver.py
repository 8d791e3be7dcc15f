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

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType


def _load_throwaway() -> ModuleType:
    # By path: tests are no package, and this file also runs as a script.
    name = "hoopgw_tests_throwaway"
    if name not in sys.modules:
        path = Path(__file__).with_name("throwaway.py")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


throwaway = _load_throwaway()
DEFAULT_HOST = throwaway.DEFAULT_HOST
DEFAULT_PORT = 3306
START_TIMEOUT = 60.0
MyAddress = throwaway.ServerAddress
free_port = throwaway.free_port


class MyServerError(throwaway.ServerError):
    """A throwaway server could not be created, started or stopped."""


def address_from_env(environ: Mapping[str, str] = os.environ) -> MyAddress:
    """The test server's address from ``HOOPGW_TEST_MYHOST`` and ``HOOPGW_TEST_MYPORT``."""
    return throwaway.address_from_env(environ, prefix="HOOPGW_TEST_MY", default_port=DEFAULT_PORT)


def server_answers(address: MyAddress, *, timeout: float = 2.0) -> bool:
    """Whether a MySQL-protocol server greets at ``address`` (protocol version 10), so a port
    held by another kind of server does not count."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            header = sock.recv(5)
            return len(header) == 5 and header[4] == 10
    except OSError:
        return False


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
    return throwaway.existing_user("mysql") or "root"


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
    port = int(throwaway.listen_port(host, preferred_port))
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
    return int(
        throwaway.main(
            argv,
            prog="mysqlserver.py",
            description=__doc__.split("\n\n")[0],
            kind="MariaDB",
            instance="server",
            env_prefix="HOOPGW_TEST_MY",
            default_port=DEFAULT_PORT,
            answers=server_answers,
            start=start_server,
            stop=stop_server,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
