"""Tests for :mod:`hoopgw_masking.styles`."""

from __future__ import annotations

import pytest
from hoopgw_masking.styles import Style


def test_redact_names_the_entity_only() -> None:
    style = Style("redact")
    assert style.text("credit_card", "4111 1111 1111 1111") == "[CREDIT_CARD]"
    assert style.digits("credit_card", "4111111111111111") is None


def test_partial_keeps_the_last_four_and_the_separators() -> None:
    style = Style("partial")
    assert style.text("credit_card", "4111 1111 1111 1234") == "**** **** **** 1234"
    assert style.text("ssn", "536-22-1234") == "***-**-1234"
    assert style.text("x", "abc") == "***"  # too short to keep anything
    assert style.digits("credit_card", "4111111111111234") == "0000000000001234"


def test_token_is_keyed_deterministic_and_type_valid() -> None:
    one, other = Style("token", key=b"k1"), Style("token", key=b"k2")
    token = one.text("email", "a@b.example")
    assert token.startswith("EMAIL_") and len(token) == len("EMAIL_") + 16
    assert one.text("email", "a@b.example") == token
    assert one.text("email", "c@b.example") != token
    assert other.text("email", "a@b.example") != token
    digits = one.digits("credit_card", "4111111111111111")
    assert digits is not None and digits.isdigit() and len(digits) == 16 and digits[0] != "0"
    assert digits == one.digits("credit_card", "4111111111111111")


def test_unknown_style_and_token_without_key_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        Style("hash")
    with pytest.raises(ValueError, match="needs a key"):
        Style("token")
