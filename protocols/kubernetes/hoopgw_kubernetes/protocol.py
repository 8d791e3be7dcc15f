"""The Kubernetes protocol as registered in the ``hoopgw.protocols`` entry-point group."""

from __future__ import annotations

from typing import Any

from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_kubernetes.settings import OPTIONS


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The listener of one Kubernetes connection (imported when a connection uses it)."""
    from hoopgw_kubernetes.server import build_factory as build

    return build(runtime)


PROTOCOL = ProtocolSpec(name="kubernetes", build_factory=build_factory, options=OPTIONS)
