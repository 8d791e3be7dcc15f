"""Result values in their wire formats, and how to mask inside each.

The plan for a result set is made once, from its column types: the connection's protocol says
how each column's values are encoded (:class:`hoopgw.protocol.ValueTypes`, answering in
:class:`hoopgw.protocol.ValueKind`; PostgreSQL's and MySQL's list the types that provably
cannot carry text, and read any other type as text: fail closed), and :meth:`ValueMasker.kind`
applies the policy (``numeric_columns``, the ``ip`` entity). A protocol that declares no value
types has every value scanned as text.

Formats handled, text (0) and binary (1), by kind (the types are PostgreSQL's, which has them
all; MySQL's are text, JSON, numbers in ASCII and little-endian binary numbers):

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

from hoopgw.errors import PluginError
from hoopgw.protocol import ValueKind, ValueTypes, load_protocol
from hoopgw.session import Column
from hoopgw_masking.engine import Masker

# The kinds, by their short names.
SKIP = ValueKind.SKIP
TEXT = ValueKind.TEXT
JSON = ValueKind.JSON
JSONB = ValueKind.JSONB
JSONPATH = ValueKind.JSONPATH
NUMERIC = ValueKind.NUMERIC
INT8 = ValueKind.INT8
FLOAT8 = ValueKind.FLOAT8
MONEY = ValueKind.MONEY
BITS = ValueKind.BITS
DIGITS = ValueKind.DIGITS
INT8_LE = ValueKind.INT8_LE
DOUBLE_LE = ValueKind.DOUBLE_LE
ADDRESS = ValueKind.ADDRESS
ARRAY = ValueKind.ARRAY
BYTEA = ValueKind.BYTEA
RECORD = ValueKind.RECORD
RANGE = ValueKind.RANGE
MULTIRANGE = ValueKind.MULTIRANGE
OTHER = ValueKind.OTHER

NUMBERS = frozenset(
    {NUMERIC, INT8, FLOAT8, MONEY, BITS, DIGITS, INT8_LE, DOUBLE_LE, RANGE, MULTIRANGE}
)
"""Kinds that are numbers (or ranges of them): scanned for card numbers unless
``numeric_columns`` is off."""


class TextValues:
    """The value types of a protocol that declares none: every column is text."""

    def column_kind(self, column: Column) -> ValueKind:
        """Text."""
        return TEXT

    def type_kind(self, type_oid: int) -> ValueKind:
        """Unknown."""
        return OTHER

    def element_type(self, type_oid: int) -> int | None:
        """None."""
        return None


def value_types(protocol: str) -> ValueTypes:
    """How the protocol named ``protocol`` encodes result values (its
    :attr:`~hoopgw.protocol.ProtocolSpec.value_types`); :class:`TextValues` (every value
    scanned as text) for a protocol that declares none or is not installed."""
    try:
        declared = load_protocol(protocol).value_types
    except PluginError:
        declared = None
    return TextValues() if declared is None else declared


class Refused(Exception):
    """A value held an entity and has no valid masked form, and ``on_invalid`` is ``refuse``.

    The message never holds the value.
    """


class ValueMasker:
    """Masks one value of a given kind and format; ``None`` means unchanged."""

    def __init__(
        self,
        masker: Masker,
        *,
        types: ValueTypes,
        on_invalid: str,
        numeric: bool = True,
        ip: bool = True,
    ) -> None:
        """
        :param types: how the protocol encodes values (its
            :attr:`~hoopgw.protocol.ProtocolSpec.value_types`, or :class:`TextValues`).
        :param on_invalid: ``null`` to send SQL NULL where no valid masked form exists,
            ``refuse`` to raise :class:`Refused`.
        :param numeric: whether numbers are checked for card numbers (``numeric_columns``).
        :param ip: whether ``inet``/``cidr`` values are addresses to mask.
        """
        self.masker = masker
        self._types = types
        self._on_invalid = on_invalid
        self._numeric = numeric
        self._ip = ip

    def kind(self, type_oid: int) -> ValueKind:
        """How values of ``type_oid`` (inside a value: a record's field, an array's element)
        are masked under this policy."""
        return self._policy(self._types.type_kind(type_oid), type_oid)

    def column_kind(self, column: Column) -> ValueKind:
        """How the values of a result column are masked under this policy."""
        return self._policy(self._types.column_kind(column), column.type_oid)

    def _policy(self, kind: ValueKind, type_oid: int) -> ValueKind:
        if kind == ARRAY:
            element = self._types.element_type(type_oid)
            return SKIP if element is not None and self.kind(element) == SKIP else ARRAY
        if kind == ADDRESS:
            return ADDRESS if self._ip else SKIP
        if kind in NUMBERS and not self._numeric:
            return SKIP
        return kind

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
            subtype = self._types.element_type(type_oid)
            if subtype is None:
                raise Refused("a range value of a type without a bound type")
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
            element = self._types.element_type(type_oid)
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

    def _element(
        self, element_oid: int | None, fmt: int, value: bytes, counts: Counter[str]
    ) -> Any:
        if element_oid is None:  # an array type the protocol does not know: text elements
            return self.mask(TEXT, fmt, value, counts)
        return self.mask(self.kind(element_oid), fmt, value, counts, element_oid)

    def _text_array(
        self, value: bytes, element_oid: int | None, counts: Counter[str]
    ) -> bytes | None:
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
