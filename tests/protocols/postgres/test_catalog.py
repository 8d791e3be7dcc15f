"""Tests for :mod:`hoopgw_postgres.catalog`: the function query and how its rows are judged."""

from __future__ import annotations

import pg_query
from hoopgw_postgres.catalog import functions_query, split_name, volatile_candidates


def test_names_reach_the_query_only_as_escaped_literals() -> None:
    query = functions_query({"f", "a'b\\c"})
    assert "E'a''b\\\\c'" in query and "E'f'" in query
    # One statement whatever the names hold.
    assert len(pg_query.parse(functions_query({"x'); DROP TABLE t; --"})).stmts) == 1


def test_split_name() -> None:
    assert split_name("f") == ("", "f")
    assert split_name("s.f") == ("s", "f")
    assert split_name("db.s.f") == ("s", "f")


def test_every_volatile_overload_in_any_schema_counts() -> None:
    rows = [
        ("pg_catalog", "lower", "i"),
        ("public", "lower", "v"),
        ("pg_catalog", "random", "v"),  # reviewed read-only built-in
        ("pg_catalog", "brand_new", "v"),  # a built-in newer than the lists
        ("app", "calc", "s"),
        ("other", "calc", "v"),
    ]
    answer = volatile_candidates(
        ["lower", "random", "brand_new", "app.calc", "calc", "pg_temp.f", "gone"], rows
    )
    assert answer == {
        "lower": ("public.lower",),
        "random": (),
        "brand_new": ("pg_catalog.brand_new",),
        "app.calc": (),
        "calc": ("other.calc",),
        "pg_temp.f": ("pg_temp.f",),  # the side connection cannot see temporary functions
        "gone": ("gone",),
    }
