"""MySQL's result value types, as plugins that read values see them (masking).

:data:`VALUE_TYPES` is the protocol's :attr:`hoopgw.protocol.ProtocolSpec.value_types`: how a
column's values are encoded, from the type name the front end gives it
(:attr:`hoopgw.session.Column.type_name`) and its format (0 text rows, 1 binary rows of
prepared statements). Types not known to be unable to carry text (strings, blobs, ``ENUM``,
``SET``, codes the gateway does not know) are text: fail closed.
"""

from __future__ import annotations

from hoopgw.protocol import ValueKind
from hoopgw.session import Column

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
"""MySQL types that can hold a card number."""


class MysqlTypes:
    """MySQL's :class:`hoopgw.protocol.ValueTypes`, by type name."""

    def column_kind(self, column: Column) -> ValueKind:
        """How a result column's values are encoded in its format."""
        name = column.type_name
        if name == "JSON":
            return ValueKind.JSON  # JSON text in both formats
        if name in MYSQL_NUMBERS:
            if column.format == 1 and name == "LONGLONG":
                return ValueKind.INT8_LE
            if column.format == 1 and name == "DOUBLE":
                return ValueKind.DOUBLE_LE
            return ValueKind.DIGITS
        if name in MYSQL_NON_TEXT:
            return ValueKind.SKIP
        return ValueKind.TEXT

    def type_kind(self, type_oid: int) -> ValueKind:
        """MySQL values name no types inside them."""
        return ValueKind.OTHER

    def element_type(self, type_oid: int) -> int | None:
        """MySQL has no array or range types."""
        return None


VALUE_TYPES = MysqlTypes()
"""The protocol's value types (:attr:`hoopgw.protocol.ProtocolSpec.value_types`)."""
