"""A connection's plugin chain and its upstream requirements, built from its config: for the
gateway's start and reloads, and for ``hoopgw config check``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from hoopgw.approvals.reviews import ReviewService
from hoopgw.audit.writer import AuditWriter
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import ConfigError, PluginError
from hoopgw.plugin import PluginContext, load_plugin_class
from hoopgw.protocol import ProtocolSpec
from hoopgw.runtime.chain import PluginChain
from hoopgw.session import ConnectionInfo, UpstreamOptions
from hoopgw.verdicts import Verdict

__all__ = ["build_chain", "connection_info", "login_warnings", "upstream_options"]


def build_chain(
    connection: ConnectionConfig,
    *,
    reactor: Any,
    approval_timeout: float,
    audit: AuditWriter | None = None,
    approvals: ReviewService | None = None,
    on_decided: Callable[[Verdict], None] | None = None,
    upstream: Any = None,
    keep: Mapping[str, object] | None = None,
) -> PluginChain:
    """Build the plugin chain of one connection (one instance of each plugin it names).

    :param on_decided: called with each command's final verdict (the gateway counts them).
    :param upstream: the connection's upstream connector (a network agent's), for the side
        connections of plugins; None for direct.
    :param keep: instances to use again by plugin name (a config reload keeps those whose
        options did not change); the others are made anew.
    """
    info = connection_info(connection)
    plugins = []
    for name in connection.plugins:
        if keep is not None and name in keep:
            plugins.append((name, keep[name]))
            continue
        cls = load_plugin_class(name)
        context = PluginContext(
            connection=info,
            options=dict(connection.plugin_options.get(name, {})),
            audit=audit,
            log=Logger(namespace=f"hoopgw.plugins.{name}"),
            reactor=reactor,
            approvals=approvals,
            connect_upstream=None if upstream is None else upstream.connect,
        )
        plugins.append((name, cls(context)))
    return PluginChain(
        plugins, reactor=reactor, approval_timeout=approval_timeout, on_decided=on_decided
    )


def connection_info(connection: ConnectionConfig) -> ConnectionInfo:
    """The plugin-facing view of a configured connection."""
    return ConnectionInfo(
        name=connection.name, protocol=connection.protocol, target=connection.target
    )


def upstream_options(
    connection: ConnectionConfig, chain: PluginChain, spec: ProtocolSpec
) -> UpstreamOptions:
    """What the connection's plugins require of its upstream sessions, checked against what
    its protocol enforces.

    :raises ConfigError: a plugin failed to answer, or asks for a requirement the protocol
        cannot enforce (the connection would run without it).
    """
    try:
        options = chain.upstream_options(connection_info(connection))
    except PluginError as exc:
        raise ConfigError(str(exc), key="plugins", connection=connection.name) from None
    if options.read_only and "read_only" not in spec.enforces:
        raise ConfigError(
            f"its plugins require read-only sessions on the target ({'; '.join(options.reasons)}),"
            f" which protocol {connection.protocol!r} cannot enforce",
            key="plugins",
            connection=connection.name,
        )
    return options


def login_warnings(
    connection: ConnectionConfig, spec: ProtocolSpec, options: UpstreamOptions
) -> list[str]:
    """Log in to the target with the stored credential and say what is wrong with that login
    (blocking). Each warning names the connection.

    :raises Exception: the login failed (the message says why).
    """
    if spec.inspect_login is None:
        return []
    return [f"connection {connection.name!r}: {w}" for w in spec.inspect_login(connection, options)]
