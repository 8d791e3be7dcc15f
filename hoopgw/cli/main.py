"""The ``hoopgw`` command: run the gateway, check its config, manage API keys, read sessions.

Exit codes: 0 success, 1 the operation failed (store error, unknown id), 2 bad usage or an
invalid config. Results go to standard output, messages and errors to standard error, so that
``KEY=$(hoopgw keys create ...)`` captures the key alone. Times are shown in UTC, ISO-8601.
``docs/cli.md`` describes every command.

Each command group is a module of :mod:`hoopgw.cli` with a ``register(...)`` function that adds
its commands; building the parser imports no command's implementation (each handler imports
what it uses: the config loader, the store, Twisted), so ``--version`` and ``--help`` stay
quick (tests/hoopgw/cli/test_startup.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from hoopgw import __version__
from hoopgw.cli import (
    access,
    agents,
    audit,
    evidence,
    export,
    keys,
    kubeconfig,
    mcp,
    reviews,
    run,
    sessions,
)
from hoopgw.cli.common import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_USAGE, error
from hoopgw.errors import ConfigError, HoopgwError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (``hoopgw replay ... | head``): stop quietly, as cat does. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        error(str(exc))
        return EXIT_USAGE
    except HoopgwError as exc:
        error(str(exc))
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every command group registered."""
    parser = argparse.ArgumentParser(
        prog="hoopgw", description="Layer-7 access gateway: audited, guarded access to targets."
    )
    parser.add_argument("--version", action="version", version=f"hoopgw {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the gateway's TOML config file"
    )
    with_json = argparse.ArgumentParser(add_help=False)
    with_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    run.register(commands, with_config, with_json)
    keys.register(commands, with_config, with_json)
    sessions.register(commands, with_config, with_json)
    agents.register(commands, with_config, with_json)
    audit_commands = commands.add_parser(
        "audit", help="verify, search and export the audit trail"
    ).add_subparsers(metavar="COMMAND", required=True)
    for module in (audit, export, evidence, reviews, access, mcp, kubeconfig):
        module.register(commands, audit_commands, with_config, with_json)
    return parser
