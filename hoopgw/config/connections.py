"""The ``[[connections]]`` tables: one listener in front of one target each.

A connection's own keys are checked here; the tables of its plugins by the plugins' declared
options (:mod:`hoopgw.plugin`), and the table named after its protocol by the protocol's
(:attr:`hoopgw.protocol.ProtocolSpec.options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import attrs

from hoopgw import plugin
from hoopgw.config.gateway import GatewayConfig
from hoopgw.config.listeners import parse_listen
from hoopgw.config.tables import NAME, Table, readable_file, reject_unknown, sub_table
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig, split_target
from hoopgw.errors import ConfigError, PluginError
from hoopgw.protocol import PROTOCOL_GROUP, ProtocolSpec, ProtocolTable, load_protocol
from hoopgw.secrets import Secret, resolve_secret

__all__ = ["check_unique_names", "parse_connection"]

SSLMODES = ("disable", "prefer", "require", "verify-full")
CLIENT_TLS_MODES = ("optional", "required", "disabled")
CLIENT_AUTH_METHODS = ("auto", "password", "scram")
ACCESS_MODES = ("groups", "jit")
CREDENTIAL_SECRETS = ("password", "private_key")

# Every field but the option tables, which are named after the plugins and the protocol.
_CONNECTION_KEYS = {f.name for f in attrs.fields(ConnectionConfig)} - {
    "plugin_options",
    "protocol_options",
}


def parse_connection(
    raw: Mapping[str, Any], index: int, gateway: GatewayConfig, base_dir: Path
) -> ConnectionConfig:
    """The validated ``[[connections]]`` table ``raw``, the ``index``-th of the file.

    :raises ConfigError: naming the connection (by position until its name is known) and key.
    """
    name = Table(raw, "", f"#{index + 1}").get("name", (str,))
    if not NAME.fullmatch(name):
        raise ConfigError(
            "must match [a-z0-9][a-z0-9_-]* (lower-case letters, digits, '-', '_')",
            key="name",
            connection=f"#{index + 1}",
        )
    table = Table(raw, "", name)

    plugins = table.strings("plugins", [])
    protocol = table.string("protocol")
    installed = sorted(ep.name for ep in entry_points(group=PROTOCOL_GROUP))
    for key, value in raw.items():
        if key in _CONNECTION_KEYS or key in plugins or key == protocol:
            continue
        if isinstance(value, dict) and key in installed:
            raise table.error(f'only for connections with protocol = "{key}"', key)
        if isinstance(value, dict):
            raise table.error(
                f"plugin {key!r} is configured but not enabled (add it to plugins)", key
            )
        raise table.error(f"unknown key (known: {', '.join(sorted(_CONNECTION_KEYS))})", key)

    try:
        spec = load_protocol(protocol)
    except PluginError as exc:
        raise table.error(str(exc), "protocol") from None
    listen = table.string("listen")
    parse_listen(table, "listen", listen)
    target = table.string("target")
    try:
        host, _ = split_target(target)
    except ValueError as exc:
        raise table.error(str(exc), "target") from None

    access = table.choice("access", ACCESS_MODES, "groups")
    jit_approvers = table.strings("jit_approvers", [])
    if access == "jit" and not jit_approvers:
        raise table.error(
            'required with access = "jit": the groups that decide requests', "jit_approvers"
        )
    jit_max_duration = table.seconds("jit_max_duration", 8 * 3600.0)
    jit_request_ttl = table.seconds("jit_request_ttl", 24 * 3600.0)
    client_tls = table.choice("client_tls", CLIENT_TLS_MODES, "optional")
    if client_tls == "required" and gateway.tls_cert is None:
        raise table.error("'required' needs [gateway] tls_cert and tls_key", "client_tls")
    credential = _credential(table, spec, base_dir)
    via = table.string("via", None)
    if via is not None:
        if not NAME.fullmatch(via):
            raise table.error("must be an agent name, [a-z0-9][a-z0-9_-]*", "via")
        if gateway.agent_listen is None:
            raise table.error(
                "needs [gateway] agent_listen: the agent connects to the gateway there", "via"
            )
    return ConnectionConfig(
        name=name,
        protocol=protocol,
        listen=listen,
        target=target,
        credential=credential,
        protocol_options=_protocol_options(table, spec, credential, base_dir),
        allow_groups=table.strings("allow_groups"),
        plugins=plugins,
        plugin_options=_plugin_options(table, plugins, protocol),
        upstream_tls=_upstream_tls(table, host, base_dir),
        client_tls=client_tls,
        client_auth=table.choice("client_auth", CLIENT_AUTH_METHODS, "auto"),
        allow_cleartext_password=table.get("allow_cleartext_password", (bool,), False),
        local_infile=table.get("local_infile", (bool,), False),
        access=access,
        jit_approvers=jit_approvers,
        jit_max_duration=jit_max_duration,
        jit_request_ttl=jit_request_ttl,
        via=via,
    )


def _credential(parent: Table, spec: ProtocolSpec, base_dir: Path) -> CredentialConfig:
    if "credential" not in parent.data:
        raise parent.error("required: the user the gateway logs in to the target as", "credential")
    table = Table(
        sub_table(parent.data, "credential", parent.connection), "credential.", parent.connection
    )
    reject_unknown(
        table.data,
        {"user", *CREDENTIAL_SECRETS},
        prefix="credential.",
        connection=table.connection,
    )
    user = table.string("user")
    secrets: dict[str, Secret | None] = {}
    for key in CREDENTIAL_SECRETS:
        reference = table.get(key, (str,), None)
        secrets[key] = None
        if reference is None:
            continue
        if key not in spec.credentials:
            raise table.error(f"protocol {spec.name!r} does not log in with a {key}", key)
        secrets[key] = resolve_secret(
            reference, key=f"credential.{key}", connection=table.connection, base_dir=base_dir
        )
    return CredentialConfig(user=user, **secrets)


def _protocol_options(
    parent: Table, spec: ProtocolSpec, credential: CredentialConfig, base_dir: Path
) -> Any:
    """The protocol's own value of its ``[connections.<protocol>]`` table."""
    raw = sub_table(parent.data, spec.name, parent.connection)
    values = plugin.validate_options(
        spec.name, spec.options, raw, connection=parent.connection, kind="protocol"
    )
    if spec.read_options is None:
        return None
    return spec.read_options(
        ProtocolTable(
            protocol=spec.name,
            connection=parent.connection,
            values=values,
            credential=credential,
            base_dir=base_dir,
        )
    )


