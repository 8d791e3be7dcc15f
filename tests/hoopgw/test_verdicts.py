"""Tests for :mod:`hoopgw.verdicts`: precedence and order-independent combination."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given
from hypothesis import strategies as st

from hoopgw.verdicts import Allow, Block, Hold, combine

_names = st.sampled_from(["", "a", "b", "guard", "mask"])
_groups = st.lists(st.sampled_from(["dba", "ops", "sec"]), max_size=3).map(tuple)
_verdicts = st.one_of(
    st.none(),
    st.builds(Allow, reason=_names, plugin=_names),
    st.builds(Block, reason=_names, plugin=_names, rule=_names),
    st.builds(Hold, reason=_names, approvers=_groups, plugin=_names, rule=_names),
)


def test_all_abstain_gives_none() -> None:
    assert combine([]) is None
    assert combine([None, None]) is None


def test_block_beats_hold_allow_and_abstain() -> None:
    block = Block(reason="no", plugin="guard")
    result = combine([Allow(plugin="a"), Hold(reason="ask", plugin="h"), None, block])
    assert result == block


def test_hold_beats_allow_and_abstain() -> None:
    hold = Hold(reason="ask", approvers=("dba",), plugin="h")
    assert combine([Allow(plugin="a"), None, hold]) == hold


def test_allow_beats_abstain() -> None:
    allow = Allow(reason="ok", plugin="a")
    assert combine([None, allow, None]) == allow


def test_blocks_merge_reasons_plugins_and_rules() -> None:
    result = combine(
        [
            Block(reason="second", plugin="b", rule="r2"),
            Block(reason="first", plugin="a", rule="r1"),
        ]
    )
    assert result == Block(reason="first; second", plugin="a,b", rule="r1,r2")


def test_holds_merge_reasons_and_approver_groups() -> None:
    result = combine(
        [
            Hold(reason="risky", approvers=("ops", "dba"), plugin="b"),
            Hold(reason="large", approvers=("dba", "sec"), plugin="a", rule="big"),
        ]
    )
    assert result == Hold(
        reason="large; risky", approvers=("dba", "ops", "sec"), plugin="a,b", rule="big"
    )


def test_duplicate_reasons_are_merged_once() -> None:
    result = combine([Block(reason="same", plugin="a"), Block(reason="same", plugin="b")])
    assert isinstance(result, Block)
    assert result.reason == "same"


def test_allows_merge() -> None:
    result = combine([Allow(reason="y", plugin="b"), Allow(reason="x", plugin="a")])
    assert result == Allow(reason="x; y", plugin="a,b")


def _labelled(verdicts: list) -> list:
    """Give each answer its own plugin name, as the chain does (one answer per plugin)."""
    return [
        v if v is None else attrs.evolve(v, plugin=f"p{index}") for index, v in enumerate(verdicts)
    ]


@given(st.lists(_verdicts, max_size=6).map(_labelled))
def test_combination_does_not_depend_on_order(verdicts: list) -> None:
    expected = combine(verdicts)
    for permutation in itertools.islice(itertools.permutations(verdicts), 50):
        assert combine(permutation) == expected
    assert combine(reversed(verdicts)) == expected


@given(st.lists(_verdicts, max_size=6))
def test_result_is_the_strongest_kind_present(verdicts: list) -> None:
    result = combine(verdicts)
    kinds = {type(v) for v in verdicts if v is not None}
    if not kinds:
        assert result is None
    elif Block in kinds:
        assert isinstance(result, Block)
    elif Hold in kinds:
        assert isinstance(result, Hold)
    else:
        assert isinstance(result, Allow)


def test_merged_rules_do_not_depend_on_order_when_plugin_and_reason_tie() -> None:
    first = Block(reason="x", plugin="p", rule="r1")
    second = Block(reason="x", plugin="p", rule="r2")
    assert combine([first, second]) == combine([second, first])
