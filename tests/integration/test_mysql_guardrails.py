"""The MySQL guardrails corpus end to end through the real gateway to the real MariaDB.

One gateway (guardrails with ``preset = "agent-readonly"``) in front of a fresh database holding
a canary table, view and procedure. Each must-deny case must come back as the gateway's refusal
(error 1227) *and* leave no trace: the canary snapshot (rows, tables, routines, users, global
settings, the canary file) is taken over a direct root connection after every case. Each
must-allow case must not be refused by the gateway.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

CORPUS = tomllib.loads(
    (Path(__file__).parents[1] / "protocols" / "mysql" / "corpus.toml").read_text()
)["case"]
DENY = [c for c in CORPUS if c["expect"] == "deny"]
ALLOW = [c for c in CORPUS if c["expect"] == "allow"]
CANARY_FILE = "/tmp/hoopgw-canary"

SETUP = [
    "CREATE TABLE canary (id INT PRIMARY KEY, note VARCHAR(40))",
    "INSERT INTO canary VALUES (1, 'row 1'), (2, 'row 2'), (3, 'row 3')",
    "CREATE VIEW canary_view AS SELECT * FROM canary",
    "CREATE PROCEDURE canary_proc() DELETE FROM canary",
]


def _root(server: Any, database: str | None = None) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host=server.host, port=server.port, user="root", database=database, autocommit=True
    )


def _snapshot(server: Any, database: str) -> dict[str, Any]:
    with _root(server, database) as conn, conn.cursor() as cur:

        def rows(query: str, *args: Any) -> Any:
            cur.execute(query, args or None)
            return cur.fetchall()

        return {
            "canary": rows("SELECT * FROM canary ORDER BY id"),
            "tables": rows(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_schema = %s ORDER BY table_name",
                database,
            ),
            "columns": rows(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " ORDER BY table_name, column_name",
                database,
            ),
            "routines": rows(
                "SELECT routine_name FROM information_schema.routines WHERE routine_schema = %s",
                database,
            ),
            "users": rows("SELECT user FROM mysql.user WHERE user LIKE 'canary%%'"),
            "databases": rows("SHOW DATABASES LIKE 'canary%%'"),
            "globals": rows("SELECT @@global.max_connections, @@global.sql_mode"),
            "file": os.path.exists(CANARY_FILE),
        }


@pytest.fixture
def guarded(mysql_gateway: Callable[..., Any], mysql_database: Any) -> Any:
    with _root(mysql_database.server, mysql_database.name) as conn, conn.cursor() as cur:
        for statement in SETUP:
            cur.execute(statement)
    running = mysql_gateway(
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"preset": "agent-readonly"}},
    )
    key = running.create_key("agent", ["agents"])

    def connect() -> pymysql.Connection[Any]:
        return pymysql.connect(
            host=running.host,
            port=running.port,
            user="agent",
            password=key,
            database=mysql_database.name,
            autocommit=True,
            client_flag=CLIENT.MULTI_STATEMENTS,
        )

    return connect


def test_the_corpus_end_to_end(guarded: Any, mysql_database: Any) -> None:
    server, database = mysql_database.server, mysql_database.name
    before = _snapshot(server, database)
    assert not before["file"], f"{CANARY_FILE} exists before the test"
    not_refused = []
    with guarded() as conn:
        for case in DENY:
            try:
                with conn.cursor() as cur:
                    cur.execute(case["sql"])
                    while cur.nextset():
                        pass
                not_refused.append(case["sql"])
            except pymysql.err.MySQLError as exc:
                if exc.args[0] != 1227 or "hoopgw refused" not in str(exc.args[1]):
                    not_refused.append(f"{case['sql']}: {exc}")
            after = _snapshot(server, database)
            assert after == before, f"{case['sql']!r} changed the canaries"
        refused = []
        for case in ALLOW:
            try:
                with conn.cursor() as cur:
                    cur.execute(case["sql"])
                    while cur.nextset():
                        pass
            except pymysql.err.MySQLError as exc:
                # agent-readonly makes the session read-only, where the protocol runs one
                # statement per packet (docs/protocols/mysql.md); guardrails allows the text.
                one_by_one = "one statement per packet" in str(exc.args[-1])
                if "hoopgw refused" in str(exc.args[-1]) and not one_by_one:
                    refused.append(f"{case['sql']}: {exc}")
                conn.ping(reconnect=False)
    assert not not_refused, not_refused
    assert not refused, refused