def _upstream_tls(parent: Table, host: str, base_dir: Path) -> UpstreamTlsConfig:
    table = Table(
        sub_table(parent.data, "upstream_tls", parent.connection),
        "upstream_tls.",
        parent.connection,
    )
    reject_unknown(
        table.data,
        {"sslmode", "ca_file", "server_name"},
        prefix="upstream_tls.",
        connection=table.connection,
    )
    sslmode = table.choice("sslmode", SSLMODES, "prefer")
    ca_file = table.string("ca_file", None)
    if sslmode == "verify-full" and ca_file is None:
        raise table.error("required when sslmode is verify-full", "ca_file")
    return UpstreamTlsConfig(
        sslmode=sslmode,
        ca_file=readable_file(table, "ca_file", ca_file, base_dir),
        server_name=table.string("server_name", host),
    )


def _plugin_options(
    parent: Table, plugins: tuple[str, ...], protocol: str
) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for name in plugins:
        if name in options:
            raise parent.error(f"plugin {name!r} is listed twice", "plugins")
        try:
            cls = plugin.load_plugin_class(name)
        except PluginError as exc:
            raise parent.error(str(exc), "plugins") from None
        table = sub_table(parent.data, name, parent.connection)
        options[name] = plugin.validate_options(
            name, cls.options, table, connection=parent.connection
        )
        plugin.check_plugin_options(
            name, cls, options[name], protocol=protocol, connection=parent.connection
        )
    return options


def check_unique_names(connections: tuple[ConnectionConfig, ...]) -> None:
    """Refuse two connections of the same name."""
    seen: set[str] = set()
    for connection in connections:
        if connection.name in seen:
            raise ConfigError("duplicate connection name", key="name", connection=connection.name)
        seen.add(connection.name)
