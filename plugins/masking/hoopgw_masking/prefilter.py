r"""The prefilter: one Hyperscan scan over a batch's raw row bytes finds the rows that may
hold an entity; only those are decoded and go through the detectors.

Each built-in detector has here a few *necessary* byte patterns: every span a detector masks
contains a match of one of its entity's patterns. They say nothing of the context a detector's
lookarounds read, so they find more than the detectors (a date ``2024-01-15`` is a phone
candidate, as it is for the phone pattern until its validator says no), never less. Why each
pattern is necessary, entity by entity:

- ``email``: the local part ends with one of ``[A-Za-z0-9_%+-]`` just before ``@`` and the domain
  starts with a letter or digit.
- ``phone``: the pattern's branches start with ``+`` and a digit; with ``00`` or ``011``
  and, as the validator needs seven digits, five or four more (at most three of ``[ .\-()]``
  between two); with ``(`` and two digits; or with digit groups of which the second (two to
  five digits) stands between two of ``[ .\-]`` (``212-555-0100``). An extension (``x``,
  ``ext.`` or ``#``) always stands between a digit (or ``)``) and a digit. A bare run of
  digits (an id, an amount ``12345.67``) is none of these.
- ``ssn``: three digits, a space or dash, two digits, the same, four digits (the phone's
  grouped form holds it, so with ``phone`` on it is not scanned for separately).
- ``credit_card``: twelve digits at least, at most one space or dash between two: a run of
  twelve or more of ``[0-9 \-]`` from a digit to a digit.
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

import hyperscan

from hoopgw_masking.detectors import Detector

PATTERNS: dict[str, tuple[bytes, ...]] = {
    "email": (rb"[A-Za-z0-9_%+\-]@[A-Za-z0-9]",),
    "phone": (
        rb"\+\d",
        rb"00[ .\-]?\d(?:[ .\-()]{0,3}\d){4}",
        rb"011[ .\-]?\d(?:[ .\-()]{0,3}\d){3}",
        rb"\(\d\d",
        rb"\d[ .\-]\d{2,5}[ .\-]\d\d",
        rb"\d\)? ?(?:x|ext\.?|\#) ?\d",
    ),
    "ssn": (rb"\d\d\d[ \-]\d\d[ \-]\d\d\d\d",),
    "credit_card": (rb"\d[\d \-]{10,}\d",),
    "iban": (rb"[A-Z][A-Z]\d\d ?[A-Z0-9]{4}",),
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
IMPLIED_BY_PHONE = frozenset({"ssn"})
"""Entities each of whose pattern matches holds a match of one of the phone's patterns."""
ESCAPES = (rb"\\u", rb"&#")
"""What an entity hidden behind an escape is always written with."""
ENCODINGS = frozenset(
    {
        "UTF8", "SQL_ASCII", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6",
        "LATIN7", "LATIN8", "LATIN9", "LATIN10", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7",
        "ISO_8859_8", "WIN866", "WIN874", "WIN1250", "WIN1251", "WIN1252", "WIN1253", "WIN1254",
        "WIN1255", "WIN1256", "WIN1257", "WIN1258", "KOI8R", "KOI8U", "EUC_CN", "EUC_JP",
        "EUC_JIS_2004", "EUC_KR", "EUC_TW", "MULE_INTERNAL",
        "utf8mb4", "utf8mb3", "latin1", "ascii", "binary",
    }
)  # fmt: skip
"""Encodings (PostgreSQL's names, then MySQL's character sets) in which every ASCII byte is
that character and every byte of another character has its high bit set, so that the ASCII
patterns read the bytes as the text; in any other (UTF-16, Shift JIS, an encoding the protocol
does not name) every row is decoded."""


MATCHES_PER_ROW = 8
"""Match reports per row, on average over a batch, above which the prefilter decides nothing
(a card number alone makes about ten: one per digit past the twelfth character of its run and
the seventh of the phone's)."""


class Prefilter:
    """A compiled Hyperscan database of the prefilter patterns of one policy's entities."""

    def __init__(self, entities: Iterable[str]) -> None:
        """
        :param entities: built-in entity names, each a key of :data:`PATTERNS`.
        """
        wanted = set(entities)
        if "phone" in wanted:
            wanted -= IMPLIED_BY_PHONE
        expressions = [p for e in sorted(wanted) for p in PATTERNS[e]] + list(ESCAPES)
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

    def rows(self, data: bytes, starts: Sequence[int]) -> list[int] | None:
        """The indices of the rows that hold a candidate, ascending; ``None`` when the batch
        holds more than :data:`MATCHES_PER_ROW` match reports per row on average, plus a
        few (then most rows are candidates, and deciding row by row would cost more than it
        saves).

        One scan of the whole batch reports where matches end (Hyperscan does not promise
        the order of its reports, so it is never cut short to skip ahead); a row is the one a
        match ends in (a match that runs over from the row before only adds a row).

        :param data: rows back to back, each as its bytes on the wire.
        :param starts: where each row starts in ``data``, ascending (the first is 0).
        """
        ends: list[int] = []
        limit = MATCHES_PER_ROW * len(starts) + MATCHES_PER_ROW * 8

        def matched(_id: int, _start: int, end: int, _flags: int, _context: object) -> bool:
            ends.append(end)
            return len(ends) > limit

        try:
            self._database.scan(data, match_event_handler=matched, scratch=self._scratch)
        except hyperscan.ScanTerminated:
            return None
        return sorted({bisect_right(starts, end - 1) - 1 for end in ends})

    def may_hold(self, text: str) -> bool:
        """Whether ``text`` (a statement, a reason: no row) holds a candidate for a detector;
        when not, the detectors would find nothing in it. Read as the plugin reads text values:
        UTF-8, lone surrogates as the bytes they stand for, where every ASCII character is its
        byte and no other character makes one."""
        found: list[bool] = []

        def matched(_id: int, _start: int, _end: int, _flags: int, _context: object) -> bool:
            found.append(True)
            return True  # one is enough: stop the scan

        try:
            self._database.scan(
                text.encode("utf-8", "surrogateescape"),
                match_event_handler=matched,
                scratch=self._scratch,
            )
        except hyperscan.ScanTerminated:
            pass
        except UnicodeEncodeError:  # a surrogate that stands for no byte: let the detectors see
            return True
        return bool(found)
