"""The MySQL dialect: the lexer's reading of quotes and comments, and the corpus (corpus.toml)
judged by guardrails under ``preset = "agent-readonly"`` with the MySQL dialect."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from hoopgw_mysql import analysis as analysis_module
from hoopgw_mysql.analysis import LexingEffect, LexingState, MySQLDialect, lexing_effect, tokens
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import Logger

from hoopgw.plugin import PluginContext, load_plugin_class, validate_options
from hoopgw.runtime.chain import PluginChain
from hoopgw.testing import FakeAuditWriter, ScriptedClient, make_connection, make_session
from hoopgw.verdicts import Allow, Block

corpus: Any = sys.modules["hoopgw_tests_corpus"]
_, DENY, ALLOW = corpus.load(Path(__file__).parent / "corpus.toml")
DIALECT = MySQLDialect()


def guarded() -> ScriptedClient:
    """A guardrails chain on a ``mysql`` connection, as the gateway builds it."""
    plugin_class = load_plugin_class("guardrails")
    values = validate_options(
        "guardrails", plugin_class.options, {"preset": "agent-readonly"}, connection="test"
    )
    clock = task.Clock()
    audit = FakeAuditWriter()
    connection = make_connection(protocol="mysql")
    context = PluginContext(
        connection=connection,
        options=values,
        audit=audit,  # type: ignore[arg-type]
        log=Logger(namespace="hoopgw.plugins.guardrails"),
        reactor=clock,
    )
    chain = PluginChain([("guardrails", plugin_class(context))], reactor=clock)
    session = make_session()
    client = ScriptedClient(chain, clock=clock, audit=audit, session=session)
    assert client.connect() is None
    return client


def test_corpus_covers_every_class_and_bypass_family() -> None:
    assert {c["class"] for c in DENY} >= corpus.DENY_CLASSES
    assert {c["family"] for c in DENY} >= {
        "executable-comment",
        "multi-statement",
        "handler",
        "file",
        "prepare",
        "sql-mode",
        "privilege",
    }


@pytest.mark.parametrize("case", DENY, ids=[c["sql"][:60] for c in DENY])
def test_must_deny(case: dict[str, Any]) -> None:
    verdict = guarded().run(case["sql"]).verdict
    assert isinstance(verdict, Block), verdict
    analysis = DIALECT.analyze(case["sql"])
    classes = {c for s in analysis.statements for c in s.classes}
    if not analysis.parseable:
        classes.add("unparseable")
    assert case["class"] in classes | {verdict.rule}, (classes, verdict)


@pytest.mark.parametrize("case", ALLOW, ids=[c["sql"][:60] for c in ALLOW])
def test_must_allow(case: dict[str, Any]) -> None:
    verdict = guarded().run(case["sql"]).verdict
    assert isinstance(verdict, Allow), verdict


def test_executable_comments_are_read_as_the_server_runs_them() -> None:
    assert [t.text for t in tokens("SELECT 1 /*!50001 + 2 */ /* no */ -- x\n")] == [
        "SELECT",
        "1",
        "+",
        "2",
    ]
    assert [t.text for t in tokens("/*M!100100 DROP */ #x\nTABLE")] == ["DROP", "TABLE"]


@pytest.mark.parametrize(
    "literal", ["X'fffe00275c'", "x'41'", "B'0101'", "b'1'", "N'caf\\'e'", "_binary'\udcff'"]
)
def test_binary_and_national_literals_are_one_token_and_judged(literal: str) -> None:
    """PyMySQL sends bytes as X'...': the literal must not fall apart into a name and a
    string (which the parser refused as unparseable)."""
    analysis = DIALECT.analyze(f"SELECT {literal} AS b, {literal} = 'A'")
    assert analysis.error == ""
    assert [s.command for s in analysis.statements] == ["SELECT"]
    [token] = [t for t in tokens(literal) if t.kind != "word" or not t.text.startswith("_")]
    assert token.text == literal.removeprefix("_binary")


def test_quotes_hide_what_looks_like_comments_and_semicolons() -> None:
    texts = [t.text for t in tokens("SELECT '/*;', \"--\", `a``b;` -- '\n")]
    assert texts == ["SELECT", "'/*;'", ",", '"--"', ",", "`a``b;`"]
    analysis = DIALECT.analyze("SELECT 'a\\';DROP TABLE t'")
    assert [s.command for s in analysis.statements] == ["SELECT"]


def test_a_double_dash_without_space_is_no_comment() -> None:
    # MySQL reads "1--1" as 1 - (-1); only "-- " starts a comment.
    assert [t.text for t in tokens("SELECT 1--1")] == ["SELECT", "1", "-", "-", "1"]


def test_facts_of_a_write() -> None:
    [facts] = DIALECT.analyze("UPDATE shop.orders SET total = 0 WHERE id = 7").statements
    assert facts.tables == {"shop.orders"}
    assert facts.has_where and not facts.where_constant_true
    assert facts.classes == {"write"}
    assert {"total", "id"} <= facts.columns


def test_prepare_defines_what_execute_runs() -> None:
    prepare, execute = DIALECT.analyze("PREPARE q FROM 'DELETE FROM t'; EXECUTE q").statements
    assert prepare.prepares == "q" and "unbounded-write" in prepare.classes
    assert execute.executes == ("q",)


def test_unanalysable_texts_carry_an_error() -> None:
    for text in (
        "PREPARE s FROM @v",
        "SET sql_mode = 'ORACLE'",
        "SELECT 'open",
        "SET STATEMENT max_statement_time = 1 FOR",
    ):
        assert not DIALECT.analyze(text).parseable, text


def test_the_session_of_the_scripted_client_is_mysql() -> None:
    # The corpus runs with the MySQL dialect, not PostgreSQL's.
    client = guarded()
    assert isinstance(client.run("SELECT 1 /*!50000 , 2 */").verdict, Allow)
    assert isinstance(client.run("SELECT `x` FROM `t`").verdict, Allow)


_NOISE = st.sampled_from([" ", "\n\t", "/* x */", "/**/", "-- c\n", "# c\n", "/*!*/", "  "])
_LEXABLE = [c for c in DENY if c["family"] != "lexing"]


@settings(max_examples=25, derandomize=True, deadline=None)
@given(case=st.sampled_from(_LEXABLE), noise=st.lists(_NOISE, min_size=64, max_size=64))
def test_comments_and_whitespace_never_turn_a_refusal_into_an_allow(
    case: dict[str, Any], noise: list[str]
) -> None:
    words = [t.text for t in tokens(case["sql"])]
    text = words[0] + "".join(noise[i % len(noise)] + word for i, word in enumerate(words[1:]))
    verdict = guarded().run(text).verdict
    assert isinstance(verdict, Block), (text, verdict)


def test_a_skipped_versioned_comment_ends_at_its_first_close_whatever_the_quotes() -> None:
    text = "SELECT 1 /*!99999 '*/; DROP TABLE t; -- '*/"
    assert [t.text for t in tokens(text, frozenset({"!99999"}))] == [
        "SELECT",
        "1",
        ";",
        "DROP",
        "TABLE",
        "t",
        ";",
    ]
    commands = [s.command for s in DIALECT.analyze(text).statements]
    assert "DROP TABLE" in commands


def test_every_reading_of_versioned_comments_is_judged() -> None:
    [run, skipped] = DIALECT.analyze("DELETE FROM t /*!999999 WHERE id = 1 */").statements
    assert "unbounded-write" not in run.classes
    assert "unbounded-write" in skipped.classes
    too_many = " ".join(f"/*!5000{i} 1 */" for i in range(6))
    assert not DIALECT.analyze(f"SELECT {too_many}").parseable


def test_only_ascii_white_space_separates_and_starts_a_dash_comment() -> None:
    assert [t.text for t in tokens("SELECT 1 --\u00a0b")] == ["SELECT", "1", "-", "-", "\u00a0b"]
    assert [t.text for t in tokens("SELECT 1 --\x7f x")] == ["SELECT", "1"]


def test_a_quoted_user_variable_name_has_backslash_escapes() -> None:
    text = "SELECT @'\\' , '; DROP TABLE t; -- '"
    assert [t.text for t in tokens(text)][:2] == ["SELECT", "@'\\' , '"]
    assert "DROP TABLE" in [s.command for s in DIALECT.analyze(text).statements]


def test_execute_immediate_is_judged_by_the_text_it_runs() -> None:
    [facts] = DIALECT.analyze("EXECUTE IMMEDIATE 'DELETE FROM t'").statements
    assert {"write", "unbounded-write"} <= facts.classes and not facts.executes
    assert not DIALECT.analyze("EXECUTE IMMEDIATE @q").parseable


def test_writes_behind_with_or_explain_analyze_are_writes() -> None:
    for text in (
        "WITH c AS (SELECT 1) DELETE FROM t WHERE id = 1",
        "EXPLAIN ANALYZE UPDATE t SET a = 1",
    ):
        [facts] = DIALECT.analyze(text).statements
        assert "write" in facts.classes, text
    [explain] = DIALECT.analyze("EXPLAIN DELETE FROM t").statements
    assert not explain.classes


def test_replication_starts_are_admin() -> None:
    for text in ("START SLAVE", "START REPLICA", "START ALL SLAVES"):
        [facts] = DIALECT.analyze(text).statements
        assert "admin" in facts.classes, text
    [begin] = DIALECT.analyze("START TRANSACTION").statements
    assert not begin.classes


def test_client_character_sets_the_lexer_cannot_read_are_refused() -> None:
    for text in (
        "SET NAMES gbk",
        "SET NAMES 'big5' COLLATE big5_bin",
        "SET CHARACTER SET sjis",
        "SET CHARSET cp932",
        "SET @@session.character_set_client = gb18030",
    ):
        assert not DIALECT.analyze(text).parseable, text
    assert DIALECT.analyze("SET NAMES utf8mb4; SET character_set_client = 'ascii'").parseable
    # latin1 is read as the server reads it (0xA0 is white space there); a computed value
    # (mysqldump's @saved_cs_client) is judged when the server reports it.
    assert DIALECT.analyze("SET NAMES latin1").parseable
    assert DIALECT.analyze("SET character_set_client = @saved").parseable


def test_a_system_variable_is_known_in_any_spelling() -> None:
    for text in (
        "SET @@session . sql_mode = 'ORACLE'",
        "SET @@session.`sql_mode` = 'ORACLE'",
        "SET `sql_mode` = 'ORACLE'",
        "SET SESSION `sql_mode` = 'ORACLE'",
        "SET @@`sql_mode` = 'ORACLE'",
        "SET `character_set_client` = 'gbk'",
    ):
        assert not DIALECT.analyze(text).parseable, text
    [facts] = DIALECT.analyze("SET @@global . max_connections = 1").statements
    assert "admin" in facts.classes


def test_a_prepared_text_is_unescaped_as_the_server_does() -> None:
    # \b is a backspace: "--" and a control byte start a comment, so the WHERE is gone.
    [facts] = DIALECT.analyze("PREPARE s FROM 'UPDATE t SET a = 1 --\\b WHERE id = 1'").statements
    assert "unbounded-write" in facts.classes
    # \% and \_ keep their backslash; a doubled quote after an escape is one quote.
    [like] = DIALECT.analyze("PREPARE s FROM 'SELECT a FROM t WHERE b LIKE \\'x\\_%\\''").statements
    assert like.tables == {"t"}


# Every way a session could leave the read-only mode the gateway starts it in (issue 14).
READ_WRITE = [
    "SET SESSION TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "set local transaction isolation level read committed, read write",
    "SET GLOBAL TRANSACTION READ WRITE",
    "START TRANSACTION READ WRITE",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ WRITE",
    "SET @@session.tx_read_only = 0",
    "SET @@SESSION . `tx_read_only` := OFF",
    "SET tx_read_only = 'OFF'",
    "SET SESSION transaction_read_only = FALSE",
    "SET @@tx_read_only = DEFAULT",
    "SET tx_read_only = @saved",
    "SET tx_read_only = 1 - 1",
    "SET @@global.tx_read_only = 0",
    "SET autocommit = 1, tx_read_only = 0",
    "SET STATEMENT tx_read_only = 0 FOR DELETE FROM t WHERE id = 1",
    "SET STATEMENT tx_read_only = 0 FOR SELECT 1",
    "/*!50000 SET TRANSACTION READ WRITE */",
    "/*M!100000 SET SESSION TRANSACTION READ WRITE */",
    "PREPARE s FROM 'SET tx_read_only = 0'",
    "EXECUTE IMMEDIATE 'START TRANSACTION READ WRITE'",
    "CALL refresh_reports()",
]
STAYS_READ_ONLY = [
    "SET SESSION TRANSACTION READ ONLY",
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "START TRANSACTION",
    "START TRANSACTION READ ONLY",
    "BEGIN",
    "SET tx_read_only = 1",
    "SET @@session.tx_read_only = ON",
    "SET tx_read_only = 'true'",
    "SELECT @@tx_read_only",
    "SET autocommit = 0",
]


@pytest.mark.parametrize("sql", READ_WRITE)
def test_statements_that_leave_read_only_mode_say_so(sql: str) -> None:
    analysis = DIALECT.analyze(sql)
    assert analysis.parseable, analysis.error
    assert any(s.read_write for s in analysis.statements), sql


@pytest.mark.parametrize("sql", STAYS_READ_ONLY)
def test_statements_that_keep_read_only_mode_do_not(sql: str) -> None:
    analysis = DIALECT.analyze(sql)
    assert analysis.parseable, analysis.error
    assert not any(s.read_write for s in analysis.statements), sql


# -- lexing settings (issue 14, class 1) ---------------------------------------------------------

HIDDEN = "SELECT '\\'; DELETE FROM canary; -- '"


@pytest.mark.parametrize(
    ("settings", "text", "deletes"),
    [
        ({}, HIDDEN, False),
        ({"sql_mode": "NO_BACKSLASH_ESCAPES"}, HIDDEN, True),
        ({}, 'SELECT "\\"; DELETE FROM canary; -- "', False),
        (
            {"sql_mode": "REAL_AS_FLOAT,ANSI_QUOTES,ANSI"},
            'SELECT "a\\"; DELETE FROM canary; -- "',
            True,
        ),
        ({"character_set_client": "latin1"}, "SELECT 1 --\xa0'\n; DELETE FROM canary; -- '", True),
        ({}, "SELECT 1 --\xa0'\n; DELETE FROM canary; -- '", False),
    ],
)
def test_statements_are_read_in_the_reported_settings(
    settings: dict[str, str], text: str, deletes: bool
) -> None:
    analysis = DIALECT.analyze(text, settings)
    assert analysis.parseable, analysis.error
    assert any("write" in s.classes for s in analysis.statements) is deletes


def test_strings_without_escapes_reach_sqlglot_in_the_default_spelling() -> None:
    nbe = {"sql_mode": "NO_BACKSLASH_ESCAPES"}
    [facts] = DIALECT.analyze("DELETE FROM t WHERE a = 'x\\'", nbe).statements
    assert facts.has_where and facts.tables == {"t"}
    [facts] = DIALECT.analyze('SELECT "c" FROM "t"', {"sql_mode": "ANSI_QUOTES"}).statements
    assert facts.tables == {"t"} and facts.columns == {"c"}


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 1", "last statement"),
        ("CALL p(); SELECT 1", "last statement"),
        ("EXECUTE s; SELECT 1", "last statement"),
        ("BEGIN NOT ATOMIC SELECT 1; END", "last statement"),
        ("/*!40101 SET NAMES latin1 */; SELECT 1", "last statement"),
        ("SET NAMES sjis", "character_set_client sjis"),
        ("SET STATEMENT character_set_client = big5 FOR SELECT 1", "big5"),
        ("PREPARE s FROM 'SET NAMES latin1'", "PREPARE of a statement that sets"),
        ("PREPARE s FROM @text", "variable or expression"),
        ("SET session_track_system_variables = ''", "session_track_system_variables"),
        # Messages would come in a set the server does not report (masking reads them in it).
        ("SET @@character_set_results = utf16", "SET @@character_set_results"),
        ("SET STATEMENT character_set_results = utf16 FOR SELECT 1", "SET STATEMENT"),
        ("SET @@sql_mode = ''", "SET SESSION sql_mode"),
        ("SET sql_mode = 'ORACLE'", "another grammar"),
    ],
)
def test_what_the_settings_cannot_follow_is_refused(text: str, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        lexing_effect(text, LexingState())


def test_what_may_change_the_settings_is_known() -> None:
    state = LexingState()
    assert lexing_effect("SELECT 1; SET @a = 1", state) == LexingEffect(statements=2)
    effect = lexing_effect("SELECT 1; SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI')", state)
    assert effect.changes and effect.sets == {"sql_mode"}
    assert lexing_effect("SET NAMES utf8mb4 COLLATE utf8mb4_bin", state).sets == {
        "character_set_client"
    }
    assert lexing_effect("CALL p()", state) == LexingEffect(changes=True)
    assert not lexing_effect("PREPARE s FROM 'SELECT 1'; EXECUTE s; SELECT 2", state).changes
    # SET STATEMENT's own settings end with its statement.
    assert not lexing_effect("SET STATEMENT sql_mode = '' FOR SELECT 1", state).changes


def test_a_long_text_is_not_kept_after_its_analysis() -> None:
    """A client's long texts (up to ``max_message_size``, 64 MiB, each) must not be kept, or
    a thousand of them hold gigabytes (the dialect keeps no text; plugins' caches keep texts
    up to 16 KiB, see tests/hoopgw/test_sql.py)."""

    class Text(str):
        """A text the test can see being freed."""

    text = Text("SELECT 1 /* " + "x" * 20000 + " */")
    freed = weakref.ref(text)
    assert MySQLDialect().analyze(text).parseable
    del text
    gc.collect()
    assert freed() is None


def test_the_dialect_keeps_nothing_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """It serves every session: an answer kept here would come faster to one user for a text
    another sent (plugins cache per principal, hoopgw.sql.AnalysisCache)."""
    read: list[str] = []
    real = analysis_module.readings

    def spy(text: str, state: LexingState = analysis_module.DEFAULT_STATE) -> Any:
        read.append(text)
        return real(text, state)

    monkeypatch.setattr(analysis_module, "readings", spy)
    dialect = MySQLDialect()
    for _ in range(2):
        assert dialect.analyze("SELECT 1", {"sql_mode": ""}).parseable
    assert read == ["SELECT 1"] * 2


# Five versioned comments after a statement: 32 readings, each holding the statement again.
_READINGS = " ".join(f"/*!5000{k} ;SELECT {k}*/" for k in range(1, 6))


def _nested_prepare(depth: int) -> str:
    text = f"SELECT 1 {_READINGS}"
    for level in range(1, depth + 1):
        text = "PREPARE s{} FROM '{}' {}".format(level, text.replace("'", "''"), _READINGS)
    return text


def test_a_prepared_text_is_analysed_once_however_many_readings_hold_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each of a text's 32 readings holds its PREPARE, whose text has 32 readings, and so on:
    # without the dialect's cache (it keeps nothing between calls) 361 bytes of three levels
    # took 12 s of the reactor, four levels several minutes -- every session stood still.
    read: list[str] = []
    real = analysis_module.readings

    def spy(text: str, state: LexingState = analysis_module.DEFAULT_STATE) -> Any:
        read.append(text)
        assert len(read) <= 100, "the same prepared texts are read again and again"
        return real(text, state)

    monkeypatch.setattr(analysis_module, "readings", spy)
    dialect = MySQLDialect()
    analysis = dialect.analyze(_nested_prepare(4))
    assert analysis.parseable and len(read) == 5  # once per level
    # Nothing is kept for the next call: the same text is read again.
    assert dialect.analyze(_nested_prepare(4)) == analysis and len(read) == 10


def test_an_analysis_of_too_many_readings_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis_module, "MAX_READINGS", 100)
    dialect = MySQLDialect()
    assert dialect.analyze(_nested_prepare(2)).parseable  # 3 levels of 32 readings each
    refused = dialect.analyze(_nested_prepare(3))
    assert refused.error.endswith("more than 100 readings of the text and the texts it prepares")
    assert dialect.analyze(_nested_prepare(2)).parseable  # the next analysis has its own


def test_the_lexing_effect_of_nested_prepares_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The frontend reads every COM_QUERY so (with or without plugins): each reading's PREPARE
    # read its text's readings again, 361 bytes took a second of the reactor, 627 minutes.
    read: list[str] = []
    real = analysis_module.readings

    def spy(text: str, state: LexingState = analysis_module.DEFAULT_STATE) -> Any:
        read.append(text)
        assert len(read) <= 100, "the same prepared texts are read again and again"
        return real(text, state)

    monkeypatch.setattr(analysis_module, "readings", spy)
    assert lexing_effect(_nested_prepare(2), LexingState()) == LexingEffect(statements=6)
    read.clear()
    with pytest.raises(ValueError, match="more than 256 readings of the text and the texts"):
        lexing_effect(_nested_prepare(4), LexingState())
    assert len(read) < 20


# What a 16 KiB text may hold at most: many statements, or many names in one.
_HEAVY_TEXTS = (
    "SELECT a.b.c;" * 1260,
    "SELECT " + ",".join(f"a{n}" for n in range(2800)),
    "SELECT " + ",".join(f"s{n}.f{n}(x.y{n})" for n in range(900)),
    "SELECT * FROM " + ",".join(f"s{n}.t{n}" for n in range(1350)),
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7",
)


@pytest.mark.parametrize("text", _HEAVY_TEXTS, ids=lambda t: t[:16])
def test_the_analysis_cache_weighs_an_entry_at_least_at_its_size(text: str) -> None:
    # AnalysisCache bounds its memory by the weight it estimates: never below the real size.
    import tracemalloc

    from hoopgw.session import Identity
    from hoopgw.sql import AnalysisCache

    cache = AnalysisCache(MySQLDialect())
    details = {"lexing": analysis_module.DEFAULT_STATE.settings}
    cache.analyze(Identity(name="bob"), "SELECT 1", details)  # the lexer's first use
    gc.collect()
    before = cache.weight
    tracemalloc.start()
    try:
        cache.analyze(Identity(name="alice"), text, details)
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(cache) == 2 and 0 < size <= cache.weight - before
