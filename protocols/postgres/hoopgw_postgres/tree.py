"""libpg_query's parse trees as plain Python values, and statements deparsed, through C.

The ``pg-query-python`` binding (BSD-3-Clause, bundling libpg_query) returns protobuf messages,
whose decoding and traversal in Python cost several times the parse itself. This module calls
the same bundled library for what the binding does not wrap:

- :func:`parse_json`: ``pg_query_parse``, the parse tree as JSON text, which :func:`parse`
  decodes with the standard library's C decoder into plain dicts and lists;
- :func:`deparsed_statements`: each statement's normalised text, from the protobuf form of the
  tree, split into statements at the wire level and deparsed in C, never decoded in Python.

A node is a pair ``(kind, fields)``: the parse-tree node's name (``SelectStmt``, ``RangeVar``)
and its fields as libpg_query writes them (their JSON names, ``whereClause``; enums by name,
``AEXPR_OP``; fields with a default value left out). libpg_query writes a node's fields in the
order of its struct, which is also the order of the protobuf fields' numbers (both are
generated from the same definitions), so :func:`children` gives a node's child nodes in the
order the binding's ``ListFields`` gave them, and a walk meets nodes in the same order.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator
from ctypes import POINTER, Structure, c_char_p, c_int
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from pg_query import native, pg_query_pb2

__all__ = [
    "Node",
    "ParseError",
    "children",
    "deparsed_statements",
    "parse",
    "parse_json",
    "unwrap",
]

Node = tuple[str, dict[str, Any]]
"""A parse-tree node: its kind and its fields."""


class ParseError(Exception):
    """libpg_query refused the text; the message is the parser's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    _fields_ = [("parse_tree", c_char_p), ("stderr_buffer", c_char_p), ("error", POINTER(_Error))]


class _ProtobufParseResult(Structure):
    _fields_ = [
        ("parse_tree", native.PgQueryProtobuf),
        ("stderr_buffer", c_char_p),
        ("error", POINTER(_Error)),
    ]


class _DeparseResult(Structure):
    _fields_ = [("query", c_char_p), ("error", POINTER(_Error))]


# A handle of its own on the library the binding loaded, so that the argument types set here
# never change the binding's.
_lib = ctypes.CDLL(native.lib._name)
_lib.pg_query_parse.argtypes = [c_char_p]
_lib.pg_query_parse.restype = _ParseResult
_lib.pg_query_free_parse_result.argtypes = [_ParseResult]
_lib.pg_query_free_parse_result.restype = None
_lib.pg_query_parse_protobuf.argtypes = [c_char_p]
_lib.pg_query_parse_protobuf.restype = _ProtobufParseResult
_lib.pg_query_free_protobuf_parse_result.argtypes = [_ProtobufParseResult]
_lib.pg_query_free_protobuf_parse_result.restype = None
_lib.pg_query_deparse_protobuf.argtypes = [native.PgQueryProtobuf]
_lib.pg_query_deparse_protobuf.restype = _DeparseResult
_lib.pg_query_free_deparse_result.argtypes = [_DeparseResult]
_lib.pg_query_free_deparse_result.restype = None


def _message(error: Any) -> str:
    message = error.contents.message
    return message.decode("utf-8", errors="replace") if message else "unknown error"


# The last text parsed and its tree: a statement's shape and then its analysis (when the shape
# is new) parse the same text one after the other.
_last: tuple[str, str] = ("", "")


def parse_json(text: str) -> str:
    """The parse tree of ``text`` as libpg_query's JSON.

    :raises ParseError: when the text does not parse.
    :raises UnicodeError: when ``text`` is not valid Unicode (a lone surrogate), or the tree
        is not valid UTF-8 (never met: refused, not repaired).
    """
    global _last
    last = _last
    if last[0] == text and last[1]:
        return last[1]
    result = _lib.pg_query_parse(text.encode("utf-8"))
    try:
        if result.error:
            raise ParseError(_message(result.error))
        tree = (result.parse_tree or b"{}").decode("utf-8")
    finally:
        _lib.pg_query_free_parse_result(result)
    _last = (text, tree)
    return tree


