"""OIDC tokens: checking a JSON Web Token from a trusted issuer and turning it into an identity.

Each trusted issuer (``[[identity.oidc]]``) has an :class:`IssuerKeys` that holds its signing
keys (a JWKS): fetched over HTTPS from the issuer's discovery document and cached, or read from
a local ``jwks_file``. A token whose ``kid`` is not among the cached keys triggers one refetch
(the issuer may have rotated its keys), at most once per ``refetch_interval`` per issuer, so a
stream of made-up key ids cannot turn the gateway into a load generator against the issuer.

:class:`TokenVerifier` checks, in this order:

1. the token is a compact JWS whose header names an algorithm from the issuer's allow-list
   (asymmetric only: never ``none``, never an HMAC, which would let a public key be used as a
   shared secret), carries no header that names or embeds a key (``jku``, ``jwk``, ``x5u``,
   ``x5c``) and no ``crit`` extension we do not understand;
2. its unverified ``iss`` names a trusted issuer (only to pick the issuer's keys);
3. the signature, with the issuer's key of that ``kid`` (whose type must fit the algorithm);
4. ``iss``, ``aud``, ``exp``, ``nbf``, ``iat`` (with ``leeway`` seconds of clock skew) and the
   configured required claims;
5. the identity claim and the groups claim.

Until the signature checks out the caller learns only "invalid token"; after it, the message
says what is wrong (expired, wrong audience, ...), since only the token's holder can see it.
The detailed reason is always available to the gateway for the audit record and the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer
from twisted.logger import Logger

from hoopgw.errors import AuthenticationError
from hoopgw.session import Identity

__all__ = [
    "ALLOWED_ALGORITHMS",
    "IDENTITY_CLAIMS",
    "IssuerKeys",
    "IssuerSettings",
    "TokenRejected",
    "TokenVerifier",
    "key_fits",
    "looks_like_jwt",
    "parse_jwks",
    "token_prefix_of",
]

log = Logger(namespace="hoopgw.oidc")

ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""Every algorithm a token may be signed with: asymmetric ones only."""

IDENTITY_CLAIMS: tuple[str, ...] = ("sub", "client_id", "azp", "email")
"""Claims that may name the identity."""

MIN_RSA_BITS = 2048
"""Smallest RSA key accepted from a JWKS."""

# Headers that name or carry a key: the token must never choose the key that verifies it.
_KEY_HEADERS = ("jku", "jwk", "x5u", "x5c")
# The key type (and curve) each algorithm family needs.
_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS": ("RSA", None),
    "PS": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
_INVALID = "invalid token"
# A JWT is far below this; anything longer is refused before any parsing.
MAX_TOKEN_LENGTH = 16 * 1024
# Unverified values quoted in a rejection reason are cut to this many characters.
MAX_SHOWN_LENGTH = 100
# Longer (or unprintable) jti values are not used in the credential id.
MAX_JTI_LENGTH = 256


class TokenRejected(AuthenticationError):
    """A token was not accepted.

    ``str(error)`` is safe to show to the client; :attr:`reason` is the detailed cause for the
    audit record and the log (it never contains the token).
    """

    def __init__(self, shown: str, *, reason: str) -> None:
        super().__init__(shown)
        self.reason = reason


@attrs.frozen(kw_only=True)
class IssuerSettings:
    """How one trusted issuer's tokens are checked (from ``[[identity.oidc]]``)."""

    issuer: str
    """The exact ``iss`` value; for discovery, the HTTPS URL the discovery document is under."""
    audience: tuple[str, ...]
    """Accepted ``aud`` values; a token must name at least one."""
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    """Algorithms accepted from this issuer, a subset of :data:`ALLOWED_ALGORITHMS`."""
    identity_claim: str = "sub"
    """Claim that names the identity, one of :data:`IDENTITY_CLAIMS`."""
    groups_claim: str = "groups"
    """Dotted path of the claim listing the groups (``realm_access.roles``); empty: the token
    carries no groups (they come from group sources). When set, a token without it is refused."""
    required_claims: tuple[str, ...] = ()
    """Claims that must be present besides ``iss``, ``aud``, ``exp``, ``iat`` and the identity."""
    leeway: float = 30.0
    """Seconds of clock skew allowed for ``exp``, ``nbf`` and ``iat``."""
    jwks_file: str | None = None
    """Absolute path of a local JWKS file; None to use discovery over HTTPS."""
    ca_file: str | None = None
    """Absolute path of the PEM CA bundle trusted for HTTPS fetches; None: the system's."""
    jwks_max_age: float = 3600.0
    """Seconds a fetched JWKS is used before it is fetched again."""
    refetch_interval: float = 60.0
    """Least number of seconds between two fetches caused by an unknown ``kid``."""
    fetch_timeout: float = 10.0
    """Seconds one HTTPS fetch may take."""
    identity_prefix: str = ""
    """Put before the identity claim's value to make the identity name (``corp:``), so that
    names from different issuers (and API keys) cannot collide; required, and distinct, when
    more than one issuer is trusted."""


