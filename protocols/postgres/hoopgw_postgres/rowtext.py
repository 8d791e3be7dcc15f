"""Row values and server messages in the client's encoding, converted to UTF-8 for plugins
and back.

Row plugins (masking) read text values as UTF-8. Under another ``client_encoding`` (``LATIN1``,
``EUC_JP``...) the server sends every text value in it: ASCII stays ASCII, but a non-ASCII
character does not, so a ``deny_words`` entry or custom pattern with one (``Müller``) never
matched. The values of text format, and of the binary format of the types whose binary form is
their text, are converted to UTF-8 before the plugins and back after; a value a plugin left in
a form the encoding cannot hold ends the session (fail closed).

The text of errors, notices, notifications and parameter reports is in the client encoding too:
each field is read in it before the output plugins see it (:func:`message_text`) and written
back in it after (:func:`message_wire`); a field whose bytes are not valid in the encoding ends
the session. COPY data is in the encoding its COPY's ``ENCODING`` option names, if any.
"""

from __future__ import annotations

from hoopgw.session import Column
from hoopgw_postgres.lexing import CODECS, LexingState

TEXT_BINARY_TYPES = frozenset({18, 19, 25, 114, 142, 705, 1042, 1043, 2275})
"""``"char"``, ``name``, ``text``, ``json``, ``xml``, ``unknown``, ``bpchar``, ``varchar`` and
``cstring``: types whose binary form is their text in the client encoding."""


def row_codec(encoding: str) -> str | None:
    """The Python codec of the rows' ``encoding`` (a PostgreSQL name, the server's for
    ``SQL_ASCII`` clients), ``None`` when the values are UTF-8 already (or bytes as they are,
    for a ``SQL_ASCII`` database)."""
    codec = CODECS.get(encoding, "")
    return None if codec in ("", "utf-8") else codec


def must_be_utf8(state: LexingState) -> bool:
    """Whether text read as UTF-8 must be valid UTF-8: a ``UTF8`` client of a database that
    converts (any but ``SQL_ASCII``) gets nothing else, unless the server wrote it in an
    encoding it never reported (a function's own ``SET client_encoding``, a ``set_config`` it
    reports only after the rows, or never when the query fails and rolls it back). Such text
    would be read wrong by the plugins (``Müller`` in ``LATIN1`` matches no deny word)."""
    return state.client_encoding == "UTF8" and state.server_encoding != "SQL_ASCII"


def check_utf8(rows: list[list[bytes | None]], columns: list[Column]) -> None:
    """Check that the text values of ``rows`` (:func:`converted_columns`) are valid UTF-8.

    :raises UnicodeDecodeError: one is not (fail closed, see :func:`must_be_utf8`).
    """
    if not rows:
        return
    for index in converted_columns(columns, len(rows[0])):
        for row in rows:
            value = row[index]
            if value is not None and not value.isascii():
                value.decode("utf-8")


def converted_columns(columns: list[Column], width: int) -> list[int]:
    """The indices of the values to convert in rows of ``width`` values: those in text format
    or in the binary format of a :data:`TEXT_BINARY_TYPES` type; every one when the rows do not
    match their description (the plugins then read every value as text)."""
    if len(columns) != width:
        return list(range(width))
    return [i for i, c in enumerate(columns) if c.format == 0 or c.type_oid in TEXT_BINARY_TYPES]


def convert(
    rows: list[list[bytes | None]], columns: list[Column], codec: str, *, to_utf8: bool
) -> None:
    """Convert the text values of ``rows`` in place, to UTF-8 or back to ``codec``.

    :raises UnicodeError: a value has no form in the target encoding.
    """
    if not rows:
        return
    for index in converted_columns(columns, len(rows[0])):
        for row in rows:
            value = row[index]
            if value is None or value.isascii():
                continue
            if to_utf8:
                row[index] = value.decode(codec, "surrogateescape").encode(
                    "utf-8", "surrogateescape"
                )
            else:
                row[index] = value.decode("utf-8", "surrogateescape").encode(
                    codec, "surrogateescape"
                )


def message_text(
    fields: dict[str, str], encoding: str, *, exact: bool = True, strict_utf8: bool = False
) -> dict[str, str]:
    """Text fields of a server message (an error, a notice, a notification, a parameter
    report) as plugins must read them: the message codec reads every field as UTF-8 (other
    bytes as lone surrogates), but the server wrote it in the client ``encoding``.

    :param exact: raise on bytes not valid in the encoding, rather than keep them as lone
        surrogates (what the record of an unmasked message may do).
    :param strict_utf8: with ``exact``, raise on bytes not valid in UTF-8 too, where the text
        is read as UTF-8 (:func:`must_be_utf8`).
    :raises UnicodeError: a field is not valid in the encoding (fail closed).
    """
    codec = row_codec(encoding)
    if codec is None:
        if exact and strict_utf8:
            for value in fields.values():
                if not value.isascii() and any("\udc80" <= c <= "\udcff" for c in value):
                    raw = value.encode("utf-8", "surrogateescape")
                    raise UnicodeDecodeError("utf-8", raw, 0, len(raw), "not valid UTF-8")
        return fields
    errors = "strict" if exact else "surrogateescape"
    return {
        name: value
        if value.isascii()
        else value.encode("utf-8", "surrogateescape").decode(codec, errors)
        for name, value in fields.items()
    }


def message_wire(fields: dict[str, str], encoding: str) -> dict[str, str]:
    """The inverse of :func:`message_text`: fields as the message codec writes them, so that
    their bytes are the text in ``encoding``.

    :raises UnicodeError: a character the encoding cannot hold (fail closed).
    """
    codec = row_codec(encoding)
    if codec is None:
        return fields
    return {
        name: text if text.isascii() else text.encode(codec).decode("utf-8", "surrogateescape")
        for name, text in fields.items()
    }


_BINARY_COPY = b"PGCOPY\n\xff\r\n\x00"


def copy_text(data: bytes, encoding: str) -> str:
    """A COPY data message as plugins read it: text in the rows' ``encoding`` decoded; binary
    COPY (and UTF-8) as UTF-8 with lone surrogates, so the binary signature stays visible."""
    codec = row_codec(encoding)
    if codec is None or data.startswith(_BINARY_COPY):
        return data.decode("utf-8", "surrogateescape")
    return data.decode(codec, "surrogateescape")


def copy_bytes(text: str, encoding: str) -> bytes:
    """The inverse of :func:`copy_text`: ``text`` back in ``encoding``.

    :raises UnicodeError: a character the encoding cannot hold (fail closed).
    """
    codec = row_codec(encoding)
    if codec is None or text.startswith("PGCOPY\n\udcff\r\n\x00"):
        return text.encode("utf-8", "surrogateescape")
    return text.encode(codec, "surrogateescape")
