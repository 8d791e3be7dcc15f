"""The Hyperscan prefilter: it misses nothing the detectors find, so a batch masked through it
is byte for byte the batch masked row by row (the proof asked by issue 16), on the quality
corpus and on random values with personal data embedded."""

from __future__ import annotations

import itertools
import random
import string
from collections import Counter
from typing import Any

import pytest
from hoopgw_masking import MaskingPlugin
from hoopgw_masking.corpus import NEGATIVES, POSITIVES, adjacent, people
from hoopgw_masking.detectors import BUILTIN_ENTITIES, builtin_detectors, regex_detector
from hoopgw_masking.prefilter import ENCODINGS, PATTERNS, Prefilter
from hoopgw_masking.quality import _SENTENCES
from hoopgw_postgres import messages as m
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import Logger

from hoopgw.plugin import PluginContext, validate_options
from hoopgw.session import Column, Output
from hoopgw.testing import make_command, make_connection, make_session

SESSION = make_session()
TEXT = [Column(f"c{i}", type_oid=25) for i in range(7)]


def plugin(options: dict[str, Any] | None = None) -> MaskingPlugin:
    return MaskingPlugin(
        PluginContext(
            connection=make_connection(),
            options=validate_options(
                "masking", MaskingPlugin.options, options or {}, connection="test"
            ),
            audit=None,  # type: ignore[arg-type]
            log=Logger(),
            reactor=Clock(),
        )
    )


def batch(rows: list[list[bytes | None]]) -> tuple[bytes, list[int], list[bytes]]:
    wires = [m.encode_data_row(row) for row in rows]
    starts = list(itertools.accumulate((len(w) for w in wires[:-1]), initial=0))
    return b"".join(wires), starts, wires


def full(
    masking: MaskingPlugin, columns: list[Column], rows: list[list[bytes | None]]
) -> tuple[bytes, dict[str, int]]:
    """Every row decoded and masked: the path without a prefilter."""
    command = make_command("SELECT")
    decoded = [list(row) for row in rows]
    masking.server_rows(session=SESSION, command=command, columns=columns, rows=decoded)
    return b"".join(m.encode_data_row(row) for row in decoded), command.annotations.get(
        "masked", {}
    )


def picked(
    masking: MaskingPlugin, columns: list[Column], rows: list[list[bytes | None]]
) -> tuple[bytes, dict[str, int]]:
    """What the PostgreSQL relay does with ``server_row_messages``: only the rows it names are
    decoded and masked, the others keep their bytes."""
    command = make_command("SELECT")
    data, starts, wires = batch(rows)
    needed = masking.server_row_messages(
        session=SESSION, command=command, columns=columns, data=data, starts=starts,
        encoding="UTF8",
    )  # fmt: skip
    if needed is None:  # most rows are candidates: every row, as the relay does
        needed = list(range(len(rows)))
    decoded = [m.decode_data_row(wires[i][5:]) for i in needed]
    if decoded:
        masking.server_rows(session=SESSION, command=command, columns=columns, rows=decoded)
    for index, row in zip(needed, decoded, strict=True):
        wires[index] = m.encode_data_row(row)
    return b"".join(wires), command.annotations.get("masked", {})


def assert_same(masking: MaskingPlugin, columns: list[Column], rows: Any) -> None:
    assert picked(masking, columns, rows) == full(masking, columns, rows)


def rows_of(values: list[str], width: int = 7) -> list[list[bytes | None]]:
    cells: list[bytes | None] = [v.encode() for v in values]
    cells += [None] * (-len(cells) % width)
    return [cells[i : i + width] for i in range(0, len(cells), width)]


# -- the quality corpus ------------------------------------------------------------------------


