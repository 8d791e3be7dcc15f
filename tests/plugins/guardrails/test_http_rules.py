"""Guardrails on HTTP requests: rules by method and path glob, judged through the plugin's
``client_command`` like every other command."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.http_rules import HttpPolicy, check_http_rules
from twisted.logger import Logger

from hoopgw.errors import ConfigError
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.session import Command, ConnectionInfo
from hoopgw.testing import make_session
from hoopgw.verdicts import Block, Hold

RULES = [
    {"methods": ["GET"], "paths": ["/api/**"], "action": "allow"},
    {"methods": ["*"], "paths": ["/api/admin/**"], "action": "deny", "message": "admin"},
    {"methods": ["DELETE"], "paths": ["/api/items/*"], "action": "review"},
    {"methods": ["POST"], "paths": ["/api/items"], "action": "allow"},
]


def policy(default: str = "deny", rules: list[dict[str, Any]] = RULES) -> HttpPolicy:
    return HttpPolicy.from_options({"http_rules": rules, "http_default": default})


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/items", None),
        ("GET", "/api/items/7", None),
        ("POST", "/api/items", None),
        ("GET", "/api/admin/users", Block),
        ("POST", "/api/admin", Block),  # no rule: /api/admin/** needs a segment more
        ("DELETE", "/api/items/7", Hold),
        ("PUT", "/api/items/7", Block),  # no rule: http_default
        ("GET", "/other", Block),
    ],
)
def test_rules(method: str, path: str, expected: type | None) -> None:
    verdict = policy().judge(method, path)
    if expected is None:
        assert verdict is None
    else:
        assert isinstance(verdict, expected)


def test_deny_beats_review_beats_allow_whatever_the_order() -> None:
    rules = list(reversed(RULES))
    assert isinstance(policy(rules=rules).judge("GET", "/api/admin/x"), Block)
    both = [
        {"methods": ["DELETE"], "paths": ["/x/*"], "action": "allow"},
        {"methods": ["DELETE"], "paths": ["/x/*"], "action": "review"},
    ]
    assert isinstance(policy(rules=both).judge("DELETE", "/x/1"), Hold)


def test_deny_and_review_rules_match_broadly() -> None:
    p = policy(default="allow")
    # Another letter case, a trailing slash, HEAD for GET: a server may route them alike.
    assert isinstance(p.judge("GET", "/API/Admin/users"), Block)
    assert isinstance(p.judge("DELETE", "/api/items/7/"), Hold)
    deny_get = policy(
        default="allow", rules=[{"methods": ["GET"], "paths": ["/secret"], "action": "deny"}]
    )
    assert isinstance(deny_get.judge("HEAD", "/secret"), Block)
    assert isinstance(deny_get.judge("GET", "/secret/"), Block)


def test_allow_rules_match_exactly() -> None:
    p = policy(default="deny")
    assert isinstance(p.judge("POST", "/API/items"), Block)
    assert isinstance(p.judge("POST", "/api/items/"), Block)
    assert isinstance(p.judge("HEAD", "/api/items"), Block)


def test_globs() -> None:
    rules = [{"methods": ["GET"], "paths": ["/v?/*/x"], "action": "allow"}]
    p = policy(rules=rules)
    assert p.judge("GET", "/v1/abc/x") is None
    assert isinstance(p.judge("GET", "/v1/a/b/x"), Block)  # * stays within a segment
    assert isinstance(p.judge("GET", "/v10/a/x"), Block)
    assert isinstance(
        policy(rules=[{"methods": ["GET"], "paths": ["/a.b"], "action": "allow"}]).judge(
            "GET", "/aXb"
        ),
        Block,
    )  # a dot is a dot


def test_default_review_and_the_reason() -> None:
    verdict = policy(default="review", rules=[]).judge("PATCH", "/x")
    assert isinstance(verdict, Hold)
    assert "PATCH /x" in verdict.reason
    blocked = policy().judge("GET", "/api/admin/users")
    assert isinstance(blocked, Block) and blocked.reason.startswith("admin")


@pytest.mark.parametrize(
    "rules",
    [
        ["x"],
        [{"methods": ["GET"], "paths": ["/a"]}],
        [{"methods": ["get"], "paths": ["/a"], "action": "deny"}],
        [{"methods": [], "paths": ["/a"], "action": "deny"}],
        [{"methods": ["GET"], "paths": ["a"], "action": "deny"}],
        [{"methods": ["GET"], "paths": ["/a"], "action": "block"}],
        [{"methods": ["GET"], "paths": ["/a"], "action": "deny", "tables": ["x"]}],
    ],
)
def test_malformed_rules_are_config_errors(rules: list[Any]) -> None:
    assert check_http_rules(rules)


def plugin(protocol: str, **options: Any) -> GuardrailsPlugin:
    connection = ConnectionInfo(name="api", protocol=protocol, target="127.0.0.1:80")
    values = validate_options("guardrails", GuardrailsPlugin.options, options, connection="api")
    context = PluginContext(
        connection=connection, options=values, audit=None, log=Logger(), reactor=None
    )
    return GuardrailsPlugin(context)


def command(method: str, path: str, kind: str = "http-request") -> Command:
    return Command(
        session_id="s",
        seq=1,
        text=f"{method} {path}",
        kind=kind,
        details={"method": method, "path": path, "query": ""},
    )


def test_the_plugin_judges_http_requests() -> None:
    guard = plugin("http", http_rules=RULES, http_default="deny")
    session = make_session()
    assert guard.client_command(session, command("GET", "/api/items")) is None
    assert isinstance(guard.client_command(session, command("DELETE", "/api/items/1")), Hold)
    assert isinstance(guard.client_command(session, command("PUT", "/x")), Block)
    # Fail closed: a command without its method and path.
    assert isinstance(guard.client_command(session, command("GET", "/", kind="exec")), Block)


def test_http_options_belong_to_http_connections() -> None:
    with pytest.raises(ConfigError, match="HTTP connections"):
        plugin("ssh", http_rules=RULES)
    with pytest.raises(ConfigError, match="http_rules"):
        plugin("http", deny_commands=["rm"])


def test_a_websocket_is_its_own_method_but_denied_with_get() -> None:
    allow_get = policy(rules=[{"methods": ["GET"], "paths": ["/ws"], "action": "allow"}])
    assert isinstance(allow_get.judge("WEBSOCKET", "/ws"), Block)
    deny_get = policy(
        default="allow", rules=[{"methods": ["GET"], "paths": ["/ws"], "action": "deny"}]
    )
    assert isinstance(deny_get.judge("WEBSOCKET", "/ws"), Block)
    allow_ws = policy(rules=[{"methods": ["WEBSOCKET"], "paths": ["/ws"], "action": "allow"}])
    assert allow_ws.judge("WEBSOCKET", "/ws") is None


def test_deny_rules_match_the_compatibility_form_of_a_path() -> None:
    deny = policy(
        default="allow", rules=[{"methods": ["*"], "paths": ["/admin/**"], "action": "deny"}]
    )
    assert isinstance(deny.judge("GET", "/\uff41\uff44\uff4d\uff49\uff4e/users"), Block)
    allow = policy(rules=[{"methods": ["GET"], "paths": ["/admin/**"], "action": "allow"}])
    assert isinstance(allow.judge("GET", "/\uff41\uff44\uff4d\uff49\uff4e/users"), Block)


def test_deny_rules_match_a_path_without_its_format_extension() -> None:
    # Rails routes /admin.json (and Spring's suffix match /admin.anything) as /admin.
    deny = policy(
        default="allow", rules=[{"methods": ["*"], "paths": ["/admin"], "action": "deny"}]
    )
    assert isinstance(deny.judge("GET", "/admin.json"), Block)
    assert isinstance(deny.judge("GET", "/admin.tar.gz"), Block)
    assert isinstance(deny.judge("GET", "/ADMIN.json/"), Block)
    assert deny.judge("GET", "/admins.json") is None
    assert deny.judge("GET", "/.admin") is None
    allow = policy(rules=[{"methods": ["GET"], "paths": ["/admin"], "action": "allow"}])
    assert isinstance(allow.judge("GET", "/admin.json"), Block)
