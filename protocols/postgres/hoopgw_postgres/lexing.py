"""The session settings that decide how PostgreSQL lexes statement text (sans-io).

The server splits a statement text into tokens by rules that depend on two session settings,
both reported by the server (``GUC_REPORT``) in a ParameterStatus message at login and whenever
they change (PostgreSQL 14 and later send the change just before ReadyForQuery):

- ``standard_conforming_strings``: with ``off``, a backslash escapes the next character inside
  an ordinary ``'...'`` literal, so ``'a\\'; DELETE ...`` is one string to a parser that lexes
  with ``on`` and a string followed by a DELETE to the server;
- ``client_encoding``: the server reads the text in this encoding. In the client-only encodings
  (SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030, JOHAB) the second byte of a character may be
  ``0x27`` (``'``) or ``0x5c`` (``\\``), so a parser that reads bytes as another encoding sees a
  quote where the server sees a letter.

``backslash_quote`` and ``escape_string_warning`` also belong to the lexer, but they never change
where a token ends: the first only turns ``\\'`` into an error, the second only warns. They are
neither reported nor tracked.

The gateway parses with libpg_query, which always lexes with ``standard_conforming_strings=on``,
and decodes the text to Unicode first. It therefore accepts exactly the states in which that is
the server's own reading -- ``standard_conforming_strings=on`` and an encoding whose multibyte
characters never contain an ASCII byte -- and refuses every other value, whichever way it was
set: a state it cannot lex exactly is never judged by guessing.
"""

from __future__ import annotations

import re

import attrs

TRACKED = ("client_encoding", "standard_conforming_strings", "server_encoding")
"""Reported settings the lexing state is made of (``server_encoding`` matters for
``client_encoding=SQL_ASCII``, where the server reads the text in its own encoding)."""

REQUIRED = ("client_encoding", "standard_conforming_strings")
"""Settings the server must report at login: without them the state is unknown."""

CLIENT_ONLY_ENCODINGS = frozenset(
    {"BIG5", "GB18030", "GBK", "JOHAB", "SJIS", "SHIFT_JIS_2004", "UHC"}
)
"""Encodings PostgreSQL supports on the client side only (documentation, "Character Set
Support", table "PostgreSQL Character Sets", Server = No): precisely those whose multibyte
characters can contain ASCII bytes, so the gateway cannot lex them safely."""

# Single-byte encodings: each byte is one character, Python's codec maps distinct bytes to
# distinct characters, and PostgreSQL converts them character by character.
_SINGLE_BYTE = {
    "LATIN1": "latin-1",
    "LATIN2": "iso8859_2",
    "LATIN3": "iso8859_3",
    "LATIN4": "iso8859_4",
    "LATIN5": "iso8859_9",
    "LATIN6": "iso8859_10",
    "LATIN7": "iso8859_13",
    "LATIN8": "iso8859_14",
    "LATIN9": "iso8859_15",
    "LATIN10": "iso8859_16",
    "ISO_8859_5": "iso8859_5",
    "ISO_8859_6": "iso8859_6",
    "ISO_8859_7": "iso8859_7",
    "ISO_8859_8": "iso8859_8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
}
# Multibyte server encodings: every byte of a multibyte character has its high bit set, so
# ASCII bytes (quotes, backslashes, semicolons) are always themselves. Python has no codec for
# EUC_TW and MULE_INTERNAL: their non-ASCII bytes are kept as escapes (see LexingState.decode).
_MULTIBYTE = {
    "EUC_CN": "gb2312",
    "EUC_JP": "euc_jp",
    "EUC_JIS_2004": "euc_jis_2004",
    "EUC_KR": "euc_kr",
    "EUC_TW": "ascii",
    "MULE_INTERNAL": "ascii",
}
CODECS = {"UTF8": "utf-8", "SQL_ASCII": "", **_SINGLE_BYTE, **_MULTIBYTE}
"""Every encoding the gateway reads, by PostgreSQL's name, with the Python codec that decodes it
(``SQL_ASCII``: the text is in the server's encoding, see :meth:`LexingState.decode`)."""

# Bytes with the high bit set: what remains of a text after deleting them is its ASCII skeleton.
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _keeps_ascii(codec: str) -> bool:
    """Whether ``codec`` decodes byte by byte, every ASCII byte as itself and every other
    byte as a non-ASCII character: then no text needs its ASCII skeleton checked."""
    decoded = bytes(range(0x100)).decode(codec, "surrogateescape")
    return len(decoded) == 0x100 and all(
        (ord(c) < 0x80) == (i < 0x80) for i, c in enumerate(decoded)
    )


# Checked once here rather than trusted: the single-byte codecs, and UTF-8 by its design.
_ASCII_KEEPING = {"utf-8"} | {codec for codec in _SINGLE_BYTE.values() if _keeps_ascii(codec)}
# A dollar-quote opening tag holding a non-ASCII character (an over-approximation: anywhere in
# the text, strings and comments included). The end of a dollar-quoted string is found by
# comparing tags, and two different tags may become equal (or equal tags different) through an
# encoding conversion whose tables differ from Python's codecs.
_TAG_CHAR = r"[A-Za-z_0-9\x80-\U0010ffff]"
_NON_ASCII_TAG = re.compile(rf"\${_TAG_CHAR}*[\x80-\U0010ffff]{_TAG_CHAR}*\$")


class LexingRefused(Exception):
    """A lexing setting has a value the gateway cannot lex exactly; the message names it."""


def clean_encoding_name(name: str) -> str:
    """An encoding name as the gateway's tables key it (``utf-8`` -> ``UTF8``)."""
    canonical = re.sub(r"[^A-Za-z0-9_]", "", name).upper()
    return {"UTF_8": "UTF8", "UNICODE": "UTF8", "SHIFTJIS2004": "SHIFT_JIS_2004"}.get(
        canonical, canonical
    )


