"""Signing people in with OpenID Connect: the authorization code flow with PKCE.

For each ``[[console.oidc]]`` provider, :class:`OidcSignIn`:

1. :meth:`~OidcSignIn.begin` makes a fresh ``state``, ``nonce`` and PKCE code verifier
   (RFC 7636, method ``S256``) and the URL of the provider's authorization endpoint;
2. :meth:`~OidcSignIn.finish` exchanges the code at the token endpoint (over verified HTTPS,
   with the verifier and, for a confidential client, the client secret), then checks the ID
   token with the gateway's own token checks (:mod:`hoopgw.identity.oidc`: the issuer's keys,
   algorithms, ``iss``, times, identity and groups claims, identity prefix) with the
   ``client_id`` as the one accepted audience, then that its ``nonce`` is the one sent and,
   when present, that ``azp`` is the client id. The groups then go through the configured group
   sources, exactly as for a token presented to a database connection.

The caller (:mod:`hoopgw.console.web`) checks ``state`` against the browser that started the
sign-in before calling :meth:`~OidcSignIn.finish`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.internet import defer

from hoopgw.console.settings import OidcLogin
from hoopgw.errors import AuthenticationError
from hoopgw.identity.oidc import IssuerKeys, IssuerSettings, TokenRejected, TokenVerifier
from hoopgw.session import Identity
from hoopgw.signin import LoginAttempt

__all__ = ["OidcSignIn", "SignInFailed", "pkce_challenge"]

DISCOVERY_PATH = "/.well-known/openid-configuration"


class SignInFailed(AuthenticationError):
    """A sign-in that did not succeed; ``str()`` is safe to show, :attr:`reason` is for the
    audit record."""

    def __init__(self, shown: str, *, reason: str) -> None:
        super().__init__(shown)
        self.reason = reason


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier`` (RFC 7636 section 4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class OidcSignIn:
    """Sign-in through one OIDC provider.

    :param login: the ``[[console.oidc]]`` table.
    :param issuer: the matching ``[[identity.oidc]]`` settings.
    :param fetcher: a :class:`~hoopgw.identity.fetch.JsonFetcher` trusting the issuer's CA.
    :param clock: ``seconds()``.
    """

    def __init__(
        self, login: OidcLogin, issuer: IssuerSettings, *, fetcher: Any, clock: Any
    ) -> None:
        self.login = login
        self._issuer = issuer
        self._fetcher = fetcher
        self._clock = clock
        # An ID token's audience is the client id (OIDC Core 3.1.3.7, step 3).
        settings = attrs.evolve(issuer, audience=(login.client_id,))
        self._verifier = TokenVerifier(
            [IssuerKeys(settings, fetch_json=fetcher, clock=clock)], clock=clock
        )
        self._endpoints: dict[str, str] | None = None
        if login.authorization_endpoint and login.token_endpoint:
            self._endpoints = {
                "authorization_endpoint": login.authorization_endpoint,
                "token_endpoint": login.token_endpoint,
            }

    @property
    def provider(self) -> str:
        """``oidc:<name>``, as sessions and audit records name it."""
        return f"oidc:{self.login.name}"

    def endpoints(self) -> defer.Deferred[dict[str, str]]:
        """The authorization and token endpoints: configured, or from the issuer's discovery
        document (fetched once; its ``issuer`` must be the configured one)."""
        if self._endpoints is not None:
            return defer.succeed(self._endpoints)
        url = self._issuer.issuer.rstrip("/") + DISCOVERY_PATH

        def found(document: Any) -> dict[str, str]:
            if not isinstance(document, dict) or document.get("issuer") != self._issuer.issuer:
                raise ValueError(f"{url} names another issuer")
            endpoints = {}
            for key in ("authorization_endpoint", "token_endpoint"):
                value = getattr(self.login, key) or document.get(key)
                if not isinstance(value, str) or not value.startswith("https://"):
                    raise ValueError(f"{url} has no https {key}")
                endpoints[key] = value
            self._endpoints = endpoints
            return endpoints

        return self._fetcher(url).addCallback(found)

    def begin(self, redirect_uri: str) -> defer.Deferred[tuple[str, LoginAttempt]]:
        """Start a sign-in.

        :return: a Deferred firing with the URL to send the browser to and the attempt to
            keep until the callback.
        """
        attempt = LoginAttempt(
            provider=self.provider,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
            started_at=self._clock.seconds(),
        )

        def url(endpoints: dict[str, str]) -> tuple[str, LoginAttempt]:
            query = urlencode(
                {
                    "response_type": "code",
                    "client_id": self.login.client_id,
                    "redirect_uri": redirect_uri,
                    "scope": " ".join(self.login.scopes),
                    "state": attempt.state,
                    "nonce": attempt.nonce,
                    "code_challenge": pkce_challenge(attempt.verifier),
                    "code_challenge_method": "S256",
                }
            )
            endpoint = endpoints["authorization_endpoint"]
            return endpoint + ("&" if "?" in endpoint else "?") + query, attempt

        return self.endpoints().addCallback(url)

    def finish(
        self, attempt: LoginAttempt, code: str, redirect_uri: str
    ) -> defer.Deferred[Identity]:
        """Exchange ``code`` and check the ID token.

        :return: a Deferred firing with the identity (the token's groups; the console adds
            those of the group sources), or failing with :class:`SignInFailed`.
        """
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": attempt.verifier,
            "client_id": self.login.client_id,
        }
        headers = {}
        if self.login.client_secret is not None:
            # client_secret_basic (RFC 6749 section 2.3.1): both parts form-encoded first.
            pair = f"{_form(self.login.client_id)}:{_form(self.login.client_secret.reveal())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()

        def exchanged(endpoints: dict[str, str]) -> defer.Deferred[Any]:
            return self._fetcher.post_form(endpoints["token_endpoint"], fields, headers)

        def token_of(answer: Any) -> defer.Deferred[Identity]:
            id_token = answer.get("id_token") if isinstance(answer, dict) else None
            if not isinstance(id_token, str):
                raise SignInFailed("sign-in failed", reason="the token endpoint gave no id_token")
            return self._verifier.verify(id_token).addCallback(self._checked, id_token, attempt)

        def failed(failure: Any) -> Any:
            if failure.check(SignInFailed):
                return failure
            if failure.check(TokenRejected):
                raise SignInFailed("sign-in failed", reason=f"ID token: {failure.value.reason}")
            raise SignInFailed(
                "sign-in failed", reason=f"token exchange: {failure.getErrorMessage()}"
            )

        d = self.endpoints().addCallback(exchanged).addCallback(token_of)
        return d.addErrback(failed)

    def _checked(self, identity: Identity, id_token: str, attempt: LoginAttempt) -> Identity:
        # The signature and claims checked out; read the claims the token checks do not know.
        claims = json.loads(base64.urlsafe_b64decode(_padded(id_token.split(".")[1])))
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), attempt.nonce.encode()
        ):
            raise SignInFailed("sign-in failed", reason="the ID token's nonce is not ours")
        azp = claims.get("azp")
        if azp is not None and azp != self.login.client_id:
            raise SignInFailed("sign-in failed", reason=f"the ID token's azp is {azp!r}")
        return identity


def _padded(part: str) -> str:
    return part + "=" * (-len(part) % 4)


def _form(value: str) -> str:
    return urlencode({"": value})[1:]


def install(console: Any, sign_in: OidcSignIn) -> None:
    """Serve ``sign_in`` on ``console``: ``/console/login/oidc/<name>`` sends the browser to
    the provider, ``/console/callback/oidc/<name>`` takes it back (the redirect URI to
    register at the provider)."""
    name = sign_in.login.name
    redirect_uri = f"{console.base_url}/callback/oidc/{name}"

    def begin(request: Any) -> defer.Deferred[Any]:
        return sign_in.begin(redirect_uri).addCallback(
            lambda started: console.begin_sign_in(started[1], started[0], cross_site_post=False)
        )

    def callback(request: Any) -> defer.Deferred[Any]:
        args = request.args
        state = _arg(args, "state")
        attempt = console.take_attempt(request, state) if state else None
        if attempt is None or attempt.provider != sign_in.provider:
            return console.sign_in_failed(
                request, sign_in.provider, "state unknown, used, expired or from another browser"
            )
        error = _arg(args, "error")
        code = _arg(args, "code")
        if error or not code:
            return console.sign_in_failed(
                request, sign_in.provider, f"the provider answered error {error[:100]!r}"
            )

        def failed(failure: Any) -> Any:
            failure.trap(AuthenticationError)
            reason = getattr(failure.value, "reason", str(failure.value))
            return console.sign_in_failed(request, sign_in.provider, reason)

        d = sign_in.finish(attempt, code, redirect_uri)
        return d.addCallbacks(
            lambda identity: console.signed_in(request, identity, sign_in.provider), failed
        )

    console.route("GET", f"/login/oidc/{name}", begin)
    console.route("GET", f"/callback/oidc/{name}", callback)
    console.add_sign_in(sign_in.provider, sign_in.login.label, f"/console/login/oidc/{name}")


def _arg(args: dict[bytes, list[bytes]], name: str) -> str:
    values = args.get(name.encode())
    return values[0].decode("utf-8", "replace")[:4096] if values else ""
