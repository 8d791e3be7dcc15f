"""Tests for :mod:`hoopgw_masking.catalog`: rule globs, resolution by table id and column number."""

from __future__ import annotations

import pytest
from hoopgw_masking.catalog import ColumnRules, parse_rule, reads_columns

ROWS = [
    (100, 1, "public", "people", "id"),
    (100, 2, "public", "people", "ssn"),
    (200, 1, "crm", "customers", "email"),
    (200, 3, "crm", "customers", "ssn"),
]


def test_rules_fill_missing_parts_with_wildcards() -> None:
    assert parse_rule("ssn") == ("*", "*", "ssn")
    assert parse_rule("customers.email") == ("*", "customers", "email")
    assert parse_rule("crm.customers.e*") == ("crm", "customers", "e*")
    for bad in ("", "a..b", "a.b.c.d"):
        with pytest.raises(ValueError, match="not \\[schema"):
            parse_rule(bad)


def test_columns_are_decided_by_table_oid_and_attribute_number() -> None:
    rules = ColumnRules(["*.ssn", "crm.customers.email"])
    assert rules.decide(100, 2) is None  # nothing loaded yet: unknown, the caller fails closed
    rules.load(ROWS)
    assert rules.decide(100, 2) is True
    assert rules.decide(100, 1) is False
    assert rules.decide(200, 1) is True
    assert rules.decide(200, 3) is True
    assert rules.decide(0, 0) is False  # a computed column has no source
    assert rules.decide(999, 1) is None  # a table created after the load


def test_only_protocols_that_read_a_catalog_of_columns_allow_rules() -> None:
    assert reads_columns("postgres")
    assert not reads_columns("mysql")
    assert not reads_columns("ssh")
    assert not reads_columns("no-such-protocol")
