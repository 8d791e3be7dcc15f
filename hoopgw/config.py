"""The one config loader: reads a TOML file, validates every key, resolves secret references.

:func:`load_config` returns a :class:`Config` or raises :class:`~hoopgw.errors.ConfigError`
naming the connection and key at fault. ``docs/configuration.md`` describes every key.

Validation fails closed: an unknown key, a value of the wrong type, a plugin that is not
installed or options it rejects, a secret that cannot be resolved are all errors, never
warnings, so that a typo cannot silently turn a guardrail off.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from hoopgw import plugin
from hoopgw.audit import DURABILITY_MODES, MAX_SYNC_INTERVAL, Durability
from hoopgw.errors import ConfigError, PluginError
from hoopgw.logs import FORMATS, LEVELS
from hoopgw.secrets import Secret, resolve_secret
from hoopgw.throttle import BackoffSettings

# Imported where used, because most configs do not need them and they are slow to load: the
# OIDC module (PyJWT, cryptography), checkpoint keys (cryptography), group sources (entry
# points), Twisted's endpoint parser (the TLS stack). Commands that read the config start faster.
if TYPE_CHECKING:
    from hoopgw.oidc import IssuerSettings

PROTOCOL_GROUP = "hoopgw.protocols"

SSLMODES = ("disable", "prefer", "require", "verify-full")
CLIENT_TLS_MODES = ("optional", "required", "disabled")
CLIENT_AUTH_METHODS = ("auto", "password", "scram")
ACCESS_MODES = ("groups", "jit")
ROLES = ("approver", "auditor", "admin")

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """The ``[gateway]`` table: settings shared by every connection."""

    store: str = "sqlite:///./hoopgw.db"
    """Audit store URL as written; use :attr:`Config.store_url` for the resolved one."""
    instance: str = ""
    """This gateway's id among the instances sharing a PostgreSQL store (its own audit chain);
    the loader fills in the host name when the config leaves it out; ``""`` with SQLite."""
    journal_dir: str | None = None
    """Absolute path of the folder of the local audit journal of a PostgreSQL store's instance,
    or None for the config file's folder; use :attr:`Config.journal_path`."""
    admin_listen: str | None = None
    """Twisted server endpoint of the admin API, or None for no admin API."""
    admin_tls: bool = False
    """Serve the admin API over TLS (HTTPS) with :attr:`tls_cert` and :attr:`tls_key`."""
    admin_allow_plaintext: bool = False
    """Allow the admin API without TLS on an address other than loopback (bearer tokens would
    cross the network in clear)."""
    tls_cert: str | None = None
    """Absolute path of the PEM certificate (chain) presented to clients that ask for TLS."""
    tls_key: str | None = None
    """Absolute path of the PEM private key of :attr:`tls_cert`."""
    log_format: str = "text"
    """``text`` or ``json``."""
    log_level: str = "info"
    """``debug``, ``info``, ``warn`` or ``error``."""
    auth_timeout: float = 30.0
    """Seconds a client has to authenticate before it is disconnected."""
    approval_timeout: float = 300.0
    """Seconds a held command waits for a human before it is refused."""
    max_message_size: int = 64 * 1024 * 1024
    """Largest protocol message accepted from a client, in bytes."""
    shutdown_grace: float = 5.0
    """Seconds sessions get to end cleanly on shutdown before they are cut."""
    signing_key: Secret | None = None
    """Ed25519 private key (PKCS#8 PEM) that signs audit checkpoints; None: no checkpoints."""
    checkpoint_dir: str | None = None
    """Absolute path of the folder checkpoints are written to, or None for the default; use
    :attr:`Config.checkpoint_path`."""
    checkpoint_every: int = 1000
    """A checkpoint is written once the audit chain has grown by this many records."""
    checkpoint_interval: float = 300.0
    """Seconds after which a checkpoint is written if the chain has grown at all."""
    audit_durability: str = "fsync"
    """When a command's record counts as written, so the command may be forwarded: ``fsync``
    (on disk) or ``os`` (handed to the operating system, synced in groups); see
    :class:`hoopgw.audit.Durability`."""
    audit_sync_interval: float = 0.01
    """Seconds between group syncs of the audit journal with ``audit_durability = "os"``, at
    most :data:`hoopgw.audit.MAX_SYNC_INTERVAL`: what a crash of the host may lose."""
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks (CIDR) from which the admin listener's ``/metrics`` is readable without a
    token; from elsewhere it needs an ``auditor`` or ``admin`` bearer token."""

    @property
    def durability(self) -> Durability:
        """:attr:`audit_durability` and :attr:`audit_sync_interval` as the audit writer takes
        them."""
        return Durability(mode=self.audit_durability, sync_interval=self.audit_sync_interval)


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
class SshConfig:
    """The ``[connections.ssh]`` table of an SSH connection (``docs/protocols/ssh.md``)."""

    host_key: str
    """Absolute path of the gateway's own host key for this connection; created (Ed25519) on
    the first start when missing."""
    known_hosts: str | None = None
    """Absolute path of an OpenSSH ``known_hosts`` file that must hold the target's host key."""
    host_key_fingerprints: tuple[str, ...] = ()
    """Accepted target host key fingerprints, ``SHA256:...`` as ``ssh-keygen -lf`` prints them."""
    env_allow: tuple[str, ...] = ()
    """Names (``fnmatch`` globs such as ``LC_*``) of environment variables a client may set."""
    allow_sftp: bool = False
    """Serve the ``sftp`` subsystem (its file operations become commands)."""
    allow_port_forwarding: bool = False
    """Open ``direct-tcpip`` channels (``ssh -L``) to the target's side."""
    allow_agent_forwarding: bool = False
    """Pass ``auth-agent-req@openssh.com`` requests on (the agent stays on the client)."""
    allow_x11_forwarding: bool = False
    """Pass ``x11-req`` requests on."""
    judge_shell_lines: bool = False
    """Decide each line typed at an interactive shell as a command (see the docs' limits)."""


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
    live just-in-time grant, see :mod:`hoopgw.approvals`)."""
    jit_approvers: tuple[str, ...] = ()
    """With ``access = "jit"``: groups whose members decide access requests."""
    jit_max_duration: float = 8 * 3600.0
    """With ``access = "jit"``: the longest grant, in seconds, that may be requested."""
    jit_request_ttl: float = 24 * 3600.0
    """With ``access = "jit"``: seconds an access request stays pending before it ends
    ``expired`` (no approval can follow)."""
    ssh: SshConfig | None = None
    """The ``[connections.ssh]`` table; set for (and only for) ``protocol = "ssh"``."""

    @property
    def target_host(self) -> str:
        """Host part of :attr:`target`, without IPv6 brackets."""
        return _split_target(self.target)[0]

    @property
    def target_port(self) -> int:
        """Port part of :attr:`target`."""
        return _split_target(self.target)[1]


@attrs.frozen(kw_only=True)
class IdentityConfig:
    """The ``[identity]`` table: trusted token issuers, group sources, failed-login back-off
    (``docs/identity.md``)."""

    oidc: tuple[IssuerSettings, ...] = ()
    """The ``[[identity.oidc]]`` tables: issuers whose tokens are accepted."""
    group_sources: tuple[str, ...] = ()
    """Names of the group sources asked for the groups of token identities, in order."""
    group_source_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Validated options of each group source (its ``[identity.<name>]`` table), by name."""
    backoff: BackoffSettings = attrs.field(factory=BackoffSettings)
    """The ``[identity.backoff]`` table."""
    key_check_interval: float = 10.0
    """Seconds between checks that end the sessions of revoked or expired API keys, revoked
    SSH keys and expired OIDC tokens."""


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
    identity: IdentityConfig = IdentityConfig()
    """The ``[identity]`` table."""
    base_dir: Path
    """Folder of the config file; relative paths in the config start here."""

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
        (:func:`hoopgw.audit_journal.journal_path`), ``INSTANCE.audit-journal`` in
        :attr:`GatewayConfig.journal_dir` for a PostgreSQL store; None for a store in memory."""
        from hoopgw.audit_journal import journal_path

        if self.store_url.startswith("sqlite:"):
            return journal_path(self.store_url)
        folder = self.gateway.journal_dir or str(self.base_dir)
        return os.path.join(folder, f"{self.gateway.instance}.audit-journal")


def resolve_store_url(url: str, *, base_dir: Path) -> str:
    """Make the path of a ``sqlite:///`` URL absolute, relative to ``base_dir``.

    ``sqlite:///./hoopgw.db`` names a file next to the config; ``sqlite:////var/lib/h.db`` an
    absolute path; ``sqlite:///:memory:`` and non-SQLite URLs are returned unchanged.
    """
    if not url.startswith("sqlite:///"):
        return url
    path = url.removeprefix("sqlite:///")
    if path == ":memory:":
        return url
    return "sqlite:///" + str((base_dir / path).resolve())


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve the config file at ``path``.

    :raises ConfigError: naming the connection and key at fault (a :class:`SecretError` for a
        secret reference that cannot be resolved).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    return parse_config(text, base_dir=path.resolve().parent)


def parse_config(text: str, *, base_dir: Path) -> Config:
    """Validate TOML ``text`` as a config whose relative paths start at ``base_dir``.

    :raises ConfigError: as :func:`load_config`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    _reject_unknown(document, {"gateway", "connections", "roles", "identity"}, prefix="")
    gateway = _gateway(_Table(_table(document, "gateway", ""), "gateway.", ""), base_dir)
    raw_connections = document.get("connections", [])
    if not isinstance(raw_connections, list) or not all(
        isinstance(c, dict) for c in raw_connections
    ):
        raise ConfigError("must be an array of tables ([[connections]])", key="connections")
    connections = tuple(
        _connection(raw, index, gateway, base_dir) for index, raw in enumerate(raw_connections)
    )
    _check_unique_names(connections)
    _check_listeners_distinct(gateway, connections)
    _check_admin_api(gateway, connections)
    roles = _roles(_Table(_table(document, "roles", ""), "roles.", ""))
    identity = _identity(_Table(_table(document, "identity", ""), "identity.", ""), base_dir)
    return Config(
        gateway=gateway, connections=connections, roles=roles, identity=identity, base_dir=base_dir
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
    table = _Table({}, "gateway.", "")
    listener = _parse_listen(table, "admin_listen", admin_listen)
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


def _roles(table: _Table) -> dict[str, tuple[str, ...]]:
    _reject_unknown(table.data, set(ROLES), prefix=table.prefix)
    return {role: table.strings(role) for role in ROLES if role in table.data}


# -- typed access to one TOML table ----------------------------------------------------------

_MISSING: Any = object()


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


@attrs.define
class _Table:
    """A TOML table with typed getters whose errors name the key and connection."""

    data: Mapping[str, Any]
    prefix: str
    """Written before keys in errors, e.g. ``credential.``."""
    connection: str

    def error(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, key=self.prefix + key, connection=self.connection)

    def get(self, key: str, types: tuple[type, ...], default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.error("required", key)
            return default
        value = self.data[key]
        # TOML booleans are Python ints; an int key must not accept true/false.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise self.error(f"expected {_type_name(types)}, got {type(value).__name__}", key)
        return value

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, (str,), default)
        if value is not default and not value:
            raise self.error("must not be empty", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value: str = self.get(key, (str,), default)
        if value not in choices:
            raise self.error(f"must be one of {', '.join(choices)}", key)
        return value

    def seconds(self, key: str, default: float) -> float:
        value = float(self.get(key, (int, float), default))
        if not 0 < value < math.inf:  # also refuses nan
            raise self.error("must be a finite number greater than 0", key)
        return value

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self.get(key, (list,), default)
        for item in value:
            if not isinstance(item, str) or not item:
                got = type(item).__name__ if not isinstance(item, str) else "empty string"
                raise self.error(f"expected list of non-empty str, got an item of {got}", key)
        return tuple(value)


def _table(parent: Mapping[str, Any], key: str, connection: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"expected table, got {type(value).__name__}", key=key, connection=connection
        )
    return value


def _reject_unknown(
    data: Mapping[str, Any], known: set[str], *, prefix: str, connection: str = ""
) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(known))})",
                key=prefix + key,
                connection=connection,
            )


