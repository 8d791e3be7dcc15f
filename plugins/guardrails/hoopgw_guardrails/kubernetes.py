"""Kubernetes API requests judged by verb, resource, namespace and name.

The ``kubernetes`` protocol reports each API request as a command whose ``details`` hold its
``verb`` (``get``, ``list``, ``watch``, ``create``, ``update``, ``patch``, ``delete``,
``deletecollection``, or one of the streaming subresources ``exec``, ``attach``,
``portforward``, ``proxy``, ``log``), ``resource``, ``subresource``, ``namespace`` and
``name``. ``kubernetes_rules`` is an ordered list; the first rule that matches decides::

    [[connections.guardrails.kubernetes_rules]]
    verbs = ["delete", "deletecollection"]
    action = "review"
    message = "deletes are reviewed"

Each of ``verbs``, ``resources``, ``namespaces`` and ``names`` is a list of globs (absent or
empty: any); ``action`` is ``allow``, ``deny`` or ``review``. A ``deny`` or ``review`` rule that
sets ``namespaces`` also fits a list, watch or deletecollection across all namespaces, and one
that sets ``names`` also fits a list, watch, deletecollection or create (which name no object
in the path): they may reach what the rule names. A request no rule matches falls
to :data:`DEFAULT_RULES`: ``portforward`` and ``proxy`` are denied, ``secrets`` are denied,
creating a ``serviceaccounts/token`` (a token for the cluster) is denied, a verb the plugin
does not know is denied; the rest is allowed. A ``resources`` glob matches the resource
(``pods``) or, as RBAC names it, the resource and its subresource (``pods/log``). Discovery
(``/api``, ``/version``, ...) has an empty resource and matches ``resources = [""]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import attrs

from hoopgw.verdicts import Block, Hold

__all__ = ["DEFAULT_RULES", "KNOWN_VERBS", "KubernetesPolicy", "check_kubernetes_rules"]

KNOWN_VERBS = frozenset(
    {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "exec",
        "attach",
        "portforward",
        "proxy",
        "log",
    }
)
"""Verbs the rules know; any other is denied unless a rule allows it by name."""
ACTIONS = ("allow", "deny", "review")
_ALL_NAMESPACES = frozenset({"list", "watch", "deletecollection"})
"""Verbs that, without a namespace, reach objects in every namespace."""
_ALL_NAMES = _ALL_NAMESPACES | {"create"}
"""Verbs that, without a name in the path, reach (or make) objects of any name."""
_LISTS = ("verbs", "resources", "namespaces", "names")
_KEYS = frozenset({*_LISTS, "action", "message"})


@attrs.frozen(kw_only=True)
class KubernetesRule:
    """One ``kubernetes_rules`` entry."""

    action: str
    verbs: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    message: str = ""

    def matches(self, facts: Mapping[str, Any]) -> bool:
        """Whether the request's ``facts`` fit every list the rule sets.

        A rule that denies or reviews also fits a request that names no namespace (a
        collection across all of them) or no object (a collection, a create), whatever its
        ``namespaces`` or ``names``: such a request may reach the objects they name.
        """
        verb = str(facts.get("verb", ""))
        for field, globs, reaching in (
            ("verb", self.verbs, ()),
            ("resource", self.resources, ()),
            ("namespace", self.namespaces, _ALL_NAMESPACES),
            ("name", self.names, _ALL_NAMES),
        ):
            value = str(facts.get(field, ""))
            values = [value]
            if field == "resource" and facts.get("subresource"):
                values.append(f"{value}/{facts['subresource']}")  # RBAC's "pods/log"
            if not globs or any(fnmatchcase(v, glob) for v in values for glob in globs):
                continue
            if not (value == "" and verb in reaching and self.action != "allow"):
                return False
        return True


DEFAULT_RULES = (
    KubernetesRule(
        action="deny",
        verbs=("portforward", "proxy"),
        message="portforward and proxy are off by default",
    ),
    KubernetesRule(
        action="deny",
        resources=("secrets",),
        message="secrets are denied by default (allow them with a rule, and mask them)",
    ),
    KubernetesRule(
        action="deny",
        resources=("serviceaccounts/token",),
        message="minting service account tokens is denied by default (a token for the"
        " cluster is a way around the gateway)",
    ),
)
"""What applies after the operator's rules."""


def check_kubernetes_rules(value: list[Any]) -> str | None:
    """Why ``kubernetes_rules`` is malformed, or None."""
    for index, rule in enumerate(value):
        where = f"rule {index + 1}"
        if not isinstance(rule, dict):
            return f"{where}: must be a table"
        unknown = set(rule) - _KEYS
        if unknown:
            return (
                f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_KEYS))})"
            )
        if rule.get("action") not in ACTIONS:
            return f"{where}: action must be one of {', '.join(ACTIONS)}"
        for key in _LISTS:
            globs = rule.get(key, [])
            if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
                return f"{where}: {key} must be a list of strings (globs)"
        if not isinstance(rule.get("message", ""), str):
            return f"{where}: message must be a string"
    return None


@attrs.frozen(kw_only=True)
class KubernetesPolicy:
    """The ordered rules of one connection, then :data:`DEFAULT_RULES`."""

    rules: tuple[KubernetesRule, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> KubernetesPolicy:
        """The policy ``kubernetes_rules`` describes (checked by the option's check)."""
        return cls(
            rules=tuple(
                KubernetesRule(
                    action=raw["action"],
                    message=raw.get("message", ""),
                    **{key: tuple(raw.get(key, [])) for key in _LISTS},
                )
                for raw in options.get("kubernetes_rules", [])
            )
        )

    def judge(self, facts: Mapping[str, Any]) -> Block | Hold | None:
        """The verdict on one request: None to allow it (guardrails abstains)."""
        if "verb" not in facts:
            return Block(reason="the request has no verb to judge", rule="kubernetes")
        described = _describe(facts)
        for number, rule in enumerate(self.rules, 1):
            if rule.matches(facts):
                return _verdict(rule, f"kubernetes rule {number}", described)
        for rule in DEFAULT_RULES:
            if rule.matches(facts):
                return _verdict(rule, "kubernetes default", described)
        if facts["verb"] not in KNOWN_VERBS:
            return Block(
                reason=f"{described}: unknown verb {facts['verb']!r} (no rule allows it)",
                rule="kubernetes default",
            )
        return None


def _describe(facts: Mapping[str, Any]) -> str:
    what = facts.get("resource") or facts.get("path", "")
    if facts.get("name"):
        what += f"/{facts['name']}"
    where = f" in namespace {facts['namespace']}" if facts.get("namespace") else ""
    return f"{facts['verb']} {what}{where}"


def _verdict(rule: KubernetesRule, label: str, described: str) -> Block | Hold | None:
    if rule.action == "allow":
        return None
    reason = f"{described}: {rule.message or label} ({label})"
    if rule.action == "review":
        return Hold(reason=reason, rule=label)
    return Block(reason=reason, rule=label)
