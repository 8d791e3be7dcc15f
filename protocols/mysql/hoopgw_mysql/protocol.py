"""The MySQL protocol as registered in the ``hoopgw.protocols`` entry-point group.

The front end and the statement parser are imported when first used, not when the config is
loaded (the loader imports every configured protocol).
"""

from __future__ import annotations

from typing import Any

from hoopgw.connection import ConnectionConfig
from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw.session import UpstreamOptions
from hoopgw.sql import Dialect, LazyDialect
from hoopgw_mysql.values import VALUE_TYPES


def build_factory(runtime: ConnectionRuntime) -> Any:
    """The server factory of one MySQL connection's listener."""
    from hoopgw_mysql.frontend import ClientSessionFactory

    return ClientSessionFactory(runtime)


def inspect_login(connection: ConnectionConfig, options: UpstreamOptions) -> list[str]:
    """See :func:`hoopgw_mysql.privileges.inspect_login`."""
    from hoopgw_mysql.privileges import inspect_login as inspect

    return inspect(connection, options)


def _dialect() -> Dialect:
    from hoopgw_mysql.analysis import MySQLDialect

    return MySQLDialect()


PROTOCOL = ProtocolSpec(
    name="mysql",
    build_factory=build_factory,
    dialect=LazyDialect("mysql", _dialect),
    enforces=frozenset({"read_only"}),
    inspect_login=inspect_login,
    value_types=VALUE_TYPES,
)
