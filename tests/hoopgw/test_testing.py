"""Tests for :mod:`hoopgw.testing`: the helpers plugin authors test with."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from hoopgw.audit.chain import verify_chain
from hoopgw.errors import ConfigError, StoreError
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.records import AuditEntry
from hoopgw.session import Column
from hoopgw.testing import (
    FakeApprover,
    FakeAuditWriter,
    ScriptedClient,
    make_command,
    make_connection,
    make_session,
)
from hoopgw.verdicts import Allow, Block, Hold


class Guard:
    """A small plugin: refuses, holds or masks by keyword, and records what it observed."""

    name = "guard"
    options = (
        Option(name="deny", type=list, help="Words to refuse.", default=[]),
        Option(name="hold", type=list, help="Words to hold.", default=[]),
        Option(name="refuse_session", type=bool, help="Refuse every session.", default=False),
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def session_started(self) -> Any:
        return Block(reason="closed") if self.context.options["refuse_session"] else None

    @hookimpl
    def client_command(self, command: Any) -> Any:
        if any(word in command.text for word in self.context.options["deny"]):
            return Block(reason="denied word")
        if any(word in command.text for word in self.context.options["hold"]):
            return Hold(reason="risky", approvers=("dba",))
        return Allow()

    @hookimpl
    def result_columns(self, columns: list[Column]) -> None:
        self.events.append(("columns", [c.name for c in columns]))

    @hookimpl
    def server_rows(self, rows: list[list[bytes | None]]) -> None:
        for row in rows:
            row[0] = b"***"

    @hookimpl
    def command_decided(self, verdict: Any) -> None:
        self.events.append(("decided", type(verdict).__name__))

    @hookimpl
    def command_completed(self, outcome: Any) -> None:
        self.events.append(("completed", outcome.status))

    @hookimpl
    def session_closed(self, reason: str) -> None:
        self.events.append(("closed", reason))


def plugin_of(client: ScriptedClient) -> Guard:
    return client.chain._pm.get_plugin("guard")  # type: ignore[no-any-return]


def test_factories_make_consistent_values() -> None:
    session = make_session(identity="ci", groups=("ops",))
    assert session.identity.name == "ci"
    assert session.identity.groups == frozenset({"ops"})
    assert session.connection == make_connection()
    command = make_command("SELECT 1", kind="parse", seq=3)
    assert (command.session_id, command.seq, command.kind) == (session.id, 3, "parse")


def test_for_plugin_validates_options_as_the_gateway_does() -> None:
    with pytest.raises(ConfigError) as info:
        ScriptedClient.for_plugin(Guard, {"deny": "drop"})
    assert info.value.key == "guard.deny"


def test_for_plugin_hands_the_plugin_its_context() -> None:
    client = ScriptedClient.for_plugin(Guard, {"deny": ["DROP"]})
    context = plugin_of(client).context
    assert context.options == {"deny": ["DROP"], "hold": [], "refuse_session": False}
    assert context.audit is client.audit
    assert context.reactor is client.clock


def test_connect_returns_the_session_verdict() -> None:
    assert ScriptedClient.for_plugin(Guard).connect() is None
    refused = ScriptedClient.for_plugin(Guard, {"refuse_session": True}).connect()
    assert refused == Block(reason="closed", plugin="guard")


def test_run_allowed_command_passes_rows_through_data_hooks() -> None:
    client = ScriptedClient.for_plugin(Guard)
    result = client.run("SELECT name", columns=[Column("name")], rows=[[b"alice"], [None]])
    assert result.verdict == Allow(plugin="guard")
    assert result.rows == [[b"***"], [b"***"]]
    assert plugin_of(client).events == [
        ("decided", "Allow"),
        ("columns", ["name"]),
        ("completed", "ok"),
    ]


def test_run_blocked_command_reports_blocked_and_no_rows_change() -> None:
    client = ScriptedClient.for_plugin(Guard, {"deny": ["DROP"]})
    result = client.run("DROP TABLE t", rows=[[b"x"]])
    assert result.verdict == Block(reason="denied word", plugin="guard")
    assert result.rows == [[b"x"]]
    assert plugin_of(client).events == [("decided", "Block"), ("completed", "blocked")]


def test_held_command_without_approver_is_refused() -> None:
    client = ScriptedClient.for_plugin(Guard, {"hold": ["DELETE"]})
    verdict = client.run("DELETE FROM t").verdict
    assert isinstance(verdict, Block)
    assert "no approval backend" in verdict.reason


def test_held_command_stays_pending_until_the_fake_approver_decides() -> None:
    approver = FakeApprover()
    client = ScriptedClient.for_plugin(
        Guard, {"hold": ["DELETE"]}, extra_plugins=[("approver", approver)]
    )
    result = client.run("DELETE FROM t")
    assert result.verdict is None
    [(session, command, hold)] = approver.requests
    assert session is client.session
    assert (command.text, command.seq) == ("DELETE FROM t", 1)
    assert hold.approvers == ("dba",)
    approver.deny("no")
    assert plugin_of(client).events == [("decided", "Block")]


def test_fake_approver_approve_and_deny_pick_a_review() -> None:
    approver = FakeApprover()
    client = ScriptedClient.for_plugin(
        Guard, {"hold": ["DELETE"]}, extra_plugins=[("approver", approver)]
    )
    outcomes: list[Any] = []
    for text in ("DELETE a", "DELETE b", "DELETE c"):
        _, decision = client.send(text)
        decision.addCallback(lambda verdict, text=text: outcomes.append((text, verdict)))
    approver.approve(index=0)
    approver.deny("later")
    approver.approve()
    assert outcomes == [
        ("DELETE a", Allow(reason="approved")),
        ("DELETE c", Block(reason="later")),
        ("DELETE b", Allow(reason="approved")),
    ]


def test_scripted_client_clock_drives_the_approval_timeout() -> None:
    approver = FakeApprover()
    client = ScriptedClient.for_plugin(
        Guard, {"hold": ["DELETE"]}, extra_plugins=[("approver", approver)], approval_timeout=10
    )
    _, decision = client.send("DELETE FROM t")
    client.clock.advance(10)
    outcomes: list[Any] = []
    decision.addCallback(outcomes.append)
    assert outcomes == [Block(reason="approval timed out after 10s")]
    assert approver.withdrawn == 1


def test_commands_are_numbered_in_order() -> None:
    client = ScriptedClient.for_plugin(Guard)
    assert [client.send(t)[0].seq for t in ("a", "b", "c")] == [1, 2, 3]


def test_close_reports_session_closed_once() -> None:
    client = ScriptedClient.for_plugin(Guard)
    client.close("gateway stopping")
    client.close()
    assert client.closed
    assert plugin_of(client).events == [("closed", "gateway stopping")]


def entry(n: int) -> AuditEntry:
    return AuditEntry(kind=f"k{n}", session_id="s", time=float(n), data={"n": n})


def test_fake_audit_writer_keeps_a_valid_hash_chain() -> None:
    writer = FakeAuditWriter()
    written: list[Any] = []
    for n in range(3):
        writer.write(entry(n)).addCallback(written.append)
    assert written == [None, None, None]
    assert [r.seq for r in writer.records] == [1, 2, 3]
    assert writer.kinds() == ["k0", "k1", "k2"]
    assert verify_chain(writer.records).ok


def test_fake_audit_writer_manual_mode_holds_until_flush() -> None:
    writer = FakeAuditWriter()
    writer.manual = True
    d = writer.write(entry(1))
    assert not d.called
    assert writer.records == []
    writer.flush()
    assert d.called
    assert writer.kinds() == ["k1"]


def test_fake_audit_writer_failing_mode_fails_writes() -> None:
    writer = FakeAuditWriter()
    writer.failing = True
    failures: list[Any] = []
    writer.write(entry(1)).addErrback(failures.append)
    assert len(failures) == 1
    assert failures[0].check(StoreError)
    assert writer.records == []


def test_fake_audit_writer_write_returns_deferred() -> None:
    assert isinstance(FakeAuditWriter().write(entry(1)), defer.Deferred)
