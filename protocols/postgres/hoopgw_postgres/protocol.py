"""The PostgreSQL protocol as registered in the ``hoopgw.protocols`` entry-point group."""

from __future__ import annotations

from twisted.internet import protocol

from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_postgres.analysis import PostgresDialect
from hoopgw_postgres.frontend import ClientSession
from hoopgw_postgres.privileges import inspect_login


class ClientSessionFactory(protocol.Factory):
    """Builds a :class:`ClientSession` for each client accepted on one connection's listener."""

    noisy = False

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime

    def buildProtocol(self, addr: object) -> ClientSession:
        session = ClientSession(self.runtime)
        session.factory = self
        return session


PROTOCOL = ProtocolSpec(
    name="postgres",
    build_factory=ClientSessionFactory,
    dialect=PostgresDialect(),
    enforces=frozenset({"read_only"}),
    inspect_login=inspect_login,
)
