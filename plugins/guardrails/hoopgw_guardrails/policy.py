"""A connection's guardrails policy: the denied classes, the presets and the custom rules.

Everything here judges :class:`~hoopgw.sql.StatementFacts`, never raw text, and is free of I/O;
:mod:`hoopgw_guardrails` feeds it the statements of each command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

import attrs

from hoopgw.sql import DENY_CLASSES, StatementFacts
from hoopgw.verdicts import Allow, Block, Hold, combine

__all__ = ["PRESETS", "Policy", "Rule", "check_classes", "check_preset", "check_rules"]

_ALL_BUT_UNPARSEABLE = frozenset(c for c in DENY_CLASSES if c != "unparseable")

PRESETS: Mapping[str, frozenset[str]] = {
    "agent-readonly": _ALL_BUT_UNPARSEABLE,
    "agent-safe-write": _ALL_BUT_UNPARSEABLE - {"write"},
}
"""Named sets of denied classes that are safe defaults for an AI agent (see docs/guardrails.md)."""

ACTIONS = ("deny", "review")
"""What a matching rule does: refuse, or hold for approval (a refusal until one is installed)."""

_RULE_LISTS = ("kind", "tables", "functions", "columns")
_RULE_KEYS = frozenset({"name", *_RULE_LISTS, "regex", "action", "message", "approvers"})


def _glob_matches(pattern: str, name: str) -> bool:
    """Match a ``schema.name`` glob against a name from the statement, ignoring case.

    A name the statement leaves unqualified may resolve to any schema on the search path, so it
    matches on its last part alone: ``secret`` is caught by ``private.secret``.
    """
    pattern, name = pattern.casefold(), name.casefold()
    if fnmatchcase(name, pattern):
        return True
    pattern_last = pattern.rpartition(".")[2]
    if "." not in name or "." not in pattern:
        return fnmatchcase(name.rpartition(".")[2], pattern_last)
    return False


@attrs.frozen(kw_only=True)
class Rule:
    """One ``[[connections.guardrails.rules]]`` entry: every given matcher must match."""

    name: str
    """Identifier recorded as the verdict's ``rule`` (``rules[N]`` when the config has none)."""
    kinds: frozenset[str] = frozenset()
    """Statement kinds (parse-tree node names, case-folded), any of which matches."""
    tables: tuple[str, ...] = ()
    """Globs on schema-qualified relation names."""
    functions: tuple[str, ...] = ()
    """Globs on function names."""
    columns: tuple[str, ...] = ()
    """Globs on column names; a ``*`` in the statement matches every column glob."""
    regex: re.Pattern[str] | None = None
    """Searched in the statement's normalised text."""
    action: str = "deny"
    """``deny`` or ``review``."""
    message: str = ""
    """Shown to the client when the rule matches."""
    approvers: tuple[str, ...] = ()
    """For a ``review`` rule: groups whose members may approve (empty: the approval
    backend's default approvers)."""

    def matches(self, facts: StatementFacts) -> bool:
        """Whether this rule applies to ``facts`` (nested statements included)."""
        if self.kinds and not self.kinds & {k.casefold() for k in facts.kinds}:
            return False
        if self.tables and not any(_glob_matches(p, t) for p in self.tables for t in facts.tables):
            return False
        if self.functions and not any(
            _glob_matches(p, f) for p in self.functions for f in facts.functions
        ):
            return False
        if self.columns and not any(
            c == "*" or fnmatchcase(c.casefold(), p.casefold())
            for p in self.columns
            for c in facts.columns
        ):
            return False
        return self.regex is None or self.regex.search(facts.text) is not None


def _string_list(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, ())
    items = [value] if isinstance(value, str) else value
    # An empty list would silently drop the matcher and widen the rule to every statement.
    if key in entry and (
        not isinstance(items, list | tuple)
        or not items
        or not all(isinstance(i, str) and i.strip() for i in items)
    ):
        raise ValueError(f"{where}.{key}: must be a non-empty string or a list of them")
    return tuple(items)


