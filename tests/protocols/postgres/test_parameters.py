"""Tests for hoopgw_postgres.parameters: a Bind's values as an approval binds them."""

from __future__ import annotations

import struct

from hoopgw_postgres.parameters import SHOWN_LIMIT, bound_parameters


def test_text_values_formats_and_declared_types() -> None:
    parameters = bound_parameters((b"42", None, b"x"), (), (23,))
    assert [(p.value, p.format, p.type, p.shown) for p in parameters] == [
        (b"42", 0, "23", "42"),
        (None, 0, "0", None),
        (b"x", 0, "0", "x"),
    ]


def test_binary_values_are_shown_decoded_or_described_never_as_hex() -> None:
    values = (
        (-5).to_bytes(8, "big", signed=True),
        b"\x01",
        struct.pack("!d", 1.5),
        b"\x01{}",
        b"\xde\xad\xbe\xef",
    )
    parameters = bound_parameters(values, (1,), (20, 16, 701, 3802, 17))
    assert [p.shown for p in parameters] == [
        "-5",
        "true",
        "1.5",
        "{}",
        "(binary value, type OID 17, 4 bytes)",
    ]
    assert all(p.format == 1 for p in parameters)
    assert "dead" not in repr([p.shown for p in parameters])


def test_one_format_code_each_and_long_values_shortened_for_reviewers() -> None:
    long = b"a" * (SHOWN_LIMIT + 10)
    text, binary = bound_parameters((long, (7).to_bytes(4, "big")), (0, 1), (0, 23))
    assert text.value == long and text.shown is not None and text.shown.endswith("bytes)")
    assert binary.shown == "7"