# -- [gateway] -------------------------------------------------------------------------------

_GATEWAY_KEYS = {f.name for f in attrs.fields(GatewayConfig)}


def _gateway(table: _Table, base_dir: Path) -> GatewayConfig:
    _reject_unknown(table.data, _GATEWAY_KEYS, prefix=table.prefix)
    defaults = GatewayConfig()
    store = table.string("store", defaults.store)
    _check_store_url(table, store)
    instance = _instance(table, store)
    journal_dir = table.string("journal_dir", None)
    admin_listen = table.string("admin_listen", None)
    if admin_listen is not None:
        _parse_listen(table, "admin_listen", admin_listen)
    tls_cert = table.string("tls_cert", None)
    tls_key = table.string("tls_key", None)
    if (tls_cert is None) != (tls_key is None):
        missing = "tls_key" if tls_key is None else "tls_cert"
        raise table.error("tls_cert and tls_key must be set together", missing)
    admin_tls = table.get("admin_tls", (bool,), defaults.admin_tls)
    if admin_tls and tls_cert is None:
        raise table.error(
            "true needs tls_cert and tls_key (the admin API's certificate)", "admin_tls"
        )
    admin_allow_plaintext = table.get(
        "admin_allow_plaintext", (bool,), defaults.admin_allow_plaintext
    )
    max_message_size = table.get("max_message_size", (int,), defaults.max_message_size)
    if max_message_size < 1024:
        raise table.error("must be at least 1024 bytes", "max_message_size")
    shutdown_grace = float(table.get("shutdown_grace", (int, float), defaults.shutdown_grace))
    if not 0 <= shutdown_grace < math.inf:
        raise table.error("must be a finite number, 0 or more", "shutdown_grace")
    checkpoint_every = table.get("checkpoint_every", (int,), defaults.checkpoint_every)
    if checkpoint_every < 1:
        raise table.error("must be at least 1", "checkpoint_every")
    checkpoint_dir = table.string("checkpoint_dir", None)
    audit_sync_interval = table.seconds("audit_sync_interval", defaults.audit_sync_interval)
    if audit_sync_interval > MAX_SYNC_INTERVAL:
        raise table.error(
            f"must be at most {MAX_SYNC_INTERVAL:g} s: a crash of the host may lose the records"
            " of that long",
            "audit_sync_interval",
        )
    metrics_allow = table.strings("metrics_allow", defaults.metrics_allow)
    for network in metrics_allow:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise table.error(
                f"{network!r} is not an IP network (such as 10.0.0.0/8 or ::1/128)",
                "metrics_allow",
            ) from None
    return GatewayConfig(
        store=store,
        instance=instance,
        journal_dir=None
        if journal_dir is None
        else str((base_dir / Path(journal_dir).expanduser()).resolve()),
        admin_listen=admin_listen,
        admin_tls=admin_tls,
        admin_allow_plaintext=admin_allow_plaintext,
        tls_cert=_readable_file(table, "tls_cert", tls_cert, base_dir),
        tls_key=_readable_file(table, "tls_key", tls_key, base_dir),
        log_format=table.choice("log_format", FORMATS, defaults.log_format),
        log_level=table.choice("log_level", LEVELS, defaults.log_level),
        auth_timeout=table.seconds("auth_timeout", defaults.auth_timeout),
        approval_timeout=table.seconds("approval_timeout", defaults.approval_timeout),
        max_message_size=max_message_size,
        shutdown_grace=shutdown_grace,
        signing_key=_signing_key(table, base_dir),
        checkpoint_dir=None
        if checkpoint_dir is None
        else str((base_dir / Path(checkpoint_dir).expanduser()).resolve()),
        checkpoint_every=checkpoint_every,
        checkpoint_interval=table.seconds("checkpoint_interval", defaults.checkpoint_interval),
        audit_durability=table.choice(
            "audit_durability", DURABILITY_MODES, defaults.audit_durability
        ),
        audit_sync_interval=audit_sync_interval,
        metrics_allow=metrics_allow,
    )


