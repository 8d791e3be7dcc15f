"""The corpus generators produce what their labels say, independently of the detectors."""

from __future__ import annotations

import random

import phonenumbers
from hoopgw_masking.corpus import (
    CONTINUES,
    NEGATIVES,
    POSITIVES,
    adjacent,
    card,
    iban,
    invalid_card,
    people,
    phone,
)
from hoopgw_masking.detectors import luhn_valid, valid_iban


def test_positives_are_valid_by_construction() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert luhn_valid(card(rng).replace(" ", "").replace("-", ""))
        assert valid_iban(iban(rng).replace(" ", ""))
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone(rng), "US"))
        assert not luhn_valid(invalid_card(rng))


def test_generators_are_deterministic() -> None:
    for generate in (*POSITIVES.values(), *NEGATIVES.values()):
        assert generate(random.Random(3)) == generate(random.Random(3))
    assert people(3) == people(3)
    assert people(3, seed=5) != people(3)


def test_people_embed_their_identifiers_in_notes() -> None:
    [person] = people(1)
    assert person["email"] in person["note"] and person["card"] in person["note"]


def test_neighbours_never_continue_the_value() -> None:
    rng = random.Random(2)
    for entity, continues in CONTINUES.items():
        for _ in range(100):
            text = adjacent(rng, entity, "VALUE")
            left, _, right = text.partition("VALUE")
            assert 1 <= len(left) <= 2 and 1 <= len(right) <= 2
            assert not set(left + right) & set(continues)
