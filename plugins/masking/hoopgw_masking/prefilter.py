r"""The prefilter: one Hyperscan scan over a batch's raw row bytes finds the rows that may
hold an entity; only those are decoded and go through the detectors.

Each built-in detector has here a few *necessary* byte patterns: every span a detector masks
contains a match of one of its entity's patterns. They say nothing of the context a detector's
lookarounds read, so they find more than the detectors (a date ``2024-01-15`` is a phone
candidate, as it is for the phone pattern until its validator says no), never less. Why each
pattern is necessary, entity by entity:

- ``email``: the local part ends with one of ``[A-Za-z0-9_%+-]`` just before ``@`` and the domain
  starts with a letter or digit.
- ``phone``: the validator needs seven ASCII digits in the match, which holds nothing but digits,
  one leading ``+`` and ``[ .\-()]`` plus an extension's ``x``/``ext.``/``#`` and spaces; between
  two digits there are at most seven of those (``) ext. ``).
- ``ssn``: three digits, a space or dash, two digits, the same separator, four digits.
- ``credit_card``: twelve digits at least, at most one space or dash between two.
- ``iban``: two capitals, two digits, then groups of four letters or digits, a space apart at
  most.
- ``ip``: IPv4 is four dot-separated groups of digits; a valid IPv6 address (what the validator
  keeps) holds ``::`` or six groups each followed by a colon.
- ``access_key``, ``private_key``, ``jwt``, ``bearer``: the literal each pattern starts with or
  contains (``bearer`` in any case, as the detector's gate is a subset of that).
- escapes: ``\u`` and ``&#``, behind which :func:`hoopgw_masking.values.unescaped` finds
  entities the plain text does not show.

Every pattern is ASCII. Bytes are matched as the detectors' text: the plugin reads text values
as UTF-8 with ``surrogateescape``, where an ASCII byte is always the same character and other
bytes never become ASCII characters, so an ASCII pattern matches the decoded text exactly where
it matches the bytes. None of the patterns matches NUL, which starts every length field of a
row message, so a match rarely runs from one value into the next (and when it does, it only
adds a row). Custom ``patterns`` and ``deny_words`` are Python regular expressions with Unicode
semantics that have no byte form here: a policy with either has no prefilter (every row is
decoded, :meth:`Prefilter.of` returns ``None``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import cast

import hyperscan

from hoopgw_masking.detectors import Detector

PATTERNS: dict[str, tuple[bytes, ...]] = {
    "email": (rb"[A-Za-z0-9_%+\-]@[A-Za-z0-9]",),
    "phone": (rb"\d(?:[ .\-()#ext]{0,7}\d){6}",),
    "ssn": (rb"\d\d\d[ \-]\d\d[ \-]\d\d\d\d",),
    "credit_card": (rb"\d(?:[ \-]?\d){11}",),
    "iban": (rb"[A-Z][A-Z]\d\d ?[A-Z0-9]{4} ?[A-Z0-9]{4}",),
    "ip": (rb"\d\.\d{1,3}\.\d{1,3}\.\d", rb"::", rb"(?:[0-9A-Fa-f]{1,4}:){6}"),
    "access_key": (
        rb"A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|ROA|NPA|NVA|PKA)",
        rb"AIza",
        rb"gh[pousr]_",
        rb"github_pat_",
        rb"xox[abposr]-",
        rb"[sr]k_(?:live|test)_",
        rb"AccountKey=",
    ),
    "private_key": (rb"PRIVATE KEY",),
    "jwt": (rb"\.eyJ",),
    "bearer": (rb"(?i)bearer[ \t]",),
}
"""Per built-in entity, byte patterns of which every masked span holds a match."""
ESCAPES = (rb"\\u", rb"&#")
"""What an entity hidden behind an escape is always written with."""
ENCODINGS = frozenset(
    {
        "UTF8", "SQL_ASCII", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6",
        "LATIN7", "LATIN8", "LATIN9", "LATIN10", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7",
        "ISO_8859_8", "WIN866", "WIN874", "WIN1250", "WIN1251", "WIN1252", "WIN1253", "WIN1254",
        "WIN1255", "WIN1256", "WIN1257", "WIN1258", "KOI8R", "KOI8U", "EUC_CN", "EUC_JP",
        "EUC_JIS_2004", "EUC_KR", "EUC_TW", "MULE_INTERNAL",
    }
)  # fmt: skip
"""Encodings (PostgreSQL's names) in which every ASCII byte is that character and every byte
of another character has its high bit set, so that the ASCII patterns read the bytes as the
text; in any other (UTF-16, Shift JIS, an encoding the protocol does not name) every row is
decoded."""


class Prefilter:
    """A compiled Hyperscan database of the prefilter patterns of one policy's entities."""

    def __init__(self, entities: Iterable[str]) -> None:
        """
        :param entities: built-in entity names, each a key of :data:`PATTERNS`.
        """
        expressions = [p for e in sorted(set(entities)) for p in PATTERNS[e]] + list(ESCAPES)
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(
            expressions=expressions,
            ids=list(range(len(expressions))),
            elements=len(expressions),
            flags=[0] * len(expressions),
        )
        self._scratch = hyperscan.Scratch(self._database)

    @classmethod
    def of(cls, detectors: Sequence[Detector]) -> Prefilter | None:
        """The prefilter of a policy's detectors, or ``None`` when one of them has no byte
        patterns (a custom pattern, a deny list): fail closed, every row is then decoded."""
        if not detectors or any(d.entity not in PATTERNS or d.per_value for d in detectors):
            return None
        return cls(d.entity for d in detectors)

    def rows(self, data: bytes, starts: Sequence[int]) -> list[int]:
        """The indices of the rows that hold a candidate.

        :param data: rows back to back, each as its bytes on the wire.
        :param starts: where each row starts in ``data``, ascending (the first is 0).
        """
        found: list[int] = []
        ends: list[int] = []
        view = memoryview(data)
        position = 0
        count = len(starts)

        def matched(_id: int, _start: int, end: int, _flags: int, _context: object) -> bool:
            ends.append(end)
            return True  # stop: the rest of this row need not be scanned

        while True:
            ends.clear()
            try:
                # A memoryview, so that no rescan copies the batch (the stub says bytes).
                rest = cast(bytes, view[position:])
                self._database.scan(rest, match_event_handler=matched, scratch=self._scratch)
            except hyperscan.ScanTerminated:
                pass  # stopped at the first match, as asked
            if not ends:
                return found
            # The row where the first match ends (a match ending in a row that it started
            # before only adds that row).
            row = bisect_right(starts, position + ends[0] - 1) - 1
            found.append(row)
            if row + 1 >= count:
                return found
            position = starts[row + 1]
