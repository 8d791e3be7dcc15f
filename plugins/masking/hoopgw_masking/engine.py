"""The masking engine: find entities in text and replace them, many values at a time.

:meth:`Masker.mask_joined` is the hot path. The caller joins a batch of values with NUL (which
PostgreSQL text never contains and no detector matches) and each detector's compiled pattern
runs once over the whole batch, in C. Python work is spent per *candidate* that needs a check
(a checksum, a numbering plan), never per value: a batch with nothing to mask costs one join,
one decode and one regex scan per detector (fewer: a detector whose trigger substring is absent
is skipped), and a detector whose pattern alone decides replaces in C.

The answer for a candidate depends on its text alone, so each detector remembers the
replacement of the candidates it validated (:data:`MEMO_SIZE` at most, then it starts over):
values that recur in results (the same phone number, card or customer in many rows) are
validated and styled once. The memo lives in the gateway's memory only, like the rows it masks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from hoopgw_masking.detectors import Detector
from hoopgw_masking.styles import Style

SEPARATOR = "\x00"
"""Joins the values of a batch; PostgreSQL text never contains it."""
MEMO_SIZE = 8192
"""Candidates whose replacement each detector remembers."""


class Masker:
    """Detectors and styles of one connection's policy."""

    def __init__(
        self, detectors: Sequence[Detector], styles: Mapping[str, Style], default: Style
    ) -> None:
        """
        :param detectors: in order of preference when two matches overlap.
        :param styles: style per entity; entities not listed use ``default``.
        :param default: the style of every other entity.
        """
        self.detectors = tuple(detectors)
        self._styles = dict(styles)
        self._default = default
        self._digit_detectors = tuple(d for d in self.detectors if d.digits_only)
        self._batched = tuple(d for d in self.detectors if not d.per_value)
        self._per_value = tuple(d for d in self.detectors if d.per_value)
        self._gates = {id(d): _gate(d.triggers) for d in self.detectors}
        self._memos: dict[int, dict[str, str]] = {id(d): {} for d in self.detectors}

    def style(self, entity: str) -> Style:
        """The style that replaces ``entity``."""
        return self._styles.get(entity, self._default)

    def mask(self, text: str, counts: Counter[str]) -> str | None:
        """``text`` with every entity replaced, or ``None`` if nothing was found.

        Detectors run one after the other, in order of preference, each over the text the
        previous ones left: a card number, once replaced, is not also looked at as a phone.
        A detector whose pattern alone decides (``exact``) under a constant style replaces in
        C (``subn``); the others call their validator per candidate. A detector whose trigger
        substrings are all absent is not run at all.

        :param counts: incremented once per masked value, by entity.
        """
        masked = self._run(self._batched, text, counts)
        if self._per_value:
            again = self._run(self._per_value, text if masked is None else masked, counts)
            masked = again if again is not None else masked
        return masked

    def _run(self, detectors: Sequence[Detector], text: str, counts: Counter[str]) -> str | None:
        changed = False
        for detector in detectors:
            gate = self._gates[id(detector)]
            if gate is not None and not gate(text):
                continue
            entity = detector.entity
            style = self.style(entity)
            constant = style.constant(entity)
            if detector.exact and constant is not None:
                text, found = detector.pattern.subn(constant.replace("\\", "\\\\"), text)
            else:
                replacer = _Replacer(detector, style, self._memos[id(detector)])
                text = detector.pattern.sub(replacer, text)
                found = replacer.count
            if found:
                counts[entity] += found
                changed = True
        return text if changed else None

    def mask_joined(self, joined: str, counts: Counter[str]) -> str | None:
        """Mask a batch of values joined by NUL; ``None`` if nothing was found.

        The result has the same number of NUL separators: split it to get the values back.
        Built-in detectors scan the whole batch at once (none matches NUL, so no match runs
        from one value into the next); custom patterns, which may anchor (``^``, ``$``) or
        match NUL, run on each value alone. The values must not contain NUL themselves
        (PostgreSQL text never does).
        """
        masked = self._run(self._batched, joined, counts)
        if not self._per_value:
            return masked
        values = (joined if masked is None else masked).split(SEPARATOR)
        changed = masked is not None
        for index, value in enumerate(values):
            again = self._run(self._per_value, value, counts)
            if again is not None:
                values[index] = again
                changed = True
        return SEPARATOR.join(values) if changed else None

    def mask_digits(self, digits: str, counts: Counter[str]) -> str | bool | None:
        """Check a bare number (digits only) for digit-only entities.

        :return: ``None`` if no entity was found; the replacement digits; or ``False`` when an
            entity was found but its style has no digit-only replacement.
        """
        for detector in self._digit_detectors:
            match = detector.pattern.fullmatch(digits)
            if match is not None and detector.validate(match) is not None:
                counts[detector.entity] += 1
                replacement = self.style(detector.entity).digits(detector.entity, digits)
                return False if replacement is None else replacement
        return None


def _gate(triggers: Sequence[str]) -> Callable[[str], object] | None:
    """Whether a text holds one of ``triggers``; ``None`` when there are none."""
    if not triggers:
        return None
    if all(len(t) == 1 for t in triggers):
        return re.compile("[" + re.escape("".join(triggers)) + "]").search
    return lambda text: any(t in text for t in triggers)


class _Replacer:
    """The ``re.sub`` callback of one detector: validates each candidate and counts.

    ``memo`` maps a candidate's text to what replaces it (itself when it is not the entity).
    """

    __slots__ = ("_entity", "_memo", "_style", "_validate", "count")

    def __init__(self, detector: Detector, style: Style, memo: dict[str, str]) -> None:
        self._validate = detector.validate
        self._entity = detector.entity
        self._style = style
        self._memo = memo
        self.count = 0

    def __call__(self, match: re.Match[str]) -> str:
        candidate = match.group()
        replacement = self._memo.get(candidate)
        if replacement is None:
            span = self._validate(match)
            if span is None:
                replacement = candidate
            else:
                offset = match.start()
                start, end = span[0] - offset, span[1] - offset
                value = self._style.text(self._entity, candidate[start:end])
                replacement = candidate[:start] + value + candidate[end:]
            memo = self._memo
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[candidate] = replacement
        # A replacement never equals its candidate: styles change every value they mask.
        if replacement != candidate:
            self.count += 1
        return replacement
