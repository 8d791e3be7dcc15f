"""Result values in other character sets, converted for row plugins and back."""

from __future__ import annotations

import pytest
from hoopgw_mysql.charsets import (
    CHARSET_OF,
    COLLATIONS,
    UndecodableText,
    column_codecs,
    from_utf8,
    message_codec,
    message_text,
    message_wire,
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


def test_server_messages_are_read_in_the_character_set_of_results() -> None:
    """An error's text as the packet codec reads it (UTF-8 and lone surrogates) is read in
    ``character_set_results`` for the plugins, and written back in it after."""
    assert message_codec("utf8mb4") is None and message_codec("NULL") is None
    assert message_codec("binary") is None and message_codec("utf8") is None
    for charset, codec in (("latin1", "cp1252"), ("utf16", "utf-16-be"), ("ucs2", "utf-16-be")):
        wire = "Table 'd.Müller' doesn't exist".encode(codec).decode("utf-8", "surrogateescape")
        found = message_codec(charset.upper())
        assert message_text(wire, found) == "Table 'd.Müller' doesn't exist"
        assert message_wire("Table 'd.[X]' doesn't exist", found).encode(
            "utf-8", "surrogateescape"
        ) == "Table 'd.[X]' doesn't exist".encode(codec)
    # ASCII is not itself in UTF-32: "a@b.c" reads as "\0\0\0a..." unless decoded.
    wide = "a@b.c".encode("utf-32-be").decode("utf-8", "surrogateescape")
    assert wide.isascii() and message_text(wide, message_codec("utf32")) == "a@b.c"


def test_server_messages_that_cannot_be_read_exactly_end_the_session() -> None:
    with pytest.raises(UndecodableText, match="character_set_results sjis"):
        message_codec("sjis")
    odd = b"\x00T\xd8".decode("utf-8", "surrogateescape")  # a lone UTF-16 half
    with pytest.raises(UndecodableText, match="not valid in character_set_results"):
        message_text(odd, message_codec("utf16"))
    with pytest.raises(UndecodableText, match="no form in character_set_results"):
        message_wire("\u2588", message_codec("latin2"))