def refusal(name: str, value: str) -> str | None:
    """Why the gateway refuses ``name`` = ``value`` (a message naming the setting), or None
    when it can lex statements in that state (or ``name`` does not affect lexing)."""
    if name == "standard_conforming_strings":
        if value.strip().lower() != "on":
            return (
                f"standard_conforming_strings={value} is refused by the gateway: its statement"
                " parser reads backslashes in '...' literals as the server does only with"
                " standard_conforming_strings=on (write E'...' for escapes)"
            )
    elif name in ("client_encoding", "server_encoding"):
        encoding = clean_encoding_name(value)
        if encoding in CLIENT_ONLY_ENCODINGS:
            return (
                f"{name}={value} is refused by the gateway: in this encoding a multibyte"
                " character can contain the bytes of a quote or backslash, so statements cannot"
                " be judged safely (use UTF8)"
            )
        if encoding not in CODECS:
            return f"{name}={value} is refused by the gateway: it does not know this encoding"
    return None


@attrs.frozen(kw_only=True)
class LexingState:
    """The lexing settings in force, as the server last reported them."""

    client_encoding: str = "UTF8"
    """The client's encoding (PostgreSQL's canonical name)."""
    server_encoding: str = "UTF8"
    """The database's encoding; the text's encoding when the client's is ``SQL_ASCII``."""

    @property
    def text_encoding(self) -> str:
        """The encoding the server reads statement text in: the client's, or for
        ``SQL_ASCII`` (no conversion) the database's."""
        if self.client_encoding == "SQL_ASCII":
            return self.server_encoding
        return self.client_encoding

    @property
    def exact_tags(self) -> bool:
        """Whether two dollar-quote tags are equal for the server exactly when their decoded
        texts are equal: true when the text's encoding is UTF-8 or single-byte and the server
        either keeps it as is or converts it to UTF-8."""
        text = self.text_encoding
        if text not in _SINGLE_BYTE and text not in ("UTF8", "SQL_ASCII"):
            return False
        return self.server_encoding in ("UTF8", "SQL_ASCII", text)

    def decode(self, raw: bytes) -> str:
        """``raw`` statement text as the server reads it, as a Python string.

        Bytes that are not valid in the encoding are kept as lone surrogates (as
        ``surrogateescape`` does), so the text keeps its exact bytes: the server rejects such a
        text, except in a ``SQL_ASCII`` database, and the analysis judges it with a stand-in per
        byte (see :mod:`hoopgw_postgres.analysis`).
        When no side converts (a ``SQL_ASCII`` client of a ``SQL_ASCII`` database), the bytes
        are decoded as UTF-8, what such databases hold in practice: that choice changes the
        recorded spelling only, never where a token ends.

        :raises LexingRefused: the decoded text would not lex as the server lexes the bytes: its
            ASCII characters differ from the ASCII bytes of ``raw`` (a codec that disagrees
            with the server), or it holds a dollar-quote tag with non-ASCII characters in an
            encoding where tags may compare differently.
        """
        if raw.isascii():
            return raw.decode("ascii")
        codec = CODECS.get(self.text_encoding) or "utf-8"
        try:
            text = raw.decode(codec, "surrogateescape")
        except UnicodeDecodeError:
            raise LexingRefused(
                f"the statement has bytes that are not valid in client_encoding"
                f" {self.client_encoding}"
            ) from None
        if codec not in _ASCII_KEEPING and text.encode("ascii", "ignore") != raw.translate(
            None, _HIGH_BYTES
        ):
            raise LexingRefused(
                f"the statement cannot be read exactly in client_encoding {self.client_encoding}"
            )
        if not self.exact_tags and _NON_ASCII_TAG.search(text):
            raise LexingRefused(
                "a dollar-quote tag with non-ASCII characters cannot be judged exactly with"
                f" client_encoding {self.client_encoding} and server_encoding"
                f" {self.server_encoding}"
            )
        return text


def lexes_alike(raw: bytes) -> bool:
    """Whether ``raw`` is split into the same tokens in every state a session can reach.

    A text of ASCII bytes without a backslash reads the same in every encoding PostgreSQL
    supports (conversions keep ASCII bytes) and with either ``standard_conforming_strings``
    (the settings differ only at a backslash inside a ``'...'`` literal). Such a text can be
    judged while an earlier command may still be changing the settings.
    """
    return raw.isascii() and b"\\" not in raw


class LexingTracker:
    """The lexing state of one session, kept from the server's ParameterStatus reports."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self.state = LexingState()
        """The state in force (meaningful once :meth:`login` succeeded)."""

    def login(self, reports: dict[str, str]) -> None:
        """Take the parameters the server reported at login.

        :raises LexingRefused: a required setting was not reported, or a value is refused.
        """
        for name in REQUIRED:
            if name not in reports:
                raise LexingRefused(
                    f"the target did not report {name}, so the gateway cannot know how it reads"
                    " statements"
                )
        for name, value in reports.items():
            self.report(name, value)

    def report(self, name: str, value: str) -> None:
        """Take one ParameterStatus report; other parameters are ignored.

        :raises LexingRefused: the value is one the gateway cannot lex exactly.
        """
        if name not in TRACKED:
            return
        reason = refusal(name, value)
        if reason is not None:
            raise LexingRefused(reason)
        self._values[name] = value
        self.state = LexingState(
            client_encoding=clean_encoding_name(self._values.get("client_encoding", "UTF8")),
            server_encoding=clean_encoding_name(self._values.get("server_encoding", "UTF8")),
        )
