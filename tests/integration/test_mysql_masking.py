"""Masking on MySQL through the real gateway against the real MariaDB: no raw identifier of a
seeded person reaches the client -- in text rows (PyMySQL), binary rows (prepared statements of
mysql-connector-python) or error messages -- nor any byte of the audit store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from hoopgw_masking.corpus import people

pytestmark = pytest.mark.integration

PEOPLE = people(20)
KEYS = ("email", "phone", "ssn", "card", "iban", "client_ip")


def raw_values() -> list[str]:
    return [person[key] for person in PEOPLE for key in KEYS]


def _text_client(running: Any, key: str, database: str) -> Any:
    """A PyMySQL connection (text rows) through the gateway ``running`` as ``agent``."""
    return pymysql.connect(
        host=running.host, port=running.port, user="agent", password=key, database=database
    )


def _binary_client(running: Any, key: str, database: str, tls_files: Any) -> Any:
    """A mysql-connector-python connection (prepared statements: binary rows) through the
    gateway ``running`` as ``agent``, over TLS."""
    return mysql.connector.connect(
        host=running.host,
        port=running.port,
        user="agent",
        password=key,
        database=database,
        use_pure=True,
        ssl_ca=str(tls_files.ca_cert),
    )


def test_text_and_binary_rows_and_errors_are_masked(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> None:
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host,
            port=server.port,
            user="root",
            database=mysql_database.name,
            autocommit=True,
        ) as admin,
        admin.cursor() as cur,
    ):
        cur.execute(
            "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(80) UNIQUE, phone"
            " VARCHAR(40), ssn CHAR(11), card TEXT, iban VARCHAR(40), client_ip VARCHAR(40),"
            " note TEXT)"
        )
        cur.executemany(
            "INSERT INTO people VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(i, *(p[k] for k in KEYS), p["note"]) for i, p in enumerate(PEOPLE)],
        )
    running = mysql_gateway(
        plugins=["masking", "recording"],
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    key = running.create_key("agent", ["agents"])
    seen: list[str] = []

    with (
        _text_client(running, key, mysql_database.name) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT * FROM people ORDER BY id")
        text_rows = cur.fetchall()
        assert len(text_rows) == len(PEOPLE)
        seen.extend(str(v) for row in text_rows for v in row)
        with pytest.raises(pymysql.err.IntegrityError) as raised:
            cur.execute("INSERT INTO people (id, email) VALUES (999, %s)", (PEOPLE[0]["email"],))
        seen.append(str(raised.value))
        assert "Duplicate entry" in str(raised.value)

    with _binary_client(running, key, mysql_database.name, tls_files) as conn:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT * FROM people WHERE id >= ? ORDER BY id", (0,))
        binary_rows = cur.fetchall()
        assert len(binary_rows) == len(PEOPLE)
        assert binary_rows[0][0] == 0  # an INT in binary format passes untouched
        seen.extend(str(v) for row in binary_rows for v in row)

    running.stop()
    store = b"".join(p.read_bytes() for p in Path(running.config_path.parent).glob("hoopgw.db*"))
    leaks = [v for v in raw_values() if any(v in s for s in seen) or v.encode() in store]
    assert not leaks, leaks
    # Something was masked at all (and the rows are not just empty).
    assert any("@" not in s and s for s in seen)


def test_the_database_name_is_recorded_masked(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    # The database a client names is client-chosen text recorded with the session.
    card = PEOPLE[2]["card"].replace(" ", "").replace("-", "")
    name = f"{mysql_database.name}_{card}"
    server = mysql_database.server
    with pymysql.connect(host=server.host, port=server.port, user="root") as admin:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"GRANT ALL ON `{name}`.* TO '{mysql_database.user}'@'%'")
    try:
        running = mysql_gateway(plugins=["masking", "recording"])
        key = running.create_key("agent", ["agents"])
        with _text_client(running, key, name) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        running.stop()
        store = b"".join(
            p.read_bytes() for p in Path(running.config_path.parent).glob("hoopgw.db*")
        )
        assert card.encode() not in store
        assert b"[CREDIT_CARD]" in store
    finally:
        with pymysql.connect(host=server.host, port=server.port, user="root") as admin:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def test_types_are_decided_by_mysql_type_names(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> None:
    # Numbers and dates pass untouched in text and binary rows; a card number in a BIGINT is
    # found with numeric_columns and stays a BIGINT (partial style: digits).
    card = 4111111111111111
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as admin,
        admin.cursor() as cur,
    ):
        cur.execute(
            "CREATE TABLE t (id INT, amount DOUBLE, seen DATETIME, card BIGINT, email TEXT)"
        )
        cur.execute(
            "INSERT INTO t VALUES (7, 2.5, '2024-05-06 07:08:09', %s, %s)",
            (card, PEOPLE[3]["email"]),
        )
        admin.commit()
    running = mysql_gateway(
        plugins=["masking"],
        connection={"masking": {"numeric_columns": True, "styles": {"credit_card": "partial"}}},
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    key = running.create_key("agent", ["agents"])
    with (
        _text_client(running, key, mysql_database.name) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT id, amount, seen, card, email FROM t")
        [text_row] = cur.fetchall()
    with _binary_client(running, key, mysql_database.name, tls_files) as conn:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, amount, seen, card, email FROM t WHERE id = ?", (7,))
        [binary_row] = cur.fetchall()
    for row in (text_row, binary_row):
        assert row[:3] == (7, 2.5, datetime(2024, 5, 6, 7, 8, 9)), row
        assert isinstance(row[3], int) and row[3] != card and str(row[3]).endswith("1111")
        assert row[4] == "[EMAIL]"


def test_values_next_to_punctuation_and_cards_in_numbers_are_masked(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> None:
    # x_<email>_y, --<card>--, ssn-<ssn>-: the value is found whatever punctuation stands next
    # to it; a card number in a BIGINT, DECIMAL (with a fraction) or DOUBLE is found by default.
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as admin,
        admin.cursor() as cur,
    ):
        cur.execute("CREATE TABLE people (id INT, email TEXT, ssn TEXT, card TEXT)")
        cur.executemany(
            "INSERT INTO people VALUES (%s, %s, %s, %s)",
            [(i, p["email"], p["ssn"], _digits(p["card"])) for i, p in enumerate(PEOPLE)],
        )
        admin.commit()
    running = mysql_gateway(
        plugins=["masking", "recording"],
        connection={"recording": {"sample_rows": 50}},
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    key = running.create_key("agent", ["agents"])
    query = (
        "SELECT CONCAT('x_', email, '_y'), CONCAT('--', card, '--'), CONCAT('ssn-', ssn, '-'),"
        " CAST(card AS SIGNED), CAST(card AS DECIMAL(20, 0)) + 0.5, CAST(card AS DOUBLE)"
        " FROM people WHERE id >= {}"
    )
    seen: list[str] = []
    with _text_client(running, key, mysql_database.name) as conn, conn.cursor() as cur:
        cur.execute(query.format(0))
        seen.extend(repr(row) for row in cur.fetchall())
        with pytest.raises(pymysql.err.MySQLError) as raised:
            cur.execute("SELECT CONCAT('x_', email, '_y') FROM people WHERE id = 0 AND 1 = 1 (")
        seen.append(str(raised.value))
    with _binary_client(running, key, mysql_database.name, tls_files) as conn:
        cur = conn.cursor(prepared=True)
        cur.execute(query.format("?"), (0,))
        seen.extend(repr(row) for row in cur.fetchall())
    running.stop()
    joined = "\n".join(seen)
    assert "[EMAIL]_y" in joined and "--[CREDIT_CARD]--" in joined and "ssn-[SSN]-" in joined
    store = b"".join(p.read_bytes() for p in Path(running.config_path.parent).glob("hoopgw.db*"))
    values = [p["email"] for p in PEOPLE] + [p["ssn"] for p in PEOPLE]
    values += [_digits(p["card"]) for p in PEOPLE]
    # DOUBLE in text rows: 4.111111111111111e15 on MySQL, the digits on MariaDB.
    values += [f"{int(_digits(p['card'])) / 10**15:.15f}".rstrip("0") for p in PEOPLE]
    leaks = [v for v in values if v in joined or v.encode() in store]
    assert not leaks, leaks


def _digits(card: str) -> str:
    return card.replace(" ", "").replace("-", "")


def _filename_form(text: str) -> str:
    """``text`` in MariaDB's ``filename`` character set: every character but ASCII letters and
    digits as ``@`` and four hex digits (what a client decodes back at once)."""
    return "".join(c if c.isascii() and c.isalnum() else f"@{ord(c):04x}" for c in text)


@pytest.mark.parametrize("charset", ["filename", "latin1", "NULL", "utf16"])
def test_error_messages_are_masked_in_every_results_charset(
    mysql_gateway: Callable[..., Any],
    mysql_database: Any,
    charset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server sends error messages in character_set_results, as it sends rows: in
    # `filename` an e-mail address reads alice@0040example@002ecom, which no detector
    # knew, and in latin1 a deny-listed word with a non-ASCII letter was not UTF-8.
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as admin,
        admin.cursor() as cur,
    ):
        cur.execute("CREATE TABLE people (id INT, email TEXT, name TEXT) CHARACTER SET utf8mb4")
        # Short values: the XPATH error quotes at most 32 characters.
        cur.execute("INSERT INTO people VALUES (0, 'ann@example.com', 'Zoë Quintanilla')")
        admin.commit()
    running = mysql_gateway(
        plugins=["masking", "recording"],
        connection={"masking": {"deny_words": ["Zoë"]}},
    )
    key = running.create_key("agent", ["agents"])
    seen: list[bytes] = []  # every ERR packet's bytes, as the client received them
    raise_error = pymysql.err.raise_mysql_exception

    def spy(data: bytes) -> None:
        seen.append(bytes(data))
        raise_error(data)

    monkeypatch.setattr(pymysql.err, "raise_mysql_exception", spy)
    for column in ("email", "name"):
        with _text_client(running, key, mysql_database.name) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {column} INTO @v FROM people WHERE id = 0")
            cur.execute(f"SET character_set_results = {charset}")
            with pytest.raises(pymysql.err.MySQLError):
                cur.execute("SELECT EXTRACTVALUE(1, CONCAT('~', @v))")  # XPATH error: '~<v>'

    running.stop()
    assert len(seen) == 2
    store = b"".join(p.read_bytes() for p in Path(running.config_path.parent).glob("hoopgw.db*"))
    email = "ann@example.com"
    forms = [email.encode(), _filename_form(email).encode(), _filename_form("Zoë").encode()]
    forms += ["Zoë".encode(), "Zoë".encode("latin-1")]
    leaks = [f for f in forms if any(f in s for s in seen) or f in store]
    assert not leaks, (leaks, seen)


@pytest.mark.parametrize("track", ["tracked", "untracked"])
def test_a_results_charset_a_function_sets_is_read(
    mysql_gateway: Callable[..., Any],
    mysql_database: Any,
    track: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SELECT f() where f sets character_set_results: a result set's EOF reports no change
    # (and f may empty session_track_system_variables first), so the next error came in
    # `filename` or latin1 while the gateway read it as UTF-8.
    server = mysql_database.server
    quiet = "SET @@session.session_track_system_variables = ''; " if track == "untracked" else ""
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as admin,
        admin.cursor() as cur,
    ):
        cur.execute(
            "CREATE FUNCTION results_in(n VARCHAR(20)) RETURNS INT BEGIN"
            f" {quiet}SET character_set_results = n; RETURN 1; END"
        )
    running = mysql_gateway(
        plugins=["masking", "recording"],
        connection={"masking": {"deny_words": ["Zo\u00eb"]}},
    )
    key = running.create_key("agent", ["agents"])
    seen: list[bytes] = []
    raise_error = pymysql.err.raise_mysql_exception

    def spy(data: bytes) -> None:
        seen.append(bytes(data))
        raise_error(data)

    monkeypatch.setattr(pymysql.err, "raise_mysql_exception", spy)
    for charset, value in (("filename", "ann@example.com"), ("latin1", "Zo\u00eb Q")):
        with _text_client(running, key, mysql_database.name) as conn, conn.cursor() as cur:
            cur.execute("SET @v = %s", (value,))
            cur.execute(f"SELECT results_in('{charset}')")
            with pytest.raises(pymysql.err.MySQLError):
                cur.execute("SELECT EXTRACTVALUE(1, CONCAT('~', @v))")
    running.stop()
    assert len(seen) == 2
    forms = [b"ann@example.com", _filename_form("ann@example.com").encode()]
    forms += ["Zo\u00eb".encode(), "Zo\u00eb".encode("latin-1")]
    assert not [f for f in forms if any(f in s for s in seen)], seen


def test_a_results_charset_for_one_statement_is_refused(
    mysql_gateway: Callable[..., Any], mysql_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SET STATEMENT ... FOR changes character_set_results for that statement only, and the
    # server reports nothing: its error came in `filename` while the gateway read UTF-8.
    running = mysql_gateway(plugins=["masking", "recording"])
    key = running.create_key("agent", ["agents"])
    seen: list[bytes] = []
    raise_error = pymysql.err.raise_mysql_exception

    def spy(data: bytes) -> None:
        seen.append(bytes(data))
        raise_error(data)

    monkeypatch.setattr(pymysql.err, "raise_mysql_exception", spy)
    with _text_client(running, key, mysql_database.name) as conn, conn.cursor() as cur:
        cur.execute("SET @v = 'ann@example.com'")
        for text in (
            "SET STATEMENT character_set_results = filename FOR"
            " SELECT EXTRACTVALUE(1, CONCAT('~', @v))",
            "EXECUTE IMMEDIATE 'SET STATEMENT @@character_set_results = filename FOR"
            " SELECT EXTRACTVALUE(1, CONCAT(''~'', @v))'",
        ):
            with pytest.raises(pymysql.err.MySQLError) as refused:
                cur.execute(text)
            assert refused.value.args[0] == 1231, refused.value
    running.stop()
    assert not [s for s in seen if b"ann@0040example" in s or b"ann@example" in s], seen
