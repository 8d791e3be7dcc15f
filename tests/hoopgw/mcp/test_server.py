"""The MCP tools' own checks, through the SDK's in-process client (no gateway, no I/O): what a
tool refuses before it reaches the gateway, and who a call runs as."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from hoopgw.mcp.server import Callers, build_server
from hoopgw.mcp.targets import Caller, Target

TARGETS = {
    "pg": Target(name="pg", protocol="postgres", host="127.0.0.1", port=1),
    "web": Target(
        name="web", protocol="ssh", host="127.0.0.1", port=2, options={"known_hosts": "/kh"}
    ),
}


def call(tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    """Call ``tool`` on a server acting as identity ``agent``; return (is_error, text)."""
    server = build_server(TARGETS, Callers(token="secret-token", identity="agent"))

    async def scenario() -> tuple[bool, str]:
        async with Client(server) as client:
            result = await client.call_tool(tool, arguments)
            return bool(result.is_error), "".join(getattr(c, "text", "") for c in result.content)

    return anyio.run(scenario)


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("query", {"connection": "nope", "sql": "SELECT 1"}, "known connections: pg, web"),
        ("query", {"connection": "web", "sql": "SELECT 1"}, "'web' is ssh: use the exec tool"),
        ("exec", {"connection": "pg", "command": "id"}, "'pg' is postgres: use the query tool"),
        ("review_status", {"review_id": "../keys"}, "is not a review id"),
        ("request_access", {"connection": "pg", "minutes": 0, "reason": "x"}, "minutes must"),
    ],
)
def test_tools_refuse_what_they_cannot_do(
    tool: str, arguments: dict[str, Any], message: str
) -> None:
    is_error, text = call(tool, arguments)
    assert is_error and message in text


def test_the_token_never_shows_in_a_caller() -> None:
    assert "secret-token" not in repr(Caller(identity="agent", token="secret-token"))


def test_over_http_each_call_needs_its_own_bearer_token() -> None:
    callers = Callers(token=None, identity="agent")
    with_bearer: Any = SimpleNamespace(headers={"authorization": "Bearer k-1"})
    assert callers.caller(with_bearer) == Caller(identity="agent", token="k-1")
    for headers in ({}, {"authorization": "Basic eDp5"}, {"authorization": "Bearer "}):
        with pytest.raises(ToolError, match="Authorization: Bearer"):
            callers.token(SimpleNamespace(headers=headers))  # type: ignore[arg-type]
