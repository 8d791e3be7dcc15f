"""Config reload of a real gateway process with real clients: live sessions survive it and
take the new policy at their next command; a new connection serves; a bad config is refused
while the gateway keeps serving; a removed connection or a lost access ends its session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import tomli_w

from tests.conftest import HOOPGW_COMMAND, RunningGateway, free_port

pytestmark = pytest.mark.integration


def edit_config(gateway: RunningGateway, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the gateway's config file with ``change`` applied to its document."""
    document = tomllib.loads(gateway.config_path.read_text())
    change(document)
    gateway.config_path.write_text(tomli_w.dumps(document))


def hang_up(gateway: RunningGateway, *, outcome: str = "config reloaded") -> None:
    """Send SIGHUP and wait for the log line of one more reload with ``outcome``."""
    before = gateway.stderr_text().count(outcome)
    gateway.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while gateway.stderr_text().count(outcome) == before:
        assert time.monotonic() < deadline, f"no {outcome!r} in:\n{gateway.stderr_text()}"
        assert gateway.process.poll() is None, gateway.stderr_text()
        time.sleep(0.05)


def connection(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in document["connections"] if c["name"] == name)


def add_copy(document: dict[str, Any], name: str, port: int) -> None:
    """Add a copy of the first connection as ``name`` on ``port``."""
    copy = json.loads(json.dumps(document["connections"][0]))
    copy.update(name=name, listen=f"tcp:{port}:interface=127.0.0.1")
    document["connections"].append(copy)


def records(gateway: RunningGateway, kind: str, session_id: str = "") -> list[dict[str, Any]]:
    where = "kind = ?" + (" AND session_id = ?" if session_id else "")
    rows = gateway.store_query(
        f"SELECT seq, data FROM audit_records WHERE {where} ORDER BY seq",
        (kind, session_id) if session_id else (kind,),
    )
    return [{**json.loads(data), "record": seq} for seq, data in rows]


def closed(gateway: RunningGateway, session_id: str) -> list[dict[str, Any]]:
    """The ``session_closed`` records of ``session_id``, once one is written (within 10 s: it
    is committed with the next group of records)."""
    deadline = time.monotonic() + 10
    while not (found := records(gateway, "session_closed", session_id)):
        assert time.monotonic() < deadline, "no session_closed record"
        time.sleep(0.05)
    return found


def stored(gateway: RunningGateway, kind: str) -> list[dict[str, Any]]:
    """The records of ``kind``, once one is in the store (within 10 s: the journal holds a
    record before the store does)."""
    deadline = time.monotonic() + 10
    while not (found := records(gateway, kind)):
        assert time.monotonic() < deadline, f"no {kind} record"
        time.sleep(0.05)
    return found


