"""Terminal output cut where a masked value cannot be split.

Output arrives in chunks cut wherever the target's writes and the SSH window fell, so a value
such as ``alice@example.com`` may be split across two chunks, and a plugin that masks each
``server_output`` call on its own would see neither half as a value. :class:`OutputBuffer`
hands plugins whole lines instead: it holds the text after the last line end until

- a line end arrives;
- the held text grows past :data:`MAX_HELD` characters (then it is cut after its last
  whitespace);
- the target pauses for :data:`SOFT_DELAY` seconds: the text up to the last whitespace goes,
  the last word stays up to :data:`HARD_DELAY` seconds more (a prompt such as ``$ `` ends in
  whitespace and goes at once);
- the stream ends (:meth:`flush`).

So a value is kept whole unless the target pauses in its middle for longer than
:data:`HARD_DELAY`, or the value is longer than :data:`MAX_HELD`. The cost is latency for
output without a line end: echoed keystrokes appear up to :data:`HARD_DELAY` late.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["HARD_DELAY", "MAX_HELD", "SOFT_DELAY", "OutputBuffer"]

SOFT_DELAY = 0.03
HARD_DELAY = 0.15
MAX_HELD = 4096

_LINE_END = re.compile(r"[\r\n]")
_SPACE = re.compile(r"\s")


def _cut_after_last(pattern: re.Pattern[str], text: str) -> int:
    """Index just after the last match of ``pattern`` in ``text``; 0 if none."""
    last = 0
    for match in pattern.finditer(text):
        last = match.end()
    return last


class OutputBuffer:
    """Holds one stream's text until it can be cut without splitting a value."""

    def __init__(self, emit: Callable[[str], None], clock: Any) -> None:
        """:param emit: receives each piece of text, in order.
        :param clock: ``callLater`` provider (the reactor; a ``Clock`` in tests)."""
        self._emit = emit
        self._clock = clock
        self._held = ""
        self._timer: Any = None

    @property
    def held(self) -> str:
        """Text not handed on yet."""
        return self._held

    def feed(self, text: str) -> None:
        """More text from the target."""
        if not text:
            return
        held = self._held + text
        cut = _cut_after_last(_LINE_END, held)
        if len(held) - cut > MAX_HELD:
            cut = max(cut, _cut_after_last(_SPACE, held)) or len(held)
        self._held = held[cut:]
        if cut:
            self._emit(held[:cut])
        self._schedule(SOFT_DELAY, self._soft)

    def flush(self) -> None:
        """Hand on everything held (the stream ends, or the command exits)."""
        self._cancel()
        held, self._held = self._held, ""
        if held:
            self._emit(held)

    def discard(self) -> None:
        """Drop what is held (the client is gone: nobody would see it)."""
        self._cancel()
        self._held = ""

    def _soft(self) -> None:
        self._timer = None
        cut = _cut_after_last(_SPACE, self._held)
        if cut:
            held = self._held
            self._held = held[cut:]
            self._emit(held[:cut])
        if self._held:
            self._schedule(HARD_DELAY, self.flush)

    def _schedule(self, delay: float, call: Callable[[], None]) -> None:
        self._cancel()
        if self._held:
            self._timer = self._clock.callLater(delay, call)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
