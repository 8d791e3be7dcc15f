"""Render ``docs/hooks.md``, the hook reference, from the docstrings of ``hoopgw/hookspecs.py``.

    .venv/bin/python docs/gen_hooks.py           # rewrite docs/hooks.md
    .venv/bin/python docs/gen_hooks.py --check   # exit 1 if docs/hooks.md is out of date

``tests/test_docs.py`` fails when the file differs from what :func:`render` produces, so the
reference cannot drift from the contract: change the docstrings, then run this script.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

from hoopgw import hookspecs

OUTPUT = Path(__file__).resolve().parent / "hooks.md"

_ROLE = re.compile(r":(?:func|class|data|attr|meth|mod|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_SECTION = re.compile(r"^# -- (.+?) -+$")
_FIELD = re.compile(r"^:(param (\w+)|return|raises \w+):\s*(.*)$")


def _inline(text: str) -> str:
    """Turn the reStructuredText inline markup used in the contract into Markdown."""

    def role(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2)
        if target in hookspecs.ALL_HOOKS:
            return f"[`{target}`](#{target})"
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return _LITERAL.sub(r"`\1`", _ROLE.sub(role, text))


def _blocks(text: str) -> list[str]:
    """Markdown for docstring prose: paragraphs, and ``::`` literal blocks as fenced code."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.rstrip().endswith("::"):
            out.append(_inline(line.rstrip()[:-1]))
            code: list[str] = []
            while index < len(lines) and (not lines[index].strip() or lines[index][:1] == " "):
                code.append(lines[index][4:])
                index += 1
            while code and not code[0].strip():
                code.pop(0)
            while code and not code[-1].strip():
                code.pop()
            out.extend(["", "```", *code, "```", ""])
        else:
            out.append(_inline(line))
    return out


def _split_fields(doc: str) -> tuple[str, dict[str, str], str]:
    """Split a hook docstring into its prose, its ``:param:`` texts and its ``:return:`` text."""
    prose: list[str] = []
    params: dict[str, str] = {}
    returns = ""
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        field = _FIELD.match(line)
        if field:
            current = field.group(2) or field.group(1)
            if current == "return":
                returns = field.group(3)
            else:
                params[current] = field.group(3)
        elif current is not None and line.startswith(" "):
            if current == "return":
                returns += " " + line.strip()
            else:
                params[current] += " " + line.strip()
        else:
            current = None
            prose.append(line)
    return "\n".join(prose).strip(), params, returns


def hook_sections(module: ModuleType = hookspecs) -> dict[str, str]:
    """Map each hook name to the ``# -- section --`` comment it sits under in the module."""
    source = inspect.getsource(module).splitlines()
    sections: dict[str, str] = {}
    for name in module.ALL_HOOKS:
        start = inspect.getsourcelines(getattr(module, name))[1]
        for line in reversed(source[: start - 1]):
            match = _SECTION.match(line)
            if match:
                sections[name] = match.group(1)
                break
    return sections


def _decision_alias(module: ModuleType) -> str:
    """The source text of the ``Decision`` type alias (it exists only for type checkers)."""
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "Decision" for t in node.targets
        ):
            return ast.unparse(node.value)
    raise LookupError("hookspecs defines no Decision alias")


def _signature(name: str, function: object) -> str:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"{name}({params}) -> {signature.return_annotation}"


def _hook(name: str, module: ModuleType) -> list[str]:
    function = getattr(module, name)
    prose, params, returns = _split_fields(function.__doc__ or "")
    spec = getattr(function, f"{module.PROJECT}_spec", {}) or {}
    out = [f"### `{name}`", "", "```python", _signature(name, function), "```", ""]
    out.extend(_blocks(prose))
    if spec.get("firstresult"):
        out.extend(["", "*First result*: implementations are called until one returns non-`None`."])
    out.extend(["", "| parameter | type | meaning |", "|---|---|---|"])
    for parameter in inspect.signature(function).parameters.values():
        meaning = _inline(params.get(parameter.name, "")) or "see above"
        cells = (f"`{parameter.name}`", f"`{parameter.annotation}`", meaning)
        # A bare | would end the cell, even inside a code span.
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if returns:
        out.extend(["", f"**Returns** {_inline(returns)}"])
    out.append("")
    return out


def render(module: ModuleType = hookspecs) -> str:
    """The full text of ``docs/hooks.md`` for ``module`` (normally :mod:`hoopgw.hookspecs`)."""
    out = [
        "# Hook reference",
        "",
        "<!-- Generated from hoopgw/hookspecs.py by docs/gen_hooks.py; do not edit by hand. -->",
        "",
        "How to write, package and test a plugin: [writing-plugins.md](writing-plugins.md).",
        "",
        "## Overview",
        "",
        *_blocks(inspect.cleandoc(module.__doc__ or "")),
        "",
        "## Types",
        "",
        "Parameter types are in `hoopgw.session` (`ConnectionInfo`, `SessionInfo`, `Command`,",
        "`CommandOutcome`, `Column`, `Output`) and `hoopgw.verdicts` (`Allow`, `Block`, `Hold`,",
        f"`Verdict`). A decision hook returns `Decision = {_decision_alias(module)}`.",
        "",
    ]
    sections = hook_sections(module)
    current = None
    for name in module.ALL_HOOKS:
        if sections.get(name) != current:
            current = sections.get(name)
            out.extend([f"## {(current or 'other').capitalize()}", ""])
        out.extend(_hook(name, module))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``docs/hooks.md``, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if outdated")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run docs/gen_hooks.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
