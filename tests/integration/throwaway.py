"""What the throwaway database servers of the integration tests share (``pgserver.py``,
``mysqlserver.py``): the address from the environment, free ports, the OS user to run as, and
the ``check``/``start``/``stop`` command line that ``./dev`` runs."""

from __future__ import annotations

import argparse
import pwd
import shlex
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

DEFAULT_HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A throwaway server could not be created, started or stopped."""


@attrs.frozen(kw_only=True)
class ServerAddress:
    """Where a server listens."""

    host: str
    """Host name or IP address."""
    port: int
    """TCP port."""


def address_from_env(
    environ: Mapping[str, str], *, prefix: str, default_port: int
) -> ServerAddress:
    """Return the address in ``{prefix}HOST`` and ``{prefix}PORT`` (``HOOPGW_TEST_PG``...).

    :raises ValueError: the port is not an integer in 1-65535.
    """
    host = environ.get(f"{prefix}HOST") or DEFAULT_HOST
    raw_port = environ.get(f"{prefix}PORT") or str(default_port)
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"{prefix}PORT must be a TCP port number, not {raw_port!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{prefix}PORT must be in 1-65535, not {port}")
    return ServerAddress(host=host, port=port)


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


def listen_port(host: str, preferred_port: int) -> int:
    """Return ``preferred_port`` when it is free on ``host``, else a free port."""
    if preferred_port and port_is_free(host, preferred_port):
        return preferred_port
    return free_port(host)


def existing_user(*names: str) -> str | None:
    """Return the first of ``names`` that is an OS user here, or ``None``."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    kind: str,
    instance: str,
    env_prefix: str,
    default_port: int,
    answers: Callable[[ServerAddress], bool],
    start: Callable[..., tuple[ServerAddress, Path]],
    stop: Callable[[Path], None],
) -> int:
    """The command line ``./dev`` runs: ``check``, ``start`` (prints ``{env_prefix}HOST``,
    ``PORT`` and ``DATA`` as shell assignments) and ``stop``.

    :param kind: the server's name in help texts (``PostgreSQL``).
    :param instance: what ``start`` creates (``cluster``).
    :param start: called as ``start(base_dir, host=..., preferred_port=...)``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help=f"exit 0 when a {kind} server answers")
    started = commands.add_parser("start", help=f"start a throwaway {instance}; print its address")
    for sub in (check, started):
        sub.add_argument("--host", default=DEFAULT_HOST)
        sub.add_argument("--port", type=int, default=default_port)
    started.add_argument(
        "--base-dir", type=Path, required=True, help="folder for the data directory"
    )
    stopped = commands.add_parser("stop", help=f"stop a throwaway {instance} and delete its data")
    stopped.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "check":
        return 0 if answers(ServerAddress(host=args.host, port=args.port)) else 1
    try:
        if args.command == "start":
            address, data_dir = start(args.base_dir, host=args.host, preferred_port=args.port)
            print(f"{env_prefix}HOST={shlex.quote(address.host)}")
            print(f"{env_prefix}PORT={address.port}")
            print(f"{env_prefix}DATA={shlex.quote(str(data_dir))}")
        else:
            stop(args.data_dir)
    except ServerError as error:
        print(f"{prog.removesuffix('.py')}: {error}", file=sys.stderr)
        return 1
    return 0
