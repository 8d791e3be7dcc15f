"""The MCP tools of ``hoopgw mcp``, on the official ``mcp`` SDK, over stdio or streamable HTTP.

Who a call runs as:

- over **stdio** (one agent per process), the token is ``HOOPGW_TOKEN`` in the server's
  environment, as for the CLI;
- over **streamable HTTP** (one server, several agents), each request's ``Authorization:
  Bearer`` header carries the caller's own token; a request without one is refused, and the
  server's environment token is never used for it.

The identity (the user name a database login gives) is ``HOOPGW_IDENTITY`` when set, else the
admin API's ``/api/whoami`` answer for the token (``HOOPGW_URL``). Tool arguments never carry a
secret. A refusal is a tool error (``is_error``) whose text is the gateway's own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

from hoopgw import __version__
from hoopgw.cli.api import api_request
from hoopgw.errors import ConfigError, HoopgwError
from hoopgw.mcp.targets import Caller, Target, describe, run_exec, run_query

INSTRUCTIONS = """\
Each tool reaches infrastructure through the hoopgw access gateway as you: every statement and
command is authenticated, checked by the gateway's policies, possibly masked, and recorded.
Call list_connections first. Use query for SQL connections and exec for SSH ones. A refusal is
an error that says why and what to do next: do not retry a refused statement unchanged. A
statement held for review makes the call wait until a person decides it. For a connection
that needs a grant, call request_access, then review_status until it is approved."""

_REVIEW_ID = re.compile(r"[0-9a-f]{12}")
_T = TypeVar("_T")


class Callers:
    """Turns a tool call's context into the :class:`Caller` it runs as."""

    def __init__(self, *, token: str | None, identity: str | None) -> None:
        """:param token: the token of every call (stdio), or None to take each request's
            bearer token (HTTP).
        :param identity: the identity, when known without asking the admin API.
        """
        self._token = token
        self._identity = identity
        self._identities: dict[str, str] = {}

    def token(self, ctx: Context | None) -> str:
        """The token this call authenticates with.

        :raises ToolError: over HTTP, the request carries no bearer token.
        """
        if self._token is not None:
            return self._token
        headers: Mapping[str, str] = (ctx.headers if ctx is not None else None) or {}
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ToolError(
                "send your API key or OIDC token as 'Authorization: Bearer <token>':"
                " the MCP server acts as its caller only"
            )
        return value.strip()

    def caller(self, ctx: Context | None) -> Caller:
        """The identity and token of this call (the identity asked of the admin API once per
        token)."""
        token = self.token(ctx)
        if self._identity:
            return Caller(identity=self._identity, token=token)
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest not in self._identities:
            self._identities[digest] = str(_api("GET", "/api/whoami", token=token)["identity"])
        return Caller(identity=self._identities[digest], token=token)


def _api(method: str, path: str, body: dict[str, Any] | None = None, *, token: str) -> Any:
    try:
        return api_request(method, path, body, token=token)
    except HoopgwError as exc:
        raise ToolError(str(exc)) from None


async def _in_thread(call: Callable[[], _T]) -> _T:
    """Run a blocking client call (a held statement blocks for minutes) off the event loop,
    turning a refusal into a tool error."""
    try:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except HoopgwError as exc:
        raise ToolError(str(exc)) from None


