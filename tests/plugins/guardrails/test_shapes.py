"""Guardrails' analysis cache by shape (hoopgw.sql.AnalysisCache): a cached analysis never
changes a verdict, and never answers one identity with what another sent."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.policy import PRESETS, Policy
from hoopgw_postgres.analysis import PostgresDialect
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopgw.session import Identity
from hoopgw.sql import Analysis, AnalysisCache, StatementFacts
from hoopgw.testing import ScriptedClient, make_session
from hoopgw.verdicts import Allow, Block

statements: Any = sys.modules["hoopgw_tests_pg_statements"]
STATEMENTS = statements.statements()
POLICIES = [Policy(deny=PRESETS[name] | {"unparseable"}) for name in sorted(PRESETS)]
ALICE = Identity(name="alice")


def _without_text(analysis: Analysis) -> Analysis:
    return attrs.evolve(
        analysis, statements=tuple(attrs.evolve(s, text="") for s in analysis.statements)
    )


def _client(options: Mapping[str, Any], *, cache: bool = True) -> ScriptedClient:
    client = ScriptedClient.for_plugin(GuardrailsPlugin, dict(options), name="guardrails")
    assert client.connect() is None
    if not cache:
        client.chain._pm.get_plugin("guardrails")._by_shape = False  # every text on its own
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
    cache.analyze_shape(ALICE, text, {})
    warm = cache.analyze_shape(ALICE, variant, {})
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
        assert cache.shape_key(ALICE, first, {}) == cache.shape_key(ALICE, second, {})
    assert dialect.analyze(first).reads_literals
    cache.analyze_shape(ALICE, first, {})
    assert len(cache) == 0
    client = _client({"deny": ["write", "unbounded-write", "privilege"]})
    assert client.run(first).verdict == Allow() or "UPDATE" in first
    verdict = client.run(second).verdict
    assert isinstance(verdict, Block) and verdict.rule in (rule, "write"), verdict
    if "UPDATE" in first:
        policy = Policy(deny=frozenset({"unbounded-write"}))
        assert policy.judge(dialect.analyze(first).statements[0]) is None
        assert policy.judge(cache.analyze_shape(ALICE, second, {}).statements[0]).rule == rule  # type: ignore[union-attr]


def test_a_repeated_shape_is_answered_from_the_cache() -> None:
    dialect = PostgresDialect()
    cache = AnalysisCache(dialect)
    first = cache.analyze_shape(ALICE, "SELECT abalance FROM pgbench_accounts WHERE aid = 1;", {})
    second = cache.analyze_shape(ALICE, "SELECT abalance FROM pgbench_accounts WHERE aid = 2;", {})
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
    key = cache.shape_key
    assert key(ALICE, "SELECT 1", ansi) != key(ALICE, "SELECT 1", plain)
    assert key(ALICE, "SELECT 1", ansi) == key(
        ALICE, "SELECT 2", {"lexing": {"sql_mode": "ANSI_QUOTES"}}
    )
    assert cache.analyze_shape(ALICE, "SELECT 1", ansi).statements[0].kind == "ANSI_QUOTES"
    assert cache.analyze_shape(ALICE, "SELECT 2", plain).statements[0].kind == "plain"
    assert dialect.shapes[-1] == ("SELECT 2", {"sql_mode": ""})
    # Settings it cannot compare: no key, the dialect analyses the text itself.
    assert key(ALICE, "SELECT 1", {"lexing": {"sql_mode": ["x"]}}) is None
    assert key(ALICE, "SELECT 1", {"lexing": "ANSI"}) is None
    assert len(cache) == 2
    cache.analyze_shape(ALICE, "SELECT 1", {"lexing": {"sql_mode": ["x"]}})
    assert len(cache) == 2


class _Counting:
    """A dialect without shapes that counts its analyses (MySQL has no shapes)."""

    name = "plain"

    def __init__(self) -> None:
        self.analysed: list[str] = []

    def analyze(self, text: str) -> Analysis:
        self.analysed.append(text)
        return Analysis(error=text)


def test_a_dialect_without_shapes_is_answered_by_text() -> None:
    dialect = _Counting()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    assert cache.shape_key(ALICE, "SELECT 1", {}) is None
    assert cache.analyze_shape(ALICE, "SELECT 1", {}).error == "SELECT 1"
    assert cache.analyze_shape(ALICE, "SELECT 1", {}).error == "SELECT 1"
    assert cache.analyze_shape(ALICE, "SELECT 2", {}).error == "SELECT 2"
    assert dialect.analysed == ["SELECT 1", "SELECT 2"] and len(cache) == 2


def test_memory_is_bounded_by_the_number_of_shapes_and_the_length_of_a_key() -> None:
    cache = AnalysisCache(PostgresDialect(), size=3, key_length=1000)
    for i in range(10):
        cache.analyze_shape(ALICE, f"SELECT c{i} FROM t WHERE id = {i}", {})
    assert len(cache) == 3
    # The least recently used leaves first: c7 stays when used again before c10 comes in.
    cache.analyze_shape(ALICE, "SELECT c7 FROM t WHERE id = 0", {})
    cache.analyze_shape(ALICE, "SELECT c10 FROM t", {})
    assert cache.shape_key(ALICE, "SELECT c7 FROM t WHERE id = 5", {}) in cache._analyses
    assert cache.shape_key(ALICE, "SELECT c8 FROM t WHERE id = 5", {}) not in cache._analyses
    long = "SELECT " + ", ".join(f"c{i}" for i in range(100)) + " FROM t"
    cache.analyze_shape(ALICE, long, {})
    assert cache.shape_key(ALICE, long, {}) is None and len(cache) == 3


def test_texts_that_do_not_parse_are_not_cached_by_shape() -> None:
    cache = AnalysisCache(PostgresDialect())
    assert not cache.analyze_shape(ALICE, "SELEC 1", {}).parseable
    assert not any(key[0] == "shape" for key in cache._analyses)  # type: ignore[index]


def test_regex_rules_read_each_statement_s_own_text() -> None:
    client = _client({"rules": [{"regex": "12345", "message": "that account"}]})
    assert not client.chain._pm.get_plugin("guardrails")._by_shape
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


SECRET = "SELECT * FROM patients WHERE ssn = '123-45-6789'"


def _two_identities(options: Mapping[str, Any]) -> tuple[ScriptedClient, ScriptedClient]:
    """Alice's and Bob's sessions on one connection: one plugin instance, one cache."""
    alice = ScriptedClient.for_plugin(
        GuardrailsPlugin, dict(options), name="guardrails", session=make_session(identity="alice")
    )
    bob_session = make_session(identity="bob", session_id="00000000-0000-4000-8000-000000000002")
    bob = ScriptedClient(alice.chain, clock=alice.clock, audit=alice.audit, session=bob_session)
    assert alice.connect() is None and bob.connect() is None
    return alice, bob


def _spy(monkeypatch: pytest.MonkeyPatch, method: str) -> list[str]:
    analysed: list[str] = []
    real = getattr(PostgresDialect, method)

    def spy(self: PostgresDialect, text: str) -> Analysis:
        analysed.append(text)
        return real(self, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(PostgresDialect, method, spy)
    return analysed


def test_a_shape_one_identity_sent_is_analysed_anew_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bob cannot time a probe to learn whether Alice sent a statement of that shape."""
    analysed = _spy(monkeypatch, "analyze_shape")
    alice, bob = _two_identities({"preset": "agent-readonly"})
    assert alice.run(SECRET).verdict == Allow()
    assert analysed == [SECRET]
    probe = SECRET.replace("123", "987")
    assert bob.run(probe).verdict == Allow()
    assert analysed == [SECRET, probe]  # a miss for Bob
    assert alice.run(probe).verdict == Allow() and bob.run(SECRET).verdict == Allow()
    assert analysed == [SECRET, probe]  # a hit for each of them


def test_a_text_one_identity_sent_is_analysed_anew_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With regex rules, analyses are kept by text: per identity too."""
    analysed = _spy(monkeypatch, "analyze")
    alice, bob = _two_identities({"rules": [{"regex": "payroll"}]})
    assert alice.run(SECRET).verdict == Allow()
    assert bob.run(SECRET).verdict == Allow()
    assert alice.run(SECRET).verdict == Allow() and bob.run(SECRET).verdict == Allow()
    assert analysed == [SECRET, SECRET]
