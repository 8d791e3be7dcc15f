"""OIDC sign-in without a network: a fake provider (discovery, JWKS, token endpoint) answering
from a TestIssuer, a Clock for time."""

from __future__ import annotations

import base64
import hashlib
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from twisted.internet import defer, task

from hoopgw.console.oidc_signin import OidcSignIn, SignInFailed
from hoopgw.console.settings import OidcLogin
from hoopgw.identity.oidc import IssuerSettings
from hoopgw.secrets import Secret

helper: Any = sys.modules["hoopgw_tests_oidcissuer"]  # registered by tests/conftest.py
NOW = 1_800_000_000
REDIRECT = "https://gw.example.com/console/callback/oidc/corp"


class Provider:
    """Discovery, JWKS and a token endpoint that returns ``id_token``."""

    def __init__(self, issuer: Any) -> None:
        self.issuer = issuer
        self.id_token: str | None = None
        self.posts: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def __call__(self, url: str) -> defer.Deferred[Any]:
        if url == f"{self.issuer.issuer}/.well-known/openid-configuration":
            return defer.succeed(
                {
                    **self.issuer.discovery(),
                    "authorization_endpoint": f"{self.issuer.issuer}/auth",
                    "token_endpoint": f"{self.issuer.issuer}/token",
                }
            )
        if url == f"{self.issuer.issuer}/jwks":
            return defer.succeed(self.issuer.jwks())
        return defer.fail(ValueError(f"404 {url}"))

    def post_form(
        self, url: str, fields: dict[str, str], headers: dict[str, str]
    ) -> defer.Deferred[Any]:
        self.posts.append((url, fields, headers))
        return defer.succeed({"id_token": self.id_token, "token_type": "Bearer"})


def _result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def setup() -> tuple[Any, Provider, OidcSignIn]:
    issuer = helper.TestIssuer()
    provider = Provider(issuer)
    clock = task.Clock()
    clock.advance(NOW)
    login = OidcLogin(
        name="corp",
        issuer=issuer.issuer,
        client_id="hoopgw-console",
        client_secret=Secret(reference="env:X", value="s3cret&more"),
    )
    settings = IssuerSettings(issuer=issuer.issuer, audience=("hoopgw-agents",))
    return issuer, provider, OidcSignIn(login, settings, fetcher=provider, clock=clock)


def _begin(sign_in: OidcSignIn) -> tuple[Any, dict[str, str]]:
    url, attempt = _result(sign_in.begin(REDIRECT))
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    return attempt, query


def _token(issuer: Any, attempt: Any, **claims: Any) -> str:
    values = {
        "aud": "hoopgw-console",
        "sub": "alice",
        "azp": "hoopgw-console",
        "nonce": attempt.nonce,
        "groups": ["dba"],
        "now": NOW,
        **claims,
    }
    return str(issuer.token(**values))


def test_the_authorization_request_uses_pkce_s256_state_and_nonce(setup: Any) -> None:
    _, _, sign_in = setup
    attempt, query = _begin(sign_in)
    assert query["response_type"] == "code"
    assert query["client_id"] == "hoopgw-console"
    assert query["redirect_uri"] == REDIRECT
    assert query["state"] == attempt.state and len(attempt.state) >= 32
    assert query["nonce"] == attempt.nonce and attempt.nonce != attempt.state
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(attempt.verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "openid" in query["scope"].split()
    assert attempt.verifier not in str(query)


def test_each_sign_in_gets_fresh_values(setup: Any) -> None:
    _, _, sign_in = setup
    first, _ = _begin(sign_in)
    second, _ = _begin(sign_in)
    assert {first.state, first.nonce, first.verifier}.isdisjoint(
        {second.state, second.nonce, second.verifier}
    )


def test_the_code_is_exchanged_with_the_verifier_and_client_secret(setup: Any) -> None:
    issuer, provider, sign_in = setup
    attempt, _ = _begin(sign_in)
    provider.id_token = _token(issuer, attempt)
    identity = _result(sign_in.finish(attempt, "the-code", REDIRECT))
    assert identity.name == "alice" and identity.groups == {"dba"}
    url, fields, headers = provider.posts[0]
    assert url == f"{issuer.issuer}/token"
    assert fields["code"] == "the-code"
    assert fields["code_verifier"] == attempt.verifier
    assert fields["redirect_uri"] == REDIRECT
    assert fields["grant_type"] == "authorization_code"
    basic = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert basic == "hoopgw-console:s3cret%26more"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nonce": "another"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"azp": "other-client"}, "azp"),
        ({"aud": "hoopgw-agents"}, "audience"),  # a token for the agents, not this client
        ({"exp": NOW - 3600, "iat": NOW - 7200}, "expired"),
        ({"groups": None}, "groups"),
    ],
)
def test_an_unfit_id_token_is_refused(setup: Any, claims: dict[str, Any], reason: str) -> None:
    issuer, provider, sign_in = setup
    attempt, _ = _begin(sign_in)
    provider.id_token = _token(issuer, attempt, **claims)
    with pytest.raises(SignInFailed) as refused:
        _result(sign_in.finish(attempt, "code", REDIRECT))
    assert str(refused.value) == "sign-in failed"
    assert reason in refused.value.reason


def test_a_token_signed_by_another_key_is_refused(setup: Any) -> None:
    issuer, provider, sign_in = setup
    attempt, _ = _begin(sign_in)
    stranger = helper.TestIssuer(issuer.issuer)
    provider.id_token = _token(stranger, attempt)
    with pytest.raises(SignInFailed):
        _result(sign_in.finish(attempt, "code", REDIRECT))


def test_no_id_token_is_refused(setup: Any) -> None:
    _, provider, sign_in = setup
    attempt, _ = _begin(sign_in)
    provider.id_token = None
    with pytest.raises(SignInFailed, match="sign-in failed") as refused:
        _result(sign_in.finish(attempt, "code", REDIRECT))
    assert "id_token" in refused.value.reason


def test_discovery_naming_another_issuer_is_refused(setup: Any) -> None:
    _, provider, sign_in = setup
    real = provider.__call__

    def lying(url: str) -> defer.Deferred[Any]:
        return real(url).addCallback(lambda doc: {**doc, "issuer": "https://evil.test"})

    provider.__call__ = lying  # type: ignore[method-assign]
    sign_in._fetcher = lying  # the discovery fetch only
    with pytest.raises(ValueError, match="another issuer"):
        _result(sign_in.begin(REDIRECT))