def build_server(targets: Mapping[str, Target], callers: Callers) -> MCPServer:
    """The MCP server whose tools reach ``targets`` through the gateway as each caller."""
    server: MCPServer = MCPServer(
        "hoopgw", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    def target(name: str, tool: str) -> Target:
        found = targets.get(name)
        if found is None:
            known = ", ".join(sorted(targets)) or "none"
            raise ToolError(f"unknown connection {name!r}; known connections: {known}")
        if found.tool != tool:
            raise ToolError(f"connection {name!r} is {found.protocol}: use the {found.tool} tool")
        return found

    @server.tool()
    async def list_connections(ctx: Context) -> dict[str, Any]:
        """List the gateway connections you can name, with the tool that reaches each
        (query or exec) and whether it needs a just-in-time grant first."""
        token = callers.token(ctx)
        groups = None
        if os.environ.get("HOOPGW_URL"):
            whoami = await _in_thread(lambda: _api("GET", "/api/whoami", token=token))
            groups = set(whoami["groups"])
        return {"connections": describe(targets, groups)}

    @server.tool()
    async def query(connection: str, sql: str, ctx: Context, database: str = "") -> dict[str, Any]:
        """Run one SQL statement on a PostgreSQL or MySQL connection through the gateway.

        Returns columns, rows (masked where the gateway masks data), row_count, status and
        any notices. A refused statement is an error naming the rule; a statement held for
        review waits until a person approves or denies it (its notices arrive as progress)."""
        where, caller = target(connection, "query"), callers.caller(ctx)
        sent = 0

        def progress(notice: str) -> None:
            # A notice while the call waits (a hold, say) reaches the client at once, as a
            # progress message, when it asked for progress.
            nonlocal sent
            sent += 1
            anyio.from_thread.run(ctx.report_progress, sent, None, notice)

        return await _in_thread(lambda: run_query(where, caller, sql, database, progress))

    @server.tool(name="exec")
    async def exec_command(connection: str, command: str, ctx: Context) -> dict[str, Any]:
        """Run one shell command on an SSH connection's host through the gateway.

        Returns exit_status, stdout and stderr. A refused command is an error naming the
        rule; a command held for review waits until a person decides it."""
        where, caller = target(connection, "exec"), callers.caller(ctx)
        return await _in_thread(lambda: run_exec(where, caller, command))

    @server.tool()
    async def request_access(
        connection: str, minutes: int, reason: str, ctx: Context
    ) -> dict[str, Any]:
        """Ask for just-in-time access to a connection for some minutes; approvers are shown
        the reason. Returns the review id: call review_status until it is approved."""
        if minutes < 1:
            raise ToolError("minutes must be 1 or more")
        token = callers.token(ctx)
        body = {"connection": connection, "duration": minutes * 60, "reason": reason}
        review = await _in_thread(lambda: _api("POST", "/api/access/requests", body, token=token))
        return {
            "review_id": review["id"],
            "status": review["status"],
            "approvers": review["approvers"],
            "next": (
                f"a member of {', '.join(review['approvers'])} decides it with:"
                f" hoopgw reviews approve {review['id']}; call review_status to see when"
            ),
        }

    @server.tool()
    async def review_status(review_id: str, ctx: Context) -> dict[str, Any]:
        """The status of a review (an access request or a held statement): pending,
        approved, denied, withdrawn, aborted or expired, with its approvers and decision."""
        if not _REVIEW_ID.fullmatch(review_id):
            raise ToolError(f"{review_id!r} is not a review id (12 hexadecimal digits)")
        token = callers.token(ctx)
        path = "/api/reviews/" + urllib.parse.quote(review_id, safe="")
        return dict(await _in_thread(lambda: _api("GET", path, token=token)))

    return server


def serve(
    targets: Mapping[str, Target], *, transport: str, listen: tuple[str, int] | None = None
) -> None:
    """Run the MCP server until its client goes away (stdio) or it is stopped (HTTP).

    :raises ConfigError: stdio without ``HOOPGW_TOKEN``; HTTP on an address that is not
        loopback (the server speaks plain HTTP and bearer tokens must not cross a network in
        clear: put a TLS proxy in front); no way to learn the identity.
    """
    identity = os.environ.get("HOOPGW_IDENTITY") or None
    if identity is None and not os.environ.get("HOOPGW_URL"):
        raise ConfigError(
            "set HOOPGW_URL (the admin API, which tells the token's identity)"
            " or HOOPGW_IDENTITY (your identity)"
        )
    if transport == "stdio":
        token = os.environ.get("HOOPGW_TOKEN", "")
        if not token:
            raise ConfigError("set HOOPGW_TOKEN to your API key or OIDC token")
        build_server(targets, Callers(token=token, identity=identity)).run("stdio")
        return
    if not os.environ.get("HOOPGW_URL"):
        raise ConfigError("set HOOPGW_URL: over HTTP the admin API tells each token's identity")
    host, port = listen or ("127.0.0.1", 8765)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"{host} is not a loopback address: the streamable HTTP transport is plain HTTP,"
            " so serve it on loopback and put a TLS proxy in front",
            key="--listen",
        )
    # Host and Origin checks against DNS rebinding, for any loopback address (the SDK turns
    # them on by itself for 127.0.0.1 and ::1 only).
    name = f"[{host}]" if ":" in host else host
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*", "localhost:*"],
        allowed_origins=[f"http://{name}:*", "http://localhost:*"],
    )
    # Over HTTP each request names its caller: one server may serve several agents.
    server = build_server(targets, Callers(token=None, identity=None))
    server.run("streamable-http", host=host, port=port, transport_security=security)
