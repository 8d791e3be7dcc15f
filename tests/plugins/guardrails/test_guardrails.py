"""The guardrails plugin through the hook chain (ScriptedClient)."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin

from hoopgw import protocol
from hoopgw.errors import ConfigError
from hoopgw.plugin import load_plugin_class
from hoopgw.session import Command
from hoopgw.testing import ScriptedClient, make_connection
from hoopgw.verdicts import Allow, Block

PLUGIN = "guardrails"


def _client(options: dict[str, Any]) -> ScriptedClient:
    client = ScriptedClient.for_plugin(load_plugin_class(PLUGIN), options, name=PLUGIN)
    assert client.connect() is None
    return client


def test_one_denied_statement_refuses_the_whole_message() -> None:
    verdict = _client({"deny": ["drop"]}).run("SELECT 1; DROP TABLE t; SELECT 2").verdict
    assert isinstance(verdict, Block) and verdict.rule == "drop"
    assert verdict.plugin == PLUGIN


def test_unparseable_is_refused_even_without_a_policy() -> None:
    verdict = _client({}).run("SELEC 1").verdict
    assert isinstance(verdict, Block) and verdict.rule == "unparseable"
    assert _client({}).run("DROP TABLE t").verdict == Allow()


def test_execute_is_judged_as_what_was_prepared() -> None:
    client = _client({"deny": ["write"], "rules": [{"tables": ["secret"]}]})
    assert client.run("PREPARE ok AS SELECT 1").verdict == Allow()
    assert client.run("EXECUTE ok").verdict == Allow()
    assert client.run("PREPARE peek AS SELECT * FROM secret").verdict.rule == "rules[0]"
    # A refused PREPARE never ran, so its name stays unknown.
    assert client.run("EXECUTE peek").verdict.rule == "unknown-prepared"
    assert client.run("DEALLOCATE ok").verdict == Allow()
    assert client.run("EXECUTE ok").verdict.rule == "unknown-prepared"


def test_protocol_level_names_can_be_executed_with_sql() -> None:
    plugin = ScriptedClient.for_plugin(GuardrailsPlugin, {"deny": ["write"]}, name=PLUGIN)
    session = plugin.session
    parse = Command(
        session_id=session.id, seq=1, text="SELECT 1", kind="parse", statement_name="s1"
    )
    assert isinstance(plugin.chain.decide_command(session, parse).result, Allow)
    execute = Command(session_id=session.id, seq=2, text="EXECUTE s1", kind="query")
    assert isinstance(plugin.chain.decide_command(session, execute).result, Allow)
    bind = Command(session_id=session.id, seq=3, text="", kind="execute", statement_name="zz")
    refused = plugin.chain.decide_command(session, bind).result
    assert isinstance(refused, Block) and refused.rule == "unknown-prepared"


def test_session_close_forgets_prepared_statements() -> None:
    client = _client({})
    client.run("PREPARE ok AS SELECT 1")
    client.close()
    plugin = client.chain._pm.get_plugin(PLUGIN)
    assert plugin._prepared == {}


def test_a_protocol_without_a_dialect_is_refused_at_start_up(monkeypatch: Any) -> None:
    spec = protocol.ProtocolSpec(name="ssh", build_factory=lambda runtime: None)
    monkeypatch.setattr("hoopgw_guardrails.load_protocol", lambda name: spec)
    context = type(
        "C",
        (),
        {
            "connection": make_connection(protocol="ssh"),
            "options": {"deny": [], "preset": "", "rules": []},
        },
    )
    with pytest.raises(ConfigError, match="has no dialect"):
        GuardrailsPlugin(context)  # type: ignore[arg-type]