def _signing_key(table: _Table, base_dir: Path) -> Secret | None:
    reference = table.get("signing_key", (str,), None)
    if reference is None:
        return None
    key = resolve_secret(reference, key=table.prefix + "signing_key", base_dir=base_dir)
    # Imported here: cryptography is slow to load, and only a config with a key needs it.
    from hoopgw.checkpoints import CheckpointError, load_signing_key

    try:
        load_signing_key(key.reveal())
    except CheckpointError as exc:
        raise table.error(str(exc), "signing_key") from None
    return key


def _check_store_url(table: _Table, url: str) -> None:
    # A URL the store cannot open must fail here, in `config check`, not when the gateway
    # starts. The message never repeats the URL: it may hold a password.
    scheme = url.partition("://")[0]
    if scheme in ("postgresql", "postgres") and len(url) > len(scheme) + 3:
        return
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise table.error(
            "must be a sqlite:///PATH URL (e.g. sqlite:///./hoopgw.db) or a"
            " postgresql://USER@HOST:PORT/DATABASE URL",
            "store",
        )


_INSTANCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def _instance(table: _Table, store: str) -> str:
    """The ``instance`` key: only with a PostgreSQL store, where it defaults to the host name."""
    instance = table.string("instance", None)
    if store.startswith("sqlite:"):
        if instance is not None:
            raise table.error(
                "only a postgresql:// store is shared by several instances; remove it", "instance"
            )
        return ""
    if instance is None:
        instance = socket.gethostname().lower()
        if not _INSTANCE.fullmatch(instance):
            raise table.error(
                f"the host name {instance!r} is no valid instance id: set one", "instance"
            )
    elif not _INSTANCE.fullmatch(instance):
        raise table.error(
            "must be 1 to 63 lowercase letters, digits, '_', '.' or '-', starting with a"
            " letter or digit",
            "instance",
        )
    return instance


