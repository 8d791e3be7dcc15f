"""The layout rule (docs/development.md, Layout), checked on the source tree.

- a top-level module of ``hoopgw/`` is public, a folder is the gateway's own machinery, except
  the public packages (:data:`PUBLIC_PACKAGES`), imported by their name only: protocol packages
  and plugins import only public modules of ``hoopgw``, and a public package's own modules
  import only those too;
- plugins never import a protocol package, and a protocol never imports another one (or a
  plugin);
- no import cycle among the modules of ``hoopgw`` (imports under ``TYPE_CHECKING`` excepted);
- production code imports neither the tests nor ``hoopgw.testing``;
- no core module over 600 lines, at most :data:`MAX_TOP_LEVEL` modules (public packages
  counted) at the top of ``hoopgw/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "hoopgw"
MAX_LINES = 600
MAX_TOP_LEVEL = 20
OVER_LIMIT: dict[str, str] = {}
"""Core modules still over the limit, and why; each must shrink, and then leave this list."""
PUBLIC_PACKAGES = {"shell"}
"""Folders of ``hoopgw/`` that are public, as a whole: what they export from ``__init__`` is
imported as ``hoopgw.<package>``; their modules are their own (the shell lexer, parser and
line judge are one public thing, too big for one module)."""

PUBLIC = {path.stem for path in CORE.glob("*.py")} | PUBLIC_PACKAGES
PROTOCOL_PACKAGES = {path.name for path in ROOT.glob("protocols/*/hoopgw_*") if path.is_dir()}
PLUGIN_PACKAGES = {path.name for path in ROOT.glob("plugins/*/hoopgw_*") if path.is_dir()}


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "build" not in p.relative_to(ROOT).parts)


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    if relative.parts[0] in ("protocols", "plugins"):
        relative = relative.relative_to(*relative.parts[:2])
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """``(module, line)`` of every import of ``path`` outside ``if TYPE_CHECKING:`` blocks; a
    ``from X import name`` yields ``X.name`` (a submodule or an attribute of ``X``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for body in node.body for child in ast.walk(body))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _core_module(name: str) -> str | None:
    """The module of ``hoopgw`` that importing ``name`` loads (the longest existing prefix)."""
    parts = name.split(".")
    while parts:
        candidate = CORE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


@pytest.mark.parametrize(
    "path",
    [*_sources(ROOT / "protocols"), *_sources(ROOT / "plugins")],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_protocols_and_plugins_import_only_public_core_modules(path: Path) -> None:
    own = path.relative_to(ROOT).parts[2] if len(path.relative_to(ROOT).parts) > 2 else ""
    kind = path.relative_to(ROOT).parts[0]
    for name, line in _imports(path):
        top = name.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line} imports {name}"
        if top == "hoopgw":
            module = _core_module(name) or ""
            assert module.count(".") <= 1 and module.split(".")[-1] in PUBLIC | {"hoopgw"}, (
                f"{where}: only public (top-level) modules of hoopgw"
            )
            assert module != "hoopgw.testing", f"{where}: test helpers are for tests"
        elif top in PROTOCOL_PACKAGES and top != own:
            pytest.fail(f"{where}: a {kind[:-1]} never imports a protocol package")
        elif top in PLUGIN_PACKAGES and top != own:
            pytest.fail(f"{where}: a {kind[:-1]} never imports a plugin package")
        assert top != "tests", f"{where}: production code never imports the tests"


@pytest.mark.parametrize("package", sorted(PUBLIC_PACKAGES))
def test_public_packages_import_only_public_modules(package: str) -> None:
    assert (CORE / package / "__init__.py").is_file(), f"hoopgw/{package} is not a package"
    for path in _sources(CORE / package):
        for name, line in _imports(path):
            if name.split(".")[0] != "hoopgw":
                continue
            module = _core_module(name) or ""
            own = module == f"hoopgw.{package}" or module.startswith(f"hoopgw.{package}.")
            assert own or (module.count(".") <= 1 and module.split(".")[-1] in PUBLIC), (
                f"{path.relative_to(ROOT)}:{line} imports {name}: a public package imports"
                " only public modules"
            )


def test_the_core_imports_neither_the_tests_nor_its_test_helpers() -> None:
    for path in _sources(CORE):
        for name, line in _imports(path):
            assert name.split(".")[0] != "tests", f"{path.relative_to(ROOT)}:{line}"
            if path.name != "testing.py":
                assert _core_module(name) != "hoopgw.testing", f"{path.relative_to(ROOT)}:{line}"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources(CORE):
        source = _module_name(path)
        if path.name == "__init__.py" and source.split(".")[-1] not in PUBLIC_PACKAGES:
            continue  # machinery's package docstrings: what they import is not a module's
        targets = graph.setdefault(source, set())
        for name, _ in _imports(path):
            module = _core_module(name) if name.startswith("hoopgw.") else None
            if module and module != source and _is_module(module):
                targets.add(module)
    return graph


def _is_module(name: str) -> bool:
    """A module of the graph: a ``.py`` file, or a public package (its ``__init__``)."""
    path = CORE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (
        name.count(".") == 1 and name.split(".")[-1] in PUBLIC_PACKAGES
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_the_core() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_core_module_is_over_the_limit() -> None:
    over = {
        str(path.relative_to(ROOT))
        for path in _sources(CORE)
        if len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES
    }
    assert over == set(OVER_LIMIT)


def test_few_modules_at_the_top() -> None:
    assert len(list(CORE.glob("*.py"))) + len(PUBLIC_PACKAGES) <= MAX_TOP_LEVEL
