"""The approval plugin through the real plugin chain and review service, on a Clock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hoopgw_approval import ApprovalPlugin
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_webhook import WebhookPlugin
from twisted.internet import task
from twisted.logger import Logger

from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Command, Identity
from hoopgw.sql import MAX_ANALYSED_BYTES
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeAuditWriter, ScriptedClient, make_connection, make_session
from hoopgw.verdicts import Allow, Block

ALICE = Identity(name="alice", groups=frozenset({"dba"}))


class World:
    def __init__(
        self,
        options: dict[str, Any],
        *,
        guardrails: dict[str, Any] | None = None,
        masking: dict[str, Any] | None = None,
        protocol: str = "postgres",
    ) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000)
        self.audit = FakeAuditWriter()
        self.store = SQLiteStore(":memory:")
        self.store.migrate()
        sessions = SessionRegistry()
        grants = GrantService(
            store=self.store,
            audit=self.audit,  # type: ignore[arg-type]
            reactor=self.clock,
            connections={},
            roles={},
            sessions=sessions,
        )
        self.service = ReviewService(
            store=self.store,
            audit=self.audit,  # type: ignore[arg-type]
            reactor=self.clock,
            grants=grants,
            roles={},
            sessions=sessions,
            approval_timeout=300,
        )
        plugins: list[tuple[str, object]] = []
        if guardrails is not None:
            plugins.append(
                (
                    "guardrails",
                    GuardrailsPlugin(
                        self._context("guardrails", GuardrailsPlugin, guardrails, protocol)
                    ),
                )
            )
        if masking is not None:
            from hoopgw_masking import MaskingPlugin

            plugins.append(
                (
                    "masking",
                    MaskingPlugin(self._context("masking", MaskingPlugin, masking, protocol)),
                )
            )
        plugins.append(
            (
                "approval",
                ApprovalPlugin(self._context("approval", ApprovalPlugin, options, protocol)),
            )
        )
        chain = PluginChain(plugins, reactor=self.clock, approval_timeout=300)
        self.client = ScriptedClient(chain, clock=self.clock, audit=self.audit)

    def _context(self, name: str, cls: Any, options: dict[str, Any], protocol: str) -> Any:
        return PluginContext(
            connection=make_connection(protocol=protocol),
            options=validate_options(name, cls.options, options, connection="test"),
            audit=self.audit,  # type: ignore[arg-type]
            log=Logger(),
            reactor=self.clock,
            approvals=self.service,
        )

    def pending(self) -> Any:
        [review] = self.store.list_reviews(status="pending")
        return review


def test_statements_of_review_classes_wait_for_an_approval() -> None:
    world = World({"review": ["write"], "approvers": ["dba"]})
    assert world.client.run("SELECT 1").verdict == Allow()
    result = world.client.run("DELETE FROM orders WHERE id = 42")
    assert result.verdict is None  # held
    review = world.pending()
    assert review.approvers == ("dba",) and review.statement == "DELETE FROM orders WHERE id = 42"
    assert "write: DELETE needs approval" in review.reason
    world.service.decide(review.id, ALICE, approve=True, reason="")
    assert world.store.get_review(review.id).status == "approved"  # type: ignore[union-attr]


def test_a_held_command_is_released_by_the_decision() -> None:
    world = World({"review": ["drop"], "approvers": ["dba"]})
    world.client.connect()
    _, decision = world.client.send("DROP TABLE orders")
    world.service.decide(world.pending().id, ALICE, approve=False, reason="no")
    assert isinstance(decision.result, Block) and "denied by alice" in decision.result.reason


def test_a_guardrails_review_rule_is_reviewed_by_the_approval_plugin() -> None:
    world = World(
        {"approvers": ["dba"]},
        guardrails={"rules": [{"tables": ["payroll"], "action": "review", "name": "hr"}]},
    )
    assert world.client.run("SELECT * FROM payroll").verdict is None
    review = world.pending()
    assert "guardrails rule hr" in review.reason and review.approvers == ("dba",)


def test_unparseable_text_and_sql_execute_fail_closed() -> None:
    world = World({"review": ["write"], "approvers": ["dba"]})
    verdict = world.client.run("DELETE FROM WHERE").verdict
    assert isinstance(verdict, Block) and verdict.rule == "unparseable"
    assert world.client.run("EXECUTE wipe").verdict is None  # held: body unknown here
    assert "EXECUTE of prepared statement 'wipe'" in world.pending().reason


def test_without_review_classes_nothing_is_held() -> None:
    world = World({"approvers": ["dba"]})
    assert world.client.run("DELETE FROM orders").verdict == Allow()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"review": ["writes"]}, "unknown class 'writes'"),
        ({"approvals": 0}, "from 1 to 10"),
        ({"approvers": [""]}, "non-empty group names"),
        ({"valid_for": 0}, "from 1 to 604800"),
        ({"timeout": -1}, "from 0 to 604800"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_options("approval", ApprovalPlugin.options, options, connection="pg")


def test_without_a_service_a_hold_is_refused() -> None:
    client = ScriptedClient.for_plugin(ApprovalPlugin, {"review": ["write"]}, name="approval")
    verdict = client.run("DELETE FROM t").verdict
    assert isinstance(verdict, Block) and "no review service" in verdict.reason


def test_the_walk_through_configs_in_the_docs_are_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    page = Path(__file__).parents[3] / "docs" / "approvals.md"
    statements, jit, webhook = re.findall(r"```toml\n(.*?)```", page.read_text(), re.DOTALL)
    config = parse_config(statements, base_dir=tmp_path)
    [orders] = config.connections
    assert orders.plugin_options["approval"]["review"] == ["write"]
    assert config.roles["approver"] == ("dba",)
    monkeypatch.setenv("PROD_PGPASSWORD", "x")
    api = '[gateway]\nadmin_listen = "tcp:8080:interface=127.0.0.1"\n'
    [prod] = parse_config(api + jit, base_dir=tmp_path).connections
    assert (prod.access, prod.jit_approvers) == ("jit", ("leads",))
    options = tomllib.loads(webhook)["connections"]["webhook"]
    validate_options("webhook", WebhookPlugin.options, options, connection="orders")


def test_a_protocol_command_is_not_held() -> None:
    world = World({"review": ["write", "opaque-code"], "approvers": ["dba"]})
    session = world.client.session
    command = Command(
        session_id=session.id, seq=1, text="COM_STMT_CLOSE 4", kind="x", statement=False
    )
    decision = world.client.chain.decide_command(session, command)
    assert decision.result == Allow()


def test_reviewers_see_parameter_values_masked_as_the_record_is() -> None:
    """With masking on, a held statement's parameter values reach the review masked; the
    approval still binds the real values (issue 14, class 8)."""
    import attrs

    from hoopgw.session import Parameter

    world = World({"review": ["write"], "approvers": ["dba"]}, masking={})
    session = world.client.session
    command = Command(
        session_id=session.id,
        seq=1,
        text="UPDATE people SET email = $1 WHERE id = $2",
        kind="parse",
        parameter_count=2,
        parameters=(
            Parameter(value=b"alice@example.com", shown="alice@example.com"),
            Parameter(value=b"7", shown="7"),
        ),
    )
    command = world.client.chain.recordable(session, command)
    decision = world.client.chain.decide_command(session, command)
    review = world.pending()
    assert "alice@example.com" not in repr(review.parameters)
    assert review.parameters[1] == "7"
    requested = [r.data for r in world.audit.records if r.kind == "review_requested"]
    assert "alice@example.com" not in repr(requested)
    world.clock.advance(301)
    assert isinstance(decision.result, Block)
    world.service.decide(review.id, ALICE, approve=True, reason="")
    other = attrs.evolve(
        command,
        seq=2,
        parameters=(
            Parameter(value=b"bob@example.com", shown="bob@example.com"),
            command.parameters[1],
        ),
    )
    assert not world.client.chain.decide_command(session, other).called  # held again
    rerun = attrs.evolve(command, seq=3)
    assert isinstance(world.client.chain.decide_command(session, rerun).result, Allow)


def test_a_statement_too_long_to_analyse_is_refused() -> None:
    world = World({"review": ["write"], "approvers": ["dba"]})
    verdict = world.client.run("SELECT '" + "x" * (MAX_ANALYSED_BYTES + 1) + "'").verdict
    assert isinstance(verdict, Block) and verdict.rule == "too-large"


def test_a_statement_one_identity_sent_is_analysed_anew_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plugin's analyses are kept per identity (by shape): Bob cannot time a probe to
    learn whether Alice sent a statement."""
    from hoopgw_postgres.analysis import PostgresDialect

    analysed: list[str] = []
    real = PostgresDialect.analyze_shape

    def spy(self: PostgresDialect, text: str) -> Any:
        analysed.append(text)
        return real(self, text)

    monkeypatch.setattr(PostgresDialect, "analyze_shape", spy)
    alice = ScriptedClient.for_plugin(
        ApprovalPlugin, {"review": ["write"]}, name="approval", session=make_session()
    )
    bob_session = make_session(identity="bob", session_id="00000000-0000-4000-8000-000000000002")
    bob = ScriptedClient(alice.chain, clock=alice.clock, audit=alice.audit, session=bob_session)
    secret = "SELECT * FROM patients WHERE ssn = '123-45-6789'"
    assert alice.run(secret).verdict == Allow()
    assert bob.run(secret).verdict == Allow()
    assert analysed == [secret, secret]  # a miss for Bob
    assert alice.run(secret.replace("123", "987")).verdict == Allow()
    assert bob.run(secret).verdict == Allow()
    assert analysed == [secret, secret]  # a hit for each of them
    # Held statements are still judged by their own analysis.
    assert isinstance(bob.run("DELETE FROM patients WHERE id = 1").verdict, Block)
