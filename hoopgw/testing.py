"""Helpers for testing hoopgw plugins without a network, a store or real time.

A plugin author's test usually looks like this::

    from hoopgw.testing import ScriptedClient

    def test_blocks_drop():
        client = ScriptedClient.for_plugin(MyPlugin, options={"deny": ["drop"]})
        client.connect()
        assert client.run("DROP TABLE t").verdict == Block(reason=..., plugin="myplugin")

:class:`ScriptedClient` calls the hooks in the order a protocol does (connect, session start,
each command's decision, rows, completion, close), through the real :class:`PluginChain`, so
verdict combination and fail-closed behaviour are the gateway's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger

from hoopgw.audit.chain import AuditRecord
from hoopgw.audit.writer import decode_entry, encode_entry
from hoopgw.errors import StoreError
from hoopgw.plugin import PluginContext, hookimpl, validate_options
from hoopgw.records import AuditEntry
from hoopgw.runtime.chain import PluginChain
from hoopgw.session import (
    Column,
    Command,
    CommandOutcome,
    ConnectionInfo,
    Identity,
    SessionInfo,
)
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.verdicts import Allow, Block, Hold, Verdict

__all__ = [
    "FakeApprover",
    "FakeAuditWriter",
    "HookLog",
    "InlineWriterProcess",
    "ScriptedClient",
    "make_command",
    "make_connection",
    "make_session",
]


def make_connection(name: str = "test", protocol: str = "postgres") -> ConnectionInfo:
    """A connection description for tests."""
    return ConnectionInfo(name=name, protocol=protocol, target="127.0.0.1:5432")


def make_session(
    *,
    identity: str = "agent",
    groups: Sequence[str] = ("agents",),
    connection: ConnectionInfo | None = None,
    session_id: str = "00000000-0000-4000-8000-000000000001",
) -> SessionInfo:
    """A session for tests: an API-key identity on a loopback, TLS-less connection."""
    return SessionInfo(
        id=session_id,
        connection=connection or make_connection(),
        identity=Identity(name=identity, groups=frozenset(groups), credential_id="0123456789ab"),
        client_address="127.0.0.1:50000",
        client_tls=False,
        upstream_tls=False,
        started_at=0.0,
    )


def make_command(text: str, *, kind: str = "query", seq: int = 1, session_id: str = "") -> Command:
    """A command for tests."""
    return Command(session_id=session_id or make_session().id, seq=seq, text=text, kind=kind)


class FakeAuditWriter:
    """An in-memory stand-in for :class:`hoopgw.audit.writer.AuditWriter`.

    Records every entry in :attr:`records` with a real hash chain; a write fires with the
    record's ``seq``, as the real writer's does. Set :attr:`failing` to make
    writes fail as an unavailable store would; set :attr:`manual` to hold writes until
    :meth:`flush`, to test what happens before a record is durable.
    """

    def __init__(self) -> None:
        # The real store, in memory: records and their hash chain are exactly the real ones.
        self._store = SQLiteStore(":memory:")
        self._store.migrate()
        self.records: list[AuditRecord] = []
        self.urgent: list[bool] = []
        self.failing = False
        self.manual = False
        self._held: list[tuple[AuditEntry, defer.Deferred[None]]] = []

    def write(self, entry: AuditEntry, *, urgent: bool = True) -> defer.Deferred[None]:
        """Store ``entry`` (or hold it, in manual mode); ``urgent`` is noted in :attr:`urgent`."""
        self.urgent.append(urgent)
        d: defer.Deferred[None] = defer.Deferred()
        self._held.append((entry, d))
        if not self.manual:
            self.flush()
        return d

    def submit(
        self,
        entry: AuditEntry,
        then: Callable[[StoreError | None], object],
        *,
        urgent: bool = True,
    ) -> None:
        """As :meth:`write`, telling ``then`` (see :meth:`AuditWriter.submit
        <hoopgw.audit.writer.AuditWriter.submit>`)."""
        self.write(entry, urgent=urgent).addCallbacks(
            lambda _: then(None), lambda failure: then(failure.value)
        )

    def flush(self) -> None:
        """Make every held entry durable (or fail them all if :attr:`failing`)."""
        held, self._held = self._held, []
        for entry, d in held:
            if self.failing:
                d.errback(StoreError("fake store is failing"))
                continue
            # As the real writer carries it: a text that is not UTF-8 as its exact bytes.
            [record] = self._store.append([decode_entry(encode_entry(entry))])
            self.records.append(record)
            d.callback(None)

    def kinds(self) -> list[str]:
        """Kinds of the stored records, in order."""
        return [r.kind for r in self.records]


class InlineWriterProcess:
    """Runs the audit writer process's work in the test process, on a real store.

    Pass :meth:`spawn` as ``AuditWriter(..., spawn=...)``: what the writer sends is appended to
    the store at once and answered, so a test sees durable records without a child process::

        process = InlineWriterProcess(lambda: migrated_sqlite_store)
        writer = AuditWriter("sqlite:///unused", clock, spawn=process.spawn)
    """

    def __init__(self, open_store: Any = None) -> None:
        """:param open_store: returns a migrated store; by default the URL given to
        :meth:`spawn` is opened and migrated."""
        self._open_store = open_store
        self._store: Any = None
        self._protocol: Any = None

    def spawn(self, process_protocol: Any, store_url: str, reactor: Any) -> InlineWriterProcess:
        """Stand in for :func:`hoopgw.audit.writer.spawn_writer_process`."""
        self._protocol = process_protocol
        if self._open_store is None:
            from hoopgw.store import open_store

            self._store = open_store(store_url)
            self._store.migrate()
        else:
            self._store = self._open_store()
        process_protocol.outReceived(b"ready\n")
        return self

    def writeSequence(self, lines: Sequence[bytes]) -> None:
        """Commit ``lines`` in one transaction and answer, as the process would."""
        try:
            records = self._store.append([decode_entry(line) for line in lines])
        except StoreError as exc:
            self._protocol.outReceived(f"error {len(lines)} {exc}\n".encode())
        else:
            self._protocol.outReceived(f"ok {len(records)}\n".encode())

    def closeStdin(self) -> None:
        """End of input: close the store, and end the process."""
        from twisted.internet.error import ProcessDone
        from twisted.python.failure import Failure

        self._store.close()
        self._protocol.processEnded(Failure(ProcessDone(0)))


class FakeApprover:
    """An approval backend whose reviews the test decides.

    Enable it by passing it in ``extra_plugins`` to :meth:`ScriptedClient.for_plugin`. Each held
    command appends ``(session, command, hold)`` to :attr:`requests`; decide with
    :meth:`approve` or :meth:`deny`.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[SessionInfo, Command, Hold]] = []
        self._pending: list[defer.Deferred[Verdict]] = []
        self.withdrawn = 0

    @hookimpl
    def approval_requested(
        self, session: SessionInfo, command: Command, hold: Hold
    ) -> defer.Deferred[Verdict]:
        """Hold the command until the test decides."""

        def cancelled(_: defer.Deferred[Verdict]) -> None:
            self.withdrawn += 1

        d: defer.Deferred[Verdict] = defer.Deferred(cancelled)
        self.requests.append((session, command, hold))
        self._pending.append(d)
        return d

    def approve(self, index: int = -1) -> None:
        """Approve a pending review (the newest by default)."""
        self._pending.pop(index).callback(Allow(reason="approved"))

    def deny(self, reason: str = "denied", index: int = -1) -> None:
        """Deny a pending review (the newest by default)."""
        self._pending.pop(index).callback(Block(reason=reason))


