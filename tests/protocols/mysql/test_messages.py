"""The MySQL codec: framing (every split down to one byte, 16 MiB packets split and joined) and
the payloads the gateway reads and writes."""

from __future__ import annotations

import pytest
from hoopgw_mysql import messages as m


def frames(*payloads: bytes, seq: int = 0) -> bytes:
    out = b""
    for payload in payloads:
        data, seq = m.encode_packet(payload, seq)
        out += data
    return out


def feed_in_pieces(data: bytes, size: int, reader: m.PacketReader | None = None) -> list[m.Packet]:
    reader = reader or m.PacketReader()
    packets = []
    for i in range(0, len(data), size):
        packets.extend(reader.feed(data[i : i + size]))
    return packets


def test_packets_survive_every_split() -> None:
    payloads = [b"\x03SELECT 1", b"", b"\x00" * 300, b"\x0e"]
    data = frames(*payloads)
    for size in range(1, len(data) + 1):
        packets = feed_in_pieces(data, size)
        assert [p.payload for p in packets] == payloads
        assert [p.seq for p in packets] == [0, 1, 2, 3]


def test_a_payload_of_16_mib_or_more_is_split_and_joined() -> None:
    for length in (m.MAX_PAYLOAD - 1, m.MAX_PAYLOAD, m.MAX_PAYLOAD + 5, 2 * m.MAX_PAYLOAD):
        payload = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
        data, following = m.encode_packet(payload, 3)
        pieces = length // m.MAX_PAYLOAD + 1
        assert following == (3 + pieces) & 0xFF
        assert len(data) == length + 4 * pieces
        [packet] = feed_in_pieces(data, 1 << 20)
        assert packet.payload == payload
        assert packet.pieces == pieces
        assert packet.seq == 3 + pieces - 1


def test_a_packet_longer_than_the_limit_is_refused_before_it_is_buffered() -> None:
    reader = m.PacketReader(max_length=100)
    with pytest.raises(m.ProtocolViolation):
        reader.feed(b"\xff\x00\x00\x00")


def test_handshake_round_trip() -> None:
    greeting = m.Handshake(
        server_version="10.11.6-MariaDB",
        connection_id=42,
        scramble=b"abcdefghijklmnopqrst",
        capabilities=m.CLIENT_PROTOCOL_41
        | m.CLIENT_SECURE_CONNECTION
        | m.CLIENT_PLUGIN_AUTH
        | m.CLIENT_SSL
        | m.CLIENT_DEPRECATE_EOF,
        auth_plugin="mysql_native_password",
    )
    assert m.Handshake.decode(greeting.encode()) == greeting


def test_handshake_response_and_ssl_request() -> None:
    caps = (
        m.CLIENT_PROTOCOL_41
        | m.CLIENT_SECURE_CONNECTION
        | m.CLIENT_PLUGIN_AUTH
        | m.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | m.CLIENT_CONNECT_WITH_DB
        | m.CLIENT_CONNECT_ATTRS
    )
    response = m.HandshakeResponse(
        capabilities=caps,
        user="agent",
        auth_response=b"\x01\x02secret",
        database="shop",
        auth_plugin="mysql_clear_password",
        attributes={"_client_name": "test"},
    )
    assert m.HandshakeResponse.decode(response.encode()) == response
    ssl = m.HandshakeResponse(capabilities=caps | m.CLIENT_SSL, ssl_request=True)
    encoded = ssl.encode()
    assert len(encoded) == m.SSL_REQUEST_LENGTH
    assert m.HandshakeResponse.decode(encoded).ssl_request


def test_a_pre_41_client_is_refused() -> None:
    with pytest.raises(m.ProtocolViolation):
        m.HandshakeResponse.decode(b"\x00" * 32 + b"user\0")