def _readable_file(table: _Table, key: str, value: str | None, base_dir: Path) -> str | None:
    if value is None:
        return None
    path = (base_dir / Path(value).expanduser()).resolve()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise table.error(f"cannot read {str(path)!r}: {exc.strerror}", key) from None
    return str(path)


# -- [[connections]] -------------------------------------------------------------------------

# Every field but plugin_options, whose tables are named after the plugins.
_CONNECTION_KEYS = {f.name for f in attrs.fields(ConnectionConfig)} - {"plugin_options"}


def _connection(
    raw: Mapping[str, Any], index: int, gateway: GatewayConfig, base_dir: Path
) -> ConnectionConfig:
    # Until the name is known, errors name the connection by its position in the file.
    name = _Table(raw, "", f"#{index + 1}").get("name", (str,))
    if not _NAME.fullmatch(name):
        raise ConfigError(
            "must match [a-z0-9][a-z0-9_-]* (lower-case letters, digits, '-', '_')",
            key="name",
            connection=f"#{index + 1}",
        )
    table = _Table(raw, "", name)

    plugins = table.strings("plugins", [])
    for key, value in raw.items():
        if key in _CONNECTION_KEYS or key in plugins:
            continue
        if isinstance(value, dict):
            raise table.error(
                f"plugin {key!r} is configured but not enabled (add it to plugins)", key
            )
        raise table.error(f"unknown key (known: {', '.join(sorted(_CONNECTION_KEYS))})", key)

    protocol = table.string("protocol")
    installed = sorted(ep.name for ep in entry_points(group=PROTOCOL_GROUP))
    if protocol not in installed:
        raise table.error(
            f"protocol {protocol!r} is not installed (installed: {', '.join(installed) or 'none'})",
            "protocol",
        )
    listen = table.string("listen")
    _parse_listen(table, "listen", listen)
    target = table.string("target")
    try:
        host, _ = _split_target(target)
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
    credential = _credential(table, base_dir)
    ssh = _ssh(table, protocol, credential, base_dir)
    return ConnectionConfig(
        name=name,
        protocol=protocol,
        listen=listen,
        target=target,
        credential=credential,
        ssh=ssh,
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
    )


