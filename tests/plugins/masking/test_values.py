"""Tests for :mod:`hoopgw_masking.values`: every text-bearing type in text and binary format."""

from __future__ import annotations

import json
import struct
from collections import Counter

import pytest
from hoopgw_masking.detectors import BUILTIN_ENTITIES, builtin_detectors
from hoopgw_masking.engine import Masker
from hoopgw_masking.styles import Style
from hoopgw_masking.values import (
    ADDRESS,
    ARRAY,
    DIGITS,
    INT8,
    INT8_LE,
    JSON,
    JSONB,
    NUMERIC,
    SKIP,
    TEXT,
    Refused,
    ValueMasker,
    _numeric_binary,
    _numeric_text,
    kind_of,
    mysql_kind,
)

CARD = "4111111111111111"


def values(on_invalid: str = "null", **styles: Style) -> ValueMasker:
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES), styles, Style("redact"))
    return ValueMasker(masker, on_invalid=on_invalid)


def binary_array(element_oid: int, elements: list[bytes | None]) -> bytes:
    has_null = int(any(e is None for e in elements))
    out = [struct.pack("!iiIii", 1, has_null, element_oid, len(elements), 1)]
    for element in elements:
        out.append(b"\xff\xff\xff\xff" if element is None else struct.pack("!i", len(element)))
        out.append(element or b"")
    return b"".join(out)


def test_kinds_are_decided_from_the_type() -> None:
    assert kind_of(25, numeric=False, ip=True) == TEXT
    assert kind_of(1043, numeric=False, ip=True) == TEXT
    assert kind_of(23, numeric=False, ip=True) == SKIP
    assert kind_of(1114, numeric=False, ip=True) == SKIP
    assert kind_of(2950, numeric=False, ip=True) == SKIP
    assert kind_of(114, numeric=False, ip=True) == JSON
    assert kind_of(3802, numeric=False, ip=True) == JSONB
    assert kind_of(1009, numeric=False, ip=True) == ARRAY
    assert kind_of(1007, numeric=False, ip=True) == SKIP  # int4[]
    assert kind_of(869, numeric=False, ip=True) == ADDRESS
    assert kind_of(869, numeric=False, ip=False) == SKIP
    assert kind_of(1700, numeric=False, ip=True) == SKIP
    assert kind_of(1700, numeric=True, ip=True) == NUMERIC
    assert kind_of(20, numeric=True, ip=True) == INT8
    assert kind_of(1016, numeric=True, ip=True) == ARRAY
    assert kind_of(987654, numeric=False, ip=True) == TEXT  # unknown (an extension): scanned


@pytest.mark.parametrize("fmt", [0, 1])
def test_text_is_the_same_in_both_formats(fmt: int) -> None:
    counts: Counter[str] = Counter()
    assert values().mask(TEXT, fmt, b"mail x@y.example", counts) == b"mail [EMAIL]"
    assert values().mask(TEXT, fmt, b"nothing", counts) is None


def test_json_masks_nested_strings_keys_and_numbers() -> None:
    document = {
        "name": "Ann",
        "contact": {"email": "ann@example.com", "phones": ["+44 20 7946 0018"]},
        "ann@example.com": True,
        "card": int(CARD),
        "n": 1.50,
    }
    counts: Counter[str] = Counter()
    raw = json.dumps(document).replace("1.5", "1.50").encode()
    masked = values().mask(JSON, 0, raw, counts)
    assert isinstance(masked, bytes)
    result = json.loads(masked)
    assert result["contact"] == {"email": "[EMAIL]", "phones": ["[PHONE]"]}
    assert result["[EMAIL]"] is True
    assert result["card"] == "[CREDIT_CARD]"  # no digit form under redact: a string
    assert b"1.50" in masked  # numbers are kept as written
    assert counts == {"email": 2, "phone": 1, "credit_card": 1}


def test_json_number_keeps_its_type_when_the_style_has_digits() -> None:
    masked = values(credit_card=Style("partial")).mask(
        JSON, 0, f'{{"card": {CARD}}}'.encode(), Counter()
    )
    assert masked == b'{"card": 1111}'


def test_json_escapes_cannot_hide_a_value() -> None:
    raw = b'{"e": "ann\\u0040example.com"}'
    masked = values().mask(JSON, 0, raw, Counter())
    assert masked == b'{"e": "[EMAIL]"}'


