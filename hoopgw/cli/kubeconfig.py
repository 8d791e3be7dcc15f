"""``hoopgw kubeconfig``: a kubeconfig that points kubectl at a Kubernetes connection.

The file names the gateway's address (from the connection's ``listen``, or ``--server``), the
certificate kubectl checks the gateway against (``[gateway] tls_cert``, or ``--ca-file``) and
the caller's own token: ``HOOPGW_TOKEN`` written into the file, or ``--token-file`` named by it
(kubectl reads the file at each call). The cluster's credential is never in it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from hoopgw.cli.common import EXIT_OK
from hoopgw.errors import ConfigError


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add ``hoopgw kubeconfig`` to ``commands``."""
    command = commands.add_parser(
        "kubeconfig",
        parents=[with_config],
        help="print a kubeconfig for a Kubernetes connection (your token, never the cluster's)",
    )
    command.add_argument("--connection", required=True, metavar="NAME")
    command.add_argument(
        "--server",
        metavar="URL",
        help="the gateway's address as callers reach it (default: https://HOST:PORT of listen)",
    )
    command.add_argument(
        "--ca-file",
        metavar="PEM",
        help="the certificate (CA) kubectl trusts for the gateway (default: [gateway] tls_cert)",
    )
    command.add_argument(
        "--token-file",
        metavar="FILE",
        help="name a file holding your token instead of writing HOOPGW_TOKEN into the output",
    )
    command.set_defaults(handler=_kubeconfig)


def _server(listen: str) -> str:
    parts = listen.split(":")
    port = parts[1] if len(parts) > 1 else ""
    host = "127.0.0.1"
    for part in parts[2:]:
        if part.startswith("interface="):
            host = part.split("=", 1)[1] or host
    if host in ("0.0.0.0", "::", "*"):  # noqa: S104 - a wildcard is not an address to reach
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _kubeconfig(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    config = load_config(args.config)
    connection = next((c for c in config.connections if c.name == args.connection), None)
    if connection is None or connection.protocol != "kubernetes":
        raise ConfigError(f"no Kubernetes connection named {args.connection!r}", key="connections")
    ca_file = args.ca_file or config.gateway.tls_cert
    if ca_file is None:
        raise ConfigError("the gateway has no tls_cert (or give --ca-file)", key="tls_cert")
    ca = base64.b64encode(Path(ca_file).read_bytes()).decode("ascii")
    user: dict[str, str]
    if args.token_file:
        user = {"tokenFile": str(Path(args.token_file).resolve())}
    else:
        token = os.environ.get("HOOPGW_TOKEN", "")
        if not token:
            raise ConfigError("set HOOPGW_TOKEN to your token, or give --token-file", key="token")
        user = {"token": token}
    name = f"hoopgw-{connection.name}"
    q = json.dumps  # a JSON string is a YAML scalar: no quoting rules to get wrong
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        f"- name: {q(name)}",
        "  cluster:",
        f"    server: {q(args.server or _server(connection.listen))}",
        f"    certificate-authority-data: {q(ca)}",
        "users:",
        f"- name: {q(name)}",
        "  user:",
        *(f"    {key}: {q(value)}" for key, value in user.items()),
        "contexts:",
        f"- name: {q(name)}",
        "  context:",
        f"    cluster: {q(name)}",
        f"    user: {q(name)}",
        "    namespace: default",
        f"current-context: {q(name)}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
