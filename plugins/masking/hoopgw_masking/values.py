"""PostgreSQL values in their wire formats: which types carry text, and how to mask inside each.

The plan for a result set is made once, from its column types (:func:`kind_of`): columns of
types that cannot carry text (integers, timestamps, UUIDs, ...) are never looked at, so a result
without text-bearing columns costs nothing. Types the gateway does not know (extensions, enums,
domains) are treated as text: fail closed.

Formats handled, text (0) and binary (1):

- text, varchar, bpchar, name, "char", xml, unknown: UTF-8 text in both formats;
- json: JSON text in both formats; jsonb: JSON text, in binary behind a version byte ``1``;
  strings, object keys and numbers inside are masked one by one and the document re-serialised;
- arrays of those: the ``{...}`` literal in text format, the array structure in binary;
- numeric and int8 (only when ``numeric_columns`` is on): digit-only entities (card numbers).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from decimal import Decimal
from typing import Any

from hoopgw_masking.engine import Masker

# Scalar kinds.
SKIP = "skip"
TEXT = "text"
JSON = "json"
JSONB = "jsonb"
NUMERIC = "numeric"
INT8 = "int8"
DIGITS = "digits"  # a number written in ASCII in either format (MySQL text rows, DECIMAL)
INT8_LE = "int8le"  # MySQL's binary LONGLONG: eight little-endian bytes
ADDRESS = "address"
ARRAY = "array"

TEXT_TYPES = {25: TEXT, 1043: TEXT, 1042: TEXT, 19: TEXT, 18: TEXT, 142: TEXT, 705: TEXT}
TEXT_TYPES.update({114: JSON, 3802: JSONB})
NON_TEXT_TYPES = frozenset(
    {
        16, 17, 20, 21, 22, 23, 24, 26, 27, 28, 29, 30, 600, 601, 602, 603, 604, 628, 700, 701,
        718, 790, 829, 774, 1082, 1083, 1114, 1184, 1186, 1266, 1560, 1562, 1700, 2202, 2203,
        2204, 2205, 2206, 3220, 3734, 3769, 4089, 4096, 2950, 3904, 3906, 3908, 3910, 3912,
        3926, 5038, 5069, 3614, 3615, 2249, 2278, 2279, 2275, 2776, 2277, 2283, 3500, 3831,
        4451, 4532,
    }
)  # fmt: skip
"""Types that cannot carry text: booleans, numbers, dates and times, geometry, uuid, bytea,
ranges of those, system identifiers, pseudo-types."""
ADDRESS_TYPES = frozenset({869, 650})  # inet, cidr
ARRAY_ELEMENTS = {
    1009: 25, 1015: 1043, 1014: 1042, 1003: 19, 1002: 18, 143: 142, 199: 114, 3807: 3802,
    1041: 869, 651: 650, 1231: 1700, 1016: 20,
}  # fmt: skip
NON_TEXT_ARRAYS = frozenset(
    {1000, 1001, 1005, 1006, 1007, 1008, 1010, 1011, 1012, 1013, 1017, 1018, 1019, 1020, 1021,
     1022, 1024, 1025, 1027, 1028, 1040, 1115, 1182, 1183, 1185, 1187, 1270, 1561, 1563, 2951,
     3221, 3643, 3644, 3905, 3907, 3909, 3911, 3913, 3927, 2211, 2949, 4090, 4097, 1034, 1026}
)  # fmt: skip


# MySQL's column type names (Column.type_name, set by the MySQL front end) that cannot carry
# text: integers, floats, dates and times (fixed-width or packed in binary rows), BIT, GEOMETRY.
MYSQL_NON_TEXT = frozenset(
    {
        "TINY", "SHORT", "LONG", "FLOAT", "DOUBLE", "NULL", "TIMESTAMP", "LONGLONG", "INT24",
        "DATE", "TIME", "DATETIME", "YEAR", "NEWDATE", "BIT", "TIMESTAMP2", "DATETIME2", "TIME2",
        "DECIMAL", "NEWDECIMAL", "GEOMETRY",
    }
)  # fmt: skip
MYSQL_NUMBERS = frozenset({"LONGLONG", "DECIMAL", "NEWDECIMAL"})
"""MySQL types that can hold a card number, scanned when ``numeric_columns`` is on."""


class Refused(Exception):
    """A value held an entity and has no valid masked form, and ``on_invalid`` is ``refuse``.

    The message never holds the value.
    """


def kind_of(type_oid: int, *, numeric: bool, ip: bool) -> str:
    """How values of ``type_oid`` are masked (one of the kind constants)."""
    if type_oid in TEXT_TYPES:
        return TEXT_TYPES[type_oid]
    if type_oid in ARRAY_ELEMENTS:
        element = kind_of(ARRAY_ELEMENTS[type_oid], numeric=numeric, ip=ip)
        return SKIP if element == SKIP else ARRAY
    if type_oid in ADDRESS_TYPES:
        return ADDRESS if ip else SKIP
    if type_oid == 1700:
        return NUMERIC if numeric else SKIP
    if type_oid == 20:
        return INT8 if numeric else SKIP
    if type_oid in NON_TEXT_TYPES or type_oid in NON_TEXT_ARRAYS:
        return SKIP
    return TEXT  # unknown: an extension's type, an enum, a domain: fail closed


def mysql_kind(type_name: str, fmt: int, *, numeric: bool) -> str:
    """How values of a MySQL column type (its protocol name) are masked in format ``fmt``
    (0 text rows, 1 binary rows of prepared statements)."""
    if type_name == "JSON":
        return JSON  # JSON text in both formats
    if numeric and type_name in MYSQL_NUMBERS:
        return INT8_LE if fmt == 1 and type_name == "LONGLONG" else DIGITS
    if type_name in MYSQL_NON_TEXT:
        return SKIP
    return TEXT  # strings, blobs, ENUM, SET, and codes the gateway does not know: fail closed


class ValueMasker:
    """Masks one value of a given kind and format; ``None`` means unchanged."""

    def __init__(self, masker: Masker, *, on_invalid: str) -> None:
        """
        :param on_invalid: ``null`` to send SQL NULL where no valid masked form exists,
            ``refuse`` to raise :class:`Refused`.
        """
        self.masker = masker
        self._on_invalid = on_invalid

    # -- whole values ------------------------------------------------------------------------

    def invalid(self, entity: str) -> None:
        """The value has no valid masked form: ``None`` (SQL NULL), or :class:`Refused`."""
        if self._on_invalid == "refuse":
            raise Refused(f"a {entity} value has no valid masked form for its column type")
        return None

    def mask(
        self, kind: str, fmt: int, value: bytes, counts: Counter[str], type_oid: int = 0
    ) -> bytes | bool | None:
        """Mask one wire value. Returns the new bytes, ``None`` if unchanged, or ``False`` for
        SQL NULL (no valid masked form)."""
        if kind == TEXT:
            text = value.decode("utf-8", "surrogateescape")
            masked = self.masker.mask(text, counts)
            return None if masked is None else masked.encode("utf-8", "surrogateescape")
        if kind == JSON or (kind == JSONB and fmt == 0):
            return self._json(value, counts)
        if kind == JSONB:
            if value[:1] != b"\x01":
                raise Refused("unknown jsonb binary version")
            result = self._json(value[1:], counts)
            return b"\x01" + result if isinstance(result, bytes) else result
        if kind == ARRAY:
            element = ARRAY_ELEMENTS.get(type_oid, 25)
            if fmt == 0:
                return self._text_array(value, element, counts)
            return self._binary_array(value, counts)
        if kind == ADDRESS:
            return self._address(value, fmt, counts)
        if kind in (NUMERIC, INT8, DIGITS, INT8_LE):
            return self._number(kind, fmt, value, counts)
        return None

    # -- JSON --------------------------------------------------------------------------------

    def _json(self, value: bytes, counts: Counter[str]) -> bytes | None:
        text = value.decode("utf-8", "surrogateescape")
        if "\\" not in text and not self.masker.mask(text, Counter()):
            # Nothing to find in the raw text, and no escape could hide anything.
            return None
        try:
            document = json.loads(
                text, object_pairs_hook=_Pairs, parse_float=_Number, parse_int=_Number
            )
        except ValueError:
            raise Refused("a JSON value could not be parsed") from None
        changed = [False]
        masked = self._json_node(document, counts, changed)
        if not changed[0]:
            return None
        return _dump(masked).encode("utf-8", "surrogateescape")

    def _json_node(self, node: Any, counts: Counter[str], changed: list[bool]) -> Any:
        if isinstance(node, _Number):
            return self._json_number(node, counts, changed)
        if isinstance(node, str):
            masked = self.masker.mask(node, counts)
            if masked is None:
                return node
            changed[0] = True
            return masked
        if isinstance(node, _Pairs):
            return _Pairs(
                (self._json_node(k, counts, changed), self._json_node(v, counts, changed))
                for k, v in node
            )
        if isinstance(node, list):
            return [self._json_node(item, counts, changed) for item in node]
        return node

    def _json_number(self, node: _Number, counts: Counter[str], changed: list[bool]) -> Any:
        digits = node.lstrip("-")
        if not digits.isdigit():
            return node
        found = self.masker.mask_digits(digits, counts)
        if found is None:
            return node
        changed[0] = True
        if found is False:
            entity = self._digit_entity(digits)
            return self.masker.style(entity).text(entity, digits)
        # A JSON number has no leading zeros.
        return _Number(("-" if node.startswith("-") else "") + str(int(found)))

    def _digit_entity(self, digits: str) -> str:
        for detector in self.masker.detectors:
            if detector.digits_only and detector.pattern.fullmatch(digits):
                return detector.entity
        return "number"

    # -- arrays ------------------------------------------------------------------------------

    def _element(self, element_oid: int, fmt: int, value: bytes, counts: Counter[str]) -> Any:
        kind = kind_of(element_oid, numeric=True, ip=True)
        return self.mask(kind, fmt, value, counts, element_oid)

    def _text_array(self, value: bytes, element_oid: int, counts: Counter[str]) -> bytes | None:
        text = value.decode("utf-8", "surrogateescape")
        prefix, body = _split_dimensions(text)
        items = _parse_array(body)
        changed = [False]

        def walk(node: Any) -> Any:
            if isinstance(node, list):
                return [walk(n) for n in node]
            if node is None:
                return None
            result = self._element(element_oid, 0, node.encode("utf-8", "surrogateescape"), counts)
            if result is None:
                return node
            changed[0] = True
            return None if result is False else result.decode("utf-8", "surrogateescape")

        masked = walk(items)
        if not changed[0]:
            return None
        return (prefix + _format_array(masked)).encode("utf-8", "surrogateescape")

    def _binary_array(self, value: bytes, counts: Counter[str]) -> bytes | None:
        try:
            ndim, _flags, element_oid = struct.unpack_from("!iiI", value, 0)
            position = 12 + 8 * ndim
            header = bytearray(value[:position])
            elements: list[bytes | None] = []
            while position < len(value):
                (size,) = struct.unpack_from("!i", value, position)
                position += 4
                if size < 0:
                    elements.append(None)
                    continue
                if position + size > len(value):
                    raise struct.error
                elements.append(value[position : position + size])
                position += size
        except struct.error:
            raise Refused("a binary array value is malformed") from None
        changed = False
        out: list[bytes | None] = []
        for element in elements:
            result = None if element is None else self._element(element_oid, 1, element, counts)
            if result is None:
                out.append(element)
            else:
                changed = True
                out.append(None if result is False else result)
        if not changed:
            return None
        if any(e is None for e in out):
            struct.pack_into("!i", header, 4, 1)
        parts = [bytes(header)]
        for element in out:
            parts.append(
                b"\xff\xff\xff\xff" if element is None else struct.pack("!i", len(element))
            )
            if element is not None:
                parts.append(element)
        return b"".join(parts)

    # -- addresses and numbers ---------------------------------------------------------------

    def _address(self, value: bytes, fmt: int, counts: Counter[str]) -> bool:
        # An inet or cidr value *is* an IP address; no masked form is an address of the type.
        counts["ip"] += 1
        self.invalid("ip")
        return False

    def _number(self, kind: str, fmt: int, value: bytes, counts: Counter[str]) -> Any:
        if kind == DIGITS or fmt == 0:
            text = value.decode("ascii", "replace")
        elif kind == INT8_LE:
            text = str(struct.unpack("<q", value)[0])
        elif kind == INT8:
            text = str(struct.unpack("!q", value)[0])
        else:
            text = _numeric_text(value)
        sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
        if not digits.isdigit():
            return None  # fractions, NaN, infinities: no card number
        found = self.masker.mask_digits(digits, counts)
        if found is None:
            return None
        if found is False:
            self.invalid(self._digit_entity(digits))
            return False
        masked = sign + str(int(found))
        if kind == DIGITS or fmt == 0:
            return masked.encode("ascii")
        if kind == INT8_LE:
            return struct.pack("<q", int(masked))
        if kind == INT8:
            return struct.pack("!q", int(masked))
        return _numeric_binary(int(masked))


# -- JSON helpers ----------------------------------------------------------------------------


class _Pairs(list[tuple[Any, Any]]):
    """A JSON object as its key-value pairs, in order, duplicates kept (``json`` keeps them)."""


class _Number(str):
    """A JSON number, kept as written."""


def _dump(node: Any) -> str:
    if isinstance(node, _Number):
        return str(node)
    if isinstance(node, str):
        return json.dumps(node, ensure_ascii=False)
    if isinstance(node, _Pairs):
        return "{" + ", ".join(f"{_dump(k)}: {_dump(v)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return json.dumps(node)


# -- array literal helpers -------------------------------------------------------------------


def _split_dimensions(text: str) -> tuple[str, str]:
    """``[1:2]={a,b}`` -> (``[1:2]=``, ``{a,b}``)."""
    if text.startswith("["):
        prefix, _, body = text.partition("=")
        return prefix + "=", body
    return "", text


def _parse_array(text: str) -> list[Any]:
    """Parse a text-format array literal (``,`` delimiter) into nested lists of str/None."""
    position = 0

    def parse() -> list[Any]:
        nonlocal position
        if text[position] != "{":
            raise Refused("an array value is malformed")
        position += 1
        items: list[Any] = []
        if text[position] == "}":
            position += 1
            return items
        while True:
            char = text[position]
            if char == "{":
                items.append(parse())
            elif char == '"':
                position += 1
                chars = []
                while text[position] != '"':
                    if text[position] == "\\":
                        position += 1
                    chars.append(text[position])
                    position += 1
                position += 1
                items.append("".join(chars))
            else:
                end = position
                while text[end] not in ",}":
                    end += 1
                word = text[position:end].strip()
                items.append(None if word.upper() == "NULL" else word)
                position = end
            if text[position] == ",":
                position += 1
                continue
            if text[position] == "}":
                position += 1
                return items
            raise Refused("an array value is malformed")

    try:
        result = parse()
    except IndexError:
        raise Refused("an array value is malformed") from None
    return result


def _format_array(items: list[Any]) -> str:
    parts = []
    for item in items:
        if isinstance(item, list):
            parts.append(_format_array(item))
        elif item is None:
            parts.append("NULL")
        else:
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


# -- numeric binary helpers ------------------------------------------------------------------

_NUMERIC_NEG = 0x4000


def _numeric_text(value: bytes) -> str:
    """The decimal text of a binary ``numeric`` (base-10000 digits, weight, sign, scale)."""
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", value, 0)
    if sign not in (0, _NUMERIC_NEG):
        return "NaN"
    digits = struct.unpack_from(f"!{ndigits}H", value, 8)
    number = Decimal(0)
    for index, digit in enumerate(digits):
        number += Decimal(digit) * Decimal(10000) ** (weight - index)
    if sign == _NUMERIC_NEG:
        number = -number
    return f"{number:.{dscale}f}"


def _numeric_binary(number: int) -> bytes:
    """The binary ``numeric`` form of an integer."""
    sign = _NUMERIC_NEG if number < 0 else 0
    number = abs(number)
    groups: list[int] = []
    while number:
        number, group = divmod(number, 10000)
        groups.insert(0, group)
    weight = len(groups) - 1 if groups else 0
    while groups and groups[-1] == 0:
        groups.pop()
    return struct.pack(f"!hhHH{len(groups)}H", len(groups), weight, sign, 0, *groups)
