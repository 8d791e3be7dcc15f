"""The HTTP protocol as registered in the ``hoopgw.protocols`` entry-point group.

Light on purpose: the config loader imports it for every HTTP connection, and the proxy
(Twisted's TLS stack) is imported only when a gateway serves one.
"""

from __future__ import annotations

from typing import Any

from hoopgw.connection import ConnectionConfig
from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_http.settings import OPTIONS, HttpSettings, read_options


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The server factory of one ``http`` connection's listener."""
    from hoopgw_http.server import HttpProxyFactory

    return HttpProxyFactory(runtime)


def describe(connection: ConnectionConfig) -> dict[str, str]:
    """What ``hoopgw config check`` shows; it also checks the options against the rest of the
    connection (raises :class:`~hoopgw.errors.ConfigError`)."""
    settings = HttpSettings.of(connection)
    scheme = "https" if settings.tls else "http"
    shown = {"upstream": f"{scheme}://{connection.target} (Host: {settings.host_header})"}
    shown["credential"] = settings.options.auth + (
        " + client certificate" if settings.options.client_cert else ""
    )
    return shown


PROTOCOL = ProtocolSpec(
    name="http",
    build_factory=build_factory,
    describe=describe,
    options=OPTIONS,
    read_options=read_options,
)
