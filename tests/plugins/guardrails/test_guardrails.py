"""The guardrails plugin through the hook chain (ScriptedClient)."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin

from hoopgw import protocol
from hoopgw.errors import ConfigError
from hoopgw.plugin import load_plugin_class
from hoopgw.session import Command
from hoopgw.testing import FakeApprover, ScriptedClient, make_connection
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


def test_statement_options_on_a_protocol_without_a_dialect_are_refused_at_start_up(
    monkeypatch: Any,
) -> None:
    spec = protocol.ProtocolSpec(name="ssh", build_factory=lambda runtime: None)
    monkeypatch.setattr("hoopgw_guardrails.load_protocol", lambda name: spec)
    context = type(
        "C",
        (),
        {
            "connection": make_connection(protocol="ssh"),
            "options": {"deny": ["write"], "preset": "", "rules": []},
        },
    )
    with pytest.raises(ConfigError, match="has no dialect"):
        GuardrailsPlugin(context)  # type: ignore[arg-type]


def test_ssh_sessions_keep_no_statement_state_and_observers_do_not_fail() -> None:
    """On a protocol without statements (SSH) the per-session state exists too: the observers
    that every command and every session end call must not fail (issue 14, class 13)."""
    from twisted.internet import task
    from twisted.logger import Logger

    from hoopgw.plugin import PluginContext, validate_options
    from hoopgw.testing import FakeAuditWriter, make_session

    ssh = make_connection(protocol="ssh")
    options = validate_options(
        PLUGIN, GuardrailsPlugin.options, {"deny_commands": ["rm -rf /"]}, connection="test"
    )
    context = PluginContext(
        connection=ssh,
        options=options,
        audit=FakeAuditWriter(),  # type: ignore[arg-type]
        log=Logger(),
        reactor=task.Clock(),
    )
    guardrails = GuardrailsPlugin(context)
    session = make_session(connection=ssh)
    command = Command(session_id=session.id, seq=1, text="rm -rf /", kind="exec")
    assert isinstance(guardrails.client_command(session, command), Block)
    guardrails.command_decided(session, command, Block(reason="denied"))
    allowed = Command(session_id=session.id, seq=2, text="ls", kind="exec")
    assert guardrails.client_command(session, allowed) is None
    guardrails.command_decided(session, allowed, Allow())
    guardrails.session_closed(session)


# -- startup parameters --------------------------------------------------------------------------


def _session_with(**attributes: str):
    import attrs

    from hoopgw.testing import make_session

    return attrs.evolve(
        make_session(), attributes={"user": "agent", "database": "db", **attributes}
    )


def _connect(plugin_options: dict, **attributes: str):
    from hoopgw_guardrails import GuardrailsPlugin

    from hoopgw.testing import ScriptedClient

    client = ScriptedClient.for_plugin(
        GuardrailsPlugin, plugin_options, name="guardrails", session=_session_with(**attributes)
    )
    return client.connect()


def test_startup_settings_are_judged_as_set_statements():
    from hoopgw.verdicts import Block

    refused = _connect({"deny": ["privilege"]}, options="-c role=postgres")
    assert isinstance(refused, Block) and "startup parameter role" in refused.reason
    refused = _connect({"deny": ["privilege"]}, search_path="evil, public")
    assert isinstance(refused, Block) and refused.rule == "privilege"
    assert _connect({"deny": ["privilege"]}, application_name="psql", DateStyle="ISO") is None


def test_startup_options_that_cannot_be_read_are_refused():
    from hoopgw.verdicts import Block

    for options in ("--single", "-c", "-c role", "-f x"):
        refused = _connect({"deny": ["write"]}, options=options)
        assert isinstance(refused, Block) and refused.rule == "unparseable", options


def test_startup_options_forms():
    from hoopgw_guardrails.startup import settings_of

    parsed = list(settings_of({"options": "-c a=1 -cb=2 --c-d=3 -c e=x\\ y", "user": "u"}))
    assert parsed == [("a", "1"), ("b", "2"), ("c_d", "3"), ("e", "x y")]


def test_a_protocol_command_runs_no_statement_and_is_allowed() -> None:
    plugin = ScriptedClient.for_plugin(GuardrailsPlugin, {"preset": "agent-readonly"}, name=PLUGIN)
    session = plugin.session
    reset = Command(
        session_id=session.id, seq=1, text="COM_RESET_CONNECTION", kind="x", statement=False
    )
    assert isinstance(plugin.chain.decide_command(session, reset).result, Allow)
    # The same text as a statement does not parse: refused.
    as_sql = Command(session_id=session.id, seq=2, text="COM_RESET_CONNECTION", kind="query")
    assert isinstance(plugin.chain.decide_command(session, as_sql).result, Block)


# -- the server enforces read-only too ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "read_only"),
    [
        ({"preset": "agent-readonly"}, True),
        ({"deny": ["write"]}, True),
        ({"preset": "agent-safe-write"}, False),
        ({}, False),
    ],
)
def test_a_connection_that_denies_writes_asks_for_read_only_sessions(
    options: dict[str, Any], read_only: bool
) -> None:
    chain = _client(options).chain
    upstream = chain.upstream_options(make_connection())
    assert upstream.read_only is read_only
    assert upstream.reasons == (("guardrails: write is denied",) if read_only else ())


@pytest.mark.parametrize(
    "options",
    [
        "-c default_transaction_read_only=off",
        "--transaction_read_only=false",
        "-c default_transaction_read_only=on -c default_transaction_read_only=0",
    ],
)
def test_startup_options_cannot_leave_read_only(options: str) -> None:
    verdict = _connect({"deny": ["write"]}, options=options)
    assert isinstance(verdict, Block) and verdict.rule == "read-only", verdict
    assert _connect({"deny": ["write"]}, options="-c default_transaction_read_only=on") is None


class FakeFunctionCatalog:
    """Stands in for the target's catalog: each read waits until the test answers it."""

    def __init__(self) -> None:
        self.reads: list[tuple[set[tuple[str, str]], Any]] = []

    def opaque(
        self,
        database: str,
        *,
        functions: Any,
        relations: Any,
        fields: Any,
        operators: Any,
        types: Any = (),
    ) -> Any:
        from twisted.internet import defer

        d: Any = defer.Deferred()
        asked = {
            *(("function", n) for n in functions),
            *(("relation", n) for n in relations),
            *(("field", n) for n in fields),
            *(("operator", n) for n in operators),
            *(("type", n) for n in types),
        }
        self.reads.append((asked, d))
        return d

    def answer(self, index: int, **opaque: tuple[str, ...]) -> None:
        """Answer read ``index``: the names given map to their candidates, the rest to none."""
        asked, d = self.reads[index]
        d.callback({key: opaque.get(key[1], ()) for key in asked})


