"""The bind parameter values of a COM_STMT_EXECUTE, as :class:`~hoopgw.session.Parameter` values.

An approval covers a statement's text and the values it runs with (docs/approvals.md). A
COM_STMT_EXECUTE carries a NULL bitmap, the parameter types (only when its
``new_params_bound_flag`` is set: otherwise the server uses the types of the statement's previous
execution) and the values in the binary protocol (MySQL Internals, "COM_STMT_EXECUTE"). A value
sent before with COM_STMT_SEND_LONG_DATA is not in the packet: the server uses that data, so it
is part of the work too (:class:`LongData`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

import attrs

from hoopgw.session import Parameter
from hoopgw_mysql.messages import TYPE_NAMES, Cursor, ProtocolViolation

__all__ = ["LongData", "ParameterTypes", "execute_parameters"]

ParameterTypes = tuple[tuple[int, int], ...]
"""Each parameter's type code and flags byte (0x80: unsigned), as an execution bound them."""

SHOWN_LIMIT = 1000
"""Characters of one value shown to a reviewer; the approval still covers the whole value."""

_EXECUTE_HEADER = 10  # command byte, statement id (4), flags (1), iteration count (4)
_FIXED = {0x01: 1, 0x02: 2, 0x0D: 2, 0x03: 4, 0x09: 4, 0x04: 4, 0x08: 8, 0x05: 8, 0x06: 0}
_DATE_TIME = frozenset({0x07, 0x0A, 0x0B, 0x0C, 0x0E, 0x11, 0x12, 0x13})
_UNSIGNED = 0x80


@attrs.define
class LongData:
    """What COM_STMT_SEND_LONG_DATA sent for one parameter since the last execution."""

    digest: hashlib._Hash = attrs.field(factory=hashlib.sha256)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        """Count one more chunk of the value."""
        self.digest.update(chunk)
        self.size += len(chunk)


def execute_parameters(
    payload: bytes,
    count: int,
    previous: ParameterTypes | None,
    long_data: Mapping[int, LongData],
) -> tuple[tuple[Parameter, ...], ParameterTypes | None]:
    """The parameters of a COM_STMT_EXECUTE ``payload`` of a statement with ``count``
    parameters, and the types they were bound with (for the next execution).

    :param previous: the types the statement's previous execution bound, if any.
    :param long_data: the values sent with COM_STMT_SEND_LONG_DATA, by parameter index.

    A packet the gateway cannot read (no types known, truncated) becomes one parameter that
    holds all its bytes: the work is still bound to exactly what was sent.
    """
    if count == 0:
        return (), previous
    try:
        return _decoded(payload, count, previous, long_data)
    except (ProtocolViolation, ValueError):
        rest = payload[_EXECUTE_HEADER:]
        opaque = Parameter(
            value=rest,
            format=1,
            type="undecoded",
            shown=f"(parameters the gateway could not read, {len(rest)} bytes)",
        )
        return (opaque, *_long_parameters(long_data)), previous


def _decoded(
    payload: bytes,
    count: int,
    previous: ParameterTypes | None,
    long_data: Mapping[int, LongData],
) -> tuple[tuple[Parameter, ...], ParameterTypes]:
    c = Cursor(payload, _EXECUTE_HEADER)
    nulls = c.take((count + 7) // 8)
    if c.uint(1):
        types: ParameterTypes = tuple((c.uint(1), c.uint(1)) for _ in range(count))
    elif previous is not None and len(previous) == count:
        types = previous
    else:
        raise ValueError("no parameter types bound")
    parameters = []
    for index, (code, flags) in enumerate(types):
        name = TYPE_NAMES.get(code, f"TYPE_{code}") + (" UNSIGNED" if flags & _UNSIGNED else "")
        if nulls[index // 8] & (1 << (index % 8)):
            parameters.append(Parameter(value=None, format=1, type=name))
            continue
        sent = long_data.get(index)
        if sent is not None:
            parameters.append(
                Parameter(
                    value=sent.digest.digest(),
                    format=1,
                    type=f"{name} LONG DATA",
                    shown=f"(long data, {sent.size} bytes)",
                )
            )
            continue
        if code in _FIXED:
            value = c.take(_FIXED[code])
        elif code in _DATE_TIME:
            value = c.take(c.uint(1))
        else:
            value = c.lenenc_bytes() or b""
        parameters.append(
            Parameter(value=value, format=1, type=name, shown=_shown(value, code, flags))
        )
    if c.remaining:
        raise ValueError("bytes after the last parameter")
    return tuple(parameters), types


def _long_parameters(long_data: Mapping[int, LongData]) -> list[Parameter]:
    return [
        Parameter(
            value=sent.digest.digest(),
            format=1,
            type=f"LONG DATA {index}",
            shown=f"(long data, {sent.size} bytes)",
        )
        for index, sent in sorted(long_data.items())
    ]


def _shown(value: bytes, code: int, flags: int) -> str:
    if code in (0x04, 0x05):
        return repr(struct.unpack("<f" if code == 0x04 else "<d", value)[0])
    if code in _FIXED:
        return str(int.from_bytes(value, "little", signed=not flags & _UNSIGNED))
    if code in _DATE_TIME:
        return _date_time(value, code)
    text = value.decode("utf-8", "replace")
    if len(text) > SHOWN_LIMIT:
        return f"{text[:SHOWN_LIMIT]}... ({len(value)} bytes)"
    return text


def _date_time(value: bytes, code: int) -> str:
    if code in (0x0B, 0x13):  # TIME: sign, days, hours, minutes, seconds, microseconds
        if len(value) < 8:
            return "00:00:00"
        sign = "-" if value[0] else ""
        days = int.from_bytes(value[1:5], "little")
        hours = days * 24 + value[5]
        micro = f".{int.from_bytes(value[8:12], 'little'):06d}" if len(value) >= 12 else ""
        return f"{sign}{hours:02d}:{value[6]:02d}:{value[7]:02d}{micro}"
    if len(value) < 4:
        return "0000-00-00"
    text = f"{int.from_bytes(value[0:2], 'little'):04d}-{value[2]:02d}-{value[3]:02d}"
    if len(value) >= 7:
        text += f" {value[4]:02d}:{value[5]:02d}:{value[6]:02d}"
    if len(value) >= 11:
        text += f".{int.from_bytes(value[7:11], 'little'):06d}"
    return text
