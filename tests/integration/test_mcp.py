"""``hoopgw mcp`` end to end: the MCP SDK's own client talks to ``hoopgw mcp`` (spawned over
stdio, or served over streamable HTTP), which reaches the real gateway in front of the real
PostgreSQL, MariaDB and sshd as the caller. Canaries are checked directly on the target."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import tomli_w
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.integration

helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]
HOOPGW = (sys.executable, "-m", "hoopgw")
EMAIL = "alice.smith@example.com"


def connections_file(folder: Path, **connections: dict[str, Any]) -> Path:
    """Write the MCP server's connections file: ``name={key: value}`` tables."""
    path = folder / "mcp-connections.toml"
    path.write_text(
        tomli_w.dumps({"connections": [{"name": n, **c} for n, c in connections.items()]})
    )
    return path


def stdio_client(file: Path, env: dict[str, str]) -> Client:
    """The SDK's client, spawning ``hoopgw mcp -c FILE`` with ``env`` (over stdio)."""
    return Client(
        StdioServerParameters(
            command=sys.executable, args=["-m", "hoopgw", "mcp", "-c", str(file)], env=env
        ),
        read_timeout_seconds=60,
    )


def text(result: Any) -> str:
    """The text content of a tool result."""
    return "".join(getattr(part, "text", "") for part in result.content)


def answer(result: Any) -> Any:
    """The JSON answer of a successful tool result."""
    assert not result.is_error, text(result)
    return json.loads(text(result))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    anyio.run(scenario)


@pytest.fixture
def pg_setup(gateway: Any, pg_server: Any, pg_database: str, tmp_path: Path) -> Any:
    """A gateway with guardrails (deny drop), masking, approval (writes held for dba) and
    recording in front of a database with a ``customers`` table; keys for ``agent`` and
    ``lead`` (group dba); the MCP connections file."""
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, email text)")
        conn.execute("INSERT INTO customers VALUES (1, 'Alice', %s), (2, 'Bob', NULL)", (EMAIL,))
    admin_port = helpers.free_port()
    running = gateway(
        plugins=["recording", "guardrails", "masking", "approval"],
        connection={
            "client_tls": "disabled",
            "guardrails": {"deny": ["drop"]},
            "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60},
        },
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
    )
    keys = {
        "agent": running.create_key("agent", ["agents"]),
        "lead": running.create_key("lead", ["dba"]),
    }
    url = f"http://127.0.0.1:{admin_port}"
    file = connections_file(
        tmp_path,
        pg={
            "protocol": "postgres",
            "address": f"127.0.0.1:{running.port}",
            "database": pg_database,
        },
    )
    env = {"HOOPGW_URL": url, "HOOPGW_TOKEN": keys["agent"]}
    return running, pg_database, file, env, helpers.Admin(url, keys["lead"]), keys


def direct_rows(pg_server: Any, database: str, sql: str) -> list[Any]:
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=database
    ) as conn:
        return conn.execute(sql).fetchall()


def test_stdio_tools_query_masked_refused_and_recorded(pg_setup: Any, pg_server: Any) -> None:
    running, database, file, env, _lead, _keys = pg_setup

    async def scenario() -> None:
        async with stdio_client(file, env) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"list_connections", "query", "exec", "request_access", "review_status"}
            listed = answer(await client.call_tool("list_connections", {}))["connections"]
            assert listed == [
                {
                    "name": "pg",
                    "protocol": "postgres",
                    "tool": "query",
                    "access": "groups",
                    "database": database,
                }
            ]
            rows = answer(
                await client.call_tool(
                    "query",
                    {
                        "connection": "pg",
                        "sql": "SELECT id, name, email FROM customers ORDER BY id",
                    },
                )
            )
            assert rows["columns"] == ["id", "name", "email"]
            assert [r[:2] for r in rows["rows"]] == [[1, "Alice"], [2, "Bob"]]
            assert rows["rows"][0][2] != EMAIL and "example.com" not in rows["rows"][0][2]
            assert rows["rows"][1][2] is None
            assert EMAIL not in json.dumps(rows)
            dropped = await client.call_tool(
                "query", {"connection": "pg", "sql": "DROP TABLE customers"}
            )
            assert dropped.is_error
            assert "drop" in text(dropped).lower() and "guardrails" in text(dropped)
            progress: list[str | None] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(message)

            noticed = answer(
                await client.call_tool(
                    "query",
                    {"connection": "pg", "sql": "DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$"},
                    progress_callback=on_progress,
                )
            )
            assert noticed["notices"] == ["hello 42"] and progress == ["hello 42"]
            wrong = await client.call_tool("exec", {"connection": "pg", "command": "id"})
            assert wrong.is_error and "use the query tool" in text(wrong)

    run(scenario)
    assert direct_rows(pg_server, database, "SELECT count(*) FROM customers") == [(2,)]
    searched = running.cli("audit", "search", "--identity", "agent", "--json")
    assert searched.returncode == 0, searched.stderr
    recorded = {c["text"]: c for c in json.loads(searched.stdout)}
    texts = list(recorded)
    assert recorded["DROP TABLE customers"]["verdict"] == "block"
    assert any("SELECT id, name, email FROM customers" in t for t in texts)
    assert "DROP TABLE customers" in texts


