"""PostgreSQL values in their wire formats: which types carry text, and how to mask inside each.

The plan for a result set is made once, from its column types (:func:`kind_of`). The rule is
the reverse of a list of text types: **every value is scanned unless its type provably cannot
carry text** (:data:`NON_TEXT_TYPES`: booleans, ``int2``/``int4``, ``float4``, dates and times,
geometry, ``uuid``, ``bit``, network hardware addresses, ranges of those, ...). Types the gateway
does not know (extensions, enums, domains, composite types) are scanned: fail closed.

Formats handled, text (0) and binary (1):

- text, varchar, bpchar, name, "char", xml, cstring, unknown: UTF-8 text in both formats;
- json: JSON text in both formats; jsonb: JSON text, in binary behind a version byte ``1``;
  strings, object keys and numbers inside are masked one by one and the document re-serialised;
  jsonpath: text, in binary behind a version byte;
- arrays of any type: the ``{...}`` literal in text format, the array structure in binary, each
  element by its own type;
- bytea: the bytes (``\\x`` hex or escape format in text) are scanned as UTF-8 text;
- int8, numeric, float8, money, bit strings, and ranges and multiranges of int8 and numeric
  (unless ``numeric_columns`` is off): the integer they stand for is checked for card numbers;
- records (``row(...)``, composite types): text literal scanned as text; in binary, each field
  by its own type;
- every other type (tsvector, tsquery, extension types, ...): in text format scanned as text;
  in binary format the bytes are scanned as text and, when they hold an entity, the value has
  no valid masked form (``on_invalid``); a binary value that parses as a record or an array
  has its fields or elements masked by their own types.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

from hoopgw_masking.engine import Masker

# Scalar kinds.
SKIP = "skip"
TEXT = "text"
JSON = "json"
JSONB = "jsonb"
JSONPATH = "jsonpath"
NUMERIC = "numeric"
INT8 = "int8"
FLOAT8 = "float8"
MONEY = "money"
BITS = "bits"  # bit, varbit: an integer in base 2 (card_number::bit(64))
DIGITS = "digits"  # a number written in ASCII in either format (MySQL text rows, DECIMAL)
INT8_LE = "int8le"  # MySQL's binary LONGLONG: eight little-endian bytes
DOUBLE_LE = "doublele"  # MySQL's binary DOUBLE: eight little-endian bytes
ADDRESS = "address"
ARRAY = "array"
BYTEA = "bytea"
RECORD = "record"
RANGE = "range"
MULTIRANGE = "multirange"
OTHER = "other"  # a type the gateway does not know: text scanned; binary scanned, never edited

TEXT_TYPES = {25: TEXT, 1043: TEXT, 1042: TEXT, 19: TEXT, 18: TEXT, 142: TEXT, 705: TEXT}
TEXT_TYPES.update({2275: TEXT, 114: JSON, 3802: JSONB, 4072: JSONPATH, 17: BYTEA, 2249: RECORD})
NUMBER_TYPES = {20: INT8, 1700: NUMERIC, 701: FLOAT8, 790: MONEY, 1560: BITS, 1562: BITS}
"""Types that can hold a card number (``float8`` holds integers up to 2**53 exactly; a bit
string is what ``int8`` cast to ``bit(64)`` gives)."""
RANGE_SUBTYPES = {3926: 20, 3906: 1700}  # int8range, numrange
MULTIRANGE_SUBTYPES = {4536: 20, 4532: 1700}  # int8multirange, nummultirange
NON_TEXT_TYPES = frozenset(
    {
        16, 21, 22, 23, 26, 27, 28, 29, 30, 600, 601, 602, 603, 604, 628, 700, 718, 774, 829,
        1082, 1083, 1114, 1184, 1186, 1266, 2278, 2950, 2970, 3220, 3904, 3908, 3910, 3912,
        4451, 4533, 4534, 4535, 5038, 5069,
    }
)  # fmt: skip
"""Types that provably cannot carry text or a card number: bool, int2, int4, oid and the
other system integers (``tid``, ``xid``, ``cid``, vectors of them), float4 (24 bits: no
12-digit number), geometry (floats), macaddr, dates, times and intervals, void,
uuid, snapshots, LSNs, and ranges of int4 and of dates and times."""
ADDRESS_TYPES = frozenset({869, 650})  # inet, cidr
ARRAY_ELEMENTS = {
    1000: 16, 1001: 17, 1002: 18, 1003: 19, 1016: 20, 1005: 21, 1006: 22, 1007: 23, 1008: 24,
    1009: 25, 1028: 26, 1010: 27, 1011: 28, 1012: 29, 1013: 30, 199: 114, 143: 142, 1017: 600,
    1018: 601, 1019: 602, 1020: 603, 1027: 604, 629: 628, 651: 650, 1021: 700, 1022: 701,
    719: 718, 775: 774, 791: 790, 1040: 829, 1041: 869, 1034: 1033, 1014: 1042, 1015: 1043,
    1182: 1082, 1183: 1083, 1115: 1114, 1185: 1184, 1187: 1186, 1270: 1266, 1561: 1560,
    1563: 1562, 1231: 1700, 2201: 1790, 2207: 2202, 2208: 2203, 2209: 2204, 2210: 2205,
    2211: 2206, 2287: 2249, 1263: 2275, 2951: 2950, 2949: 2970, 3221: 3220, 3643: 3614,
    3645: 3615, 3644: 3642, 3735: 3734, 3770: 3769, 3807: 3802, 3905: 3904, 3907: 3906,
    3909: 3908, 3911: 3910, 3913: 3912, 3927: 3926, 4073: 4072, 4090: 4089, 4097: 4096,
    4192: 4191, 6150: 4451, 6151: 4532, 6152: 4533, 6153: 4534, 6155: 4535, 6157: 4536,
    5039: 5038, 271: 5069,
}  # fmt: skip
"""Every built-in array type (``pg_type.typarray``) and its element type."""


# MySQL's column type names (Column.type_name, set by the MySQL front end) that cannot carry
# text: integers, floats, dates and times (fixed-width or packed in binary rows), BIT, GEOMETRY.
MYSQL_NON_TEXT = frozenset(
    {
        "TINY", "SHORT", "LONG", "FLOAT", "DOUBLE", "NULL", "TIMESTAMP", "LONGLONG", "INT24",
        "DATE", "TIME", "DATETIME", "YEAR", "NEWDATE", "BIT", "TIMESTAMP2", "DATETIME2", "TIME2",
        "DECIMAL", "NEWDECIMAL", "GEOMETRY",
    }
)  # fmt: skip
MYSQL_NUMBERS = frozenset({"LONGLONG", "DECIMAL", "NEWDECIMAL", "DOUBLE"})
"""MySQL types that can hold a card number, scanned unless ``numeric_columns`` is off."""


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
    if type_oid in NUMBER_TYPES:
        return NUMBER_TYPES[type_oid] if numeric else SKIP
    if type_oid in RANGE_SUBTYPES:
        return RANGE if numeric else SKIP
    if type_oid in MULTIRANGE_SUBTYPES:
        return MULTIRANGE if numeric else SKIP
    if type_oid in NON_TEXT_TYPES:
        return SKIP
    # Not known to be unable to carry text: tsvector, tsquery, reg* names, an extension's
    # type, an enum, a domain, a composite type: scanned (fail closed).
    return OTHER


def mysql_kind(type_name: str, fmt: int, *, numeric: bool) -> str:
    """How values of a MySQL column type (its protocol name) are masked in format ``fmt``
    (0 text rows, 1 binary rows of prepared statements)."""
    if type_name == "JSON":
        return JSON  # JSON text in both formats
    if numeric and type_name in MYSQL_NUMBERS:
        if fmt == 1 and type_name in ("LONGLONG", "DOUBLE"):
            return INT8_LE if type_name == "LONGLONG" else DOUBLE_LE
        return DIGITS
    if type_name in MYSQL_NON_TEXT:
        return SKIP
    return TEXT  # strings, blobs, ENUM, SET, and codes the gateway does not know: fail closed


class ValueMasker:
    """Masks one value of a given kind and format; ``None`` means unchanged."""

    def __init__(
        self, masker: Masker, *, on_invalid: str, numeric: bool = True, ip: bool = True
    ) -> None:
        """
        :param on_invalid: ``null`` to send SQL NULL where no valid masked form exists,
            ``refuse`` to raise :class:`Refused`.
        :param numeric: whether numbers are checked for card numbers (``numeric_columns``).
        :param ip: whether ``inet``/``cidr`` values are addresses to mask.
        """
        self.masker = masker
        self._on_invalid = on_invalid
        self._numeric = numeric
        self._ip = ip

    def kind(self, type_oid: int) -> str:
        """How values of ``type_oid`` are masked under this policy."""
        return kind_of(type_oid, numeric=self._numeric, ip=self._ip)

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
        if kind == TEXT or (fmt == 0 and kind in (RECORD, OTHER, JSONPATH)):
            return self._text(value, counts)
        if kind == JSONPATH:
            if value[:1] != b"\x01":
                raise Refused("unknown jsonpath binary version")
            result = self._text(value[1:], counts)
            return b"\x01" + result if isinstance(result, bytes) else result
        if kind == BYTEA:
            return self._bytea(value, fmt, counts)
        if kind == RECORD:
            return self._record(value, counts)
        if kind == OTHER:
            return self._opaque(value, counts)
        if kind in (RANGE, MULTIRANGE):
            if fmt == 0:
                return self._text_range(value, counts)
            subtype = (RANGE_SUBTYPES | MULTIRANGE_SUBTYPES)[type_oid]
            if kind == RANGE:
                return self._binary_range(value, subtype, counts)
            return self._binary_multirange(value, subtype, counts)
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
        if kind in (NUMERIC, INT8, FLOAT8, MONEY, DIGITS, INT8_LE, DOUBLE_LE):
            return self._number(kind, fmt, value, counts)
        if kind == BITS:
            return self._bits(value, fmt, counts)
        return None

    def _text(self, value: bytes, counts: Counter[str]) -> bytes | bool | None:
        text = value.decode("utf-8", "surrogateescape")
        masked = self.masker.mask(text, counts)
        if self.hidden(text if masked is None else masked, counts):
            return False
        return None if masked is None else masked.encode("utf-8", "surrogateescape")

    def hidden(self, text: str, counts: Counter[str]) -> bool:
        """Whether ``text`` (already masked) still holds an entity behind escapes -- JSON's
        ``\\u0040`` (in JSON text inside a record's or an array's literal, or stored as text),
        XML's ``&#64;`` -- which cannot be masked in place: then the value has no valid masked
        form (``None`` is returned by :meth:`invalid`, or :class:`Refused` raised)."""
        decoded = unescaped(text)
        if decoded is None:
            return False
        found: Counter[str] = Counter()
        if self.masker.mask(decoded, found) is None:
            return False
        counts.update(found)
        self.invalid(next(iter(found)))
        return True

    # -- bytea, records, ranges and unknown binary forms -------------------------------------

    def _bytea(self, value: bytes, fmt: int, counts: Counter[str]) -> bytes | bool | None:
        """Bytes scanned as UTF-8 text; in text format sent back in hex."""
        raw = _bytea_decode(value) if fmt == 0 else value
        masked = self._text(raw, counts)
        if not isinstance(masked, bytes) or fmt == 1:
            return masked
        return b"\\x" + masked.hex().encode("ascii")

    def _record(self, value: bytes, counts: Counter[str]) -> bytes | None:
        """A binary record: each field masked by its own type."""
        fields = _parse_record(value)
        if fields is None:
            raise Refused("a binary record value is malformed")
        changed = False
        parts = [value[:4]]
        for oid, data in fields:
            if data is not None:
                result = self.mask(self.kind(oid), 1, data, counts, oid)
                if result is False:
                    data, changed = None, True
                elif isinstance(result, bytes):
                    data, changed = result, True
            parts.append(struct.pack("!I", oid))
            parts.append(b"\xff\xff\xff\xff" if data is None else struct.pack("!i", len(data)))
            if data is not None:
                parts.append(data)
        return b"".join(parts) if changed else None

    def _opaque(self, value: bytes, counts: Counter[str]) -> bytes | bool | None:
        """A binary value of a type the gateway does not know. One laid out as a record (a
        composite type) or an array is masked field by field, element by element, by their
        own types (numbers in binary are found there); one that is printable UTF-8 text
        (citext) is masked as text. Otherwise its bytes are scanned as text (every binary
        form keeps strings as their bytes), and an entity there leaves the value no valid
        masked form."""
        structured = None
        if _parse_record(value) is not None:
            structured = self._record(value, counts)
        elif _is_binary_array(value):
            structured = self._binary_array(value, counts)
        elif _printable(value):
            # A binary form that is text (citext, and other types sent as their text): masked
            # in place like text.
            return self._text(value, counts)
        elif self._numeric:
            number = self._binary_number(value, counts)
            if number is not None:
                return number
        result = value if structured is None else structured
        found: Counter[str] = Counter()
        if self.masker.mask(result.decode("utf-8", "surrogateescape"), found) is not None:
            counts.update(found)
            self.invalid(next(iter(found)))
            return False
        return structured

    def _bits(self, value: bytes, fmt: int, counts: Counter[str]) -> bool | None:
        """A bit string read as an unsigned integer (and, 64 bits long, as a signed ``int8``):
        one holding a card number has no valid masked form."""
        if fmt == 0:
            text = value.decode("ascii", "replace")
            if not text or text.strip("01"):
                return None
            size, number = len(text), int(text, 2)
        else:
            (size,) = struct.unpack_from("!i", value, 0)
            data = value[4:]
            number = int.from_bytes(data, "big") >> (8 * len(data) - size) if size > 0 else 0
        if size > 64:
            return None
        candidates = [number]
        if size == 64 and number >= 2**63:
            candidates.append(number - 2**64)
        for candidate in candidates:
            digits = str(abs(candidate))
            if len(digits) >= 12 and self.masker.mask_digits(digits, counts) is not None:
                self.invalid(self._digit_entity(digits))
                return False
        return None

    def _binary_number(self, value: bytes, counts: Counter[str]) -> bytes | bool | None:
        """An unknown binary value laid out as an ``int8`` (eight bytes) or a ``numeric``,
        masked as one when it holds a card number: a field of a domain over one of them inside
        a binary record carries the domain's OID, which the gateway does not know."""
        if len(value) == 8:
            kind = INT8
        elif len(value) >= 8 and len(value) == 8 + 2 * struct.unpack_from("!h", value, 0)[0]:
            kind = NUMERIC
        else:
            return None
        try:
            result: bytes | bool | None = self._number(kind, 1, value, counts)
        except (struct.error, InvalidOperation, ValueError):
            return None
        return result

    def _text_range(self, value: bytes, counts: Counter[str]) -> bytes | bool | None:
        """A range or multirange of numbers in text format: each bound checked as a number."""
        text = value.decode("ascii", "replace")
        invalid = [False]
        changed = [False]

        def bound(match: re.Match[str]) -> str:
            result = self._number(NUMERIC, 0, match.group().encode("ascii"), counts)
            if result is False:
                invalid[0] = True
            elif isinstance(result, bytes):
                changed[0] = True
                return result.decode("ascii")
            return match.group()

        masked = _RANGE_NUMBER.sub(bound, text)
        if invalid[0]:
            return False
        return masked.encode("ascii") if changed[0] else None

    def _binary_range(
        self, value: bytes, subtype: int, counts: Counter[str]
    ) -> bytes | bool | None:
        try:
            flags = value[0]
            position = 1
            bounds: list[bytes] = []
            for absent in (_RANGE_NO_LOWER, _RANGE_NO_UPPER):
                if not flags & absent:
                    (size,) = struct.unpack_from("!i", value, position)
                    bounds.append(value[position + 4 : position + 4 + size])
                    position += 4 + size
            if position != len(value) or any(len(b) == 0 for b in bounds):
                raise IndexError
        except (IndexError, struct.error):
            raise Refused("a binary range value is malformed") from None
        changed = False
        out = [value[:1]]
        for data in bounds:
            result = self.mask(self.kind(subtype), 1, data, counts, subtype)
            if result is False:
                return False  # a range has no NULL bound
            if isinstance(result, bytes):
                data, changed = result, True
            out += [struct.pack("!i", len(data)), data]
        return b"".join(out) if changed else None

    def _binary_multirange(
        self, value: bytes, subtype: int, counts: Counter[str]
    ) -> bytes | bool | None:
        try:
            (count,) = struct.unpack_from("!i", value, 0)
            position = 4
            ranges = []
            for _ in range(count):
                (size,) = struct.unpack_from("!i", value, position)
                ranges.append(value[position + 4 : position + 4 + size])
                position += 4 + size
            if position != len(value):
                raise struct.error
        except struct.error:
            raise Refused("a binary multirange value is malformed") from None
        changed = False
        out = [value[:4]]
        for data in ranges:
            result = self._binary_range(data, subtype, counts)
            if result is False:
                return False
            if isinstance(result, bytes):
                data, changed = result, True
            out += [struct.pack("!i", len(data)), data]
        return b"".join(out) if changed else None

    # -- JSON --------------------------------------------------------------------------------

    def _json(self, value: bytes, counts: Counter[str]) -> bytes | None:
        text = value.decode("utf-8", "surrogateescape")
        if (
            "\\" not in text
            and "&#" not in text
            and not _EXPONENT.search(text)
            and not self.masker.mask(text, Counter())
        ):
            # Nothing to find in the raw text, and no escape or exponent could hide anything.
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
            decoded = unescaped(node if masked is None else masked)
            if decoded is not None:
                # An XML character reference (or a JSON escape written into the string) hides
                # an entity: a JSON string may hold the decoded text, masked.
                masked = self.masker.mask(decoded, counts) or masked
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
        integral = _integral(node)
        if integral is None:
            return node
        digits = integral.lstrip("-")
        found = self.masker.mask_digits(digits, counts)
        if found is None:
            return node
        changed[0] = True
        if found is False:
            entity = self._digit_entity(digits)
            return self.masker.style(entity).text(entity, digits)
        # A JSON number has no leading zeros.
        return _Number(("-" if integral.startswith("-") else "") + str(int(found)))

    def _digit_entity(self, digits: str) -> str:
        for detector in self.masker.detectors:
            if detector.digits_only and detector.pattern.fullmatch(digits):
                return detector.entity
        return "number"

    # -- arrays ------------------------------------------------------------------------------

    def _element(self, element_oid: int, fmt: int, value: bytes, counts: Counter[str]) -> Any:
        return self.mask(self.kind(element_oid), fmt, value, counts, element_oid)

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
        """A number checked for card numbers: the integer it stands for (a fraction does not
        hide one: ``4111111111111111.5``); ``money``, whose text is the locale's, by its
        digits with and without the cents."""
        text = value.decode("ascii", "replace") if kind == DIGITS or fmt == 0 else ""
        if not text:
            if kind == INT8:
                number = struct.unpack("!q", value)[0]
                if -(10**11) < number < 10**11:
                    return None  # fewer than 12 digits: no card number
                text = str(number)
            elif kind == MONEY:
                text = str(struct.unpack("!q", value)[0])
            elif kind == INT8_LE:
                text = str(struct.unpack("<q", value)[0])
            elif kind in (FLOAT8, DOUBLE_LE):
                text = repr(struct.unpack("!d" if kind == FLOAT8 else "<d", value)[0])
            else:
                text = _numeric_text(value)
        if kind == MONEY:
            digits = "".join(c for c in text if c.isdigit())
            for candidate in (digits, digits[:-2] if fmt == 1 or "." in text else digits):
                if candidate and self.masker.mask_digits(candidate, counts) is not None:
                    self.invalid(self._digit_entity(candidate))
                    return False
            return None
        integral = _integral(text)
        if integral is None:
            return None  # NaN, infinities, a number too long for a card
        sign, digits = ("-", integral[1:]) if integral.startswith("-") else ("", integral)
        found = self.masker.mask_digits(digits, counts)
        if found is None:
            return None
        if found is False:
            self.invalid(self._digit_entity(digits))
            return False
        masked = int(sign + str(int(found)))
        if kind == DIGITS or fmt == 0:
            return str(masked).encode("ascii")
        if kind == INT8_LE:
            return struct.pack("<q", masked)
        if kind == INT8:
            return struct.pack("!q", masked)
        if kind in (FLOAT8, DOUBLE_LE):
            return struct.pack("!d" if kind == FLOAT8 else "<d", float(masked))
        return _numeric_binary(masked)


