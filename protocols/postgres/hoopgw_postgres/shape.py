"""Statement shapes: what a text parses to, but for the values of its constants.

:func:`tree_key` parses a text with libpg_query, in C, to the JSON form of its raw parse tree,
and removes from that JSON exactly two things: the value of every constant (``A_Const``; its
kind -- integer, string, ... -- stays) and every source position (``location``,
``stmt_location``, ``stmt_len``). Two texts have the same key if and only if their parse trees
are the same but for those: ``... WHERE aid = 1`` and ``... WHERE  aid = 2 -- x`` share a key,
``... WHERE aid = $1`` (a parameter), ``... WHERE aid = '1'`` (a string) and ``... WHERE bid =
1`` each have their own. Nothing is hashed: the key is the tree itself, so two texts never
share a key by collision (a 64-bit fingerprint could).

It is the binding's own library (``pg-query-python`` bundles libpg_query, BSD-3-Clause), called
through ``pg_query_parse``, which the binding does not wrap: the JSON parse costs a few
microseconds where the binding's protobuf tree costs several times as much in Python.
"""

from __future__ import annotations

import ctypes
import re
from ctypes import POINTER, Structure, c_char_p, c_int

from pg_query import native

__all__ = ["tree_key"]


class _Error(Structure):
    _fields_ = [
        ("message", c_char_p),
        ("funcname", c_char_p),
        ("filename", c_char_p),
        ("lineno", c_int),
        ("cursorpos", c_int),
        ("context", c_char_p),
    ]


class _ParseResult(Structure):
    _fields_ = [
        ("parse_tree", c_char_p),
        ("stderr_buffer", c_char_p),
        ("error", POINTER(_Error)),
    ]


# A handle of its own on the library the binding loaded: the binding's function objects keep
# their own argument types.
_lib = ctypes.CDLL(native.lib._name)
_lib.pg_query_parse.argtypes = [c_char_p]
_lib.pg_query_parse.restype = _ParseResult
_lib.pg_query_free_parse_result.argtypes = [_ParseResult]
_lib.pg_query_free_parse_result.restype = None

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

    :raises UnicodeEncodeError: when ``text`` is not valid Unicode (a lone surrogate).
    """
    result = _lib.pg_query_parse(text.encode("utf-8"))
    try:
        if result.error or not result.parse_tree:
            return None
        tree = result.parse_tree.decode("utf-8", errors="replace")
    finally:
        _lib.pg_query_free_parse_result(result)
    key = _CONSTANT.sub(_constant_kind, tree)
    for pattern in _POSITIONS:
        key = pattern.sub("", key)
    if '"A_Const":{' in key or "\ufffd" in tree:
        return None
    return key
