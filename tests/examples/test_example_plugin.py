"""The example plugin of docs/writing-plugins.md, installed as a user would install it.

The package under ``examples/plugins/hoopgw-example-denylist`` is not one that ``./dev setup``
installs, so the ``denylist_class`` fixture installs it (editable, into the running venv) the
first time, then loads it through its entry point exactly as the gateway does.
"""

from __future__ import annotations

import importlib
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hoopgw.errors import ConfigError
from hoopgw.plugin import PLUGIN_GROUP, hookimpl, load_plugin_class
from hoopgw.testing import ScriptedClient
from hoopgw.verdicts import Allow, Block

PLUGIN = "example-denylist"
PACKAGE_DIR = (
    Path(__file__).resolve().parents[2] / "examples" / "plugins" / "hoopgw-example-denylist"
)
WORDS = {"words": ["secret_table", "pg_shadow"]}


def _installed() -> bool:
    return any(ep.name == PLUGIN for ep in entry_points(group=PLUGIN_GROUP))


@pytest.fixture(scope="session")
def denylist_class() -> Any:
    """The plugin class, loaded through the ``hoopgw.plugins`` entry point."""
    if not _installed():
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-e", str(PACKAGE_DIR)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"pip install failed:\n{installed.stderr}"
        # The editable install takes effect through a .pth file, which Python reads only at
        # start-up: read it now so that this process can import the package too.
        importlib.invalidate_caches()
        site.addsitedir(sysconfig.get_path("purelib"))
    assert _installed(), f"no {PLUGIN!r} entry point after installing {PACKAGE_DIR}"
    return load_plugin_class(PLUGIN)


def _client(
    plugin_class: Any, options: dict[str, Any] | None = None, **kwargs: Any
) -> ScriptedClient:
    client = ScriptedClient.for_plugin(
        plugin_class, WORDS if options is None else options, name=PLUGIN, **kwargs
    )
    assert client.connect() is None
    return client


# -- with ScriptedClient -----------------------------------------------------------------------


def test_a_command_mentioning_a_word_is_blocked_whatever_its_case(denylist_class: Any) -> None:
    result = _client(denylist_class).run("SELECT * FROM public.Secret_Table")
    assert result.verdict == Block(
        reason="the command mentions 'secret_table'", plugin=PLUGIN, rule="secret_table"
    )


def test_other_commands_are_allowed(denylist_class: Any) -> None:
    client = _client(denylist_class)
    assert client.run("SELECT 1").verdict == Allow()
    assert client.run("SELECT secret FROM tables").verdict == Allow()


def test_every_kind_of_command_is_checked(denylist_class: Any) -> None:
    # A prepared statement is checked when parsed and again on each later execution.
    client = _client(denylist_class)
    for kind in ("query", "parse", "execute"):
        verdict = client.run("SELECT usename FROM pg_shadow", kind=kind).verdict
        assert isinstance(verdict, Block) and verdict.rule == "pg_shadow"


def test_block_wins_over_another_plugins_allow(denylist_class: Any) -> None:
    class AllowEverything:
        @hookimpl
        def client_command(self) -> Allow:
            return Allow(reason="trusted")

    client = _client(denylist_class, extra_plugins=[("allow-all", AllowEverything())])
    assert isinstance(client.run("DROP TABLE secret_table").verdict, Block)
    assert client.run("SELECT 1").verdict == Allow(reason="trusted", plugin="allow-all")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "required"),
        ({"words": "secret_table"}, "expected list, got str"),
        ({"words": []}, "must list at least one word"),
        ({"words": ["secret_table", ""]}, "every word must be a non-empty string"),
        ({"words": [42]}, "every word must be a non-empty string"),
        ({"words": ["x"], "mode": "strict"}, "unknown option"),
    ],
)
def test_bad_options_are_refused_naming_the_key(
    denylist_class: Any, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        ScriptedClient.for_plugin(denylist_class, options, name=PLUGIN)
    assert raised.value.key.startswith(f"{PLUGIN}.")


# -- through a real gateway --------------------------------------------------------------------


@pytest.mark.integration
def test_the_gateway_refuses_a_denied_word_with_42501(
    denylist_class: Any, gateway: Any, pg_database: str
) -> None:
    gw = gateway(plugins=[PLUGIN], connection={PLUGIN: {"words": ["secret_table"]}})
    key = gw.create_key("agent-1", ["agents"])
    with psycopg.connect(
        host=gw.host,
        port=gw.port,
        user="agent-1",
        password=key,
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        for query, params in (
            ("SELECT * FROM secret_table", None),
            ("SELECT %s FROM SECRET_TABLE", [1]),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                conn.execute(query, params)
            assert refused.value.sqlstate == "42501"
            assert refused.value.diag.message_primary == (
                "hoopgw refused the command: the command mentions 'secret_table'"
            )
        # The session goes on after a refusal.
        assert conn.execute("SELECT %s::int", [2]).fetchone() == (2,)
