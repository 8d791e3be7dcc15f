"""Tests for hoopgw.evidence.controls: the control map is data, checked with errors that name
the entry (what the map fills in is compared with the map as it was code in test_pack.py)."""

from __future__ import annotations

import pytest

from hoopgw.evidence.controls import FACTS, LIST_FACTS, ControlMapError, control_map, load_map

GOOD = """
[[control]]
id = "AU-2"
title = "Event logging"
evidence = ["Recorded: {recorded}.", "{transport}"]
files = ["summary.json", "{policy_files}"]
"""


def test_the_shipped_map_names_the_controls_in_order() -> None:
    assert [c.id for c in control_map()] == [
        "AU-2", "AU-3", "AU-9", "AU-12", "AC-2", "AC-3", "AC-6", "SC-7", "SC-8", "SI-4", "IR-4"
    ]  # fmt: skip


def test_a_good_map_loads() -> None:
    [control] = load_map(GOOD)
    assert control.evidence == ("Recorded: {recorded}.", "{transport}")
    assert control.files == ("summary.json", "{policy_files}")


def test_facts_and_list_facts_do_not_overlap() -> None:
    assert not set(FACTS) & set(LIST_FACTS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[control]", "controls.toml: not valid TOML"),
        ("x = 1", "controls.toml: holds only [[control]] tables"),
        ("control = []", "controls.toml: no control"),
        ("control = [1]", "controls.toml: control #1: must be a table"),
        (
            GOOD.replace('title = "Event logging"\n', ""),
            "control AU-2: needs exactly id, title, evidence and files",
        ),
        (GOOD + GOOD, "control AU-2: id must be a new, non-empty string"),
        (GOOD.replace('id = "AU-2"', 'id = ""'), "control #1: id must be a new, non-empty string"),
        (
            GOOD.replace('"Recorded: {recorded}."', '"Recorded: {recordd}."'),
            "control AU-2: evidence 1: unknown fact {recordd}",
        ),
        (
            GOOD.replace('"{transport}"', '"TLS: {transport}"'),
            "control AU-2: evidence 2: {transport} is a list: it stands alone in its entry",
        ),
        (
            GOOD.replace('"summary.json"', '"{records:>5}"'),
            "control AU-2: files 1: {records} takes no format or conversion",
        ),
        (GOOD.replace('"summary.json"', '"a { b"'), "control AU-2: files 1: "),
        (
            GOOD.replace('files = ["summary.json", "{policy_files}"]', "files = []"),
            "control AU-2: files must be a non-empty list",
        ),
        (GOOD.replace('"summary.json"', "3"), "control AU-2: files 1: must be a non-empty string"),
    ],
)
def test_a_wrong_map_is_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(ControlMapError) as raised:
        load_map(text)
    assert message in str(raised.value)
