"""The MySQL protocol as registered in the ``hoopgw.protocols`` entry-point group."""

from __future__ import annotations

from twisted.internet import protocol

from hoopgw.protocol import ConnectionRuntime, ProtocolSpec
from hoopgw_mysql.analysis import MySQLDialect
from hoopgw_mysql.frontend import ClientSession
from hoopgw_mysql.privileges import inspect_login
from hoopgw_mysql.upstream import TargetInfo


class ClientSessionFactory(protocol.Factory):
    """Builds a :class:`ClientSession` for each client accepted on one connection's listener."""

    noisy = False

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        # The target's version and capabilities from its last greeting: the gateway greets
        # the next clients with them, so they negotiate only what the target can do.
        self.target = TargetInfo()

    def buildProtocol(self, addr: object) -> ClientSession:
        session = ClientSession(self.runtime, self.target)
        session.factory = self
        return session


PROTOCOL = ProtocolSpec(
    name="mysql",
    build_factory=ClientSessionFactory,
    dialect=MySQLDialect(),
    enforces=frozenset({"read_only"}),
    inspect_login=inspect_login,
)
