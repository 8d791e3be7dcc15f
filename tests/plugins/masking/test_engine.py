"""Tests for :mod:`hoopgw_masking.engine`: batches, overlaps, counts."""

from __future__ import annotations

from collections import Counter

import pytest
from hoopgw_masking import engine
from hoopgw_masking.detectors import BUILTIN_ENTITIES, builtin_detectors, regex_detector
from hoopgw_masking.engine import Masker
from hoopgw_masking.styles import Style


def masker(**styles: Style) -> Masker:
    return Masker(builtin_detectors(BUILTIN_ENTITIES), styles, Style("redact"))


def test_mask_replaces_every_entity_and_counts_them() -> None:
    counts: Counter[str] = Counter()
    text = "a@b.example wrote 4111 1111 1111 1111 and b@c.example"
    assert masker().mask(text, counts) == "[EMAIL] wrote [CREDIT_CARD] and [EMAIL]"
    assert counts == {"email": 2, "credit_card": 1}
    assert masker().mask("nothing here", counts) is None


def test_style_per_entity() -> None:
    counts: Counter[str] = Counter()
    result = masker(credit_card=Style("partial")).mask("4111 1111 1111 1111, x@y.example", counts)
    assert result == "**** **** **** 1111, [EMAIL]"


def test_mask_joined_equals_mask_of_each_value() -> None:
    texts = [
        "",
        "plain",
        "x@y.example",
        "4111111111111111",
        "call +44 20 7946 0018 or x@y.example",
        "536-22-1234",
        "edge@end.example",
    ]
    many: Counter[str] = Counter()
    one: Counter[str] = Counter()
    joined = masker().mask_joined("\x00".join(texts), many)
    assert joined is not None
    singles = [masker().mask(t, one) or t for t in texts]
    assert joined.split("\x00") == singles
    assert many == one
    assert masker().mask_joined("plain\x00text", many) is None


def test_values_are_never_joined_into_one_match() -> None:
    # Two halves of a card number in adjacent values are two values, not one card.
    assert masker().mask_joined("4111 1111\x001111 1111", Counter()) is None
    assert masker().mask_joined("a@b\x00.example", Counter()) is None


def test_overlapping_candidates_prefer_the_earlier_detector() -> None:
    counts: Counter[str] = Counter()
    # A card number also looks like a phone number; it is masked once, as a card.
    assert masker().mask("4111-1111-1111-1111", counts) == "[CREDIT_CARD]"
    assert counts == {"credit_card": 1}


def test_mask_digits() -> None:
    counts: Counter[str] = Counter()
    assert masker().mask_digits("4111111111111111", counts) is False  # redact has no digits
    assert masker(credit_card=Style("partial")).mask_digits("4111111111111111", counts) == (
        "0000000000001111"
    )
    assert masker().mask_digits("1234", counts) is None
    assert counts == {"credit_card": 2}


def test_custom_patterns_see_one_value_at_a_time() -> None:
    # Anchors and classes that would match NUL behave per value, as the operator wrote them.
    anchored = regex_detector("order_id", r"^ORD-\d+$")
    greedy = regex_detector("word", r"[^ ]*secret[^ ]*")
    custom = Masker([*builtin_detectors(BUILTIN_ENTITIES), anchored, greedy], {}, Style("redact"))
    counts: Counter[str] = Counter()
    joined = custom.mask_joined("ORD-1\x00ORD-2\x00x ORD-3\x00topsecret!\x00a@b.example", counts)
    assert joined is not None
    assert joined.split("\x00") == ["[ORDER_ID]", "[ORDER_ID]", "x ORD-3", "[WORD]", "[EMAIL]"]
    assert counts == {"order_id": 2, "word": 1, "email": 1}
    assert custom.mask("ORD-7", Counter()) == "[ORDER_ID]"


def test_repeated_candidates_are_remembered_and_still_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "MEMO_SIZE", 2)
    m = masker(phone=Style("partial"))
    text = "call 212-555-0143, 212-555-0143 or 212-555-0199; not 123-456-7890 0"
    first: Counter[str] = Counter()
    again: Counter[str] = Counter()
    expected = "call ***-***-0143, ***-***-0143 or ***-***-0199; not 123-456-7890 0"
    assert m.mask(text, first) == expected
    # The memo starts over when full: the answers stay the same.
    assert m.mask(text, again) == expected
    assert first == again == {"phone": 3}
    assert all(len(memo) <= 2 for memo in m._memos.values())
