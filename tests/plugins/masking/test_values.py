"""Tests for :mod:`hoopgw_masking.values`: every text-bearing type in text and binary format,
with the types PostgreSQL and MySQL declare (their ``value_types``)."""

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
    BITS,
    BYTEA,
    DIGITS,
    DOUBLE_LE,
    FLOAT8,
    INT8,
    INT8_LE,
    JSON,
    JSONB,
    JSONPATH,
    MONEY,
    MULTIRANGE,
    NUMERIC,
    OTHER,
    RANGE,
    RECORD,
    SKIP,
    TEXT,
    Refused,
    ValueMasker,
    _numeric_binary,
    _numeric_text,
    unescaped,
)
from hoopgw_mysql.values import VALUE_TYPES as MYSQL
from hoopgw_postgres.values import VALUE_TYPES as POSTGRES

from hoopgw.session import Column

CARD = "4111111111111111"


def values(on_invalid: str = "null", **styles: Style) -> ValueMasker:
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES), styles, Style("redact"))
    return ValueMasker(masker, types=POSTGRES, on_invalid=on_invalid)


def kind_of(type_oid: int, *, numeric: bool, ip: bool) -> str:
    """How masking's policy masks a PostgreSQL type."""
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES), {}, Style("redact"))
    policy = ValueMasker(masker, types=POSTGRES, on_invalid="null", numeric=numeric, ip=ip)
    return policy.kind(type_oid)


def mysql_kind(type_name: str, fmt: int, *, numeric: bool) -> str:
    """How masking's policy masks a MySQL column."""
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES), {}, Style("redact"))
    policy = ValueMasker(masker, types=MYSQL, on_invalid="null", numeric=numeric)
    return policy.column_kind(Column("c", type_name=type_name, format=fmt))


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
    assert kind_of(987654, numeric=False, ip=True) == OTHER  # unknown (an extension): scanned
    # A record or an unknown type in text format is its literal: scanned as text.
    policy = values()
    assert policy.column_kind(Column("r", type_oid=2249, format=0)) == TEXT
    assert policy.column_kind(Column("r", type_oid=2249, format=1)) == RECORD
    assert policy.column_kind(Column("x", type_oid=987654, format=1)) == OTHER


@pytest.mark.parametrize(
    ("oid", "kind"),
    [
        (2249, RECORD),  # row(...)
        (2287, ARRAY),  # record[]
        (3614, OTHER),  # tsvector
        (3615, OTHER),  # tsquery
        (3643, ARRAY),  # tsvector[]
        (2275, TEXT),  # cstring
        (142, TEXT),  # xml
        (17, BYTEA),
        (4072, JSONPATH),
        (2277, OTHER),  # anyarray: pg_stats.most_common_vals shows table values
        (2205, OTHER),  # regclass and the other reg* types print names
        (4096, OTHER),  # regrole: role names are often e-mail addresses
        (3926, RANGE),  # int8range
        (3906, RANGE),  # numrange
        (4536, MULTIRANGE),  # int8multirange
        (3927, ARRAY),  # int8range[]
        (20, INT8),
        (1700, NUMERIC),
        (701, FLOAT8),
        (790, MONEY),
        (3904, SKIP),  # int4range: no card fits in an int4
        (4535, SKIP),  # datemultirange
        (23, SKIP),
        (700, SKIP),  # float4: 24 bits, no 12-digit number
        (2950, SKIP),
    ],
)
def test_every_type_is_scanned_unless_it_cannot_carry_text(oid: int, kind: str) -> None:
    # The default policy (numeric_columns on): card numbers are looked for in numbers.
    assert kind_of(oid, numeric=True, ip=True) == kind


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


def test_xml_character_references_in_json_strings_are_decoded() -> None:
    raw = b'{"e": "ann&#64;example.com", "n": "&#64;"}'
    masked = values().mask(JSON, 0, raw, Counter())
    assert masked == b'{"e": "[EMAIL]", "n": "&#64;"}'


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


def test_a_fraction_or_an_exponent_does_not_hide_a_card() -> None:
    counts: Counter[str] = Counter()
    partial = values(credit_card=Style("partial"))
    assert partial.mask(NUMERIC, 0, f"{CARD}.50".encode(), counts) == b"1111"
    assert partial.mask(NUMERIC, 1, _numeric_binary(int(CARD)), counts) == _numeric_binary(1111)
    assert partial.mask(FLOAT8, 0, b"4.111111111111111e+15", counts) == b"1111"
    assert partial.mask(FLOAT8, 1, struct.pack("!d", float(CARD)), counts) == struct.pack(
        "!d", 1111.0
    )
    assert partial.mask(DOUBLE_LE, 1, struct.pack("<d", float(CARD)), counts) == struct.pack(
        "<d", 1111.0
    )
    assert values().mask(FLOAT8, 0, b"NaN", counts) is None
    assert values().mask(FLOAT8, 0, b"1e+300", counts) is None
    assert values().mask(JSON, 0, b'{"n": 4.111111111111111e15}', counts) == (
        b'{"n": "[CREDIT_CARD]"}'
    )
    assert counts == {"credit_card": 6}


