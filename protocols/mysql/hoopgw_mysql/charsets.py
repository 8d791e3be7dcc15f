"""The character set of each result column, by the collation id its definition states, and
the text of its values as row plugins read it (UTF-8).

Row plugins (masking) read values as UTF-8. The server sends a column's values in the
character set of ``character_set_results``, or, when that is ``NULL``, in the column's own (a
``utf32`` column, ``CONVERT(x USING ucs2)``, a ``_utf16`` literal): UTF-16 text read as UTF-8
hides every e-mail address and card number from the detectors. So the values of every column
not in UTF-8 already are converted to UTF-8 before the plugins see them and back after; a
column whose character set has no exact decoding here (:data:`UNDECODABLE`), or whose bytes are
not valid in it, ends the session instead (fail closed).

The server writes the text of its errors and OK messages in ``character_set_results`` too:
:func:`message_codec`, :func:`message_text` and :func:`message_wire` read it and write it back
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

COLLATIONS: dict[str, tuple[int, ...]] = {
    "armscii8": (32, 64, 1056, 1088),
    "ascii": (11, 65, 1035, 1089),
    "big5": (1, 84, 1025, 1108),
    "binary": (63,),
    "cp1250": (26, 34, 44, 66, 99, 1050, 1090),
    "cp1251": (14, 23, 50, 51, 52, 1074, 1075),
    "cp1256": (57, 67, 1081, 1091),
    "cp1257": (29, 58, 59, 1082, 1083),
    "cp850": (4, 80, 1028, 1104),
    "cp852": (40, 81, 1064, 1105),
    "cp866": (36, 68, 1060, 1092),
    "cp932": (95, 96, 1119, 1120),
    "dec8": (3, 69, 1027, 1093),
    "eucjpms": (97, 98, 1121, 1122),
    "euckr": (19, 85, 1043, 1109),
    "gb18030": (248, 249, 250),
    "gb2312": (24, 86, 1048, 1110),
    "gbk": (28, 87, 1052, 1111),
    "geostd8": (92, 93, 1116, 1117),
    "greek": (25, 70, 1049, 1094),
    "hebrew": (16, 71, 1040, 1095),
    "hp8": (6, 72, 1030, 1096),
    "keybcs2": (37, 73, 1061, 1097),
    "koi8r": (7, 74, 1031, 1098),
    "koi8u": (22, 75, 1046, 1099),
    "latin1": (5, 8, 15, 31, 47, 48, 49, 94, 1032, 1071),
    "latin2": (2, 9, 21, 27, 77, 1033, 1101),
    "latin5": (30, 78, 1054, 1102),
    "latin7": (20, 41, 42, 79, 1065, 1103),
    "macce": (38, 43, 1062, 1067),
    "macroman": (39, 53, 1063, 1077),
    "sjis": (13, 88, 1037, 1112),
    "swe7": (10, 82, 1034, 1106),
    "tis620": (18, 89, 1042, 1113),
    "ucs2": (35, 90, *range(128, 152), 159, 640, 641, 642, 1059, 1114, 1152, 1174),
    "ujis": (12, 91, 1036, 1115),
    "utf16": (54, 55, *range(101, 125), 672, 673, 674, 1078, 1079, 1125, 1147),
    "utf16le": (56, 62, 1080, 1086),
    "utf32": (60, 61, *range(160, 184), 736, 737, 738, 1084, 1085, 1184, 1206),
    "utf8mb3": (33, 76, 83, *range(192, 216), 223, 576, 577, 578, 1057, 1107, 1216, 1238),
    "utf8mb4": (45, 46, *range(224, 248), 255, *range(256, 324), 608, 609, 610, 1069, 1070, 1248,
                1270),
}  # fmt: skip
"""Every collation id of MariaDB 10.11 (``information_schema.collations``; the UCA 14.0
collations travel as the ids of their compatible ones) and MySQL 8's (``utf8mb4_0900_*`` 255
to 323, ``gb18030`` 248 to 250, ``utf8mb3_tolower_ci`` 76), by character set."""

CHARSET_OF = {id_: name for name, ids in COLLATIONS.items() for id_ in ids}
"""The character set of each collation id of :data:`COLLATIONS`."""

PASSTHROUGH = frozenset({"utf8mb3", "utf8mb4", "binary"})
"""Character sets whose values plugins read as they are (UTF-8, or bytes)."""

CODECS = {
    "ascii": ("ascii", "surrogateescape"),
    "latin1": ("cp1252", "surrogateescape"),
    "latin2": ("iso8859_2", "strict"),
    "latin5": ("iso8859_9", "strict"),
    "latin7": ("iso8859_13", "strict"),
    "cp850": ("cp850", "strict"),
    "cp852": ("cp852", "strict"),
    "cp1250": ("cp1250", "surrogateescape"),
    "cp1251": ("cp1251", "surrogateescape"),
    "cp1257": ("cp1257", "surrogateescape"),
    "koi8r": ("koi8_r", "strict"),
    "macroman": ("mac_roman", "strict"),
    "macce": ("mac_latin2", "strict"),
    "ucs2": ("utf-16-be", "strict"),
    "utf16": ("utf-16-be", "strict"),
    "utf16le": ("utf-16-le", "strict"),
    "utf32": ("utf-32-be", "strict"),
}
"""The Python codec that decodes each other character set exactly as the server converts it
to UTF-8 (each single-byte table compared with the server's for all 256 bytes; the bytes a
table leaves undefined travel as lone surrogates, reversibly). Every other character set is
:data:`UNDECODABLE`: its tables differ from Python's (``cp866``, ``greek``, ``hebrew``, the
East Asian ones) or Python has none (``swe7``, ``dec8``, ``armscii8``...)."""

UNDECODABLE = frozenset(COLLATIONS) - PASSTHROUGH - CODECS.keys()
"""Character sets whose values cannot be read exactly: a result in one ends the session."""


class UndecodableText(Exception):
    """A result column's values cannot be read exactly as text (fail closed)."""