def _credential(parent: _Table, base_dir: Path) -> CredentialConfig:
    if "credential" not in parent.data:
        raise parent.error("required: the user the gateway logs in to the target as", "credential")
    table = _Table(
        _table(parent.data, "credential", parent.connection), "credential.", parent.connection
    )
    _reject_unknown(
        table.data,
        {"user", "password", "private_key"},
        prefix="credential.",
        connection=table.connection,
    )
    user = table.string("user")
    secrets: dict[str, Secret | None] = {}
    for key in ("password", "private_key"):
        reference = table.get(key, (str,), None)
        secrets[key] = None
        if reference is not None:
            secrets[key] = resolve_secret(
                reference, key=f"credential.{key}", connection=table.connection, base_dir=base_dir
            )
    return CredentialConfig(user=user, **secrets)


_SSH_KEYS = {f.name for f in attrs.fields(SshConfig)}
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_ENV_NAME = re.compile(r"[A-Za-z_*?][A-Za-z0-9_*?]*")
_SSH_FLAGS = (
    "allow_sftp",
    "allow_port_forwarding",
    "allow_agent_forwarding",
    "allow_x11_forwarding",
    "judge_shell_lines",
)


def _ssh(
    parent: _Table, protocol: str, credential: CredentialConfig, base_dir: Path
) -> SshConfig | None:
    """The ``[connections.ssh]`` table: required shape for SSH connections, absent for others."""
    if protocol != "ssh":
        if "ssh" in parent.data:
            raise parent.error('only for connections with protocol = "ssh"', "ssh")
        if credential.private_key is not None:
            raise parent.error("only SSH connections log in with a key", "credential.private_key")
        return None
    if credential.password is None and credential.private_key is None:
        raise parent.error("an SSH target needs password or private_key", "credential")
    table = _Table(_table(parent.data, "ssh", parent.connection), "ssh.", parent.connection)
    _reject_unknown(table.data, _SSH_KEYS, prefix="ssh.", connection=table.connection)
    host_key = table.string("host_key", f"{parent.connection}.ssh_host_ed25519_key")
    known_hosts = _readable_file(table, "known_hosts", table.string("known_hosts", None), base_dir)
    fingerprints = tuple(f.rstrip("=") for f in table.strings("host_key_fingerprints", []))
    for fingerprint in fingerprints:
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise table.error(
                f"{fingerprint!r} is not a SHA256:... fingerprint (see ssh-keygen -lf)",
                "host_key_fingerprints",
            )
    if known_hosts is None and not fingerprints:
        raise table.error(
            "required (or host_key_fingerprints): the target's host key must be known",
            "known_hosts",
        )
    env_allow = table.strings("env_allow", [])
    for name in env_allow:
        if not _ENV_NAME.fullmatch(name):
            raise table.error(f"{name!r} is not a variable name or glob", "env_allow")
    return SshConfig(
        host_key=str((base_dir / Path(host_key).expanduser()).resolve()),
        known_hosts=known_hosts,
        host_key_fingerprints=fingerprints,
        env_allow=env_allow,
        **{flag: table.get(flag, (bool,), False) for flag in _SSH_FLAGS},
    )


def _upstream_tls(parent: _Table, host: str, base_dir: Path) -> UpstreamTlsConfig:
    table = _Table(
        _table(parent.data, "upstream_tls", parent.connection), "upstream_tls.", parent.connection
    )
    _reject_unknown(
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
        ca_file=_readable_file(table, "ca_file", ca_file, base_dir),
        server_name=table.string("server_name", host),
    )


