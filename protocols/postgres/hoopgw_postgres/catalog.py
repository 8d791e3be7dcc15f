"""Catalog questions to the target, asked over a side connection between client messages.

A plugin that must know something only the target's catalog can say (masking: which table
column a result column comes from; guardrails: whether a called function is VOLATILE) logs in
with a credential of its own options, runs one query and closes the connection:
:func:`read_catalog`. The client's session is untouched: nothing is sent on its connection, so
its transaction, its settings and its error state stay as they are.

:class:`FunctionCatalog` answers the guardrails question (:class:`hoopgw.sql.FunctionCatalog`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint

from hoopgw.transport import client_tls_options
from hoopgw_postgres import messages as m
from hoopgw_postgres.analysis import FUNCTION_CLASSES, REVIEWED_VOLATILE
from hoopgw_postgres.upstream import UpstreamConnection

__all__ = ["CatalogError", "CatalogQuery", "FunctionCatalog", "read_catalog"]


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
) -> defer.Deferred[list[list[bytes | None]]]:
    """Run ``query`` (no parameters) in ``database`` of ``target`` (``HOST:PORT``) on a
    connection of its own; the rows as the wire gives them (text format). Fails with
    :class:`CatalogError` or a timeout."""
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
    endpoint: Any = HostnameEndpoint(reactor, host, int(port), timeout=int(timeout))
    connecting = endpoint.connect(_OneProtocol(connection))
    connecting.addErrback(
        lambda f: run.upstream_failed("08006", f"target unreachable: {f.getErrorMessage()}")
    )
    run.done.addTimeout(timeout, reactor)
    return run.done


_FUNCTIONS_QUERY = (
    "SELECT n.nspname, p.proname, CASE WHEN p.prokind = 'a' AND EXISTS ("
    "SELECT 1 FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc f ON f.oid IN"
    " (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn,"
    " a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)"
    " WHERE a.aggfnoid = p.oid AND f.provolatile = 'v') THEN 'v' ELSE p.provolatile END"
    " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
    " WHERE p.proname::text = ANY (ARRAY[{names}]::text[])"
)


def _literal(text: str) -> str:
    """``text`` as an escape-string literal, read alike whatever standard_conforming_strings."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def functions_query(names: Collection[str]) -> str:
    """The query for every function called one of ``names`` (bare names), in any schema.

    An aggregate counts as VOLATILE when any of its support functions is: PostgreSQL records
    aggregates as IMMUTABLE whatever their transition function does.
    """
    # Names reach the text only as escaped literals (the simple Query message has no parameters).
    return _FUNCTIONS_QUERY.replace("{names}", ", ".join(_literal(n) for n in sorted(names)))


def split_name(written: str) -> tuple[str, str]:
    """``(schema, name)`` of a function name as :attr:`StatementFacts.functions` writes it
    (``schema`` empty when unqualified; the analysis refuses names holding a dot)."""
    schema, _, name = written.rpartition(".")
    return schema.rpartition(".")[2], name


def volatile_candidates(
    names: Collection[str], rows: list[tuple[str, str, str]]
) -> dict[str, tuple[str, ...]]:
    """For each written name, the ``schema.name`` of every function it may call that is
    VOLATILE (a reviewed built-in excepted); a name the catalog does not hold maps to itself.

    Every overload in every schema counts for an unqualified name, not only those on the
    search path: a superset that needs no model of the session's search_path.
    """
    answer: dict[str, tuple[str, ...]] = {}
    for written in names:
        schema, name = split_name(written)
        candidates = [r for r in rows if r[1] == name and (not schema or r[0] == schema)]
        if not candidates:
            answer[written] = (written,)
            continue
        answer[written] = tuple(
            sorted(
                f"{nsp}.{proname}"
                for nsp, proname, volatility in candidates
                if volatility == "v"
                and not (
                    nsp == "pg_catalog"
                    and (proname in REVIEWED_VOLATILE or proname in FUNCTION_CLASSES)
                )
            )
        )
    return answer


class FunctionCatalog:
    """Which called functions may be VOLATILE, read from the target's ``pg_proc``."""

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
        self._target = target
        self._user = user
        self._password = password
        self._sslmode = sslmode
        self._timeout = timeout

    def volatile(
        self, database: str, names: Collection[str]
    ) -> defer.Deferred[Mapping[str, tuple[str, ...]]]:
        """See :meth:`hoopgw.sql.FunctionCatalog.volatile`."""
        bare = {split_name(n)[1] for n in names}
        reading = read_catalog(
            self._reactor,
            target=self._target,
            user=self._user,
            password=self._password,
            sslmode=self._sslmode,
            database=database,
            query=functions_query(bare),
            application_name="hoopgw-guardrails-catalog",
            timeout=self._timeout,
        )

        def judged(raw: list[list[bytes | None]]) -> Mapping[str, tuple[str, ...]]:
            rows = [tuple((v or b"").decode() for v in r[:3]) for r in raw]
            return volatile_candidates(names, rows)  # type: ignore[arg-type]

        return reading.addCallback(judged)
