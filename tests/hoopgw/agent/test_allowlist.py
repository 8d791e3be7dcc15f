"""The agent's allow-list: what each entry form matches, and the entries that are refused."""

from __future__ import annotations

import pytest

from hoopgw.agent.allowlist import AllowList, normalise_host, parse_rule


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        (
            "db.internal:5432",
            ["db.internal:5432", "DB.Internal.:5432"],
            ["db.internal:5433", "x.db.internal:5432", "db.internal.evil:5432"],
        ),
        (
            "*.db.internal:5432",
            ["a.db.internal:5432", "a.b.db.internal:5432"],
            ["db.internal:5432", "adb.internal:5432", "a.db.internal.x:5432"],
        ),
        ("10.0.0.5:22", ["10.0.0.5:22"], ["10.0.0.6:22", "10.0.0.5:23"]),
        (
            "10.0.1.0/24:3306",
            ["10.0.1.0:3306", "10.0.1.255:3306"],
            ["10.0.2.1:3306", "10.0.1.1:3307"],
        ),
        ("[fd00::5]:5432", ["[fd00::5]:5432", "[FD00:0::5]:5432"], ["[fd00::6]:5432"]),
        (
            "[fd00::/64]:5432-5439",
            ["[fd00::1]:5432", "[fd00::ffff]:5439"],
            ["[fd00:1::1]:5432", "[fd00::1]:5440"],
        ),
        ("db.internal:*", ["db.internal:1", "db.internal:65535"], ["db2.internal:1"]),
    ],
)
def test_each_entry_form_matches_exactly_what_it_says(
    entry: str, allowed: list[str], refused: list[str]
) -> None:
    rules = AllowList.parse([entry])
    for target in allowed:
        host, _, port = target.rpartition(":")
        assert rules.permits(host, int(port)), target
    for target in refused:
        host, _, port = target.rpartition(":")
        assert not rules.permits(host, int(port)), target


def test_a_name_never_matches_an_address_entry_and_the_other_way_round() -> None:
    # The agent does not resolve names to judge them: 127.0.0.1 is not "localhost".
    assert not AllowList.parse(["127.0.0.0/8:5432"]).permits("localhost", 5432)
    assert not AllowList.parse(["localhost:5432"]).permits("127.0.0.1", 5432)
    # An IPv4-mapped IPv6 address is not the IPv4 address.
    assert not AllowList.parse(["10.0.0.5:22"]).permits("::ffff:10.0.0.5", 22)


def test_mapped_and_unspecified_addresses_never_match() -> None:
    # ::ffff:127.0.0.1 is 127.0.0.1 and :: is this host, whatever IPv6 entry covers them.
    rules = AllowList.parse(["[::/80]:22", "0.0.0.0/8:22", "[fd00::/8]:22"])
    for host in ("::ffff:127.0.0.1", "::ffff:7f00:1", "::", "0.0.0.0", "[::ffff:10.0.0.5]"):
        assert not rules.permits(host, 22), host
    assert rules.permits("::5", 22)


def test_scoped_addresses_never_match() -> None:
    assert not AllowList.parse(["[fe80::/64]:22"]).permits("fe80::1%eth0", 22)
    assert AllowList.parse(["[fe80::/64]:22"]).permits("fe80::1", 22)


def test_an_empty_list_allows_nothing_and_malformed_hosts_never_match() -> None:
    assert not AllowList.parse([]).permits("db.internal", 5432)
    rules = AllowList.parse(["*.internal:5432"])
    for host in ("", "a b.internal", "a/b.internal", "-x.internal", "a..internal", "x" * 300):
        assert not rules.permits(host, 5432), host


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("*:5432", "a host of * would let the gateway reach any host"),
        ("*", "expected HOST:PORT"),
        ("*db.internal:5432", "a host of *"),
        ("0.0.0.0/0:5432", "matches every address"),
        ("[::/0]:22", "matches every address"),
        ("db.internal", "expected HOST:PORT"),
        ("db.internal:0", "within 1-65535"),
        ("db.internal:70000", "within 1-65535"),
        ("db.internal:5439-5432", "the first not above the last"),
        ("db.internal:http", "must be a number"),
        ("fd00::5:5432", "IPv6 address must be written in brackets"),
        ("[fd00::5]5432", "IPv6 entry must look like"),
        ("10.0.0.1/24:22", "is not an IP network"),
        ("db_internal!:22", "is not a DNS name"),
    ],
)
def test_bad_entries_say_why(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("[", r"\[")):
        parse_rule(entry)


def test_list_errors_name_the_entry() -> None:
    with pytest.raises(ValueError, match=r"entry 2 \('\*:22'\)"):
        AllowList.parse(["db.internal:5432", "*:22"])


def test_normalise_host() -> None:
    assert normalise_host("[FD00::0005]") == "fd00::5"
    assert normalise_host("DB.Internal.") == "db.internal"
    with pytest.raises(ValueError):
        normalise_host("db internal")


@pytest.mark.parametrize("host", ["127.1", "0x7f.0.0.1", "2130706433", "010.0.0.1", "10.1"])
def test_legacy_address_forms_never_match_a_name_rule(host: str) -> None:
    # The resolver reads these as addresses: a wildcard must not let one through as a name.
    with pytest.raises(ValueError, match="is not a DNS name"):
        AllowList.parse(["*.1:22"])
    assert not AllowList.parse(["*.example:22", "127.0.0.1:22", "10.0.0.0/8:22"]).permits(host, 22)
    with pytest.raises(ValueError, match="legacy form"):
        normalise_host(host)
    with pytest.raises(ValueError, match="is not a DNS name"):
        parse_rule(f"{host}:22")
