"""Rules, presets and option checks of the guardrails policy."""

from __future__ import annotations

import pytest
from hoopgw_guardrails.policy import PRESETS, Policy, check_classes, check_preset, check_rules
from hoopgw_postgres.analysis import PostgresDialect

from hoopgw.verdicts import Block, Hold

DIALECT = PostgresDialect()


def _policy(**options: object) -> Policy:
    return Policy.from_options({"deny": [], "preset": "", "rules": [], **options})


def _judge(policy: Policy, sql: str) -> Block | Hold | None:
    (facts,) = DIALECT.analyze(sql).statements
    return policy.judge(facts)


def test_presets() -> None:
    assert "write" in PRESETS["agent-readonly"]
    assert "write" not in PRESETS["agent-safe-write"]
    assert "unbounded-write" in PRESETS["agent-safe-write"]
    safe_write = _policy(preset="agent-safe-write")
    assert _judge(safe_write, "DELETE FROM t WHERE id = 1") is None
    assert _judge(safe_write, "DELETE FROM t").rule == "unbounded-write"


def test_a_class_block_names_the_class_and_the_statement() -> None:
    verdict = _judge(_policy(deny=["write"]), "DELETE FROM t WHERE id = 1")
    assert verdict == Block(
        reason="write: DELETE is not allowed on this connection (guardrails deny write)",
        rule="write",
    )


@pytest.mark.parametrize(
    ("rule", "sql", "matches"),
    [
        ({"tables": ["hr.*"]}, "SELECT * FROM hr.salaries", True),
        ({"tables": ["hr.*"]}, "SELECT * FROM salaries", True),
        ({"tables": ["hr.*"]}, "SELECT * FROM public.salaries", False),
        ({"tables": ["HR.Salaries"]}, "SELECT 1 FROM (SELECT * FROM hr.salaries) s", True),
        ({"kind": "DeleteStmt"}, "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1", True),
        ({"kind": ["InsertStmt"]}, "SELECT 1", False),
        ({"functions": ["pg_sleep"]}, "SELECT pg_catalog.pg_sleep(10)", True),
        ({"columns": ["ssn"]}, "SELECT ssn FROM people", True),
        ({"columns": ["ssn"]}, "SELECT * FROM people", True),
        ({"columns": ["ssn"]}, "SELECT name FROM people", False),
        ({"regex": "LIMIT [0-9]{4,}"}, "select * from t limit   100000", True),
        ({"tables": ["t"], "kind": "UpdateStmt"}, "DELETE FROM t WHERE id = 1", False),
    ],
)
def test_rule_matchers(rule: dict[str, object], sql: str, matches: bool) -> None:
    verdict = _judge(_policy(rules=[{"name": "r", "message": "nope", **rule}]), sql)
    assert (verdict == Block(reason="nope (guardrails rule r)", rule="r")) is matches


def test_review_rules_hold() -> None:
    verdict = _judge(_policy(rules=[{"tables": ["t"], "action": "review"}]), "SELECT * FROM t")
    assert verdict == Hold(
        reason="SELECT matches a guardrails rule (guardrails rule rules[0])", rule="rules[0]"
    )


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([{"message": "x"}], "rules[0]: needs at least one of"),
        ([{"tables": []}, {}], "rules[0].tables"),
        ([{"tables": "t", "action": "allow"}], "rules[0].action"),
        ([{"regex": "("}], "rules[0].regex: not a valid regular expression"),
        ([{"tables": "t", "colour": "red"}], "rules[0].colour: unknown key"),
        (["t"], "rules[0]: must be a table"),
        ([{"name": "a", "tables": "t"}, {"name": "a", "tables": "u"}], "used twice"),
    ],
)
def test_bad_rules_are_named(rules: list[object], problem: str) -> None:
    assert problem in (check_rules(rules) or "")


def test_option_checks() -> None:
    assert check_classes(["write", "ddl"]) is None
    assert "unknown class 'writes'" in (check_classes(["writes"]) or "")
    assert check_preset("") is None and check_preset("agent-readonly") is None
    assert "unknown preset" in (check_preset("agent") or "")


@pytest.mark.parametrize("options", [{"preset": "agent-readonly"}, {"deny": ["write"]}])
def test_a_policy_that_denies_writes_refuses_leaving_read_only_first(
    options: dict[str, object],
) -> None:
    policy = _policy(
        **options, rules=[{"kind": "VariableSetStmt", "action": "review", "name": "sets"}]
    )
    assert policy.read_only
    verdict = _judge(policy, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    assert verdict == Block(
        reason=(
            "read-only: READ WRITE would turn off the read-only mode the server enforces on"
            " this connection (guardrails deny write)"
        ),
        rule="read-only",
    )
    # What keeps the session read-only is judged as before (here: held by the rule).
    assert _judge(policy, "SET TRANSACTION READ ONLY") == Hold(
        reason="SET matches a guardrails rule (guardrails rule sets)", rule="sets"
    )


def test_a_policy_that_allows_writes_lets_transactions_be_read_write() -> None:
    policy = _policy(preset="agent-safe-write")
    assert not policy.read_only
    assert _judge(policy, "BEGIN READ WRITE") is None
    assert _judge(policy, "SET TRANSACTION READ WRITE") is None
