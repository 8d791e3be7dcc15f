"""Settings that change how PostgreSQL lexes statement text, end to end (issue 14, class 1).

A client that turns ``standard_conforming_strings`` off, or switches ``client_encoding`` to an
encoding whose multibyte characters hide a backslash, makes the server read a statement that
guardrails judged as one harmless SELECT as a SELECT and a DELETE. Each route to such a state
(``SET``, ``set_config()`` anywhere, a function, startup parameters, ``options``, role and
database defaults) is tried through the real gateway under ``agent-readonly``, followed by the
statement that would empty the canary; the canary is counted directly on the target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hoopgw_postgres import messages as m
from hoopgw_postgres.analysis import PostgresDialect
from hoopgw_postgres.lexing import LexingRefused, LexingState, lexes_alike
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from psycopg import sql

pytestmark = pytest.mark.integration

ROWS = 5
# One statement either way: with standard_conforming_strings=on a SELECT of two strings; with
# off, ``\'`` escapes the quote and the CTE that empties the canary becomes code.
SCS_ATTACK = (
    b"WITH x AS (SELECT 'a\\' || ') , d AS (DELETE FROM canary RETURNING 1) SELECT 1 --') SELECT 1"
)
# A character whose UTF-8 bytes end in a lead byte of the encoding, which then takes the
# backslash after it as its second byte: E'..\' is one string in UTF-8, a closed string
# followed by a DELETE in the encoding.
HIDING_CHARACTERS = {
    "SJIS": b"\xc2\x81",
    "SHIFT_JIS_2004": b"\xc2\x81",
    "BIG5": b"\xe0\xa1\xa1",
    "GBK": b"\xe0\xa0\x81",
    "GB18030": b"\xe0\xa0\x81",
}


def encoding_attack(encoding: str) -> bytes:
    return (
        b"WITH x AS (SELECT E'" + HIDING_CHARACTERS[encoding] + b"\\') ,"
        b" d AS (DELETE FROM canary RETURNING 1) SELECT 1 --') SELECT 1"
    )


@pytest.fixture
def canary(pg_server: Any, pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the test database, which holds ``canary`` with 5 rows."""
    params = {"host": pg_server.host, "port": pg_server.port, "user": "postgres"}
    with psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO canary SELECT g, 'row ' || g FROM generate_series(1, 5) g")
        conn.execute(
            "CREATE FUNCTION flip() RETURNS text LANGUAGE sql"
            " AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$"
        )
        yield conn


def rows(canary: psycopg.Connection[Any]) -> int:
    return int(canary.execute("SELECT count(*) FROM canary").fetchone()[0])


@pytest.fixture
def login(gateway: Any, pg_database: str) -> Any:
    """A gateway with recording and ``agent-readonly`` guardrails; a conninfo factory."""
    running = gateway(
        plugins=["recording", "guardrails"],
        connection={"client_tls": "disabled", "guardrails": {"preset": "agent-readonly"}},
    )
    key = running.create_key("agent", ["agents"])

    class Login:
        gw = running

        @staticmethod
        def conninfo(**extra: str) -> str:
            params = {
                "host": running.host,
                "port": str(running.port),
                "user": "agent",
                "password": key,
                "dbname": pg_database,
                "sslmode": "disable",
                **extra,
            }
            return psycopg.conninfo.make_conninfo(**params)

    return Login