def variants(value: str, index: int) -> list[str]:
    """``value`` in other cases, and with one character behind a JSON or an XML escape."""
    at = index % len(value)
    code = ord(value[at])
    return [
        value.lower(),
        value.upper(),
        value.swapcase(),
        f"{value[:at]}\\u{code:04x}{value[at + 1 :]}",
        f"{value[:at]}&#{code};{value[at + 1 :]}",
        f"{value[:at]}&#x{code:x};{value[at + 1 :]}",
    ]


def corpus(count: int, seed: int = 7) -> list[str]:
    """The quality corpus's values: positives in sentences and between punctuation (and in
    other cases and behind escapes), the hard negatives, and fake people's fields."""
    rng = random.Random(seed)
    values = []
    for entity, generate in POSITIVES.items():
        for index in range(count):
            value = generate(rng)
            values.append(_SENTENCES[index % len(_SENTENCES)].format(value))
            values.append(adjacent(rng, entity, value))
            values += variants(value, index)
    for generate in NEGATIVES.values():
        values += [generate(rng) for _ in range(count)]
    for person in people(count // 4):
        values += list(person.values())
    return values


@pytest.mark.parametrize("options", [{}, {"styles": {"email": "partial", "phone": "partial"}}])
def test_on_the_quality_corpus_the_prefilter_misses_nothing(options: dict[str, Any]) -> None:
    masking = plugin(options)
    assert masking.prefilter is not None
    values = corpus(300)
    # Recall: every value the detectors change, the prefilter flags.
    for value in values:
        found = masking.masker.mask(value, Counter())
        escaped = "\\u" in value or "&#" in value
        if found is not None or escaped:
            data, starts, _ = batch([[value.encode()]])
            assert masking.prefilter.rows(data, starts) in ([0], None), value
    # Output: the same bytes and counts, for the corpus in rows of seven and shuffled with
    # plain filler rows (which the prefilter leaves undecoded).
    rng = random.Random(3)
    filler = ["order shipped", "no comment", "Paris", "ok", "pending review", "n/a", ""]
    mixed = values + filler * (len(values) // 7)
    rng.shuffle(mixed)
    for start in range(0, len(mixed), 700):
        assert_same(masking, TEXT, rows_of(mixed[start : start + 700]))


# -- random values with personal data embedded -------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + " .-()+#:@/_=\\&;,xé\u00e9\u4e2d\t"


@st.composite
def values(draw: st.DrawFn) -> str:
    """Random text, and pieces of every entity's forms cut and joined in random places."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = draw(st.lists(st.text(alphabet=_ALPHABET, max_size=12), min_size=1, max_size=4))
    pieces = []
    for part in parts:
        pieces.append(part)
        if draw(st.booleans()):
            entity = draw(st.sampled_from(sorted(POSITIVES)))
            value = POSITIVES[entity](rng)
            cut = draw(st.integers(0, 3))
            value = value[cut:] if draw(st.booleans()) else value[: len(value) - cut]
            if value and draw(st.booleans()):
                value = draw(st.sampled_from(variants(value, draw(st.integers(0, 99)))))
            pieces.append(value)
    return "".join(pieces)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values(), min_size=1, max_size=28))
def test_random_values_with_embedded_forms_mask_the_same(texts: list[str]) -> None:
    assert_same(MASKING, TEXT, rows_of(texts))


MASKING = plugin()
NUMBERS = [Column("t", type_oid=25), Column("i", type_oid=20), Column("n", type_oid=1700)]


@st.composite
def numbers(draw: st.DrawFn) -> list[bytes | None]:
    """A row of a text, an int8 and a numeric value in text format, the numbers sometimes card
    numbers (signed, with a fraction)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    row: list[bytes | None] = [draw(values()).encode()]
    for _ in range(2):
        kind = draw(st.sampled_from(["card", "digits", "null"]))
        if kind == "null":
            row.append(None)
            continue
        if kind == "card":
            digits = POSITIVES["credit_card"](rng).replace(" ", "").replace("-", "")
        else:
            digits = str(draw(st.integers(0, 10**20)))
        sign = draw(st.sampled_from(["", "-"]))
        fraction = draw(st.sampled_from(["", ".5", ".00"]))
        row.append(f"{sign}{digits}{fraction}".encode())
    row[1] = None if row[1] is None else row[1].split(b".")[0]  # int8 has no fraction
    return row


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(numbers(), min_size=1, max_size=30))
def test_numbers_in_text_format_mask_the_same(rows: list[list[bytes | None]]) -> None:
    assert_same(MASKING, NUMBERS, rows)


# -- when it declines --------------------------------------------------------------------------


def test_every_builtin_entity_has_byte_patterns() -> None:
    assert set(PATTERNS) == set(BUILTIN_ENTITIES)
    assert Prefilter.of(builtin_detectors(BUILTIN_ENTITIES)) is not None


def test_custom_patterns_and_deny_words_have_no_prefilter() -> None:
    assert Prefilter.of([*builtin_detectors(["email"]), regex_detector("x", "z+")]) is None
    assert plugin({"deny_words": ["Projekt"]}).prefilter is None
    assert plugin({"patterns": {"ticket": "T-[0-9]+"}}).prefilter is None


def call(masking: MaskingPlugin, columns: list[Column], encoding: str = "UTF8") -> Any:
    data, starts, _ = batch([[b"plain"] * len(columns)] * 3)
    return masking.server_row_messages(
        session=SESSION, command=make_command("SELECT"), columns=columns, data=data,
        starts=starts, encoding=encoding,
    )  # fmt: skip


def test_rows_without_candidates_are_not_needed() -> None:
    assert call(MASKING, TEXT) == []
    assert all(call(MASKING, TEXT, encoding) == [] for encoding in ENCODINGS)


@pytest.mark.parametrize("encoding", ["", "UTF16", "SJIS", "utf-16-le", "ucs2"])
def test_an_encoding_the_patterns_do_not_cover_needs_every_row(encoding: str) -> None:
    assert call(MASKING, TEXT, encoding) is None


@pytest.mark.parametrize(
    ("type_oid", "fmt"),
    [
        (114, 0),  # json: escapes, exponents
        (3802, 1),
        (20, 1),  # int8 in binary
        (1700, 1),
        (701, 0),  # float8: 4.111111111111111e+15
        (790, 0),  # money: 4,111,111,111,111,111.00
        (1009, 0),  # text[]
        (17, 0),  # bytea: \x hex
        (869, 0),  # inet
        (16386, 1),  # a type the gateway does not know, in binary
    ],
)
def test_values_the_byte_patterns_do_not_cover_need_every_row(type_oid: int, fmt: int) -> None:
    columns = [Column("t", type_oid=25), Column("x", type_oid=type_oid, format=fmt)]
    assert call(plugin(), columns) is None


@pytest.mark.parametrize(("type_oid", "fmt"), [(23, 1), (1114, 0), (20, 0), (1700, 0), (16386, 0)])
def test_text_numbers_in_digits_and_values_without_text_leave_it_on(
    type_oid: int, fmt: int
) -> None:
    columns = [Column("t", type_oid=25), Column("n", type_oid=type_oid, format=fmt)]
    assert call(plugin(), columns) == []


def test_mysql_numbers_in_digits_are_covered_and_doubles_are_not() -> None:
    masking = MaskingPlugin(
        PluginContext(
            connection=make_connection(protocol="mysql"),
            options=validate_options("masking", MaskingPlugin.options, {}, connection="test"),
            audit=None,  # type: ignore[arg-type]
            log=Logger(),
            reactor=Clock(),
        )
    )
    text = Column("t", type_name="VAR_STRING")
    for name in ("LONGLONG", "NEWDECIMAL", "LONG"):
        assert call(masking, [text, Column("n", type_name=name)], "utf8mb4") == [], name
    assert call(masking, [text, Column("n", type_name="DOUBLE")], "utf8mb4") is None
    assert call(masking, [text, Column("n", type_name="JSON")], "utf8mb4") is None
    assert call(masking, [text, Column("n", type_name="LONGLONG", format=1)], "utf8mb4") is None


def test_a_row_is_named_once_whatever_it_holds_and_a_match_across_rows_only_adds() -> None:
    prefilter = Prefilter(PATTERNS)
    rows = [
        [b"mail ann@example.com and 4111 1111 1111 1111", b"536-22-1234"],
        [b"plain", b"text"],
        [b"a.b@c", None],
        [b"x", b"plain"],
        [b"ends with 12-555", None],
        [b"0100 starts the next", None],
    ]
    data, starts, _ = batch(rows)
    assert prefilter.rows(data, starts) == [0, 2]
    # Without the row framing between them, digits of two rows could run together: a row is
    # then added, never lost.
    assert prefilter.rows(b"212-55" + b"5-0100", [0, 6]) == [1]


def test_a_batch_of_candidates_is_left_to_the_detectors() -> None:
    prefilter = Prefilter(PATTERNS)
    data, starts, _ = batch([[b"4111 1111 1111 1111 and 4111 1111 1111 1111"]] * 20)
    assert prefilter.rows(data, starts) is None
    assert call(MASKING, TEXT) == []
    data, starts, _ = batch([[b"card 4111 1111 1111 1111"]] + [[b"plain"]] * 9)
    assert prefilter.rows(data, starts) == [0]


PHONES = [
    "00442079460958",
    "call 00442079460958 now",
    "011442079460958",
    "0014155552671",
    "00 44 20 7946 0958",
    "+442079460958",
    "(212) 555-0100",
    "212 555 0100 x 12",
]


@pytest.mark.parametrize("value", PHONES)
def test_every_phone_shape_is_a_candidate_of_the_phone_patterns_alone(value: str) -> None:
    assert MASKING.masker.mask(value, Counter()) is not None
    data, starts, _ = batch([[value.encode()]])
    assert Prefilter(["phone"]).rows(data, starts) == [0]


@pytest.mark.parametrize("value", ["1234567", "12345.67", "-987654321", "2024", "ORD-004711"])
def test_bare_numbers_are_not_candidates(value: str) -> None:
    data, starts, _ = batch([[value.encode(), b"plain"]])
    assert Prefilter(PATTERNS).rows(data, starts) == []


# -- statement text for the audit store (audit_text) --------------------------------------------

WITHOUT_PREFILTER = plugin({"prefilter": False})


def recorded(masking: MaskingPlugin, text: str) -> tuple[str, dict[str, int]]:
    """What ``audit_text`` makes of a statement ``text``, and the counts it annotates."""
    command = make_command(text)
    output = Output("command", {"text": text})
    masking.audit_text(session=SESSION, command=command, output=output)
    return output.fields["text"], dict(command.annotations.get("masked", {}))


def test_statement_text_is_recorded_the_same_with_the_prefilter_on_the_corpus() -> None:
    for value in corpus(100):
        text = f"INSERT INTO notes VALUES ('{value}')"
        assert recorded(MASKING, text) == recorded(WITHOUT_PREFILTER, text), text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values(), min_size=1, max_size=6))
def test_random_statement_text_is_recorded_the_same_with_the_prefilter(texts: list[str]) -> None:
    text = "SELECT " + ", ".join(f"'{value}'" for value in texts)
    assert recorded(MASKING, text) == recorded(WITHOUT_PREFILTER, text)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "SELECT 1",
        "UPDATE t SET n = n + 1 WHERE id = 4711",
    ],
)
def test_a_statement_without_candidates_is_not_scanned_by_the_detectors(text: str) -> None:
    assert MASKING.prefilter is not None and not MASKING.prefilter.may_hold(text)
    assert recorded(MASKING, text) == (text, {})


def test_a_lone_surrogate_leaves_the_statement_to_the_detectors() -> None:
    assert MASKING.prefilter is not None and MASKING.prefilter.may_hold("SELECT '\ud800'")
