"""Column rules (``schema.table.column`` globs) and the catalog that resolves result columns.

PostgreSQL's RowDescription names a result column's source by number only: the table's OID and
the column's attribute number (zero for a computed column). Its name there may be an alias, so
a rule is matched against the *catalog's* names: :class:`CatalogReader` loads every table
column of the session's database (``pg_attribute`` joined to ``pg_class`` and
``pg_namespace``) over a side connection with the credential given in the masking options, and
:class:`ColumnRules` keeps the ``(table OID, attribute number)`` pairs that a rule matches.

Limits, and how they fail closed:

- a column whose table OID is not in the loaded catalog (a table created after the load) is
  masked whole, as if a rule matched, and the catalog is reloaded before the next command;
- a computed column (``upper(ssn)``, ``ssn || ''``) has no source: rules cannot reach it and
  only the content detectors apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any

from hoopgw_postgres.catalog import CatalogError, read_catalog
from twisted.internet import defer

__all__ = ["CatalogError", "CatalogReader", "ColumnRules", "parse_rule"]

CATALOG_QUERY = (
    "SELECT a.attrelid::int8, a.attnum, n.nspname, c.relname, a.attname"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE a.attnum > 0 AND NOT a.attisdropped"
)


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

    def __init__(
        self,
        reactor: Any,
        *,
        target: str,
        user: str,
        password: str | None,
        sslmode: str,
        timeout: float = 10.0,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        """
        :param connect: opens the side connection's TCP connection (a network agent's, see
            :attr:`hoopgw.plugin.PluginContext.connect_upstream`); None connects directly.
        """
        self._reactor = reactor
        self._connect = connect
        self._target = target
        self._user = user
        self._password = password
        self._sslmode = sslmode
        self._timeout = timeout

    def read(self, database: str) -> defer.Deferred[list[tuple[int, int, str, str, str]]]:
        """The ``(table OID, attnum, schema, table, column)`` rows of ``database``."""

        def rows(raw: list[list[bytes | None]]) -> list[tuple[int, int, str, str, str]]:
            return [
                (
                    int(r[0] or 0),
                    int(r[1] or 0),
                    (r[2] or b"").decode(),
                    (r[3] or b"").decode(),
                    (r[4] or b"").decode(),
                )
                for r in raw
            ]

        return read_catalog(
            self._reactor,
            target=self._target,
            user=self._user,
            password=self._password,
            sslmode=self._sslmode,
            database=database,
            query=CATALOG_QUERY,
            application_name="hoopgw-masking-catalog",
            timeout=self._timeout,
            connect=self._connect,
        ).addCallback(rows)