def parse_rule(entry: Any, index: int) -> Rule:
    """Build one rule from its config table.

    :raises ValueError: naming ``rules[index].<key>`` and what is wrong with it.
    """
    where = f"rules[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_RULE_KEYS))})"
        )
    if not any(key in entry for key in (*_RULE_LISTS, "regex")):
        raise ValueError(f"{where}: needs at least one of kind, tables, functions, columns, regex")
    lists = {key: _string_list(entry, key, where) for key in _RULE_LISTS}
    regex = None
    if "regex" in entry:
        if not isinstance(entry["regex"], str):
            raise ValueError(f"{where}.regex: must be a string")
        try:
            regex = re.compile(entry["regex"])
        except re.error as exc:
            raise ValueError(f"{where}.regex: not a valid regular expression: {exc}") from None
    action = entry.get("action", "deny")
    if action not in ACTIONS:
        raise ValueError(f"{where}.action: must be one of {', '.join(ACTIONS)}, not {action!r}")
    for key in ("name", "message"):
        if not isinstance(entry.get(key, ""), str):
            raise ValueError(f"{where}.{key}: must be a string")
    approvers = _string_list(entry, "approvers", where)
    if approvers and action != "review":
        raise ValueError(f'{where}.approvers: only a rule with action = "review" has approvers')
    return Rule(
        name=entry.get("name") or where,
        kinds=frozenset(k.casefold() for k in lists["kind"]),
        tables=lists["tables"],
        functions=lists["functions"],
        columns=lists["columns"],
        regex=regex,
        action=action,
        message=entry.get("message", ""),
        approvers=approvers,
    )


def parse_rules(value: Iterable[Any]) -> tuple[Rule, ...]:
    """Build every rule, in order. :raises ValueError: as :func:`parse_rule`."""
    rules = tuple(parse_rule(entry, index) for index, entry in enumerate(value))
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"rules: the name {name!r} is used twice")
    return rules


def check_rules(value: list[Any]) -> str | None:
    """Option check for ``rules``: the first problem found, or None."""
    try:
        parse_rules(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_classes(value: list[Any]) -> str | None:
    """Option check for ``deny``: every entry must be a known class."""
    for item in value:
        if item not in DENY_CLASSES:
            return f"unknown class {item!r} (known: {', '.join(DENY_CLASSES)})"
    return None


def check_preset(value: str) -> str | None:
    """Option check for ``preset``: empty or a known preset."""
    if value and value not in PRESETS:
        return f"unknown preset {value!r} (known: {', '.join(PRESETS)})"
    return None


@attrs.frozen(kw_only=True)
class Policy:
    """The denied classes and the rules of one connection."""

    deny: frozenset[str]
    """Classes refused outright (``unparseable`` is always among them)."""
    rules: tuple[Rule, ...] = ()
    """Custom rules, in config order."""

    @property
    def read_only(self) -> bool:
        """Whether the connection denies writes: its sessions then run read-only on the target
        (see :func:`~hoopgw.hookspecs.upstream_options`), and nothing may turn that off."""
        return "write" in self.deny

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Policy:
        """The policy of validated plugin options (``deny``, ``preset``, ``rules``)."""
        deny = set(options["deny"]) | {"unparseable"}
        if options["preset"]:
            deny |= PRESETS[options["preset"]]
        return cls(deny=frozenset(deny), rules=parse_rules(options["rules"]))

    def judge(self, facts: StatementFacts) -> Block | Hold | None:
        """The verdict on one statement: a statement that would end the server's read-only mode
        on a read-only connection first, then a denied class, then every matching rule, as
        :func:`~hoopgw.verdicts.combine` makes one verdict of them (a deny rule wins over a
        review rule; several review rules hold for all their approver groups)."""
        if self.read_only and facts.read_write:
            return Block(
                reason=(
                    f"read-only: {facts.read_write} would turn off the read-only mode the server"
                    " enforces on this connection (guardrails deny write)"
                ),
                rule="read-only",
            )
        for cls in (c for c in DENY_CLASSES if c in facts.causes and c in self.deny):
            return Block(
                reason=(
                    f"{cls}: {facts.causes[cls]} is not allowed on this connection"
                    f" (guardrails deny {cls})"
                ),
                rule=cls,
            )
        verdicts: list[Block | Hold] = []
        for rule in self.rules:
            if rule.matches(facts):
                what = rule.message or f"{facts.command} matches a guardrails rule"
                reason = f"{what} (guardrails rule {rule.name})"
                if rule.action == "review":
                    verdicts.append(Hold(reason=reason, rule=rule.name, approvers=rule.approvers))
                else:
                    verdicts.append(Block(reason=reason, rule=rule.name))
        return combined(verdicts)


def combined(verdicts: Iterable[Block | Hold | None]) -> Block | Hold | None:
    """What :func:`~hoopgw.verdicts.combine` makes of guardrails' own verdicts: the one place
    verdicts are combined, so no hold's approver groups or rule is dropped."""
    verdict = combine(verdicts)
    assert not isinstance(verdict, Allow), "guardrails never allows"
    return verdict
