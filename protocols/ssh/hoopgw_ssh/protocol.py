"""The SSH protocol as registered in the ``hoopgw.protocols`` entry-point group."""

from __future__ import annotations

from hoopgw.config import ConnectionConfig
from hoopgw.protocol import ProtocolSpec
from hoopgw_ssh.hostkeys import host_key_status
from hoopgw_ssh.server import SshServerFactory


def describe(connection: ConnectionConfig) -> dict[str, str]:
    """What ``hoopgw config check`` shows: the gateway's host key fingerprint for clients to pin."""
    assert connection.ssh is not None
    return {"host key": host_key_status(connection.ssh.host_key)}


PROTOCOL = ProtocolSpec(name="ssh", build_factory=SshServerFactory, describe=describe)
