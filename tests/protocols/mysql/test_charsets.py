"""Result values in other character sets, converted for row plugins and back."""

from __future__ import annotations

import pytest
from hoopgw_mysql.charsets import (
    CHARSET_OF,
    COLLATIONS,
    UndecodableText,
    column_codecs,
    from_utf8,
    to_utf8,
)


def test_every_collation_id_names_one_character_set() -> None:
    ids = [id_ for group in COLLATIONS.values() for id_ in group]
    assert len(ids) == len(set(ids)) == len(CHARSET_OF)


def test_values_travel_converted_and_back() -> None:
    codecs = column_codecs([54, 45, 63, 8, 60])  # utf16, utf8mb4, binary, latin1, utf32
    original = [
        "a@b.example".encode("utf-16-be"),
        b"plain",
        b"\x00\xff",
        b"M\xfcller \x81",  # latin1 (cp1252) with one of its undefined bytes
        "x".encode("utf-32-be"),
    ]
    rows: list[list[bytes | None]] = [list(original), [None] * 5]
    to_utf8(rows, codecs)
    assert rows[0][:4] == [b"a@b.example", b"plain", b"\x00\xff", "Müller ".encode() + b"\x81"]
    assert rows[0][4] == b"x"
    from_utf8(rows, codecs)
    assert rows == [original, [None] * 5]


@pytest.mark.parametrize("collation", [13, 28, 10, 16, 999, 0])
def test_a_set_without_an_exact_decoding_is_refused(collation: int) -> None:
    with pytest.raises(UndecodableText):
        column_codecs([45, collation])


def test_bytes_not_valid_in_their_set_are_refused() -> None:
    rows: list[list[bytes | None]] = [[b"\xd8\x00"]]  # a lone UTF-16 surrogate
    with pytest.raises(UndecodableText):
        to_utf8(rows, column_codecs([54]))
