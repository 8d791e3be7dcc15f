"""Row text in the client encoding, converted for row plugins and back."""

from __future__ import annotations

import pytest
from hoopgw_postgres.rowtext import (
    convert,
    converted_columns,
    copy_bytes,
    copy_text,
    message_text,
    message_wire,
    row_codec,
)

from hoopgw.session import Column


def test_only_encodings_other_than_utf8_are_converted() -> None:
    assert row_codec("UTF8") is None
    assert row_codec("SQL_ASCII") is None
    assert row_codec("LATIN1") == "latin-1"


def test_text_values_travel_as_utf8_and_back() -> None:
    columns = [Column("a"), Column("b", type_oid=20, format=1), Column("c", type_oid=25, format=1)]
    original: list[bytes | None] = [b"M\xfcller", b"\x00\x00\x00\x00\x00\x00\x00\xfc", b"\xe9"]
    rows = [list(original), [None, None, None]]
    convert(rows, columns, "latin-1", to_utf8=True)
    assert rows[0] == ["Müller".encode(), original[1], "é".encode()]  # int8 bytes untouched
    convert(rows, columns, "latin-1", to_utf8=False)
    assert rows == [original, [None, None, None]]


def test_rows_without_their_description_are_converted_whole() -> None:
    assert converted_columns([Column("a", format=1)], 2) == [0, 1]


def test_copy_text_keeps_the_binary_signature_visible_in_any_encoding() -> None:
    binary = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\xe9"
    assert copy_text(binary, "LATIN1").startswith("PGCOPY\n\udcff\r\n\x00")
    assert copy_bytes(copy_text(binary, "LATIN1"), "LATIN1") == binary
    assert copy_text(b"M\xfcller\n", "LATIN1") == "Müller\n"
    assert copy_bytes("Müller\n", "LATIN1") == b"M\xfcller\n"


def test_message_fields_are_read_in_the_client_encoding_and_back() -> None:
    # ErrorResponse decodes fields as UTF-8 (lone surrogates for other bytes); a LATIN1
    # client's "Zoë" is b"Zo\xeb" on the wire.
    wire = {"message": "bad: Zo\udceb", "detail": "plain"}
    text = message_text(wire, "LATIN1")
    assert text == {"message": "bad: Zoë", "detail": "plain"}
    assert message_wire(text, "LATIN1") == wire
    assert message_text(wire, "UTF8") is wire
    euc = {"message": "東京 Müller".encode("euc_jp").decode("utf-8", "surrogateescape")}
    assert message_text(euc, "EUC_JP") == {"message": "東京 Müller"}
    assert message_wire({"message": "東京 Müller"}, "EUC_JP") == euc
    with pytest.raises(UnicodeError):
        message_wire({"message": "雪"}, "LATIN1")


def test_a_message_field_not_exact_in_the_client_encoding_fails_closed() -> None:
    invalid = {"message": b"\xa4 x".decode("utf-8", "surrogateescape")}  # half an EUC_JP char
    with pytest.raises(UnicodeError):
        message_text(invalid, "EUC_JP")
    assert message_text(invalid, "EUC_JP", exact=False) == invalid  # for an unmasked record
    with pytest.raises(UnicodeError):
        message_wire({"message": "\u2588"}, "LATIN1")
