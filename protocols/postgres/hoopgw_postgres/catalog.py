"""Catalog questions to the target, asked over a side connection between client messages.

A plugin that must know something only the target's catalog can say (masking: which table
column a result column comes from; guardrails: whether a called function is VOLATILE) logs in
with a credential of its own options, runs one query and closes the connection:
:func:`read_catalog`. The client's session is untouched: nothing is sent on its connection, so
its transaction, its settings and its error state stay as they are.

:class:`FunctionCatalog` answers the guardrails question (:class:`hoopgw.sql.FunctionCatalog`);
:func:`read_columns` the masking one (:attr:`hoopgw.protocol.ProtocolSpec.read_columns`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint

from hoopgw.protocol import CatalogLogin, ColumnSource
from hoopgw.transport import client_tls_options
from hoopgw_postgres import messages as m
from hoopgw_postgres.analysis import FUNCTION_CLASSES, REVIEWED_VOLATILE, SQL_JSON_FUNCTIONS
from hoopgw_postgres.upstream import UpstreamConnection

__all__ = [
    "CatalogError",
    "CatalogQuery",
    "FunctionCatalog",
    "opaque_candidates",
    "read_catalog",
    "read_columns",
]

COLUMNS_QUERY = (
    "SELECT a.attrelid::int8, a.attnum, n.nspname, c.relname, a.attname"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE a.attnum > 0 AND NOT a.attisdropped"
)
"""Every table column of a database (``pg_attribute`` joined to ``pg_class`` and
``pg_namespace``): RowDescription names a result column's source by the table's OID and the
column's attribute number only, and its name there may be an alias."""


class CatalogError(Exception):
    """The catalog could not be read; the message never holds a credential."""


class CatalogQuery:
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

    def upstream_messages(self, block: bytes, starts: list[int]) -> None:
        for frame in m.split_messages(block, starts):
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


