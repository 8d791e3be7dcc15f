"""The ``[console]`` table: the web console's address, session lifetimes and sign-in methods.

Parsed by the one config loader (:func:`hoopgw.config.load.parse_config`) through :func:`parse`;
every error names the key (``console.oidc[0].client_id``). ``docs/configuration.md`` describes
every key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from hoopgw.errors import ConfigError
from hoopgw.secrets import Secret, resolve_secret

if TYPE_CHECKING:
    from hoopgw.identity.oidc import IssuerSettings

__all__ = ["ConsoleConfig", "OidcLogin", "parse"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_IDLE_TIMEOUT = 900.0
DEFAULT_ABSOLUTE_TIMEOUT = 8 * 3600.0


@attrs.frozen(kw_only=True)
class OidcLogin:
    """One ``[[console.oidc]]`` table: a provider people sign in with (authorization code
    flow with PKCE)."""

    name: str
    """Short name, used in the sign-in URL (``/console/login/oidc/<name>``)."""
    issuer: str
    """The issuer, which must be trusted in ``[[identity.oidc]]``: its keys, identity claim,
    groups claim and identity prefix check the ID token (with ``client_id`` as audience)."""
    client_id: str
    """The console's client id at the provider."""
    client_secret: Secret | None = None
    """The client secret (a reference); None for a public client (PKCE only)."""
    label: str = ""
    """Text of the sign-in button; default ``Sign in with <name>``."""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    """Scopes asked for; ``openid`` is always among them."""
    authorization_endpoint: str | None = None
    """Where the browser is sent to sign in; None: from the issuer's discovery document."""
    token_endpoint: str | None = None
    """Where the code is exchanged; None: from the issuer's discovery document."""


@attrs.frozen(kw_only=True)
class ConsoleConfig:
    """The ``[console]`` table."""

    public_url: str
    """The console's origin as browsers reach it (``https://gw.example.com:8443``): the
    redirect URI is made from it and a form post from any other origin is refused."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds without a request after which a console session ends."""
    absolute_timeout: float = DEFAULT_ABSOLUTE_TIMEOUT
    """Seconds after sign-in after which a console session ends, however busy."""
    oidc: tuple[OidcLogin, ...] = ()
    """The ``[[console.oidc]]`` tables."""
    saml: Mapping[str, Any] | None = None
    """The ``[console.saml]`` table as written, validated by the SAML plugin; None without."""

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of :attr:`public_url`, as browsers send it in ``Origin``."""
        return self.public_url.rstrip("/")

    @property
    def secure(self) -> bool:
        """True when browsers reach the console over HTTPS."""
        return self.public_url.startswith("https://")


_CONSOLE_KEYS = {"public_url", "idle_timeout", "absolute_timeout", "oidc", "saml"}
_OIDC_KEYS = {f.name for f in attrs.fields(OidcLogin)}


def _error(message: str, key: str) -> ConfigError:
    return ConfigError(message, key="console." + key)


def _get(
    raw: Mapping[str, Any], key: str, types: tuple[type, ...], where: str, default: Any
) -> Any:
    if key not in raw:
        if default is _REQUIRED:
            raise _error("required", where + key)
        return default
    value = raw[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise _error(f"expected {names}, got {type(value).__name__}", where + key)
    return value


_REQUIRED = object()


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


def _check_url(value: str, key: str, *, origin_only: bool = False) -> str:
    """An https URL, or an http one to a loopback host (a test or a local reverse proxy)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _error("must be an https:// URL", key)
    if parts.scheme == "http" and not _is_loopback(value):
        raise _error("must be an https:// URL (http only on a loopback address)", key)
    if origin_only and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise _error("must be an origin only (scheme, host and port), without a path", key)
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = float(_get(raw, key, (int, float), "", default))
    if not 60 <= value < math.inf:
        raise _error("must be a finite number of at least 60 seconds", key)
    return value


def parse(
    raw: Mapping[str, Any], *, issuers: Sequence[IssuerSettings], base_dir: Path
) -> ConsoleConfig:
    """Validate the ``[console]`` table.

    :param issuers: the trusted issuers (``[[identity.oidc]]``); each console provider must be
        one of them.
    :raises ConfigError: naming the key at fault.
    """
    for key in raw:
        if key not in _CONSOLE_KEYS:
            raise _error(f"unknown key (known: {', '.join(sorted(_CONSOLE_KEYS))})", key)
    public_url = _check_url(
        _get(raw, "public_url", (str,), "", _REQUIRED), "public_url", origin_only=True
    )
    idle = _seconds(raw, "idle_timeout", DEFAULT_IDLE_TIMEOUT)
    absolute = _seconds(raw, "absolute_timeout", DEFAULT_ABSOLUTE_TIMEOUT)
    if idle > absolute:
        raise _error("must not be longer than absolute_timeout", "idle_timeout")
    providers = raw.get("oidc", [])
    if not isinstance(providers, list) or not all(isinstance(p, dict) for p in providers):
        raise _error("must be an array of tables ([[console.oidc]])", "oidc")
    logins = tuple(_oidc(p, i, issuers, base_dir) for i, p in enumerate(providers))
    names = [login.name for login in logins]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise _error(f"the name {name!r} is used twice", f"oidc[{index}].name")
    saml = raw.get("saml")
    if saml is not None and not isinstance(saml, dict):
        raise _error("expected table", "saml")
    if not logins and saml is None:
        raise _error(
            "name at least one way to sign in ([[console.oidc]] or [console.saml])", "oidc"
        )
    return ConsoleConfig(
        public_url=public_url,
        idle_timeout=idle,
        absolute_timeout=absolute,
        oidc=logins,
        saml=saml,
    )


def _oidc(
    raw: Mapping[str, Any], index: int, issuers: Sequence[IssuerSettings], base_dir: Path
) -> OidcLogin:
    where = f"oidc[{index}]."
    for key in raw:
        if key not in _OIDC_KEYS:
            raise _error(f"unknown key (known: {', '.join(sorted(_OIDC_KEYS))})", where + key)
    name = _get(raw, "name", (str,), where, _REQUIRED)
    if not _NAME.fullmatch(name):
        raise _error("must be lower-case letters, digits, '-' or '_' (at most 32)", where + "name")
    issuer = _get(raw, "issuer", (str,), where, _REQUIRED)
    if issuer not in {i.issuer for i in issuers}:
        raise _error(
            "must be an issuer trusted in [[identity.oidc]] (its keys check the ID token)",
            where + "issuer",
        )
    client_id = _get(raw, "client_id", (str,), where, _REQUIRED)
    if not client_id or not client_id.isprintable():
        raise _error("must be a non-empty printable string", where + "client_id")
    reference = _get(raw, "client_secret", (str,), where, None)
    secret = (
        None
        if reference is None
        else resolve_secret(reference, key="console." + where + "client_secret", base_dir=base_dir)
    )
    scopes = _get(raw, "scopes", (list,), where, ["openid", "profile", "email"])
    if not all(isinstance(s, str) and s and " " not in s for s in scopes):
        raise _error("must be a list of scope names without spaces", where + "scopes")
    if "openid" not in scopes:
        scopes = ["openid", *scopes]
    endpoints = {}
    for key in ("authorization_endpoint", "token_endpoint"):
        value = _get(raw, key, (str,), where, None)
        endpoints[key] = None if value is None else _check_url(value, where + key)
    label = _get(raw, "label", (str,), where, "") or f"Sign in with {name}"
    return OidcLogin(
        name=name,
        issuer=issuer,
        client_id=client_id,
        client_secret=secret,
        label=label,
        scopes=tuple(scopes),
        **endpoints,
    )
