"""Statement facts once the target's catalog has answered: what the catalog may clear."""

from __future__ import annotations

from hoopgw.sql import StatementFacts


def _facts(**fields: object) -> StatementFacts:
    return StatementFacts(
        kind="SelectStmt", command="SELECT", kinds=frozenset({"SelectStmt"}), text="...", **fields
    )  # type: ignore[arg-type]


def test_the_catalog_clears_an_opaque_cause_that_unlisted_functions_explain() -> None:
    facts = _facts(
        causes={"opaque-code": "f() (a function that no built-in list covers)"},
        unlisted_functions=frozenset({"f"}),
    )
    assert "opaque-code" not in facts.resolved({}).causes
    assert facts.resolved({"f": "f() (VOLATILE)"}).causes["opaque-code"] == "f() (VOLATILE)"


def test_a_cause_no_unlisted_function_explains_stays() -> None:
    # A dialect without a catalog (MySQL) reports an unknown statement kind this way.
    unknown = _facts(
        causes={"opaque-code": "FROBNICATE (a statement kind guardrails does not know)"}
    )
    assert unknown.resolved({}).causes["opaque-code"].startswith("FROBNICATE")
    both = _facts(
        causes={"opaque-code": "DO (a code block)"},
        other_opaque_cause="DO (a code block)",
        unlisted_functions=frozenset({"f"}),
    )
    assert both.resolved({}).causes["opaque-code"] == "DO (a code block)"
