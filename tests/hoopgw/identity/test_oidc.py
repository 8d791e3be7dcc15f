"""Tests for hoopgw.identity.oidc: token checks, key caching and rotation, with a fake fetch and a
Clock."""

from __future__ import annotations

import json
import sys
from typing import Any

import jwt
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from hoopgw.identity.oidc import (
    IssuerKeys,
    IssuerSettings,
    TokenRejected,
    TokenVerifier,
    looks_like_jwt,
    token_prefix_of,
)

helper: Any = sys.modules["hoopgw_tests_oidcissuer"]  # registered by tests/conftest.py
NOW = 1_800_000_000


class FakeFetch:
    """Answers discovery and JWKS from a TestIssuer; counts requests."""

    def __init__(self, issuer: Any) -> None:
        self.issuer = issuer
        self.urls: list[str] = []
        self.fail = False
        self.hold: defer.Deferred[Any] | None = None

    def __call__(self, url: str) -> defer.Deferred[Any]:
        self.urls.append(url)
        if self.fail:
            return defer.fail(ConnectionRefusedError("issuer down"))
        if url == f"{self.issuer.issuer}/.well-known/openid-configuration":
            return defer.succeed(self.issuer.discovery())
        if url == f"{self.issuer.issuer}/jwks":
            if self.hold is not None:
                return self.hold.addCallback(lambda _: self.issuer.jwks())
            return defer.succeed(self.issuer.jwks())
        return defer.fail(ValueError(f"404 {url}"))

    @property
    def jwks_fetches(self) -> int:
        return sum(url.endswith("/jwks") for url in self.urls)


@pytest.fixture
def issuer() -> Any:
    return helper.TestIssuer()


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def fetch(issuer: Any) -> FakeFetch:
    return FakeFetch(issuer)


def _settings(issuer: Any, **overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {"issuer": issuer.issuer, "audience": (helper.AUDIENCE,)}
    values.update(overrides)
    return IssuerSettings(**values)


def _verifier(issuer: Any, fetch: FakeFetch, clock: Clock, **overrides: Any) -> TokenVerifier:
    keys = IssuerKeys(_settings(issuer, **overrides), fetch_json=fetch, clock=clock)
    return TokenVerifier([keys], clock=clock)


def _result(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the check did not answer"
    return results[0]


def _rejected(d: defer.Deferred[Any]) -> TokenRejected:
    result = _result(d)
    assert not isinstance(result, Exception) and hasattr(result, "check"), result
    assert result.check(TokenRejected), result
    return result.value


# -- accepted --------------------------------------------------------------------------------


def test_a_valid_token_gives_identity_and_groups(issuer, fetch, clock):
    identity = _result(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW)))
    assert identity.name == "svc-reporting"
    assert identity.groups == frozenset({"agents"})
    assert identity.method == "oidc"
    assert fetch.urls == [
        f"{issuer.issuer}/.well-known/openid-configuration",
        f"{issuer.issuer}/jwks",
    ]


def test_keys_are_cached(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock)
    for _ in range(3):
        _result(verifier.verify(issuer.token(now=NOW)))
    assert fetch.jwks_fetches == 1


def test_a_rotated_key_is_fetched_and_accepted(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, refetch_interval=60.0)
    _result(verifier.verify(issuer.token(now=NOW)))
    clock.advance(61)
    issuer.rotate()
    identity = _result(verifier.verify(issuer.token(now=NOW + 61)))
    assert identity.name == "svc-reporting"
    assert fetch.jwks_fetches == 2


def test_the_cache_expires_after_jwks_max_age(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, jwks_max_age=100.0)
    _result(verifier.verify(issuer.token(now=NOW)))
    clock.advance(101)
    _result(verifier.verify(issuer.token(now=NOW + 101)))
    assert fetch.jwks_fetches == 2


def test_identity_claim_and_nested_groups_claim(issuer, fetch, clock):
    verifier = _verifier(
        issuer, fetch, clock, identity_claim="azp", groups_claim="realm_access.roles"
    )
    token = issuer.token(now=NOW, groups=None, realm_access={"roles": ["dba", "agents"]})
    identity = _result(verifier.verify(token))
    assert identity.name == "reporting-client"
    assert identity.groups == frozenset({"dba", "agents"})


