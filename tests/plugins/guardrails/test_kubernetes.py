"""Tests for hoopgw_guardrails.kubernetes: API requests judged by verb, resource, namespace
and name, first match first, then the defaults."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.kubernetes import KubernetesPolicy, check_kubernetes_rules
from twisted.logger import Logger

from hoopgw import protocol
from hoopgw.errors import ConfigError
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.session import Command
from hoopgw.testing import make_connection, make_session
from hoopgw.verdicts import Block, Hold

RULES = [
    {"verbs": ["delete", "deletecollection"], "action": "review", "message": "deletes wait"},
    {"resources": ["secrets"], "verbs": ["get"], "namespaces": ["dev-*"], "action": "allow"},
    {"namespaces": ["kube-system"], "action": "deny"},
]


def _facts(verb: str, resource: str = "pods", namespace: str = "default", name: str = "") -> dict:
    return {"verb": verb, "resource": resource, "namespace": namespace, "name": name}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (_facts("get"), None),
        (_facts("list"), None),
        (_facts("exec", name="web"), None),
        (_facts("delete", name="web"), Hold),
        (_facts("deletecollection"), Hold),
        (_facts("get", "secrets", "dev-a", "db"), None),
        (_facts("get", "secrets", "prod", "db"), Block),
        (_facts("list", "secrets", "dev-a"), Block),
        (_facts("get", namespace="kube-system"), Block),
        (_facts("portforward", name="web"), Block),
        (_facts("proxy", "services", name="s"), Block),
        (_facts("escalate", "roles"), Block),
        ({"resource": "pods"}, Block),
    ],
)
def test_first_matching_rule_then_the_defaults(facts: dict, expected: Any) -> None:
    verdict = KubernetesPolicy.from_options({"kubernetes_rules": RULES}).judge(facts)
    assert (verdict is None) if expected is None else isinstance(verdict, expected), verdict


def test_a_rule_can_allow_what_the_defaults_deny() -> None:
    policy = KubernetesPolicy.from_options(
        {"kubernetes_rules": [{"verbs": ["portforward"], "names": ["db-*"], "action": "allow"}]}
    )
    assert policy.judge(_facts("portforward", name="db-0")) is None
    assert isinstance(policy.judge(_facts("portforward", name="web")), Block)


def test_reasons_name_the_request_and_the_rule() -> None:
    verdict = KubernetesPolicy.from_options({"kubernetes_rules": RULES}).judge(
        _facts("delete", name="web")
    )
    assert isinstance(verdict, Hold)
    assert (
        verdict.reason == "delete pods/web in namespace default: deletes wait (kubernetes rule 1)"
    )
    assert verdict.rule == "kubernetes rule 1"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (["x"], "must be a table"),
        ([{"action": "maybe"}], "action must be one of"),
        ([{"action": "deny", "verb": ["get"]}], "unknown key 'verb'"),
        ([{"action": "deny", "verbs": "get"}], "verbs must be a list"),
        ([{"action": "deny", "message": 3}], "message must be a string"),
    ],
)
def test_malformed_rules_are_named(rules: list, message: str) -> None:
    problem = check_kubernetes_rules(rules)
    assert problem is not None and message in problem


def _plugin(monkeypatch: Any, protocol_name: str, options: dict) -> GuardrailsPlugin:
    spec = protocol.ProtocolSpec(name=protocol_name, build_factory=lambda runtime: None)
    monkeypatch.setattr("hoopgw_guardrails.load_protocol", lambda name: spec)
    values = validate_options("guardrails", GuardrailsPlugin.options, options, connection="k")
    context = PluginContext(
        connection=make_connection(protocol=protocol_name),
        options=values,
        audit=None,
        log=Logger(),
        reactor=None,
    )
    return GuardrailsPlugin(context)


def test_the_plugin_judges_api_requests_and_exec_commands(monkeypatch: Any) -> None:
    plugin = _plugin(
        monkeypatch, "kubernetes", {"kubernetes_rules": RULES, "deny_commands": ["rm -rf /"]}
    )
    session = make_session(connection=make_connection(protocol="kubernetes"))

    def judge(text: str, kind: str, facts: dict) -> Any:
        command = Command(session_id=session.id, seq=1, text=text, kind=kind, details=facts)
        return plugin.client_command(session, command)

    assert judge("list pods -n default", "api", _facts("list")) is None
    assert isinstance(judge("delete pods/web", "api", _facts("delete", name="web")), Hold)
    assert judge("ls /", "exec", _facts("exec", name="web")) is None
    assert isinstance(judge("rm -rf /", "exec", _facts("exec", name="web")), Block)
    denied = judge("ls", "exec", _facts("exec", namespace="kube-system", name="x"))
    assert isinstance(denied, Block) and denied.rule == "kubernetes rule 3"


def test_kubernetes_rules_on_another_protocol_are_refused(monkeypatch: Any) -> None:
    with pytest.raises(ConfigError, match="kubernetes_rules"):
        _plugin(monkeypatch, "ssh", {"kubernetes_rules": RULES})


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # A collection may hold, or a create make, the object a deny rule names.
        (_facts("list", "configmaps"), Block),
        (_facts("watch", "configmaps"), Block),
        (_facts("create", "configmaps"), Block),
        (_facts("get", "configmaps", name="web"), None),
        (_facts("get", "configmaps", name="prod-db"), Block),
        # A list across all namespaces reaches kube-system.
        (_facts("list", "pods", namespace=""), Block),
        (_facts("watch", "pods", namespace=""), Block),
        (_facts("get", "nodes", namespace="", name="n1"), None),
        (_facts("list", "pods", namespace="default"), None),
    ],
)
def test_deny_rules_reach_requests_that_name_no_namespace_or_object(
    facts: dict, expected: Any
) -> None:
    rules = [
        {"resources": ["configmaps"], "names": ["prod-*"], "action": "deny"},
        {"namespaces": ["kube-system"], "action": "deny"},
    ]
    verdict = KubernetesPolicy.from_options({"kubernetes_rules": rules}).judge(facts)
    assert (verdict is None) if expected is None else isinstance(verdict, expected), verdict


def test_allow_rules_naming_objects_do_not_allow_collections() -> None:
    rules = [{"resources": ["secrets"], "names": ["app-*"], "action": "allow"}]
    policy = KubernetesPolicy.from_options({"kubernetes_rules": rules})
    assert policy.judge(_facts("get", "secrets", name="app-1")) is None
    assert isinstance(policy.judge(_facts("list", "secrets")), Block)


def test_minting_a_service_account_token_is_denied_by_default() -> None:
    # kubectl create token SA: a cluster credential the caller could use around the gateway.
    policy = KubernetesPolicy.from_options({})
    token = {**_facts("create", "serviceaccounts", name="sa"), "subresource": "token"}
    assert isinstance(policy.judge(token), Block)
    assert policy.judge(_facts("create", "serviceaccounts")) is None


def test_resources_globs_match_a_subresource_as_rbac_names_it() -> None:
    policy = KubernetesPolicy.from_options(
        {"kubernetes_rules": [{"resources": ["pods/log"], "action": "deny"}]}
    )
    assert isinstance(policy.judge({**_facts("log", name="p"), "subresource": "log"}), Block)
    assert policy.judge(_facts("get", name="p")) is None