def reload_cli(gateway: RunningGateway, admin_port: int, token: str) -> Any:
    return subprocess.run(
        [*HOOPGW_COMMAND, "reload"],
        env={**os.environ, "HOOPGW_URL": f"http://127.0.0.1:{admin_port}", "HOOPGW_TOKEN": token},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.store
def test_a_live_session_takes_the_new_policy_a_new_connection_serves_a_bad_config_is_refused(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    admin_port = free_port()
    gw = gateway(
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"deny": ["truncate"]}},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"admin": ["ops"]},
    )
    key = gw.create_key("agent-1", ["agents"])
    admin = gw.create_key("root", ["ops"])
    second_port = free_port()
    with psycopg.connect(
        host=gw.host,
        port=gw.port,
        user="agent-1",
        password=key,
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE t (id int)")
        session_id = gw.store_rows("SELECT id FROM sessions")[0][0]

        def stricter(document: dict[str, Any]) -> None:
            connection(document, "pg")["guardrails"]["deny"] = ["truncate", "drop"]
            add_copy(document, "pg2", second_port)

        edit_config(gw, stricter)
        hang_up(gw)
        # The same session, its next command judged by the new policy.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="drop"):
            conn.execute("DROP TABLE t")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        # The new connection serves.
        with psycopg.connect(
            host=gw.host, port=second_port, user="agent-1", password=key, dbname=pg_database
        ) as other:
            assert other.execute("SELECT 1").fetchone() == (1,)
        # A bad config is refused with its errors; the gateway keeps serving.
        edit_config(gw, lambda d: connection(d, "pg")["guardrails"].update(deny=["nonsense"]))
        refused = reload_cli(gw, admin_port, admin)
        assert refused.returncode != 0
        assert "nonsense" in refused.stderr and "guardrails.deny" in refused.stderr
        assert "the running config stays" in gw.stderr_text()
        assert conn.execute("SELECT 2").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE t")  # still the policy of the last good config
        # An admin's reload through the CLI is applied and says what changed.
        edit_config(gw, lambda d: connection(d, "pg")["guardrails"].update(deny=["truncate"]))
        applied = reload_cli(gw, admin_port, admin)
        assert applied.returncode == 0, applied.stderr
        assert "changed: pg (guardrails)" in applied.stdout
        conn.execute("DROP TABLE t")
    reloads = records(gw, "config_reloaded")
    assert [r["by"] for r in reloads] == ["SIGHUP", "root (admin API)"]
    assert reloads[0]["added"] == ["pg2"] and reloads[0]["changed"] == {"pg": ["guardrails"]}
    assert reloads[0]["digest"].startswith("sha256:")
    # The refused one is in the chain too, between them: who asked, the file, why.
    [refused] = records(gw, "config_reload_refused")
    assert refused["by"] == "root (admin API)" and refused["digest"].startswith("sha256:")
    assert "nonsense" in refused["errors"][0] and refused["file"] == str(gw.config_path.resolve())
    assert reloads[0]["record"] < refused["record"] < reloads[1]["record"]
    # One continuous record of the session: commands before and after each reload.
    received = records(gw, "command_received", session_id)
    texts = [r["text"] for r in received]
    assert texts[0] == "CREATE TABLE t (id int)" and texts[-1] == "DROP TABLE t"
    assert received[0]["record"] < reloads[0]["record"] < received[1]["record"]
    assert len(records(gw, "session_started", session_id)) == 1
    assert len(closed(gw, session_id)) == 1


@pytest.mark.store
def test_a_removed_connection_ends_its_session_with_a_message_and_a_record(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    gw = gateway(plugins=["recording"])
    key = gw.create_key("agent-1", ["agents"])
    second_port = free_port()
    edit_config(gw, lambda d: add_copy(d, "pg2", second_port))
    hang_up(gw)
    with (
        psycopg.connect(
            host=gw.host,
            port=second_port,
            user="agent-1",
            password=key,
            dbname=pg_database,
            autocommit=True,
        ) as conn,
        psycopg.connect(
            host=gw.host,
            port=gw.port,
            user="agent-1",
            password=key,
            dbname=pg_database,
            autocommit=True,
        ) as kept,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
        edit_config(gw, lambda d: d["connections"].pop())
        hang_up(gw)
        with pytest.raises(psycopg.OperationalError, match=r"pg2.*removed"):
            conn.execute("SELECT 1")
        assert kept.execute("SELECT 1").fetchone() == (1,)  # the other connection goes on
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=gw.host,
            port=second_port,
            user="agent-1",
            password=key,
            dbname=pg_database,
            connect_timeout=5,
        )
    [ended] = stored(gw, "session_terminated")
    assert ended["by"] == "config reload (SIGHUP)" and "removed" in ended["reason"]
    assert records(gw, "config_reloaded")[-1]["ended_sessions"] == [ended_session(gw, ended)]


def ended_session(gw: RunningGateway, record: dict[str, Any]) -> str:
    [(session_id,)] = gw.store_query(
        "SELECT session_id FROM audit_records WHERE seq = ?", (record["record"],)
    )
    return str(session_id)


@pytest.mark.store
def test_a_session_whose_identity_lost_access_is_ended(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    gw = gateway(plugins=["recording"], allow_groups=["agents", "dba"])
    agent = gw.create_key("agent-1", ["agents"])
    dba = gw.create_key("dba-1", ["dba"])
    with (
        psycopg.connect(
            host=gw.host,
            port=gw.port,
            user="agent-1",
            password=agent,
            dbname=pg_database,
            autocommit=True,
        ) as losing,
        psycopg.connect(
            host=gw.host,
            port=gw.port,
            user="dba-1",
            password=dba,
            dbname=pg_database,
            autocommit=True,
        ) as keeping,
    ):
        edit_config(gw, lambda d: connection(d, "pg").update(allow_groups=["dba"]))
        hang_up(gw)
        with pytest.raises(psycopg.OperationalError, match="may no longer use connection"):
            losing.execute("SELECT 1")
        assert keeping.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="allow_groups"):
        psycopg.connect(
            host=gw.host, port=gw.port, user="agent-1", password=agent, dbname=pg_database
        )
    [ended] = records(gw, "session_terminated")
    assert "agent-1" in ended["reason"]


def test_a_mysql_session_survives_a_reload_and_takes_the_new_policy(
    mysql_gateway: Callable[..., RunningGateway], mysql_database: Any
) -> None:
    gw = mysql_gateway(plugins=["recording"])
    key = gw.create_key("agent", ["agents"])
    conn = pymysql.connect(
        host=gw.host,
        port=gw.port,
        user="agent",
        password=key,
        database=mysql_database.name,
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id int)")

        def guarded(document: dict[str, Any]) -> None:
            my = connection(document, "my")
            my["plugins"] = ["recording", "guardrails"]
            my["guardrails"] = {"deny": ["drop"]}

        edit_config(gw, guarded)
        hang_up(gw)
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
            with pytest.raises(pymysql.err.MySQLError, match="drop"):
                cursor.execute("DROP TABLE t")
            cursor.execute("SELECT count(*) FROM t")
            assert cursor.fetchone() == (0,)
    finally:
        conn.close()
    [session_id] = [row[0] for row in gw.store_rows("SELECT id FROM sessions")]
    closed(gw, session_id)
    kinds = [
        row[0]
        for row in gw.store_query(
            "SELECT kind FROM audit_records WHERE session_id = ? ORDER BY seq", (session_id,)
        )
    ]
    assert kinds.count("session_started") == 1 and kinds[-1] == "session_closed"


def test_an_ssh_session_survives_a_reload_and_takes_the_new_policy(
    ssh_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    from tests.integration.test_ssh import SSH, Client, add_ssh_key, generate_key

    gw = ssh_gateway(
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"deny_commands": ["git push --force"]}},
    )
    key = generate_key(tmp_path / "agent_key")
    add_ssh_key(gw, key)
    client = Client(gw, tmp_path / "client", key=key, token=None)
    control = tmp_path / "control.sock"
    shared = ["-o", f"ControlPath={control}"]
    master = subprocess.Popen(
        [SSH, *client.options(), *shared, "-o", "ControlMaster=yes", "-N", f"agent@{gw.host}"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=client.env(),
    )
    try:
        deadline = time.monotonic() + 20
        while not control.exists():
            assert time.monotonic() < deadline and master.poll() is None, master.stderr
            time.sleep(0.05)
        before = client.run("echo before", *shared)
        assert before.stdout == b"before\n", before.stderr
        edit_config(
            gw,
            lambda d: connection(d, "ssh")["guardrails"].update(
                deny_commands=["git push --force", "touch"]
            ),
        )
        hang_up(gw)
        refused = client.run(f"touch {tmp_path}/x", *shared)
        assert refused.returncode != 0 and b"touch" in refused.stderr
        after = client.run("echo after", *shared)
        assert after.stdout == b"after\n", after.stderr
        assert master.poll() is None  # the same SSH connection throughout
    finally:
        master.terminate()
        master.wait(10)
    sessions = gw.store_rows("SELECT id FROM sessions")
    assert len(sessions) == 1
    texts = [
        json.loads(data)["text"]
        for (data,) in gw.store_query(
            "SELECT data FROM audit_records WHERE kind = 'command_received' AND session_id = ?"
            " ORDER BY seq",
            (sessions[0][0],),
        )
    ]
    assert texts == ["echo before", f"touch {tmp_path}/x", "echo after"]


@pytest.mark.store
def test_replaced_plugins_take_the_session_over_and_rejudge_it(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    gw = gateway(plugins=["recording"])
    key = gw.create_key("agent-1", ["agents"])
    params = {"host": gw.host, "port": gw.port, "user": "agent-1", "password": key}
    with (
        psycopg.connect(**params, dbname=pg_database, autocommit=True) as plain,
        psycopg.connect(
            **params,
            dbname=pg_database,
            autocommit=True,
            options="-c session_replication_role=replica",
        ) as unsafe,
    ):
        assert plain.execute("SELECT 1").fetchone() == (1,)
        assert unsafe.execute("SELECT 1").fetchone() == (1,)

        def guarded(document: dict[str, Any]) -> None:
            pg = connection(document, "pg")
            pg["plugins"] = ["recording", "guardrails"]
            pg["recording"] = {"sample_rows": 3}
            pg["guardrails"] = {"deny": ["admin"]}

        edit_config(gw, guarded)
        hang_up(gw)
        # guardrails, new to the session, judges its startup settings as at its start.
        with pytest.raises(psycopg.OperationalError, match="the reloaded config ended"):
            unsafe.execute("SELECT 1")
        assert plain.execute("SELECT 2").fetchone() == (2,)
    for session_id, _ in gw.store_query("SELECT id, started_at FROM sessions"):
        closed(gw, session_id)
        kinds = [
            kind
            for (kind,) in gw.store_query(
                "SELECT kind FROM audit_records WHERE session_id = ? ORDER BY seq",
                (session_id,),
            )
        ]
        # One record per session: the recorder with new options took it over.
        assert kinds.count("session_started") == 1 and kinds.count("session_closed") == 1
        assert kinds.index("session_handed_over") < kinds.index("session_continued")


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def _pg_read(sock: Any) -> tuple[bytes, bytes]:
    """One backend message (kind, body); (b"", b"") when the gateway closed the connection."""
    header = b""
    while len(header) < 5:
        chunk = sock.recv(5 - len(header))
        if not chunk:
            return b"", b""
        header += chunk
    size = int.from_bytes(header[1:5], "big") - 4
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return b"", b""
        body += chunk
    return header[:1], body


@pytest.mark.store
def test_a_client_logging_in_across_a_read_only_reload_does_not_get_a_writable_session(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    """A client that opened its connection before a reload made the connection read-only and
    sends its password after: admitted by the new config, it must not get a session whose
    target login was made without ``default_transaction_read_only`` (the old runtime's)."""
    import socket

    gw = gateway(plugins=["recording", "guardrails"], connection={"client_tls": "disabled"})
    key = gw.create_key("agent-1", ["agents"])
    with socket.create_connection((gw.host, gw.port), timeout=20) as sock:
        params = b"user\0agent-1\0database\0" + pg_database.encode() + b"\0\0"
        startup = (196608).to_bytes(4, "big") + params
        sock.sendall((len(startup) + 4).to_bytes(4, "big") + startup)
        kind, body = _pg_read(sock)
        assert kind == b"R" and body[:4] == (3).to_bytes(4, "big")  # password, please
        edit_config(gw, lambda d: connection(d, "pg").update(guardrails={"deny": ["write"]}))
        hang_up(gw)
        sock.sendall(_pg_message(b"p", key.encode() + b"\0"))
        sock.sendall(_pg_message(b"Q", b"SHOW default_transaction_read_only\0"))
        seen: list[tuple[bytes, bytes]] = []
        while True:
            kind, body = _pg_read(sock)
            if not kind:
                break
            seen.append((kind, body))
            if kind == b"Z" and any(k == b"T" for k, _ in seen):
                break
    rows = [body for kind, body in seen if kind == b"D"]
    assert rows == [] or all(b"on" in row for row in rows), seen
    assert any(kind == b"E" for kind, _ in seen), seen


@pytest.mark.store
def test_masking_enabled_by_a_reload_masks_the_next_result_of_a_live_session(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    """The first result after a reload that enables masking is masked, in the extended
    protocol as in the simple one: nothing described under the old chain lets it through."""
    gw = gateway(plugins=["recording"], connection={"client_tls": "disabled"})
    key = gw.create_key("agent-1", ["agents"])
    email = "alice.smith@example.com"
    params = {"host": gw.host, "port": gw.port, "user": "agent-1", "password": key}
    with psycopg.connect(**params, dbname=pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT %s::text", [email]).fetchone() == (email,)

        def masked(document: dict[str, Any]) -> None:
            connection(document, "pg")["plugins"] = ["recording", "masking"]

        edit_config(gw, masked)
        hang_up(gw)
        first = conn.execute("SELECT %s::text", [email]).fetchone()
        second = conn.execute("SELECT %s::text", [email]).fetchone()
        simple = conn.execute(f"SELECT '{email}'::text", prepare=False).fetchone()
    assert email not in str(simple), simple  # masking is on
    assert email not in str(second), second
    assert email not in str(first), first


def _pg_until_ready(sock: Any) -> list[tuple[bytes, bytes]]:
    seen = []
    while True:
        kind, body = _pg_read(sock)
        assert kind, f"connection closed after {seen}"
        seen.append((kind, body))
        if kind == b"Z":
            return seen


@pytest.mark.store
def test_masking_enabled_by_a_reload_masks_the_rest_of_a_portal_described_before(
    gateway: Callable[..., RunningGateway], pg_database: str
) -> None:
    """A portal described and partly fetched before a reload that enables masking (a client
    fetching in batches, as JDBC's fetch size does) gives its remaining rows masked."""
    import socket

    gw = gateway(plugins=["recording"], connection={"client_tls": "disabled"})
    key = gw.create_key("agent-1", ["agents"])
    emails = [f"person{i}.smith@example.com" for i in range(3)]
    with socket.create_connection((gw.host, gw.port), timeout=20) as sock:
        params = b"user\0agent-1\0database\0" + pg_database.encode() + b"\0\0"
        startup = (196608).to_bytes(4, "big") + params
        sock.sendall((len(startup) + 4).to_bytes(4, "big") + startup)
        assert _pg_read(sock)[0] == b"R"
        sock.sendall(_pg_message(b"p", key.encode() + b"\0"))
        _pg_until_ready(sock)
        sock.sendall(_pg_message(b"Q", b"BEGIN\0"))
        _pg_until_ready(sock)
        values = ", ".join(f"('{e}')" for e in emails).encode()
        query = b"SELECT v FROM (VALUES " + values + b") AS t(v)\0"
        sock.sendall(
            _pg_message(b"P", b"\0" + query + b"\0\0")
            + _pg_message(b"B", b"cur\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
            + _pg_message(b"D", b"Pcur\0")
            + _pg_message(b"E", b"cur\0" + (1).to_bytes(4, "big"))
            + _pg_message(b"S", b"")
        )
        before = _pg_until_ready(sock)
        assert any(k == b"D" and emails[0].encode() in b for k, b in before)
        edit_config(gw, lambda d: connection(d, "pg").update(plugins=["recording", "masking"]))
        hang_up(gw)
        sock.sendall(_pg_message(b"E", b"cur\0" + (0).to_bytes(4, "big")) + _pg_message(b"S", b""))
        after = _pg_until_ready(sock)
    rows = [b for k, b in after if k == b"D"]
    assert len(rows) == 2, after
    assert not any(e.encode() in row for row in rows for e in emails), rows
