"""The ``[identity]`` table: trusted token issuers, group sources, failed-login back-off."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from hoopgw import plugin
from hoopgw.config.tables import Table, readable_file, reject_unknown, sub_table
from hoopgw.errors import PluginError
from hoopgw.runtime.throttle import BackoffSettings
from hoopgw.secrets import resolve_secret

# Imported where used, because most configs do not need them and they are slow to load: the
# OIDC module (PyJWT, cryptography) and group sources (entry points).
if TYPE_CHECKING:
    from hoopgw.identity.oidc import IssuerSettings

__all__ = ["IdentityConfig", "parse_identity"]


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


_IDENTITY_KEYS = {"oidc", "group_sources", "backoff", "key_check_interval"}


def parse_identity(table: Table, base_dir: Path) -> IdentityConfig:
    """The validated ``[identity]`` table; relative paths start at ``base_dir``."""
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
        backoff=_backoff(Table(sub_table(table.data, "backoff", ""), "identity.backoff.", "")),
        key_check_interval=table.seconds("key_check_interval", defaults.key_check_interval),
    )


def _check_prefixes(table: Table, issuers: tuple[IssuerSettings, ...]) -> None:
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
    from hoopgw.identity.oidc import (
        ALLOWED_ALGORITHMS,
        IDENTITY_CLAIMS,
        IssuerSettings,
        _usable_name,
        parse_jwks,
    )

    table = Table(raw, f"identity.oidc[{index}].", "")
    reject_unknown(raw, {f.name for f in attrs.fields(IssuerSettings)}, prefix=table.prefix)
    defaults = IssuerSettings(issuer="-", audience=("-",))
    issuer = table.string("issuer")
    jwks_file = readable_file(table, "jwks_file", table.string("jwks_file", None), base_dir)
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
        ca_file=readable_file(table, "ca_file", table.string("ca_file", None), base_dir),
        jwks_max_age=table.seconds("jwks_max_age", defaults.jwks_max_age),
        refetch_interval=table.seconds("refetch_interval", defaults.refetch_interval),
        fetch_timeout=table.seconds("fetch_timeout", defaults.fetch_timeout),
        identity_prefix=identity_prefix,
    )


def _backoff(table: Table) -> BackoffSettings:
    reject_unknown(table.data, {f.name for f in attrs.fields(BackoffSettings)}, prefix=table.prefix)
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


def _group_source_options(table: Table, name: str, base_dir: Path) -> dict[str, Any]:
    if name in _IDENTITY_KEYS:
        raise table.error(f"{name!r} is a reserved name, not a group source", "group_sources")
    from hoopgw.groups import load_group_source  # only a config with group sources needs it

    try:
        cls = load_group_source(name)
    except PluginError as exc:
        raise table.error(str(exc), "group_sources") from None
    options = plugin.validate_options(
        f"identity.{name}", cls.options, sub_table(table.data, name, ""), connection=""
    )
    for key in getattr(cls, "secret_options", ()):
        if isinstance(options.get(key), str):
            options[key] = resolve_secret(
                options[key], key=f"identity.{name}.{key}", base_dir=base_dir
            )
    plugin.check_plugin_options(f"identity.{name}", cls, options, protocol="", connection="")
    return options


# -- values ----------------------------------------------------------------------------------
