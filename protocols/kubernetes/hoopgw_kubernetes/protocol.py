"""The Kubernetes protocol as registered in the ``hoopgw.protocols`` entry-point group.

The server (and wsproto) is imported when a listener is built, not when the config is
loaded: reading a config needs only the ``[connections.kubernetes]`` options.
"""

from __future__ import annotations

from typing import Any

from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_kubernetes.options import OPTIONS, read_options


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The listener of one Kubernetes connection."""
    from hoopgw_kubernetes.server import build_factory as build

    return build(runtime)


PROTOCOL = ProtocolSpec(
    name="kubernetes", build_factory=build_factory, options=OPTIONS, read_options=read_options
)
