"""Statement shapes: what a text parses to, but for the values of its constants.

:func:`tree_key` parses a text with libpg_query, in C, to the JSON form of its raw parse tree,
and removes from that JSON exactly two things: the value of every constant (``A_Const``; its
kind -- integer, string, ... -- stays) and every source position (``location``,
``stmt_location``, ``stmt_len``). Two texts have the same key if and only if their parse trees
are the same but for those: ``... WHERE aid = 1`` and ``... WHERE  aid = 2 -- x`` share a key,
``... WHERE aid = $1`` (a parameter), ``... WHERE aid = '1'`` (a string) and ``... WHERE bid =
1`` each have their own. Nothing is hashed: the key is the tree itself, so two texts never
share a key by collision (a 64-bit fingerprint could).

The JSON comes from libpg_query in C (:func:`hoopgw_postgres.tree.parse_json`), a few
microseconds for a short statement.
"""

from __future__ import annotations

import re

from hoopgw_postgres.tree import ParseError, parse_json

__all__ = ["tree_key"]

# A JSON string; inside one, every quote is escaped (``\"``), so the patterns below, which
# need a bare quote right before and after a field's name, never match inside a string.
_STRING = r'"(?:[^"\\]|\\.)*"'
# A constant as libpg_query writes it (outfuncs, ``_outA_Const``): an empty object for a zero
# or false value, and ``isnull`` for NULL. Its kind stays in the key.
_CONSTANT = re.compile(
    r'"A_Const":\{(?:"(ival|fval|sval|bsval|boolval)":\{(?:"\1":(?:'
    + _STRING
    + r'|[-0-9.eE+a-z]+))?\}|"(isnull)":true)(?:,"location":-?\d+)?\}'
)
# Two patterns with a literal start: the regular expression engine then skips to each match.
_POSITIONS = (re.compile(r'"location":-?\d+'), re.compile(r'"stmt_(?:location|len)":\d+'))


def _constant_kind(match: re.Match[str]) -> str:
    return f'"A_Const":"{match.group(1) or match.group(2)}"'


def tree_key(text: str) -> str | None:
    """The shape of ``text``: its parse tree as JSON without constant values or positions.

    None when the text does not parse or holds a constant in a form this module does not
    know (then no two texts may share a key: fail closed).

    :raises UnicodeError: as :func:`~hoopgw_postgres.tree.parse_json`.
    """
    try:
        tree = parse_json(text)
    except ParseError:
        return None
    key = _CONSTANT.sub(_constant_kind, tree)
    for pattern in _POSITIONS:
        key = pattern.sub("", key)
    if '"A_Const":{' in key:
        return None
    return key
