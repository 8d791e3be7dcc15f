"""The PostgreSQL protocol as registered in the ``hoopgw.protocols`` entry-point group.

The front end, the statement parser and the side connection are imported when first used, not
when the config is loaded (the loader imports every configured protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hoopgw.connection import ConnectionConfig
from hoopgw.protocol import CatalogLogin, ColumnSource, ConnectionRuntime, ProtocolSpec
from hoopgw.session import UpstreamOptions
from hoopgw.sql import Dialect, LazyDialect
from hoopgw_postgres.values import VALUE_TYPES

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The server factory of one PostgreSQL connection's listener."""
    from hoopgw_postgres.frontend import ClientSessionFactory

    return ClientSessionFactory(runtime)


def inspect_login(connection: ConnectionConfig, options: UpstreamOptions) -> list[str]:
    """See :func:`hoopgw_postgres.privileges.inspect_login`."""
    from hoopgw_postgres.privileges import inspect_login as inspect

    return inspect(connection, options)


def read_columns(reactor: Any, login: CatalogLogin, database: str) -> Deferred[list[ColumnSource]]:
    """See :func:`hoopgw_postgres.catalog.read_columns`."""
    from hoopgw_postgres.catalog import read_columns as read

    return read(reactor, login, database)


def _dialect() -> Dialect:
    from hoopgw_postgres.analysis import PostgresDialect

    return PostgresDialect()


PROTOCOL = ProtocolSpec(
    name="postgres",
    build_factory=build_factory,
    dialect=LazyDialect("postgresql", _dialect),
    enforces=frozenset({"read_only"}),
    inspect_login=inspect_login,
    read_columns=read_columns,
    value_types=VALUE_TYPES,
)
