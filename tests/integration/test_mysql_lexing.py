"""Lexing settings end to end (issue 14, class 1 on MySQL/MariaDB): the gateway reads every
statement in the ``sql_mode`` and client character set the real MariaDB reports, through the
real gateway, with PyMySQL, MySQL Connector/Python and the ``mysql`` client. Each attack hides
a ``DELETE`` from a reader that lexes in the wrong settings; the canary table is counted over a
direct root connection after each one."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

HIDDEN_DELETE = "SELECT '\\'; DELETE FROM canary; -- '"
"""One string in the default mode; a string, a DELETE and a comment without backslash
escapes."""


@attrs.frozen(kw_only=True)
class Target:
    gateway: Any
    database: Any
    key: str

    def connect(self, **options: Any) -> pymysql.Connection[Any]:
        options.setdefault("client_flag", CLIENT.MULTI_STATEMENTS)
        return pymysql.connect(
            host=self.gateway.host,
            port=self.gateway.port,
            user="agent",
            password=self.key,
            database=self.database.name,
            autocommit=True,
            **options,
        )

    def connector(self, ca: Any) -> Any:
        return mysql.connector.connect(
            ssl_ca=str(ca),
            host=self.gateway.host,
            port=self.gateway.port,
            user="agent",
            password=self.key,
            database=self.database.name,
            use_pure=True,
            autocommit=True,
        )

    def root(self) -> pymysql.Connection[Any]:
        server = self.database.server
        return pymysql.connect(
            host=server.host, port=server.port, user="root", database=self.database.name
        )

    def canary(self) -> int:
        with self.root() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM canary")
            (count,) = cur.fetchone()  # type: ignore[misc]
            return int(count)

    def session_ends(self) -> list[str]:
        """Why each ended session of the gateway ended (from the audit store)."""
        deadline = time.monotonic() + 10
        while True:
            listed = json.loads(self.gateway.cli("sessions", "list", "--json").stdout)
            ended = [s for s in listed if s["ended_at"]]
            if ended or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return [json.dumps(s) for s in ended]


def _setup(database: Any) -> None:
    server = database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=database.name
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE IF NOT EXISTS canary (id INT PRIMARY KEY)")
        cur.execute("INSERT IGNORE INTO canary VALUES (1), (2), (3)")
        cur.execute(
            "CREATE OR REPLACE PROCEDURE untrack() SET SESSION session_track_system_variables = ''"
        )
        conn.commit()


def _target(
    mysql_gateway: Callable[..., Any], database: Any, tls_files: Any, **options: Any
) -> Iterator[Target]:
    _setup(database)
    running = mysql_gateway(
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
        **options,
    )
    target = Target(gateway=running, database=database, key=running.create_key("agent", ["agents"]))
    yield target
    assert target.canary() == 3, "the canary lost rows"


@pytest.fixture
def guarded(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> Iterator[Target]:
    """agent-readonly guardrails: every DELETE is refused when the gateway sees it."""
    yield from _target(
        mysql_gateway,
        mysql_database,
        tls_files,
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"preset": "agent-readonly"}},
    )


@pytest.fixture
def recorded(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> Iterator[Target]:
    """No guardrails: only the protocol's own refusals and session ends stand."""
    yield from _target(mysql_gateway, mysql_database, tls_files, plugins=["recording"])


def run(conn: pymysql.Connection[Any], sql: str | bytes) -> list[Any]:
    """Run ``sql`` (every result of a multi-statement text); the rows of each result."""
    results = []
    with conn.cursor() as cur:
        cur.execute(sql) if isinstance(sql, str) else conn.query(sql)
        if isinstance(sql, bytes):
            return [conn._result.rows if conn._result else None]  # type: ignore[union-attr]
        results.append(cur.fetchall())
        while cur.nextset():
            results.append(cur.fetchall())
    return results


def refused(conn: pymysql.Connection[Any], sql: str | bytes) -> str:
    """The gateway's refusal of ``sql`` (fails if the server ran it or refused it itself)."""
    with pytest.raises(pymysql.err.MySQLError) as raised:
        run(conn, sql)
    message = str(raised.value.args[-1])
    assert "hoopgw" in message, message
    return message


# -- sql_mode -------------------------------------------------------------------------------


