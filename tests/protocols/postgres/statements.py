"""Every PostgreSQL statement the tests hold, and the facts the analysis gives each of them.

The statements: the guardrails corpus (``tests/plugins/guardrails/corpus.toml``) and every string
that parses as SQL in the PostgreSQL analysis, catalog and guardrails tests. ``facts.json``
keeps what the analysis made of each when it walked the binding's protobuf tree; the walk over
plain JSON that replaced it must give exactly the same (``test_analysis.py``); statements
added to the tests later are not in the record (the property tests take them all). Loaded by
``tests/conftest.py`` as ``hoopgw_tests_pg_statements``; run it to write ``facts.json`` again
(only when a change of the facts is intended, and reviewed)::

    .venv/bin/python tests/protocols/postgres/statements.py
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

TESTS = Path(__file__).parents[2]
FACTS = Path(__file__).parent / "facts.json"
SOURCES = (
    "protocols/postgres/test_analysis.py",
    "protocols/postgres/test_catalog.py",
    "plugins/guardrails/test_guardrails.py",
    "plugins/guardrails/test_policy.py",
    "plugins/guardrails/test_corpus.py",
    "integration/test_guardrails.py",
    "integration/test_guardrails_functions.py",
)


def statements() -> list[str]:
    """The statements, each once, in a stable order."""
    from hoopgw_postgres.shape import tree_key

    found = [
        c["sql"]
        for c in tomllib.loads((TESTS / "plugins/guardrails/corpus.toml").read_text())["case"]
    ]
    for source in SOURCES:
        tree = ast.parse((TESTS / source).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if " " in text.strip() and "\0" not in text and tree_key(text) is not None:
                    found.append(text)
    return sorted(set(found))


_INTEGER = re.compile(rb"\d+(?![\w.$])")
_STRING = re.compile(rb"'(?:[^']|'')*'")


def with_constant(text: str, value: str, index: int) -> str | None:
    """``text`` with one of its constants (the ``index``-th, modulo their number, of those
    spelled as ``value`` is: plain digits, or a plain ``'...'`` string) written as ``value``
    instead; None when it has no such constant. Same shape, other value."""
    from hoopgw_postgres.tree import ParseError, parse

    try:
        tree = parse(text)
    except ParseError:
        return None
    source = text.encode("utf-8")
    pattern = _STRING if value.startswith("'") else _INTEGER
    spans = []
    for constant in _constants(tree):
        found = (
            pattern.match(source, constant.get("location", -1)) if "location" in constant else None
        )
        if found and ("sval" in constant if pattern is _STRING else "ival" in constant):
            spans.append(found.span())
    if not spans:
        return None
    start, end = spans[index % len(spans)]
    return (source[:start] + value.encode("utf-8") + source[end:]).decode("utf-8")


def _constants(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node["A_Const"]] if isinstance(node.get("A_Const"), dict) else []
        return found + [c for v in node.values() for c in _constants(v)]
    if isinstance(node, list):
        return [c for v in node for c in _constants(v)]
    return []


def described(analysis: Any) -> dict[str, Any]:
    """An analysis as plain JSON values (sets as sorted lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, frozenset | set):
            return sorted(value)
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, dict):
            return dict(sorted(value.items()))
        return value

    return {
        "error": analysis.error,
        "statements": [
            {k: plain(v) for k, v in attrs.asdict(s, recurse=False).items()}
            for s in analysis.statements
        ],
    }


def expected() -> dict[str, dict[str, Any]]:
    """``facts.json``: each statement's analysis, as :func:`described`."""
    recorded: dict[str, dict[str, Any]] = json.loads(FACTS.read_text(encoding="utf-8"))
    return recorded


if __name__ == "__main__":
    from hoopgw_postgres.analysis import PostgresDialect

    dialect = PostgresDialect()
    facts = {text: described(dialect.analyze(text)) for text in statements()}
    lines = (
        f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
        for k, v in facts.items()
    )
    FACTS.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"{len(facts)} statements")