def test_bit_strings_are_read_as_numbers() -> None:
    # card::int8::bit(64), in text and in binary (bit length, then the bits).
    counts: Counter[str] = Counter()
    bits = format(int(CARD), "064b")
    assert values().mask(BITS, 0, bits.encode(), counts) is False
    binary = struct.pack("!i", 64) + int(CARD).to_bytes(8, "big")
    assert values().mask(BITS, 1, binary, counts) is False
    negative = format(-int(CARD) & (2**64 - 1), "064b")  # (-card)::bit(64)
    assert values().mask(BITS, 0, negative.encode(), counts) is False
    assert values().mask(BITS, 0, b"1011", counts) is None
    assert values().mask(BITS, 1, struct.pack("!i", 4) + b"\xb0", counts) is None
    assert counts == {"credit_card": 3}


def test_money_is_checked_with_and_without_its_cents() -> None:
    counts: Counter[str] = Counter()
    assert values().mask(MONEY, 0, b"$4,111,111,111,111,111.00", counts) is False
    assert values().mask(MONEY, 0, b"$41,111,111,111,111.11", counts) is False
    assert values().mask(MONEY, 1, struct.pack("!q", int(CARD) * 100), counts) is False
    assert values().mask(MONEY, 0, b"$12.50", counts) is None
    assert counts == {"credit_card": 3}


def binary_record(fields: list[tuple[int, bytes | None]]) -> bytes:
    out = [struct.pack("!i", len(fields))]
    for oid, data in fields:
        out.append(struct.pack("!Ii", oid, -1 if data is None else len(data)))
        out.append(data or b"")
    return b"".join(out)


def test_records_are_masked_field_by_field() -> None:
    counts: Counter[str] = Counter()
    # Text format: the literal is scanned as text.
    assert values().mask(RECORD, 0, b'(ann@example.com,"536-22-1234")', counts) == (
        b'([EMAIL],"[SSN]")'
    )
    # Binary format: each field by its own type, numbers included; nested records too.
    inner = binary_record([(20, struct.pack("!q", int(CARD)))])
    raw = binary_record([(25, b"ann@example.com"), (23, b"\x00\x00\x00\x01"), (2249, inner)])
    masked = values().mask(RECORD, 1, raw, counts, 2249)
    assert masked == binary_record(
        [(25, b"[EMAIL]"), (23, b"\x00\x00\x00\x01"), (2249, binary_record([(20, None)]))]
    )
    assert values().mask(RECORD, 1, binary_record([(25, b"plain"), (25, None)]), counts) is None
    with pytest.raises(Refused):
        values().mask(RECORD, 1, raw[:-1], counts, 2249)
    assert counts == {"email": 2, "ssn": 1, "credit_card": 1}


def test_ranges_of_numbers_in_text_and_binary() -> None:
    counts: Counter[str] = Counter()
    partial = values(credit_card=Style("partial"))
    assert partial.mask(RANGE, 0, f"[{CARD},{int(CARD) + 1})".encode(), counts, 3926) == (
        f"[1111,{int(CARD) + 1})".encode()
    )
    assert values().mask(RANGE, 0, f"[1,{CARD})".encode(), counts, 3926) is False
    assert values().mask(RANGE, 0, b"[1,5)", counts, 3926) is None
    bound = struct.pack("!q", int(CARD))
    binary = b"\x02" + struct.pack("!i", 8) + bound + struct.pack("!i", 8) + struct.pack("!q", 9)
    assert partial.mask(RANGE, 1, binary, counts, 3926) == (
        b"\x02" + struct.pack("!i", 8) + struct.pack("!q", 1111) + binary[13:]
    )
    unbounded = b"\x12" + struct.pack("!i", 8) + bound  # [card, infinity)
    assert values().mask(RANGE, 1, unbounded, counts, 3926) is False
    multirange = struct.pack("!ii", 1, len(unbounded)) + unbounded
    assert values().mask(MULTIRANGE, 1, multirange, counts, 4536) is False
    assert values().mask(MULTIRANGE, 0, f"{{[1,{CARD})}}".encode(), counts, 4536) is False
    assert counts == {"credit_card": 6}


def test_bytea_is_scanned_as_the_text_it_holds() -> None:
    counts: Counter[str] = Counter()
    hexed = b"\\x" + b"mail ann@example.com".hex().encode()
    assert values().mask(BYTEA, 0, hexed, counts) == b"\\x" + b"mail [EMAIL]".hex().encode()
    escaped = b"mail ann\\100example.com \\\\"  # \100 is "@", \\ a backslash
    assert values().mask(BYTEA, 0, escaped, counts) == b"\\x" + b"mail [EMAIL] \\".hex().encode()
    assert values().mask(BYTEA, 1, b"\x00ann@example.com\xff", counts) == b"\x00[EMAIL]\xff"
    assert values().mask(BYTEA, 0, b"\\x00ff", counts) is None
    assert counts == {"email": 3}