def test_a_local_jwks_file_needs_no_fetch(issuer, fetch, clock, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    verifier = _verifier(issuer, fetch, clock, jwks_file=str(path))
    assert _result(verifier.verify(issuer.token(now=NOW))).name == "svc-reporting"
    assert fetch.urls == []


def test_concurrent_checks_share_one_fetch(issuer, fetch, clock):
    fetch.hold = defer.Deferred()
    verifier = _verifier(issuer, fetch, clock)
    first = verifier.verify(issuer.token(now=NOW))
    second = verifier.verify(issuer.token(now=NOW))
    assert not first.called and not second.called
    fetch.hold.callback(None)
    assert _result(first).name == _result(second).name == "svc-reporting"
    assert fetch.jwks_fetches == 1


def test_the_identity_expires_when_a_login_with_the_token_would_be_refused(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, leeway=30.0)
    identity = _result(verifier.verify(issuer.token(now=NOW, exp=NOW + 60)))
    assert identity.expires_at == NOW + 60 + 30
    clock.advance(90)
    assert str(_rejected(verifier.verify(issuer.token(now=NOW, exp=NOW + 60)))) == (
        "the token has expired"
    )


def test_a_small_skew_is_tolerated(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, leeway=30.0)
    assert _result(verifier.verify(issuer.token(now=NOW + 20))).name == "svc-reporting"
    assert _result(verifier.verify(issuer.token(now=NOW, exp=NOW - 20))).name == "svc-reporting"


# -- rejected --------------------------------------------------------------------------------


def test_expired(issuer, fetch, clock):
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW - 1000)))
    assert str(error) == "the token has expired"
    assert "exp" in error.reason


def test_not_yet_valid(issuer, fetch, clock):
    token = issuer.token(now=NOW, nbf=NOW + 600, exp=NOW + 900)
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert str(error) == "the token is not valid yet"
    assert "nbf" in error.reason


def test_issued_in_the_future(issuer, fetch, clock):
    token = issuer.token(now=NOW + 600, nbf=None)
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "iat" in error.reason


def test_wrong_audience(issuer, fetch, clock):
    token = issuer.token(now=NOW, aud="another-service")
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "audience" in str(error)


def test_wrong_issuer(issuer, fetch, clock):
    token = issuer.token(now=NOW, iss="https://evil.test")
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert str(error) == "invalid token"
    assert "untrusted issuer" in error.reason
    assert fetch.urls == []


@pytest.mark.parametrize("iss", [None, ["https://issuer.test"], {"a": 1}, 7])
def test_an_iss_that_is_not_a_string(issuer, fetch, clock, iss):
    # PyJWT will not encode such claims; sign the raw payload.
    payload = json.dumps(issuer.claims(now=NOW, iss=iss)).encode()
    key = issuer.current
    token = jwt.PyJWS().encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "untrusted issuer" in error.reason


def test_alg_none(issuer, fetch, clock):
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.unsigned_token(now=NOW)))
    assert str(error) == "invalid token"
    assert "'none' is not allowed" in error.reason


def test_hs256_signed_with_the_public_key(issuer, fetch, clock):
    token = issuer.hs256_with_public_key(now=NOW)
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "'HS256' is not allowed" in error.reason


def test_hs256_is_refused_even_if_configured(issuer, fetch, clock):
    # The allow-list is enforced by the config loader; the verifier refuses an oct key too.
    verifier = _verifier(issuer, fetch, clock, algorithms=("HS256",))
    error = _rejected(verifier.verify(issuer.hs256_with_public_key(now=NOW)))
    assert "'HS256' is not allowed" in error.reason


def test_jku_header(issuer, fetch, clock):
    token = issuer.token(now=NOW, headers={"jku": "https://evil.test/jwks"})
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "jku" in error.reason
    assert not any("evil" in url for url in fetch.urls)


def test_embedded_jwk_header(issuer, fetch, clock):
    attacker = helper.SigningKey("attacker")
    token = issuer.token(now=NOW, key=attacker, headers={"jwk": attacker.jwk()})
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "jwk" in error.reason


def test_embedded_jwk_header_with_the_genuine_key(issuer, fetch, clock):
    token = issuer.token(now=NOW, headers={"jwk": issuer.current.jwk()})
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert "jwk" in error.reason


@pytest.mark.parametrize("header", ["x5u", "x5c"])
def test_certificate_headers(issuer, fetch, clock, header):
    token = issuer.token(now=NOW, headers={header: "https://evil.test/cert"})
    assert header in _rejected(_verifier(issuer, fetch, clock).verify(token)).reason


def test_unknown_kid(issuer, fetch, clock):
    attacker = helper.SigningKey("made-up")
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, key=attacker)))
    assert str(error) == "invalid token"
    assert "unknown key id 'made-up'" in error.reason


def test_unknown_kids_refetch_at_most_once_per_interval(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, refetch_interval=60.0)
    _result(verifier.verify(issuer.token(now=NOW)))
    clock.advance(61)
    for n in range(20):
        _rejected(verifier.verify(issuer.token(now=NOW, key=helper.SigningKey(f"guess-{n}"))))
    assert fetch.jwks_fetches == 2


