"""The dialect contract's helpers: statement facts once the target's catalog has answered
(what the catalog may clear), session-dependent reading, and the analysis cache by principal."""

from __future__ import annotations

from collections.abc import Mapping

from hoopgw.session import Identity
from hoopgw.sql import Analysis, AnalysisCache, LazyDialect, StatementFacts, analyze_command


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


# -- the analysis cache: each entry belongs to one principal -----------------------------------

ALICE = Identity(name="alice")
BOB = Identity(name="bob")


def _statement(text: str) -> StatementFacts:
    return StatementFacts(kind="SelectStmt", command="SELECT", kinds=frozenset(), text=text)


class SpyDialect:
    """A dialect with shapes (the first word of a text) that records what it was asked."""

    name = "spy"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def analyze(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
        self.calls.append(("analyze", text))
        return Analysis(statements=(_statement(text),))

    def shape(self, text: str, settings: Mapping[str, str] | None = None) -> str:
        return text.split()[0]

    def analyze_shape(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
        self.calls.append(("analyze_shape", text))
        return Analysis(statements=(_statement(""),))


SECRET = "SELECT * FROM patients WHERE ssn = '123-45-6789'"


def test_a_text_one_identity_sent_is_analysed_anew_for_another() -> None:
    dialect = SpyDialect()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    first = cache.analyze(ALICE, SECRET, {})
    assert dialect.calls == [("analyze", SECRET)]
    # Bob's probe of the text Alice sent is a miss: it costs him a whole analysis.
    for_bob = cache.analyze(BOB, SECRET, {})
    assert dialect.calls == [("analyze", SECRET)] * 2 and for_bob is not first
    # Each one's own repeat is a hit.
    assert cache.analyze(ALICE, SECRET, {}) is first
    assert cache.analyze(BOB, SECRET, {}) is for_bob
    assert len(dialect.calls) == 2 and len(cache) == 2


def test_a_shape_one_identity_sent_is_analysed_anew_for_another() -> None:
    dialect = SpyDialect()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    first = cache.analyze_shape(ALICE, "SELECT 1", {})
    assert cache.analyze_shape(BOB, "SELECT 2", {}) is not first
    assert dialect.calls == [("analyze_shape", "SELECT 1"), ("analyze_shape", "SELECT 2")]
    assert cache.analyze_shape(ALICE, "SELECT 3", {}) is first
    assert len(dialect.calls) == 2
    # A text and a shape never answer for each other, even where they are spelled alike.
    assert cache.analyze(ALICE, "SELECT", {}).statements[0].text == "SELECT"


def test_the_same_name_proven_another_way_is_another_principal() -> None:
    dialect = SpyDialect()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    cache.analyze(ALICE, SECRET, {})
    cache.analyze(Identity(name="alice", method="oidc"), SECRET, {})
    assert len(dialect.calls) == 2
    # The same principal on another credential or with other groups is the same one.
    cache.analyze(Identity(name="alice", groups=frozenset({"dba"}), credential_id="k2"), SECRET, {})
    assert len(dialect.calls) == 2


def test_lexing_settings_are_part_of_a_text_s_key() -> None:
    dialect = SpyDialect()
    cache = AnalysisCache(dialect)  # type: ignore[arg-type]
    ansi = {"lexing": {"sql_mode": "ANSI_QUOTES"}}
    cache.analyze(ALICE, "SELECT 1", ansi)
    cache.analyze(ALICE, "SELECT 1", {"lexing": {"sql_mode": ""}})
    cache.analyze(ALICE, "SELECT 1", ansi)
    assert len(dialect.calls) == 2
    # Settings it cannot compare: analysed every time, never kept.
    cache.analyze(ALICE, "SELECT 1", {"lexing": {"sql_mode": ["x"]}})
    cache.analyze(ALICE, "SELECT 1", {"lexing": {"sql_mode": ["x"]}})
    assert len(dialect.calls) == 4 and len(cache) == 2


def test_memory_is_bounded_in_total_whatever_the_number_of_identities() -> None:
    dialect = SpyDialect()
    cache = AnalysisCache(dialect, size=8, key_length=100)  # type: ignore[arg-type]
    for n in range(200):
        identity = Identity(name=f"user{n}")
        cache.analyze(identity, f"SELECT {n}", {})
        cache.analyze_shape(identity, f"UPDATE {n}", {})
        assert len(cache) <= 8
    assert len(cache) == 8
    # The least recently used leaves first, whoever's it is; a long text is never kept.
    cache.analyze(Identity(name="user199"), "SELECT 199", {})
    cache.analyze(ALICE, "SELECT " + "x" * 100, {})
    assert len(cache) == 8 and dialect.calls[-2] == ("analyze_shape", "UPDATE 199")
