"""The gateway's statement split against the real MariaDB's, under every lexing setting the
gateway accepts (issue 14, class 1): random texts of quotes, backslashes, comments, white space
and semicolons around marker statements ``INSERT INTO log VALUES (n)`` run on the server in one
multi-statement packet; every marker the server inserted must be a statement the gateway reads
in the same settings. (The server may run fewer: it stops at the first error.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from hoopgw_mysql.analysis import LexingState, readings
from hoopgw_mysql.frontend import decode_text
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

MODES = ["", "NO_BACKSLASH_ESCAPES", "ANSI_QUOTES", "ANSI_QUOTES,NO_BACKSLASH_ESCAPES"]
CHARSETS = ["utf8mb4", "latin1"]
PIECES = [
    "'",
    '"',
    "`",
    "\\",
    "'\\'",
    "'a''b'",
    '"\\"',
    '"a"',
    "`a`",
    ";",
    " -- x\n",
    " --\xa0",
    "--\xa0x\n",
    " -- '\n",
    " # '\n",
    "/* ; */",
    "/*! SELECT 1 */",
    "\n",
    " ",
    "SELECT 1",
]
MARKERS = "INSERT INTO log VALUES (1);SELECT 2;INSERT INTO log VALUES (2)"


@pytest.fixture(scope="module")
def server_conn(mysql_server: Any) -> Iterator[pymysql.Connection[Any]]:
    name = "hgw_lexprop"
    admin = pymysql.connect(host=mysql_server.host, port=mysql_server.port, user="root")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.log (n INT)")
    conn = pymysql.connect(
        host=mysql_server.host,
        port=mysql_server.port,
        user="root",
        database=name,
        autocommit=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
        charset="latin1",
    )
    try:
        yield conn
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def _texts() -> st.SearchStrategy[str]:
    """Markers behind random quoting, escapes and comments: where a reader in the wrong
    settings goes wrong, it hides a marker inside a string or comment."""
    junk = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)
    return st.tuples(junk, junk, junk, junk).map(
        lambda j: (
            f"SELECT 1{j[0]};INSERT INTO log VALUES (1){j[1]};"
            f"SELECT 2{j[2]};INSERT INTO log VALUES (2){j[3]}"
        )
    )


def _predicted(text: str, state: LexingState) -> set[int] | None:
    """The markers of every INSERT the gateway reads in ``text``; None if it cannot read it."""
    try:
        found = readings(text, state)
    except ValueError:
        return None
    markers: set[int] = set()
    for reading in found:
        for index, token in enumerate(reading):
            if token.upper == "INSERT":
                numbers = [t.text for t in reading[index:] if t.kind == "number"]
                if numbers:
                    markers.add(int(numbers[0]))
    return markers


def _server_ran(conn: pymysql.Connection[Any], data: bytes) -> set[int]:
    with conn.cursor() as cur:
        try:
            conn.query(data)
            while conn._result is not None and conn._result.has_next:
                conn.next_result()
        except pymysql.err.MySQLError:
            pass
        cur.execute("SELECT n FROM log")
        ran = {int(n) for (n,) in cur.fetchall()}
        cur.execute("DELETE FROM log")
    return ran


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("mode", MODES)
def test_every_statement_the_server_runs_is_one_the_gateway_reads(
    server_conn: pymysql.Connection[Any], mode: str, charset: str
) -> None:
    with server_conn.cursor() as cur:
        cur.execute(f"SET NAMES {charset}")
        cur.execute("SET sql_mode = %s", (mode,))
        cur.execute("SELECT @@sql_mode, @@character_set_client")
        (reported_mode, reported_charset) = cur.fetchone()  # type: ignore[misc]
    state = LexingState.of({"sql_mode": reported_mode, "character_set_client": reported_charset})
    encoding = "latin-1" if charset == "latin1" else "utf-8"

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(text=_texts())
    @example(text=f"SELECT 1'\\';{MARKERS} -- '\n")  # NO_BACKSLASH_ESCAPES
    @example(text=f'SELECT 1"\\";{MARKERS} -- "\n')  # ANSI_QUOTES
    @example(text=f"SELECT 1 --\xa0'\n;{MARKERS} -- '\n")  # latin1
    def check(text: str) -> None:
        data = text.encode(encoding)
        predicted = _predicted(decode_text(data, charset), state)
        assume(predicted is not None)  # the gateway refuses what it cannot read
        ran = _server_ran(server_conn, data)
        assert ran <= predicted, (text, ran, predicted)  # type: ignore[operator]

    check()
