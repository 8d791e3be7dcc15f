"""Tests for hoopgw_mysql.parameters: COM_STMT_EXECUTE values as an approval binds them."""

from __future__ import annotations

import struct

from hoopgw_mysql import messages as m
from hoopgw_mysql.parameters import LongData, execute_parameters

HEADER = (
    bytes((m.COM_STMT_EXECUTE,)) + (7).to_bytes(4, "little") + b"\0" + (1).to_bytes(4, "little")
)
LONGLONG, VAR_STRING, DOUBLE, DATETIME = 0x08, 0xFD, 0x05, 0x0C


def execute(nulls: int, types: list[tuple[int, int]] | None, values: bytes) -> bytes:
    bound = b"\0"
    if types is not None:
        bound = b"\1" + b"".join(bytes((code, flags)) for code, flags in types)
    return HEADER + bytes((nulls,)) + bound + values


def test_values_are_decoded_with_the_types_the_execution_binds() -> None:
    types = [(LONGLONG, 0x80), (VAR_STRING, 0), (DOUBLE, 0), (DATETIME, 0), (LONGLONG, 0)]
    values = (
        (2**64 - 1).to_bytes(8, "little")
        + m.lenenc_bytes(b"bob")
        + struct.pack("<d", 2.5)
        + bytes((7,)) + (2026).to_bytes(2, "little") + bytes((11, 25, 18, 57, 58))
    )  # fmt: skip
    parameters, bound = execute_parameters(execute(0b10000, types, values), 5, None, {})
    assert [(p.type, p.shown) for p in parameters] == [
        ("LONGLONG UNSIGNED", str(2**64 - 1)),
        ("VAR_STRING", "bob"),
        ("DOUBLE", "2.5"),
        ("DATETIME", "2026-11-25 18:57:58"),
        ("LONGLONG", None),
    ]
    assert parameters[4].value is None and bound == tuple(types)
    assert all(p.format == 1 for p in parameters)


def test_an_execution_without_types_uses_the_previous_ones() -> None:
    previous = ((LONGLONG, 0),)
    [parameter], bound = execute_parameters(
        execute(0, None, (-2).to_bytes(8, "little", signed=True)), 1, previous, {}
    )
    assert (parameter.shown, bound) == ("-2", previous)


def test_long_data_is_bound_by_its_digest_and_shown_by_size() -> None:
    sent = LongData()
    sent.add(b"x" * 10)
    types = [(VAR_STRING, 0), (LONGLONG, 0)]
    payload = execute(0, types, (5).to_bytes(8, "little"))
    parameters, _ = execute_parameters(payload, 2, None, {0: sent})
    assert parameters[0].shown == "(long data, 10 bytes)"
    assert parameters[0].value == sent.digest.digest() and parameters[1].shown == "5"
    other = LongData()
    other.add(b"y" * 10)
    assert execute_parameters(payload, 2, None, {0: other})[0][0].value != parameters[0].value


def test_an_execution_the_gateway_cannot_read_is_bound_to_all_its_bytes() -> None:
    payload = execute(0, None, (1).to_bytes(8, "little"))  # no types bound ever
    [opaque], bound = execute_parameters(payload, 1, None, {})
    assert opaque.value == payload[10:] and opaque.type == "undecoded" and bound is None
    [truncated], _ = execute_parameters(payload[:-3], 1, ((LONGLONG, 0),), {})
    assert truncated.type == "undecoded"


def test_no_parameters_no_values() -> None:
    assert execute_parameters(HEADER, 0, None, {}) == ((), None)
