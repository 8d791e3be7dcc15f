"""A configured connection as protocols see it: the value the config loader makes of one
``[[connections]]`` table.

Protocols import :class:`ConnectionConfig` from here (never from :mod:`hoopgw.config`, the
loader, which is the gateway's own); ``docs/configuration.md`` describes every key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from hoopgw.secrets import Secret

__all__ = ["ConnectionConfig", "CredentialConfig", "UpstreamTlsConfig", "split_target"]


@attrs.frozen(kw_only=True)
class CredentialConfig:
    """The credential the gateway logs in to the target with; callers never see it."""

    user: str
    """User name on the target."""
    password: Secret | None = None
    """Password, resolved from its reference; None when the target needs none (trust auth)."""
    private_key: Secret | None = None
    """SSH private key (OpenSSH or PEM text, unencrypted), resolved from its reference; SSH
    connections only."""


@attrs.frozen(kw_only=True)
class UpstreamTlsConfig:
    """TLS between the gateway and the target."""

    sslmode: str = "prefer"
    """``disable``, ``prefer`` (TLS if the target offers it), ``require`` (TLS, unverified) or
    ``verify-full`` (TLS, certificate and host name verified against :attr:`ca_file`)."""
    ca_file: str | None = None
    """Absolute path of the PEM CA bundle used by ``verify-full``."""
    server_name: str | None = None
    """Host name checked against the target's certificate and sent as SNI; the loader fills in
    the target host when the config leaves it out."""


@attrs.frozen(kw_only=True)
class ConnectionConfig:
    """One ``[[connections]]`` table: a listener in front of one target."""

    name: str
    """Unique name, ``[a-z0-9][a-z0-9_-]*``."""
    protocol: str
    """Name of an installed ``hoopgw.protocols`` entry point, e.g. ``postgres``."""
    listen: str
    """Twisted server endpoint string the gateway listens on for this connection."""
    target: str
    """``HOST:PORT`` of the upstream (``[::1]:5432`` for IPv6)."""
    credential: CredentialConfig
    """How the gateway logs in to the target."""
    allow_groups: tuple[str, ...]
    """Groups whose members may use the connection; empty means nobody."""
    plugins: tuple[str, ...] = ()
    """Enabled plugins, in the order their data hooks run."""
    plugin_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Validated options of each enabled plugin, defaults filled in, by plugin name."""
    upstream_tls: UpstreamTlsConfig = UpstreamTlsConfig()
    """TLS towards the target."""
    client_tls: str = "optional"
    """``optional`` (offered when the gateway has ``tls_cert``), ``required`` or ``disabled``:
    TLS between client and gateway."""
    client_auth: str = "auto"
    """How clients prove their key: ``password`` (sent in clear, so only over TLS or loopback),
    ``scram`` (SCRAM-SHA-256; the key never crosses the wire), or ``auto`` (password over TLS or
    loopback, SCRAM otherwise)."""
    allow_cleartext_password: bool = False
    """Accept a password from a client over a connection that is neither TLS nor loopback."""
    local_infile: bool = False
    """MySQL only: let clients send files with ``LOAD DATA LOCAL INFILE`` (when off, the
    capability is negotiated on neither side)."""
    access: str = "groups"
    """``groups`` (members of :attr:`allow_groups` may connect) or ``jit`` (they also need a
    live just-in-time grant, see :mod:`hoopgw.approvals.grants`)."""
    jit_approvers: tuple[str, ...] = ()
    """With ``access = "jit"``: groups whose members decide access requests."""
    jit_max_duration: float = 8 * 3600.0
    """With ``access = "jit"``: the longest grant, in seconds, that may be requested."""
    jit_request_ttl: float = 24 * 3600.0
    """With ``access = "jit"``: seconds an access request stays pending before it ends
    ``expired`` (no approval can follow)."""
    protocol_options: Any = None
    """The protocol's own options, made from the ``[connections.<protocol>]`` table by its
    :attr:`~hoopgw.protocol.ProtocolSpec.read_options` (for SSH the ``[connections.ssh]``
    table); None for a protocol that declares none."""
    via: str | None = None
    """Name of the network agent through which the gateway reaches :attr:`target` (the agent
    opens the TCP connection; the gateway still speaks the protocol), or None for directly."""

    @property
    def target_host(self) -> str:
        """Host part of :attr:`target`, without IPv6 brackets."""
        return split_target(self.target)[0]

    @property
    def target_port(self) -> int:
        """Port part of :attr:`target`."""
        return split_target(self.target)[1]


def split_target(target: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[V6]:PORT`` for IPv6).

    :raises ValueError: with a message fit for a config error.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:5432 or [::1]:5432")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError("an IPv6 address must be written in brackets, e.g. [::1]:5432")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be a number from 1 to 65535")
    return host, int(port)
