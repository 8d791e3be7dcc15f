"""``hoopgw mcp``: serve the gateway's connections as Model Context Protocol tools.

The server is a client of the gateway that acts as its caller (``HOOPGW_TOKEN`` over stdio,
each request's bearer token over HTTP); ``hoopgw.mcp`` holds the machinery and
``docs/agents.md`` the walk-through. The ``mcp`` SDK is imported only when the command runs
(``pip install 'hoopgw[mcp]'``).
"""

from __future__ import annotations

import argparse

from hoopgw.cli.common import EXIT_OK
from hoopgw.errors import ConfigError


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add ``hoopgw mcp`` to ``commands``."""
    mcp = commands.add_parser(
        "mcp",
        help="serve the gateway's connections as MCP tools, acting as you (HOOPGW_TOKEN)",
    )
    mcp.add_argument(
        "-c",
        "--connections",
        "--config",
        dest="config",
        required=True,
        metavar="FILE",
        help="TOML file of the connections to offer ([[connections]]; the gateway's own"
        " config file works)",
    )
    mcp.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default; one agent, HOOPGW_TOKEN) or streamable HTTP (bearer token per"
        " request)",
    )
    mcp.add_argument(
        "--listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="where the HTTP transport listens, a loopback address (default 127.0.0.1:8765);"
        " the endpoint is /mcp",
    )
    mcp.set_defaults(handler=_mcp)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:8765, not {text!r}")
    return host.strip("[]"), int(port)


def _mcp(args: argparse.Namespace) -> int:
    from hoopgw.mcp.targets import load_targets

    targets = load_targets(args.config)
    try:
        from hoopgw.mcp.server import serve
    except ImportError as exc:
        raise ConfigError(
            f"hoopgw mcp needs the mcp SDK ({exc}): pip install 'hoopgw[mcp]'"
        ) from None
    serve(targets, transport=args.transport, listen=args.listen)
    return EXIT_OK