def _plugin_options(
    parent: _Table, plugins: tuple[str, ...], protocol: str
) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for name in plugins:
        if name in options:
            raise parent.error(f"plugin {name!r} is listed twice", "plugins")
        try:
            cls = plugin.load_plugin_class(name)
        except PluginError as exc:
            raise parent.error(str(exc), "plugins") from None
        table = _table(parent.data, name, parent.connection)
        options[name] = plugin.validate_options(
            name, cls.options, table, connection=parent.connection
        )
        plugin.check_plugin_options(
            name, cls, options[name], protocol=protocol, connection=parent.connection
        )
    return options


# -- [identity] ------------------------------------------------------------------------------

_IDENTITY_KEYS = {"oidc", "group_sources", "backoff", "key_check_interval"}


def _identity(table: _Table, base_dir: Path) -> IdentityConfig:
    sources = table.strings("group_sources", [])
    for key, value in table.data.items():
        if key in _IDENTITY_KEYS or key in sources:
            continue
        if isinstance(value, dict):
            raise table.error(
                f"group source {key!r} is configured but not enabled (add it to group_sources)",
                key,
            )
        raise table.error(f"unknown key (known: {', '.join(sorted(_IDENTITY_KEYS))})", key)
    raw_issuers = table.data.get("oidc", [])
    if not isinstance(raw_issuers, list) or not all(isinstance(i, dict) for i in raw_issuers):
        raise table.error("must be an array of tables ([[identity.oidc]])", "oidc")
    issuers = tuple(_issuer(raw, index, base_dir) for index, raw in enumerate(raw_issuers))
    seen: set[str] = set()
    for index, issuer in enumerate(issuers):
        if issuer.issuer in seen:
            raise table.error("the same issuer is trusted twice", f"oidc[{index}].issuer")
        seen.add(issuer.issuer)
    _check_prefixes(table, issuers)
    defaults = IdentityConfig()
    return IdentityConfig(
        oidc=issuers,
        group_sources=sources,
        group_source_options={
            name: _group_source_options(table, name, base_dir) for name in sources
        },
        backoff=_backoff(_Table(_table(table.data, "backoff", ""), "identity.backoff.", "")),
        key_check_interval=table.seconds("key_check_interval", defaults.key_check_interval),
    )


def _check_prefixes(table: _Table, issuers: tuple[IssuerSettings, ...]) -> None:
    """With several issuers, each must set an ``identity_prefix`` that no other one starts
    with: otherwise a token of one issuer could name another issuer's identity (and get its
    grants, directory groups, and count as it for approvals)."""
    if len(issuers) < 2:
        return
    for index, issuer in enumerate(issuers):
        if not issuer.identity_prefix:
            raise table.error(
                "must be set when more than one issuer is trusted",
                f"oidc[{index}].identity_prefix",
            )
    for index, issuer in enumerate(issuers):
        for other_index, other in enumerate(issuers):
            if other_index != index and issuer.identity_prefix.startswith(other.identity_prefix):
                raise table.error(
                    f"must be distinct from, and not start with, that of "
                    f"identity.oidc[{other_index}] ({other.identity_prefix!r})",
                    f"oidc[{index}].identity_prefix",
                )


def _issuer(raw: Mapping[str, Any], index: int, base_dir: Path) -> IssuerSettings:
    from hoopgw.oidc import (
        ALLOWED_ALGORITHMS,
        IDENTITY_CLAIMS,
        IssuerSettings,
        _usable_name,
        parse_jwks,
    )

    table = _Table(raw, f"identity.oidc[{index}].", "")
    _reject_unknown(raw, {f.name for f in attrs.fields(IssuerSettings)}, prefix=table.prefix)
    defaults = IssuerSettings(issuer="-", audience=("-",))
    issuer = table.string("issuer")
    jwks_file = _readable_file(table, "jwks_file", table.string("jwks_file", None), base_dir)
    if jwks_file is None and not issuer.startswith("https://"):
        raise table.error("must be an https:// URL (or set jwks_file for offline keys)", "issuer")
    if jwks_file is not None:
        try:
            with open(jwks_file, "rb") as f:
                keys = parse_jwks(json.loads(f.read()))
        except ValueError as exc:
            raise table.error(f"not a usable JWKS: {exc}", "jwks_file") from None
        if not keys:
            raise table.error("holds no RSA, EC or OKP public key", "jwks_file")
    audience = table.get("audience", (str, list))
    audience = table.strings("audience") if isinstance(audience, list) else (audience,)
    if not audience or not all(audience):
        raise table.error("must name at least one audience", "audience")
    algorithms = table.strings("algorithms", list(defaults.algorithms))
    for algorithm in algorithms:
        if algorithm not in ALLOWED_ALGORITHMS:
            raise table.error(
                f"{algorithm!r} is not allowed: only asymmetric algorithms "
                f"({', '.join(ALLOWED_ALGORITHMS)})",
                "algorithms",
            )
    if not algorithms:
        raise table.error("must name at least one algorithm", "algorithms")
    identity_prefix = table.get("identity_prefix", (str,), defaults.identity_prefix)
    if identity_prefix and not _usable_name(identity_prefix):
        raise table.error("must be printable, without whitespace or commas", "identity_prefix")
    leeway = float(table.get("leeway", (int, float), defaults.leeway))
    if not 0 <= leeway <= 300:
        raise table.error("must be from 0 to 300 seconds", "leeway")
    return IssuerSettings(
        issuer=issuer,
        audience=tuple(audience),
        algorithms=algorithms,
        identity_claim=table.choice("identity_claim", IDENTITY_CLAIMS, defaults.identity_claim),
        groups_claim=table.get("groups_claim", (str,), defaults.groups_claim),
        required_claims=table.strings("required_claims", []),
        leeway=leeway,
        jwks_file=jwks_file,
        ca_file=_readable_file(table, "ca_file", table.string("ca_file", None), base_dir),
        jwks_max_age=table.seconds("jwks_max_age", defaults.jwks_max_age),
        refetch_interval=table.seconds("refetch_interval", defaults.refetch_interval),
        fetch_timeout=table.seconds("fetch_timeout", defaults.fetch_timeout),
        identity_prefix=identity_prefix,
    )


