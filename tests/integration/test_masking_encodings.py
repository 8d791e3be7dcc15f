"""Masking reads the text of errors, notices and statements in the session's own encoding,
through the real gateway against the real servers: a PostgreSQL ``client_encoding`` other than
UTF-8, a MariaDB ``character_set_results`` other than UTF-8. A deny-list word with a non-ASCII
letter, an e-mail address or a card number in such a text is masked for the client and in the
audit store, and the text the client gets is still in its encoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pymysql
import pytest

pytestmark = pytest.mark.integration

WORD = "Müller"
EMAIL = "alice.smith@example.com"
CARD = "4111111111111111"


def _raw(store: bytes) -> list[bytes]:
    """The raw values found in ``store``, in UTF-8, Latin-1 or UTF-16."""
    found = []
    for value in (WORD, EMAIL, CARD):
        for codec in ("utf-8", "latin-1", "utf-16-be"):
            if value.encode(codec) in store:
                found.append(value.encode(codec))
    return found


def test_postgresql_masks_notices_errors_and_statements_in_a_single_byte_client_encoding(
    gateway: Callable[..., Any], pg_server: Any, pg_database: str
) -> None:
    gw = gateway(plugins=["masking", "recording"], connection={"masking": {"deny_words": [WORD]}})
    key = gw.create_key("agent", ["agents"])
    notices: list[str] = []
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
        sslmode="disable", client_encoding="LATIN1", autocommit=True,
    ) as conn:  # fmt: skip
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute(f"DO $$ BEGIN RAISE NOTICE 'Herr {WORD}, {EMAIL}'; END $$")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as cast:
            conn.execute(f"SELECT 'Herr {WORD}'::int")
        with pytest.raises(psycopg.errors.RaiseException) as raised:
            conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'card {CARD} of {WORD}'; END $$")
        assert conn.execute("SELECT 'ok'").fetchone() == ("ok",)  # the session goes on
    assert notices == ["Herr [DENY_LIST], [EMAIL]"]
    assert cast.value.diag.message_primary == (
        'invalid input syntax for type integer: "Herr [DENY_LIST]"'
    )
    assert raised.value.diag.message_primary == "card [CREDIT_CARD] of [DENY_LIST]"
    gw.store_rows("SELECT 1 FROM commands WHERE error_code = 'P0001'")
    errors = [m for (m,) in gw.store_query("SELECT error_message FROM commands ORDER BY seq")]
    assert "card [CREDIT_CARD] of [DENY_LIST]" in errors
    assert _raw(gw.store_bytes()) == []


def test_mariadb_masks_errors_in_the_character_set_of_results(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    """MariaDB writes an error in ``character_set_results`` (an empty text in ``utf16``,
    ``utf32`` and ``ucs2``, which it does not convert messages to)."""
    running = mysql_gateway(
        plugins=["masking", "recording"], connection={"masking": {"deny_words": [WORD]}}
    )
    key = running.create_key("agent", ["agents"])
    messages: dict[str, str] = {}
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key,
            database=mysql_database.name, charset="utf8mb4",
        ) as conn,
        conn.cursor() as cur,
    ):  # fmt: skip
        for charset in ("latin1", "latin2", "utf16"):
            cur.execute(f"SET character_set_results = {charset}")
            with pytest.raises(pymysql.err.ProgrammingError) as caught:
                cur.execute(f"SELECT * FROM `{WORD} {EMAIL}`")
            # PyMySQL reads every error as UTF-8 (a byte it cannot read as U+FFFD): masked,
            # the text is ASCII, so it reads right.
            messages[charset] = caught.value.args[1]
            assert "\ufffd" not in messages[charset], charset
        cur.execute("SET character_set_results = utf8mb4")
        cur.execute("SELECT 'ok'")
        assert cur.fetchone() == ("ok",)  # the session goes on
    expected = f"Table '{mysql_database.name}.[DENY_LIST] [EMAIL]' doesn't exist"
    assert messages == {"latin1": expected, "latin2": expected, "utf16": ""}
    assert _raw(running.store_bytes()) == []


def test_mariadb_ends_the_session_on_an_error_in_a_character_set_it_cannot_read(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    running = mysql_gateway(plugins=["masking"], connection={"masking": {"deny_words": [WORD]}})
    key = running.create_key("agent", ["agents"])
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key,
            database=mysql_database.name,
        ) as conn,
        conn.cursor() as cur,
    ):  # fmt: skip
        cur.execute("SET character_set_results = sjis")
        with pytest.raises(pymysql.err.MySQLError, match="cannot read exactly") as caught:
            cur.execute(f"SELECT * FROM `{WORD} {EMAIL}`")
        assert EMAIL not in str(caught.value)
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT 1")  # the session ended


def test_mariadb_masks_statements_and_errors_of_a_latin1_client(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    """A client whose character set is latin1 (``SET NAMES latin1``: statements sent and
    errors answered in it)."""
    running = mysql_gateway(
        plugins=["masking", "recording"], connection={"masking": {"deny_words": [WORD]}}
    )
    key = running.create_key("agent", ["agents"])
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key,
            database=mysql_database.name, charset="latin1",
        ) as conn,
        conn.cursor() as cur,
    ):  # fmt: skip
        cur.execute(f"SELECT 'Herr {WORD}'")
        assert cur.fetchone() == ("Herr [DENY_LIST]",)
        with pytest.raises(pymysql.err.ProgrammingError) as caught:
            cur.execute(f"SELECT * FROM `{WORD}`")
    assert caught.value.args[1] == f"Table '{mysql_database.name}.[DENY_LIST]' doesn't exist"
    running.store_rows("SELECT 1 FROM commands WHERE error_code = '42S02'")
    assert _raw(running.store_bytes()) == []


def test_mariadb_results_set_changed_unreported_never_passes_a_message_unmasked(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    """MariaDB writes its errors in ``character_set_results`` however it was set, but reports
    it only for ``SET SESSION`` and in an OK: the ``@@`` spelling and ``SET STATEMENT`` are
    refused, and before the error ending a ``CALL`` whose routine set it (not reported yet) is
    read, the gateway asks the server for the set, so ``Müller`` in Latin-1 is masked."""
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name,
            charset="utf8mb4",
        ) as admin,
        admin.cursor() as cur,
    ):  # fmt: skip
        cur.execute(
            "CREATE PROCEDURE latin() BEGIN SET character_set_results = latin1;"
            f" SELECT * FROM `{WORD}`; END"
        )
    running = mysql_gateway(
        plugins=["masking", "recording"], connection={"masking": {"deny_words": [WORD]}}
    )
    key = running.create_key("agent", ["agents"])
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key,
            database=mysql_database.name, charset="utf8mb4",
        ) as conn,
        conn.cursor() as cur,
    ):  # fmt: skip
        for change in (
            "SET @@character_set_results = latin1",
            f"SET STATEMENT character_set_results = latin1 FOR SELECT * FROM `{WORD}`",
        ):
            with pytest.raises(pymysql.err.MySQLError, match="character_set_results"):
                cur.execute(change)
        with pytest.raises(pymysql.err.ProgrammingError) as caught:
            cur.execute("CALL latin()")
        assert caught.value.args[1].endswith(".[DENY_LIST]' doesn't exist")
        cur.execute("SELECT 1")  # the session goes on, read in Latin-1 now
        assert cur.fetchone() == (1,)
    running.store_rows("SELECT 1 FROM sessions WHERE ended_at IS NOT NULL")
    assert _raw(running.store_bytes()) == []


def test_postgresql_ends_the_session_on_a_message_in_an_encoding_never_reported(
    gateway: Callable[..., Any], pg_server: Any, pg_database: str
) -> None:
    """``set_config('client_encoding', ...)`` in a query that then fails: the server writes
    the error in LATIN1 and rolls the setting back, so it never reports it; in one that does
    not fail, it reports it after the rows, written in LATIN1 already. Read as UTF-8,
    ``Müller`` would pass the deny list; the session ends instead."""
    gw = gateway(plugins=["masking", "recording"], connection={"masking": {"deny_words": [WORD]}})
    key = gw.create_key("agent", ["agents"])
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
        sslmode="disable", autocommit=True,
    ) as conn:  # fmt: skip
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(
                f"SELECT set_config('client_encoding', 'LATIN1', false); SELECT '{WORD}'::int"
            )
        assert "ller" not in str(caught.value)
        assert caught.value.sqlstate == "22021"
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
        sslmode="disable", autocommit=True,
    ) as conn:  # fmt: skip
        # The rows come in LATIN1 before the ParameterStatus that reports it.
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"SELECT set_config('client_encoding', 'LATIN1', false), '{WORD}'")
        assert caught.value.sqlstate == "22021"
    gw.store_rows("SELECT 1 FROM sessions WHERE ended_at IS NOT NULL")
    assert _raw(gw.store_bytes()) == []
