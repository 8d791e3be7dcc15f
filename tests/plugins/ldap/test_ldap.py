"""Unit tests for the ldap group source: escaping, nesting, caching, failing closed.

ldap3 is replaced by a fake connection (no I/O) and the lookup runs inline on a Clock; the real
slapd is exercised in tests/integration/test_ldap.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hoopgw_ldap
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from hoopgw.groups import GroupSourceContext, GroupSourceError
from hoopgw.plugin import validate_options
from hoopgw.secrets import Secret
from hoopgw.session import Identity

USERS = {"(uid=alice)": ["uid=alice,ou=people"], "(uid=twin)": ["uid=t1", "uid=t2"]}
GROUPS = {
    "uid=alice,ou=people": [("cn=dba,ou=groups", "dba")],
    "cn=dba,ou=groups": [("cn=ops,ou=groups", "ops")],
    "cn=ops,ou=groups": [("cn=dba,ou=groups", "dba")],  # a cycle
}


class Entry:
    def __init__(self, dn: str, name: str = "") -> None:
        self.entry_dn = dn
        self._name = name

    def __getitem__(self, attribute: str) -> Any:
        return type("Attribute", (), {"values": [self._name]})()


class FakeConnection:
    """Answers searches from USERS/GROUPS; records every filter it was given."""

    filters: list[str] = []
    down = False
    binds: list[tuple[str, str]] = []

    def __init__(self, server: Any, *, user: str, password: str, **kwargs: Any) -> None:
        self.user, self.password = user, password
        self.entries: list[Entry] = []

    def bind(self) -> None:
        if FakeConnection.down:
            raise hoopgw_ldap.LDAPException("socket connection error")
        FakeConnection.binds.append((self.user, self.password))

    def search(self, base: str, search_filter: str, **kwargs: Any) -> None:
        FakeConnection.filters.append(search_filter)
        if search_filter in USERS:
            self.entries = [Entry(dn) for dn in USERS[search_filter]]
            return
        if not search_filter.startswith("(member="):
            self.entries = []
            return
        member = search_filter.removeprefix("(member=").removesuffix(")")
        self.entries = [Entry(dn, name) for dn, name in GROUPS.get(member, [])]

    def unbind(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fake_ldap(monkeypatch):
    monkeypatch.setattr(hoopgw_ldap.ldap3, "Connection", FakeConnection)
    FakeConnection.filters = []
    FakeConnection.binds = []
    FakeConnection.down = False


def _source(clock: Clock | None = None, **overrides: Any) -> Any:
    raw = {
        "url": "ldap://127.0.0.1:389",
        "bind_dn": "cn=reader",
        "bind_password": "env:X",
        "user_base": "ou=people",
        "group_base": "ou=groups",
        "group_filter": "(member={dn})",
        **overrides,
    }
    options = validate_options(
        "identity.ldap", hoopgw_ldap.LdapGroupSource.options, raw, connection=""
    )
    options["bind_password"] = Secret(reference="env:X", value="reader-pw")
    context = GroupSourceContext(
        name="ldap", options=options, reactor=clock or Clock(), base_dir=Path(".")
    )
    return hoopgw_ldap.LdapGroupSource(
        context, run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a)
    )


def _groups(source: Any, name: str) -> Any:
    results: list[Any] = []
    source.groups_of(Identity(name=name, method="oidc")).addBoth(results.append)
    return results[0]


def test_binds_as_the_service_account_and_finds_direct_groups():
    assert _groups(_source(), "alice") == frozenset({"dba"})
    assert FakeConnection.binds == [("cn=reader", "reader-pw")]


def test_nested_groups_are_followed_and_cycles_end():
    assert _groups(_source(nested=True), "alice") == frozenset({"dba", "ops"})


def test_an_unknown_user_has_no_groups():
    assert _groups(_source(), "nobody") == frozenset()


def test_an_ambiguous_user_fails_closed():
    failure = _groups(_source(), "twin")
    assert failure.check(GroupSourceError)
    assert "more than one" in failure.value.reason


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("*)(uid=*", "(uid=\\2a\\29\\28uid=\\2a)"),
        ("a\\b", "(uid=a\\5cb)"),
        ("nul\x00", "(uid=nul\\00)"),
    ],
)
def test_every_filter_value_is_escaped(name, escaped):
    assert _groups(_source(), name) == frozenset()
    assert FakeConnection.filters == [escaped]


def test_member_dns_are_escaped_in_the_group_filter():
    USERS["(uid=paren)"] = ["uid=a(b)*,ou=people"]
    try:
        _groups(_source(), "paren")
    finally:
        del USERS["(uid=paren)"]
    assert FakeConnection.filters[-1] == "(member=uid=a\\28b\\29\\2a,ou=people)"


def test_answers_are_cached_for_the_ttl():
    clock = Clock()
    source = _source(clock, cache_ttl=60.0)
    _groups(source, "alice")
    _groups(source, "alice")
    assert len(FakeConnection.binds) == 1
    clock.advance(60)
    _groups(source, "alice")
    assert len(FakeConnection.binds) == 2


def test_directory_down_fails_closed():
    FakeConnection.down = True
    failure = _groups(_source(), "alice")
    assert failure.check(GroupSourceError)
    assert str(failure.value) == "the directory cannot be reached; try again later"


def test_directory_down_after_the_ttl_fails_closed_by_default():
    clock = Clock()
    source = _source(clock, cache_ttl=60.0)
    _groups(source, "alice")
    FakeConnection.down = True
    clock.advance(61)
    assert _groups(source, "alice").check(GroupSourceError)


def test_directory_down_serves_the_stale_cache_when_allowed():
    clock = Clock()
    source = _source(clock, cache_ttl=60.0, serve_stale_cache=True)
    _groups(source, "alice")
    FakeConnection.down = True
    clock.advance(61)
    assert _groups(source, "alice") == frozenset({"dba"})


def test_a_stale_answer_is_served_only_up_to_the_stale_limit():
    # Someone removed from a group must not keep it by keeping the directory unreachable.
    clock = Clock()
    source = _source(clock, cache_ttl=60.0, serve_stale_cache=True, stale_limit=600.0)
    _groups(source, "alice")
    FakeConnection.down = True
    clock.advance(600)
    assert _groups(source, "alice") == frozenset({"dba"})
    clock.advance(1)
    assert _groups(source, "alice").check(GroupSourceError)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("url", "http://x", "ldap:// or ldaps://"),
        ("user_filter", "(uid=alice)", "must contain {name}"),
        ("group_filter", "member={dn}", "in parentheses"),
        ("cache_ttl", 0, "greater than 0"),
    ],
)
def test_option_checks(key, value, problem):
    with pytest.raises(Exception, match=problem):
        _source(**{key: value})