def _backoff(table: _Table) -> BackoffSettings:
    _reject_unknown(
        table.data, {f.name for f in attrs.fields(BackoffSettings)}, prefix=table.prefix
    )
    defaults = BackoffSettings()
    values: dict[str, Any] = {}
    for key in ("free_failures", "max_pending", "max_addresses"):
        values[key] = table.get(key, (int,), getattr(defaults, key))
        if values[key] < (0 if key == "free_failures" else 1):
            raise table.error(f"must be at least {0 if key == 'free_failures' else 1}", key)
    for key in ("base_delay", "max_delay", "forget_after"):
        values[key] = table.seconds(key, getattr(defaults, key))
    if values["max_delay"] < values["base_delay"]:
        raise table.error("must not be less than base_delay", "max_delay")
    return BackoffSettings(**values)


def _group_source_options(table: _Table, name: str, base_dir: Path) -> dict[str, Any]:
    if name in _IDENTITY_KEYS:
        raise table.error(f"{name!r} is a reserved name, not a group source", "group_sources")
    from hoopgw.groups import load_group_source  # only a config with group sources needs it

    try:
        cls = load_group_source(name)
    except PluginError as exc:
        raise table.error(str(exc), "group_sources") from None
    options = plugin.validate_options(
        f"identity.{name}", cls.options, _table(table.data, name, ""), connection=""
    )
    for key in getattr(cls, "secret_options", ()):
        if isinstance(options.get(key), str):
            options[key] = resolve_secret(
                options[key], key=f"identity.{name}.{key}", base_dir=base_dir
            )
    plugin.check_plugin_options(f"identity.{name}", cls, options, protocol="", connection="")
    return options


# -- values ----------------------------------------------------------------------------------


def _split_target(target: str) -> tuple[str, int]:
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


@attrs.frozen
class _Listener:
    """Where a server endpoint binds, normalised for comparison."""

    kind: str
    """``tcp`` or ``unix``."""
    interface: str
    """Normalised IP address, ``*`` for every interface, or the socket path."""
    port: int


def _parse_listen(table: _Table, key: str, description: str) -> _Listener:
    try:
        kind, where, port = _server_endpoint(description)
    except Exception as exc:
        raise table.error(f"not a valid Twisted server endpoint: {exc}", key) from None
    if kind == "unix":
        return _Listener(kind="unix", interface=str(Path(where).resolve()), port=0)
    if kind != "tcp":
        # TLS is negotiated inside the database protocol, with [gateway] tls_cert, not by the
        # endpoint; other endpoint types bind in ways the duplicate check cannot see.
        raise table.error("must be a tcp:, tcp6: or unix: endpoint", key)
    if not 0 <= port <= 65535:
        raise table.error("port must be from 0 to 65535", key)
    interface = where
    if interface in ("", "0.0.0.0", "::"):  # noqa: S104 - normalising, not binding
        interface = "*"
    else:
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            raise table.error(f"interface {interface!r} is not an IP address", key) from None
    return _Listener(kind="tcp", interface=interface, port=port)


# -- server endpoint descriptions ------------------------------------------------------------
#
# The endpoint types the gateway listens on (tcp, tcp6, unix) are parsed here exactly as
# Twisted's serverFromString parses them (twisted.internet.endpoints: _tokenize, _parse,
# _parseTCP, _parseUNIX, _TCP6ServerParser), same values and same errors, because importing
# twisted.internet.endpoints loads the TLS stack (pyOpenSSL, cryptography): most of the start-up
# time of a command that reads the config. Any other description goes to Twisted itself.
# tests/hoopgw/test_config_endpoints.py compares both on a corpus of descriptions.


