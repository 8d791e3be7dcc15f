"""Tests for the [identity] table of hoopgw.config.identity: issuers, group sources, back-off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError, SecretError
from hoopgw.identity.oidc import ALLOWED_ALGORITHMS
from hoopgw.runtime import logs
from hoopgw.secrets import Secret

ISSUER = """
[[identity.oidc]]
issuer = "https://login.example.com"
audience = "hoopgw"
"""


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", ())


def parse(text: str, base_dir: Path = Path("/etc/hoopgw")):
    return parse_config(text, base_dir=base_dir)


def error(text: str, base_dir: Path = Path("/etc/hoopgw")) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(text, base_dir)
    return str(raised.value)


def test_no_identity_table_means_api_keys_only():
    identity = parse("").identity
    assert identity.oidc == ()
    assert identity.group_sources == ()
    assert identity.backoff.free_failures == 3
    assert identity.key_check_interval == 10.0


def test_an_issuer_with_defaults():
    [issuer] = parse(ISSUER).identity.oidc
    assert issuer.issuer == "https://login.example.com"
    assert issuer.audience == ("hoopgw",)
    assert issuer.algorithms == ALLOWED_ALGORITHMS
    assert issuer.identity_claim == "sub"
    assert issuer.groups_claim == "groups"
    assert issuer.leeway == 30.0
    assert issuer.jwks_file is None


def test_an_issuer_with_every_key(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    [issuer] = parse(
        """
[[identity.oidc]]
issuer = "https://login.example.com"
audience = ["a", "b"]
algorithms = ["ES256", "EdDSA"]
identity_claim = "client_id"
groups_claim = "realm_access.roles"
required_claims = ["jti"]
leeway = 5
ca_file = "ca.pem"
jwks_max_age = 600
refetch_interval = 30
fetch_timeout = 3
""",
        tmp_path,
    ).identity.oidc
    assert issuer.audience == ("a", "b")
    assert issuer.algorithms == ("ES256", "EdDSA")
    assert issuer.identity_claim == "client_id"
    assert issuer.required_claims == ("jti",)
    assert issuer.ca_file == str(tmp_path / "ca.pem")
    assert (issuer.jwks_max_age, issuer.refetch_interval, issuer.fetch_timeout) == (600, 30, 3)


@pytest.mark.parametrize("algorithm", ["none", "HS256", "HS512", "RS1"])
def test_symmetric_and_unknown_algorithms_are_refused(algorithm):
    message = error(ISSUER + f'algorithms = ["{algorithm}"]\n')
    assert "identity.oidc[0].algorithms" in message
    assert f"'{algorithm}' is not allowed: only asymmetric algorithms" in message


def test_an_issuer_needs_https_unless_it_has_a_jwks_file():
    message = error('[[identity.oidc]]\nissuer = "http://login.example.com"\naudience = "x"\n')
    assert "identity.oidc[0].issuer" in message and "https://" in message


def test_a_jwks_file_is_checked(tmp_path):
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "eA"}]}))
    text = '[[identity.oidc]]\nissuer = "urn:ci"\naudience = "x"\njwks_file = "jwks.json"\n'
    assert "holds no RSA, EC or OKP public key" in error(text, tmp_path)
    (tmp_path / "jwks.json").write_text("not json")
    assert "identity.oidc[0].jwks_file" in error(text, tmp_path)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "EC", "kid": "k"}]}))
    [issuer] = parse(text, tmp_path).identity.oidc
    assert issuer.jwks_file == str(tmp_path / "jwks.json")


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('identity_claim = "name"', "identity_claim", "must be one of"),
        ("leeway = 3600", "leeway", "from 0 to 300"),
        ("audience_typo = 1", "audience_typo", "unknown key"),
        ("refetch_interval = 0", "refetch_interval", "greater than 0"),
    ],
)
def test_issuer_errors_name_the_key(extra, key, problem):
    message = error(ISSUER + extra + "\n")
    assert f"identity.oidc[0].{key}" in message
    assert problem in message


def test_missing_audience():
    assert "identity.oidc[0].audience" in error(
        '[[identity.oidc]]\nissuer = "https://login.example.com"\n'
    )


def test_the_same_issuer_twice():
    assert "the same issuer is trusted twice" in error(ISSUER + ISSUER)


OTHER = """
[[identity.oidc]]
issuer = "https://ci.example.com"
audience = "hoopgw"
"""


def test_one_issuer_may_set_an_identity_prefix():
    assert parse(ISSUER).identity.oidc[0].identity_prefix == ""
    [issuer] = parse(ISSUER + 'identity_prefix = "corp:"\n').identity.oidc
    assert issuer.identity_prefix == "corp:"


def test_several_issuers_with_distinct_prefixes():
    text = ISSUER + 'identity_prefix = "corp:"\n' + OTHER + 'identity_prefix = "ci:"\n'
    assert [i.identity_prefix for i in parse(text).identity.oidc] == ["corp:", "ci:"]


@pytest.mark.parametrize(
    ("first", "second", "key", "problem"),
    [
        ("", "", "oidc[0].identity_prefix", "must be set when more than one issuer is trusted"),
        ('"corp:"', "", "oidc[1].identity_prefix", "must be set when more than one issuer"),
        ('"corp:"', '"corp:"', "oidc[0].identity_prefix", "must be distinct from"),
        ('"corp:"', '"corp:x"', "oidc[1].identity_prefix", "not start with, that of"),
    ],
)
def test_several_issuers_need_distinct_prefixes(first, second, key, problem):
    text = ISSUER + (f"identity_prefix = {first}\n" if first else "")
    text += OTHER + (f"identity_prefix = {second}\n" if second else "")
    message = error(text)
    assert f"identity.{key}" in message
    assert problem in message


@pytest.mark.parametrize("prefix", ["corp :", "a,b", "tab\\t", "nl\\n"])
def test_an_identity_prefix_follows_the_identity_name_rule(prefix):
    message = error(ISSUER + f'identity_prefix = "{prefix}"\n')
    assert "identity.oidc[0].identity_prefix" in message
    assert "without whitespace or commas" in message


def test_unknown_identity_key():
    assert "identity.backof" in error("[identity]\nbackof = 1\n")


def test_backoff_settings():
    backoff = parse(
        "[identity.backoff]\nfree_failures = 0\nbase_delay = 0.5\nmax_delay = 10\nmax_pending = 2\n"
    ).identity.backoff
    assert (backoff.free_failures, backoff.base_delay, backoff.max_delay) == (0, 0.5, 10.0)
    assert backoff.max_pending == 2
    assert "max_delay" in error("[identity.backoff]\nbase_delay = 5\nmax_delay = 1\n")
    assert "max_pending" in error("[identity.backoff]\nmax_pending = 0\n")


def test_a_group_source_must_be_installed():
    message = error('[identity]\ngroup_sources = ["nis"]\n')
    assert "identity.group_sources" in message and "not installed" in message


def test_a_group_source_table_needs_enabling():
    assert "not enabled" in error('[identity.ldap]\nurl = "ldap://x"\n')


def test_ldap_options_are_validated_and_the_password_resolved(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    config = parse(
        """
