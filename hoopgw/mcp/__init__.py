"""``hoopgw mcp``: the gateway's connections as Model Context Protocol tools.

The MCP server is a *client* of the gateway, never a way around it: a ``query`` opens a real
PostgreSQL or MySQL connection to the gateway's listener, an ``exec`` runs OpenSSH's ``ssh``
through the gateway's SSH listener, and both log in with the caller's own API key or OIDC
token. So every call meets the same authentication, plugin chain (guardrails, masking,
approval) and write-ahead audit as a native client, and the server holds no target credential.
``request_access`` and ``review_status`` speak the admin API as the caller. ``docs/agents.md``
describes it.

- :mod:`hoopgw.mcp.targets`: the connections file and the calls through the gateway (no SDK);
- :mod:`hoopgw.mcp.server`: the tools on the ``mcp`` SDK, over stdio or streamable HTTP.
"""
