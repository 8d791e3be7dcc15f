"""The analysis cache (hoopgw_guardrails.shapes): a cached analysis never changes a verdict."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.policy import PRESETS, Policy
from hoopgw_guardrails.shapes import AnalysisCache
from hoopgw_postgres.analysis import PostgresDialect
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopgw.sql import Analysis, StatementFacts
from hoopgw.testing import ScriptedClient
from hoopgw.verdicts import Allow, Block

statements: Any = sys.modules["hoopgw_tests_pg_statements"]
STATEMENTS = statements.statements()
POLICIES = [Policy(deny=PRESETS[name] | {"unparseable"}) for name in sorted(PRESETS)]


def _without_text(analysis: Analysis) -> Analysis:
    return attrs.evolve(
        analysis, statements=tuple(attrs.evolve(s, text="") for s in analysis.statements)
    )


def _client(options: Mapping[str, Any], *, cache: bool = True) -> ScriptedClient:
    client = ScriptedClient.for_plugin(GuardrailsPlugin, dict(options), name="guardrails")
    assert client.connect() is None
    if not cache:
        client.chain._pm.get_plugin("guardrails")._analyses = None
    return client


_VALUES = st.one_of(
    st.integers(min_value=0, max_value=2**31 - 1).map(str),
    st.sampled_from(
        ["'%'", "'%%'", "'on'", "'off'", "'true'", "'role'", "'search_path'", "''", "'x'"]
    ),
    st.sampled_from(["'transaction_read_only'", "'default_transaction_read_only'", "'0'", "'1'"]),
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(text=st.sampled_from(STATEMENTS), value=_VALUES, data=st.data())
def test_a_text_of_a_cached_shape_gets_the_facts_and_verdict_of_its_own_analysis(
    text: str, value: str, data: Any
) -> None:
    """Cold (analysed alone) against warm (after another text of its shape was cached): the
    same facts but for ``text``, and the same verdict under each preset."""
    variant = statements.with_constant(text, value, data.draw(st.integers(min_value=0)))
    if variant is None:
        return
    cache = AnalysisCache(PostgresDialect())
    cache.analyze(text, {})
    warm = cache.analyze(variant, {})
    cold = PostgresDialect().analyze(variant)
    assert _without_text(warm) == _without_text(cold), variant
    for policy in POLICIES:
        assert [policy.judge(s) for s in warm.statements] == [
            policy.judge(s) for s in cold.statements
        ], variant


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.sampled_from(STATEMENTS), value=_VALUES, data=st.data())
def test_through_the_plugin_a_warm_cache_gives_the_verdicts_of_none(
    text: str, value: str, data: Any
) -> None:
    variant = statements.with_constant(text, value, data.draw(st.integers(min_value=0)))
    if variant is None:
        return
    for preset in sorted(PRESETS):
        warm, cold = _client({"preset": preset}), _client({"preset": preset}, cache=False)
        for sql in (text, variant):
            assert warm.run(sql).verdict == cold.run(sql).verdict, (preset, sql)


@pytest.mark.parametrize(
    ("first", "second", "rule"),
    [
        # Each pair is one shape; only the constant decides the facts.
        (
            "SELECT set_config('application_name', 'x', false)",
            "SELECT set_config('role', 'x', false)",
            "privilege",
        ),
        ("SET transaction_read_only = 1", "SET transaction_read_only = 0", "read-only"),
        ("SET transaction_read_only = 'on'", "SET transaction_read_only = 'off'", "read-only"),
        ("SET TRANSACTION READ ONLY", "SET TRANSACTION READ WRITE", "read-only"),
        (
            "UPDATE t SET a = 1 WHERE b LIKE 'x%'",
            "UPDATE t SET a = 1 WHERE b LIKE '%'",
            "unbounded-write",
        ),
        (
            "UPDATE t SET a = 1 WHERE b + 1 = b + 2",
            "UPDATE t SET a = 1 WHERE b + 1 = b + 1",
            "unbounded-write",
        ),
    ],
)
def test_facts_that_turn_on_a_constant_bypass_the_cache(first: str, second: str, rule: str) -> None:
    dialect = PostgresDialect()
    cache = AnalysisCache(dialect)
    if "TRANSACTION READ" not in first:
        assert cache.key(first, {}) == cache.key(second, {})
    assert dialect.analyze(first).reads_literals
    cache.analyze(first, {})
    assert len(cache) == 0
    client = _client({"deny": ["write", "unbounded-write", "privilege"]})
    assert client.run(first).verdict == Allow() or "UPDATE" in first
    verdict = client.run(second).verdict
    assert isinstance(verdict, Block) and verdict.rule in (rule, "write"), verdict
    if "UPDATE" in first:
        policy = Policy(deny=frozenset({"unbounded-write"}))
        assert policy.judge(dialect.analyze(first).statements[0]) is None
        assert policy.judge(cache.analyze(second, {}).statements[0]).rule == rule  # type: ignore[union-attr]


def test_a_repeated_shape_is_answered_from_the_cache() -> None:
    dialect = PostgresDialect()
    cache = AnalysisCache(dialect)
    first = cache.analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 1;", {})
    second = cache.analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 2;", {})
    assert len(cache) == 1 and second is first
    assert second.statements[0].tables == frozenset({"pgbench_accounts"})
    assert second.statements[0].text == ""  # not deparsed: no rule reads it


class _SettingsDialect:
    """A dialect whose reading of a text depends on its settings, as MySQL's does."""

    name = "fake"

    def __init__(self) -> None:
        self.shapes: list[tuple[str, Any]] = []

    def analyze(self, text: str, settings: Any = None) -> Analysis:
        mode = (settings or {}).get("sql_mode", "")
        return Analysis(
            statements=(StatementFacts(kind=mode or "plain", command="X", kinds=frozenset()),)
        )

    def shape(self, text: str, settings: Any = None) -> str:
        self.shapes.append((text, settings))
        return text.split()[0]

    analyze_shape = analyze


