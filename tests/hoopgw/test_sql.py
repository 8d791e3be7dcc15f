"""The dialect contract's helpers: statement facts once the target's catalog has answered
(what the catalog may clear), and session-dependent reading."""

from __future__ import annotations

from collections.abc import Mapping

from hoopgw.sql import Analysis, LazyDialect, StatementFacts, analyze_command


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


class PlainDialect:
    name = "plain"

    def analyze(self, text: str) -> Analysis:
        return Analysis(error=text)


class SettingsDialect:
    name = "settings"

    def analyze(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
        return Analysis(error=f"{text} {dict(settings or {})}")


def test_settings_reach_a_dialect_only_when_the_protocol_reports_them() -> None:
    assert analyze_command(PlainDialect(), "x", {}).error == "x"
    lexing = {"sql_mode": "ANSI_QUOTES"}
    assert analyze_command(SettingsDialect(), "x", {"lexing": lexing}).error == (
        "x {'sql_mode': 'ANSI_QUOTES'}"
    )


def test_a_lazy_dialect_loads_once_at_first_use() -> None:
    loads: list[int] = []

    class Echo:
        name = "echo"

        def analyze(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
            return Analysis(statements=(), error=f"{text}/{settings}")

        def function_catalog(self) -> str:
            return "catalog"

    def load() -> Echo:
        loads.append(1)
        return Echo()

    lazy = LazyDialect("echo", load)
    assert lazy.name == "echo" and not loads
    assert lazy.analyze("a").error == "a/None"
    assert analyze_command(lazy, "b", {"lexing": {"m": "1"}}).error == "b/{'m': '1'}"
    assert lazy.function_catalog() == "catalog"
    assert loads == [1]
