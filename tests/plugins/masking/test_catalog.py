"""Tests for :mod:`hoopgw_masking.catalog`: rule globs, resolution by OID, the catalog query."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_masking.catalog import CatalogError, ColumnRules, parse_rule
from hoopgw_postgres import messages as m
from hoopgw_postgres.catalog import CatalogQuery

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


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


def run_query(*server: Any) -> tuple[list[Any], FakeConnection]:
    query = CatalogQuery("SELECT 1")
    connection = FakeConnection()
    query.connection = connection  # type: ignore[assignment]
    results: list[Any] = []
    query.done.addBoth(results.append)
    query.upstream_ready([], (1, b"k"), False)
    assert connection.sent == [m.Query(query="SELECT 1").encode()]
    query.upstream_messages(*m.MessageReader().feed_block(b"".join(x.encode() for x in server)))
    return results, connection


def test_the_query_collects_rows_until_ready() -> None:
    results, connection = run_query(
        m.RowDescription(fields=(m.FieldDescription(name="a"),)),
        m.DataRow(values=(b"100",)),
        m.DataRow(values=(b"200",)),
        m.CommandComplete(tag="SELECT 2"),
        m.ReadyForQuery(status="I"),
    )
    assert results == [[[b"100"], [b"200"]]]
    assert connection.closed


def test_a_query_error_or_a_failed_login_fails_the_read() -> None:
    results, _ = run_query(
        m.error_response("ERROR", "42501", "denied"), m.ReadyForQuery(status="I")
    )
    assert results[0].check(CatalogError)
    assert "denied" in results[0].getErrorMessage()
    failed = CatalogQuery("SELECT 1")
    outcome: list[Any] = []
    failed.done.addBoth(outcome.append)
    failed.upstream_failed("28P01", "password authentication failed")
    failed.upstream_closed()  # later events change nothing
    assert outcome[0].check(CatalogError)
