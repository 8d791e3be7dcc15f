"""Detection quality on a labelled, generated corpus: recall per entity, false positives per
kind of hard negative. Run it as ``.venv/bin/python -m hoopgw_masking.quality``.

Each positive is checked bare and inside a sentence (alternately); it counts as found when the
masker replaces it entirely, as its own entity. Each is checked again next to punctuation,
letters and spaces (``x_<value>_y``, ``--<value>--``: :func:`~hoopgw_masking.corpus.adjacent`),
where it counts as found when neither the value nor its first or last five characters remain
and its entity was masked. A negative counts as a false positive when anything in it is
masked.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

import attrs

from hoopgw_masking.corpus import NEGATIVES, POSITIVES, adjacent
from hoopgw_masking.detectors import BUILTIN_ENTITIES, builtin_detectors
from hoopgw_masking.engine import Masker
from hoopgw_masking.styles import Style

RECALL_GOAL = 0.995
FALSE_POSITIVE_GOAL = 0.01
_SENTENCES = ("{} ", "Contact: {}.", "see ({}) and more", "value={};next")


@attrs.frozen(kw_only=True)
class Figures:
    """The measured rates."""

    recall: dict[str, tuple[int, int]]
    """Entity -> (found, total)."""
    false_positives: dict[str, tuple[int, int]]
    """Negative kind -> (masked, total)."""

    @property
    def negatives_rate(self) -> float:
        masked = sum(m for m, _ in self.false_positives.values())
        return masked / max(1, sum(t for _, t in self.false_positives.values()))

    def meets_goals(self) -> bool:
        """Recall >= 99.5 % for every entity and <= 1 % false positives over the negatives."""
        return (
            all(f / t >= RECALL_GOAL for f, t in self.recall.values())
            and self.negatives_rate <= FALSE_POSITIVE_GOAL
        )


def measure(count: int = 1000, *, seed: int = 7) -> Figures:
    """Generate ``count`` values per entity and per negative kind, and measure."""
    masker = Masker(builtin_detectors(BUILTIN_ENTITIES, phone_regions=("US",)), {}, Style("redact"))
    rng = random.Random(seed)
    recall: dict[str, tuple[int, int]] = {}
    for entity, generate in POSITIVES.items():
        found = 0
        # A bearer token is masked after its "Bearer " scheme word.
        expected = "Bearer [BEARER]" if entity == "bearer" else f"[{entity.upper()}]"
        for index in range(count):
            value = generate(rng)
            template = _SENTENCES[index % len(_SENTENCES)]
            masked = masker.mask(template.format(value), Counter())
            if masked == template.format(expected):
                found += 1
        recall[entity] = (found, count)
    for entity, generate in POSITIVES.items():
        found = 0
        for _ in range(count):
            value = generate(rng).removeprefix("Bearer ")
            text = adjacent(rng, entity, f"Bearer {value}" if entity == "bearer" else value)
            counts: Counter[str] = Counter()
            masked = masker.mask(text, counts) or text
            kept = (value, value[:5], value[-5:])
            if counts[entity] and not any(part in masked for part in kept):
                found += 1
        recall[f"{entity} next to punctuation"] = (found, count)
    false_positives: dict[str, tuple[int, int]] = {}
    for kind, generate in NEGATIVES.items():
        masked_count = sum(
            1 for _ in range(count) if masker.mask(generate(rng), Counter()) is not None
        )
        false_positives[kind] = (masked_count, count)
    return Figures(recall=recall, false_positives=false_positives)


def report(figures: Figures) -> str:
    """The figures as a Markdown table."""
    lines = ["| corpus | values | detected | rate |", "|---|---:|---:|---:|"]
    for entity, (found, total) in figures.recall.items():
        lines.append(f"| {entity} (recall) | {total} | {found} | {found / total:.2%} |")
    for kind, (masked, total) in figures.false_positives.items():
        lines.append(f"| {kind} (false positives) | {total} | {masked} | {masked / total:.2%} |")
    total = sum(t for _, t in figures.false_positives.values())
    lines.append(
        f"| all negatives (false positives) | {total} | "
        f"{round(figures.negatives_rate * total)} | {figures.negatives_rate:.2%} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the figures; exit 1 when a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="values per entity and kind")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    figures = measure(args.count, seed=args.seed)
    print(report(figures))
    ok = figures.meets_goals()
    print(f"\ngoals (recall >= 99.5 %, false positives <= 1 %): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