def parse(text: str) -> dict[str, Any]:
    """The parse tree of ``text`` (a ``ParseResult``: ``version`` and ``stmts``) as plain
    values. :raises ParseError: when the text does not parse."""
    tree: dict[str, Any] = json.loads(parse_json(text))
    return tree


def _message_fields() -> dict[str, dict[str, tuple[str, bool]]]:
    """For each node kind, its fields that hold nodes, by JSON name: the kind of node each
    holds (``Node`` for any, written wrapped as ``{kind: fields}``) and whether a list."""
    return {
        message.name: {
            field.json_name: (field.message_type.name, field.is_repeated)
            for field in message.fields
            if field.type == FieldDescriptor.TYPE_MESSAGE
        }
        for message in pg_query_pb2.DESCRIPTOR.message_types_by_name.values()
    }


_FIELDS = _message_fields()


def unwrap(value: dict[str, Any]) -> Node | None:
    """The node a field of any node kind holds (``{"SelectStmt": {...}}``); None when empty."""
    for kind, fields in value.items():
        return kind, fields
    return None


def children(node: Node) -> list[Node]:
    """The nodes ``node`` holds directly, in field order (empty entries left out)."""
    kind, fields = node
    table = _FIELDS[kind]
    found: list[Node] = []
    for name, value in fields.items():
        held = table.get(name)
        if held is None:
            continue  # a scalar field
        items = value if held[1] else (value,)
        if held[0] == "Node":
            for item in items:
                found.extend(item.items())
        else:
            found.extend((held[0], item) for item in items)
    return found


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """A protobuf message's top-level fields: number, wire type, value (an int or bytes)."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, offset = _varint(data, offset)
            yield number, wire, value
        elif wire == 2:
            length, offset = _varint(data, offset)
            yield number, wire, data[offset : offset + length]
            offset += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _length_delimited(number: int, value: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def deparsed_statements(text: str) -> list[str | None]:
    """Each statement of ``text`` in the normalised spelling of libpg_query's deparser; None
    for a statement it cannot deparse (a few kinds have no deparser).

    Each statement is deparsed alone, as a ``ParseResult`` holding the parser's version and
    one ``RawStmt`` with the statement's node and no position: the bytes the binding's
    ``ParseResult(version=...)`` with ``stmts.add().stmt.CopyFrom(...)`` would serialise.

    :raises ParseError: when the text does not parse.
    """
    result = _lib.pg_query_parse_protobuf(text.encode("utf-8"))
    try:
        if result.error:
            raise ParseError(_message(result.error))
        tree = ctypes.string_at(result.parse_tree.data, result.parse_tree.len)
    finally:
        _lib.pg_query_free_protobuf_parse_result(result)
    version = b""
    texts: list[str | None] = []
    if _single_statement(tree):
        # One statement: its position fields change nothing the deparser writes.
        return [_deparse(tree)]
    for number, _, value in _fields(tree):
        if number == 1:  # ParseResult.version
            version = _encode_varint(1 << 3 | 0) + _encode_varint(value)
        elif number == 2:  # ParseResult.stmts: a RawStmt
            node = b"".join(_length_delimited(1, v) for n, _, v in _fields(value) if n == 1)
            texts.append(_deparse(version + _length_delimited(2, node)))
    return texts


def _single_statement(tree: bytes) -> bool:
    return sum(1 for number, _, _ in _fields(tree) if number == 2) == 1


def _deparse(tree: bytes) -> str | None:
    # The bytes object's own buffer, which it keeps alive for the call: no copy.
    pointer = ctypes.cast(ctypes.c_char_p(tree), ctypes.c_void_p).value
    result = _lib.pg_query_deparse_protobuf(native.PgQueryProtobuf(len=len(tree), data=pointer))
    try:
        if result.error:
            return None
        return (result.query or b"").decode("utf-8")
    finally:
        _lib.pg_query_free_deparse_result(result)