_ESCAPE = re.compile(r"\\+u([0-9A-Fa-f]{4})|&#(?:[xX]([0-9A-Fa-f]{1,6})|([0-9]{1,7}));", re.ASCII)


def _unescape(match: re.Match[str]) -> str:
    hexadecimal = match.group(1) or match.group(2)
    code = int(hexadecimal, 16) if hexadecimal else int(match.group(3))
    if code < 0x20 or code in (0x22, 0x5C, 0x7F) or code >= 0x110000 or 0xD800 <= code < 0xE000:
        # Kept escaped: a control character, a quote or a backslash would change how the
        # surrounding text (a COPY row, a JSON string) is read, and none is part of an entity.
        return match.group()
    return chr(code)


def unescaped(text: str) -> str | None:
    """``text`` with JSON ``\\uXXXX`` escapes (behind any number of backslashes, as a record's
    or an array's literal doubles them) and XML character references of printable characters
    decoded; ``None`` when it has none."""
    if "\\u" not in text and "&#" not in text:
        return None
    decoded = _ESCAPE.sub(_unescape, text)
    return None if decoded == text else decoded


def _integral(text: str) -> str | None:
    """The integer (toward zero) a number's text stands for, or ``None`` when it is not finite
    or has more than 25 digits."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite() or number.adjusted() > 25:
        return None
    return str(int(number))


_EXPONENT = re.compile(r"\d[eE][-+]?\d", re.ASCII)
_RANGE_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Range flags (rangetypes.h) whose presence means the bound is not sent.
_RANGE_NO_LOWER = 0x01 | 0x08 | 0x20  # empty, lower infinite, lower NULL
_RANGE_NO_UPPER = 0x01 | 0x10 | 0x40  # empty, upper infinite, upper NULL


def _parse_record(value: bytes) -> list[tuple[int, bytes | None]] | None:
    """The fields ``(type OID, bytes or None)`` of a binary record, or ``None`` when ``value``
    is not one."""
    try:
        (count,) = struct.unpack_from("!i", value, 0)
        if count < 0:
            return None
        position = 4
        fields: list[tuple[int, bytes | None]] = []
        for _ in range(count):
            oid, size = struct.unpack_from("!Ii", value, position)
            position += 8
            # No type has an OID below 16; an array's flags (0 or 1) sit where a record's
            # first OID would: the two layouts are never confused.
            if oid < 16 or size < -1 or position + max(size, 0) > len(value):
                return None
            fields.append((oid, None if size == -1 else value[position : position + size]))
            position += max(size, 0)
    except struct.error:
        return None
    return fields if position == len(value) else None


_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(value: bytes) -> bool:
    """Whether ``value`` is UTF-8 text without control characters (tab and line ends aside)."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(value) is None