def test_jsonpath_binary_keeps_its_version_byte() -> None:
    raw = b'\x01$."ann@example.com"'
    assert values().mask(JSONPATH, 1, raw, Counter()) == b'\x01$."[EMAIL]"'
    assert values().mask(JSONPATH, 0, raw[1:], Counter()) == b'$."[EMAIL]"'


def test_unknown_types_in_binary_are_scanned_and_never_edited() -> None:
    counts: Counter[str] = Counter()
    # tsvector in binary: count, then each lexeme NUL-terminated with its positions.
    tsvector = struct.pack("!i", 1) + b"ann@example.com\x00" + struct.pack("!HH", 1, 1)
    assert values().mask(OTHER, 1, tsvector, counts, 3614) is False
    with pytest.raises(Refused, match="no valid masked form"):
        values(on_invalid="refuse").mask(OTHER, 1, tsvector, Counter(), 3614)
    # Text format: the literal is scanned as text.
    assert values().mask(OTHER, 0, b"'ann@example.com':1", counts, 3614) == b"'[EMAIL]':1"
    # A composite type of the database (its OID unknown): binary fields by their own types.
    composite = binary_record([(20, struct.pack("!q", int(CARD))), (25, b"x")])
    assert values().mask(OTHER, 1, composite, counts, 99999) == binary_record(
        [(20, None), (25, b"x")]
    )
    array = binary_array(20, [struct.pack("!q", int(CARD))])
    assert values().mask(OTHER, 1, array, counts, 99998) == binary_array(20, [None])
    assert values().mask(OTHER, 1, b"\x00\x01opaque", counts, 99997) is None
    # A field of a domain over int8 or numeric inside a binary record: the domain's OID.
    domain = binary_record([(99995, struct.pack("!q", int(CARD)))])
    assert values().mask(RECORD, 1, domain, counts, 2249) == binary_record([(99995, None)])
    numeric = binary_record([(99994, _numeric_binary(int(CARD)))])
    assert values().mask(RECORD, 1, numeric, counts, 2249) == binary_record([(99994, None)])
    assert values().mask(OTHER, 1, struct.pack("!q", 42), counts, 99993) is None
    # A binary form that is text (citext): masked in place.
    assert values().mask(OTHER, 1, b"mail ann@example.com", counts, 99996) == b"mail [EMAIL]"
    assert counts == {"email": 3, "credit_card": 4}


def test_mysql_kinds_come_from_type_names() -> None:
    assert mysql_kind("VAR_STRING", 0, numeric=False) == TEXT
    assert mysql_kind("BLOB", 1, numeric=False) == TEXT
    assert mysql_kind("TYPE_200", 1, numeric=False) == TEXT  # unknown: fail closed
    assert mysql_kind("JSON", 1, numeric=False) == JSON
    for name in ("LONG", "DOUBLE", "DATETIME", "DATE", "LONGLONG", "NEWDECIMAL", "GEOMETRY"):
        assert mysql_kind(name, 1, numeric=False) == SKIP
    assert mysql_kind("DOUBLE", 0, numeric=True) == DIGITS
    assert mysql_kind("DOUBLE", 1, numeric=True) == DOUBLE_LE
    assert mysql_kind("LONGLONG", 0, numeric=True) == DIGITS
    assert mysql_kind("NEWDECIMAL", 1, numeric=True) == DIGITS
    assert mysql_kind("LONGLONG", 1, numeric=True) == INT8_LE
    assert mysql_kind("LONG", 1, numeric=True) == SKIP


def test_a_binary_mysql_bigint_card_stays_eight_little_endian_bytes() -> None:
    values = ValueMasker(
        Masker(builtin_detectors(["credit_card"]), {}, Style("partial")),
        types=MYSQL,
        on_invalid="null",
    )
    masked = values.mask(INT8_LE, 1, struct.pack("<q", 4111111111111111), Counter())
    assert isinstance(masked, bytes) and len(masked) == 8
    assert struct.unpack("<q", masked)[0] == 1111


def test_escapes_cannot_hide_a_value() -> None:
    # JSON text inside a record's literal (its backslashes doubled), or stored as text, and XML
    # character references: no valid masked form in place, so the value follows on_invalid.
    counts: Counter[str] = Counter()
    record = b'("{""e"": ""ann\\\\u0040example.com""}")'
    assert values().mask(TEXT, 0, record, counts) is False
    assert values().mask(OTHER, 0, b"<e>ann&#64;example&#x2E;com</e>", counts) is False
    assert values().mask(TEXT, 0, b'{"e": "\\u0022 \\u000a"}', counts) is None
    assert counts == {"email": 2}
    with pytest.raises(Refused):
        values(on_invalid="refuse").mask(TEXT, 0, record, Counter())
    assert unescaped("a\\\\\\u0040b &#64; &#10; \\u005c") == "a@b @ &#10; \\u005c"
