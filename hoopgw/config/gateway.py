"""The ``[gateway]`` table: settings shared by every connection."""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from pathlib import Path

import attrs

from hoopgw.audit.chain import DURABILITY_MODES, MAX_SYNC_INTERVAL, Durability
from hoopgw.config.listeners import parse_listen
from hoopgw.config.tables import Table, readable_file, reject_unknown
from hoopgw.runtime.logs import FORMATS, LEVELS
from hoopgw.secrets import Secret, resolve_secret

__all__ = ["GatewayConfig", "parse_gateway", "resolve_store_url"]


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
    :class:`hoopgw.audit.chain.Durability`."""
    audit_sync_interval: float = 0.01
    """Seconds between group syncs of the audit journal with ``audit_durability = "os"``, at
    most :data:`hoopgw.audit.chain.MAX_SYNC_INTERVAL`: what a crash of the host may lose."""
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks (CIDR) from which the admin listener's ``/metrics`` is readable without a
    token; from elsewhere it needs an ``auditor`` or ``admin`` bearer token."""
    agent_listen: str | None = None
    """Twisted server endpoint where network agents connect (over TLS with :attr:`tls_cert`),
    or None for no agents (see docs/network-agent.md)."""
    workers: int = 1
    """Gateway processes serving the listeners of this config; more than 1 starts a supervising
    parent process (see :mod:`hoopgw.runtime.workers`)."""

    @property
    def durability(self) -> Durability:
        """:attr:`audit_durability` and :attr:`audit_sync_interval` as the audit writer takes
        them."""
        return Durability(mode=self.audit_durability, sync_interval=self.audit_sync_interval)


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


MAX_WORKERS = 64
"""Most gateway processes one config may ask for (``[gateway] workers``)."""

_GATEWAY_KEYS = {f.name for f in attrs.fields(GatewayConfig)}


def parse_gateway(table: Table, base_dir: Path) -> GatewayConfig:
    """The validated ``[gateway]`` table; relative paths start at ``base_dir``."""
    reject_unknown(table.data, _GATEWAY_KEYS, prefix=table.prefix)
    defaults = GatewayConfig()
    store = table.string("store", defaults.store)
    _check_store_url(table, store)
    instance = _instance(table, store)
    journal_dir = table.string("journal_dir", None)
    admin_listen = table.string("admin_listen", None)
    if admin_listen is not None:
        parse_listen(table, "admin_listen", admin_listen)
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
    agent_listen = table.string("agent_listen", None)
    if agent_listen is not None:
        parse_listen(table, "agent_listen", agent_listen)
        if tls_cert is None:
            raise table.error(
                "needs tls_cert and tls_key: agents connect over TLS and check the gateway's"
                " certificate",
                "agent_listen",
            )
    workers = table.get("workers", (int,), defaults.workers)
    if not 1 <= workers <= MAX_WORKERS:
        raise table.error(f"must be from 1 to {MAX_WORKERS}", "workers")
    if workers > 1 and agent_listen is not None:
        # An agent's one connection would reach one worker; the others could not use it.
        raise table.error(
            "more than 1 worker cannot serve network agents (agent_listen); set workers = 1",
            "workers",
        )
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
        tls_cert=readable_file(table, "tls_cert", tls_cert, base_dir),
        tls_key=readable_file(table, "tls_key", tls_key, base_dir),
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
        agent_listen=agent_listen,
        workers=workers,
    )


def _signing_key(table: Table, base_dir: Path) -> Secret | None:
    reference = table.get("signing_key", (str,), None)
    if reference is None:
        return None
    key = resolve_secret(reference, key=table.prefix + "signing_key", base_dir=base_dir)
    # Imported here: cryptography is slow to load, and only a config with a key needs it.
    from hoopgw.audit.checkpoints import CheckpointError, load_signing_key

    try:
        load_signing_key(key.reveal())
    except CheckpointError as exc:
        raise table.error(str(exc), "signing_key") from None
    return key


def _check_store_url(table: Table, url: str) -> None:
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


def _instance(table: Table, store: str) -> str:
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