def test_tampered_payload(issuer, fetch, clock):
    header, _, signature = issuer.token(now=NOW).split(".")
    forged = helper.b64json(issuer.claims(now=NOW, groups=["admins"]))
    error = _rejected(_verifier(issuer, fetch, clock).verify(f"{header}.{forged}.{signature}"))
    assert str(error) == "invalid token"
    assert error.reason == "bad signature"


def test_missing_group_claim(issuer, fetch, clock):
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, groups=None)))
    assert "groups" in str(error)


def test_no_groups_claim_configured_gives_no_groups(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, groups_claim="")
    assert _result(verifier.verify(issuer.token(now=NOW, groups=None))).groups == frozenset()


@pytest.mark.parametrize("claim", ["exp", "iat", "aud", "sub"])
def test_missing_required_claim(issuer, fetch, clock, claim):
    error = _rejected(
        _verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, **{claim: None}))
    )
    assert claim in str(error)


def test_configured_required_claim(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, required_claims=("jti",))
    assert "jti" in str(_rejected(verifier.verify(issuer.token(now=NOW))))
    assert _result(verifier.verify(issuer.token(now=NOW, jti="abc"))).credential_id.endswith("#abc")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_time_claim_that_is_not_finite(issuer, fetch, clock, claim, value):
    # Python's JSON reader accepts NaN and Infinity; an exp of NaN compares as never expired.
    token = issuer.token(now=NOW, **{claim: value})
    assert "finite" in _rejected(_verifier(issuer, fetch, clock).verify(token)).reason


@pytest.mark.parametrize(
    "name", ["svc reporting", " svc", "svc\t", "svc,admin", "svc\nadmin", "svc\u2028", ""]
)
def test_an_identity_name_api_keys_could_not_have(issuer, fetch, clock, name):
    # The same rule as for API key identities: names go into audit records, logs and the
    # user-name match, where whitespace, commas and control characters are ambiguous.
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, sub=name)))
    assert "usable name" in str(error)


@pytest.mark.parametrize("group", ["ops\nadmins", "ops\x1b[2J", "ops\u2028"])
def test_a_group_name_with_control_characters(issuer, fetch, clock, group):
    token = issuer.token(now=NOW, groups=["agents", group])
    assert "groups" in str(_rejected(_verifier(issuer, fetch, clock).verify(token)))


def test_an_unverified_email_does_not_name_an_identity(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, identity_claim="email")
    for verified in (None, False, "true"):
        token = issuer.token(now=NOW, email="ann@example.com", email_verified=verified)
        assert "not verified" in str(_rejected(verifier.verify(token)))
    token = issuer.token(now=NOW, email="ann@example.com", email_verified=True)
    assert _result(verifier.verify(token)).name == "ann@example.com"


@pytest.mark.parametrize("jti", ["a\nb", "x" * 257])
def test_an_unusable_jti_is_left_out_of_the_credential_id(issuer, fetch, clock, jti):
    identity = _result(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, jti=jti)))
    assert identity.credential_id == f"{issuer.issuer}#key-1"


def test_issuers_sharing_a_kid_never_lend_each_other_keys(issuer, clock):
    # Both issuers name their key "key-1": a token is checked only with the keys of the
    # issuer its iss names, so another issuer's key never verifies it.
    other = helper.TestIssuer("https://other.test")
    verifier = TokenVerifier(
        [IssuerKeys(_settings(i), fetch_json=FakeFetch(i), clock=clock) for i in (issuer, other)],
        clock=clock,
    )
    forged = other.token(now=NOW, iss=issuer.issuer)
    assert _rejected(verifier.verify(forged)).reason == "bad signature"
    assert _result(verifier.verify(other.token(now=NOW))).credential_id.startswith(other.issuer)


def test_the_identity_prefix_goes_before_the_claim(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, identity_prefix="corp:")
    assert _result(verifier.verify(issuer.token(now=NOW))).name == "corp:svc-reporting"


def test_the_same_sub_from_two_issuers_names_two_identities(issuer, clock):
    # Grants, directory groups and approvals key on the name: a second issuer's token with
    # the same sub must not become the first issuer's identity.
    other = helper.TestIssuer("https://other.test")
    verifier = TokenVerifier(
        [
            IssuerKeys(_settings(i, identity_prefix=p), fetch_json=FakeFetch(i), clock=clock)
            for i, p in ((issuer, "corp:"), (other, "ci:"))
        ],
        clock=clock,
    )
    names = {_result(verifier.verify(i.token(now=NOW))).name for i in (issuer, other)}
    assert names == {"corp:svc-reporting", "ci:svc-reporting"}


