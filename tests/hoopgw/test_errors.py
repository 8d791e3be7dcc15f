"""Tests for :mod:`hoopgw.errors`: one wording of a refusal's facts for every protocol."""

from __future__ import annotations

from pathlib import Path

from hoopgw.errors import (
    REVIEW_TIMEOUT_RULE,
    Code,
    HeldStatement,
    access_needed,
    held,
    refused,
    unreadable,
)
from hoopgw.verdicts import Block


def test_a_rule_that_fires_is_denied_names_the_rule_and_says_not_to_retry() -> None:
    block = Block(reason="ddl: DROP TABLE is not allowed", plugin="guardrails", rule="ddl")
    refusal = refused(block, connection="pg")
    assert refusal.code is Code.DENIED
    assert refusal.message == "refused the command: ddl: DROP TABLE is not allowed"
    assert refusal.detail == "code=HGW-DENIED rule=ddl plugin=guardrails"
    assert "Rule ddl" in refusal.next_step and "connection pg" in refusal.next_step
    assert "do not retry" in refusal.next_step


def test_a_block_without_a_rule_is_refused() -> None:
    refusal = refused(Block(reason="approval timed out after 60s"), connection="pg")
    assert refusal.code is Code.REFUSED
    assert refusal.detail == "code=HGW-REFUSED"
    assert refusal.rule == "" and refusal.plugin == ""


def test_a_review_that_timed_out_says_how_to_run_it_once_approved() -> None:
    block = Block(reason="review r1 was not decided in time", rule=REVIEW_TIMEOUT_RULE)
    refusal = refused(block, connection="pg")
    assert refusal.code is Code.TIMED_OUT
    assert "send the identical statement again" in refusal.next_step


def test_text_puts_message_facts_and_next_step_on_one_line() -> None:
    block = Block(reason="no reboots", plugin="guardrails", rule="reboot")
    text = refused(block, connection="host").text()
    assert text.startswith(
        "hoopgw refused the command: no reboots [code=HGW-DENIED rule=reboot plugin=guardrails]. "
    )
    assert text.endswith("change the rule.")
    assert "\n" not in text


def test_a_missing_grant_names_the_access_request_command() -> None:
    refusal = access_needed("no grant", connection="pg", jit=True)
    assert refusal.code is Code.NO_ACCESS
    assert "hoopgw access request --connection pg --duration 30m" in refusal.next_step
    not_jit = access_needed("no group", connection="pg", jit=False)
    assert "access request" not in not_jit.next_step


def test_unreadable() -> None:
    refusal = unreadable("the command is not valid UTF-8")
    assert refusal.code is Code.UNREADABLE
    assert refusal.message == "refused the command: the command is not valid UTF-8"


def test_a_held_statement_names_review_groups_time_left_and_the_approve_command() -> None:
    statement = HeldStatement(
        review_id="abc123def456",
        command_seq=3,
        approvers=("dba",),
        hold_until=1000.0,
        reason="DELETE needs review (guardrails rule deletes)",
        rule="deletes",
        plugin="guardrails",
    )
    notice = held(statement, now=879.5)
    assert notice.code is Code.HELD
    assert notice.message == (
        "held for review abc123def456 by group dba, waiting up to 121 s:"
        " DELETE needs review (guardrails rule deletes)"
    )
    assert notice.detail == "code=HGW-HELD rule=deletes plugin=guardrails"
    assert "needs approval by group dba; review abc123def456" in notice.next_step
    assert "hoopgw reviews approve abc123def456" in notice.next_step
    later = held(statement, now=2000.0)
    assert "waiting up to 0 s" in later.message


def test_several_groups_are_listed() -> None:
    statement = HeldStatement(review_id="r", command_seq=1, approvers=("a", "b"), hold_until=0)
    assert "by groups a or b" in held(statement, now=0).message


def test_codes_are_stable() -> None:
    assert [c.value for c in Code] == [
        "HGW-DENIED",
        "HGW-REFUSED",
        "HGW-TIMED-OUT",
        "HGW-HELD",
        "HGW-NO-ACCESS",
        "HGW-UNREADABLE",
    ]


def test_every_code_is_in_the_one_table_of_docs_errors_md() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `HGW-")]
    assert [row.split("`")[1] for row in rows] == [c.value for c in Code]
