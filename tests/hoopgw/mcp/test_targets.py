"""The MCP server's connections file and how list_connections describes it (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoopgw.errors import ConfigError
from hoopgw.mcp.targets import Target, describe, parse_targets

BASE = Path("/etc/agent")


def test_the_gateways_own_connection_tables_serve() -> None:
    targets = parse_targets(
        """
        [gateway]
        store = "sqlite:///hoopgw.db"

        [[connections]]
        name = "pg"
        protocol = "postgres"
        listen = "tcp:15432:interface=127.0.0.1"
        target = "db:5432"
        allow_groups = ["agents"]
        credential = { user = "app", password = "env:NEVER_READ" }

        [[connections]]
        name = "shop"
        protocol = "mysql"
        listen = "tcp:port=13306"
        access = "jit"
        database = "shop"

        [[connections]]
        name = "v6"
        protocol = "postgres"
        listen = "tcp6:15433:interface=\\\\:\\\\:1"

        [[connections]]
        name = "web"
        protocol = "ssh"
        address = "gw.example:2222"
        known_hosts = "gateway_known_hosts"
        """,
        base_dir=BASE,
    )
    assert targets["pg"] == Target(
        name="pg", protocol="postgres", host="127.0.0.1", port=15432, allow_groups=("agents",)
    )
    # A listener on every interface is reached on loopback.
    assert (targets["shop"].host, targets["shop"].port) == ("127.0.0.1", 13306)
    # Twisted's endpoint syntax, escaped colons included, read as the gateway reads it.
    assert (targets["v6"].host, targets["v6"].port) == ("::1", 15433)
    assert targets["web"].options == {"known_hosts": str(BASE / "gateway_known_hosts")}
    assert [t.tool for t in targets.values()] == ["query", "query", "query", "exec"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('protocol = "ssh"\naddress = "h:22"', "key 'known_hosts': an ssh connection needs"),
        ('protocol = "kubernetes"\naddress = "h:1"', "key 'protocol': unknown protocol"),
        ('protocol = "postgres"\naddress = "nohost"', "key 'address': 'nohost' is not host:port"),
        ('protocol = "postgres"\nlisten = "unix:/run/gw.sock"', "key 'address': give address"),
        (
            'protocol = "postgres"\naddress = "h:1"\nallow_groups = "agents"',
            "key 'allow_groups': must be a list",
        ),
    ],
)
def test_bad_connections_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"connection 'x', {message}"):
        parse_targets(f'[[connections]]\nname = "x"\n{table}\n', base_dir=BASE)


def test_duplicate_names_are_refused() -> None:
    text = '[[connections]]\nname = "x"\nprotocol = "postgres"\naddress = "h:1"\n' * 2
    with pytest.raises(ConfigError, match="duplicate connection name"):
        parse_targets(text, base_dir=BASE)


def test_describe_says_which_tool_and_whether_a_grant_is_needed() -> None:
    targets = {
        "pg": Target(
            name="pg",
            protocol="postgres",
            host="h",
            port=1,
            allow_groups=("agents",),
            database="app",
        ),
        "ops": Target(
            name="ops", protocol="ssh", host="h", port=2, access="jit", allow_groups=("ops",)
        ),
    }
    assert describe(targets, {"agents"}) == [
        {
            "name": "pg",
            "protocol": "postgres",
            "tool": "query",
            "access": "groups",
            "database": "app",
            "allowed_by_group": True,
        },
        {
            "name": "ops",
            "protocol": "ssh",
            "tool": "exec",
            "access": "jit",
            "allowed_by_group": False,
            "note": "needs a live grant: call request_access, then wait for approval",
        },
    ]
    assert "allowed_by_group" not in describe(targets, None)[0]
