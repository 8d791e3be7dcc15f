"""psycopg 3 through the real gateway: simple and extended protocol, binary results, pipeline
mode, COPY both ways, named cursors, LISTEN/NOTIFY, cancel, prepared statements, transactions."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

pytestmark = pytest.mark.integration

SAMPLE = """
SELECT g AS id, 'row ' || g AS label, g * 0.25 AS fraction, g % 2 = 0 AS even,
       now()::date - g AS day, ARRAY[g, g + 1] AS pair, NULL::text AS nothing,
       jsonb_build_object('g', g) AS doc, decode(md5(g::text), 'hex') AS digest
FROM generate_series(1, 500) g ORDER BY g
"""


@pytest.fixture
def login(recorded_gateway: Any) -> Any:
    return recorded_gateway


@pytest.fixture
def direct(pg_server: Any, recorded_gateway: Any) -> Any:
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=recorded_gateway.database,
        autocommit=True,
    ) as connection:
        yield connection


def connect(login: Any, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(login.conninfo(), **kwargs)


@pytest.mark.parametrize("binary", [False, True])
def test_results_equal_direct(login: Any, direct: Any, binary: bool) -> None:
    expected = direct.cursor(binary=binary).execute(SAMPLE).fetchall()
    with connect(login) as conn:
        cursor = conn.cursor(binary=binary)
        rows = cursor.execute(SAMPLE).fetchall()
        assert [c.name for c in cursor.description] == [
            "id",
            "label",
            "fraction",
            "even",
            "day",
            "pair",
            "nothing",
            "doc",
            "digest",
        ]
        # Parameters go through Bind in the requested format too.
        echoed = cursor.execute(
            "SELECT %s::int, %s::text, %s::bytea", (7, "é", b"\x00\xff")
        ).fetchone()
    assert rows == expected
    assert len(rows) == 500
    assert echoed == (7, "é", b"\x00\xff")


def test_pipeline_mode(login: Any) -> None:
    with connect(login) as conn:
        conn.execute("CREATE TABLE p (id int PRIMARY KEY, v text)")
        with conn.pipeline():
            cursors = [
                conn.execute("INSERT INTO p VALUES (%s, %s) RETURNING id", (i, f"v{i}"))
                for i in range(50)
            ]
            count = conn.execute("SELECT count(*) FROM p")
        assert [c.fetchone() for c in cursors] == [(i,) for i in range(50)]
        assert count.fetchone() == (50,)
        conn.commit()
        # An error in a pipeline fails that batch only; the connection keeps working.
        with pytest.raises(errors.UniqueViolation), conn.pipeline():
            conn.execute("INSERT INTO p VALUES (1, 'dup')")
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM p").fetchone() == (50,)


def test_copy_from_stdin_and_to_stdout(login: Any, direct: Any) -> None:
    rows = [(i, f"name {i}\twith tab", None if i % 7 == 0 else i * 2) for i in range(2000)]
    with connect(login, autocommit=True) as conn:
        conn.execute("CREATE TABLE c (id int, name text, n int)")
        with conn.cursor().copy("COPY c FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        assert direct.execute("SELECT count(*), count(n) FROM c").fetchone() == (2000, 1714)
        with conn.cursor().copy("COPY c TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "int4"])
            copied = list(copy.rows())
        assert copied == rows
        with conn.cursor().copy(
            "COPY (SELECT id FROM c WHERE id < 3 ORDER BY id) TO STDOUT"
        ) as copy:
            assert b"".join(bytes(block) for block in copy) == b"0\n1\n2\n"
        # A COPY that fails on the server in mid-stream leaves a usable connection.
        with pytest.raises(errors.InvalidTextRepresentation):
            with conn.cursor().copy("COPY c (id) FROM STDIN") as copy:
                copy.write(b"1\nnot a number\n")
        assert conn.execute("SELECT count(*) FROM c").fetchone() == (2000,)


def test_server_side_cursor(login: Any) -> None:
    with connect(login) as conn:
        with conn.cursor(name="walker") as cursor:
            cursor.itersize = 100
            cursor.execute("SELECT g FROM generate_series(1, 1050) g")
            assert cursor.fetchmany(3) == [(1,), (2,), (3,)]
            cursor.scroll(1000, mode="absolute")
            assert [r[0] for r in cursor] == list(range(1001, 1051))
        conn.commit()
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


def test_listen_notify_reaches_the_listener(login: Any, direct: Any) -> None:
    with connect(login, autocommit=True) as listener, connect(login, autocommit=True) as sender:
        listener.execute("LISTEN jobs")
        sender.execute("NOTIFY jobs, 'from the gateway'")
        direct.execute("SELECT pg_notify('jobs', 'from outside')")
        received = []
        for notify in listener.notifies(timeout=5, stop_after=2):
            received.append((notify.channel, notify.payload))
    assert received == [("jobs", "from the gateway"), ("jobs", "from outside")]


def test_the_client_sees_the_targets_own_process_id(login: Any, direct: Any) -> None:
    """pg_backend_pid(), the pid of a notification and pg_terminate_backend agree with the
    process id the client was given, as they do direct."""
    with connect(login, autocommit=True) as conn, connect(login, autocommit=True) as other:
        pid = conn.info.backend_pid
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
        assert other.info.backend_pid != pid
        conn.execute("LISTEN self")
        conn.execute("NOTIFY self, 'mine'")
        [notify] = list(conn.notifies(timeout=5, stop_after=1))
        assert (notify.pid, notify.payload) == (pid, "mine")
        assert direct.execute(
            "SELECT usename FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() == ("postgres",)
        assert other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_a_cancel_with_the_pid_but_not_the_secret_cancels_nothing(login: Any) -> None:
    """The process id alone, with a guessed secret, reaches nobody: the query runs on."""
    with connect(login) as conn:
        pid = conn.info.backend_pid

        def guess() -> None:
            with socket.create_connection((login.gateway.host, login.gateway.port)) as sock:
                sock.sendall(struct.pack("!iiii", 16, 80877102, pid, 0x0BADF00D))
                assert sock.recv(1) == b""  # closed without an answer, as PostgreSQL does

        timer = threading.Timer(0.3, guess)
        timer.start()
        assert conn.execute("SELECT pg_sleep(1.5), 'ran'").fetchone() == ("", "ran")
        timer.join()


def test_cancel_stops_a_long_query(login: Any) -> None:
    with connect(login) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 5
        timer.join()
        conn.rollback()
        assert conn.execute("SELECT 'still alive'").fetchone() == ("still alive",)


def test_prepared_statements_run_many_times(login: Any) -> None:
    with connect(login, autocommit=True, prepare_threshold=0) as conn:
        conn.execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        for i in range(10):
            conn.execute("INSERT INTO kv VALUES (%s, %s)", (i, str(i * i)), prepare=True)
        results = [
            conn.execute("SELECT v FROM kv WHERE k = %s", (i,), prepare=True).fetchone()
            for i in range(10)
        ]
        assert results == [(str(i * i),) for i in range(10)]
        prepared = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"
        ).fetchone()
        assert prepared is not None and prepared[0] >= 2


def test_transaction_commit_and_rollback(login: Any, direct: Any) -> None:
    with connect(login) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("roll it back")
        conn.execute("INSERT INTO t VALUES (3)")
        assert direct.execute("SELECT count(*) FROM t").fetchone() == (1,)
        conn.rollback()
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT array_agg(v) FROM t").fetchone() == ([1],)
