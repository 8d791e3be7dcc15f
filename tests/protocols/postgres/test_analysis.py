"""The PostgreSQL dialect: facts of statements as libpg_query parses them."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import attrs
import pytest
from hoopgw_postgres import analysis as analysis_module
from hoopgw_postgres.analysis import PostgresDialect, copy_encodings, ends_transaction
from hoopgw_postgres.protocol import PROTOCOL


def _one(text: str) -> object:
    analysis = PostgresDialect().analyze(text)
    assert analysis.parseable and len(analysis.statements) == 1
    return analysis.statements[0]


def test_the_protocol_registers_the_dialect_loaded_at_first_use() -> None:
    assert PROTOCOL.dialect.name == "postgresql"
    assert isinstance(PROTOCOL.dialect.dialect, PostgresDialect)
    assert PROTOCOL.dialect.analyze("SELECT 1").parseable


def test_a_delete_names_its_kind_table_columns_and_where_facts() -> None:
    facts = _one('DELETE FROM "Hr".Salaries WHERE id = 1 /* c */')
    assert facts.kind == "DeleteStmt" and facts.command == "DELETE"
    assert facts.tables == {"Hr.salaries"} and facts.columns == {"id"}
    assert facts.has_where and not facts.where_constant_true
    assert facts.causes == {"write": "DELETE"}
    assert facts.text == 'DELETE FROM "Hr".salaries WHERE id = 1'


def test_constant_where_clauses_are_unbounded() -> None:
    for where in ("true", "1 = 1", "id = id", "id = 1 OR true", "$1"):
        facts = _one(f"UPDATE t SET a = 1 WHERE {where}")
        assert facts.where_constant_true, where
        assert "unbounded-write" in facts.classes
    assert not _one("DELETE FROM t WHERE CURRENT OF c").where_constant_true


def test_nested_statements_are_classified() -> None:
    facts = _one("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d")
    assert facts.kind == "SelectStmt" and "DeleteStmt" in facts.kinds
    assert facts.causes["write"] == "DELETE"
    assert "write" in _one("COPY (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) TO STDOUT").classes
    assert "write" in _one("CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u").classes
    assert _one("PREPARE p AS INSERT INTO t VALUES (1)").prepares == "p"


def test_explain_without_analyze_is_not_a_write() -> None:
    assert _one("EXPLAIN DELETE FROM t").classes == frozenset()
    assert _one("EXPLAIN (ANALYZE off) DELETE FROM t").classes == frozenset()
    assert "write" in _one("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1").classes


def test_function_calls_anywhere_are_classified() -> None:
    assert _one("SELECT 1 WHERE pg_read_file('x') IS NULL").causes == {
        "file-access": "pg_read_file()"
    }
    assert _one("SELECT set_config('role', 'x', false)").classes == {"privilege"}
    # Found by the property test: whitespace inside the name must not slip past.
    assert _one("SELECT set_config(' Role ', 'x', false)").classes == {"privilege"}
    computed = _one("SELECT set_config(current_user, 'x', false)").classes
    assert computed == {"privilege", "opaque-code"}
    assert _one("SELECT pg_catalog.lo_import('/etc/passwd')").functions == {"pg_catalog.lo_import"}


def test_session_statements_of_prepared_names() -> None:
    assert _one("EXECUTE p(1)").executes == ("p",)
    assert _one("DEALLOCATE p").deallocates == ("p",)
    assert _one("DEALLOCATE ALL").deallocates == ("*",)
    assert _one("DISCARD ALL").deallocates == ("*",)


def test_unparseable_text_reports_the_parser_error() -> None:
    analysis = PostgresDialect().analyze("SELEC 1")
    assert not analysis.parseable and "syntax error" in analysis.error
    assert not PostgresDialect().analyze("SELECT 1\0").parseable


def _bytes(raw: bytes) -> str:
    """Statement bytes as the gateway holds them (bytes that are not UTF-8 escaped)."""
    return raw.decode("utf-8", "surrogateescape")


def test_bytes_that_are_not_utf8_are_judged_not_refused() -> None:
    """A SQL_ASCII database takes any bytes: the statement is still judged."""
    facts = _one(_bytes(b"DELETE FROM caf\xe9 WHERE note = 'caf\xe9 \xff'"))
    assert facts.causes == {"write": "DELETE"}
    [table] = facts.tables
    assert table != "caf" and table.startswith("caf") and len(table) == 4
    # Equal bytes stay equal: a dollar-quoted body with such a tag is one literal.
    dollar = _one(_bytes(b"SELECT $\xe9$ DROP TABLE t; $\xe9$"))
    assert dollar.command == "SELECT" and "DropStmt" not in dollar.kinds


def test_a_name_with_such_bytes_too_long_to_truncate_alike_is_refused() -> None:
    """The server truncates names at 63 bytes; a byte it reads as one is parsed as three."""
    name = b"f" * 62 + b"\xe9"
    analysis = PostgresDialect().analyze(_bytes(b"SELECT " + name + b"()"))
    assert not analysis.parseable
    assert "too long to be judged exactly" in analysis.error
    quoted = PostgresDialect().analyze(_bytes(b'SELECT 1 AS "' + b"a " * 31 + b'\xe9"'))
    assert not quoted.parseable
    assert _one(_bytes(b"SELECT " + b"f" * 20 + b"\xe9()")).command == "SELECT"


def test_the_dialect_keeps_nothing_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """It serves every session: an answer kept here would come faster to one user for a text
    another sent (plugins cache per principal, hoopgw.sql.AnalysisCache)."""
    parsed: list[str] = []
    real = analysis_module.parse

    def spy(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(analysis_module, "parse", spy)
    dialect = PostgresDialect()
    for _ in range(2):
        dialect.analyze("SELECT 1")
        dialect.analyze_shape("SELECT 1")
        assert not ends_transaction("SELECT 1")
    assert parsed == ["SELECT 1"] * 6


def test_multi_statement_text_yields_every_statement() -> None:
    analysis = PostgresDialect().analyze("SELECT 1; DROP TABLE t; SHOW x")
    assert [s.kind for s in analysis.statements] == [
        "SelectStmt",
        "DropStmt",
        "VariableShowStmt",
    ]


# Every way a session could leave the read-only mode the gateway starts it in (issue 14).
READ_WRITE = [
    "SET default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO false",
    "SET LOCAL transaction_read_only = 0",
    "SET transaction_read_only = 'no'",
    'SET "Default_Transaction_Read_Only" = off',
    "SET default_transaction_read_only = 'o'",  # refused unless provably true
    "SET default_transaction_read_only = 2",
    "SET TRANSACTION READ WRITE",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, READ WRITE",
    "BEGIN READ WRITE",
    "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, READ WRITE",
    "START TRANSACTION READ WRITE",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT 1 WHERE pg_catalog.set_config('transaction_read_only', 'off', true) IS NOT NULL",
    "SELECT set_config(' TRANSACTION_READ_ONLY', 'on', false)",
    "SELECT set_config('default_' || 'transaction_read_only', 'off', false)",
    "WITH x AS (SELECT set_config(name, 'off', false) FROM pg_settings) SELECT 1",
    "ALTER ROLE agent SET default_transaction_read_only = off",
    "ALTER DATABASE d SET transaction_read_only TO false",
    "ALTER SYSTEM SET default_transaction_read_only = off",
    "ALTER SYSTEM SET work_mem = '1GB'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql"
    " SET default_transaction_read_only FROM CURRENT AS 'SELECT 1'",
    "EXPLAIN SELECT set_config('transaction_read_only', 'off', false)",
    "PREPARE p AS SELECT set_config('transaction_read_only', 'off', false)",
    "SELECT dblink_exec('dbname=app', 'DELETE FROM canary')",
    "DO $$ BEGIN PERFORM 1; END $$",
    "CALL refresh_reports()",
]
STAYS_READ_ONLY = [
    "SET default_transaction_read_only = on",
    "SET default_transaction_read_only = TRUE",
    "SET default_transaction_read_only = 'Yes'",
    "SET default_transaction_read_only = 1",
    "SET default_transaction_read_only TO DEFAULT",
    "RESET default_transaction_read_only",
    "RESET transaction_read_only",
    "RESET ALL",
    "DISCARD ALL",
    "SET TRANSACTION READ ONLY",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "BEGIN",
    "BEGIN READ ONLY",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, DEFERRABLE",
    "SELECT current_setting('transaction_read_only')",
    "SELECT set_config('application_name', 'x', false)",
    "ALTER ROLE agent RESET default_transaction_read_only",
    "SET work_mem = '64MB'",
]


@pytest.mark.parametrize("sql", READ_WRITE)
def test_statements_that_leave_read_only_mode_say_so(sql: str) -> None:
    (facts,) = PostgresDialect().analyze(sql).statements
    assert facts.read_write, sql


@pytest.mark.parametrize("sql", STAYS_READ_ONLY)
def test_statements_that_keep_read_only_mode_do_not(sql: str) -> None:
    (facts,) = PostgresDialect().analyze(sql).statements
    assert not facts.read_write, (sql, facts.read_write)


def test_explain_runs_when_any_analyze_may_be_on() -> None:
    # PostgreSQL applies options in order (the last wins): any ANALYZE that may be on counts.
    for options in (
        "ANALYZE false, ANALYZE true",
        "ANALYZE off, VERBOSE, ANALYZE",
        "ANALYZE 0, ANALYZE 1",
        "ANALYZE 'false', ANALYZE 'on'",
        "ANALYZE true, ANALYZE false",
        "ANALYZE 2",
    ):
        facts = _one(f"EXPLAIN ({options}) DELETE FROM t")
        assert "write" in facts.causes, options
    assert "write" in _one("EXPLAIN ANALYZE VERBOSE DELETE FROM t WHERE id = 1").causes
    for options in ("ANALYZE false", "ANALYZE off, VERBOSE", "ANALYZE 0, ANALYZE no"):
        assert "write" not in _one(f"EXPLAIN ({options}) DELETE FROM t").causes, options


def test_built_in_functions_are_classified_from_the_reviewed_lists() -> None:
    cases = {
        "SELECT * FROM ts_stat('SELECT 1')": "opaque-code",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT 1')": "opaque-code",
        "SELECT table_to_xml('t', false, false, '')": "opaque-code",
        "SELECT pg_replication_origin_create('o')": "admin",
        "SELECT pg_catalog.nextval('s')": "write",
        "SELECT lo_put(1, 0, 'x')": "write",
        "SELECT other.pg_read_file('x')": "file-access",
    }
    for text, cls in cases.items():
        assert cls in _one(text).causes, text
    harmless = _one("SELECT lower(a), pg_catalog.now(), random(), pg_sleep(0), count(*) FROM t")
    assert harmless.causes == {} and not harmless.unlisted_functions
    assert harmless.resolvable_functions == {"lower", "random", "pg_sleep", "count"}


def test_unlisted_functions_are_opaque_until_resolved() -> None:
    facts = _one("SELECT f(), public.lower('x'), upper('y')")
    assert facts.unlisted_functions == {"f", "public.lower"}
    assert "opaque-code" in facts.causes and not facts.other_opaque_cause
    assert facts.resolved({}).causes == {}
    assert facts.resolved({"f": "f() (VOLATILE: public.f)"}).causes == {
        "opaque-code": "f() (VOLATILE: public.f)"
    }
    # Another cause of opaque-code stays whatever the catalog says.
    call = _one("CALL p(f())")
    assert call.resolved({}).causes["opaque-code"] == "CALL"


def test_field_names_may_be_function_calls() -> None:
    facts = _one("SELECT c.id, (c).wipe, t.c.x, y FROM t c")
    assert facts.field_names == {"id", "wipe", "x"}


def test_operators_are_named() -> None:
    facts = _one("SELECT a + 1, b OPERATOR(app.===) 2 FROM t WHERE c BETWEEN 1 AND 2 AND d ~~ 'x'")
    assert facts.operators == {"+", "app.===", "~~", ">=", "<="}


def test_operators_implied_by_the_syntax_are_named() -> None:
    assert _one("SELECT 1 WHERE a NOT BETWEEN SYMMETRIC 1 AND 2").operators == {"<", ">"}
    assert _one("SELECT CASE a WHEN 1 THEN 2 END").operators == {"="}
    assert _one("SELECT CASE WHEN a THEN 2 END").operators == set()
    sorted_by = _one("SELECT a FROM t ORDER BY a USING OPERATOR(app.<<<), b USING >")
    assert sorted_by.operators == {"app.<<<", ">"}


def test_other_names_holding_a_dot_are_opaque() -> None:
    for sql in (
        'SELECT * FROM "a.b"',
        'SELECT * FROM s."a.b"',
        'SELECT c."a.b" FROM t c',
        'SELECT (c)."a.b" FROM t c',
        'SELECT 1::"a.b"',
    ):
        assert "holding a dot" in _one(sql).resolved({}).causes["opaque-code"], sql


def test_a_function_name_holding_a_dot_is_opaque() -> None:
    facts = _one('SELECT "pg_catalog.lower"(1)')
    assert facts.resolved({}).causes["opaque-code"].startswith("pg_catalog.lower()")


def test_writes_must_restrict_their_target() -> None:
    unbounded = (
        "DELETE FROM t USING u WHERE u.x = 1",
        "UPDATE t SET a = 1 FROM u WHERE u.id = 1",
        "UPDATE t SET a = 1 FROM u WHERE id = 1",  # ambiguous: may be u's column
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u)",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE id = 1)",
        "DELETE FROM t WHERE t.a IS NOT NULL OR true",
        "DELETE FROM t WHERE id NOT IN (SELECT id FROM u)",
        "DELETE FROM t WHERE a <> ALL ('{}')",
        "DELETE FROM t WHERE NOT (a = a)",
        "DELETE FROM t WHERE (a = 1 OR true) = true",
        "DELETE FROM t WHERE coalesce(a = 1, true)",
        "DELETE FROM t x WHERE t.a = 1",  # t is not the target's name once aliased
        "DELETE FROM t WHERE t.a = a",
        "DELETE FROM t x WHERE x.a >= a",
        "DELETE FROM t WHERE id IS NOT NULL",  # every row of a NOT NULL column
        "DELETE FROM t WHERE note LIKE '%%'",
        "MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
        "MERGE INTO t USING u ON u.x = 1 WHEN MATCHED THEN UPDATE SET a = 1",
        "MERGE INTO t USING u ON t.id = u.id OR true WHEN MATCHED THEN DELETE",
        "WITH d AS (DELETE FROM t USING u WHERE u.x = 1 RETURNING 1) SELECT * FROM d",
    )
    for text in unbounded:
        assert "unbounded-write" in _one(text).causes, text
    bounded = (
        "DELETE FROM t WHERE id = 1",
        "DELETE FROM t WHERE id IN (SELECT id FROM u)",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.tid = t.id)",
        "DELETE FROM t USING u WHERE t.id = u.id AND u.x = 1",
        "UPDATE s.t SET a = 1 FROM u WHERE s.t.id = u.id",
        "DELETE FROM t x WHERE x.a = 1 AND true",
        "DELETE FROM t WHERE NOT archived",
        "DELETE FROM t WHERE a IS NULL OR b = 2",
        "DELETE FROM t WHERE note LIKE 'x%'",
        "DELETE FROM t WHERE a = b",
        "DELETE FROM t WHERE CURRENT OF c",
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
        "MERGE INTO t USING u ON true WHEN MATCHED AND t.a = 1 THEN DELETE"
        " WHEN NOT MATCHED THEN INSERT VALUES (1)",
    )
    for text in bounded:
        assert "unbounded-write" not in _one(text).causes, text


def test_a_like_pattern_of_only_percent_signs_keeps_every_row_however_spelled() -> None:
    """The grammar wraps a SIMILAR TO pattern, and one with ESCAPE, in a function call
    (``similar_to_escape``, ``like_escape``); a cast or COLLATE keeps the value: each is judged
    by the constant inside, and the judgement reads its value (no shape cache answers it)."""
    for text in (
        "DELETE FROM t WHERE note SIMILAR TO '%'",
        "UPDATE t SET a = 1 WHERE note SIMILAR TO '%%' ESCAPE '#'",
        "DELETE FROM t WHERE note SIMILAR TO '%' AND note SIMILAR TO '%'",
        "DELETE FROM t WHERE note LIKE '%' ESCAPE '#'",
        "DELETE FROM t WHERE note ILIKE '%%' ESCAPE '#'",
        "DELETE FROM t WHERE note LIKE '%'::text",
        "DELETE FROM t WHERE note LIKE text '%'",
        "DELETE FROM t WHERE note LIKE '%' COLLATE \"C\"",
        "DELETE FROM t WHERE note LIKE ('%'::varchar)::text COLLATE \"C\" ESCAPE '#'",
        "DELETE FROM t WHERE note SIMILAR TO '%'::text ESCAPE '#'",
    ):
        assert "unbounded-write" in _one(text).causes, text
    assert "unbounded-write" not in _one("DELETE FROM t WHERE note SIMILAR TO 'x%'").causes
    assert PostgresDialect().analyze("DELETE FROM t WHERE note SIMILAR TO 'x%'").reads_literals


def test_every_statement_of_the_tests_gets_the_facts_recorded_for_it() -> None:
    """The analysis of every PostgreSQL statement in the tests is what ``facts.json`` holds:
    what the walk over the binding's protobuf tree gave before the walk over JSON replaced it
    (``tests/protocols/postgres/statements.py`` writes the file again)."""
    statements: Any = sys.modules["hoopgw_tests_pg_statements"]
    expected = statements.expected()
    # The record is fixed: statements added to the tests since are not in it, and need not be.
    assert len(expected) >= 500
    dialect = PostgresDialect()
    for text, facts in expected.items():
        assert statements.described(dialect.analyze(text)) == facts, text


def test_the_analysis_for_a_shape_cache_is_the_analysis_without_texts() -> None:
    statements: Any = sys.modules["hoopgw_tests_pg_statements"]
    dialect = PostgresDialect()
    for text in statements.statements():
        full, shaped = dialect.analyze(text), dialect.analyze_shape(text)
        assert all(s.text == "" for s in shaped.statements), text
        assert shaped == attrs.evolve(
            full, statements=tuple(attrs.evolve(s, text="") for s in full.statements)
        ), text


@pytest.mark.parametrize("depth", [60, 90])
def test_deeply_nested_statements_are_judged_to_their_depths(depth: int) -> None:
    """The binding's protobuf decoder gave up at 50 levels of subqueries (an exception, which
    refused the command without a reason); the walk over plain dicts reads them."""
    inner = "SELECT pg_read_file('/etc/passwd')"
    text = "SELECT * FROM t WHERE a IN (" * depth + inner + ")" * depth
    analysis = PostgresDialect().analyze(text)
    assert analysis.parseable
    assert "file-access" in analysis.statements[0].classes


def test_statements_nested_beyond_the_walk_are_unparseable() -> None:
    text = "DELETE FROM t WHERE " + "NOT " * 5000 + "a"
    assert "nested too deeply" in PostgresDialect().analyze(text).error


def test_copy_encodings_are_the_encoding_options_as_written() -> None:
    # The server sends such a COPY's data in the named encoding, not the client's.
    assert copy_encodings("COPY t TO STDOUT (FORMAT csv, ENCODING 'LATIN1')") == {"LATIN1"}
    assert copy_encodings("COPY (SELECT 1) TO STDOUT WITH ENCODING 'win1252'") == {"win1252"}
    two = "COPY a TO STDOUT (ENCODING 'LATIN1'); COPY b TO STDOUT (ENCODING 'EUC_JP')"
    assert copy_encodings(two) == {"LATIN1", "EUC_JP"}
    assert copy_encodings("COPY t TO STDOUT") == {""}  # the client's encoding
    assert copy_encodings("COPY a TO STDOUT (ENCODING 'UTF8'); COPY b TO STDOUT") == {"UTF8", ""}
    assert copy_encodings("SELECT 'ENCODING'") == frozenset()
    assert copy_encodings("COPY t TO STDOUT (ENCODING") == frozenset()  # does not parse


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
    from hoopgw.session import Identity
    from hoopgw.sql import AnalysisCache

    identity = Identity(name="alice")
    for by_shape in (False, True):
        cache = AnalysisCache(PostgresDialect())
        gc.collect()
        tracemalloc.start()
        try:
            if by_shape:
                assert cache.shape_key(identity, text, {}) is not None or len(text) > 1000
                cache.analyze_shape(identity, text, {})
            else:
                cache.analyze(identity, text, {})
            gc.collect()
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(cache) == 1 and 0 < size <= cache.weight
