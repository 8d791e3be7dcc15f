"""Rules on HTTP requests (``protocol = "http"``): allow, deny or hold by method and path.

Commands of kind ``http-request`` carry ``details["method"]`` (upper case) and
``details["path"]`` (decoded once, with no dot segment, encoded slash or empty segment: the
protocol refuses every path servers could read differently). A rule::

    [[connections.guardrails.http_rules]]
    methods = ["DELETE"]          # or ["*"]
    paths = ["/api/**"]           # globs: * within a segment, ** across segments
    action = "review"             # allow, deny or review
    message = "deletes need a second pair of eyes"

Every rule that matches counts and the strongest action wins (deny, then review, then allow),
so the order of the rules does not matter; a request no rule matches gets ``http_default``.

Matching leans to the refusal where servers differ: a ``deny`` or ``review`` rule also matches
the path in another letter case, in Unicode compatibility form (NFKC: full-width letters
and slashes as ASCII) with or without a trailing slash and without the extension of its last segment
(``/admin.json`` as ``/admin``, as Rails and Spring route it), and a rule on ``GET``
also matches ``HEAD`` and ``WEBSOCKET`` (the method a WebSocket upgrade is judged as; all three
are GETs on the wire); an ``allow`` rule matches only the exact method and path. So a
case-insensitive server cannot be reached past a deny rule with ``/ADMIN``, and a
case-sensitive one is not opened by an allow rule for ``/public`` to ``/PUBLIC``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import attrs

from hoopgw.verdicts import Block, Hold

__all__ = ["HTTP_KIND", "HttpPolicy", "check_http_default", "check_http_rules"]

HTTP_KIND = "http-request"
"""The command kind of an HTTP request."""
ACTIONS = ("allow", "deny", "review")
_RULE_KEYS = {"methods", "paths", "action", "message"}
_METHOD = re.compile(r"[A-Z]+|\*")


def check_http_rules(value: list[Any]) -> str | None:
    """Validate ``http_rules``: a list of tables with ``methods``, ``paths``, ``action`` and
    an optional ``message``."""
    for index, rule in enumerate(value):
        where = f"rule {index + 1}"
        if not isinstance(rule, dict):
            return f"{where}: must be a table with methods, paths and action"
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            known = ", ".join(sorted(_RULE_KEYS))
            return f"{where}: unknown key {sorted(unknown)[0]!r} (known: {known})"
        methods, paths = rule.get("methods"), rule.get("paths")
        if not isinstance(methods, list) or not methods:
            return f"{where}: methods must be a non-empty list (upper-case methods or '*')"
        if not all(isinstance(m, str) and _METHOD.fullmatch(m) for m in methods):
            return f"{where}: methods must be upper-case method names or '*'"
        if not isinstance(paths, list) or not paths:
            return f"{where}: paths must be a non-empty list of globs starting with /"
        if not all(isinstance(p, str) and p.startswith("/") for p in paths):
            return f"{where}: paths must be globs starting with /"
        if rule.get("action") not in ACTIONS:
            return f"{where}: action must be one of {', '.join(ACTIONS)}"
        if not isinstance(rule.get("message", ""), str):
            return f"{where}: message must be a string"
    return None


def check_http_default(value: str) -> str | None:
    """Validate ``http_default``."""
    return None if value in ACTIONS else f"must be one of {', '.join(ACTIONS)}"


def _pattern(glob: str, *, broad: bool) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*|\?)", glob)
    regex = "".join(
        {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts
    )
    return re.compile(regex, re.IGNORECASE if broad else 0)


@attrs.frozen(kw_only=True)
class HttpRule:
    """One ``http_rules`` table."""

    methods: frozenset[str]
    globs: tuple[str, ...]
    action: str
    message: str
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> HttpRule:
        """The rule of one validated table."""
        broad = table["action"] != "allow"
        methods = set(table["methods"])
        if broad and "GET" in methods:
            methods |= {"HEAD", "WEBSOCKET"}  # both are GETs on the wire
        return cls(
            methods=frozenset(methods),
            globs=tuple(table["paths"]),
            action=table["action"],
            message=table.get("message", ""),
            patterns=tuple(_pattern(g, broad=broad) for g in table["paths"]),
        )

    def matches(self, method: str, path: str) -> bool:
        """Whether the rule covers ``method`` on ``path`` (see the module's docstring)."""
        if "*" not in self.methods and method not in self.methods:
            return False
        candidates = {path}
        if self.action != "allow":
            # Some servers fold compatibility characters (full-width letters) into ASCII.
            candidates.add(unicodedata.normalize("NFKC", path))
            if len(path) > 1:
                candidates |= {c.rstrip("/") or "/" for c in candidates}
                candidates |= {c.rstrip("/") + "/" for c in candidates}
            # Rails (``(.:format)``) and Spring's suffix pattern match route /admin.json as
            # /admin: the last segment without its extension(s).
            candidates |= {stem for c in candidates for stem in _stems(c)}
        return any(p.fullmatch(c) for p in self.patterns for c in candidates)


def _stems(path: str) -> set[str]:
    """``path`` with the extensions of its last segment dropped: one, or all of them."""
    head, _, last = path.rpartition("/")
    stems = {last.partition(".")[0], last.rpartition(".")[0]}
    return {f"{head}/{stem}" for stem in stems if stem}


@attrs.frozen(kw_only=True)
class HttpPolicy:
    """The ``http_rules`` and ``http_default`` of one connection."""

    rules: tuple[HttpRule, ...]
    default: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HttpPolicy:
        """Build the policy from the plugin's validated options."""
        return cls(
            rules=tuple(HttpRule.from_table(t) for t in options["http_rules"]),
            default=options["http_default"],
        )

    def judge(self, method: str, path: str) -> Block | Hold | None:
        """The verdict on one request: the strongest action of the rules that match it, or
        ``http_default`` when none does; None means allowed."""
        matched = [rule for rule in self.rules if rule.matches(method, path)]
        for action in ("deny", "review"):
            hits = [rule for rule in matched if rule.action == action]
            if hits:
                return _verdict(action, hits[0].message or f"{method} {hits[0].globs[0]}")
        if any(rule.action == "allow" for rule in matched) or self.default == "allow":
            return None
        return _verdict(self.default, f"no rule allows {method} {path} (guardrails http_default)")


def _verdict(action: str, reason: str) -> Block | Hold:
    if action == "deny":
        return Block(reason=f"{reason} (guardrails http rule)", rule="http-deny")
    return Hold(reason=f"{reason} (guardrails http rule: review)", rule="http-review")
