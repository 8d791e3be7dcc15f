"""Tests for hoopgw.groups (the group source contract) and hoopgw.identity.groups."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from hoopgw.errors import PluginError
from hoopgw.groups import GroupSourceError, load_group_source
from hoopgw.identity.groups import GroupResolver
from hoopgw.session import Identity

ALICE = Identity(name="alice", groups=frozenset({"agents"}), method="oidc")


class Source:
    def __init__(self, answer):
        self.answer = answer
        self.closed = False

    def groups_of(self, identity):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self):
        self.closed = True


def _result(d):
    results = []
    d.addBoth(results.append)
    assert results
    return results[0]


def test_no_sources_changes_nothing():
    resolver = GroupResolver([])
    assert not resolver
    assert _result(resolver.resolve(ALICE)) is ALICE


def test_groups_of_every_source_are_added():
    resolver = GroupResolver(
        [("a", Source(defer.succeed(["dba"]))), ("b", Source(defer.succeed(frozenset({"ops"}))))]
    )
    assert _result(resolver.resolve(ALICE)).groups == frozenset({"agents", "dba", "ops"})


@pytest.mark.parametrize(
    "answer",
    [
        OSError("directory down"),
        defer.fail(OSError("directory down")),
        defer.fail(GroupSourceError("shown", reason="directory down")),
    ],
)
def test_a_failing_source_fails_the_whole_lookup(answer):
    resolver = GroupResolver([("ok", Source(defer.succeed(["dba"]))), ("ldap", Source(answer))])
    failure = _result(resolver.resolve(ALICE))
    assert failure.check(GroupSourceError)
    assert "directory down" in failure.value.reason


@pytest.mark.parametrize("answer", [[1], [""], ["dba\nadmins"], ["ops\x1b[2J"]])
def test_a_source_answering_something_else_than_names_fails(answer):
    failure = _result(GroupResolver([("x", Source(defer.succeed(answer)))]).resolve(ALICE))
    assert failure.check(GroupSourceError)
    assert "non-name" in failure.value.reason


def test_close_closes_every_source():
    sources = [Source(defer.succeed([])), Source(defer.succeed([]))]
    GroupResolver([("a", sources[0]), ("b", sources[1])]).close()
    assert all(s.closed for s in sources)


def test_loading_an_unknown_source():
    with pytest.raises(PluginError, match="group source 'nis' is not installed"):
        load_group_source("nis")


def test_the_ldap_source_is_installed():
    assert load_group_source("ldap").__name__ == "LdapGroupSource"
