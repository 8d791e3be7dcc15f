"""Tests for hoopgw_postgres.values: how PostgreSQL's result values are encoded, as the
protocol tells plugins that read them (masking's policy over these: tests/plugins/masking)."""

from __future__ import annotations

from hoopgw_postgres.protocol import PROTOCOL
from hoopgw_postgres.values import NON_TEXT_TYPES, VALUE_TYPES

from hoopgw.protocol import ValueKind
from hoopgw.session import Column


def test_the_protocol_declares_its_value_types() -> None:
    assert PROTOCOL.value_types is VALUE_TYPES


def test_the_types_that_are_skipped_cannot_carry_text() -> None:
    # The allow-list is short and reviewed: none of these prints a string or holds 12 digits.
    assert NON_TEXT_TYPES == {
        16, 21, 22, 23, 26, 27, 28, 29, 30, 600, 601, 602, 603, 604, 628, 700, 718, 774, 829,
        1082, 1083, 1114, 1184, 1186, 1266, 2278, 2950, 2970, 3220, 3904, 3908, 3910, 3912,
        4451, 4533, 4534, 4535, 5038, 5069,
    }  # fmt: skip


def test_kinds_say_how_values_are_encoded_whatever_the_policy() -> None:
    kinds = VALUE_TYPES.type_kind
    assert kinds(25) == ValueKind.TEXT
    assert kinds(1700) == ValueKind.NUMERIC  # a plugin that ignores numbers skips it itself
    assert kinds(869) == ValueKind.ADDRESS
    assert kinds(1007) == ValueKind.ARRAY  # int4[]: its elements say it cannot carry text
    assert kinds(23) == ValueKind.SKIP
    assert kinds(987654) == ValueKind.OTHER  # unknown (an extension): may carry text


def test_a_record_or_unknown_type_in_text_format_is_its_literal() -> None:
    assert VALUE_TYPES.column_kind(Column("r", type_oid=2249, format=0)) == ValueKind.TEXT
    assert VALUE_TYPES.column_kind(Column("r", type_oid=2249, format=1)) == ValueKind.RECORD
    assert VALUE_TYPES.column_kind(Column("x", type_oid=987654, format=0)) == ValueKind.TEXT
    assert VALUE_TYPES.column_kind(Column("x", type_oid=987654, format=1)) == ValueKind.OTHER
    assert VALUE_TYPES.column_kind(Column("j", type_oid=3802, format=1)) == ValueKind.JSONB


def test_element_types_of_arrays_and_ranges() -> None:
    assert VALUE_TYPES.element_type(1009) == 25  # text[]
    assert VALUE_TYPES.element_type(3926) == 20  # int8range
    assert VALUE_TYPES.element_type(4532) == 1700  # nummultirange
    assert VALUE_TYPES.element_type(25) is None
