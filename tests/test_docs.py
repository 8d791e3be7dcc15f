"""The documentation stays true to the code: hook reference, plugin options, links."""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest

from hoopgw import hookspecs
from hoopgw.plugin import PLUGIN_GROUP

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

# A plugin's options are documented on docs/<name>.md unless it is listed here.
PLUGIN_PAGES = {
    "example-denylist": "writing-plugins.md",
    "approval": "approvals.md",
    "webhook": "approvals.md",
}

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)


def _load_generator() -> ModuleType:
    # docs/ is no package: load the generator by path, once.
    name = "hoopgw_docs_gen_hooks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "gen_hooks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


gen_hooks = _load_generator()


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text(encoding="utf-8")))


# -- (a) every hook is documented ---------------------------------------------------------------


def test_all_hooks_lists_exactly_the_hookspecs() -> None:
    marked = {
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
    }
    assert set(hookspecs.ALL_HOOKS) == marked
    assert len(hookspecs.ALL_HOOKS) == len(marked)


@pytest.mark.parametrize("name", hookspecs.ALL_HOOKS)
def test_every_hook_has_a_description_and_documents_its_parameters(name: str) -> None:
    function = getattr(hookspecs, name)
    prose, params, _ = gen_hooks._split_fields(function.__doc__ or "")
    parameters = set(inspect.signature(function).parameters)
    assert prose, f"{name} has no description"
    assert set(params) <= parameters, f"{name} documents parameters it does not have"
    undocumented = parameters - set(params)
    assert not undocumented or len(prose.split("\n\n")) > 1, (
        f"{name}: parameters {sorted(undocumented)} have no :param and no description"
    )


@pytest.mark.parametrize("name", hookspecs.ALL_HOOKS)
def test_every_hook_is_in_the_reference(name: str) -> None:
    headings = _HEADING.findall((DOCS / "hooks.md").read_text(encoding="utf-8"))
    assert f"`{name}`" in headings


# -- (b) the reference is generated --------------------------------------------------------------


def test_hooks_md_is_exactly_what_the_generator_renders() -> None:
    assert (DOCS / "hooks.md").read_text(encoding="utf-8") == gen_hooks.render(), (
        "docs/hooks.md is out of date: run .venv/bin/python docs/gen_hooks.py"
    )


def test_generator_check_mode_agrees() -> None:
    assert gen_hooks.main(["--check"]) == 0


def test_generator_groups_hooks_by_kind() -> None:
    sections = gen_hooks.hook_sections()
    assert sections["client_command"] == "decisions"
    assert sections["approval_requested"] == "approval backend"
    assert sections["server_rows"] == "data hooks"
    assert sections["session_closed"] == "observers"


def test_generator_turns_roles_into_markdown() -> None:
    text = ":func:`client_command` uses :class:`~hoopgw.verdicts.Block` and ``None``"
    assert gen_hooks._inline(text) == (
        "[`client_command`](#client_command) uses `Block` and `None`"
    )


# -- (c) every plugin's options are documented ---------------------------------------------------


def _plugin_entry_points() -> list[object]:
    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def test_the_recording_plugin_is_installed() -> None:
    assert "recording" in {ep.name for ep in _plugin_entry_points()}


@pytest.mark.parametrize("entry_point", _plugin_entry_points(), ids=lambda ep: ep.name)
def test_every_plugin_option_is_documented_on_its_page(entry_point: object) -> None:
    name = entry_point.name  # type: ignore[attr-defined]
    page = DOCS / PLUGIN_PAGES.get(name, f"{name}.md")
    assert page.is_file(), f"plugin {name!r} has no page {page.relative_to(ROOT)}"
    text = page.read_text(encoding="utf-8")
    for option in entry_point.load().options:  # type: ignore[attr-defined]
        assert f"`{option.name}`" in text or f"{option.name} =" in text, (
            f"option {option.name!r} of plugin {name!r} is not documented in {page.name}"
        )


def test_the_example_plugin_shown_in_writing_plugins_is_the_real_one() -> None:
    source = (
        ROOT / "examples/plugins/hoopgw-example-denylist/hoopgw_example_denylist/__init__.py"
    ).read_text(encoding="utf-8")
    page = (DOCS / "writing-plugins.md").read_text(encoding="utf-8")
    excerpts = [b for b in _PYTHON_BLOCK.findall(page) if "class DenylistPlugin" in b]
    assert excerpts, "writing-plugins.md no longer shows the example plugin class"
    for excerpt in excerpts:
        assert excerpt in source, "writing-plugins.md shows code that differs from the example"


# -- (d) links ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, ...
            continue
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
        elif fragment and target.suffix == ".md":
            anchors = {_anchor(h) for h in _HEADING.findall(_FENCE.sub("", target.read_text()))}
            if fragment not in anchors:
                broken.append(link)
    assert not broken, f"{page.name} links to missing files or headings: {broken}"


def test_link_checker_sees_links() -> None:
    assert _links(DOCS / "hooks.md")[0] == "writing-plugins.md"
    assert _anchor("`client_command`") == "client_command"
    assert _anchor("Refused commands and transactions") == "refused-commands-and-transactions"
