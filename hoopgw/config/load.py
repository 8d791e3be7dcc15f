"""The one config loader: reads a TOML file, validates every key, resolves secret references.

:func:`load_config` returns a :class:`Config` or raises :class:`~hoopgw.errors.ConfigError`
naming the connection and key at fault. ``docs/configuration.md`` describes every key.

Validation fails closed: an unknown key, a value of the wrong type, a plugin that is not
installed or options it rejects, a secret that cannot be resolved are all errors, never
warnings, so that a typo cannot silently turn a guardrail off.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from hoopgw.config.connections import check_unique_names, parse_connection
from hoopgw.config.gateway import GatewayConfig, parse_gateway, resolve_store_url
from hoopgw.config.identity import IdentityConfig, parse_identity
from hoopgw.config.listeners import check_listeners_distinct, parse_listen
from hoopgw.config.tables import Table, reject_unknown, sub_table
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import ConfigError
from hoopgw.secrets import read_trusted_file

if TYPE_CHECKING:
    from hoopgw.console.settings import ConsoleConfig

__all__ = ["ROLES", "Config", "load_config", "parse_config"]

ROLES = ("approver", "auditor", "admin")


@attrs.frozen(kw_only=True)
class Config:
    """A validated configuration."""

    gateway: GatewayConfig
    """The ``[gateway]`` table."""
    connections: tuple[ConnectionConfig, ...]
    """The ``[[connections]]`` tables, in file order."""
    roles: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    """The ``[roles]`` table: ``approver``, ``auditor`` and ``admin``, each mapped to the groups
    that hold the role in the admin API (a role no group holds is absent)."""
    identity: IdentityConfig = attrs.field(factory=IdentityConfig)
    """The ``[identity]`` table."""
    console: ConsoleConfig | None = None
    """The ``[console]`` table (the web console, served on ``admin_listen``); None without."""
    base_dir: Path
    """Folder of the config file; relative paths in the config start here."""
    source_file: Path | None = None
    """The file it was read from (:func:`load_config`); None for a config parsed from text."""
    source_digest: str = ""
    """``sha256:HEX`` of the file's bytes it was read from; empty for a config parsed from text
    (with ``[gateway] workers``, the parent keeps every worker on one)."""

    @property
    def store_url(self) -> str:
        """:attr:`GatewayConfig.store` with a relative SQLite path made absolute."""
        return resolve_store_url(self.gateway.store, base_dir=self.base_dir)

    @property
    def checkpoint_path(self) -> Path:
        """Where checkpoints go: :attr:`GatewayConfig.checkpoint_dir`, or by default a
        ``checkpoints`` folder next to the SQLite store file (next to the config file for
        a store in memory)."""
        if self.gateway.checkpoint_dir is not None:
            return Path(self.gateway.checkpoint_dir)
        path = self.store_url.removeprefix("sqlite:///")
        if path == ":memory:" or path == self.store_url:
            return self.base_dir / "checkpoints"
        return Path(path).parent / "checkpoints"

    def chain_checkpoint_path(self, instance: str) -> Path:
        """Where the checkpoints of ``instance``'s chain go: :attr:`checkpoint_path` for a SQLite
        store's one chain, a folder per instance in it for a PostgreSQL store's."""
        return self.checkpoint_path / instance if instance else self.checkpoint_path

    @property
    def journal_path(self) -> str | None:
        """This instance's audit journal: beside a SQLite store's file
        (:func:`hoopgw.audit.journal.journal_path`), ``INSTANCE.audit-journal`` in
        :attr:`GatewayConfig.journal_dir` for a PostgreSQL store; None for a store in memory."""
        from hoopgw.audit.journal import journal_path

        if self.store_url.startswith("sqlite:"):
            return journal_path(self.store_url)
        folder = self.gateway.journal_dir or str(self.base_dir)
        return os.path.join(folder, f"{self.gateway.instance}.audit-journal")


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve the config file at ``path``.

    :raises ConfigError: naming the connection and key at fault (a :class:`SecretError` for a
        secret reference that cannot be resolved), or the file when a user other than the
        gateway's could change it (:func:`~hoopgw.secrets.read_trusted_file`).
    """
    path = Path(path)
    try:
        data = read_trusted_file(path, what="config file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    config = parse_config(text, base_dir=path.resolve().parent)
    return attrs.evolve(config, source_file=path.resolve(), source_digest=config_digest(data))


def config_digest(data: bytes) -> str:
    """``sha256:HEX`` of a config file's bytes (:attr:`Config.source_digest`)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_config(text: str, *, base_dir: Path) -> Config:
    """Validate TOML ``text`` as a config whose relative paths start at ``base_dir``.

    :raises ConfigError: as :func:`load_config`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    reject_unknown(document, {"gateway", "connections", "roles", "identity", "console"}, prefix="")
    gateway = parse_gateway(Table(sub_table(document, "gateway", ""), "gateway.", ""), base_dir)
    raw_connections = document.get("connections", [])
    if not isinstance(raw_connections, list) or not all(
        isinstance(c, dict) for c in raw_connections
    ):
        raise ConfigError("must be an array of tables ([[connections]])", key="connections")
    connections = tuple(
        parse_connection(raw, index, gateway, base_dir) for index, raw in enumerate(raw_connections)
    )
    check_unique_names(connections)
    check_listeners_distinct(gateway, connections)
    _check_admin_api(gateway, connections)
    roles = _roles(Table(sub_table(document, "roles", ""), "roles.", ""))
    identity = parse_identity(Table(sub_table(document, "identity", ""), "identity.", ""), base_dir)
    console = None
    if "console" in document:
        from hoopgw.console.settings import parse as parse_console

        if gateway.admin_listen is None:
            raise ConfigError(
                "needs [gateway] admin_listen: the console is served there", key="console"
            )
        console = parse_console(
            sub_table(document, "console", ""), issuers=identity.oidc, base_dir=base_dir
        )
    return Config(
        gateway=gateway,
        connections=connections,
        roles=roles,
        identity=identity,
        console=console,
        base_dir=base_dir,
    )


def _check_admin_api(gateway: GatewayConfig, connections: tuple[ConnectionConfig, ...]) -> None:
    # Reviews are decided through the admin API: without it every hold would only time out.
    if gateway.admin_listen is not None:
        _check_admin_plaintext(gateway, gateway.admin_listen)
        return
    for connection in connections:
        if connection.access == "jit" or "approval" in connection.plugins:
            what = 'access = "jit"' if connection.access == "jit" else "plugin 'approval'"
            raise ConfigError(
                f"{what} needs [gateway] admin_listen: reviews are decided through the admin API",
                key="access" if connection.access == "jit" else "plugins",
                connection=connection.name,
            )


def _check_admin_plaintext(gateway: GatewayConfig, admin_listen: str) -> None:
    # Callers send their API key or token as a bearer token: in clear only on this host.
    if gateway.admin_tls or gateway.admin_allow_plaintext:
        return
    table = Table({}, "gateway.", "")
    listener = parse_listen(table, "admin_listen", admin_listen)
    local = listener.kind == "unix" or (
        listener.interface != "*" and ipaddress.ip_address(listener.interface).is_loopback
    )
    if not local:
        raise table.error(
            "not a loopback address, and without TLS bearer tokens would cross the network in"
            " clear: set admin_tls = true (with tls_cert and tls_key), bind to 127.0.0.1, or"
            " set admin_allow_plaintext = true",
            "admin_listen",
        )


def _roles(table: Table) -> dict[str, tuple[str, ...]]:
    reject_unknown(table.data, set(ROLES), prefix=table.prefix)
    return {role: table.strings(role) for role in ROLES if role in table.data}