def test_ok_err_eof() -> None:
    ok = m.OkPacket(affected_rows=300, last_insert_id=70000, status=2, warnings=1, info=b"x")
    assert m.OkPacket.decode(ok.encode()) == ok
    err = m.ErrPacket(code=1054, sqlstate="42S22", message="Unknown column 'é'")
    assert m.ErrPacket.decode(err.encode()) == err
    eof = m.EofPacket(warnings=0, status=m.SERVER_MORE_RESULTS_EXISTS)
    assert m.is_eof(eof.encode())
    assert m.terminator_status(eof.encode()) == m.SERVER_MORE_RESULTS_EXISTS


def test_ok_info_with_session_track_keeps_the_state_changes() -> None:
    state = b"\x00\x05\x03abc"  # a session state change block, kept as is
    ok = m.OkPacket(info=m.lenenc_bytes(b"Rows matched: 1") + m.lenenc_bytes(state))
    caps = m.CLIENT_SESSION_TRACK
    assert ok.message(caps) == b"Rows matched: 1"
    rewritten = ok.with_message(b"***", caps)
    assert rewritten.message(caps) == b"***"
    assert rewritten.info.endswith(m.lenenc_bytes(state))


def test_column_definition_round_trip() -> None:
    column = m.ColumnDefinition(
        schema=b"shop",
        table=b"o",
        org_table=b"orders",
        name=b"total",
        org_name=b"total",
        type=0xF6,
        length=12,
        decimals=2,
    )
    decoded = m.ColumnDefinition.decode(column.encode())
    assert decoded == column
    assert decoded.type_name == "NEWDECIMAL"


def test_text_rows() -> None:
    row = [b"1", None, b"", b"x" * 300]
    assert m.decode_text_row(m.encode_text_row(row), 4) == row
    with pytest.raises(m.ProtocolViolation):
        m.decode_text_row(m.encode_text_row(row) + b"\x00", 4)


def test_binary_rows_and_their_null_bitmap() -> None:
    # LONG, NULL in a VAR_STRING, DOUBLE, DATETIME (7 bytes), BLOB, TINY
    types = [0x03, 0xFD, 0x05, 0x0C, 0xFC, 0x01]
    row = [
        (-7).to_bytes(4, "little", signed=True),
        None,
        b"\x00\x00\x00\x00\x00\x00\x04@",
        b"\xe8\x07\x02\x1d\x0d\x0e\x0f",
        b"\x00\xffbin",
        b"\x03",
    ]
    payload = m.encode_binary_row(row, types)
    # the NULL bitmap starts at bit 2: column 1 is bit 3 of the first byte
    assert payload[1] == 0b0000_1000
    assert m.decode_binary_row(payload, types) == row


def test_binary_rows_refuse_a_fixed_width_value_of_another_width() -> None:
    with pytest.raises(ValueError, match="LONG"):
        m.encode_binary_row([b"***"], [0x03])


def test_prepare_ok() -> None:
    ok = m.StmtPrepareOk(statement_id=7, columns=2, params=1)
    assert m.StmtPrepareOk.decode(ok.encode()) == ok


def test_length_encoded_integers() -> None:
    for value in (0, 250, 251, 65535, 65536, 2**24 - 1, 2**24, 2**64 - 1):
        assert m.Cursor(m.lenenc_int(value)).lenenc_int() == value
    assert m.Cursor(b"\xfb").lenenc_int() is None
    with pytest.raises(m.ProtocolViolation):
        m.Cursor(b"\xff").lenenc_int()
    with pytest.raises(m.ProtocolViolation):
        m.Cursor(b"\xfc\x01").lenenc_int()


def test_change_user_round_trip() -> None:
    caps = m.CLIENT_SECURE_CONNECTION | m.CLIENT_PLUGIN_AUTH
    change = m.ChangeUser(
        user="agent", auth_response=b"\x01\x02", database="shop", charset=45, auth_plugin="x"
    )
    assert m.ChangeUser.decode(change.encode(caps), caps) == change