def column_codecs(collations: Sequence[int]) -> list[tuple[str, str] | None]:
    """The codec and error handler for each column's values, ``None`` where the values are
    read as they are.

    :raises UndecodableText: a column's collation is unknown or in an undecodable set.
    """
    codecs: list[tuple[str, str] | None] = []
    for collation in collations:
        name = CHARSET_OF.get(collation)
        if name is None or name in UNDECODABLE:
            raise UndecodableText(
                f"a result column is in {name or f'collation {collation}'}, a character set"
                " hoopgw cannot read exactly to mask it"
            )
        codecs.append(None if name in PASSTHROUGH else CODECS[name])
    return codecs


def to_utf8(rows: list[list[bytes | None]], codecs: list[tuple[str, str] | None]) -> None:
    """Convert, in place, the values of ``rows`` to UTF-8 by their columns' ``codecs``.

    :raises UndecodableText: a value is not valid in its column's character set.
    """
    _convert(rows, codecs, decoding=True)


def from_utf8(rows: list[list[bytes | None]], codecs: list[tuple[str, str] | None]) -> None:
    """Convert, in place, the values of ``rows`` back from UTF-8 (see :func:`to_utf8`).

    :raises UndecodableText: a value (as a plugin rewrote it) has no form in its set.
    """
    _convert(rows, codecs, decoding=False)


def _convert(
    rows: list[list[bytes | None]], codecs: list[tuple[str, str] | None], *, decoding: bool
) -> None:
    for index, codec in enumerate(codecs):
        if codec is None:
            continue
        name, errors = codec
        for row in rows:
            value = row[index]
            if value is None:
                continue
            try:
                if decoding:
                    row[index] = value.decode(name, errors).encode("utf-8", "surrogateescape")
                else:
                    row[index] = value.decode("utf-8", "surrogateescape").encode(name, errors)
            except UnicodeError as exc:
                raise UndecodableText(
                    f"a value of a result column is not valid in its character set ({exc})"
                ) from exc


def message_codec(charset: str) -> tuple[str, str] | None:
    """The codec and error handler of the server's messages (errors, OK messages) under
    ``character_set_results`` = ``charset`` (as the server reports it), ``None`` where they are
    read as they are (UTF-8; ``NULL`` and ``binary`` send them unconverted, in UTF-8).

    The server converts its messages as it converts rows: in ``filename`` an e-mail address
    reads ``alice@0040example@002ecom``, which no detector knows, so a set without an exact
    decoding here is refused like a result column in it.

    :raises UndecodableText: the character set cannot be read exactly.
    """
    name = charset.strip().lower()
    if name in ("", "null", "utf8", *PASSTHROUGH):
        return None
    if name not in CODECS:
        raise UndecodableText(
            f"server messages are in character_set_results {name}, a character set hoopgw"
            " cannot read exactly to mask them"
        )
    return CODECS[name]


def message_text(message: str, codec: tuple[str, str] | None) -> str:
    """A server message (as the packet codec reads it: UTF-8, other bytes as lone surrogates)
    as text in its ``codec`` (:func:`message_codec`).

    :raises UndecodableText: the message is not valid in that character set.
    """
    if "\x00" in message and (codec is None or not codec[0].startswith(("utf-16", "utf-32"))):
        # What a message in UTF-16 or UTF-32 looks like: the server wrote it in a set it did
        # not report (a routine's own SET, say); read as reported, nothing in it would match.
        raise UndecodableText(
            "a server message holds NUL bytes: it is not in character_set_results as the"
            " server reported it"
        )
    if codec is None:  # (no ASCII shortcut: in UTF-16 or UTF-32 ASCII is not itself)
        if not message.isascii() and any("\udc80" <= c <= "\udcff" for c in message):
            # Bytes not valid in UTF-8: the server wrote it in a set it has not reported yet
            # (a routine's own SET character_set_results, its CALL ending in this error).
            raise UndecodableText(
                "a server message is not valid UTF-8: it is not in character_set_results as"
                " the server reported it"
            )
        return message
    try:
        return message.encode("utf-8", "surrogateescape").decode(*codec)
    except UnicodeDecodeError as exc:
        raise UndecodableText(
            f"a server message is not valid in character_set_results ({exc.reason})"
        ) from exc


def message_wire(text: str, codec: tuple[str, str] | None) -> str:
    """The inverse of :func:`message_text`: ``text`` as the packet codec writes it.

    :raises UndecodableText: a character (as a plugin rewrote it) has no form in the set.
    """
    if codec is None:
        return text
    try:
        return text.encode(*codec).decode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise UndecodableText(
            f"a masked server message has no form in character_set_results ({exc.reason})"
        ) from exc
