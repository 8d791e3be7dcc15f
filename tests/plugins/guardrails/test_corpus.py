"""The corpus (corpus.toml) under ``preset = "agent-readonly"``, and the property that comments
and whitespace never turn a refused statement into an allowed one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hoopgw_postgres.analysis import PostgresDialect
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopgw.plugin import load_plugin_class
from hoopgw.testing import ScriptedClient
from hoopgw.verdicts import Allow, Block

corpus: Any = sys.modules["hoopgw_tests_corpus"]
CORPUS, DENY, ALLOW = corpus.load(Path(__file__).parent / "corpus.toml")
DIALECT = PostgresDialect()


def _client() -> ScriptedClient:
    client = ScriptedClient.for_plugin(
        load_plugin_class("guardrails"), {"preset": "agent-readonly"}, name="guardrails"
    )
    assert client.connect() is None
    return client


def test_the_corpus_is_large_enough_and_covers_every_class() -> None:
    assert len(CORPUS) >= 200
    classes = {c["class"] for c in DENY}
    assert classes >= corpus.DENY_CLASSES


@pytest.mark.parametrize("case", DENY, ids=[c["sql"][:60] for c in DENY])
def test_must_deny(case: dict[str, Any]) -> None:
    verdict = _client().run(case["sql"], kind=case.get("kind", "query")).verdict
    assert isinstance(verdict, Block), verdict
    # Refused, and for the reason the case names (a statement may fall in several classes).
    classes = {c for s in DIALECT.analyze(case["sql"]).statements for c in s.classes}
    assert case["class"] in classes | {verdict.rule}, (classes, verdict)


@pytest.mark.parametrize("case", ALLOW, ids=[c["sql"][:60] for c in ALLOW])
def test_must_allow(case: dict[str, Any]) -> None:
    assert _client().run(case["sql"], kind=case.get("kind", "query")).verdict == Allow()


_NOISE = st.sampled_from([" ", "\t", "\n", "\r\n", "/**/", "/* x */", "/* a /* b */ c */", "--c\n"])


def _spaces_outside_quotes(sql: str) -> list[int]:
    """Positions of spaces that are not inside a quoted literal or identifier."""
    gaps, quote = [], ""
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = ""  # a doubled quote closes and reopens: same outcome
        elif ch in "'\"":
            quote = ch
        elif ch == " ":
            gaps.append(i)
    return gaps


def _insert_noise(sql: str, positions: list[int], noise: list[str]) -> str:
    """Insert noise at token boundaries: where whitespace already is, so no token is split."""
    gaps = _spaces_outside_quotes(sql)
    if not gaps:
        return sql + noise[0]
    out = list(sql)
    # Insert from the right end first, so earlier insertions do not shift later gaps.
    places = [
        (gaps[position % len(gaps)], text) for position, text in zip(positions, noise, strict=False)
    ]
    for place, text in sorted(places, key=lambda item: item[0], reverse=True):
        out.insert(place, text)
    return "".join(out)


PARSEABLE_DENY = [c for c in DENY if c["class"] != "unparseable" and "$$" not in c["sql"]]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    case=st.sampled_from(PARSEABLE_DENY),
    positions=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6),
    noise=st.lists(_NOISE, min_size=6, max_size=6),
)
def test_comments_and_whitespace_never_turn_a_denial_into_an_allow(
    case: dict[str, Any], positions: list[int], noise: list[str]
) -> None:
    sql = _insert_noise(case["sql"], positions, noise)
    verdict = _client().run(sql, kind=case.get("kind", "query")).verdict
    assert isinstance(verdict, Block), (sql, verdict)
