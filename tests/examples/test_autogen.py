"""The AutoGen example (``examples/autogen/team.py``) end to end, with scripted model answers.

The example runs in its own environment (``.venv-autogen``, made by ``./dev setup``: AutoGen
pins a protobuf the gateway's parser cannot share) as a separate process, like a real agent:
its tools log in to a real gateway in front of the real PostgreSQL and sshd with the agent's
own API key. Each scenario of issue 21 is asserted on the transcript, on the target directly,
and in the audit trail (``hoopgw sessions``) under the agent's identity."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w

pytestmark = pytest.mark.integration

helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autogen"
AUTOGEN_PYTHON = Path(
    os.environ.get(
        "HOOPGW_AUTOGEN_PYTHON",
        Path(__file__).resolve().parents[2] / ".venv-autogen" / "bin" / "python",
    )
)
EMAIL = "alice.smith@example.com"


class Agent:
    """One gateway with three connections (``pg`` guarded, masked and approved; ``pg_jit``
    behind just-in-time access; ``host`` over SSH), and the example run as its agent."""

    def __init__(
        self, gateway: Any, pg_server: Any, database: str, files: Path, admin_url: str
    ) -> None:
        self.gateway = gateway
        self.pg_server = pg_server
        self.database = database
        self.files = files
        self.key = gateway.create_key("analyst", ["agents"])
        self.lead = helpers.Admin(admin_url, gateway.create_key("lead", ["dba"]))
        self.admin_url = admin_url

    def start(self, script: str) -> subprocess.Popen[str]:
        """Run the example on ``scripts/SCRIPT.json`` with the replay model."""
        env = {
            **os.environ,
            "HOOPGW_TOKEN": self.key,
            "HOOPGW_IDENTITY": "analyst",
            "HOOPGW_URL": self.admin_url,
            "HOOPGW_EXAMPLE_APPROVAL_WAIT": "25",
        }
        return subprocess.Popen(
            [
                str(AUTOGEN_PYTHON),
                str(EXAMPLE / "team.py"),
                "--connections",
                str(self.files / "connections.toml"),
                str(EXAMPLE / "scripts" / f"{script}.json"),
                "--replay",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, process: subprocess.Popen[str]) -> dict[str, Any]:
        """Wait for the example; return its transcript."""
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        return dict(json.loads(stdout))

    def pending(self, process: subprocess.Popen[str], what: str) -> list[dict[str, Any]]:
        """Wait until the example has a review pending (the lead sees it); fail with the
        example's output if it ends first. Generous: a loaded machine starts Python slowly."""

        def check() -> Any:
            if process.poll() is not None:
                stdout, stderr = process.communicate()
                raise AssertionError(f"the example ended before {what}:\n{stdout}\n{stderr}")
            return self.lead.cli_json("reviews", "list", "--pending")

        return list(helpers.wait_for(check, timeout=45, what=what))

    def run(self, script: str) -> dict[str, Any]:
        return self.finish(self.start(script))

    def recorded(self, conversation_id: str) -> list[dict[str, Any]]:
        """The commands of the agent's sessions of this conversation, from ``hoopgw sessions``."""
        listed = self.gateway.cli("sessions", "list", "--json", "--identity", "analyst")
        assert listed.returncode == 0, listed.stderr
        commands = []
        for session in json.loads(listed.stdout):
            shown = json.loads(self.gateway.cli("sessions", "show", session["id"], "--json").stdout)
            assert shown["identity"] == "analyst"
            name = shown.get("attributes", {}).get("application_name")
            if session["connection"] == "host" or name == f"autogen:{conversation_id}":
                commands += [{**c, "connection": session["connection"]} for c in shown["commands"]]
        return commands


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def agent(
    gateway_document: Callable[..., Any],
    pg_server: Any,
    pg_database: str,
    ssh_server: Any,
    tmp_path: Path,
) -> Agent:
    if not AUTOGEN_PYTHON.exists():
        message = f"no AutoGen environment at {AUTOGEN_PYTHON}: ./dev setup makes it"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, email text)")
        conn.execute(
            "INSERT INTO customers VALUES (1, 'Alice', %s), (2, 'Bob', 'bob@example.org')",
            (EMAIL,),
        )
    jit_port, ssh_port, admin_port = (helpers.free_port() for _ in range(3))
    target = f"{pg_server.host}:{pg_server.port}"

    def document(workdir: Path, port: int) -> dict[str, Any]:
        postgres = {"protocol": "postgres", "target": target, "credential": {"user": "postgres"}}
        return {
            "gateway": {
                "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
            },
            "connections": [
                {
                    **postgres,
                    "name": "pg",
                    "listen": f"tcp:{port}:interface=127.0.0.1",
                    "allow_groups": ["agents"],
                    "client_tls": "disabled",
                    "plugins": ["recording", "guardrails", "masking", "approval"],
                    "guardrails": {"deny": ["drop"]},
                    "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 60},
                },
                {
                    **postgres,
                    "name": "pg_jit",
                    "listen": f"tcp:{jit_port}:interface=127.0.0.1",
                    "allow_groups": ["agents"],
                    "client_tls": "disabled",
                    "access": "jit",
                    "jit_approvers": ["dba"],
                    "plugins": ["recording"],
                },
                {
                    "name": "host",
                    "protocol": "ssh",
                    "listen": f"tcp:{ssh_port}:interface=127.0.0.1",
                    "target": ssh_server.target,
                    "allow_groups": ["agents"],
                    "plugins": ["recording"],
                    "credential": {
                        "user": ssh_server.user,
                        "private_key": f"file:{ssh_server.client_key}",
                    },
                    "ssh": {"known_hosts": str(ssh_server.known_hosts)},
                },
            ],
        }

    running = gateway_document(document)
    _wait_listening(ssh_port)
    host_key = running.config_path.parent / "host.ssh_host_ed25519_key"
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(host_key)], check=True, capture_output=True, text=True
    ).stdout.split()
    known_hosts = tmp_path / "gateway_known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {public[0]} {public[1]}\n")
    connections = [
        {"name": "pg", "protocol": "postgres", "address": f"127.0.0.1:{running.port}"},
        {"name": "pg_jit", "protocol": "postgres", "address": f"127.0.0.1:{jit_port}"},
        {
            "name": "host",
            "protocol": "ssh",
            "address": f"127.0.0.1:{ssh_port}",
            "known_hosts": str(known_hosts),
        },
    ]
    for connection in connections:
        connection["database"] = pg_database
    (tmp_path / "connections.toml").write_text(tomli_w.dumps({"connections": connections}))
    return Agent(running, pg_server, pg_database, tmp_path, f"http://127.0.0.1:{admin_port}")


