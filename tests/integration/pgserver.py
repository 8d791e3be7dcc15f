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

import argparse
import os
import pwd
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
# Owner of the throwaway cluster when we run as root and Debian's "postgres" user is absent.
FALLBACK_OS_USER = "hoopgw-test"
# PostgreSQL SSLRequest (protocol 3 "Message Formats"): length 8, code 80877103.
_SSL_REQUEST = struct.pack("!II", 8, 80877103)


class PgServerError(RuntimeError):
    """A throwaway PostgreSQL cluster could not be created, started or stopped."""


@attrs.frozen(kw_only=True)
class PgAddress:
    """Where a PostgreSQL server listens."""

    host: str
    """Host name or IP address."""
    port: int
    """TCP port."""


def address_from_env(environ: Mapping[str, str] = os.environ) -> PgAddress:
    """Return the test server's address from ``HOOPGW_TEST_PGHOST`` and ``HOOPGW_TEST_PGPORT``.

    :raises ValueError: the port is not an integer in 1-65535.
    """
    host = environ.get("HOOPGW_TEST_PGHOST") or DEFAULT_HOST
    raw_port = environ.get("HOOPGW_TEST_PGPORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(
            f"HOOPGW_TEST_PGPORT must be a TCP port number, not {raw_port!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"HOOPGW_TEST_PGPORT must be in 1-65535, not {port}")
    return PgAddress(host=host, port=port)


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


def port_is_free(host: str, port: int) -> bool:
    """Return whether a TCP server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
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
    port = preferred_port if port_is_free(host, preferred_port) else free_port(host)
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
    parser = argparse.ArgumentParser(prog="pgserver.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="exit 0 when a PostgreSQL server answers")
    start = commands.add_parser("start", help="start a throwaway cluster; print its address")
    for sub in (check, start):
        sub.add_argument("--host", default=DEFAULT_HOST)
        sub.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--base-dir", type=Path, required=True, help="folder for the data directory")
    stop = commands.add_parser("stop", help="stop a throwaway cluster and delete its data")
    stop.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "check":
        return 0 if server_answers(PgAddress(host=args.host, port=args.port)) else 1
    try:
        if args.command == "start":
            address, data_dir = start_cluster(
                args.base_dir, host=args.host, preferred_port=args.port
            )
            print(f"HOOPGW_TEST_PGHOST={shlex.quote(address.host)}")
            print(f"HOOPGW_TEST_PGPORT={address.port}")
            print(f"HOOPGW_TEST_PGDATA={shlex.quote(str(data_dir))}")
        else:
            stop_cluster(args.data_dir)
    except PgServerError as error:
        print(f"pgserver: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
