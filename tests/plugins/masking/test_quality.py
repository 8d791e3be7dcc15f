"""The detection-quality goals, measured on the generated corpus (docs/masking.md has the
figures): recall >= 99.5 % per entity, false positives <= 1 % over the hard negatives."""

from __future__ import annotations

import pytest
from hoopgw_masking.quality import (
    FALSE_POSITIVE_GOAL,
    RECALL_GOAL,
    Figures,
    main,
    measure,
    report,
)


@pytest.fixture(scope="module")
def figures() -> Figures:
    return measure(1000)


def test_recall_of_every_entity(figures: Figures) -> None:
    for entity, (found, total) in figures.recall.items():
        assert total >= 1000
        assert found / total >= RECALL_GOAL, entity


def test_false_positives_on_hard_negatives(figures: Figures) -> None:
    assert sum(total for _, total in figures.false_positives.values()) >= 5000
    assert figures.negatives_rate <= FALSE_POSITIVE_GOAL
    assert figures.meets_goals()


def test_report_and_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "50"]) in (0, 1)
    out = capsys.readouterr().out
    assert "| email (recall) | 50 |" in out
    assert "all negatives" in report(measure(20))


def test_values_next_to_punctuation_are_measured(figures: Figures) -> None:
    # Every entity is measured again between punctuation, letters and spaces (x_<v>_y, --<v>--).
    for entity in ("email", "phone", "ssn", "credit_card", "iban", "ip", "jwt", "bearer"):
        found, total = figures.recall[f"{entity} next to punctuation"]
        assert found / total >= RECALL_GOAL, entity
    assert "digit_groups" in figures.false_positives
