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

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from hoopgw_postgres import messages as m
from hoopgw_postgres.upstream import UpstreamConnection
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint

from hoopgw.transport import client_tls_options

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


class CatalogError(Exception):
    """The catalog could not be read; the message never holds a credential."""


class _CatalogQuery:
    """Logs in over an :class:`UpstreamConnection`, runs one query, collects its rows."""

    def __init__(self, query: str) -> None:
        self._query = query
        self.done: defer.Deferred[list[list[bytes | None]]] = defer.Deferred()
        self.rows: list[list[bytes | None]] = []
        self.connection: UpstreamConnection | None = None
        self._error = ""

    def upstream_ready(
        self, parameters: list[bytes], backend_key: tuple[int, bytes], tls: bool
    ) -> None:
        assert self.connection is not None
        self.connection.send(m.Query(query=self._query).encode())

    def upstream_failed(self, code: str, message: str) -> None:
        if not self.done.called:
            self.done.errback(CatalogError(message))

    def upstream_messages(self, frames: list[Any]) -> None:
        for frame in frames:
            if frame.type == b"D":
                self.rows.append(m.decode_data_row(frame.body))
            elif frame.type == b"E":
                self._error = m.ErrorResponse.decode(frame.body).fields.get("M", "error")
            elif frame.type == b"Z" and not self.done.called:
                assert self.connection is not None
                self.connection.close()
                if self._error:
                    self.done.errback(CatalogError(f"catalog query failed: {self._error}"))
                else:
                    self.done.callback(self.rows)

    def upstream_closed(self) -> None:
        if not self.done.called:
            self.done.errback(CatalogError("the target closed the catalog connection"))


class _OneProtocol(protocol.Factory):
    noisy = False

    def __init__(self, proto: protocol.Protocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self._proto


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
    ) -> None:
        self._reactor = reactor
        host, _, port = target.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._user = user
        self._password = password
        self._sslmode = sslmode
        self._timeout = timeout

    def read(self, database: str) -> defer.Deferred[list[tuple[int, int, str, str, str]]]:
        """The ``(table OID, attnum, schema, table, column)`` rows of ``database``."""
        query = _CatalogQuery(CATALOG_QUERY)
        connection = UpstreamConnection(
            query,
            user=self._user,
            password=self._password,
            params={"database": database, "application_name": "hoopgw-masking-catalog"},
            sslmode=self._sslmode,
            tls_options=None
            if self._sslmode == "disable"
            else client_tls_options(self._sslmode, self._host, None),
        )
        query.connection = connection
        endpoint: Any = HostnameEndpoint(
            self._reactor, self._host, self._port, timeout=int(self._timeout)
        )
        connecting = endpoint.connect(_OneProtocol(connection))
        connecting.addErrback(
            lambda f: query.upstream_failed("08006", f"target unreachable: {f.getErrorMessage()}")
        )
        query.done.addTimeout(self._timeout, self._reactor)

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

        return query.done.addCallback(rows)