def _b64json(part: str) -> Any:
    # Callers also catch RecursionError: JSON nested a few thousand deep raises it.
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def looks_like_jwt(secret: str) -> bool:
    """Whether ``secret`` has the shape of a compact JWS (three base64url parts, a JSON
    header), so that it is checked as a token and not as an API key."""
    if len(secret) > MAX_TOKEN_LENGTH or secret.count(".") != 2 or not secret.isascii():
        return False
    try:
        return isinstance(_b64json(secret.split(".", 1)[0]), dict)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return False


def _family(algorithm: str) -> str:
    return algorithm[:2] if algorithm[:2] in ("RS", "PS") else algorithm


def key_fits(jwk: Mapping[str, Any], algorithm: str) -> bool:
    """Whether a JWKS entry may verify a token signed with ``algorithm``."""
    kty, crv = _KEY_TYPES[_family(algorithm)]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return False
    if algorithm == "EdDSA" and jwk.get("crv") not in ("Ed25519", "Ed448"):
        return False
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", algorithm) != algorithm:
        return False
    ops = jwk.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


class IssuerKeys:
    """The signing keys of one issuer: loaded, cached, and refetched when a ``kid`` is unknown.

    :param settings: the issuer.
    :param fetch_json: ``fetch_json(url) -> Deferred[Any]``: one HTTPS GET of a JSON document
        (see :mod:`hoopgw.identity.fetch`); tests pass a fake.
    :param clock: ``seconds()`` and ``callLater`` (the reactor, or a ``Clock`` in tests).
    :param read_file: reads ``jwks_file``; the default reads it from disk.
    """

    def __init__(
        self,
        settings: IssuerSettings,
        *,
        fetch_json: Callable[[str], defer.Deferred[Any]],
        clock: Any,
        read_file: Callable[[str], bytes] | None = None,
    ) -> None:
        self.settings = settings
        self._fetch_json = fetch_json
        self._clock = clock
        self._read_file = read_file or _read_bytes
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at: float | None = None
        self._last_fetch: float | None = None
        self._in_flight: defer.Deferred[None] | None = None

    def key(self, kid: str | None) -> defer.Deferred[dict[str, Any] | None]:
        """The JWK for ``kid`` (None: the token names no kid, so the only key, if there is
        exactly one), loading or refreshing the key set when needed.

        :return: a Deferred firing with the JWK, or None when the issuer has no such key; it
            fails with :class:`TokenRejected` when no key set could be loaded at all.
        """
        now = self._clock.seconds()
        stale = self._loaded_at is None or (
            self.settings.jwks_file is None and now - self._loaded_at >= self.settings.jwks_max_age
        )
        if self._in_flight is not None:
            d = self._refresh()  # joins the fetch under way
        elif (stale or self._find(kid) is None) and self._may_refetch(now):
            # Rate-limited whatever the cause, so that neither made-up key ids nor an issuer
            # that is down make every login hit the issuer.
            d = self._refresh()
        else:
            d = defer.succeed(None)

        def found(_: Any) -> dict[str, Any] | None:
            if self._loaded_at is None:
                raise TokenRejected(
                    "the token cannot be checked now; try again later",
                    reason=f"no signing keys for issuer {self.settings.issuer}",
                )
            return self._find(kid)

        return d.addCallback(found)

    def _may_refetch(self, now: float) -> bool:
        return self._last_fetch is None or now - self._last_fetch >= self.settings.refetch_interval

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def refresh(self) -> defer.Deferred[None]:
        """Load the key set now (at start-up); a failure is logged and the old keys are kept."""
        return self._refresh()

    def _refresh(self) -> defer.Deferred[None]:
        # Callers that arrive while a fetch is running wait for it rather than start another.
        loading = self._in_flight
        if loading is None:
            self._last_fetch = self._clock.seconds()
            self._in_flight = loading = defer.maybeDeferred(self._load)
            loading.addCallback(self._loaded).addErrback(self._load_failed)
        waiter: defer.Deferred[None] = defer.Deferred()
        loading.addBoth(_release, waiter)
        return waiter

    def _load(self) -> Any:
        if self.settings.jwks_file is not None:
            return json.loads(self._read_file(self.settings.jwks_file))
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        return self._fetch_json(url).addCallback(self._discovered)

    def _discovered(self, document: Any) -> Any:
        if not isinstance(document, dict):
            raise ValueError("the discovery document is not a JSON object")
        # OpenID Connect Discovery 1.0, section 4.3: the document must name the same issuer.
        if document.get("issuer") != self.settings.issuer:
            raise ValueError(f"the discovery document names issuer {document.get('issuer')!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise ValueError("the discovery document has no https jwks_uri")
        return self._fetch_json(jwks_uri)

    def _loaded(self, jwks: Any) -> None:
        self._in_flight = None
        keys = parse_jwks(jwks)
        self._keys = keys
        self._loaded_at = self._clock.seconds()
        log.info(
            "signing keys of {issuer} loaded: {kids}",
            issuer=self.settings.issuer,
            kids=", ".join(sorted(keys)) or "none",
        )

    def _load_failed(self, failure: Any) -> None:
        self._in_flight = None
        log.warn(
            "cannot load the signing keys of {issuer}: {why}",
            issuer=self.settings.issuer,
            why=failure.getErrorMessage(),
        )


def _release(result: Any, waiter: defer.Deferred[None]) -> Any:
    waiter.callback(None)
    return result


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def parse_jwks(jwks: Any) -> dict[str, dict[str, Any]]:
    """The usable signing keys of a JWKS, by ``kid``; symmetric and malformed keys are
    dropped (an ``oct`` key must never verify a token)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS (no 'keys' list)")
    keys: dict[str, dict[str, Any]] = {}
    for index, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) and kid else f"#{index}"] = jwk
    return keys


class TokenVerifier:
    """Checks tokens from any trusted issuer; see the module docstring for the order.

    :param issuers: the keys of each trusted issuer.
    :param clock: ``seconds()`` gives the time the token's time claims are checked against.
    """

    def __init__(self, issuers: Sequence[IssuerKeys], *, clock: Any) -> None:
        self._issuers = {keys.settings.issuer: keys for keys in issuers}
        self._clock = clock

    @property
    def issuers(self) -> list[IssuerKeys]:
        """The trusted issuers' key sets."""
        return list(self._issuers.values())

    def verify(self, token: str) -> defer.Deferred[Identity]:
        """Check ``token``.

        :return: a Deferred firing with the identity (``method="oidc"``), or failing with
            :class:`TokenRejected`.
        """
        try:
            header, claims = _unverified(token)
            iss = claims.get("iss")
            keys = self._issuers.get(iss) if isinstance(iss, str) else None
            if keys is None:
                raise TokenRejected(_INVALID, reason=f"untrusted issuer {_brief(iss)}")
            algorithm = _check_header(header, keys.settings)
        except TokenRejected:
            return defer.fail()
        kid = header.get("kid")
        return keys.key(kid).addCallback(self._verified, token, algorithm, kid, keys.settings)

    def _verified(
        self,
        jwk: dict[str, Any] | None,
        token: str,
        algorithm: str,
        kid: str | None,
        settings: IssuerSettings,
    ) -> Identity:
        if jwk is None:
            raise TokenRejected(_INVALID, reason=f"unknown key id {_brief(kid)}")
        if not key_fits(jwk, algorithm):
            raise TokenRejected(_INVALID, reason=f"key {kid!r} does not fit algorithm {algorithm}")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.exceptions.PyJWTError as exc:
            raise TokenRejected(_INVALID, reason=f"key {kid!r} is unusable: {exc}") from None
        if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
            raise TokenRejected(_INVALID, reason=f"key {kid!r} is shorter than {MIN_RSA_BITS} bits")
        claims = _decode(token, key, algorithm, settings, now=self._clock.seconds())
        return _identity(claims, settings, kid)


def _brief(value: Any) -> str:
    """``repr(value)``, cut short: unverified header and claim values reach audit records and
    logs, and a token may be 16 KiB long."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_LENGTH else text[: MAX_SHOWN_LENGTH - 3] + "..."


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not looks_like_jwt(token):
        raise TokenRejected(_INVALID, reason="not a compact JWS")
    header_part, payload_part, _ = token.split(".")
    try:
        header = _b64json(header_part)
        claims = _b64json(payload_part)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise TokenRejected(_INVALID, reason="header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected(_INVALID, reason="header or payload is not a JSON object")
    return header, claims


def _check_header(header: dict[str, Any], settings: IssuerSettings) -> str:
    algorithm = header.get("alg")
    # Both lists: the built-in one holds however an issuer was configured.
    if algorithm not in ALLOWED_ALGORITHMS or algorithm not in settings.algorithms:
        raise TokenRejected(_INVALID, reason=f"algorithm {_brief(algorithm)} is not allowed")
    named = [h for h in _KEY_HEADERS if h in header]
    if named:
        raise TokenRejected(_INVALID, reason=f"the header names its own key ({', '.join(named)})")
    if "crit" in header:
        raise TokenRejected(_INVALID, reason="the header has critical extensions (crit)")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected(_INVALID, reason="kid is not a string")
    return algorithm


def _decode(
    token: str, key: Any, algorithm: str, settings: IssuerSettings, *, now: float
) -> dict[str, Any]:
    required = ["iss", "aud", "exp", "iat", settings.identity_claim, *settings.required_claims]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=list(settings.audience),
            issuer=settings.issuer,
            options={
                "require": list(dict.fromkeys(required)),
                "enforce_minimum_key_length": True,
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                # PyJWT reads the wall clock; _check_times uses the gateway's clock instead.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.exceptions.InvalidSignatureError:
        raise TokenRejected(_INVALID, reason="bad signature") from None
    except jwt.exceptions.InvalidAudienceError:
        raise TokenRejected(
            "the token is not meant for this gateway (audience)", reason="wrong audience (aud)"
        ) from None
    except jwt.exceptions.InvalidIssuerError:
        raise TokenRejected(_INVALID, reason="wrong issuer (iss)") from None
    except jwt.exceptions.MissingRequiredClaimError as exc:
        raise TokenRejected(
            f'the token lacks the "{exc.claim}" claim', reason=f"missing claim {exc.claim!r}"
        ) from None
    except jwt.exceptions.PyJWTError as exc:
        raise TokenRejected(_INVALID, reason=f"{type(exc).__name__}: {exc}") from None
    _check_times(claims, now=now, leeway=settings.leeway)
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # Python's JSON reader takes NaN and Infinity: an exp of either would never expire.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(_INVALID, reason=f"{name} is not a finite number")
    return float(value)


def _check_times(claims: Mapping[str, Any], *, now: float, leeway: float) -> None:
    """RFC 7519 section 4.1.4-4.1.6, with ``leeway`` seconds of clock skew either way."""
    exp = _number(claims, "exp")
    if exp is not None and exp <= now - leeway:
        raise TokenRejected("the token has expired", reason=f"expired (exp {exp:.0f})")
    for name in ("nbf", "iat"):
        when = _number(claims, name)
        if when is not None and when > now + leeway:
            raise TokenRejected(
                "the token is not valid yet", reason=f"not yet valid ({name} {when:.0f})"
            )


def _claim_path(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _identity(claims: dict[str, Any], settings: IssuerSettings, kid: str | None) -> Identity:
    name = claims.get(settings.identity_claim)
    if not _usable_name(name):
        raise TokenRejected(
            f'the token\'s "{settings.identity_claim}" claim is not a usable name',
            reason=f"identity claim {settings.identity_claim!r} is not a usable name",
        )
    if settings.identity_claim == "email" and claims.get("email_verified") is not True:
        # Some providers let a user set any address; only a verified one may name an identity.
        raise TokenRejected(
            "the token's email address is not verified", reason="email_verified is not true"
        )
    groups: frozenset[str] = frozenset()
    if settings.groups_claim:
        value = _claim_path(claims, settings.groups_claim)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(g, str) and g and g.isprintable() for g in value
        ):
            shown = f'the token lacks a usable "{settings.groups_claim}" claim'
            raise TokenRejected(shown, reason=f"groups claim {settings.groups_claim!r} missing")
        groups = frozenset(value)
    jti = claims.get("jti")
    if not (isinstance(jti, str) and len(jti) <= MAX_JTI_LENGTH and jti.isprintable()):
        jti = None  # the credential id goes into audit records and logs
    exp = _number(claims, "exp")  # required by _decode, so present
    return Identity(
        name=settings.identity_prefix + name,
        groups=groups,
        method="oidc",
        credential_id=f"{settings.issuer}#{jti or kid or ''}",
        # Live sessions end when a login with the token would no longer be accepted.
        expires_at=None if exp is None else exp + settings.leeway,
    )


def token_prefix_of(name: str, issuers: Sequence[IssuerSettings]) -> str | None:
    """The configured ``identity_prefix`` that ``name`` starts with, if any: such a name is
    reserved for tokens of that issuer, so no API or SSH key may be made for it."""
    for settings in issuers:
        if settings.identity_prefix and name.startswith(settings.identity_prefix):
            return settings.identity_prefix
    return None


def _usable_name(name: Any) -> TypeGuard[str]:
    """The rule API key identity names follow (see :mod:`hoopgw.identity.keys`): identity names end
    up in audit records, in log lines and in user-name matching."""
    return (
        isinstance(name, str)
        and bool(name)
        and name.isprintable()
        and not any(c.isspace() for c in name)
        and "," not in name
    )