def run_raw(conn: psycopg.Connection[Any], *texts: bytes) -> list[tuple[str, str]]:
    """Send each text as one simple Query, as bytes; ``(sqlstate, message)`` of each error.

    Stops at the first text the connection no longer carries (the gateway ended it)."""
    pgconn = conn.pgconn
    failures = []
    for text in texts:
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            break
        pgconn.send_query(text)
        while (result := pgconn.get_result()) is not None:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                failures.append(
                    (
                        (result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode(),
                        (result.error_message or b"").decode("utf-8", "replace"),
                    )
                )
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                break
    return failures


def assert_refused_or_ended(
    failures: list[tuple[str, str]], ended: bool, refused: str, route: bytes
) -> None:
    """The route either ended the session when the server reported the value (naming the
    setting), or was refused itself by a policy that judges it (42501, session goes on)."""
    if ended:
        assert any(refused in message for _, message in failures), (route, failures)
    else:
        assert failures and failures[0][0] == "42501", (route, failures)


def ended_sessions(login: Any) -> list[dict[str, Any]]:
    """The recorded sessions once every one has ended (recording is asynchronous)."""
    deadline = time.monotonic() + 10
    while True:
        listed = login.gw.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found = list(json.loads(listed.stdout))
        if (found and all(s["ended_at"] for s in found)) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# -- standard_conforming_strings -----------------------------------------------------------------

SCS_ROUTES = [
    b"SET standard_conforming_strings = off",
    b"SET SESSION standard_conforming_strings TO 'off'",
    b"BEGIN; SET LOCAL standard_conforming_strings = false",
    b"SELECT set_config('standard_conforming_strings', 'off', false)",
    b"SELECT 1 WHERE set_config('standard_conforming_strings', 'off', false) IS NOT NULL",
    b"BEGIN; SELECT count(*) FROM"
    b" (SELECT pg_catalog.set_config('standard_conforming_strings', '0', true)) s",
    b"SELECT flip()",
]


def test_standard_conforming_strings_off_never_lets_a_hidden_delete_run(
    login: Any, canary: psycopg.Connection[Any]
) -> None:
    for route in SCS_ROUTES:
        with psycopg.connect(login.conninfo(), autocommit=True) as conn:
            failures = run_raw(conn, route, SCS_ATTACK)
            ended = conn.pgconn.status != psycopg.pq.ConnStatus.OK
        assert rows(canary) == ROWS, route
        # The server's report of the new value ends the session, naming the setting (unless a
        # policy refused the route itself, as one may for functions it cannot see into).
        assert_refused_or_ended(
            failures, ended, "standard_conforming_strings=off is refused", route
        )
        if route.startswith(b"SET"):
            assert ended, route
    for session in ended_sessions(login):
        reason = session["end_reason"]
        assert "standard_conforming_strings=off is refused" in reason or reason == "client closed"


def test_the_server_lexes_a_whole_query_string_before_running_any_of_it(
    login: Any, canary: psycopg.Connection[Any]
) -> None:
    # Why a SET in the same Query string cannot desync: the target raw-parses the whole
    # string with the settings in force, then runs it (checked here without the gateway).
    canary.execute("BEGIN")
    canary.pgconn.send_query(b"SET LOCAL standard_conforming_strings = off; " + SCS_ATTACK)
    while canary.pgconn.get_result() is not None:
        pass
    assert rows(canary) == ROWS
    canary.execute("ROLLBACK")
    with psycopg.connect(login.conninfo(), autocommit=True) as conn:
        run_raw(conn, b"SET standard_conforming_strings = off; " + SCS_ATTACK, SCS_ATTACK)
    assert rows(canary) == ROWS


def _pipelined(
    login: Any, pg_database: str, wire_client: Any, payload: bytes, barriers: int
) -> list[Any]:
    """Log in, send ``payload`` at once, read up to its ``barriers``-th ReadyForQuery (or the
    close)."""
    client = wire_client(login.gw.host, login.gw.port)
    key = psycopg.conninfo.conninfo_to_dict(login.conninfo())["password"]
    assert client.login(user="agent", database=pg_database, password=key)[-1].type == b"Z"
    client.send(payload)
    received = []
    for _ in range(barriers):
        received += client.receive_until(b"Z")  # up to each ReadyForQuery, or the close
    return received


def test_a_pipelined_query_waits_for_the_report_of_the_one_before(
    login: Any, pg_database: str, canary: psycopg.Connection[Any], wire_client: Any
) -> None:
    payload = (
        m.Query(query="SET standard_conforming_strings = off").encode()
        + m.Query(query=SCS_ATTACK.decode()).encode()
    )
    received = _pipelined(login, pg_database, wire_client, payload, 2)
    assert rows(canary) == ROWS
    fatal = [msg.fields() for msg in received if msg.type == b"E"]
    assert fatal and "standard_conforming_strings=off is refused" in fatal[-1]["M"]


@pytest.mark.parametrize("synced", [False, True], ids=["one-sync", "sync-between"])
def test_an_extended_pipeline_is_never_judged_with_a_stale_state(
    login: Any, pg_database: str, canary: psycopg.Connection[Any], wire_client: Any, synced: bool
) -> None:
    def run(text: str) -> bytes:
        return (
            m.Parse(name="", query=text).encode()
            + m.Bind(portal="", statement="").encode()
            + m.Execute(portal="").encode()
        )

    middle = m.Sync().encode() if synced else b""
    payload = (
        run("SET standard_conforming_strings = off")
        + middle
        + run(SCS_ATTACK.decode())
        + m.Sync().encode()
    )
    received = _pipelined(login, pg_database, wire_client, payload, 2 if synced else 1)
    assert rows(canary) == ROWS
    errors = [msg.fields()["M"] for msg in received if msg.type == b"E"]
    if synced:
        # The SET is committed at the Sync: its report ends the session before the next text
        # (which waited for it) is judged.
        assert "standard_conforming_strings=off is refused" in errors[-1]
    else:
        # The server would only report the change after reading the next text: refused, which
        # also rolls the SET back with the pipeline's implicit transaction.
        assert "send Sync before it" in errors[-1]
        assert received[-1].type == b"Z"


def test_a_copy_through_the_extended_protocol_keeps_the_session_in_step(
    recorded_gateway: Any, wire_client: Any
) -> None:
    # libpq sends Parse/Bind/Execute/Sync at once; the server ignores a Sync in copy-in mode and
    # answers the one libpq sends after CopyDone. A gateway that waited for the first would hold
    # every later text that needs the lexing state for ever.
    login = recorded_gateway
    client = wire_client(login.gateway.host, login.gateway.port)
    client.login(user=login.identity, database=login.database, password=login.key)
    assert client.query("CREATE TEMP TABLE c (x int)")[-1].type == b"Z"
    client.send(
        m.Parse(name="", query="COPY c FROM STDIN").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    assert client.receive_until(b"G")[-1].type == b"G"
    client.send(m.CopyData(data=b"1\n").encode() + m.CopyDone().encode() + m.Sync().encode())
    assert [msg.type for msg in client.receive_until(b"Z")] == [b"C", b"Z"]
    assert client.query("SELECT 1")[-1].type == b"Z"
    answer = client.query("SELECT 'é' || count(*) FROM c")
    assert [msg.type for msg in answer] == [b"T", b"D", b"C", b"Z"]
    assert "é1".encode() in answer[1].body


# -- client_encoding -----------------------------------------------------------------------------


ENCODING_ROUTES = [
    "SET client_encoding = '{}'",
    "SET NAMES '{}'",
    "SELECT length(set_config('client_encoding', '{}', false))",
]


def test_an_encoding_that_hides_a_backslash_is_refused(
    login: Any, canary: psycopg.Connection[Any]
) -> None:
    for encoding in sorted(HIDING_CHARACTERS):
        for route in ENCODING_ROUTES:
            text = route.format(encoding).encode()
            with psycopg.connect(login.conninfo(), autocommit=True) as conn:
                failures = run_raw(conn, text, encoding_attack(encoding))
                ended = conn.pgconn.status != psycopg.pq.ConnStatus.OK
            assert rows(canary) == ROWS, text
            assert_refused_or_ended(failures, ended, f"client_encoding={encoding} is refused", text)
            if text.startswith(b"SET"):
                assert ended, text


def _login_refused(login: Any, canary: psycopg.Connection[Any], attack: bytes, **extra: str) -> str:
    """Connect with ``extra`` connection parameters and, if that works, try ``attack``."""
    try:
        conn = psycopg.connect(login.conninfo(**extra), autocommit=True)
    except psycopg.OperationalError as exc:
        message = str(exc)
    else:
        with conn:
            run_raw(conn, attack)
        message = ""
    assert rows(canary) == ROWS
    return message


def test_startup_parameters_and_options_are_refused(
    login: Any, canary: psycopg.Connection[Any]
) -> None:
    for options in (
        "-c standard_conforming_strings=off",
        "--standard-conforming-strings=off",
        "-cstandard_conforming_strings=no",
    ):
        message = _login_refused(login, canary, SCS_ATTACK, options=options)
        assert "standard_conforming_strings=off is refused by the gateway" in message, options
    for encoding, extra in (
        ("SJIS", {"client_encoding": "SJIS"}),
        ("BIG5", {"options": "-c client_encoding=BIG5"}),
        ("GBK", {"options": "--client_encoding=gbk"}),
    ):
        message = _login_refused(login, canary, encoding_attack(encoding), **extra)
        assert f"client_encoding={encoding} is refused by the gateway" in message, extra


def test_role_and_database_defaults_are_refused_at_the_next_login(
    login: Any, canary: psycopg.Connection[Any], pg_database: str
) -> None:
    db = sql.Identifier(pg_database)
    canary.execute(sql.SQL("ALTER DATABASE {} SET client_encoding = 'GBK'").format(db))
    message = _login_refused(login, canary, encoding_attack("GBK"))
    assert "client_encoding=GBK is refused" in message
    canary.execute(sql.SQL("ALTER DATABASE {} RESET client_encoding").format(db))
    canary.execute(
        sql.SQL("ALTER ROLE postgres IN DATABASE {} SET standard_conforming_strings = off").format(
            db
        )
    )
    message = _login_refused(login, canary, SCS_ATTACK)
    assert "standard_conforming_strings=off is refused" in message
    reasons = sorted(session["end_reason"] for session in ended_sessions(login))
    assert len(reasons) == 2
    assert "client_encoding=GBK is refused" in reasons[0]
    assert "standard_conforming_strings=off is refused" in reasons[1]


# -- safe encodings keep working ------------------------------------------------------------------


def test_a_latin1_client_is_judged_and_recorded_in_its_own_encoding(
    login: Any, canary: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(login.conninfo(client_encoding="LATIN1"), autocommit=True) as conn:
        assert conn.execute("SELECT 'café' || %s", ("ü",)).fetchone() == ("caféü",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM canary WHERE note = 'é'")
        conn.execute("SET client_encoding = 'WIN1252'")
        assert conn.execute("SELECT '€ \\ ' AS v").fetchone() == ("€ \\ ",)
        conn.execute("RESET client_encoding")
        assert conn.execute("SELECT 'ñ'").fetchone() == ("ñ",)
    assert rows(canary) == ROWS
    [session] = ended_sessions(login)
    shown = login.gw.cli("sessions", "show", session["id"], "--json")
    texts = [c["text"] for c in json.loads(shown.stdout)["commands"]]
    assert "SELECT 'café' || $1" in texts
    assert "SELECT '€ \\ ' AS v" in texts
    assert "SELECT 'ñ'" in texts


# -- property: the gateway's split is the server's -----------------------------------------------

# Pieces of string content chosen to confuse a lexer: quotes, backslashes, statement ends,
# comment and dollar-quote starts, hidden writes, and non-ASCII characters.
_PIECES = [
    "a",
    " ",
    "\\",
    "\\\\",
    "''",
    ";",
    "--",
    "/*",
    "*/",
    "$",
    "$$",
    "$q$",
    "\n",
    "E'",
    '"',
    "é",
    "ü",
    "€",
    "ア",
    "\x81",
    "'",
    "\\'",
    "; INSERT INTO canary DEFAULT VALUES; --",
    "\\'; INSERT INTO canary DEFAULT VALUES; --",
    "; INSERT INTO canary(note) VALUES ('pwn'); --",
]
_content = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)
_literal = st.one_of(
    _content.map(lambda c: "'" + c.replace("'", "''") + "'"),
    _content.map(lambda c: "E'" + c.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    _content.filter(lambda c: "$$" not in c and not c.endswith("$")).map(lambda c: f"$${c}$$"),
    _content.filter(lambda c: "$q$" not in c).map(lambda c: f"$q${c}$q$"),
    _content,  # raw: may break the statement, or hide one
)
_statement = st.one_of(
    st.lists(_literal, min_size=1, max_size=3).map(lambda parts: "SELECT " + " || ".join(parts)),
    _literal.map(lambda value: f"INSERT INTO canary(note) VALUES ({value})"),
)
_separator = st.sampled_from([";", "; ", ";\n", "; -- note\n", ";/* note */", " ;; "])
_text = st.tuples(
    st.lists(st.tuples(_statement, _separator), min_size=1, max_size=3),
    st.one_of(st.just(""), _content.map(lambda c: "-- " + c.replace("\n", " "))),
).map(lambda t: "".join(s + sep for s, sep in t[0]) + t[1])

# Every client encoding the gateway accepts that this UTF-8 database converts from.
_ENCODINGS = {
    "UTF8": "utf-8",
    "LATIN1": "latin-1",
    "WIN1252": "cp1252",
    "EUC_JP": "euc_jp",
    "SQL_ASCII": "utf-8",
}


def _server_runs(conn: psycopg.Connection[Any], raw: bytes) -> tuple[int, bool, int]:
    """Statements the server completed for ``raw``, whether it failed, and the canary rows it
    inserted; everything is rolled back."""
    pgconn = conn.pgconn
    pgconn.exec_(b"BEGIN")
    pgconn.send_query(raw)
    completed, failed = 0, False
    while (result := pgconn.get_result()) is not None:
        if result.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            completed += 1
        elif result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            failed = True
    inserted = 0
    if not failed:
        counted = pgconn.exec_(b"SELECT count(*) FROM canary")
        inserted = int(counted.get_value(0, 0) or b"0")
    pgconn.exec_(b"ROLLBACK")
    return completed, failed, inserted


def test_the_gateways_split_is_the_servers_in_every_allowed_state(
    pg_server: Any, pg_database: str
) -> None:
    """Random statement texts, lexed by the gateway's state and by the server (issue 14, "Done
    when"): wherever the gateway can judge a text, the server runs exactly the statements the
    gateway saw. Texts that lex alike in every state (what the gateway judges while an earlier
    command may still change the state) are also run with standard_conforming_strings=off and
    in SJIS, states such a command could bring."""
    params = {"host": pg_server.host, "port": pg_server.port, "user": "postgres"}
    dialect = PostgresDialect()
    checked: list[bool] = []
    with (
        psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn,
        psycopg.connect(**params, dbname=pg_database, autocommit=True) as off,
        psycopg.connect(**params, dbname=pg_database, autocommit=True) as sjis,
    ):
        conn.execute("CREATE TABLE canary (id int, note text)")
        off.pgconn.exec_(b"SET standard_conforming_strings = off")
        sjis.pgconn.exec_(b"SET client_encoding = 'SJIS'")

        @settings(max_examples=300, deadline=None, derandomize=True, database=None)
        @given(text=_text, encoding=st.sampled_from(sorted(_ENCODINGS)))
        def check(text: str, encoding: str) -> None:
            try:
                raw = text.encode(_ENCODINGS[encoding])
            except UnicodeEncodeError:
                assume(False)
            conn.pgconn.exec_(f"SET client_encoding = '{encoding}'".encode())
            try:
                decoded = LexingState(client_encoding=encoding).decode(raw)
            except LexingRefused:
                return  # refused by the gateway: nothing runs
            analysis = dialect.analyze(decoded)
            statements = len(analysis.statements)
            inserts = sum(1 for s in analysis.statements if s.kind == "InsertStmt")
            for session in [conn, off, sjis] if lexes_alike(raw) else [conn]:
                completed, failed, inserted = _server_runs(session, raw)
                detail = (text, encoding, session.pgconn.parameter_status(b"client_encoding"))
                if not analysis.parseable:
                    # Refused by the gateway; the server would not have run it either.
                    assert inserted == 0 and (failed or completed == 0), detail
                    continue
                assert inserted <= inserts, detail
                if not failed:
                    assert (completed, inserted) == (statements, inserts), detail
            checked.append(analysis.parseable)

        check()
    # The generator reaches both sides of the question.
    assert 50 < sum(checked) < len(checked)
