"""Column rules (``schema.table.column`` globs) and the catalog that resolves result columns.

A result column names its source by number only (:attr:`~hoopgw.session.Column.table_oid`, the
table's id, and :attr:`~hoopgw.session.Column.column_number`; zero for a computed column), and
its name there may be an alias, so a rule is matched against the *catalog's* names:
:class:`CatalogReader` has the connection's protocol read every table column of the session's
database (:attr:`hoopgw.protocol.ProtocolSpec.read_columns`, over a side connection with the
credential given in the masking options), and :class:`ColumnRules` keeps the ``(table id,
column number)`` pairs that a rule matches. Only protocols that name column sources (PostgreSQL)
can have column rules.

Limits, and how they fail closed:

- a column whose table id is not in the loaded catalog (a table created after the load) is
  masked whole, as if a rule matched, and the catalog is reloaded before the next command;
- a computed column (``upper(ssn)``, ``ssn || ''``) has no source: rules cannot reach it and
  only the content detectors apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from twisted.internet import defer

from hoopgw.protocol import CatalogLogin, ColumnSource, load_protocol

__all__ = ["CatalogReader", "ColumnRules", "parse_rule", "reads_columns"]


def reads_columns(protocol: str) -> bool:
    """Whether the protocol named ``protocol`` can read its target's catalog of columns."""
    try:
        return load_protocol(protocol).read_columns is not None
    except Exception:  # not installed: it reads nothing
        return False


def parse_rule(rule: str) -> tuple[str, str, str]:
    """``col``, ``table.col`` or ``schema.table.col`` (globs) as a (schema, table, column)
    triple, missing parts ``*``.

    :raises ValueError: for an empty part or more than three parts.
    """
    parts = rule.split(".")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"column rule {rule!r} is not [schema.][table.]column")
    while len(parts) < 3:
        parts.insert(0, "*")
    return parts[0], parts[1], parts[2]


class ColumnRules:
    """The rules of one connection, and what they match in one database's catalog."""

    def __init__(self, rules: Iterable[str]) -> None:
        self.rules = tuple(parse_rule(r) for r in rules)
        self._tables: set[int] = set()
        self._masked: set[tuple[int, int]] = set()
        self.loaded = False

    def matches(self, schema: str, table: str, column: str) -> bool:
        """Whether a rule names this column."""
        return any(
            fnmatchcase(schema, s) and fnmatchcase(table, t) and fnmatchcase(column, c)
            for s, t, c in self.rules
        )

    def load(self, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        """Replace the catalog with ``(table OID, attnum, schema, table, column)`` rows."""
        tables: set[int] = set()
        masked: set[tuple[int, int]] = set()
        for table_oid, attnum, schema, table, column in rows:
            tables.add(table_oid)
            if self.matches(schema, table, column):
                masked.add((table_oid, attnum))
        self._tables, self._masked, self.loaded = tables, masked, True

    def decide(self, table_oid: int, attnum: int) -> bool | None:
        """``True`` if the column must be masked whole, ``False`` if no rule applies, ``None``
        if its table is unknown to the loaded catalog (the caller fails closed)."""
        if not table_oid:
            return False
        if not self.loaded or table_oid not in self._tables:
            return None
        return (table_oid, attnum) in self._masked


class CatalogReader:
    """Reads the column catalog of a database over a side connection to the target."""

    def __init__(self, reactor: Any, protocol: str, login: CatalogLogin) -> None:
        read_columns = load_protocol(protocol).read_columns
        if read_columns is None:
            raise ValueError(f"protocol {protocol!r} does not read a catalog of columns")
        self._read_columns = read_columns
        self._reactor = reactor
        self._login = login

    def read(self, database: str) -> defer.Deferred[list[ColumnSource]]:
        """The ``(table id, column number, schema, table, column)`` rows of ``database``."""
        return self._read_columns(self._reactor, self._login, database)
