"""What one pgbench ``-S`` transaction costs the PostgreSQL session in Python, without sockets.

One logged-in ``ClientSession`` is fed, per transaction, the Query pgbench sends and the answer
PostgreSQL gives (RowDescription, DataRow, CommandComplete, ReadyForQuery) through
``StringTransport``s, as the gateway's reactor would; what is measured is the session's own
work: framing, tracking, the ledger, the plugin chain and, with ``--recording``, the
``recording`` plugin, the gateway's ``AuditWriter`` and the encoding of its records. The writer
process is a stand-in that answers ``ok`` for every line sent, after the client's message was
handled, as the real process's answer arrives in a later reactor turn (no process, no pipe).
``--full`` adds ``guardrails`` (preset ``agent-readonly``) and ``masking`` (its defaults) to
``recording``, and each Query then carries a new literal, as pgbench's do. Deterministic enough
for ``valgrind --tool=callgrind`` on a shared machine::

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
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger

from hoopgw.audit.writer import AuditWriter, WriterProcessLines
from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import PluginContext, load_plugin_class, validate_options
from hoopgw.protocol import ConnectionRuntime
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import ConnectionInfo
from hoopgw.store.sqlite import SQLiteStore

QUERY_TEXT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
QUERY = m.Query(query=QUERY_TEXT.format(12345)).encode()
QUERIES = [m.Query(query=QUERY_TEXT.format(1 + i * 7919 % 1000000)).encode() for i in range(997)]
"""With ``--full``: pgbench ``-S`` sends a new literal every time (997 of them, in turn)."""
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
CHAINS: dict[str, dict[str, dict[str, Any]]] = {
    "bare": {},
    "recording": {"recording": {"sample_rows": 0}},
    "full": {
        "recording": {"sample_rows": 0},
        "guardrails": {"preset": "agent-readonly"},
        "masking": {},
    },
}
"""The plugins (and their options) of each measured chain, as ``./dev bench`` configures its
``hoopgw-bare``, ``hoopgw-os`` and ``hoopgw-full`` targets."""


class _Upstream:
    """Stands in for the upstream connection: a transport the session writes to."""

    def __init__(self) -> None:
        self.transport = StringTransport()

    def close(self) -> None:
        """Nothing to close."""


class _WriterProcess:
    """Stands in for the audit writer process: takes the lines the ``AuditWriter`` sends and
    answers ``ok`` for all of them when :meth:`answer` is called."""

    def __init__(self, lines: protocol.ProcessProtocol) -> None:
        self._lines = lines
        self._unanswered = 0

    def writeSequence(self, lines: list[bytes]) -> None:
        """Take lines (the real process would journal them)."""
        self._unanswered += len(lines)

    def closeStdin(self) -> None:
        """Nothing to close."""

    def answer(self) -> None:
        """Answer for every line sent so far, as the process's stdout would."""
        if self._unanswered:
            count, self._unanswered = self._unanswered, 0
            self._lines.outReceived(b"ok %d\n" % count)


def audit_writer(clock: MemoryReactorClock) -> tuple[AuditWriter, _WriterProcess]:
    """A started ``AuditWriter`` whose process is a :class:`_WriterProcess`."""
    processes: list[_WriterProcess] = []

    def spawn(lines: protocol.ProcessProtocol, store_url: str, reactor: Any) -> _WriterProcess:
        processes.append(_WriterProcess(lines))
        return processes[0]

    writer = AuditWriter("sqlite::memory:", clock, spawn=spawn)
    writer.start()
    assert isinstance(processes[0]._lines, WriterProcessLines)
    processes[0]._lines.outReceived(b"ready\n")
    return writer, processes[0]


def logged_in_session(
    chain: str,
) -> tuple[ClientSession, StringTransport, _Upstream, _WriterProcess | None]:
    """A session past login on a loopback client, with the plugins of ``chain``."""
    clock = MemoryReactorClock()
    store = SQLiteStore(":memory:")
    store.migrate()
    keys = KeyService(store)
    secret, _ = keys.create("bench", ["bench"], now=time.time())
    info = ConnectionInfo(name="pg", protocol="postgres", target="127.0.0.1:5432")
    writer, process = audit_writer(clock) if CHAINS[chain] else (None, None)
    plugins: list[tuple[str, object]] = []
    for name, options in CHAINS[chain].items():
        cls: Any = load_plugin_class(name)
        context = PluginContext(
            connection=info,
            options=validate_options(name, cls.options, options, connection="pg"),
            audit=writer,
            log=Logger(),
            reactor=clock,
        )
        plugins.append((name, cls(context)))
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
        info=info,
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
    if process is not None:
        process.answer()  # the session_started record is in the journal
    if session.session is None:
        raise RuntimeError(f"login failed: {transport.value()!r}")
    transport.clear()
    return session, transport, upstream, process


def run(count: int, *, chain: str) -> float:
    """Run ``count`` transactions after a warm-up; return the CPU seconds they took."""
    session, transport, upstream, process = logged_in_session(chain)
    reader = m.MessageReader()
    queries = QUERIES if chain == "full" else [QUERY]
    sent = [0]

    def transaction() -> None:
        session.dataReceived(queries[sent[0] % len(queries)])
        sent[0] += 1
        if process is not None:
            process.answer()  # the command_received record is in the journal
        if not upstream.transport.value():
            raise RuntimeError(f"nothing forwarded: {transport.value()!r}")
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
    plugins = parser.add_mutually_exclusive_group()
    plugins.add_argument("--recording", action="store_true", help="with the recording plugin")
    plugins.add_argument(
        "--full", action="store_true", help="with recording, guardrails and masking"
    )
    parser.add_argument(
        "--count", type=int, help="run this many transactions once, print nothing (callgrind)"
    )
    args: Any = parser.parse_args(argv)
    chain = "full" if args.full else "recording" if args.recording else "bare"
    if args.count is not None:
        run(args.count, chain=chain)
        return 0
    best = min(run(10000, chain=chain) for _ in range(5))
    print(f"{best / 10000 * 1e6:.1f} us CPU per transaction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