def test_held_delete_returns_once_a_person_approves(pg_setup: Any, pg_server: Any) -> None:
    _running, database, file, env, lead, _keys = pg_setup

    async def scenario() -> None:
        async with stdio_client(file, env) as client:
            outcome: dict[str, Any] = {}

            async def delete() -> None:
                outcome["result"] = await client.call_tool(
                    "query", {"connection": "pg", "sql": "DELETE FROM customers WHERE id = 2"}
                )

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(delete)
                pending = await anyio.to_thread.run_sync(
                    lambda: helpers.wait_for(
                        lambda: lead.cli_json("reviews", "list", "--pending"),
                        timeout=30,
                        what="a held DELETE",
                    )
                )
                assert "result" not in outcome
                assert "DELETE FROM customers" in pending[0]["statement"]
                status = answer(
                    await client.call_tool("review_status", {"review_id": pending[0]["id"]})
                )
                assert status["status"] == "pending"
                approved = await anyio.to_thread.run_sync(
                    lambda: lead.cli("reviews", "approve", pending[0]["id"])
                )
                assert approved.returncode == 0, approved.stderr
            result = answer(outcome["result"])
            assert result["row_count"] == 1 and result["status"] == "DELETE 1"
            # The gateway's notice of the hold, in the same words a native client gets.
            waiting = f"hoopgw: held for review {pending[0]['id']} by group"
            assert any(n.startswith(waiting) for n in result["notices"]), result["notices"]

    run(scenario)
    assert direct_rows(pg_server, database, "SELECT id FROM customers") == [(1,)]


def test_request_access_then_query_once_approved(
    gateway: Any, pg_database: str, tmp_path: Path
) -> None:
    admin_port = helpers.free_port()
    running = gateway(
        plugins=["recording"],
        connection={"client_tls": "disabled", "access": "jit", "jit_approvers": ["leads"]},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
    )
    agent_key = running.create_key("agent", ["agents"])
    lead = helpers.Admin(f"http://127.0.0.1:{admin_port}", running.create_key("lead", ["leads"]))
    file = connections_file(
        tmp_path,
        pg={
            "protocol": "postgres",
            "listen": f"tcp:{running.port}:interface=127.0.0.1",
            "database": pg_database,
            "access": "jit",
            "allow_groups": ["agents"],
        },
    )
    env = {"HOOPGW_URL": lead.url, "HOOPGW_TOKEN": agent_key}

    async def scenario() -> None:
        async with stdio_client(file, env) as client:
            listed = answer(await client.call_tool("list_connections", {}))["connections"]
            assert listed[0]["access"] == "jit" and listed[0]["allowed_by_group"] is True
            before = await client.call_tool("query", {"connection": "pg", "sql": "SELECT 1 AS one"})
            assert before.is_error and "grant" in text(before).lower(), text(before)
            requested = answer(
                await client.call_tool(
                    "request_access", {"connection": "pg", "minutes": 10, "reason": "INC-7"}
                )
            )
            assert requested["status"] == "pending" and requested["approvers"] == ["leads"]
            assert f"hoopgw reviews approve {requested['review_id']}" in requested["next"]
            approved = await anyio.to_thread.run_sync(
                lambda: lead.cli("reviews", "approve", requested["review_id"])
            )
            assert approved.returncode == 0, approved.stderr
            status = answer(
                await client.call_tool("review_status", {"review_id": requested["review_id"]})
            )
            assert status["status"] == "approved" and status["grant_id"]
            after = answer(
                await client.call_tool("query", {"connection": "pg", "sql": "SELECT 1 AS one"})
            )
            assert after["rows"] == [[1]]

    run(scenario)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("hoopgw mcp --transport http did not listen")