[identity]
group_sources = ["ldap"]
[identity.ldap]
url = "ldap://127.0.0.1:389"
bind_dn = "cn=reader,dc=example,dc=org"
bind_password = "file:pw"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
""",
        tmp_path,
    )
    options = config.identity.group_source_options["ldap"]
    assert isinstance(options["bind_password"], Secret)
    assert options["bind_password"].reveal() == "s3cret"
    assert options["nested"] is False


def test_ldap_errors_name_the_key(tmp_path):
    base = '[identity]\ngroup_sources = ["ldap"]\n[identity.ldap]\n'
    required = 'url = "ldap://x"\nbind_dn = "cn=a"\nuser_base = "o=x"\ngroup_base = "o=x"\n'
    assert "identity.ldap.bind_password" in error(base + required, tmp_path)
    with pytest.raises(SecretError) as raised:
        parse(base + required + 'bind_password = "literal-password"\n', tmp_path)
    assert "literal-password" not in str(raised.value)
    bad_filter = required + 'bind_password = "env:HOME"\nuser_filter = "(uid=alice)"\n'
    assert "identity.ldap.user_filter" in error(base + bad_filter, tmp_path)
    bad_url = required.replace("ldap://x", "http://x") + 'bind_password = "env:HOME"\n'
    assert "identity.ldap.url" in error(base + bad_url, tmp_path)


def test_ldap_in_clear_to_another_host_is_refused(tmp_path):
    base = '[identity]\ngroup_sources = ["ldap"]\n[identity.ldap]\n'
    rest = 'bind_dn = "cn=a"\nuser_base = "o=x"\ngroup_base = "o=x"\nbind_password = "env:HOME"\n'
    message = error(base + 'url = "ldap://ldap.example.org"\n' + rest, tmp_path)
    assert "identity.ldap.start_tls" in message and "in clear" in message
    for safe in (
        'url = "ldap://ldap.example.org"\nstart_tls = true\n',
        'url = "ldaps://ldap.example.org"\n',
        'url = "ldap://127.0.0.1:389"\n',
        'url = "ldap://[::1]:389"\n',
    ):
        parse(base + safe + rest, tmp_path)