def test_no_backslash_escapes_and_a_statement_behind_it_in_one_packet_is_refused(
    guarded: Target, recorded: Target
) -> None:
    with guarded.connect() as conn:
        message = refused(conn, f"SET sql_mode = 'NO_BACKSLASH_ESCAPES'; {HIDDEN_DELETE}")
        assert "last statement of its packet" in message
    # The protocol refuses it without guardrails too: every statement kind that may change
    # the settings, in every spelling.
    with recorded.connect() as conn:
        for first in (
            "SET @@session.sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
            "/*!40101 SET sql_mode = 'NO_BACKSLASH_ESCAPES' */",
            "SET NAMES latin1",
            "EXECUTE IMMEDIATE 'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''",
            "CALL untrack()",
        ):
            assert "last statement" in refused(conn, f"{first}; {HIDDEN_DELETE}"), first


def test_a_session_in_no_backslash_escapes_is_read_without_escapes(guarded: Target) -> None:
    with guarded.connect() as conn:
        run(conn, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert "DELETE" in refused(conn, HIDDEN_DELETE)
        assert run(conn, "SELECT 'a\\' AS v") == [(("a\\",),)]
        # Back to the default: the same text is one harmless string again.
        run(conn, "SET sql_mode = DEFAULT")
        assert run(conn, HIDDEN_DELETE) == [(("'; DELETE FROM canary; -- ",),)]


def test_a_session_in_ansi_quotes_reads_double_quotes_as_names(guarded: Target) -> None:
    hidden = 'SELECT "\\"; DELETE FROM canary; -- "'
    with guarded.connect() as conn:
        assert run(conn, hidden) == [(('"; DELETE FROM canary; -- ',),)]
        run(conn, "SET sql_mode = 'ANSI'")
        assert "DELETE" in refused(conn, hidden)
        assert run(conn, 'SELECT id AS "the id" FROM "canary" WHERE id = 1') == [((1,),)]


def test_set_statement_changes_nothing_for_its_own_text(guarded: Target) -> None:
    with guarded.connect() as conn:
        # MariaDB reads the whole statement before it sets the mode for it.
        rows = run(conn, f"SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR {HIDDEN_DELETE}")
        assert rows == [(("'; DELETE FROM canary; -- ",),)]
        assert "ORACLE" in refused(conn, "SET STATEMENT sql_mode = 'ORACLE' FOR SELECT 1")


def test_a_reset_and_a_change_of_user_are_followed(guarded: Target, tls_files: Any) -> None:
    conn = guarded.connector(tls_files.ca_cert)
    try:
        cur = conn.cursor()
        cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        conn.cmd_change_user(username="agent", password=guarded.key, database=guarded.database.name)
        cur = conn.cursor()
        cur.execute(HIDDEN_DELETE)  # the default mode again: one string
        assert cur.fetchall() == [("'; DELETE FROM canary; -- ",)]
        cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        with pytest.raises(mysql.connector.Error, match="DELETE"):
            cur.execute(HIDDEN_DELETE)
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute(HIDDEN_DELETE)
        assert cur.fetchall() == [("'; DELETE FROM canary; -- ",)]
    finally:
        conn.close()


# -- character sets ----------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["sjis", "gbk", "big5", "cp932"])
def test_a_client_character_set_with_backslash_bytes_is_refused_by_every_route(
    guarded: Target, charset: str
) -> None:
    with guarded.connect() as conn:
        for route in (
            f"SET NAMES {charset}",
            f"SET NAMES '{charset}'",
            f"SET CHARACTER SET {charset}",
            f"SET character_set_client = {charset}",
            f"SET @@session.character_set_client = '{charset}'",
            f"SET LOCAL character_set_client = {charset}",
            f"/*!40101 SET NAMES {charset} */",
            f"SET STATEMENT character_set_client = {charset} FOR SELECT 1",
            f"PREPARE s FROM 'SET NAMES {charset}'",
        ):
            assert f"character_set_client {charset}" in refused(conn, route), route
        assert run(conn, "SELECT @@character_set_client") == [(("utf8mb4",),)]
    # In the handshake.
    with pytest.raises(pymysql.err.OperationalError, match="not accepted through hoopgw"):
        guarded.connect(charset=charset)


def test_a_computed_character_set_the_gateway_cannot_read_ends_the_session(
    recorded: Target,
) -> None:
    with recorded.connect() as conn:
        run(conn, "SET @cs = 'sjis'")
        with pytest.raises(pymysql.err.MySQLError, match="character_set_client sjis"):
            run(conn, "SET character_set_client = @cs")
        # sjis reads 0x95 0x5C as one character, so the quote after it ends the string.
        with pytest.raises(pymysql.err.MySQLError):
            run(conn, b"SELECT '\x95\\'; DELETE FROM canary; -- '")
    assert any("character_set_client sjis" in end for end in recorded.session_ends())


def test_a_latin1_client_works_and_is_read_as_latin1(guarded: Target) -> None:
    with guarded.connect(charset="latin1") as conn:
        assert run(conn, "SELECT 'café' AS v") == [(("café",),)]
        assert run(conn, "SELECT @@character_set_client") == [(("latin1",),)]
        # 0xA0 is white space in latin1: "--\xa0" starts a comment, so the DELETE runs on the
        # server unless the gateway sees it.
        message = refused(conn, b"SELECT 1 --\xa0 '\n; DELETE FROM canary; -- '")
        assert "DELETE" in message
    with guarded.connect() as conn:
        run(conn, "SET NAMES latin1")
        assert "DELETE" in refused(conn, b"SELECT 1 --\xa0 '\n; DELETE FROM canary; -- '")


@pytest.mark.skipif(shutil.which("mysql") is None, reason="the mysql client is not installed")
def test_the_mysql_client_in_latin1_and_sjis(guarded: Target) -> None:
    def mysql_client(charset: str, sql: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "mysql",
                f"--host={guarded.gateway.host}",
                f"--port={guarded.gateway.port}",
                "--user=agent",
                f"--password={guarded.key}",
                f"--default-character-set={charset}",
                "--batch",
                "--skip-column-names",
                guarded.database.name,
                "-e",
                sql,
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )

    done = mysql_client("latin1", "SELECT @@character_set_client, 'café'")
    assert done.returncode == 0, done.stderr
    # The client sends the UTF-8 bytes of the argument; the server returns them as latin1.
    assert done.stdout == "latin1\tcafé\n".encode()
    done = mysql_client("sjis", "SELECT 1")
    assert done.returncode != 0 and b"not accepted through hoopgw" in done.stderr
    done = mysql_client("utf8mb4", "SET NAMES gbk")
    assert done.returncode != 0 and b"character_set_client gbk" in done.stderr


# -- what the gateway did not see --------------------------------------------------------------


def test_a_setting_the_target_stops_reporting_ends_the_session(recorded: Target) -> None:
    with recorded.connect() as conn:
        run(conn, "CALL untrack()")  # empties session_track_system_variables
        with pytest.raises(pymysql.err.MySQLError, match="did not report the sql_mode"):
            run(conn, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        with pytest.raises(pymysql.err.MySQLError):
            run(conn, HIDDEN_DELETE)
    assert any("did not report the sql_mode" in end for end in recorded.session_ends())


def test_setting_the_tracking_list_is_refused(recorded: Target) -> None:
    with recorded.connect() as conn:
        message = refused(conn, "SET session_track_system_variables = ''")
        assert "session_track_system_variables" in message
        # MariaDB sets these but does not report them: refused, SET SESSION works.
        for spelling in ("@@sql_mode", "@@`sql_mode`", "@@SQL_MODE"):
            message = refused(conn, f"SET {spelling} = 'NO_BACKSLASH_ESCAPES'")
            assert "does not report this spelling" in message
        assert "last statement" in refused(conn, f"SET SESSION sql_mode = ''; {HIDDEN_DELETE}")
        run(conn, "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert run(conn, "SELECT @@sql_mode") == [(("NO_BACKSLASH_ESCAPES",),)]


# -- issue 14, class 13: bytes not valid in the client's character set -------------------------


def test_bytes_not_valid_in_the_client_character_set_are_run_and_recorded(
    recorded: Target,
) -> None:
    with recorded.connect() as conn:
        assert run(conn, b"SELECT HEX(_binary'\xff\xfe') AS v") == [(("FFFE",),)]
    deadline = time.monotonic() + 10
    while True:
        [session] = json.loads(recorded.gateway.cli("sessions", "list", "--json").stdout)
        shown = json.loads(recorded.gateway.cli("sessions", "show", session["id"], "--json").stdout)
        texts = [c["text"] for c in shown["commands"]]
        if texts or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "SELECT HEX(_binary'\\xff\\xfe') AS v" in texts, texts
