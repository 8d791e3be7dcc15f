"""The ``ldap`` group source against a real OpenLDAP slapd (started by the tests on a loopback
port with its own directory), and through the real gateway with psql and an OIDC token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from hoopgw.groups import GroupSourceContext, GroupSourceError
from hoopgw.plugin import validate_options
from hoopgw.secrets import Secret
from hoopgw.session import Identity

pytestmark = pytest.mark.integration


# Registered by tests/conftest.py.
ldapserver: Any = sys.modules["hoopgw_tests_ldapserver"]
oidcissuer: Any = sys.modules["hoopgw_tests_oidcissuer"]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Any]:
    if not ldapserver.available():
        if os.environ.get("CI") == "true":
            pytest.fail("slapd/ldapadd are not installed (./dev setup installs them)")
        pytest.skip("slapd/ldapadd are not installed")
    server = ldapserver.start_ldap_server(tmp_path / "slapd")
    yield server
    server.stop()


def _options(server: Any, **overrides: Any) -> dict[str, Any]:
    from hoopgw_ldap import LdapGroupSource

    raw = {
        "url": server.url,
        "bind_dn": ldapserver.READER_DN,
        "bind_password": "env:UNUSED",
        "user_base": ldapserver.PEOPLE,
        "group_base": ldapserver.GROUPS,
        "timeout": 2.0,
        **overrides,
    }
    options = validate_options("identity.ldap", LdapGroupSource.options, raw, connection="")
    options["bind_password"] = Secret(reference="env:UNUSED", value=ldapserver.READER_PASSWORD)
    return options


def _source(server: Any, clock: Clock | None = None, **overrides: Any) -> Any:
    from hoopgw_ldap import LdapGroupSource

    clock = clock or Clock()
    context = GroupSourceContext(
        name="ldap", options=_options(server, **overrides), reactor=clock, base_dir=Path(".")
    )
    # The lookup runs inline here (against the real slapd); the gateway runs it in a thread.
    return LdapGroupSource(context, run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a))


def _groups(source: Any, name: str) -> Any:
    results: list[Any] = []
    source.groups_of(Identity(name=name, method="oidc")).addBoth(results.append)
    assert results
    return results[0]


def test_groups_are_found(directory: Any) -> None:
    source = _source(directory)
    assert _groups(source, "alice") == frozenset({"dba"})
    assert _groups(source, "bob") == frozenset({"agents"})
    assert _groups(source, "carol") == frozenset()
    assert _groups(source, "nobody") == frozenset()


def test_nested_groups(directory: Any) -> None:
    assert _groups(_source(directory, nested=True), "alice") == frozenset({"dba", "ops"})


@pytest.mark.parametrize("name", ["*)(uid=*", "*", "alice)(|(uid=*", "\\2a", "alice*"])
def test_filter_syntax_in_the_name_finds_nothing(directory: Any, name: str) -> None:
    assert _groups(_source(directory, nested=True), name) == frozenset()


def test_a_wrong_service_password_fails_closed(directory: Any) -> None:
    source = _source(directory)
    source._options["bind_password"] = Secret(reference="env:X", value="wrong")
    failure = _groups(source, "alice")
    assert failure.check(GroupSourceError)
    assert "wrong" not in str(failure.value) and "wrong" not in failure.value.reason


def test_the_directory_down_fails_closed(directory: Any) -> None:
    clock = Clock()
    source = _source(directory, clock, cache_ttl=60.0)
    assert _groups(source, "alice") == frozenset({"dba"})
    directory.stop()
    # Cached answers still count until the TTL passes...
    assert _groups(source, "alice") == frozenset({"dba"})
    clock.advance(61)
    # ...then the login fails rather than going on with no groups.
    failure = _groups(source, "alice")
    assert failure.check(GroupSourceError)
    assert "cannot be reached" in str(failure.value)
    assert _groups(source, "bob").check(GroupSourceError)


def test_the_directory_down_serves_the_stale_cache_when_allowed(directory: Any) -> None:
    clock = Clock()
    source = _source(directory, clock, cache_ttl=60.0, serve_stale_cache=True)
    assert _groups(source, "alice") == frozenset({"dba"})
    directory.stop()
    clock.advance(61)
    assert _groups(source, "alice") == frozenset({"dba"})
    # Nothing cached: still refused.
    assert _groups(source, "bob").check(GroupSourceError)
    directory.start()
    assert _groups(source, "bob") == frozenset({"agents"})


def test_psql_with_a_token_gets_its_groups_from_the_directory(
    gateway: Any,
    directory: Any,
    oidc_issuer: Any,
    tls_files: Any,
    pg_database: str,
    tmp_path: Path,
) -> None:
    password_file = tmp_path / "reader-password"
    password_file.write_text(ldapserver.READER_PASSWORD + "\n")
    running = gateway(
        allow_groups=["ops"],
        identity={
            "group_sources": ["ldap"],
            "ldap": {
                "url": directory.url,
                "bind_dn": ldapserver.READER_DN,
                "bind_password": f"file:{password_file}",
                "user_base": ldapserver.PEOPLE,
                "group_base": ldapserver.GROUPS,
                "nested": True,
            },
            "oidc": [
                {
                    "issuer": oidc_issuer.issuer,
                    "audience": oidcissuer.AUDIENCE,
                    "ca_file": str(tls_files.ca_cert),
                    "groups_claim": "",
                }
            ],
        },
    )

    def psql(user: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PGHOST": running.host,
            "PGPORT": str(running.port),
            "PGUSER": user,
            "PGPASSWORD": oidc_issuer.token(sub=user, groups=None),
            "PGDATABASE": pg_database,
            "PGSSLMODE": "disable",
        }
        return subprocess.run(
            ["psql", "-X", "-A", "-t", "-c", "SELECT 'in'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    alice = psql("alice")
    assert alice.returncode == 0, alice.stderr
    assert alice.stdout.strip() == "in"
    bob = psql("bob")  # in agents, not ops
    assert bob.returncode != 0
    assert "allow_groups" in bob.stderr
    directory.stop()
    carol = psql("carol")  # not cached: the directory is down, so refused
    assert carol.returncode != 0
    assert "the directory cannot be reached" in carol.stderr
