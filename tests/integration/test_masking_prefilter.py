"""The masking prefilter through the real gateway against the real servers: a table of mostly
plain rows with personal data in a few (text, and card numbers in bigint and numeric columns)
reads the same through a gateway with the prefilter and one without it, in text and binary
formats on PostgreSQL and in text rows on MariaDB; no raw value reaches the client, and the
plain rows arrive exactly as they are stored."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import psycopg
import pymysql
import pytest
from hoopgw_masking.corpus import NEGATIVES, POSITIVES, card

pytestmark = pytest.mark.integration

FILLER = ("order shipped", "box 12, 3rd floor", "ORD-004711", "left at the door", None)


def table(count: int = 2000, seed: int = 9) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Rows ``(id, a, b, c, n, d)``: about 5 % hold personal data (in a text column, or a card
    number in ``n``/``d``); returns the rows and the raw values that must not be seen."""
    rng = random.Random(seed)
    rows, secrets = [], []
    negatives = list(NEGATIVES.values())
    for i in range(count):
        a, b, c = (rng.choice(FILLER) for _ in range(3))
        n: int | None = rng.randint(-(10**9), 10**9)
        d = f"{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}"
        if rng.random() < 0.05:
            entity = rng.choice(sorted(POSITIVES))
            value = POSITIVES[entity](rng)
            secrets.append(value.removeprefix("Bearer "))
            a = f"note: {value}; thanks"
        elif rng.random() < 0.02:
            digits = card(rng).replace(" ", "").replace("-", "")
            secrets.append(digits)
            n, d = int(digits), f"{digits}.50"
        elif rng.random() < 0.05:
            b = rng.choice(negatives)(rng)  # a hard negative: stays as it is
        rows.append((i, a, b, c, n, d))
    return rows, secrets


def unmasked(rows: list[tuple[Any, ...]], read: list[tuple[Any, ...]]) -> int:
    """How many rows arrived as stored (id and the text and bigint columns)."""
    return sum(1 for stored, got in zip(rows, read, strict=True) if stored[:5] == tuple(got[:5]))


def test_postgresql_reads_the_same_with_and_without_the_prefilter(
    gateway: Callable[..., Any], pg_server: Any, pg_database: str
) -> None:
    rows, secrets = table()
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as direct:
        direct.execute(
            "CREATE TABLE t (id int PRIMARY KEY, a text, b varchar(80), c text, n bigint,"
            " d numeric)"
        )
        with direct.cursor().copy("COPY t FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    reads: dict[str, dict[bool, list[tuple[Any, ...]]]] = {"on": {}, "off": {}}
    for name, prefilter in (("on", True), ("off", False)):
        gw = gateway(plugins=["masking"], connection={"masking": {"prefilter": prefilter}})
        key = gw.create_key("agent", ["agents"])
        with psycopg.connect(
            host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
            sslmode="disable",
        ) as conn:  # fmt: skip
            for binary in (False, True):
                cursor = conn.cursor(binary=binary)
                reads[name][binary] = cursor.execute("SELECT * FROM t ORDER BY id").fetchall()
    for binary in (False, True):
        assert reads["on"][binary] == reads["off"][binary]
        seen = repr(reads["on"][binary])
        assert [s for s in secrets if s in seen] == []
        assert len(rows) * 0.85 < unmasked(rows, reads["on"][binary]) < len(rows)


def test_mariadb_reads_the_same_with_and_without_the_prefilter(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    rows, secrets = table(seed=10)
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name,
            autocommit=True,
        ) as admin,
        admin.cursor() as cur,
    ):  # fmt: skip
        cur.execute(
            "CREATE TABLE t (id INT PRIMARY KEY, a TEXT, b VARCHAR(80), c TEXT, n BIGINT,"
            " d DECIMAL(30, 2))"
        )
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s)", rows)
    reads = {}
    for prefilter in (True, False):
        running = mysql_gateway(
            plugins=["masking"], connection={"masking": {"prefilter": prefilter}}
        )
        key = running.create_key("agent", ["agents"])
        with (
            pymysql.connect(
                host=running.host, port=running.port, user="agent", password=key,
                database=mysql_database.name,
            ) as conn,
            conn.cursor() as cur,
        ):  # fmt: skip
            cur.execute("SELECT * FROM t ORDER BY id")
            reads[prefilter] = cur.fetchall()
    assert reads[True] == reads[False]
    assert [s for s in secrets if s in repr(reads[True])] == []
    assert len(rows) * 0.85 < unmasked(rows, list(reads[True])) < len(rows)