def test_jsonb_binary_keeps_its_version_byte() -> None:
    counts: Counter[str] = Counter()
    masked = values().mask(JSONB, 1, b'\x01{"e": "ann@example.com"}', counts)
    assert masked == b'\x01{"e": "[EMAIL]"}'
    assert values().mask(JSONB, 1, b'\x01{"e": 1}', counts) is None
    with pytest.raises(Refused):
        values().mask(JSONB, 1, b'\x02{"e": 1}', counts)


def test_unparseable_json_is_refused_without_its_value() -> None:
    with pytest.raises(Refused) as info:
        values().mask(JSON, 0, b'{"e": "ann@example.com"', Counter())
    assert "ann" not in str(info.value)


def test_text_array_elements_are_masked_and_requoted() -> None:
    counts: Counter[str] = Counter()
    raw = b'{ann@example.com,"b \\"q\\" c",NULL,"{x}"}'
    masked = values().mask(ARRAY, 0, raw, counts, 1009)
    assert masked == b'{"[EMAIL]","b \\"q\\" c",NULL,"{x}"}'
    nested = values().mask(ARRAY, 0, b"[0:1]={{a@b.example},{c}}", counts, 1009)
    assert nested == b'[0:1]={{"[EMAIL]"},{"c"}}'
    assert values().mask(ARRAY, 0, b"{a,b}", counts, 1009) is None
    assert counts == {"email": 2}


def test_binary_array_elements_are_masked_and_reframed() -> None:
    counts: Counter[str] = Counter()
    raw = binary_array(25, [b"ann@example.com", None, b"plain"])
    masked = values().mask(ARRAY, 1, raw, counts, 1009)
    assert masked == binary_array(25, [b"[EMAIL]", None, b"plain"])
    jsonb = binary_array(3802, [b'\x01{"e": "ann@example.com"}'])
    assert values().mask(ARRAY, 1, jsonb, counts, 3807) == binary_array(
        3802, [b'\x01{"e": "[EMAIL]"}']
    )
    with pytest.raises(Refused):
        values().mask(ARRAY, 1, raw[:-2], counts, 1009)


def test_address_columns_have_no_valid_masked_form() -> None:
    counts: Counter[str] = Counter()
    assert values().mask(ADDRESS, 0, b"10.0.0.1/32", counts) is False
    assert counts == {"ip": 1}
    with pytest.raises(Refused, match="no valid masked form"):
        values(on_invalid="refuse").mask(ADDRESS, 0, b"10.0.0.1/32", counts)


def test_numbers_in_text_and_binary() -> None:
    counts: Counter[str] = Counter()
    partial = values(credit_card=Style("partial"))
    assert partial.mask(NUMERIC, 0, CARD.encode(), counts) == b"1111"
    assert partial.mask(INT8, 1, struct.pack("!q", int(CARD)), counts) == struct.pack("!q", 1111)
    binary = _numeric_binary(int(CARD))
    assert _numeric_text(binary) == CARD
    assert partial.mask(NUMERIC, 1, binary, counts) == _numeric_binary(1111)
    assert values().mask(NUMERIC, 0, CARD.encode(), counts) is False  # redact: NULL
    assert values().mask(NUMERIC, 0, b"12.50", counts) is None
    assert values().mask(INT8, 1, struct.pack("!q", 42), counts) is None
    assert counts == {"credit_card": 4}


def test_mysql_kinds_come_from_type_names() -> None:
    assert mysql_kind("VAR_STRING", 0, numeric=False) == TEXT
    assert mysql_kind("BLOB", 1, numeric=False) == TEXT
    assert mysql_kind("TYPE_200", 1, numeric=False) == TEXT  # unknown: fail closed
    assert mysql_kind("JSON", 1, numeric=False) == JSON
    for name in ("LONG", "DOUBLE", "DATETIME", "DATE", "LONGLONG", "NEWDECIMAL", "GEOMETRY"):
        assert mysql_kind(name, 1, numeric=False) == SKIP
    assert mysql_kind("LONGLONG", 0, numeric=True) == DIGITS
    assert mysql_kind("NEWDECIMAL", 1, numeric=True) == DIGITS
    assert mysql_kind("LONGLONG", 1, numeric=True) == INT8_LE
    assert mysql_kind("LONG", 1, numeric=True) == SKIP


def test_a_binary_mysql_bigint_card_stays_eight_little_endian_bytes() -> None:
    values = ValueMasker(
        Masker(builtin_detectors(["credit_card"]), {}, Style("partial")), on_invalid="null"
    )
    masked = values.mask(INT8_LE, 1, struct.pack("<q", 4111111111111111), Counter())
    assert isinstance(masked, bytes) and len(masked) == 8
    assert struct.unpack("<q", masked)[0] == 1111
