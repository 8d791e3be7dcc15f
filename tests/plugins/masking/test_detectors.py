"""Tests for :mod:`hoopgw_masking.detectors`: each entity's candidates and validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hoopgw_masking.detectors import (
    BUILTIN_ENTITIES,
    builtin_detectors,
    check_regions,
    deny_list_detector,
    luhn_valid,
    regex_detector,
    valid_card_digits,
    valid_iban,
    valid_phone,
)
from hoopgw_masking.engine import Masker
from hoopgw_masking.styles import Style


def masked(text: str, *, regions: tuple[str, ...] = ("US", "GB")) -> str | None:
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES, phone_regions=regions), {}, Style("redact"))
    return masker.mask(text, Counter())


def found(text: str) -> list[tuple[str, str]]:
    """``(entity, matched text)`` for each entity found in ``text``: every detector alone."""
    result = []
    for detector in builtin_detectors(BUILTIN_ENTITIES, phone_regions=("US", "GB")):
        for match in detector.pattern.finditer(text):
            span = detector.validate(match)
            if span is not None:
                result.append((detector.entity, text[span[0] : span[1]]))
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+x@mail.example.org now", [("email", "jane.doe+x@mail.example.org")]),
        ("call (212) 736-5000 today", [("phone", "(212) 736-5000")]),
        ("+44 20 7946 0018", [("phone", "+44 20 7946 0018")]),
        ("001-212-736-5000x123", [("phone", "001-212-736-5000x123")]),
        ("020 7946 0018", [("phone", "020 7946 0018")]),
        ("ssn 536-22-1234.", [("ssn", "536-22-1234")]),
        ("card 4111 1111 1111 1111", [("credit_card", "4111 1111 1111 1111")]),
        ("card 4111-1111-1111-1111", [("credit_card", "4111-1111-1111-1111")]),
        ("amex 378282246310005", [("credit_card", "378282246310005")]),
        ("DE89 3704 0044 0532 0130 00", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
        ("from 192.168.10.1:5432", [("ip", "192.168.10.1")]),
        ("v6 2001:db8::8a2e:370:7334 end", [("ip", "2001:db8::8a2e:370:7334")]),
        ("key AKIAIOSFODNN7EXAMPLE", [("access_key", "AKIAIOSFODNN7EXAMPLE")]),
        ("gh ghp_" + "a" * 36, [("access_key", "ghp_" + "a" * 36)]),
        ("Authorization: Bearer abc.def-ghi_jkl/mno", [("bearer", "abc.def-ghi_jkl/mno")]),
    ],
)
def test_positives(text: str, expected: list[tuple[str, str]]) -> None:
    [(entity, value)] = expected
    assert entity in {e for e, _ in found(text)}
    assert masked(text) == text.replace(value, f"[{entity.upper()}]")


@pytest.mark.parametrize(
    "text",
    [
        "at 2024-01-15 10:30:00 UTC",
        "order ORD-2024-000123 shipped",
        "card 4111 1111 1111 1112",  # Luhn fails
        "ssn 000-12-3456",
        "ssn 666-12-3456",
        "ssn 912-12-3456",
        "ssn 123-00-4567",
        "ssn 123-45-0000",
        "ssn 078-05-1120",
        "DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "version 1.2.3",
        "256.1.1.1",
        "time 10:30:00",
        "MAC 00:1A:2B:3C:4D:5E",
        "AKIAIOSFODNN7EXAMPL",  # one character short
        "user@localhost",
        "random 8274615",
    ],
)
def test_hard_negatives(text: str) -> None:
    assert masked(text) is None


def test_private_key_block_whole_and_truncated() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK==\n-----END RSA PRIVATE KEY-----"
    assert masked(f"key:\n{block}\nbye") == "key:\n[PRIVATE_KEY]\nbye"
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    assert masked(truncated) == "[PRIVATE_KEY]"


def test_jwt_needs_a_json_header() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
    assert masked(f"token={jwt};") == "token=[JWT];"
    assert masked("eyJnotjson.eyJzdWIiOiIxMjM0In0.sig") is None


def test_phone_regions_decide_national_numbers() -> None:
    assert valid_phone("020 7946 0018", ["GB"])
    assert not valid_phone("020 7946 0018", ["US"])
    assert not valid_phone("(123) 456-7890", ["US"])  # no US area code starts with 1
    assert valid_phone("+44 20 7946 0018", ["US"])  # international: its own country's plan
    assert valid_phone("(212) 736-5000 x12", ["US"])
    assert check_regions(["US", "XX"]) == "unknown phone regions: XX"
    assert check_regions(["DE"]) is None


def test_checksums() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert valid_card_digits("4111111111111111")
    assert not valid_card_digits("9111111111111116")  # no scheme starts with 9
    assert valid_iban("GB82WEST12345698765432")
    assert not valid_iban("GB82WEST1234569876543")  # wrong length for GB


def test_custom_regex_and_deny_list() -> None:
    order = regex_detector("order_id", r"ORD-\d{4}-\d{6}")
    deny = deny_list_detector(["Project Falcon", "falcon"])
    masker = Masker([order, deny], {}, Style("redact"))
    counts: Counter[str] = Counter()
    assert masker.mask("ORD-2024-000123 for project falcon", counts) == "[ORDER_ID] for [DENY_LIST]"
    assert masker.mask("falconry is fine", counts) is None
    assert counts == {"order_id": 1, "deny_list": 1}
    with pytest.raises(ValueError, match="empty string"):
        regex_detector("bad", r"\d*")
    with pytest.raises(ValueError, match="invalid regular expression"):
        regex_detector("bad", r"(")


def test_no_pattern_matches_nul() -> None:
    for detector in builtin_detectors(BUILTIN_ENTITIES):
        for match in detector.pattern.finditer("a@b.co\x00m 4111\x001111\x00" * 3):
            assert "\x00" not in match.group()


def _luhn_by_the_book(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def test_the_table_driven_luhn_agrees_with_the_definition() -> None:
    rng = random.Random(3)
    numbers = [
        "0",
        "18",
        "79927398713",
        *("".join(rng.choices("0123456789", k=rng.randint(1, 19))) for _ in range(5000)),
    ]
    for digits in numbers:
        assert luhn_valid(digits) == _luhn_by_the_book(digits), digits


def test_patterns_read_ascii_digits_only() -> None:
    # Arabic-Indic digits are no card number (and Luhn reads ASCII digits).
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES), {}, Style("redact"))
    assert masker.mask("٤١١١١١١١١١١١١١١١", Counter()) is None
    # A non-ASCII letter next to a value is no word character: the value is found.
    assert masker.mask("éann@example.comé", Counter()) == "é[EMAIL]é"


# One value of each entity, and every kind of character that can stand next to a value without
# being part of it: ASCII punctuation, "_", letters (ASCII and not), spaces and controls.
ADJACENT_VALUES = [
    ("email", "john@example.com"),
    ("phone", "+1 212-736-5000"),
    ("phone", "(212) 736-5000"),
    ("phone", "212-736-5000"),
    ("ssn", "536-22-1234"),
    ("credit_card", "4111111111111111"),
    ("credit_card", "4111-1111-1111-1111"),
    ("credit_card", "4111 1111 1111 1111"),
    ("iban", "GB82WEST12345698765432"),
    ("ip", "192.168.10.1"),
    ("ip", "2001:db8::8a2e:370:7334"),
    ("access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"),
]
NEIGHBOURS = [c for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" if c not in "@"]
NEIGHBOURS += ["x", "Q", "é", "\u00a0", " ", "\t", "\n", "--", "__", "x_", "_y"]


@pytest.mark.parametrize(("entity", "value"), ADJACENT_VALUES)
def test_punctuation_and_letters_next_to_a_value_do_not_hide_it(entity: str, value: str) -> None:
    # x_john@example.com_y, --4111111111111111--, ssn-536-22-1234-: the value is still found,
    # whatever stands on either side (a digit or hex letter may continue a number: not here).
    leaked = []
    for left in NEIGHBOURS:
        for right in NEIGHBOURS:
            if entity == "ip" and ":" in value and ":" in left + right:
                continue  # "::" is IPv6 syntax: the address then reads differently
            if entity == "access_key" and right[0].isalnum():
                continue  # the key's own alphabet
            text = f"{left}{value}{right}"
            result = masked(text)
            if result is None or value in result or f"[{entity.upper()}]" not in result:
                leaked.append(text)
    assert leaked == []


def test_digits_next_to_a_card_group_do_not_hide_it() -> None:
    # A card next to other digit groups: the groups that make the card number are masked.
    assert masked("ref 1234-4111-1111-1111-1111") == "ref 1234-[CREDIT_CARD]"
    assert masked("4111 1111 1111 1111 2 times") == "[CREDIT_CARD] 2 times"
    assert masked("4111111111111111.50") == "[CREDIT_CARD].50"
    # Two cards in one run of groups: both, and what lies between.
    assert masked("4111 1111 1111 1111 5500 0000 0000 0004") == "[CREDIT_CARD]"
    # A digit run longer than any card is no card (a 20-digit reference).
    assert masked("41111111111111110000") is None


def test_a_plus_sign_that_is_no_country_code() -> None:
    assert masked("+212-736-5000") == "+[PHONE]"  # not a valid +212 (Morocco) number
    assert masked("+4111111111111111") == "+[CREDIT_CARD]"
    assert masked("+49 1512 3452646") == "[PHONE]"  # a valid German mobile: a phone


def test_deny_words_end_at_underscores() -> None:
    deny = deny_list_detector(["falcon"])
    masker = Masker([deny], {}, Style("redact"))
    assert masker.mask("x_falcon_y", Counter()) == "x_[DENY_LIST]_y"
    assert masker.mask("falconry", Counter()) is None
