"""Tests for the MariaDB helper of the integration tests and the fixtures built on it."""

from __future__ import annotations

import socket
import sys
from typing import Any

import pymysql
import pytest

mysqlserver: Any = sys.modules["hoopgw_tests_mysqlserver"]  # registered by tests/conftest.py


def test_address_from_env_defaults_to_local_3306() -> None:
    assert mysqlserver.address_from_env({}) == mysqlserver.MyAddress(host="127.0.0.1", port=3306)


def test_address_from_env_reads_host_and_port() -> None:
    environ = {"HOOPGW_TEST_MYHOST": "db.example", "HOOPGW_TEST_MYPORT": "3307"}
    assert mysqlserver.address_from_env(environ) == mysqlserver.MyAddress(
        host="db.example", port=3307
    )


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_address_from_env_rejects_a_bad_port(port: str) -> None:
    with pytest.raises(ValueError, match="HOOPGW_TEST_MYPORT"):
        mysqlserver.address_from_env({"HOOPGW_TEST_MYPORT": port})


def test_a_port_without_a_mysql_server_does_not_answer() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # Something listens but never greets: not a MySQL server.
        assert not mysqlserver.server_answers(
            mysqlserver.MyAddress(host="127.0.0.1", port=port), timeout=0.2
        )
    assert not mysqlserver.server_answers(mysqlserver.MyAddress(host="127.0.0.1", port=port))


@pytest.mark.integration
def test_mysql_database_gives_a_user_with_a_password(mysql_database: Any) -> None:
    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host,
            port=server.port,
            user=mysql_database.user,
            password=mysql_database.password,
            database=mysql_database.name,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (mysql_database.name,)
