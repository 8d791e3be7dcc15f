"""Guardrails judge what PostgreSQL will run: option precedence, built-in and user functions,
and writes that do not restrict their target (issue 14, classes 2, 3, 4 and 6).

The reviewed built-in lists are checked against the real server's ``pg_proc``; the server's own
rules that the judgement relies on (the last EXPLAIN option wins; a STABLE function cannot
change data) are checked on the server; each attack is sent through the real gateway and the
canary is checked over a direct connection.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hoopgw_postgres.analysis import FUNCTION_CLASSES, HARMLESS_FUNCTIONS, REVIEWED_VOLATILE

pytestmark = pytest.mark.integration

SETUP = """
CREATE TABLE canary (id int PRIMARY KEY, note text);
INSERT INTO canary SELECT g, 'row ' || g FROM generate_series(1, 5) g;
CREATE TABLE other (id int PRIMARY KEY, x int);
INSERT INTO other VALUES (1, 1), (2, 2);
CREATE SEQUENCE canary_seq;
CREATE FUNCTION canary_wipe() RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN 1; END $$;
CREATE FUNCTION canary_touch() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION canary_count() RETURNS bigint STABLE
  BEGIN ATOMIC SELECT count(*) FROM canary; END;
CREATE FUNCTION canary_count_text() RETURNS bigint LANGUAGE sql STABLE AS
  $$ SELECT count(*) FROM canary $$;
CREATE FUNCTION canary_stable_calls() RETURNS int STABLE RETURN canary_wipe();
CREATE FUNCTION canary_stable_plpgsql() RETURNS int LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN canary_wipe(); END $$;
CREATE VIEW canary_wipe_view AS SELECT canary_wipe() AS x;
CREATE FUNCTION canary_eq(int, int) RETURNS bool LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN $1 = $2; END $$;
CREATE OPERATOR === (FUNCTION = canary_eq, LEFTARG = int, RIGHTARG = int);
CREATE FUNCTION wipe_row(canary) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN 1; END $$;
CREATE FUNCTION canary_stable_wipe() RETURNS int LANGUAGE plpgsql STABLE AS
  $$ BEGIN DELETE FROM canary; RETURN 1; END $$;
