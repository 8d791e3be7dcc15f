"""Tests for :mod:`hoopgw_postgres.catalog`: the side-connection query, the function query and
how its rows are judged."""

from __future__ import annotations

from typing import Any

import pg_query
from hoopgw_postgres import messages as m
from hoopgw_postgres.catalog import (
    CatalogError,
    CatalogQuery,
    opaque_candidates,
    reach_query,
    split_name,
)


def test_names_reach_the_query_only_as_escaped_literals() -> None:
    query = reach_query({"f", "a'b\\c"}, set())
    assert "E'a''b\\\\c'" in query and "E'f'" in query and "ARRAY[NULL]" in query
    # One statement whatever the names hold.
    assert len(pg_query.parse(reach_query({"x'); DROP TABLE t; --"}, {"'"})).stmts) == 1


def test_split_name() -> None:
    assert split_name("f") == ("", "f")
    assert split_name("s.f") == ("s", "f")
    assert split_name("db.s.f") == ("s", "f")


def _f(root: str, node: str, volatility: str, parsed: bool = False, nargs: int = 0) -> tuple:
    root_nsp, root_name = root.split(".")
    nsp, name = node.split(".")
    return ("function", root_nsp, root_name, nargs, nsp, name, volatility, parsed)


def test_every_candidate_and_everything_it_calls_counts() -> None:
    rows = [
        _f("pg_catalog.lower", "pg_catalog.lower", "i"),
        _f("public.lower", "public.lower", "v"),  # a user overload of a built-in name
        _f("pg_catalog.random", "pg_catalog.random", "v"),  # reviewed read-only built-in
        _f("pg_catalog.setval", "pg_catalog.setval", "v"),  # classified by name already
        _f("pg_catalog.brand_new", "pg_catalog.brand_new", "v"),  # newer than the lists
        _f("app.calc", "app.calc", "s", parsed=True),
        _f("app.calc", "pg_catalog.abs", "i"),
        _f("other.calc", "other.calc", "s"),  # STABLE plpgsql: its calls are unknown
        _f("app.outer", "app.outer", "i", parsed=True),
        _f("app.outer", "app.inner", "s", parsed=True),
        _f("app.outer", "pg_catalog.pg_terminate_backend", "v"),  # reached through app.inner
    ]
    names = [
        "lower", "random", "setval", "brand_new", "app.calc", "calc", "outer", "pg_temp.f",
        "gone",
    ]  # fmt: skip
    assert opaque_candidates("function", names, rows) == {
        ("function", "lower"): ("public.lower",),
        ("function", "random"): (),
        ("function", "setval"): (),
        ("function", "brand_new"): ("pg_catalog.brand_new",),
        ("function", "app.calc"): (),
        ("function", "calc"): ("other.calc",),
        ("function", "outer"): ("app.outer",),
        ("function", "pg_temp.f"): ("pg_temp.f",),  # temporary functions are not visible
        ("function", "gone"): ("gone",),
    }


def test_relations_and_fields_count_by_what_they_reach() -> None:
    rows = [
        ("relation", "public", "wipe_view", 0, "public", "wipe", "v", False),
        _f("public.wipe", "public.wipe", "v", nargs=1),
        _f("public.note", "public.note", "v", nargs=2),
    ]
    assert opaque_candidates("relation", ["wipe_view", "canary", "cte"], rows) == {
        ("relation", "wipe_view"): ("public.wipe_view",),
        ("relation", "canary"): (),
        ("relation", "cte"): (),
    }
    assert opaque_candidates("field", ["wipe", "note", "id"], rows) == {
        ("field", "wipe"): ("public.wipe",),
        ("field", "note"): (),  # a two-argument function cannot be called as a field
        ("field", "id"): (),
    }


def test_operators_count_by_their_function_and_compiled_code_by_its_declaration() -> None:
    rows = [
        ("operator", "pg_catalog", "=", 0, "", "", "", False),  # built-ins record no dependency
        ("operator", "public", "===", 0, "public", "wipe", "v", False),
        ("operator", "ext", "==", 0, "ext", "ext_eq", "i", True),  # C, IMMUTABLE
    ]
    assert opaque_candidates("operator", ["=", "===", "==", "~~~"], rows) == {
        ("operator", "="): (),
        ("operator", "==="): ("public.===",),
        ("operator", "=="): (),
        ("operator", "~~~"): ("~~~",),
    }


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