def read_catalog(
    reactor: Any,
    *,
    target: str,
    user: str,
    password: str | None,
    sslmode: str,
    database: str,
    query: str,
    application_name: str,
    timeout: float = 10.0,
    connect: Callable[..., Any] | None = None,
) -> defer.Deferred[list[list[bytes | None]]]:
    """Run ``query`` (no parameters) in ``database`` of ``target`` (``HOST:PORT``) on a
    connection of its own; the rows as the wire gives them (text format). Fails with
    :class:`CatalogError` or a timeout.

    :param connect: opens the TCP connection (``connect(host, port, protocol, timeout=...)``,
        a network agent's); None connects directly."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    run = CatalogQuery(query)
    connection = UpstreamConnection(
        run,
        user=user,
        password=password,
        params={
            "database": database,
            "application_name": application_name,
            "client_encoding": "UTF8",
        },
        sslmode=sslmode,
        tls_options=None if sslmode == "disable" else client_tls_options(sslmode, host, None),
    )
    run.connection = connection
    if connect is None:
        endpoint: Any = HostnameEndpoint(reactor, host, int(port), timeout=int(timeout))
        connecting = endpoint.connect(_OneProtocol(connection))
    else:
        connecting = connect(host, int(port), connection, timeout=timeout)
    connecting.addErrback(
        lambda f: run.upstream_failed("08006", f"target unreachable: {f.getErrorMessage()}")
    )
    run.done.addTimeout(timeout, reactor)
    return run.done


# Every function a called name, a read relation or a field name may reach: each candidate
# itself, and what it depends on (pg_depend, normal dependencies: the functions and operators of
# a SQL-standard function body, an aggregate's support functions, an operator's function), a
# relation's rewrite rules (a view's query) and row-level security policies, a type's domain
# constraints and the casts to it (and what those reach: a superset), recursively.
# Language handlers are not followed: a function's language is judged by its shape.
_REACH_QUERY = """
WITH RECURSIVE
roots(kind, root_nsp, root_name, root_nargs, classid, objid) AS (
  SELECT 'function', n.nspname::text, p.proname::text, p.pronargs::int,
         'pg_catalog.pg_proc'::regclass::oid, p.oid
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
   WHERE p.proname::text = ANY (ARRAY[{functions}]::text[])
  UNION ALL
  SELECT 'operator', n.nspname::text, o.oprname::text, 0,
         'pg_catalog.pg_operator'::regclass::oid, o.oid
    FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
   WHERE o.oprname::text = ANY (ARRAY[{operators}]::text[])
  UNION ALL
  SELECT 'relation', n.nspname::text, c.relname::text, 0,
         'pg_catalog.pg_class'::regclass::oid, c.oid
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relname::text = ANY (ARRAY[{relations}]::text[])
  UNION ALL
  SELECT 'type', n.nspname::text, t.typname::text, 0,
         'pg_catalog.pg_type'::regclass::oid, t.oid
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typname::text = ANY (ARRAY[{types}]::text[])
),
edges(classid, objid, refclassid, refobjid) AS (
  SELECT classid, objid, refclassid, refobjid FROM pg_catalog.pg_depend
   WHERE deptype = 'n' AND refclassid <> 'pg_catalog.pg_language'::regclass
  UNION ALL
  SELECT 'pg_catalog.pg_class'::regclass::oid, ev_class, 'pg_catalog.pg_rewrite'::regclass::oid, oid
    FROM pg_catalog.pg_rewrite
  UNION ALL
  SELECT 'pg_catalog.pg_class'::regclass::oid, polrelid, 'pg_catalog.pg_policy'::regclass::oid, oid
    FROM pg_catalog.pg_policy
  UNION ALL
  SELECT 'pg_catalog.pg_type'::regclass::oid, contypid,
         'pg_catalog.pg_constraint'::regclass::oid, oid
    FROM pg_catalog.pg_constraint WHERE contypid <> 0
  UNION ALL
  SELECT 'pg_catalog.pg_type'::regclass::oid, casttarget, 'pg_catalog.pg_cast'::regclass::oid, oid
    FROM pg_catalog.pg_cast
),
reached(kind, root_nsp, root_name, root_nargs, classid, objid) AS (
  SELECT * FROM roots
  UNION
  SELECT r.kind, r.root_nsp, r.root_name, r.root_nargs, e.refclassid, e.refobjid
    FROM reached r JOIN edges e ON e.classid = r.classid AND e.objid = r.objid
)
SELECT kind, root_nsp, root_name, root_nargs, NULL, NULL, NULL, NULL FROM roots
UNION ALL
SELECT r.kind, r.root_nsp, r.root_name, r.root_nargs, n.nspname, p.proname, p.provolatile,
       p.prokind = 'a' OR l.lanname IN ('c', 'internal')
       OR (l.lanname = 'sql' AND p.prosqlbody IS NOT NULL)
  FROM reached r
  JOIN pg_catalog.pg_proc p
    ON r.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = r.objid
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
"""


def read_columns(
    reactor: Any, login: CatalogLogin, database: str
) -> defer.Deferred[list[ColumnSource]]:
    """Every table column of ``database`` as ``(table OID, attnum, schema, table, column)``:
    PostgreSQL's :attr:`~hoopgw.protocol.ProtocolSpec.read_columns`. Fails with
    :class:`CatalogError` or a timeout."""

    def rows(raw: list[list[bytes | None]]) -> list[ColumnSource]:
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
        reactor,
        target=login.target,
        user=login.user,
        password=login.password,
        sslmode=login.sslmode,
        database=database,
        query=COLUMNS_QUERY,
        application_name=login.application_name,
        timeout=login.timeout,
        connect=login.connect,
    ).addCallback(rows)


def _literal(text: str) -> str:
    """``text`` as an escape-string literal, read alike whatever standard_conforming_strings."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def reach_query(
    functions: Collection[str],
    relations: Collection[str],
    operators: Collection[str] = (),
    types: Collection[str] = (),
) -> str:
    """The query for everything that functions, relations, operators and types (casts to
    them) of these bare names may run."""

    def listed(names: Collection[str]) -> str:
        # Names reach the text only as escaped literals (a simple Query has no parameters).
        return ", ".join(_literal(n) for n in sorted(names)) or "NULL"

    return (
        _REACH_QUERY.replace("{functions}", listed(functions))
        .replace("{operators}", listed(operators))
        .replace("{relations}", listed(relations))
        .replace("{types}", listed(types))
    )


def split_name(written: str) -> tuple[str, str]:
    """``(schema, name)`` of a name as :class:`~hoopgw.sql.StatementFacts` writes it
    (``schema`` empty when unqualified; the analysis refuses function names holding a dot)."""
    schema, _, name = written.rpartition(".")
    return schema.rpartition(".")[2], name