def _server_endpoint(description: str) -> tuple[str, str, int]:
    """What the server endpoint ``description`` binds: ``("tcp", interface, port)``,
    ``("unix", path, 0)``, or ``("other", "", 0)`` for a type the gateway does not listen on.

    :raises Exception: whatever Twisted's ``serverFromString`` raises for it.
    """
    args, kw = _strports(description)
    if args[0] == "tcp":
        (port, _), options = _parseTCP(None, *args[1:], **kw)
        return "tcp", options["interface"], port
    if args[0] == "tcp6":
        port, interface = _TCP6ServerParser().parseStreamServer(None, *args[1:], **kw)
        return "tcp", interface, port
    if args[0] == "unix":
        (address, _), _ = _parseUNIX(None, *args[1:], **kw)
        return "unix", address, 0
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    endpoint = endpoints.serverFromString(MemoryReactor(), description)
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return "unix", endpoint._address, 0
    if isinstance(endpoint, endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint):
        return "tcp", endpoint._interface, endpoint._port
    return "other", "", 0


def _strports_tokens(description: str) -> Iterator[tuple[bool, str]]:
    """Twisted's ``_tokenize``: ``(is_operator, text)`` pairs; ``\\`` escapes a character."""
    current = ""
    ops = ":="
    chars = iter(description)
    for char in chars:
        if char in ops:
            yield False, current
            yield True, char
            current = ""
            ops = ":=" if char == ":" else ":"
        elif char == "\\":
            # At the end of the text this raises StopIteration: "generator raised
            # StopIteration", as in Twisted.
            current += next(chars)
        else:
            current += char
    yield False, current


def _strports(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's ``_parse``: the positional and the ``name=value`` parameters."""
    args: list[str] = []
    kw: dict[str, str] = {}

    def add(sofar: tuple[str, ...]) -> None:
        if len(sofar) == 1:
            args.append(sofar[0])
        else:
            sofar[0].encode("ascii")  # Twisted's nativeString: names are ASCII
            kw[sofar[0]] = sofar[1]

    sofar: tuple[str, ...] = ()
    for is_operator, text in _strports_tokens(description):
        if not is_operator:
            sofar += (text,)
        elif text == ":":
            add(sofar)
            sofar = ()
    add(sofar)
    return args, kw


# The three parsers keep Twisted's names and signatures: a wrong parameter gets Twisted's words.
def _parseTCP(
    factory: None, port: str, interface: str = "", backlog: Any = 50
) -> tuple[tuple[int, None], dict[str, Any]]:
    return (int(port), factory), {"interface": interface, "backlog": int(backlog)}


def _parseUNIX(
    factory: None, address: str, mode: str = "666", backlog: Any = 50, lockfile: Any = True
) -> tuple[tuple[str, None], dict[str, Any]]:
    return (
        (address, factory),
        {"mode": int(mode, 8), "backlog": int(backlog), "wantPID": bool(int(lockfile))},
    )


class _TCP6ServerParser:
    def _parseServer(
        self, reactor: None, port: str, backlog: Any = 50, interface: str = "::"
    ) -> tuple[int, str]:
        number = int(port)
        int(backlog)  # checked as Twisted does, though the duplicate check does not need it
        return number, interface

    def parseStreamServer(self, reactor: None, *args: str, **kwargs: str) -> tuple[int, str]:
        return self._parseServer(reactor, *args, **kwargs)


def _clash(a: _Listener, b: _Listener) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "unix":
        return a.interface == b.interface
    # Port 0 asks the OS for a free port, which never clashes.
    return a.port == b.port != 0 and (
        a.interface == b.interface or "*" in (a.interface, b.interface)
    )


def _check_unique_names(connections: tuple[ConnectionConfig, ...]) -> None:
    seen: set[str] = set()
    for connection in connections:
        if connection.name in seen:
            raise ConfigError("duplicate connection name", key="name", connection=connection.name)
        seen.add(connection.name)


def _check_listeners_distinct(
    gateway: GatewayConfig, connections: tuple[ConnectionConfig, ...]
) -> None:
    bound: list[tuple[str, _Listener]] = []
    if gateway.admin_listen is not None:
        admin = _parse_listen(_Table({}, "gateway.", ""), "admin_listen", gateway.admin_listen)
        bound.append(("[gateway] admin_listen", admin))
    for connection in connections:
        table = _Table({}, "", connection.name)
        listener = _parse_listen(table, "listen", connection.listen)
        for owner, other in bound:
            if _clash(listener, other):
                raise table.error(f"listens on the same address as {owner}", "listen")
        bound.append((f"connection {connection.name!r}", listener))
