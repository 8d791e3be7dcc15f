"""Find the PostgreSQL server that integration tests use, or start a throwaway one.

Integration tests read the server's address from ``HOOPGW_TEST_PGHOST`` (default ``127.0.0.1``)
and ``HOOPGW_TEST_PGPORT`` (default ``5432``) and connect as the superuser ``postgres`` with trust
authentication. ``./dev test`` runs this file as a script when nothing answers there::

    python tests/integration/pgserver.py check --host 127.0.0.1 --port 5432
    eval "$(python tests/integration/pgserver.py start --base-dir .hoopgw-test)"
    python tests/integration/pgserver.py stop --data-dir "$HOOPGW_TEST_PGDATA"

``start`` prints ``HOOPGW_TEST_PGHOST``, ``HOOPGW_TEST_PGPORT`` and ``HOOPGW_TEST_PGDATA`` as shell
assignments.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
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
DEFAULT_PORT = 5432
PgAddress = throwaway.ServerAddress
port_is_free = throwaway.port_is_free
free_port = throwaway.free_port
# Owner of the throwaway cluster when we run as root and Debian's "postgres" user is absent.
FALLBACK_OS_USER = "hoopgw-test"
# PostgreSQL SSLRequest (protocol 3 "Message Formats"): length 8, code 80877103.
_SSL_REQUEST = struct.pack("!II", 8, 80877103)


class PgServerError(throwaway.ServerError):
    """A throwaway PostgreSQL cluster could not be created, started or stopped."""


def address_from_env(environ: Mapping[str, str] = os.environ) -> PgAddress:
    """Return the test server's address from ``HOOPGW_TEST_PGHOST`` and ``HOOPGW_TEST_PGPORT``.

    :raises ValueError: the port is not an integer in 1-65535.
    """
    return throwaway.address_from_env(environ, prefix="HOOPGW_TEST_PG", default_port=DEFAULT_PORT)


def server_answers(address: PgAddress, *, timeout: float = 2.0) -> bool:
    """Return whether a PostgreSQL server answers at ``address``.

    Sends an SSLRequest, which every PostgreSQL server answers with one byte, ``S`` or ``N``,
    before any authentication; so a port held by another kind of server does not count.
    """
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            sock.sendall(_SSL_REQUEST)
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def find_pg_binary(name: str) -> Path:
    """Return the path of a PostgreSQL server program such as ``initdb`` or ``pg_ctl``.

    Looks on ``PATH`` first, then in Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first),
    where the server programs live off ``PATH``.

    :raises PgServerError: the program is not installed.
    """
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    versioned = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: _version_key(path.parent.parent.name),
        reverse=True,
    )
    if versioned:
        return versioned[0]
    raise PgServerError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def cluster_owner() -> str | None:
    """Return the OS user that must own a cluster, or ``None`` to run as ourselves.

    PostgreSQL refuses to run as root, so as root we use Debian's ``postgres`` user and create
    a system user when it is absent.
    """
    if os.geteuid() != 0:
        return None
    existing: str | None = throwaway.existing_user("postgres", FALLBACK_OS_USER)
    if existing is not None:
        return existing
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_OS_USER,
        ],
        check=True,
    )
    return FALLBACK_OS_USER


def _run_as(owner: str | None, argv: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv],
        user=owner,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _owner_can_write(owner: str | None, directory: Path) -> bool:
    return owner is None or _run_as(owner, ["test", "-w", directory]).returncode == 0


def _make_data_dir(base_dir: Path, owner: str | None) -> Path:
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir))
    if owner is not None:
        shutil.chown(data_dir, user=owner, group=pwd.getpwnam(owner).pw_gid)
        if not _owner_can_write(owner, data_dir):
            # A checkout under a private home (/root) is not reachable by the cluster's owner.
            data_dir.rmdir()
            data_dir = Path(tempfile.mkdtemp(prefix="hoopgw-test-pg-"))
            shutil.chown(data_dir, user=owner, group=pwd.getpwnam(owner).pw_gid)
    return data_dir


def start_cluster(
    base_dir: Path, *, host: str = DEFAULT_HOST, preferred_port: int = DEFAULT_PORT
) -> tuple[PgAddress, Path]:
    """Create and start a throwaway cluster with trust authentication for the user ``postgres``.

    Listens on ``host`` at ``preferred_port`` when it is free, else on a free port; no Unix
    socket. Durability is off: the cluster exists for one test run.

    :returns: the address it listens on and its data directory (give it to :func:`stop_cluster`).
    :raises PgServerError: initdb or pg_ctl failed; the message holds their output.
    """
    owner = cluster_owner()
    data_dir = _make_data_dir(base_dir.resolve(), owner)
    port = int(throwaway.listen_port(host, preferred_port))
    initdb = _run_as(
        owner,
        [
            find_pg_binary("initdb"),
            "--pgdata",
            data_dir,
            "--auth",
            "trust",
            "--username",
            "postgres",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ],
    )
    if initdb.returncode != 0:
        raise PgServerError(f"initdb failed in {data_dir}:\n{initdb.stdout}{initdb.stderr}")
    server_options = (
        f"-c listen_addresses={host} -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    started = _run_as(
        owner,
        [
            find_pg_binary("pg_ctl"),
            "--pgdata",
            data_dir,
            "--log",
            data_dir / "server.log",
            "--options",
            server_options,
            "--wait",
            "--timeout",
            "60",
            "start",
        ],
    )
    if started.returncode != 0:
        log = data_dir / "server.log"
        log_text = log.read_text(errors="replace") if log.exists() else ""
        raise PgServerError(f"pg_ctl start failed:\n{started.stdout}{started.stderr}{log_text}")
    return PgAddress(host=host, port=port), data_dir


def stop_cluster(data_dir: Path) -> None:
    """Stop the cluster in ``data_dir`` (fast shutdown) and delete the directory.

    :raises PgServerError: pg_ctl could not stop it; the directory is kept for inspection.
    """
    owner = pwd.getpwuid(data_dir.stat().st_uid).pw_name if os.geteuid() == 0 else None
    stopped = _run_as(
        owner, [find_pg_binary("pg_ctl"), "--pgdata", data_dir, "--mode", "fast", "--wait", "stop"]
    )
    if stopped.returncode != 0:
        raise PgServerError(f"pg_ctl stop failed:\n{stopped.stdout}{stopped.stderr}")
    shutil.rmtree(data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line for ``./dev``: ``check``, ``start`` and ``stop``."""
    return int(
        throwaway.main(
            argv,
            prog="pgserver.py",
            description=__doc__.split("\n\n")[0],
            kind="PostgreSQL",
            instance="cluster",
            env_prefix="HOOPGW_TEST_PG",
            default_port=DEFAULT_PORT,
            answers=server_answers,
            start=start_cluster,
            stop=stop_cluster,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
