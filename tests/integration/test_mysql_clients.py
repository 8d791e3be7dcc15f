"""Real MySQL clients through the real gateway to the real MariaDB: PyMySQL, mysql-connector-python
(pure-Python mode) and the ``mysql`` command-line client; queries, prepared statements with
binary rows, multi-statements, blobs above 16 MiB, TLS, a wrong key, the target down; and the
recording of every command."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration


@attrs.frozen(kw_only=True)
class Login:
    gateway: Any
    database: Any
    key: str

    def pymysql(self, **options: Any) -> pymysql.Connection[Any]:
        return pymysql.connect(
            host=self.gateway.host,
            port=self.gateway.port,
            user="agent",
            password=self.key,
            database=self.database.name,
            autocommit=True,
            **options,
        )

    def connector(self, ca: Path, **options: Any) -> Any:
        return mysql.connector.connect(
            host=self.gateway.host,
            port=self.gateway.port,
            user="agent",
            password=self.key,
            database=self.database.name,
            use_pure=True,
            ssl_ca=str(ca),
            ssl_verify_cert=True,
            autocommit=True,
            **options,
        )


@pytest.fixture
def login(mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any) -> Login:
    running = mysql_gateway(
        plugins=["recording"],
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    key = running.create_key("agent", ["agents"])
    return Login(gateway=running, database=mysql_database, key=key)


def mysql_admin(server: Any) -> pymysql.Connection[Any]:
    return pymysql.connect(host=server.host, port=server.port, user="root", autocommit=True)


def recorded_commands(login: Login, sessions: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        listed = login.gateway.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found = json.loads(listed.stdout)
        ended = [s for s in found if s["ended_at"]]
        if len(ended) >= sessions or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    commands = []
    for session in sorted(ended, key=lambda s: s["started_at"]):
        shown = login.gateway.cli("sessions", "show", session["id"], "--json")
        assert shown.returncode == 0, shown.stderr
        commands.extend(json.loads(shown.stdout)["commands"])
    return commands


def test_pymysql_queries_errors_and_multi_statements(login: Login) -> None:
    with login.pymysql(client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(40), born DATE)")
        cur.execute(
            "INSERT INTO people VALUES (%s, %s, %s), (%s, %s, NULL)",
            (1, "Ada", datetime.date(1815, 12, 10), 2, "Grace"),
        )
        assert cur.rowcount == 2
        cur.execute("SELECT id, name, born FROM people ORDER BY id")
        assert cur.fetchall() == ((1, "Ada", datetime.date(1815, 12, 10)), (2, "Grace", None))
        with pytest.raises(pymysql.err.OperationalError) as raised:
            cur.execute("SELECT nope FROM people")
        assert raised.value.args[0] == 1054
        cur.execute("SELECT 1; SELECT 'two'; UPDATE people SET name = 'Ada L' WHERE id = 1")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == (("two",),)
        assert cur.nextset()
        assert cur.rowcount == 1
        assert not cur.nextset()
        conn.ping()
        conn.select_db(login.database.name)
        cur.execute("SELECT name FROM people WHERE id = 1")
        assert cur.fetchone() == ("Ada L",)

    commands = recorded_commands(login)
    texts = [c["text"] for c in commands]
    assert "SELECT nope FROM people" in texts
    assert f"USE `{login.database.name}`" in texts
    failed = next(c for c in commands if c["text"] == "SELECT nope FROM people")
    assert (failed["status"], failed["error_code"]) == ("error", "42S22")
    multi = next(c for c in commands if c["text"].startswith("SELECT 1; SELECT 'two'"))
    assert multi["status"] == "ok"
    assert [c["seq"] for c in commands] == list(range(1, len(commands) + 1))


def test_connector_prepared_statements_return_binary_rows_over_tls(
    login: Login, tls_files: Any
) -> None:
    with login.connector(tls_files.ca_cert) as conn:
        cur = conn.cursor(prepared=True)
        cur.execute(
            "CREATE TABLE typed (i INT, b BIGINT, d DOUBLE, n DECIMAL(10,2), t DATETIME(3),"
            " s VARCHAR(20), x BLOB, tiny TINYINT, tm TIME)"
        )
        row = (
            -7,
            2**40,
            2.5,
            decimal.Decimal("12.34"),
            datetime.datetime(2024, 2, 29, 13, 14, 15, 123000),
            "héllo",
            b"\x00\xffbin",
            3,
            datetime.timedelta(hours=1, minutes=2, seconds=3),
        )
        cur.execute("INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        cur.execute("INSERT INTO typed (i) VALUES (?)", (None,))
        cur.execute("SELECT * FROM typed WHERE i = ? OR i IS NULL ORDER BY i DESC", (-7,))
        got = cur.fetchall()
        assert got[0][:5] == row[:5]
        assert got[0][5] == "héllo" and bytes(got[0][6]) == row[6]
        assert got[0][7:] == row[7:]
        assert got[1] == (None,) * 9
        status = conn.cmd_query("SHOW STATUS LIKE 'Ssl_cipher'")
        assert status is not None
        conn.get_rows()

    texts = [c["text"] for c in recorded_commands(login)]
    # Each execution of a prepared statement is a command of its own, with its text.
    assert texts.count("SELECT * FROM typed WHERE i = ? OR i IS NULL ORDER BY i DESC") == 2


def test_blobs_above_16_mib_round_trip(login: Login, mysql_server: Any) -> None:
    size = 17 * 1024 * 1024 + 3
    with mysql_admin(mysql_server) as admin, admin.cursor() as cur:
        cur.execute("SELECT @@global.max_allowed_packet")
        (before,) = cur.fetchone()
        if before < 64 * 1024 * 1024:
            cur.execute("SET GLOBAL max_allowed_packet = 67108864")
    try:
        blob = bytes(range(256)) * (size // 256) + b"end"
        with login.pymysql() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE big (id INT, v LONGBLOB)")
            cur.execute("INSERT INTO big VALUES (1, %s)", (blob,))
            cur.execute("SELECT v, LENGTH(v) FROM big")
            value, length = cur.fetchone()
            assert length == len(blob) and value == blob
    finally:
        if before < 64 * 1024 * 1024:
            with mysql_admin(mysql_server) as admin, admin.cursor() as cur:
                cur.execute(f"SET GLOBAL max_allowed_packet = {int(before)}")


@pytest.mark.skipif(shutil.which("mysql") is None, reason="the mysql client is not installed")
def test_mysql_command_line_client_over_tls(login: Login, tls_files: Any) -> None:
    result = subprocess.run(
        [
            "mysql",
            f"--host={login.gateway.host}",
            f"--port={login.gateway.port}",
            "--user=agent",
            f"--password={login.key}",
            "--ssl",
            f"--ssl-ca={tls_files.ca_cert}",
            "--ssl-verify-server-cert",
            "--batch",
            login.database.name,
            "-e",
            "CREATE TABLE cli (v TEXT); INSERT INTO cli VALUES ('from the cli');"
            " SELECT v FROM cli; SHOW STATUS LIKE 'Ssl_version'",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "from the cli" in result.stdout
    assert "Ssl_version" in result.stdout


def test_wrong_key_is_refused_with_access_denied(login: Login) -> None:
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql.connect(
            host=login.gateway.host,
            port=login.gateway.port,
            user="agent",
            password=login.key[:-2] + "xx",
            database=login.database.name,
        )
    assert raised.value.args[0] == 1045
    assert login.key not in str(raised.value)


def test_target_down_is_reported(mysql_gateway: Callable[..., Any], mysql_database: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = mysql_gateway(connection={"target": f"127.0.0.1:{port}"})
    key = running.create_key("agent", ["agents"])
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql.connect(host=running.host, port=running.port, user="agent", password=key)
    # A server error number: clients read 2013 from a server as a malformed packet.
    assert raised.value.args[0] == 1429
    assert "unreachable" in str(raised.value)


def test_local_infile_only_where_the_connection_enables_it(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tmp_path: Path
) -> None:
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{i}\trow {i}\n" for i in range(1, 1001)))
    load = f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE loaded"

    def connect(running: Any) -> pymysql.Connection[Any]:
        key = running.create_key("agent", ["agents"])
        return pymysql.connect(
            host=running.host,
            port=running.port,
            user="agent",
            password=key,
            database=mysql_database.name,
            autocommit=True,
            local_infile=True,
        )

    enabled = mysql_gateway(connection={"local_infile": True})
    with connect(enabled) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE loaded (id INT, note TEXT)")
        cur.execute(load)
        cur.execute("SELECT COUNT(*), MAX(note) FROM loaded")
        assert cur.fetchone() == (1000, "row 999")

    disabled = mysql_gateway()
    with connect(disabled) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute(load)
        cur.execute("SELECT COUNT(*) FROM loaded")
        assert cur.fetchone() == (1000,)


def test_change_user_re_authenticates_the_same_identity(login: Login, tls_files: Any) -> None:
    with login.connector(tls_files.ca_cert) as conn:
        cur = conn.cursor()
        cur.execute("SET @marker = 7")
        conn.cmd_change_user(username="agent", password=login.key, database=login.database.name)
        cur = conn.cursor()
        cur.execute("SELECT @marker, DATABASE()")
        # The session state is reset, as a change of user resets it.
        assert cur.fetchall() == [(None, login.database.name)]

    other = login.gateway.create_key("someone", ["agents"])
    with login.connector(tls_files.ca_cert) as conn:
        with pytest.raises(mysql.connector.Error) as refused:
            conn.cmd_change_user(username="someone", password=other)
        assert "open a new connection" in str(refused.value)

    with login.connector(tls_files.ca_cert) as conn:
        with pytest.raises(mysql.connector.Error):
            conn.cmd_change_user(username="agent", password=login.key + "x")


def test_protocol_commands_are_recorded_and_pass_guardrails(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tls_files: Any
) -> None:
    running = mysql_gateway(
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"preset": "agent-readonly"}},
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    login = Login(
        gateway=running, database=mysql_database, key=running.create_key("agent", ["agents"])
    )
    with login.connector(tls_files.ca_cert) as conn:
        answer = conn._send_cmd(0x1B, (0).to_bytes(2, "little"))  # COM_SET_OPTION
        assert answer is not None and answer[4] != 0xFF
        assert conn.cmd_statistics()["Uptime"] > 0
        prepared = conn.cmd_stmt_prepare(b"SELECT ?")
        statement = int(prepared["statement_id"])  # type: ignore[call-overload]
        conn.cmd_stmt_send_long_data(statement, 0, io.BytesIO(b"long value"))
        conn.cmd_stmt_reset(statement)
        conn.cmd_stmt_close(statement)
        conn.cmd_ping()
        assert conn.cmd_reset_connection()
        conn.cmd_change_user(username="agent", password=login.key, database=mysql_database.name)

    recorded = [(c["kind"], c["text"], c["status"]) for c in recorded_commands(login)]
    expected = [
        ("set_option", "COM_SET_OPTION MULTI_STATEMENTS_ON", "ok"),
        ("statistics", "COM_STATISTICS", "ok"),
        ("parse", "SELECT ?", "ok"),
        (
            "stmt_send_long_data",
            f"COM_STMT_SEND_LONG_DATA {statement} parameter 0 (10 bytes)",
            "ok",
        ),
        ("stmt_reset", f"COM_STMT_RESET {statement}", "ok"),
        ("stmt_close", f"COM_STMT_CLOSE {statement}", "ok"),
        ("reset_connection", "COM_RESET_CONNECTION", "ok"),
        ("change_user", "COM_CHANGE_USER `agent`", "ok"),
        ("init_db", f"USE `{mysql_database.name}`", "ok"),
    ]
    assert [r for r in recorded if r[0] != "query"] == expected  # COM_PING is not recorded