def _is_binary_array(value: bytes) -> bool:
    """Whether ``value`` is laid out as a binary array (dimensions, flags, element OID, then
    exactly the elements its dimensions promise)."""
    try:
        ndim, flags, _oid = struct.unpack_from("!iiI", value, 0)
        if not 0 <= ndim <= 6 or flags not in (0, 1):
            return False
        count = 1 if ndim else 0
        for index in range(ndim):
            (size,) = struct.unpack_from("!i", value, 12 + 8 * index)
            if size < 0:
                return False
            count *= size
        position = 12 + 8 * ndim
        for _ in range(count):
            (size,) = struct.unpack_from("!i", value, position)
            position += 4 + max(size, 0)
    except struct.error:
        return False
    return position == len(value)


def _bytea_decode(value: bytes) -> bytes:
    """The bytes of a text-format ``bytea``: ``\\x`` hex, or the escape format."""
    if value.startswith(b"\\x"):
        try:
            return bytes.fromhex(value[2:].decode("ascii"))
        except ValueError:
            raise Refused("a bytea value is malformed") from None
    out = bytearray()
    position = 0
    while position < len(value):
        byte = value[position]
        if byte == 0x5C and value[position + 1 : position + 2] == b"\\":
            out.append(0x5C)
            position += 2
        elif byte == 0x5C:
            try:
                out.append(int(value[position + 1 : position + 4], 8) & 0xFF)
            except ValueError:
                raise Refused("a bytea value is malformed") from None
            position += 4
        else:
            out.append(byte)
            position += 1
    return bytes(out)


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
