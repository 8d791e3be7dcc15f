"""Where a response ends, for every shape of command, with and without CLIENT_DEPRECATE_EOF."""

from __future__ import annotations

import pytest
from hoopgw_mysql import messages as m
from hoopgw_mysql import tracking as t

COLUMN = m.ColumnDefinition(name=b"a").encode()
EOF_ = m.EofPacket().encode()
OK_AS_EOF = m.OkPacket(header=0xFE).encode()
ROW = m.encode_text_row([b"1"])


def parts(reader: t.ResponseReader, *payloads: bytes) -> list[str]:
    out = []
    for payload in payloads:
        assert not reader.done
        out.append(reader.classify(payload).value)
    assert reader.done
    return out


def test_result_set_with_eof_packets() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=False)
    assert parts(reader, b"\x01", COLUMN, EOF_, ROW, ROW, EOF_) == [
        "column_count",
        "column",
        "eof",
        "row",
        "row",
        "ok",
    ]


def test_result_set_with_deprecate_eof() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=True)
    assert parts(reader, b"\x01", COLUMN, ROW, OK_AS_EOF) == ["column_count", "column", "row", "ok"]


def test_an_error_in_the_middle_of_rows_ends_the_response() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=True)
    error = m.ErrPacket(code=1317, message="interrupted").encode()
    assert parts(reader, b"\x01", COLUMN, ROW, error)[-1] == "error"


def test_a_row_of_16_mib_starting_with_0xfe_is_a_row() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=True)
    reader.classify(b"\x01")
    reader.classify(COLUMN)
    big = m.encode_text_row([b"x" * (1 << 24)])
    assert big[:1] == b"\xfe"
    assert reader.classify(big) is t.Part.ROW


def test_more_results_continue_the_response() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=False)
    more = m.OkPacket(status=m.SERVER_MORE_RESULTS_EXISTS).encode()
    assert parts(reader, more, m.OkPacket().encode()) == ["ok", "ok"]


def test_an_open_cursor_ends_the_execute_response() -> None:
    reader = t.ResponseReader(t.RESULT, deprecate_eof=False)
    cursor = m.EofPacket(status=m.SERVER_STATUS_CURSOR_EXISTS).encode()
    assert parts(reader, b"\x01", COLUMN, cursor) == ["column_count", "column", "eof"]
    fetch = t.ResponseReader(t.FETCH, deprecate_eof=False)
    assert parts(fetch, b"\x00\x00\x01\x00\x00\x00", EOF_) == ["row", "ok"]


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_prepare_response(deprecate_eof: bool) -> None:
    reader = t.ResponseReader(t.PREPARE, deprecate_eof=deprecate_eof)
    ok = m.StmtPrepareOk(statement_id=1, columns=1, params=2).encode()
    payloads = [ok, COLUMN, COLUMN] + ([EOF_] if not deprecate_eof else []) + [COLUMN]
    payloads += [EOF_] if not deprecate_eof else []
    parts(reader, *payloads)
    assert reader.prepared == m.StmtPrepareOk(statement_id=1, columns=1, params=2)


def test_prepare_without_columns_or_params() -> None:
    reader = t.ResponseReader(t.PREPARE, deprecate_eof=False)
    assert parts(reader, m.StmtPrepareOk(statement_id=1, columns=0, params=0).encode()) == [
        "prepare_ok"
    ]


def test_field_list_statistics_and_simple() -> None:
    assert parts(t.ResponseReader(t.FIELD_LIST, deprecate_eof=False), COLUMN, EOF_) == [
        "column",
        "eof",
    ]
    assert parts(t.ResponseReader(t.STATISTICS, deprecate_eof=False), b"Uptime: 1") == ["string"]
    assert parts(t.ResponseReader(t.SIMPLE, deprecate_eof=False), EOF_) == ["ok"]


def test_local_infile_requests_are_refused_unless_enabled() -> None:
    with pytest.raises(m.ProtocolViolation, match="LOCAL INFILE"):
        t.ResponseReader(t.RESULT, deprecate_eof=True).classify(b"\xfb/etc/passwd")
    reader = t.ResponseReader(t.RESULT, deprecate_eof=True, local_infile=True)
    assert parts(reader, b"\xfbrows.tsv", m.OkPacket(affected_rows=3).encode()) == [
        "infile",
        "ok",
    ]


def test_a_packet_after_the_end_is_a_violation() -> None:
    reader = t.ResponseReader(t.SIMPLE, deprecate_eof=True)
    reader.classify(m.OkPacket().encode())
    with pytest.raises(m.ProtocolViolation):
        reader.classify(m.OkPacket().encode())