CREATE FUNCTION lower(int) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN $1; END $$;
CREATE FUNCTION canary_step(int, int) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN coalesce($1, 0) + $2; END $$;
CREATE AGGREGATE canary_sum(int) (sfunc = canary_step, stype = int);
"""


@pytest.fixture
def canary(pg_server: Any, pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    params = {"host": pg_server.host, "port": pg_server.port, "user": "postgres"}
    with psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn:
        conn.execute(SETUP)
        yield conn


def _rows(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM canary").fetchone()[0])  # type: ignore[index]


def _agent(gateway: Any, pg_database: str, **guardrails: Any) -> psycopg.Connection[Any]:
    gw = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": guardrails},
    )
    key = gw.create_key("agent", ["agents"])
    return psycopg.connect(
        host=gw.host,
        port=gw.port,
        user="agent",
        password=key,
        dbname=pg_database,
        sslmode="disable",
        autocommit=True,
    )


def _refused(agent: psycopg.Connection[Any], sql: str) -> str:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        agent.execute(sql)
    return refused.value.diag.message_primary or ""


# -- the reviewed lists against the server's catalog --------------------------------------


def test_every_volatile_built_in_function_is_reviewed(canary: psycopg.Connection[Any]) -> None:
    volatile = {
        name
        for (name,) in canary.execute(
            "SELECT DISTINCT proname FROM pg_proc"
            " WHERE pronamespace = 'pg_catalog'::regnamespace AND provolatile = 'v'"
        )
    }
    unreviewed = sorted(volatile - REVIEWED_VOLATILE - set(FUNCTION_CLASSES))
    assert not unreviewed, (
        "VOLATILE built-in functions in no class and not on the reviewed read-only list of"
        f" protocols/postgres/hoopgw_postgres/functions.toml: {unreviewed}"
    )


def test_built_ins_that_take_a_query_as_text_are_opaque_code(
    canary: psycopg.Connection[Any],
) -> None:
    takes_sql = {
        name
        for (name,) in canary.execute(
            "SELECT DISTINCT p.proname FROM pg_proc p, unnest(p.proargnames) AS a(n)"
            " WHERE p.pronamespace = 'pg_catalog'::regnamespace AND a.n IN ('query', 'sql')"
            " AND 'text'::regtype = ANY (p.proargtypes::oid[])"
        )
    }
    # ts_rewrite(tsquery, text) runs its unnamed second argument.
    takes_sql.add("ts_rewrite")
    assert {"query_to_xml", "ts_stat"} <= takes_sql
    assert not [n for n in takes_sql if "opaque-code" not in FUNCTION_CLASSES.get(n, ())]


def test_the_stable_list_matches_the_server(canary: psycopg.Connection[Any]) -> None:
    listed = (
        Path(__file__).parents[2] / "protocols/postgres/hoopgw_postgres/stable_functions.txt"
    ).read_text()
    stable = {line for line in listed.splitlines() if line and not line.startswith("#")}
    server = {
        name
        for (name,) in canary.execute(
            "SELECT DISTINCT proname FROM pg_proc p"
            " WHERE pronamespace = 'pg_catalog'::regnamespace AND NOT EXISTS (SELECT 1"
            " FROM pg_proc q WHERE q.pronamespace = p.pronamespace AND q.proname = p.proname"
            " AND q.provolatile = 'v')"
        )
    }
    assert stable <= server | set(FUNCTION_CLASSES), sorted(stable - server)[:20]
    assert not stable & REVIEWED_VOLATILE
    assert server <= HARMLESS_FUNCTIONS | set(FUNCTION_CLASSES)


# -- the server's own rules that the judgement relies on -----------------------------------


def test_the_server_applies_the_last_explain_option(canary: psycopg.Connection[Any]) -> None:
    with canary.transaction(force_rollback=True):
        canary.execute("EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM canary")
        assert _rows(canary) == 0
    with canary.transaction(force_rollback=True):
        canary.execute("EXPLAIN (ANALYZE true, ANALYZE false) DELETE FROM canary")
        assert _rows(canary) == 5


def test_the_server_applies_the_last_transaction_mode(canary: psycopg.Connection[Any]) -> None:
    # The same order rule for transaction modes: whoever judges them must count any READ WRITE.
    for modes, read_only in (("READ ONLY, READ WRITE", "off"), ("READ WRITE, READ ONLY", "on")):
        with canary.transaction(force_rollback=True):
            canary.execute(f"SET TRANSACTION {modes}")
            assert canary.execute("SHOW transaction_read_only").fetchone() == (read_only,)
    # COPY, by contrast, refuses a repeated option.
    with pytest.raises(psycopg.errors.SyntaxError, match="redundant"):
        canary.execute("COPY (SELECT 1) TO STDOUT (FORMAT csv, FORMAT text)")


def test_the_server_refuses_data_changes_in_a_stable_function(
    canary: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="non-volatile function"):
        canary.execute("SELECT canary_stable_wipe()")
    assert _rows(canary) == 5


def test_a_stable_function_may_call_a_volatile_one_that_writes(
    canary: psycopg.Connection[Any],
) -> None:
    # Why volatility alone is not enough: PostgreSQL keeps a STABLE function's own statements
    # from changing data, not the VOLATILE functions it calls.
    for call in ("canary_stable_plpgsql()", "canary_stable_calls()"):
        with canary.transaction(force_rollback=True):
            canary.execute(f"SELECT {call}")
            assert _rows(canary) == 0, call


def test_column_notation_calls_a_function_on_the_row(canary: psycopg.Connection[Any]) -> None:
    with canary.transaction(force_rollback=True):
        canary.execute("SELECT c.wipe_row FROM canary c LIMIT 1")
        assert _rows(canary) == 0


def test_an_operator_runs_its_function(canary: psycopg.Connection[Any]) -> None:
    with canary.transaction(force_rollback=True):
        canary.execute("SELECT 1 === 2")
        assert _rows(canary) == 0


def test_ts_stat_runs_the_query_it_is_given(canary: psycopg.Connection[Any]) -> None:
    canary.execute("SELECT * FROM ts_stat($$SELECT to_tsvector(setval('canary_seq', 99)::text)$$)")
    assert canary.execute("SELECT last_value FROM canary_seq").fetchone() == (99,)


# -- attacks through the gateway -----------------------------------------------------------


def test_explain_with_a_repeated_analyze_is_judged_as_run(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    gw = gateway(
        plugins=["guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"preset": "agent-readonly"}},
    )
    key = gw.create_key("agent", ["agents"])
    env = {**os.environ, "PGPASSWORD": key, "PGSSLMODE": "disable"}
    psql = ["psql", "-h", gw.host, "-p", str(gw.port), "-U", "agent", "-d", pg_database, "-Atc"]
    for sql in (
        "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM canary",
        "EXPLAIN (ANALYZE off, VERBOSE, ANALYZE) DELETE FROM canary",
        "EXPLAIN (ANALYZE 0, ANALYZE 1) UPDATE canary SET note = 'x'",
    ):
        done = subprocess.run([*psql, sql], env=env, capture_output=True, text=True, check=False)
        assert "hoopgw refused the command: write" in done.stderr, (sql, done.stderr)
        assert _rows(canary) == 5
    done = subprocess.run(
        [*psql, "EXPLAIN (ANALYZE false, COSTS off) DELETE FROM canary"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "Delete on canary" in done.stdout, done.stderr


STATE = (
    "SELECT (SELECT last_value FROM canary_seq), (SELECT count(*) FROM pg_replication_origin),"
    " (SELECT count(*) FROM pg_largeobject_metadata)"
)


def test_built_ins_that_run_text_or_change_state_are_refused(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    before = canary.execute(STATE).fetchone()
    with _agent(gateway, pg_database, preset="agent-readonly") as agent:
        for sql in (
            "SELECT * FROM ts_stat($$SELECT to_tsvector(setval('canary_seq', 99)::text)$$)",
            "SELECT ts_rewrite('a'::tsquery, $$SELECT 'a'::tsquery, 'b'::tsquery$$)",
            "SELECT pg_replication_origin_create('canary_origin')",
            "SELECT nextval('canary_seq')",
            "SELECT lo_from_bytea(0, 'x')",
        ):
            assert _refused(agent, sql).startswith("hoopgw refused the command: "), sql
            assert canary.execute(STATE).fetchone() == before, sql


def test_user_functions_that_may_write_are_refused(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    with _agent(
        gateway,
        pg_database,
        preset="agent-readonly",
        catalog_user="postgres",
        catalog_sslmode="disable",
    ) as agent:
        for sql in (
            "SELECT canary_wipe()",
            "SELECT public.canary_wipe()",
            "SELECT * FROM canary_wipe()",
            "SELECT canary_stable_plpgsql()",  # STABLE, but calls a VOLATILE function
            "SELECT canary_stable_calls()",  # the same with a SQL-standard body
            "SELECT canary_count_text()",  # STABLE, but what its text body calls is unknown
            "SELECT lower(1)",  # a user overload of a built-in name
            "SELECT lower('X')",  # the same name: every overload counts
            "SELECT canary_sum(id) FROM other",  # an aggregate with a volatile step
            "SELECT * FROM canary_wipe_view",  # a view that calls one
            "SELECT c.wipe_row FROM canary c",  # column notation calls wipe_row(c)
            "SELECT (c).wipe_row FROM canary c",
            "SELECT 1 === 2",  # an operator backed by one
            "SELECT 1 OPERATOR(public.===) 2",
            "SELECT nosuch_function()",
        ):
            assert "opaque-code" in _refused(agent, sql), sql
            assert _rows(canary) == 5, sql
        row = agent.execute("SELECT canary_count(), upper('X'), c.note FROM canary c WHERE id = 1")
        assert row.fetchone() == (5, "X", "row 1")


def test_without_a_catalog_every_unlisted_function_is_refused(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    with _agent(gateway, pg_database, deny=["opaque-code"]) as agent:
        message = _refused(agent, "SELECT canary_count()")
        assert "catalog_user" in message
        assert "opaque-code" in _refused(agent, "SELECT canary_wipe()")
        assert agent.execute("SELECT upper('X')").fetchone() == ("X",)
    assert _rows(canary) == 5


def test_a_hand_written_deny_list_allows_a_volatile_function_by_name(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    with _agent(
        gateway,
        pg_database,
        deny=["opaque-code"],
        catalog_user="postgres",
        catalog_sslmode="disable",
        allow_functions=["public.canary_touch"],
    ) as agent:
        assert "opaque-code" in _refused(agent, "SELECT canary_wipe()")
        assert agent.execute("SELECT canary_touch(), canary_count()").fetchone() == (1, 5)
        assert _rows(canary) == 5
        # A session that changes functions can no longer trust the side connection's view.
        agent.execute("BEGIN")
        agent.execute("ALTER FUNCTION canary_stable_wipe() VOLATILE")
        assert "reconnect" in _refused(agent, "SELECT canary_stable_wipe()")
        agent.execute("ROLLBACK")
    assert _rows(canary) == 5


UNBOUNDED = (
    "DELETE FROM canary USING other u WHERE u.x = 1",
    "UPDATE canary SET note = 'x' FROM other u WHERE u.id = 1",
    "DELETE FROM canary WHERE EXISTS (SELECT 1 FROM other)",
    "DELETE FROM canary WHERE true",
    "DELETE FROM canary WHERE 1 = 1",
    "DELETE FROM canary WHERE id = id",
    "DELETE FROM canary WHERE canary.id IS NOT NULL OR true",
    "DELETE FROM canary WHERE canary.id = id",
    "DELETE FROM canary WHERE id IS NOT NULL",
    "DELETE FROM canary WHERE note LIKE '%'",
    "DELETE FROM canary WHERE id NOT IN (SELECT id FROM other WHERE false)",
    "MERGE INTO canary c USING other s ON true WHEN MATCHED THEN DELETE",
    "MERGE INTO canary c USING other s ON s.id = 1 WHEN MATCHED THEN UPDATE SET note = 'x'",
)


def test_writes_that_do_not_restrict_their_target_are_refused(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    before = canary.execute("SELECT * FROM canary ORDER BY id").fetchall()
    with _agent(gateway, pg_database, deny=["unbounded-write"]) as agent:
        for sql in UNBOUNDED:
            assert "unbounded-write" in _refused(agent, sql), sql
            assert canary.execute("SELECT * FROM canary ORDER BY id").fetchall() == before, sql
        agent.execute("DELETE FROM canary USING other u WHERE canary.id = u.id AND u.x = 1")
    assert _rows(canary) == 4


def test_psql_introspection_still_works_with_the_catalog(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    guardrails = {
        "preset": "agent-readonly",
        "catalog_user": "postgres",
        "catalog_sslmode": "disable",
    }
    gw = gateway(
        plugins=["guardrails"], connection={"client_tls": "disabled", "guardrails": guardrails}
    )
    key = gw.create_key("agent", ["agents"])
    env = {**os.environ, "PGPASSWORD": key, "PGSSLMODE": "disable"}
    psql = ["psql", "-h", gw.host, "-p", str(gw.port), "-U", "agent", "-d", pg_database]
    for command in (r"\d canary", r"\dt", r"\df canary_*", r"\dv", "SELECT count(*) FROM canary"):
        done = subprocess.run(
            [*psql, "-c", command], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (command, done.stderr)


# An older server's grammar reads the SQL/JSON constructors of the gateway's (PostgreSQL 16)
# grammar as calls of functions of these names, which a user may have created.
SQL_JSON_LOOKALIKES = """
CREATE FUNCTION json_array(int, int) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN 1; END $$;
CREATE FUNCTION json_object(text, int) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN 1; END $$;
CREATE AGGREGATE json_arrayagg(int) (sfunc = canary_step, stype = int);
"""


@pytest.mark.parametrize("catalog", [False, True])
def test_sql_json_constructors_are_judged_as_the_calls_an_older_server_makes(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any], catalog: bool
) -> None:
    canary.execute(SQL_JSON_LOOKALIKES)
    version = int(canary.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    options: dict[str, Any] = {"deny": ["opaque-code"]}
    if catalog:
        options.update(catalog_user="postgres", catalog_sslmode="disable")
    with _agent(gateway, pg_database, **options) as agent:
        for sql in (
            "SELECT json_array(1, 2)",
            "SELECT json_object('a', 1)",
            "SELECT json_arrayagg(id) FROM other",
        ):
            if version >= 160000 and "json_object" not in sql:
                continue  # the server's own grammar reads these as its constructors
            if not catalog and "json_object" in sql:
                continue  # without a catalog a built-in name is judged as the built-in
            assert "opaque-code" in _refused(agent, sql), sql
            assert _rows(canary) == 5, sql
    assert _rows(canary) == 5


USER_TYPE_OPERATORS = """
CREATE TYPE canary_pair AS (a int);
CREATE FUNCTION canary_ge(canary_pair, canary_pair) RETURNS bool LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN true; END $$;
CREATE OPERATOR >= (FUNCTION = canary_ge, LEFTARG = canary_pair, RIGHTARG = canary_pair);
CREATE OPERATOR <= (FUNCTION = canary_ge, LEFTARG = canary_pair, RIGHTARG = canary_pair);
CREATE OPERATOR = (FUNCTION = canary_ge, LEFTARG = canary_pair, RIGHTARG = canary_pair);
"""


def test_operators_the_syntax_implies_are_judged(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    """BETWEEN runs the type's >= and <=, CASE x WHEN y its =: user operators that write."""
    canary.execute(USER_TYPE_OPERATORS)
    with _agent(
        gateway,
        pg_database,
        deny=["opaque-code"],
        catalog_user="postgres",
        catalog_sslmode="disable",
    ) as agent:
        for sql in (
            "SELECT ROW(1)::canary_pair BETWEEN ROW(0)::canary_pair AND ROW(2)::canary_pair",
            "SELECT CASE ROW(1)::canary_pair WHEN ROW(1)::canary_pair THEN 1 END",
        ):
            assert "opaque-code" in _refused(agent, sql), sql
            assert _rows(canary) == 5, sql