def _count(agent: Agent) -> int:
    server = agent.pg_server
    with psycopg.connect(
        host=server.host, port=server.port, user="postgres", dbname=agent.database
    ) as conn:
        row = conn.execute("SELECT count(*) FROM customers").fetchone()
    assert row is not None
    return int(row[0])


def _tool_results(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for m in transcript["messages"] for r in m.get("results", [])]


def test_drop_table_is_refused_and_the_agent_reads_why(agent: Agent) -> None:
    transcript = agent.run("drop_refused")
    [result] = _tool_results(transcript)
    assert result["is_error"] and "guardrails" in result["content"], result
    # The model's next step was shown the refusal, in the gateway's words, as a failed call.
    shown = [
        r
        for message in transcript["model_inputs"][1]
        if message["type"] == "FunctionExecutionResultMessage"
        for r in message["content"]
    ]
    assert shown == [{**shown[0], "content": result["content"], "is_error": True}]
    assert transcript["messages"][-1]["text"].endswith("DONE")
    assert _count(agent) == 2
    recorded = agent.recorded(transcript["conversation_id"])
    assert [(c["text"], c["verdict"]) for c in recorded] == [("DROP TABLE customers", "block")]


def test_personal_data_comes_back_masked(agent: Agent) -> None:
    transcript = agent.run("pii_masked")
    rows, shell = _tool_results(transcript)
    assert not rows["is_error"] and not shell["is_error"], (rows, shell)
    answer = json.loads(rows["content"])
    assert [r[:2] for r in answer["rows"]] == [[1, "Alice"], [2, "Bob"]]
    assert all(r[2] for r in answer["rows"])  # masked, not dropped
    assert EMAIL not in rows["content"] and "bob@example.org" not in rows["content"]
    assert EMAIL not in json.dumps(transcript)
    assert json.loads(shell["content"]) == {"exit_status": 0, "stdout": "Linux\n", "stderr": ""}
    recorded = {(c["connection"], c["text"]) for c in agent.recorded(transcript["conversation_id"])}
    assert ("pg", "SELECT id, name, email FROM customers ORDER BY id") in recorded
    assert ("host", "uname -s") in recorded


def test_held_delete_returns_after_a_person_approves(agent: Agent) -> None:
    process = agent.start("held_delete")
    pending = agent.pending(process, "the held DELETE")
    assert process.poll() is None, "the tool call returned before anyone approved"
    assert pending[0]["requester"] == "analyst"
    approved = agent.lead.cli("reviews", "approve", pending[0]["id"], "--reason", "GDPR request")
    assert approved.returncode == 0, approved.stderr
    transcript = agent.finish(process)
    [result] = _tool_results(transcript)
    assert not result["is_error"] and json.loads(result["content"]) == {
        "status": "DELETE 1",
        "rows": 1,
    }
    assert _count(agent) == 1
    recorded = agent.recorded(transcript["conversation_id"])
    assert [c["text"] for c in recorded] == ["DELETE FROM customers WHERE id = 2"]


def test_agent_without_a_grant_asks_and_proceeds_once_approved(agent: Agent) -> None:
    process = agent.start("jit_access")
    pending = agent.pending(process, "the access request")
    assert pending[0]["kind"] == "access" and pending[0]["connection"] == "pg_jit"
    approved = agent.lead.cli("reviews", "approve", pending[0]["id"])
    assert approved.returncode == 0, approved.stderr
    transcript = agent.finish(process)
    refused, granted, counted = _tool_results(transcript)
    assert refused["is_error"] and "grant" in refused["content"].lower(), refused
    assert not granted["is_error"] and json.loads(granted["content"])["grant_id"]
    assert not counted["is_error"] and json.loads(counted["content"])["rows"] == [[2]]
    recorded = agent.recorded(transcript["conversation_id"])
    assert [c["text"] for c in recorded] == ["SELECT count(*) AS customers FROM customers"]
