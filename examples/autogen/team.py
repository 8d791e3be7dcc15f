"""An AutoGen AgentChat team whose tools reach PostgreSQL and a host over SSH through hoopgw.

The agent holds no database or host credential: it logs in to the gateway with its own API key
or OIDC token (``HOOPGW_TOKEN``) as its own identity (``HOOPGW_IDENTITY``), so every statement
and command is checked by the gateway's guardrails, masked, held for a person where policy
says so, and recorded under that identity. ``docs/agents.md`` walks through it.

Run a script: its task, and the model's answers scripted (AutoGen's replay client: no model,
no network; what the tests do, with ``--replay``)::

    python team.py --connections connections.toml scripts/drop_refused.json

With ``OPENAI_API_KEY`` in the environment (and ``pip install 'autogen-ext[openai]'``), the
same task goes to a real model instead (``OPENAI_MODEL``, default ``gpt-4o-mini``) unless
``--replay`` is given.

``connections.toml`` has the shape ``hoopgw mcp`` reads: one ``[[connections]]`` table per
gateway connection with ``name``, ``protocol`` (``postgres`` or ``ssh``), ``address``
(``host:port`` of the gateway's listener), ``database`` and, for SSH, ``known_hosts`` (a file
with the gateway's host key). ``HOOPGW_URL`` is the gateway's admin API, for access requests.

The transcript is printed as JSON: the conversation id (also the ``application_name`` of every
database session, so the audit trail links each statement to its conversation), the messages,
and -- with the scripted model -- what the model was shown at each step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

SYSTEM_MESSAGE = """\
You are a database and operations assistant. You reach PostgreSQL and hosts only through the
hoopgw gateway, with the tools you have. The gateway may refuse a statement or command: read
its reason, do not retry the same thing, and tell the user what a person has to do. A statement
held for review waits until a person decides. A connection that needs a grant: call
request_access, which waits for the decision. Say DONE when the task is finished or cannot be."""
MAX_ROWS = 200
APPROVAL_WAIT = float(os.environ.get("HOOPGW_EXAMPLE_APPROVAL_WAIT", "300"))
"""Seconds request_access waits for a person to decide."""


class GatewayRefused(RuntimeError):
    """The gateway refused a call; the message is the gateway's own."""


