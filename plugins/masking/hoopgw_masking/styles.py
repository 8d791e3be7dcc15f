"""Replacement styles: what a detected value becomes.

``redact``
    ``[EMAIL]``, ``[CREDIT_CARD]``: the entity's name, nothing of the value.
``partial``
    every letter and digit but the last four becomes ``*``; separators stay
    (``**** **** **** 1111``).
``token``
    ``EMAIL_3f1c9a0b52de47aa``: a keyed HMAC-SHA256 of the value, so that equal values stay
    equal in the masked output (joins and group-bys still line up) while the key, held as a
    secret reference, keeps anyone from confirming a guess.

A bare number (a numeric column, a JSON number) must stay a number: :meth:`Style.digits`
answers the digit-only replacement, or ``None`` when the style has none (``redact``).
"""

from __future__ import annotations

import hashlib
import hmac

STYLES = ("redact", "partial", "token")
"""Accepted values for a style in ``[connections.masking] styles``."""

KEEP = 4
"""Characters the ``partial`` style keeps at the end."""


class Style:
    """One replacement style, ready to apply."""

    def __init__(self, name: str, *, key: bytes | None = None) -> None:
        """
        :param name: one of :data:`STYLES`.
        :param key: the HMAC key; required for ``token``.
        """
        if name not in STYLES:
            raise ValueError(f"unknown style {name!r} (known: {', '.join(STYLES)})")
        if name == "token" and not key:
            raise ValueError("the token style needs a key (token_key)")
        self.name = name
        self._key = key or b""

    def _digest(self, entity: str, value: str) -> bytes:
        message = entity.encode() + b"\x00" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def constant(self, entity: str) -> str | None:
        """The replacement of every ``entity`` value when it does not depend on the value
        (``redact``), else ``None``."""
        return f"[{entity.upper()}]" if self.name == "redact" else None

    def text(self, entity: str, value: str) -> str:
        """The replacement of ``value`` (an ``entity``) inside text."""
        if self.name == "redact":
            return f"[{entity.upper()}]"
        if self.name == "partial":
            return _partial(value, "*")
        return f"{entity.upper()}_{self._digest(entity, value)[:8].hex()}"

    def digits(self, entity: str, value: str) -> str | None:
        """A replacement made of digits only, of the same length, or ``None`` if the style has
        none. ``value`` is a string of digits."""
        if self.name == "redact":
            return None
        if self.name == "partial":
            return _partial(value, "0")
        digest = int.from_bytes(self._digest(entity, value), "big")
        digits = str(digest).rjust(len(value), "0")[-len(value) :]
        # A leading zero would change the number's length once it is read as a number.
        return ("1" + digits[1:]) if digits[0] == "0" else digits


def _partial(value: str, fill: str) -> str:
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    hidden = set(alnum[:-KEEP]) if len(alnum) > KEEP else set(alnum)
    return "".join(fill if i in hidden else c for i, c in enumerate(value))
