"""Statement shapes (hoopgw_postgres.shape): one key for exactly the texts whose parse trees
differ only in constant values and positions."""

from __future__ import annotations

import sys
from typing import Any

import pg_query
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hoopgw_postgres.analysis import PostgresDialect
from hoopgw_postgres.shape import tree_key
from hypothesis import given, settings
from hypothesis import strategies as st

statements: Any = sys.modules["hoopgw_tests_pg_statements"]
STATEMENTS = statements.statements()
PARSEABLE = [s for s in STATEMENTS if tree_key(s) is not None]


def _stripped(message: Any) -> Any:
    """A protobuf parse tree without positions, constants reduced to their kind: what two
    texts of one shape have in common, computed independently of the JSON key."""
    if type(message).DESCRIPTOR.name == "A_Const":
        return ("A_Const", message.WhichOneof("val"), message.isnull)
    items = []
    for field, value in message.ListFields():
        if field.name in ("location", "stmt_location", "stmt_len"):
            continue
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            items.append(
                (
                    field.name,
                    value
                    if not hasattr(value, "__len__") or isinstance(value, str | bytes)
                    else tuple(value),
                )
            )
        elif isinstance(value, Message):
            items.append((field.name, _stripped(value)))
        else:
            items.append((field.name, tuple(_stripped(v) for v in value)))
    return (type(message).DESCRIPTOR.name, tuple(items))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "select abalance from pgbench_accounts where aid=987654 -- c",
        ),
        ("SELECT 'a', 1.5, true, NULL", "SELECT /* x */ 'it''s', 2.25, false, null"),
        ("SELECT '\"location\":5'", "SELECT '\"A_Const\":{'"),
        (
            "UPDATE t SET a = 1 WHERE id = 2; SELECT 3",
            "UPDATE t SET a = 10 WHERE id = 20;SELECT 30",
        ),
    ],
)
def test_texts_that_differ_in_constants_and_spacing_share_a_key(a: str, b: str) -> None:
    assert tree_key(a) is not None and tree_key(a) == tree_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT 1", "SELECT $1"),  # a parameter is no constant
        ("SELECT 1", "SELECT '1'"),  # nor is a string an integer
        ("SELECT 1", "SELECT 1.0"),
        ("SELECT 1", "SELECT NULL"),
        ("SELECT $1", "SELECT $2"),
        ("SELECT a FROM t WHERE aid = 1", "SELECT a FROM t WHERE bid = 1"),
        ("SELECT a FROM t", 'SELECT a FROM "T"'),
        ("SELECT 1; SELECT 2", "SELECT 1"),
        ("COPY t TO '/tmp/x'", "COPY t TO '/tmp/y'"),  # a file name is no constant
        ("SELECT 'x'::text", "SELECT 'x'::varchar"),
        # Names that look like the JSON the key removes stay whole.
        ('SELECT "a"",""location"":5" FROM t', 'SELECT "a"",""location"":6" FROM t'),
        ('SELECT "A_Const"":{""ival" FROM t', 'SELECT "A_Const"":{""sval" FROM t'),
    ],
)
def test_texts_with_other_trees_have_other_keys(a: str, b: str) -> None:
    assert tree_key(a) != tree_key(b)


def test_what_does_not_parse_has_no_key() -> None:
    assert tree_key("SELEC 1") is None
    assert PostgresDialect().shape("SELECT 1\0") is None
    assert PostgresDialect().shape("SELECT '" + "x" * 20000 + "'") is None


def test_the_key_is_the_tree_without_constants_and_positions_over_every_test_statement() -> None:
    """Exactness over every statement of the tests, pairwise: two keys are equal exactly when
    the parse trees (the binding's protobuf, reduced independently) are."""
    assert len(PARSEABLE) > 400
    by_key: dict[str, Any] = {}
    by_tree: dict[Any, str] = {}
    for text in PARSEABLE:
        key = tree_key(text)
        tree = _stripped(pg_query.parse(text))
        assert by_key.setdefault(key, tree) == tree, text
        assert by_tree.setdefault(tree, key) == key, text


_REPLACEMENTS = st.one_of(
    st.integers(min_value=0, max_value=2**31 - 1).map(str),
    st.sampled_from(["'%'", "'on'", "'off'", "'role'", "''", "'x''y'", "'{\"location\":1}'"]),
    st.text(alphabet='abc%_ ,:{}"\\', max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'"),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.sampled_from(PARSEABLE), value=_REPLACEMENTS, data=st.data())
def test_a_constant_replaced_by_one_of_its_kind_keeps_the_key(
    text: str, value: str, data: Any
) -> None:
    variant = statements.with_constant(text, value, data.draw(st.integers(min_value=0)))
    if variant is None:
        return
    assert tree_key(variant) == tree_key(text), variant