def test_streamable_http_acts_as_each_requests_bearer(pg_setup: Any, tmp_path: Path) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    _running, _database, file, env, _lead, keys = pg_setup
    port = helpers.free_port()
    server_env = {k: v for k, v in os.environ.items() if k != "HOOPGW_TOKEN"}
    server_env["HOOPGW_URL"] = env["HOOPGW_URL"]
    process = subprocess.Popen(
        [*HOOPGW, "mcp", "-c", str(file), "--transport", "http", "--listen", f"127.0.0.1:{port}"],
        env=server_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"

    async def call(headers: dict[str, str]) -> Any:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            return await client.call_tool(
                "query", {"connection": "pg", "sql": "SELECT email FROM customers WHERE id = 1"}
            )

    async def scenario() -> None:
        # A page of another site, resolved to loopback (DNS rebinding), is turned away.
        async with httpx2.AsyncClient(timeout=30) as http:
            rebound = await http.post(
                url,
                headers={"Host": f"evil.example:{port}", "Content-Type": "application/json"},
                content=b"{}",
            )
        assert rebound.status_code in (403, 421), rebound.status_code
        anonymous = await call({})
        assert anonymous.is_error and "Authorization: Bearer" in text(anonymous)
        wrong = await call({"Authorization": "Bearer not-a-key"})
        assert wrong.is_error
        masked = answer(await call({"Authorization": f"Bearer {keys['agent']}"}))
        assert masked["rows"][0][0] not in (EMAIL, None)

    try:
        _wait_listening(port, process)
        run(scenario)
    finally:
        process.terminate()
        process.wait(10)


def test_non_loopback_http_and_missing_token_are_refused(tmp_path: Path) -> None:
    file = connections_file(tmp_path, pg={"protocol": "postgres", "address": "127.0.0.1:1"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOPGW_")}
    env["HOOPGW_URL"] = "http://127.0.0.1:1"
    exposed = subprocess.run(
        [*HOOPGW, "mcp", "-c", str(file), "--transport", "http", "--listen", "0.0.0.0:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert exposed.returncode == 2 and "not a loopback address" in exposed.stderr
    named = subprocess.run(
        [*HOOPGW, "mcp", "-c", str(file), "--transport", "http", "--listen", "gw.example:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert named.returncode == 2 and "not a loopback address" in named.stderr
    tokenless = subprocess.run(
        [*HOOPGW, "mcp", "-c", str(file)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tokenless.returncode == 2 and "HOOPGW_TOKEN" in tokenless.stderr


def test_mysql_query_and_refusal(mysql_gateway: Any, mysql_database: Any, tmp_path: Path) -> None:
    import pymysql

    server = mysql_database.server
    with (
        pymysql.connect(
            host=server.host,
            port=server.port,
            user="root",
            database=mysql_database.name,
            autocommit=True,
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("CREATE TABLE canary (id int PRIMARY KEY, note text)")
        cursor.execute("INSERT INTO canary VALUES (1, 'still here')")
    running = mysql_gateway(
        plugins=["recording", "guardrails"], connection={"guardrails": {"deny": ["drop"]}}
    )
    key = running.create_key("agent", ["agents"])
    file = connections_file(
        tmp_path,
        my={
            "protocol": "mysql",
            "address": f"127.0.0.1:{running.port}",
            "database": mysql_database.name,
        },
    )
    env = {"HOOPGW_IDENTITY": "agent", "HOOPGW_TOKEN": key}

    async def scenario() -> None:
        async with stdio_client(file, env) as client:
            rows = answer(
                await client.call_tool(
                    "query", {"connection": "my", "sql": "SELECT id, note FROM canary"}
                )
            )
            assert rows["columns"] == ["id", "note"] and rows["rows"] == [[1, "still here"]]
            dropped = await client.call_tool(
                "query", {"connection": "my", "sql": "DROP TABLE canary"}
            )
            assert dropped.is_error and text(dropped).startswith(
                "Error executing tool query: ERROR "
            )
            assert "guardrails" in text(dropped), text(dropped)

    run(scenario)
    with (
        pymysql.connect(
            host=server.host, port=server.port, user="root", database=mysql_database.name
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT count(*) FROM canary")
        assert cursor.fetchone() == (1,)


def test_ssh_exec_and_refused_command(ssh_gateway: Any, tmp_path: Path) -> None:
    running = ssh_gateway(
        plugins=["recording", "guardrails"],
        connection={"guardrails": {"deny_commands": ["rm -rf /"]}},
    )
    key = running.create_key("agent", ["agents"])
    host_key = running.config_path.parent / "ssh.ssh_host_ed25519_key"
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(host_key)], check=True, capture_output=True, text=True
    ).stdout.split()
    known_hosts = tmp_path / "gateway_known_hosts"
    known_hosts.write_text(f"[{running.host}]:{running.port} {public[0]} {public[1]}\n")
    marker = tmp_path / "marker"
    file = connections_file(
        tmp_path,
        web={
            "protocol": "ssh",
            "address": f"{running.host}:{running.port}",
            "known_hosts": str(known_hosts),
        },
    )
    env = {"HOOPGW_IDENTITY": "agent", "HOOPGW_TOKEN": key}

    async def scenario() -> None:
        async with stdio_client(file, env) as client:
            done = answer(
                await client.call_tool("exec", {"connection": "web", "command": "echo hi; exit 3"})
            )
            assert done == {"exit_status": 3, "stdout": "hi\n", "stderr": ""}
            refused = await client.call_tool(
                "exec", {"connection": "web", "command": f"touch {marker}; rm -rf /"}
            )
            assert refused.is_error and "hoopgw refused the command:" in text(refused), text(
                refused
            )
            assert "[code=HGW-DENIED rule=" in text(refused), text(refused)

    run(scenario)
    assert not marker.exists()
