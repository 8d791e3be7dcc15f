"""The ``[console]`` table: every error names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError

BASE = """
[gateway]
admin_listen = "tcp:8443:interface=127.0.0.1"

[[identity.oidc]]
issuer = "https://idp.example.com"
audience = "hoopgw"
"""


def _parse(console: str, base: str = BASE) -> Any:
    return parse_config(base + console, base_dir=Path("."))


def test_a_console_with_an_oidc_provider() -> None:
    config = _parse(
        """
[console]
public_url = "https://gw.example.com:8443"
idle_timeout = 600
[[console.oidc]]
name = "corp"
issuer = "https://idp.example.com"
client_id = "hoopgw-console"
scopes = ["groups"]
"""
    )
    console = config.console
    assert console.origin == "https://gw.example.com:8443"
    assert console.idle_timeout == 600 and console.absolute_timeout == 8 * 3600
    [login] = console.oidc
    assert login.scopes == ("openid", "groups")
    assert login.label == "Sign in with corp"


@pytest.mark.parametrize(
    ("console", "key", "message"),
    [
        ('[console]\npublic_url = "https://gw.example.com"\n', "console.oidc", "sign in"),
        ("[console]\n", "console.public_url", "required"),
        ('[console]\npublic_url = "http://gw.example.com"\n', "console.public_url", "https"),
        ('[console]\npublic_url = "https://gw.example.com/x"\n', "console.public_url", "origin"),
        (
            '[console]\npublic_url = "https://gw.example.com"\nidle_timeout = 10\n',
            "console.idle_timeout",
            "60",
        ),
        (
            '[console]\npublic_url = "https://g.example"\nidle_timeout = 7200\n'
            "absolute_timeout = 3600\n",
            "console.idle_timeout",
            "absolute_timeout",
        ),
        (
            '[console]\npublic_url = "https://g.example"\ncolour = "red"\n',
            "console.colour",
            "unknown key",
        ),
        (
            '[console]\npublic_url = "https://g.example"\n[[console.oidc]]\nname = "corp"\n'
            'issuer = "https://other.example.com"\nclient_id = "c"\n',
            "console.oidc[0].issuer",
            "[[identity.oidc]]",
        ),
        (
            '[console]\npublic_url = "https://g.example"\n[[console.oidc]]\nname = "Corp!"\n'
            'issuer = "https://idp.example.com"\nclient_id = "c"\n',
            "console.oidc[0].name",
            "lower-case",
        ),
        (
            '[console]\npublic_url = "https://g.example"\n[[console.oidc]]\nname = "corp"\n'
            'issuer = "https://idp.example.com"\nclient_id = "c"\n'
            'token_endpoint = "http://idp.example.com/token"\n',
            "console.oidc[0].token_endpoint",
            "https",
        ),
    ],
)
def test_errors_name_the_key(console: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _parse(console)
    assert refused.value.key == key
    assert message in str(refused.value)


def test_the_console_needs_the_admin_listener() -> None:
    base = BASE.replace('admin_listen = "tcp:8443:interface=127.0.0.1"', "")
    with pytest.raises(ConfigError, match="admin_listen"):
        _parse('[console]\npublic_url = "https://g.example"\n[console.saml]\n', base)
