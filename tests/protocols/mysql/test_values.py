"""Tests for hoopgw_mysql.values: how MySQL's result values are encoded, from the type name
and format, as the protocol tells plugins that read them."""

from __future__ import annotations

import pytest
from hoopgw_mysql.protocol import PROTOCOL
from hoopgw_mysql.values import VALUE_TYPES

from hoopgw.protocol import ValueKind
from hoopgw.session import Column


def test_the_protocol_declares_its_value_types() -> None:
    assert PROTOCOL.value_types is VALUE_TYPES


@pytest.mark.parametrize(
    ("type_name", "fmt", "kind"),
    [
        ("VAR_STRING", 0, ValueKind.TEXT),
        ("BLOB", 1, ValueKind.TEXT),
        ("TYPE_200", 1, ValueKind.TEXT),  # unknown: fail closed
        ("JSON", 1, ValueKind.JSON),
        ("LONG", 1, ValueKind.SKIP),
        ("DATETIME", 0, ValueKind.SKIP),
        ("GEOMETRY", 1, ValueKind.SKIP),
        ("DOUBLE", 0, ValueKind.DIGITS),
        ("DOUBLE", 1, ValueKind.DOUBLE_LE),
        ("LONGLONG", 0, ValueKind.DIGITS),
        ("LONGLONG", 1, ValueKind.INT8_LE),
        ("NEWDECIMAL", 1, ValueKind.DIGITS),
    ],
)
def test_kinds_come_from_type_names_and_formats(type_name: str, fmt: int, kind: str) -> None:
    assert VALUE_TYPES.column_kind(Column("c", type_name=type_name, format=fmt)) == kind


def test_values_name_no_types_inside_them() -> None:
    assert VALUE_TYPES.type_kind(3) == ValueKind.OTHER
    assert VALUE_TYPES.element_type(3) is None
