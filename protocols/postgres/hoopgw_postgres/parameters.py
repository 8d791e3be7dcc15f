"""The bind parameter values of a PostgreSQL Bind, as :class:`~hoopgw.session.Parameter` values.

An approval covers a statement's text and the values it runs with (docs/approvals.md), so the
frontend hands plugins each value exactly as sent, with its format code and the type OID the
Parse gave it, plus a readable form for reviewers (protocol chapter 55.7, "Bind").
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hoopgw.session import Parameter

__all__ = ["bound_parameters"]

SHOWN_LIMIT = 1000
"""Characters of one value shown to a reviewer; the approval still covers the whole value."""

# Binary forms decoded for reviewers (the type OIDs of pg_type; see "Binary format" of each
# type's send/receive function): integers, booleans, floats and text-like types.
_INTEGERS = {21: 2, 23: 4, 20: 8, 26: 4}  # int2, int4, int8, oid
_FLOATS = {700: "!f", 701: "!d"}  # float4, float8
_TEXTS = frozenset({25, 1043, 1042, 19, 114, 3802})  # text, varchar, bpchar, name, json, jsonb


def bound_parameters(
    params: Sequence[bytes | None], formats: Sequence[int], oids: Sequence[int]
) -> tuple[Parameter, ...]:
    """The parameters of a Bind: ``params`` its values, ``formats`` its format codes (none:
    all text; one: for all; else one each), ``oids`` the type OIDs its statement's Parse
    gave (0 or missing: left to the server)."""
    parameters = []
    for index, value in enumerate(params):
        if not formats:
            code = 0
        elif len(formats) == 1:
            code = formats[0]
        else:
            code = formats[index] if index < len(formats) else 0
        oid = oids[index] if index < len(oids) else 0
        parameters.append(
            Parameter(value=value, format=code, type=str(oid), shown=_shown(value, code, oid))
        )
    return tuple(parameters)


def _shown(value: bytes | None, code: int, oid: int) -> str | None:
    if value is None:
        return None
    if code == 0:
        text = value.decode("utf-8", "replace")
    else:
        text = _binary(value, oid)
    if len(text) > SHOWN_LIMIT:
        return f"{text[:SHOWN_LIMIT]}... ({len(value)} bytes)"
    return text


def _binary(value: bytes, oid: int) -> str:
    if _INTEGERS.get(oid) == len(value):
        return str(int.from_bytes(value, "big", signed=oid != 26))
    if oid == 16 and len(value) == 1:
        return "true" if value != b"\0" else "false"
    if oid in _FLOATS and struct.calcsize(_FLOATS[oid]) == len(value):
        return repr(struct.unpack(_FLOATS[oid], value)[0])
    if oid in _TEXTS:
        return (value[1:] if oid == 3802 and value[:1] == b"\x01" else value).decode(
            "utf-8", "replace"
        )
    # Not hex: a reviewer's copy passes masking, which cannot see a value inside hex digits.
    return f"(binary value, type OID {oid}, {len(value)} bytes)"
