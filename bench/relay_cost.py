"""What one pgbench ``-S`` transaction costs the PostgreSQL session in Python, without sockets.

One logged-in ``ClientSession`` is fed, per transaction, the Query pgbench sends and the answer
PostgreSQL gives (RowDescription, DataRow, CommandComplete, ReadyForQuery) through
``StringTransport``s, as the gateway's reactor would; what is measured is the session's own
work: framing, tracking, the ledger, the plugin chain and, with ``--recording``, the
``recording`` plugin and the encoding of its records (its writer answers at once: no process,
no pipe). Deterministic enough for ``valgrind --tool=callgrind`` on a shared machine::

    .venv/bin/python bench/relay_cost.py                  # CPU us per transaction (best of 5)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/relay_cost.py --count 1300  # minus the same with --count 300

The instruction count per transaction is the difference of the two runs divided by 1,000.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from hoopgw_postgres import messages as m
from hoopgw_postgres.frontend import ClientSession
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger

from hoopgw.audit.writer import encode_entry
from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.protocol import ConnectionRuntime
from hoopgw.records import AuditEntry
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import ConnectionInfo
from hoopgw.store.sqlite import SQLiteStore

QUERY = m.Query(query="SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").encode()
ANSWER = b"".join(
    message.encode()
    for message in (
        m.RowDescription(
            fields=(
                m.FieldDescription(name="abalance", table_oid=16400, column_attr=3, type_oid=23),
            )
        ),
        m.DataRow(values=(b"0",)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
)
WARM_UP = 300
PARAMETERS = [
    m.ParameterStatus(name=name, value=value).encode()
    for name, value in (
        ("server_version", "15.20"),
        ("client_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
    )
]
"""What PostgreSQL reports at login (the session needs the lexing settings)."""


class _Upstream:
    """Stands in for the upstream connection: a transport the session writes to."""

    def __init__(self) -> None:
        self.transport = StringTransport()

    def close(self) -> None:
        """Nothing to close."""


class _Writer:
    """An audit writer that encodes each entry as the real one does and answers at once."""

    def write(self, entry: AuditEntry, *, urgent: bool = True) -> defer.Deferred[None]:
        encode_entry(entry)
        return defer.succeed(None)


def logged_in_session(*, recording: bool) -> tuple[ClientSession, StringTransport, _Upstream]:
    """A session past login on a loopback client, with ``recording`` on or no plugin."""
    clock = MemoryReactorClock()
    store = SQLiteStore(":memory:")
    store.migrate()
    keys = KeyService(store)
    secret, _ = keys.create("bench", ["bench"], now=time.time())
    plugins: list[tuple[str, object]] = []
    if recording:
        from hoopgw_recording import RecordingPlugin

        context = PluginContext(
            connection=ConnectionInfo(name="pg", protocol="postgres", target="127.0.0.1:5432"),
            options=validate_options(
                "recording", RecordingPlugin.options, {"sample_rows": 0}, connection="pg"
            ),
            audit=_Writer(),  # type: ignore[arg-type]
            log=Logger(),
            reactor=clock,
        )
        plugins.append(("recording", RecordingPlugin(context)))
    config = ConnectionConfig(
        name="pg",
        protocol="postgres",
        listen="tcp:15432:interface=127.0.0.1",
        target="127.0.0.1:5432",
        credential=CredentialConfig(user="postgres"),
        allow_groups=("bench",),
        plugins=tuple(name for name, _ in plugins),
        upstream_tls=UpstreamTlsConfig(sslmode="disable"),
    )
    runtime = ConnectionRuntime(
        config=config,
        gateway=GatewayConfig(),
        info=ConnectionInfo(name="pg", protocol="postgres", target=config.target),
        chain=PluginChain(plugins, reactor=clock),
        authenticator=Authenticator(keys),
        sessions=SessionRegistry(),
        reactor=clock,
    )
    upstream: Any = _Upstream()
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    session = ClientSession(runtime)

    def connect() -> None:
        session.upstream = upstream

    # No target: the answers are fed by hand.
    setattr(session, "_connect_upstream", connect)  # noqa: B010
    session.makeConnection(transport)
    startup = m.StartupMessage(protocol=m.PROTOCOL_3_0, params={"user": "bench"})
    session.dataReceived(startup.encode())
    session.dataReceived(m.PasswordMessage(password=secret).encode())
    session.upstream_ready(list(PARAMETERS), (1, b"key!"), False)
    if session.session is None:
        raise RuntimeError(f"login failed: {transport.value()!r}")
    transport.clear()
    return session, transport, upstream


def run(count: int, *, recording: bool) -> float:
    """Run ``count`` transactions after a warm-up; return the CPU seconds they took."""
    session, transport, upstream = logged_in_session(recording=recording)
    reader = m.MessageReader()

    def transaction() -> None:
        session.dataReceived(QUERY)
        upstream.transport.clear()
        session.upstream_messages(*reader.feed_block(ANSWER))
        transport.clear()

    for _ in range(WARM_UP):
        transaction()
    start = time.process_time()
    for _ in range(count):
        transaction()
    return time.process_time() - start


def main(argv: Sequence[str] | None = None) -> int:
    """Print the CPU microseconds per transaction (best of 5), or run ``--count`` once."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--recording", action="store_true", help="with the recording plugin")
    parser.add_argument(
        "--count", type=int, help="run this many transactions once, print nothing (callgrind)"
    )
    args: Any = parser.parse_args(argv)
    if args.count is not None:
        run(args.count, recording=args.recording)
        return 0
    best = min(run(10000, recording=args.recording) for _ in range(5))
    print(f"{best / 10000 * 1e6:.1f} us CPU per transaction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