EMAIL = "alice.smith@example.com"
CARD = "4111111111111111"


def _mariadb_read(
    mysql_gateway: Callable[..., Any], mysql_database: Any, setup: str, query: str
) -> tuple[Any, ...]:
    running = mysql_gateway(plugins=["masking"])
    key = running.create_key("agent", ["agents"])
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key,
            database=mysql_database.name, use_unicode=False,
        ) as conn,
        conn.cursor() as cur,
    ):  # fmt: skip
        cur.execute(setup)
        cur.execute(query)
        return tuple(cur.fetchone())


@pytest.mark.parametrize(
    ("setup", "query", "codec"),
    [
        ("SET character_set_results = utf16", f"SELECT '{EMAIL}', 'card {CARD}'", "utf-16-be"),
        ("SET character_set_results = utf32", f"SELECT '{EMAIL}', 'card {CARD}'", "utf-32-be"),
        ("SET character_set_results = ucs2", f"SELECT '{EMAIL}', 'card {CARD}'", "utf-16-be"),
        ("SET character_set_results = utf16le", f"SELECT '{EMAIL}', 'card {CARD}'", "utf-16-le"),
        (
            "SET character_set_results = NULL",
            f"SELECT CAST('{EMAIL}' AS CHAR CHARACTER SET utf32),"
            f" CONVERT('card {CARD}' USING ucs2)",
            None,
        ),
        (
            "SET character_set_results = NULL",
            f"SELECT _utf16 X'{EMAIL.encode('utf-16-be').hex()}',"
            f" _utf16 X'{f'card {CARD}'.encode('utf-16-be').hex()}'",
            "utf-16-be",
        ),
    ],
)
def test_mariadb_masks_rows_sent_in_another_character_set(
    mysql_gateway: Callable[..., Any], mysql_database: Any, setup: str, query: str,
    codec: str | None,
) -> None:  # fmt: skip
    row = _mariadb_read(mysql_gateway, mysql_database, setup, query)
    codecs = [codec] * len(row) if codec else ["utf-32-be", "utf-16-be"]
    texts = [value.decode(c) for value, c in zip(row, codecs, strict=True)]
    assert texts == ["[EMAIL]", "card [CREDIT_CARD]"]  # masked, and still in its set


def test_mariadb_ends_the_session_on_a_character_set_it_cannot_read(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    with pytest.raises(pymysql.err.MySQLError, match="cannot read exactly"):
        _mariadb_read(
            mysql_gateway,
            mysql_database,
            "SET character_set_results = NULL",
            f"SELECT CONVERT('{EMAIL}' USING sjis)",
        )


@pytest.mark.parametrize("binary", [False, True])
def test_postgresql_masks_deny_words_in_a_single_byte_client_encoding(
    gateway: Callable[..., Any], pg_server: Any, pg_database: str, binary: bool
) -> None:
    gw = gateway(plugins=["masking"], connection={"masking": {"deny_words": ["Müller"]}})
    key = gw.create_key("agent", ["agents"])
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
        sslmode="disable", client_encoding="LATIN1",
    ) as conn:  # fmt: skip
        row = conn.cursor(binary=binary).execute("SELECT 'Herr Müller'::text").fetchone()
    assert row == ("Herr [DENY_LIST]",)


def test_postgresql_masks_deny_words_in_copy_out_in_a_single_byte_client_encoding(
    gateway: Callable[..., Any], pg_server: Any, pg_database: str
) -> None:
    gw = gateway(plugins=["masking"], connection={"masking": {"deny_words": ["Müller"]}})
    key = gw.create_key("agent", ["agents"])
    with psycopg.connect(
        host=gw.host, port=gw.port, user="agent", password=key, dbname=pg_database,
        sslmode="disable", client_encoding="LATIN1",
    ) as conn:  # fmt: skip
        with conn.cursor().copy("COPY (SELECT 'Herr Müller') TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
    assert data == b"Herr [DENY_LIST]\n"