Row = tuple[str, str, str, int, str, str, str, bool]
"""A row of the reach query: kind, root schema, root name, root argument count, then the
schema, name and volatility of a function the root reaches (itself included), and whether that
function's code is known: compiled (``c``, ``internal``; only a superuser installs it), an
aggregate, or a SQL-standard body. Every root also has a row with empty function fields."""


def _unjudgeable(nsp: str, proname: str, volatility: str, known: bool) -> bool:
    """Whether a reached function may run code the gateway cannot judge.

    A built-in counts when VOLATILE and not reviewed read-only. Any other function counts
    unless it is STABLE or IMMUTABLE *and* its code is known: PostgreSQL keeps a non-volatile
    function's own statements from changing data, but not the VOLATILE functions it calls, and
    only an aggregate or a SQL-standard body (``BEGIN ATOMIC``, ``RETURN``) records its calls.
    Compiled functions are taken at their declared volatility (the server plans by it too).
    """
    if nsp == "pg_catalog":
        return volatility == "v" and proname not in REVIEWED_VOLATILE
    return volatility == "v" or not known


def opaque_candidates(
    kind: str, names: Collection[str], rows: list[Row]
) -> dict[tuple[str, str], tuple[str, ...]]:
    """For each written name of ``kind``, the ``schema.name`` of every candidate that may run
    code the gateway cannot judge (see :meth:`hoopgw.sql.FunctionCatalog.opaque`).

    Every overload in every schema counts for an unqualified name, not only those on the
    search path: a superset that needs no model of the session's search_path.
    """
    root_kind = "function" if kind == "field" else kind
    answer: dict[tuple[str, str], tuple[str, ...]] = {}
    for written in names:
        schema, name = split_name(written)
        mine = [
            r
            for r in rows
            if r[0] == root_kind
            and r[2] == name
            and (not schema or r[1] == schema)
            and (kind != "field" or r[3] == 1)
        ]
        if not mine and kind in ("function", "operator"):
            answer[(kind, written)] = () if name in SQL_JSON_FUNCTIONS else (written,)
            continue
        flagged = set()
        for _kind, root_nsp, root_name, _nargs, nsp, proname, volatility, parsed in mine:
            if not nsp:
                continue  # the row that says the root exists
            if root_nsp == nsp == "pg_catalog" and root_name == proname:
                if proname in FUNCTION_CLASSES:
                    continue  # classified by name in the statement itself
            if _unjudgeable(nsp, proname, volatility, parsed):
                flagged.add(f"{root_nsp}.{root_name}")
        answer[(kind, written)] = tuple(sorted(flagged))
    return answer


class FunctionCatalog:
    """What the target's catalog says about the code a statement may run."""

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
        self._reactor = reactor
        self._connect = connect
        self._target = target
        self._user = user
        self._password = password
        self._sslmode = sslmode
        self._timeout = timeout

    def opaque(
        self,
        database: str,
        *,
        functions: Collection[str],
        relations: Collection[str],
        fields: Collection[str],
        operators: Collection[str],
        types: Collection[str] = (),
    ) -> defer.Deferred[Mapping[tuple[str, str], tuple[str, ...]]]:
        """See :meth:`hoopgw.sql.FunctionCatalog.opaque`."""
        bare_functions = {split_name(n)[1] for n in (*functions, *fields)}
        bare_relations = {split_name(n)[1] for n in relations}
        reading = read_catalog(
            self._reactor,
            target=self._target,
            user=self._user,
            password=self._password,
            sslmode=self._sslmode,
            database=database,
            query=reach_query(
                bare_functions,
                bare_relations,
                {split_name(n)[1] for n in operators},
                {split_name(n)[1] for n in types},
            ),
            application_name="hoopgw-guardrails-catalog",
            timeout=self._timeout,
            connect=self._connect,
        )

        def judged(raw: list[list[bytes | None]]) -> Mapping[tuple[str, str], tuple[str, ...]]:
            rows: list[Row] = []
            for r in raw:
                text = [(v or b"").decode() for v in r]
                rows.append(
                    (
                        text[0],
                        text[1],
                        text[2],
                        int(text[3] or 0),
                        text[4],
                        text[5],
                        text[6],
                        text[7] == "t",
                    )
                )
            return {
                **opaque_candidates("function", functions, rows),
                **opaque_candidates("relation", relations, rows),
                **opaque_candidates("field", fields, rows),
                **opaque_candidates("operator", operators, rows),
                **opaque_candidates("type", types, rows),
            }

        return reading.addCallback(judged)