def _catalog_client(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> tuple[ScriptedClient, FakeFunctionCatalog]:
    from hoopgw_postgres.analysis import PostgresDialect

    catalog = FakeFunctionCatalog()
    monkeypatch.setattr(PostgresDialect, "function_catalog", lambda self, *a, **k: catalog)
    return _client({"catalog_user": "reader", **options}), catalog


def test_functions_wait_for_the_catalog_and_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    client, catalog = _catalog_client(monkeypatch, {"preset": "agent-readonly"})
    _command, decision = client.send("SELECT f(), lower(c.a), (c).b FROM t c WHERE c.a = 1")
    box: list[Any] = []
    decision.addBoth(box.append)
    assert box == []
    assert catalog.reads[0][0] == {
        ("function", "f"),
        ("function", "lower"),
        ("relation", "t"),
        ("field", "a"),
        ("field", "b"),
        ("operator", "="),
    }
    catalog.answer(0)
    assert box == [Allow()]
    # Answered from the session's cache; only new names are read.
    assert client.run("SELECT f() FROM t").verdict == Allow()
    _command, decision = client.send("SELECT g(), * FROM v")
    assert catalog.reads[1][0] == {("function", "g"), ("relation", "v")}
    catalog.answer(1, v=("public.wipe",))
    verdict = client._result(decision)
    assert isinstance(verdict, Block) and verdict.rule == "opaque-code"
    assert "public.wipe" in verdict.reason and "rules or policies" in verdict.reason


def test_a_catalog_that_cannot_be_read_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    client, catalog = _catalog_client(monkeypatch, {"deny": ["opaque-code"]})
    _command, decision = client.send("SELECT f()")
    catalog.reads[0][1].errback(RuntimeError("connection refused"))
    verdict = client._result(decision)
    assert isinstance(verdict, Block) and "catalog_user" in verdict.reason


def test_allow_functions_names_trusted_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    client, catalog = _catalog_client(
        monkeypatch, {"deny": ["opaque-code"], "allow_functions": ["app.*"]}
    )
    _command, decision = client.send("SELECT f(), g()")
    catalog.answer(0, f=("app.f",), g=("app.g", "evil.g"))
    verdict = client._result(decision)
    assert isinstance(verdict, Block) and "evil.g" in verdict.reason
    assert "app.f" not in verdict.reason


def test_a_session_that_changes_functions_stops_trusting_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, catalog = _catalog_client(monkeypatch, {"deny": ["opaque-code"]})
    # In one message: the statement after ALTER FUNCTION is not resolved.
    _command, decision = client.send("ALTER FUNCTION f() VOLATILE; SELECT f()")
    catalog.answer(0)
    verdict = client._result(decision)
    assert isinstance(verdict, Block) and "AlterFunctionStmt" in verdict.reason
    assert client.run("ALTER FUNCTION f() STABLE").verdict == Allow()
    verdict = client.run("SELECT f()").verdict
    assert isinstance(verdict, Block) and "reconnect" in verdict.reason
    assert len(catalog.reads) == 1


def test_without_a_catalog_unlisted_functions_are_opaque() -> None:
    client = _client({"deny": ["opaque-code"], "allow_functions": ["f"]})
    assert client.run("SELECT f(), lower('x'), now()").verdict == Allow()
    verdict = client.run("SELECT g()").verdict
    assert isinstance(verdict, Block) and "catalog_user" in verdict.reason


def test_catalog_options_need_a_dialect_with_a_catalog() -> None:
    with pytest.raises(ConfigError, match="catalog"):
        ScriptedClient.for_plugin(
            load_plugin_class(PLUGIN), {"catalog_user": "reader", "catalog_sslmode": "x"}
        )


def test_the_catalog_is_read_only_for_a_policy_that_refuses_opaque_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, catalog = _catalog_client(monkeypatch, {"deny": ["write"]})
    assert client.run("SELECT f() FROM t WHERE a = 1").verdict == Allow()
    assert catalog.reads == []


# -- several verdicts: combine() makes one of them ---------------------------------------------

_REVIEWS = [
    {"name": "payroll", "tables": ["payroll"], "action": "review", "approvers": ["finance"]},
    {"name": "users", "tables": ["users"], "action": "review", "approvers": ["dba"]},
]


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE payroll SET x = 1; UPDATE users SET y = 2",  # one hold per statement
        "UPDATE payroll SET x = (SELECT y FROM users)",  # both rules match one statement
    ],
)
def test_every_hold_reaches_the_approval_backend_with_its_approvers(text: str) -> None:
    approver = FakeApprover()
    client = ScriptedClient.for_plugin(
        GuardrailsPlugin, {"rules": _REVIEWS}, name=PLUGIN, extra_plugins=[("fake", approver)]
    )
    client.connect()
    assert client.run(text).verdict is None  # held
    [(_, _, hold)] = approver.requests
    assert hold.approvers == ("dba", "finance")
    assert set(hold.rule.split(",")) == {"payroll", "users"}
    assert "rule payroll" in hold.reason and "rule users" in hold.reason