class HookLog:
    """A plugin that records the command and session hooks a protocol calls, in order.

    Each call appends a tuple to :attr:`events`: ``("decided", text, verdict type name)``,
    ``("completed", text, status)`` or ``("closed", reason)``; a test of a protocol asserts
    the exactly-once contract with it (see :mod:`hoopgw.ledger`).
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    @hookimpl
    def command_decided(self, command: Command, verdict: Verdict) -> None:
        """Record the decision."""
        self.events.append(("decided", command.text, type(verdict).__name__))

    @hookimpl
    def command_completed(self, command: Command, outcome: CommandOutcome) -> None:
        """Record the completion."""
        self.events.append(("completed", command.text, outcome.status))

    @hookimpl
    def session_closed(self, reason: str) -> None:
        """Record the end of the session."""
        self.events.append(("closed", reason))


@attrs.frozen(kw_only=True)
class CommandResult:
    """What :meth:`ScriptedClient.run` observed for one command."""

    verdict: Verdict | None
    """The final verdict, or None while a decision is still pending (a held command)."""
    rows: list[list[bytes | None]]
    """The rows as the client would see them after data hooks."""


class ScriptedClient:
    """Drives a plugin chain the way a protocol would, with a fake clock and audit writer."""

    def __init__(
        self,
        chain: PluginChain,
        *,
        clock: task.Clock,
        audit: FakeAuditWriter,
        session: SessionInfo | None = None,
    ) -> None:
        self.chain = chain
        self.clock = clock
        self.audit = audit
        self.session = session or make_session()
        self._seq = 0
        self.closed = False

    @classmethod
    def for_plugin(
        cls,
        plugin_class: Any,
        options: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        extra_plugins: Sequence[tuple[str, object]] = (),
        approval_timeout: float = 300.0,
        session: SessionInfo | None = None,
    ) -> ScriptedClient:
        """Build one plugin with validated options, as the gateway would, and a client for it.

        :param extra_plugins: further ``(name, instance)`` pairs, e.g. a :class:`FakeApprover`.
        """
        clock = task.Clock()
        audit = FakeAuditWriter()
        plugin_name = name or getattr(plugin_class, "name", plugin_class.__name__.lower())
        values = validate_options(
            plugin_name, plugin_class.options, options or {}, connection="test"
        )
        context = PluginContext(
            connection=make_connection(),
            options=values,
            audit=audit,  # type: ignore[arg-type]
            log=Logger(namespace=f"hoopgw.plugins.{plugin_name}"),
            reactor=clock,
        )
        plugins = [(plugin_name, plugin_class(context)), *extra_plugins]
        chain = PluginChain(plugins, reactor=clock, approval_timeout=approval_timeout)
        return cls(chain, clock=clock, audit=audit, session=session)

    def _result(self, d: defer.Deferred[Any]) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        if not box:
            return None
        return box[0]

    def connect(self) -> Verdict | None:
        """Run ``client_connected`` and ``session_started``; return the first refusal or the
        session's verdict."""
        first = self._result(
            self.chain.decide(
                "client_connected",
                connection=self.session.connection,
                client_address=self.session.client_address,
            )
        )
        if isinstance(first, Block | Hold):
            return first
        return self._result(self.chain.decide("session_started", session=self.session))

    def send(self, text: str, *, kind: str = "query") -> tuple[Command, defer.Deferred[Verdict]]:
        """Send a command; return it and the pending decision (for held commands)."""
        self._seq += 1
        command = Command(session_id=self.session.id, seq=self._seq, text=text, kind=kind)
        command = self.chain.recordable(self.session, command)
        return command, self.chain.decide_command(self.session, command)

    def run(
        self,
        text: str,
        *,
        kind: str = "query",
        columns: Sequence[Column] = (),
        rows: Sequence[Sequence[bytes | None]] = (),
    ) -> CommandResult:
        """Send a command; if allowed, pass ``rows`` through the data hooks and complete it."""
        command, decision = self.send(text, kind=kind)
        verdict = self._result(decision)
        seen: list[list[bytes | None]] = [list(r) for r in rows]
        if isinstance(verdict, Allow):
            cols = list(columns)
            if cols:
                self.chain.hook.result_columns(session=self.session, command=command, columns=cols)
            if seen and self.chain.has_row_hooks:
                self.chain.hook.server_rows(
                    session=self.session, command=command, columns=cols, rows=seen
                )
            outcome = CommandOutcome(status="ok", rows=len(seen))
        else:
            outcome = CommandOutcome(status="blocked" if verdict is not None else "aborted")
        if verdict is not None:
            self.chain.notify(
                "command_completed", session=self.session, command=command, outcome=outcome
            )
        return CommandResult(verdict=verdict, rows=seen)

    def close(self, reason: str = "client closed") -> None:
        """End the session (``session_closed``)."""
        if not self.closed:
            self.closed = True
            self.chain.notify("session_closed", session=self.session, reason=reason)