class GatewayTools:
    """The agent's tools: each call logs in to the gateway as the agent."""

    def __init__(self, connections: dict[str, dict[str, Any]], conversation_id: str) -> None:
        self.connections = connections
        self.conversation_id = conversation_id
        self.token = os.environ["HOOPGW_TOKEN"]
        self.identity = os.environ["HOOPGW_IDENTITY"]

    def tools(self) -> list[Callable[..., Any]]:
        """The functions AutoGen offers the model (their docstrings are the descriptions)."""
        return [self.list_connections, self.run_sql, self.run_shell, self.request_access]

    def _connection(self, name: str, protocol: str) -> dict[str, Any]:
        found = self.connections.get(name)
        if found is None or found["protocol"] != protocol:
            raise GatewayRefused(f"no {protocol} connection {name!r}; call list_connections")
        return found

    def list_connections(self) -> str:
        """List the gateway connections: name, protocol (postgres: run_sql; ssh: run_shell)."""
        return json.dumps(
            [{"name": n, "protocol": c["protocol"]} for n, c in self.connections.items()]
        )

    def run_sql(self, connection: str, sql: str) -> str:
        """Run one SQL statement on a PostgreSQL connection through the gateway; returns the
        columns and rows (personal data comes back masked) or the number of rows changed."""
        target = self._connection(connection, "postgres")
        host, port = target["address"].rsplit(":", 1)
        try:
            with (
                psycopg.connect(
                    host=host,
                    port=int(port),
                    user=self.identity,
                    password=self.token,
                    dbname=target["database"],
                    application_name=f"autogen:{self.conversation_id}",
                    sslmode=target.get("sslmode", "prefer"),
                    connect_timeout=10,
                    autocommit=True,
                ) as conn,
                conn.cursor() as cursor,
            ):
                cursor.execute(sql.encode())
                if cursor.description is None:
                    return json.dumps({"status": cursor.statusmessage, "rows": cursor.rowcount})
                rows = cursor.fetchmany(MAX_ROWS)
                columns = [c.name for c in cursor.description]
                return json.dumps({"columns": columns, "rows": rows}, default=str)
        except psycopg.Error as exc:
            diag = exc.diag
            if diag.sqlstate is None:
                raise GatewayRefused(f"the gateway refused the connection: {exc}") from None
            parts = [f"{diag.sqlstate}: {diag.message_primary}"]
            parts += [f"DETAIL: {diag.message_detail}"] if diag.message_detail else []
            parts += [f"HINT: {diag.message_hint}"] if diag.message_hint else []
            raise GatewayRefused("\n".join(parts)) from None

    def run_shell(self, connection: str, command: str) -> str:
        """Run one shell command on an SSH connection's host through the gateway; returns the
        exit status, stdout and stderr."""
        target = self._connection(connection, "ssh")
        host, port = target["address"].rsplit(":", 1)
        with tempfile.TemporaryDirectory() as folder:
            # The token answers ssh's password prompt from the askpass program's environment.
            askpass = Path(folder) / "askpass"
            askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$HOOPGW_TOKEN"\n')
            askpass.chmod(0o700)
            env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
            env.setdefault("DISPLAY", ":0")
            options = [
                "-F", "/dev/null", "-p", port,
                "-o", f"UserKnownHostsFile={target['known_hosts']}",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "PreferredAuthentications=password,keyboard-interactive",
                "-o", "NumberOfPasswordPrompts=1",
                "-o", "LogLevel=ERROR",
            ]  # fmt: skip
            done = subprocess.run(  # noqa: S603 -- the command is one argument of ssh
                ["ssh", *options, "--", f"{self.identity}@{host}", command],  # noqa: S607
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=APPROVAL_WAIT + 60,
                check=False,
            )
        # 255: ssh could not log in; 126 with the gateway's line: the command was refused.
        if done.returncode == 255 or (done.returncode == 126 and "hoopgw" in done.stderr):
            raise GatewayRefused(done.stderr.strip() or f"ssh exited with {done.returncode}")
        return json.dumps(
            {"exit_status": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        )

    def request_access(self, connection: str, minutes: int, reason: str) -> str:
        """Ask for just-in-time access to a connection; waits until a person decides.
        Returns the grant once approved."""
        review = _admin(
            "POST",
            "/api/access/requests",
            {"connection": connection, "duration": minutes * 60, "reason": reason},
        )
        deadline = time.monotonic() + APPROVAL_WAIT
        while review["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.5)
            review = _admin("GET", f"/api/reviews/{review['id']}")
        if review["status"] != "approved":
            raise GatewayRefused(
                f"access request {review['id']} is {review['status']}:"
                f" {review.get('decision_reason') or 'no decision in time'}"
            )
        return json.dumps({"review_id": review["id"], "grant_id": review["grant_id"]})


def _admin(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API request as the agent (``HOOPGW_URL``, ``HOOPGW_TOKEN``)."""
    request = urllib.request.Request(  # noqa: S310 -- the operator's admin API URL
        os.environ["HOOPGW_URL"].rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {os.environ['HOOPGW_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise GatewayRefused(json.loads(exc.read())["error"]["message"]) from None


def load_connections(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[[connections]]`` tables of ``path`` by name."""
    document = tomllib.loads(path.read_text())
    return {c["name"]: c for c in document.get("connections", [])}


def replay_client(script: dict[str, Any]) -> ReplayChatCompletionClient:
    """A model that answers with the script's steps in order: a string is a text answer,
    ``{"call": NAME, "arguments": {...}}`` a tool call."""
    answers: list[str | CreateResult] = []
    for number, step in enumerate(script["model"]):
        if isinstance(step, str):
            answers.append(step)
            continue
        call = FunctionCall(
            id=f"call_{number}", name=step["call"], arguments=json.dumps(step["arguments"])
        )
        answers.append(
            CreateResult(
                finish_reason="function_calls",
                content=[call],
                usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                cached=False,
            )
        )
    info = ModelInfo(
        vision=False,
        function_calling=True,
        json_output=False,
        family="unknown",
        structured_output=False,
    )
    return ReplayChatCompletionClient(answers, model_info=info)


def real_client() -> ChatCompletionClient:
    """An OpenAI model (``OPENAI_API_KEY``, ``OPENAI_MODEL``)."""
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"))


async def run(task: str, model: ChatCompletionClient, tools: GatewayTools) -> list[Any]:
    """Run the one-agent team on ``task`` until it says DONE; return its messages."""
    agent = AssistantAgent(
        name="dba_agent",
        model_client=model,
        tools=tools.tools(),
        system_message=SYSTEM_MESSAGE,
        max_tool_iterations=8,
    )
    team = RoundRobinGroupChat(
        [agent],
        termination_condition=TextMentionTermination("DONE") | MaxMessageTermination(30),
    )
    result = await team.run(task=task)
    return list(result.messages)


def transcript(messages: list[Any]) -> list[dict[str, Any]]:
    """The conversation as JSON: who said what, and each tool result with its error flag."""
    entries = []
    for message in messages:
        entry: dict[str, Any] = {
            "source": message.source,
            "type": message.type,
            "text": message.to_text(),
        }
        if isinstance(message, ToolCallExecutionEvent):
            entry["results"] = [
                {"name": r.name, "content": r.content, "is_error": r.is_error}
                for r in message.content
            ]
        entries.append(entry)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=Path, required=True, help="connections TOML")
    parser.add_argument("script", type=Path, help="a script: the task and the model's answers")
    parser.add_argument(
        "--replay", action="store_true", help="the script's answers even with OPENAI_API_KEY set"
    )
    args = parser.parse_args()
    script = json.loads(args.script.read_text())
    conversation_id = uuid.uuid4().hex[:12]
    tools = GatewayTools(load_connections(args.connections), conversation_id)
    real = bool(os.environ.get("OPENAI_API_KEY")) and not args.replay
    model = real_client() if real else replay_client(script)
    messages = asyncio.run(run(script["task"], model, tools))
    output: dict[str, Any] = {"conversation_id": conversation_id, "messages": transcript(messages)}
    if isinstance(model, ReplayChatCompletionClient):
        output["model_inputs"] = [
            [m.model_dump(mode="json") for m in call["messages"]] for call in model.create_calls
        ]
    print(json.dumps(output, indent=2, default=str))


if __name__ == "__main__":
    main()