def test_keys_separate_the_session_settings_that_change_the_facts() -> None:
    dialect = _SettingsDialect()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    ansi = {"lexing": {"sql_mode": "ANSI_QUOTES"}}
    plain = {"lexing": {"sql_mode": ""}}
    assert cache.key("SELECT 1", ansi) != cache.key("SELECT 1", plain)
    assert cache.key("SELECT 1", ansi) == cache.key(
        "SELECT 2", {"lexing": {"sql_mode": "ANSI_QUOTES"}}
    )
    assert cache.analyze("SELECT 1", ansi).statements[0].kind == "ANSI_QUOTES"
    assert cache.analyze("SELECT 2", plain).statements[0].kind == "plain"
    assert dialect.shapes[-1] == ("SELECT 2", {"sql_mode": ""})
    # Settings it cannot compare: no key, the dialect analyses the text itself.
    assert cache.key("SELECT 1", {"lexing": {"sql_mode": ["x"]}}) is None
    assert cache.key("SELECT 1", {"lexing": "ANSI"}) is None


def test_a_dialect_without_shapes_is_asked_every_time() -> None:
    class Plain:
        name = "plain"

        def analyze(self, text: str) -> Analysis:
            return Analysis(error=text)

    cache = AnalysisCache(Plain())  # type: ignore[arg-type]
    assert cache.key("SELECT 1", {}) is None
    assert cache.analyze("SELECT 1", {}).error == "SELECT 1" and len(cache) == 0


def test_memory_is_bounded_by_the_number_of_shapes_and_the_length_of_a_key() -> None:
    cache = AnalysisCache(PostgresDialect(), size=3, key_length=1000)
    for i in range(10):
        cache.analyze(f"SELECT c{i} FROM t WHERE id = {i}", {})
    assert len(cache) == 3
    # The least recently used leaves first: c7 stays when used again before c10 comes in.
    cache.analyze("SELECT c7 FROM t WHERE id = 0", {})
    cache.analyze("SELECT c10 FROM t", {})
    assert cache.key("SELECT c7 FROM t WHERE id = 5", {}) in cache._analyses
    assert cache.key("SELECT c8 FROM t WHERE id = 5", {}) not in cache._analyses
    long = "SELECT " + ", ".join(f"c{i}" for i in range(100)) + " FROM t"
    cache.analyze(long, {})
    assert cache.key(long, {}) is None


def test_texts_that_do_not_parse_are_not_cached() -> None:
    cache = AnalysisCache(PostgresDialect())
    assert not cache.analyze("SELEC 1", {}).parseable
    assert len(cache) == 0


def test_regex_rules_read_each_statement_s_own_text() -> None:
    client = _client({"rules": [{"regex": "12345", "message": "that account"}]})
    assert client.chain._pm.get_plugin("guardrails")._analyses is None
    assert client.run("SELECT abalance FROM pgbench_accounts WHERE aid = 1").verdict == Allow()
    verdict = client.run("SELECT abalance FROM pgbench_accounts WHERE aid = 12345").verdict
    assert isinstance(verdict, Block) and "that account" in verdict.reason


def test_a_prepared_statement_keeps_its_own_text_for_a_reloaded_instance_with_regex_rules() -> None:
    """A statement prepared under a policy that uses the cache (no regex rule) is kept with its
    text: a reload may hand it to an instance whose regex rule reads it at EXECUTE."""
    old = _client({"preset": "agent-readonly"})
    for text in (
        "PREPARE warm AS SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "PREPARE peek AS SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
    ):
        assert old.run(text).verdict == Allow()
    plugin = old.chain._pm.get_plugin("guardrails")
    assert "12345" in plugin._prepared[old.session.id]["peek"].text
    new = _client({"preset": "agent-readonly", "rules": [{"regex": "12345"}]})
    new.chain._pm.get_plugin("guardrails").session_adopted(old.session, plugin)
    assert new.run("EXECUTE warm").verdict == Allow()
    verdict = new.run("EXECUTE peek").verdict
    assert isinstance(verdict, Block) and verdict.rule == "rules[0]"