CASTS_AND_DOMAINS = """
CREATE DOMAIN canary_dom AS int CHECK (canary_wipe() > 0);
CREATE TYPE canary_box AS (a int);
CREATE FUNCTION canary_boxed(int) RETURNS canary_box LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM canary; RETURN ROW($1); END $$;
CREATE CAST (int AS canary_box) WITH FUNCTION canary_boxed(int);
"""


def test_casts_and_domain_constraints_are_judged(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    """A cast runs its function, a cast to a domain runs the domain's CHECK constraints."""
    canary.execute(CASTS_AND_DOMAINS)
    with _agent(
        gateway,
        pg_database,
        deny=["opaque-code"],
        catalog_user="postgres",
        catalog_sslmode="disable",
    ) as agent:
        for sql in (
            "SELECT 1::canary_dom",
            "SELECT CAST(1 AS public.canary_dom)",
            "SELECT (1::canary_box).a",
        ):
            message = _refused(agent, sql)
            assert "opaque-code" in message and "type " in message, sql
            assert _rows(canary) == 5, sql
        assert agent.execute("SELECT 1::text, '2'::int, now()::date").fetchone() is not None


def test_a_relation_name_holding_a_dot_is_not_taken_for_a_qualified_one(
    gateway: Any, pg_database: str, canary: psycopg.Connection[Any]
) -> None:
    """The catalog look-up split "canary.wipe" into schema canary and view wipe, found
    nothing, and let the view (which calls a function that writes) run."""
    canary.execute('CREATE VIEW "canary.wipe" AS SELECT canary_wipe() AS x')
    with _agent(
        gateway,
        pg_database,
        deny=["opaque-code"],
        catalog_user="postgres",
        catalog_sslmode="disable",
    ) as agent:
        assert "holding a dot" in _refused(agent, 'SELECT * FROM "canary.wipe"')
    assert _rows(canary) == 5