def test_a_deny_rule_wins_over_an_earlier_review_rule() -> None:
    rules = [*_REVIEWS, {"name": "no-users", "tables": ["users"]}]
    verdict = _client({"rules": rules}).run("UPDATE users SET y = 2").verdict
    assert isinstance(verdict, Block) and verdict.rule == "no-users"


def test_only_review_rules_have_approvers() -> None:
    with pytest.raises(ConfigError, match="approvers"):
        _client({"rules": [{"tables": ["t"], "approvers": ["dba"]}]})


def test_a_reloaded_instance_takes_over_the_prepared_statements() -> None:
    old = _client({"deny": ["drop"]})
    assert old.run("PREPARE ok AS SELECT 1").verdict == Allow()
    new = _client({"deny": ["drop", "truncate"]})  # the same session id (make_session)
    assert new.session.id == old.session.id
    adopted = new.chain._pm.get_plugin(PLUGIN)
    adopted.session_adopted(old.session, old.chain._pm.get_plugin(PLUGIN))
    assert new.run("EXECUTE ok").verdict == Allow()
    assert new.run("TRUNCATE t").verdict.rule == "truncate"


def test_guardrails_enabled_by_a_reload_knows_no_earlier_prepared_statement() -> None:
    fresh = _client({"deny": ["drop"]})
    fresh.chain._pm.get_plugin(PLUGIN).session_adopted(fresh.session, None)
    assert fresh.run("EXECUTE ok").verdict.rule == "unknown-prepared"


def test_a_statement_longer_than_max_statement_bytes_is_refused_unanalysed() -> None:
    # A 4 MB statement took over a minute and gigabytes to analyse, stalling every session.
    text = "SELECT " + ", ".join(["a"] * 2000)
    client = _client({"max_statement_bytes": 4096})
    verdict = client.run(text).verdict
    assert isinstance(verdict, Block) and verdict.rule == "too-large"
    assert f"{len(text)} bytes" in verdict.reason and "max_statement_bytes = 4096" in verdict.reason
    # Bytes, not characters: 1,100 four-byte characters pass a 4,096-character reading.
    emoji = "SELECT '" + "\U0001f600" * 1100 + "'"
    assert client.run(emoji).verdict.rule == "too-large"
    assert client.run("SELECT 1").verdict == Allow()


def test_max_statement_bytes_must_be_a_sensible_size() -> None:
    for value in (0, 100):
        with pytest.raises(ConfigError, match="at least 1024"):
            _client({"max_statement_bytes": value})