def test_token_prefix_of(issuer):
    issuers = [_settings(issuer, identity_prefix="corp:"), _settings(issuer)]
    assert token_prefix_of("corp:alice", issuers) == "corp:"
    assert token_prefix_of("alice", issuers) is None
    assert token_prefix_of("corp", issuers) is None
    assert token_prefix_of("alice", [_settings(issuer)]) is None


def test_algorithm_outside_the_issuers_list(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, algorithms=("ES256",))
    assert "'RS256' is not allowed" in _rejected(verifier.verify(issuer.token(now=NOW))).reason


def test_a_key_of_the_wrong_type_is_not_used(issuer, fetch, clock):
    # An RSA kid reused by an EC-signed token: the key type must fit the algorithm.
    ec_key = helper.SigningKey("key-1", algorithm="ES256")
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW, key=ec_key)))
    assert "does not fit" in error.reason


def test_crit_header(issuer, fetch, clock):
    token = issuer.token(now=NOW, headers={"crit": ["exp"]})
    assert "crit" in _rejected(_verifier(issuer, fetch, clock).verify(token)).reason


def test_issuer_down_fails_closed(issuer, fetch, clock):
    fetch.fail = True
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW)))
    assert "try again later" in str(error)


def test_an_issuer_that_is_down_is_asked_at_most_once_per_interval(issuer, fetch, clock):
    fetch.fail = True
    verifier = _verifier(issuer, fetch, clock, refetch_interval=60.0)
    for _ in range(10):
        _rejected(verifier.verify(issuer.token(now=NOW)))
    assert len(fetch.urls) == 1
    clock.advance(60)
    fetch.fail = False
    assert _result(verifier.verify(issuer.token(now=NOW + 60))).name == "svc-reporting"


def test_issuer_down_keeps_the_cached_keys(issuer, fetch, clock):
    verifier = _verifier(issuer, fetch, clock, jwks_max_age=100.0)
    _result(verifier.verify(issuer.token(now=NOW)))
    fetch.fail = True
    clock.advance(101)
    assert _result(verifier.verify(issuer.token(now=NOW + 101))).name == "svc-reporting"


def test_discovery_naming_another_issuer_is_refused(issuer, fetch, clock):
    original = issuer.discovery
    issuer.discovery = lambda: {**original(), "issuer": "https://evil.test"}
    error = _rejected(_verifier(issuer, fetch, clock).verify(issuer.token(now=NOW)))
    assert "try again later" in str(error)
    assert fetch.jwks_fetches == 0


def test_an_oct_key_in_the_jwks_is_ignored(issuer, fetch, clock, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "key-1", "k": "c2VjcmV0"}]}))
    verifier = _verifier(issuer, fetch, clock, jwks_file=str(path))
    error = _rejected(verifier.verify(issuer.token(now=NOW)))
    assert "unknown key id 'key-1'" in error.reason


def test_rejection_messages_never_contain_the_token(issuer, fetch, clock):
    token = issuer.token(now=NOW - 1000)
    error = _rejected(_verifier(issuer, fetch, clock).verify(token))
    assert token not in str(error) and token not in error.reason


@pytest.mark.parametrize(
    ("claims", "headers"),
    [
        ({"iss": "https://" + "x" * 10_000}, {}),
        ({}, {"kid": "k" * 10_000}),
        ({}, {"alg": "A" * 10_000}),
    ],
)
def test_unverified_values_in_a_reason_are_cut_short(issuer, fetch, clock, claims, headers):
    # Anyone can send these; the reason goes into the audit record and the log.
    token = issuer.token(now=NOW, **claims)
    if headers:
        _, payload, signature = token.split(".")
        fields = {**jwt.get_unverified_header(token), **headers}
        token = ".".join([helper.b64json(fields), payload, signature])
    reason = _rejected(_verifier(issuer, fetch, clock).verify(token)).reason
    assert len(reason) < 200


def test_deeply_nested_json_is_an_invalid_token_not_a_crash(issuer, fetch, clock):
    # json.loads raises RecursionError: it must be a rejection (audited, counted), not an
    # exception out of the check.
    nested = helper.b64url(b"[" * 5000)
    header = helper.b64json({"alg": "RS256", "kid": "key-1"})
    assert looks_like_jwt(f"{nested}.e30.c2ln") is False
    error = _rejected(_verifier(issuer, fetch, clock).verify(f"{header}.{nested}.c2ln"))
    assert error.reason == "header or payload is not base64url JSON"


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("hgw_0123456789ab_" + "A" * 43, False),
        ("a.b.c", False),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", True),
        ("x" * 20000, False),
    ],
)
def test_looks_like_jwt(secret, expected):
    assert looks_like_jwt(secret) is expected
