"""PostgreSQL's result value types, as plugins that read values see them (masking).

:data:`VALUE_TYPES` is the protocol's :attr:`hoopgw.protocol.ProtocolSpec.value_types`: how
each built-in type's values are encoded (:class:`hoopgw.protocol.ValueKind`). The rule is the
reverse of a list of text types: **a type may carry text unless it provably cannot**
(:data:`NON_TEXT_TYPES`: booleans, ``int2``/``int4``, ``float4``, dates and times, geometry,
``uuid``, ``bit``, network hardware addresses, ranges of those, ...). Types not listed
(extensions, enums, domains, composite types, ``tsvector``, ``reg*``) are
:attr:`~hoopgw.protocol.ValueKind.OTHER`: read as text, fail closed.
"""

from __future__ import annotations

from hoopgw.protocol import ValueKind
from hoopgw.session import Column

ADDRESS = ValueKind.ADDRESS
ARRAY = ValueKind.ARRAY
BITS = ValueKind.BITS
BYTEA = ValueKind.BYTEA
FLOAT8 = ValueKind.FLOAT8
INT8 = ValueKind.INT8
JSON = ValueKind.JSON
JSONB = ValueKind.JSONB
JSONPATH = ValueKind.JSONPATH
MONEY = ValueKind.MONEY
MULTIRANGE = ValueKind.MULTIRANGE
NUMERIC = ValueKind.NUMERIC
OTHER = ValueKind.OTHER
RANGE = ValueKind.RANGE
RECORD = ValueKind.RECORD
SKIP = ValueKind.SKIP
TEXT = ValueKind.TEXT

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

KINDS: dict[int, ValueKind] = {
    **dict.fromkeys(NON_TEXT_TYPES, SKIP),
    **dict.fromkeys(ADDRESS_TYPES, ADDRESS),
    **dict.fromkeys(RANGE_SUBTYPES, RANGE),
    **dict.fromkeys(MULTIRANGE_SUBTYPES, MULTIRANGE),
    **dict.fromkeys(ARRAY_ELEMENTS, ARRAY),
    **NUMBER_TYPES,
    **TEXT_TYPES,
}
"""Every type the tables above name, and its kind."""


class PostgresTypes:
    """PostgreSQL's :class:`hoopgw.protocol.ValueTypes`, by type OID."""

    def type_kind(self, type_oid: int) -> ValueKind:
        """How values of ``type_oid`` are encoded; :attr:`~hoopgw.protocol.ValueKind.OTHER`
        for a type not known to be unable to carry text (``tsvector``, ``tsquery``, ``reg*``
        names, an extension's type, an enum, a domain, a composite type)."""
        return KINDS.get(type_oid, OTHER)

    def column_kind(self, column: Column) -> ValueKind:
        """How a result column's values are encoded: by its type, except that a record's or
        an unknown type's value in text format is its text literal."""
        kind = self.type_kind(column.type_oid)
        if kind in (OTHER, RECORD) and column.format == 0:
            return TEXT
        return kind

    def element_type(self, type_oid: int) -> int | None:
        """An array type's element type, a range's or multirange's bound type."""
        return (
            ARRAY_ELEMENTS.get(type_oid)
            or RANGE_SUBTYPES.get(type_oid)
            or MULTIRANGE_SUBTYPES.get(type_oid)
        )


VALUE_TYPES = PostgresTypes()
"""The protocol's value types (:attr:`hoopgw.protocol.ProtocolSpec.value_types`)."""
