"""The SQL corpora (``corpus.toml``) judged by guardrails under ``preset = "agent-readonly"``:
loading one, and the refusal classes every corpus covers. Loaded by ``tests/conftest.py``
(tests are no package); read it as ``sys.modules["hoopgw_tests_corpus"]``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hoopgw import sql

# The refusal classes (``class`` of the ``deny`` cases) every corpus covers: every class a
# dialect may report, and the refusal of a prepared statement the gateway does not know.
DENY_CLASSES = frozenset({*sql.DENY_CLASSES, "unknown-prepared"})


def load(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The cases of the corpus at ``path``: all, those to deny, those to allow."""
    cases: list[dict[str, Any]] = tomllib.loads(path.read_text())["case"]
    deny = [c for c in cases if c["expect"] == "deny"]
    allow = [c for c in cases if c["expect"] == "allow"]
    return cases, deny, allow
