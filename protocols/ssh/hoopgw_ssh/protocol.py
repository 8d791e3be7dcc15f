"""The SSH protocol as registered in the ``hoopgw.protocols`` entry-point group.

The server (Twisted Conch) is imported when a listener is built, not when the config is
loaded: reading a config needs only the ``[connections.ssh]`` options.
"""

from __future__ import annotations

from typing import Any

from hoopgw.connection import ConnectionConfig
from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_ssh.options import OPTIONS, read_options, ssh_config


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The Conch server factory of one SSH connection."""
    from hoopgw_ssh.server import SshServerFactory

    return SshServerFactory(runtime)


def describe(connection: ConnectionConfig) -> dict[str, str]:
    """What ``hoopgw config check`` shows: the gateway's host key fingerprint for clients to pin."""
    from hoopgw_ssh.hostkeys import host_key_status

    return {"host key": host_key_status(ssh_config(connection.protocol_options).host_key)}


PROTOCOL = ProtocolSpec(
    name="ssh",
    build_factory=build_factory,
    describe=describe,
    options=OPTIONS,
    read_options=read_options,
    credentials=frozenset({"password", "private_key"}),
)
