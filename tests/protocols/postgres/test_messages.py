"""Tests for hoopgw_postgres.messages: framing, every message's codec, and recorded traffic."""

from __future__ import annotations

import importlib.util
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hoopgw_postgres import messages as m
from hypothesis import given
from hypothesis import strategies as st

from hoopgw.errors import HoopgwError


def _load_conversations() -> Any:
    # Tests are not a package; load the recordings by path so pytest and mypy both cope.
    name = "hoopgw_tests_postgres_conversations"
    if name not in sys.modules:
        path = Path(__file__).with_name("conversations.py")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


conversations = _load_conversations()

# -- samples: one or more instances of every message type --------------------------------------

STARTUP_SAMPLES: list[Any] = [
    m.StartupMessage(params={"user": "alice", "database": "shop", "application_name": "ci"}),
    m.StartupMessage(protocol=(3 << 16) | 2, params={"user": "bob", "_pq_.opt": "x"}),
    m.SSLRequest(),
    m.GSSENCRequest(),
    m.CancelRequest(pid=4242, key=b"\x01\x02\x03\x04"),
    m.CancelRequest(pid=-1, key=bytes(range(32))),
]

PASSWORD_SAMPLES: list[Any] = [
    m.PasswordMessage(password="hunter2"),
    m.SASLInitialResponse(mechanism="SCRAM-SHA-256", data=b"n,,n=,r=abc"),
    m.SASLInitialResponse(mechanism="SCRAM-SHA-256", data=None),
    m.SASLResponse(data=b"c=biws,r=abc,p=xyz"),
]

FRONTEND_SAMPLES: list[Any] = [
    m.Query(query="SELECT 1; SELECT 'é'"),
    m.Query(query=""),
    m.Parse(name="s1", query="SELECT $1::int, $2", param_oids=(23, 0)),
    m.Parse(name="", query="SELECT 1"),
    m.Parse(name="big", query="SELECT $1", param_oids=(4294967295,)),
    m.Bind(
        portal="p1",
        statement="s1",
        param_formats=(0, 1),
        params=(b"42", None, b"", b"\x00\xff"),
        result_formats=(1,),
    ),
    m.Bind(portal="", statement=""),
    m.Describe(kind="S", name="s1"),
    m.Describe(kind="P", name=""),
    m.Execute(portal="", max_rows=0),
    m.Execute(portal="p1", max_rows=100),
    m.Close(kind="S", name="s1"),
    m.Close(kind="P", name="p1"),
    m.Sync(),
    m.Flush(),
    m.Terminate(),
    m.CopyData(data=b"1\tada\n"),
    m.CopyData(data=b""),
    m.CopyDone(),
    m.CopyFail(message="client gave up"),
    m.FunctionCall(function_oid=1598, arg_formats=(1,), args=(b"\x00\x01", None), result_format=1),
    m.FunctionCall(function_oid=1),
]

BACKEND_SAMPLES: list[Any] = [
    m.AuthenticationOk(),
    m.AuthenticationCleartextPassword(),
    m.AuthenticationMD5Password(salt=b"\x01\x02\x03\x04"),
    m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
    m.AuthenticationSASLContinue(data=b"r=abc,s=c2FsdA==,i=4096"),
    m.AuthenticationSASLFinal(data=b"v=c2ln"),
    m.BackendKeyData(pid=1234, key=b"\xde\xad\xbe\xef"),
    m.BackendKeyData(pid=1234, key=bytes(range(256))),
    m.ParameterStatus(name="server_version", value="15.20"),
    m.ReadyForQuery(status="I"),
    m.ReadyForQuery(status="T"),
    m.ReadyForQuery(status="E"),
    m.RowDescription(
        fields=(
            m.FieldDescription(
                name="id",
                table_oid=16384,
                column_attr=1,
                type_oid=23,
                type_size=4,
                type_modifier=-1,
                format=0,
            ),
            m.FieldDescription(name="blob", type_oid=4294967295, type_size=-2, format=1),
        )
    ),
    m.RowDescription(fields=()),
    m.DataRow(values=(b"1", None, b"", b"\x00\xff")),
    m.DataRow(values=()),
    m.CommandComplete(tag="INSERT 0 1"),
    m.EmptyQueryResponse(),
    m.ErrorResponse(fields={"S": "ERROR", "V": "ERROR", "C": "22012", "M": "division by zero"}),
    m.NoticeResponse(fields={"S": "NOTICE", "M": "hello", "W": "line 1"}),
    m.NotificationResponse(pid=99, channel="jobs", payload="done"),
    m.NotificationResponse(pid=99, channel="jobs", payload=""),
    m.ParseComplete(),
    m.BindComplete(),
    m.CloseComplete(),
    m.NoData(),
    m.PortalSuspended(),
    m.ParameterDescription(type_oids=(23, 25, 4294967295)),
    m.ParameterDescription(type_oids=()),
    m.CopyInResponse(format=0, column_formats=(0, 0)),
    m.CopyOutResponse(format=1, column_formats=(1,)),
    m.CopyBothResponse(format=0, column_formats=()),
    m.CopyData(data=b"2\t\\N\n"),
    m.CopyDone(),
    m.NegotiateProtocolVersion(newest_version=3 << 16, unrecognized_options=("_pq_.x",)),
    m.NegotiateProtocolVersion(newest_version=3 << 16),
    m.FunctionCallResponse(value=b"\x00\x00\x00\x07"),
    m.FunctionCallResponse(value=None),
]

# Bodies that end with a free-form field: a prefix or an extension can still be valid.
FREE_FORM = (
    m.CancelRequest,
    m.SASLResponse,
    m.CopyData,
    m.AuthenticationSASLContinue,
    m.AuthenticationSASLFinal,
    m.BackendKeyData,
)


def frame_one(wire: bytes, *, startup: bool = False) -> m.RawMessage:
    reader = m.MessageReader(startup=startup)
    (raw,) = reader.feed(wire)
    assert reader.buffered == 0
    assert raw.wire == wire
    return raw


def all_samples() -> list[tuple[Any, Callable[[Any], Any], bytes]]:
    """(message, decoder of its body, expected type byte) for every sample."""
    samples: list[tuple[Any, Callable[[Any], Any], bytes]] = []
    samples += [(s, m.decode_startup, b"") for s in STARTUP_SAMPLES]
    samples += [(s, type(s).decode, b"p") for s in PASSWORD_SAMPLES]
    samples += [(s, partial(m.decode_frontend, s.TYPE), s.TYPE) for s in FRONTEND_SAMPLES]
    samples += [(s, partial(m.decode_backend, s.TYPE), s.TYPE) for s in BACKEND_SAMPLES]
    return samples


SAMPLES = all_samples()
SAMPLE_IDS = [f"{type(s).__name__}-{i}" for i, (s, _, _) in enumerate(SAMPLES)]


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "decode", "message_type"), SAMPLES, ids=SAMPLE_IDS)
def test_round_trip(message: Any, decode: Callable[[Any], Any], message_type: bytes) -> None:
    wire = message.encode()
    raw = frame_one(wire, startup=message_type == b"")
    assert raw.type == message_type
    assert decode(raw.body) == message
    assert decode(memoryview(bytearray(raw.body))) == message


@pytest.mark.parametrize(("message", "decode", "message_type"), SAMPLES, ids=SAMPLE_IDS)
def test_truncated_or_extended_bodies_raise_protocol_violation(
    message: Any, decode: Callable[[Any], Any], message_type: bytes
) -> None:
    body = frame_one(message.encode(), startup=message_type == b"").body
    for end in range(len(body)):
        if isinstance(message, FREE_FORM):
            try:
                decode(body[:end])
            except m.ProtocolViolation:
                pass
        else:
            with pytest.raises(m.ProtocolViolation):
                decode(body[:end])
    if not isinstance(message, FREE_FORM):
        with pytest.raises(m.ProtocolViolation):
            decode(body + b"\x00")


def test_known_encodings() -> None:
    assert m.SSLRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert m.GSSENCRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    assert m.CancelRequest(pid=7, key=b"KEYS").encode() == (
        b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x07KEYS"
    )
    assert m.StartupMessage(params={"user": "u"}).encode() == (
        b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00u\x00\x00"
    )
    assert m.Sync().encode() == b"S\x00\x00\x00\x04"
    assert m.Query(query="SELECT 1").encode() == b"Q\x00\x00\x00\x0dSELECT 1\x00"
    assert m.ReadyForQuery(status="I").encode() == b"Z\x00\x00\x00\x05I"
    assert m.AuthenticationOk().encode() == b"R\x00\x00\x00\x08\x00\x00\x00\x00"
    assert m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256",)).encode() == (
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
    )
    assert m.encode_data_row([b"ab", None]) == (
        b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff"
    )


def test_text_is_lossless_for_bytes_that_are_not_utf8() -> None:
    wire = b"Q\x00\x00\x00\x0eSELECT \xff\xfe\x00"
    query = m.decode_frontend(b"Q", frame_one(wire).body)
    assert isinstance(query, m.Query)
    assert query.encode() == wire


def test_strings_with_nul_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="NUL"):
        m.Query(query="SELECT 1\x00; DROP TABLE t").encode()
    with pytest.raises(ValueError, match="field code"):
        m.ErrorResponse(fields={"SS": "ERROR"}).encode()


def test_bind_counts_are_unsigned() -> None:
    # PostgreSQL accepts up to 65535 parameters: more than a signed Int16 holds.
    bind = m.Bind(portal="", statement="s", params=(b"1",) * 40000)
    assert m.decode_frontend(b"B", frame_one(bind.encode()).body) == bind


# -- error and notice fields ---------------------------------------------------------------------


def test_error_response_builder() -> None:
    error = m.error_response("ERROR", "42501", "blocked by policy", detail="rule r1", hint="ask")
    assert error.encode() == (
        b"E\x00\x00\x00\x3bSERROR\x00VERROR\x00C42501\x00Mblocked by policy\x00Drule r1\x00"
        b"Hask\x00\x00"
    )
    assert (error.severity, error.code, error.message) == ("ERROR", "42501", "blocked by policy")
    assert m.error_response("FATAL", "28P01", "no").fields == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": "no",
    }


@pytest.mark.parametrize(
    ("severity", "code"), [("NOTICE", "42501"), ("ERROR", "4250"), ("ERROR", "42 01")]
)
def test_error_response_builder_rejects_bad_fields(severity: str, code: str) -> None:
    with pytest.raises(ValueError):
        m.error_response(severity, code, "x")


def test_field_accessors_fall_back_to_localized_severity() -> None:
    notice = m.NoticeResponse(fields={"S": "AVIS", "M": "bonjour"})
    assert (notice.severity, notice.code, notice.message) == ("AVIS", "", "bonjour")


# -- malformed messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decode", "body", "match"),
    [
        (m.decode_data_row, b"\x00\x01\xff\xff\xff\xfe", "invalid value length"),
        (m.decode_data_row, b"\x00\x01\x00\x00\x00\x05ab", "truncated"),
        (m.decode_data_row, b"\x00", "truncated"),
        (m.decode_data_row, b"\x00\x00x", "trailing"),
        (lambda b: m.decode_frontend(b"D", b), b"Xname\x00", "kind"),
        (lambda b: m.decode_frontend(b"C", b), b"", "truncated"),
        (
            lambda b: m.decode_frontend(b"B", b),
            b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00",
            "value length",
        ),
        (lambda b: m.decode_backend(b"Z", b), b"X", "status"),
        (lambda b: m.decode_backend(b"G", b), b"\x02\x00\x00", "format"),
        (lambda b: m.decode_backend(b"v", b), b"\x00\x03\x00\x00\xff\xff\xff\xff", "option count"),
        (lambda b: m.decode_backend(b"E", b), b"Mone\x00Mtwo\x00\x00", "repeats"),
        (lambda b: m.decode_backend(b"S", b), b"name\x00value", "NUL"),
        (lambda b: m.decode_backend(b"K", b), b"\x00\x00\x00\x01abc", "key"),
        (lambda b: m.decode_backend(b"K", b), b"\x00\x00\x00\x01" + b"k" * 257, "key"),
        (lambda b: m.decode_backend(b"R", b), b"\x00\x00\x00\x07", "unsupported authentication"),
        (lambda b: m.decode_backend(b"1", b), b"x", "must be empty"),
        (lambda b: m.decode_backend(b"?", b), b"", "unexpected backend"),
        (lambda b: m.decode_frontend(b"p", b), b"secret\x00", "unexpected frontend"),
        (lambda b: m.decode_frontend(b"?", b), b"", "unexpected frontend"),
        (m.AuthenticationOk.decode, b"\x00\x00\x00\x03", "code"),
        (m.SSLRequest.decode, b"\x04\xd2\x16\x30", "SSLRequest"),
        (m.GSSENCRequest.decode, b"\x04\xd2\x16\x2f", "GSSENCRequest"),
        (m.CancelRequest.decode, b"\x04\xd2\x16\x2f\x00\x00\x00\x01abcd", "CancelRequest"),
        (m.decode_startup, b"\x04\xd2\x16\x2e\x00\x00\x00\x01abc", "key"),
        (m.decode_startup, b"\x00\x02\x00\x00user\x00u\x00\x00", "unsupported protocol"),
        (m.decode_startup, b"\x12\x34\x56\x78", "unsupported protocol"),
        (m.decode_startup, b"\x00\x03", "truncated"),
        (m.StartupMessage.decode, b"\x00\x02\x00\x00\x00", "unsupported protocol version 2.0"),
        (m.decode_startup, b"\x00\x03\x00\x00user\x00a\x00user\x00b\x00\x00", "repeats"),
    ],
)
def test_malformed_bodies(decode: Callable[[Any], Any], body: bytes, match: str) -> None:
    with pytest.raises(m.ProtocolViolation, match=match):
        decode(body)


def test_protocol_violation_is_a_hoopgw_error() -> None:
    assert issubclass(m.ProtocolViolation, HoopgwError)


MESSAGE_TYPES = sorted({t for _, _, t in SAMPLES} | {b"?", b"\x00"})


@given(message_type=st.sampled_from(MESSAGE_TYPES), body=st.binary(max_size=64))
def test_garbage_bodies_only_raise_protocol_violation(message_type: bytes, body: bytes) -> None:
    for decode in (m.decode_frontend, m.decode_backend):
        try:
            decode(message_type, body)
        except m.ProtocolViolation:
            pass


# -- DataRow fast path ---------------------------------------------------------------------------

row_values = st.lists(st.none() | st.binary(max_size=40), max_size=30)


@given(values=row_values)
def test_data_row_round_trip(values: list[bytes | None]) -> None:
    wire = m.encode_data_row(values)
    raw = frame_one(wire)
    assert raw.type == b"D"
    assert m.decode_data_row(raw.body) == values
    assert m.DataRow.decode(raw.body).encode() == wire


@given(rows=st.lists(row_values, min_size=1, max_size=20), data=st.data())
def test_data_rows_survive_any_chunking(
    rows: list[list[bytes | None]], data: st.DataObject
) -> None:
    stream = b"".join(m.encode_data_row(values) for values in rows)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    reader = m.MessageReader()
    framed = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framed += reader.feed(stream[start:stop])
    assert [m.decode_data_row(raw.body) for raw in framed] == rows
    assert reader.buffered == 0


def test_decode_data_row_returns_a_list_that_can_be_rewritten() -> None:
    values = m.decode_data_row(m.encode_data_row([b"4111111111111111", b"ada"])[5:])
    values[0] = b"****"
    assert m.decode_data_row(m.encode_data_row(values)[5:]) == [b"****", b"ada"]


# -- framing -------------------------------------------------------------------------------------


def test_reader_returns_messages_with_exact_wire_bytes() -> None:
    stream = m.Query(query="SELECT 1").encode() + m.Sync().encode() + b"Q\x00\x00"
    reader = m.MessageReader()
    first, second = reader.feed(stream)
    assert first == (b"Q", b"SELECT 1\x00", m.Query(query="SELECT 1").encode())
    assert (second.type, second.body, second.wire) == (b"S", b"", b"S\x00\x00\x00\x04")
    assert reader.buffered == 3


def test_feed_raw_gives_plain_tuples() -> None:
    reader = m.MessageReader()
    (message,) = reader.feed_raw(bytearray(m.Sync().encode()))
    assert type(message) is tuple
    assert message == (b"S", b"", b"S\x00\x00\x00\x04")


@pytest.mark.parametrize("split", [1, 2, 5, 6, 11, 1000])
def test_feed_block_cuts_at_message_boundaries_only(split: int) -> None:
    messages = [
        m.RowDescription(fields=(m.FieldDescription(name="v", type_oid=25),)),
        m.DataRow(values=(b"x" * 20,)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    ]
    wire = b"".join(message.encode() for message in messages)
    reader = m.MessageReader()
    blocks, frames = [], []
    for start in range(0, len(wire), split):
        block, starts = reader.feed_block(wire[start : start + split])
        assert starts[0] == 0 and starts[-1] == len(block)
        blocks.append(block)
        frames.extend(m.split_messages(block, starts))
    assert b"".join(blocks) == wire
    assert frames == m.MessageReader().feed(wire)
    assert m.join_messages(frames) == (wire, [0, 27, 58, 72, 78])
    assert reader.buffered == 0


def test_feed_block_refuses_a_bad_length_and_keeps_refusing() -> None:
    reader = m.MessageReader()
    with pytest.raises(m.ProtocolViolation):
        reader.feed_block(b"D\x00\x00\x00\x02")
    with pytest.raises(m.ProtocolViolation):
        reader.feed_block(m.Sync().encode())


def test_reader_accepts_any_bytes_like() -> None:
    wire = m.Query(query="x").encode()
    assert m.MessageReader().feed(memoryview(wire)) == m.MessageReader().feed(bytearray(wire))


def test_message_larger_than_any_chunk() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = m.CopyData(data=payload).encode()
    reader = m.MessageReader()
    for start in range(0, len(wire) - 1000, 1000):
        assert reader.feed(wire[start : start + 1000]) == []
    (raw,) = reader.feed(wire[start + 1000 :])
    assert raw.body == payload
    assert raw.wire == wire


def test_large_message_in_small_chunks_takes_linear_time() -> None:
    wire = m.CopyData(data=b"x" * (8 << 20)).encode()
    reader = m.MessageReader()
    started = time.perf_counter()
    for start in range(0, len(wire), 1024):
        framed = reader.feed_raw(wire[start : start + 1024])
    elapsed = time.perf_counter() - started
    assert len(framed) == 1
    assert elapsed < 2.0, f"re-scanning the buffer on every chunk? took {elapsed:.2f}s"


def test_framing_many_small_rows_is_fast() -> None:
    stream = m.encode_data_row([b"abc", b"hello", None]) * 100_000
    reader = m.MessageReader()
    started = time.perf_counter()
    framed = reader.feed_raw(stream)
    elapsed = time.perf_counter() - started
    assert len(framed) == 100_000
    # The target is well under 0.1 s; the bound is loose so a busy machine does not fail it.
    assert elapsed < 1.0


def test_length_below_four_is_a_violation() -> None:
    with pytest.raises(m.ProtocolViolation, match="invalid length 3"):
        m.MessageReader().feed(b"Q\x00\x00\x00\x03")


def test_length_above_maximum_is_a_violation_before_the_body_arrives() -> None:
    reader = m.MessageReader(max_length=100)
    assert reader.feed(b"d" + struct.pack("!i", 100) + b"x" * 96) != []
    with pytest.raises(m.ProtocolViolation, match="invalid length 101"):
        reader.feed(b"d" + struct.pack("!i", 101))


def test_negative_length_is_a_violation() -> None:
    with pytest.raises(m.ProtocolViolation, match="invalid length"):
        m.MessageReader().feed(b"d\xff\xff\xff\xff")


def test_violation_is_final() -> None:
    reader = m.MessageReader()
    with pytest.raises(m.ProtocolViolation):
        reader.feed(b"Q\x00\x00\x00\x00")
    with pytest.raises(m.ProtocolViolation):
        reader.feed(m.Sync().encode())
    assert reader.buffered == 0


def test_max_length_must_allow_a_header() -> None:
    with pytest.raises(ValueError):
        m.MessageReader(max_length=3)


# -- startup phase -------------------------------------------------------------------------------


def test_startup_switches_to_typed_messages_by_itself() -> None:
    startup = m.StartupMessage(params={"user": "alice"}).encode()
    reader = m.MessageReader(startup=True)
    assert reader.in_startup
    first, second = reader.feed(startup + m.Query(query="SELECT 1").encode())
    assert first.type == b""
    assert m.decode_startup(first.body) == m.StartupMessage(params={"user": "alice"})
    assert second.type == b"Q"
    assert not reader.in_startup


@pytest.mark.parametrize("request_message", [m.SSLRequest(), m.GSSENCRequest()])
def test_encryption_request_keeps_the_startup_phase(request_message: Any) -> None:
    reader = m.MessageReader(startup=True)
    (raw,) = reader.feed(request_message.encode())
    assert m.decode_frontend(raw.type, raw.body) == request_message
    assert reader.in_startup
    (startup,) = reader.feed(m.StartupMessage(params={"user": "u"}).encode())
    assert startup.type == b""
    assert not reader.in_startup


@pytest.mark.parametrize("request_message", [m.SSLRequest(), m.GSSENCRequest()])
def test_data_pipelined_after_encryption_request_is_a_violation(request_message: Any) -> None:
    reader = m.MessageReader(startup=True)
    with pytest.raises(m.ProtocolViolation, match="before the encryption answer"):
        reader.feed(request_message.encode() + m.StartupMessage(params={"user": "u"}).encode())


def test_cancel_request_is_framed() -> None:
    reader = m.MessageReader(startup=True)
    (raw,) = reader.feed(m.CancelRequest(pid=5, key=b"abcd").encode())
    assert m.decode_startup(raw.body) == m.CancelRequest(pid=5, key=b"abcd")
    assert reader.in_startup


@pytest.mark.parametrize(
    ("packet", "match"),
    [
        (b"\x00\x00\x00\x07", "invalid length 7"),
        (b"\x00\x00\x27\x11", "invalid length 10001"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01", "invalid length"),  # a TLS ClientHello
        (b"\x00\x00\x00\x08\x00\x02\x00\x00", "unsupported protocol"),
        (b"\x00\x00\x00\x08\x04\xd2\x16\x31", "request code 80877105"),
    ],
)
def test_bad_startup_packets(packet: bytes, match: str) -> None:
    with pytest.raises(m.ProtocolViolation, match=match):
        m.MessageReader(startup=True).feed(packet)


# -- recorded conversations ----------------------------------------------------------------------

SIDES = [
    pytest.param(conversation, side, id=f"{conversation.name}-{side}")
    for conversation in conversations.ALL
    for side in ("client", "server")
]


def side_bytes(conversation: Any, side: str) -> tuple[bytes, bool]:
    if side == "client":
        return conversation.client, True
    return conversation.server, False


@pytest.mark.parametrize(("conversation", "side"), SIDES)
def test_conversation_frames_and_round_trips(conversation: Any, side: str) -> None:
    data, startup = side_bytes(conversation, side)
    decode = m.decode_frontend if startup else m.decode_backend
    reader = m.MessageReader(startup=startup)
    framed = reader.feed(data)
    assert reader.buffered == 0
    assert b"".join(raw.wire for raw in framed) == data
    for raw in framed:
        assert decode(raw.type, raw.body).encode() == raw.wire


@pytest.mark.parametrize(("conversation", "side"), SIDES)
def test_conversation_split_at_every_position(conversation: Any, side: str) -> None:
    data, startup = side_bytes(conversation, side)
    expected = m.MessageReader(startup=startup).feed(data)
    for split in range(len(data) + 1):
        reader = m.MessageReader(startup=startup)
        assert reader.feed(data[:split]) + reader.feed(data[split:]) == expected, split
    reader = m.MessageReader(startup=startup)
    one_by_one = [raw for i in range(len(data)) for raw in reader.feed(data[i : i + 1])]
    assert one_by_one == expected


def decoded(data: bytes, *, startup: bool) -> list[Any]:
    decode = m.decode_frontend if startup else m.decode_backend
    return [decode(raw.type, raw.body) for raw in m.MessageReader(startup=startup).feed(data)]


def test_recorded_startup() -> None:
    client = decoded(conversations.STARTUP.client, startup=True)
    assert client == [
        m.StartupMessage(
            params={
                "user": "postgres",
                "database": "postgres",
                "application_name": "hoopgw-capture",
            }
        ),
        m.Terminate(),
    ]
    server = decoded(conversations.STARTUP.server, startup=False)
    assert server[0] == m.AuthenticationOk()
    assert m.ParameterStatus(name="server_encoding", value="UTF8") in server
    assert isinstance(server[-2], m.BackendKeyData)
    assert server[-1] == m.ReadyForQuery(status="I")


def test_recorded_simple_query() -> None:
    server = decoded(conversations.SIMPLE_QUERY.server, startup=False)
    rows = [message.values for message in server if isinstance(message, m.DataRow)]
    assert rows == [(b"1", None), (b"two",), ()]
    assert m.EmptyQueryResponse() in server
    tags = [message.tag for message in server if isinstance(message, m.CommandComplete)]
    assert tags == ["SELECT 1", "SELECT 1", "SELECT 1"]


def test_recorded_extended_pipeline() -> None:
    client = decoded(conversations.EXTENDED_PIPELINE.client, startup=True)
    binds = [message for message in client if isinstance(message, m.Bind)]
    assert binds[0].params == (b"\x00\x29", b"x")  # psycopg sends 41 as binary int2
    assert binds[1].params == (None,)
    assert binds[2].result_formats == (1,)
    assert [type(message).__name__ for message in client[-3:]] == ["Sync", "Flush", "Terminate"]
    server = decoded(conversations.EXTENDED_PIPELINE.server, startup=False)
    rows = [message.values for message in server if isinstance(message, m.DataRow)]
    assert rows[0] == (b"42", b"x")
    assert rows[-1] == (b"\x00\x00\x00\x03",)


def test_recorded_copy() -> None:
    client = decoded(conversations.COPY.client, startup=True)
    assert m.CopyData(data=b"1\tada\n2\t\\N\n") in client
    server = decoded(conversations.COPY.server, startup=False)
    assert m.CopyInResponse(format=0, column_formats=(0, 0)) in server
    assert m.CopyOutResponse(format=0, column_formats=(0, 0)) in server
    assert [message.data for message in server if isinstance(message, m.CopyData)] == [
        b"1\tada\n",
        b"2\t\\N\n",
    ]


def test_recorded_error_notice_and_notification() -> None:
    (error,) = [
        message
        for message in decoded(conversations.ERROR.server, startup=False)
        if isinstance(message, m.ErrorResponse)
    ]
    assert (error.severity, error.code, error.message) == ("ERROR", "22012", "division by zero")
    (notice,) = [
        message
        for message in decoded(conversations.NOTICE.server, startup=False)
        if isinstance(message, m.NoticeResponse)
    ]
    assert notice.message == "card 4111-1111-1111-1111"
    assert notice.fields["V"] == "NOTICE"
    (notification,) = [
        message
        for message in decoded(conversations.NOTIFICATION.server, startup=False)
        if isinstance(message, m.NotificationResponse)
    ]
    assert (notification.channel, notification.payload) == ("jobs", "done: 42")


def test_recorded_protocol_negotiation() -> None:
    (startup, _) = decoded(conversations.NEGOTIATE_PROTOCOL.client, startup=True)
    assert startup.protocol == (3 << 16) | 2
    server = decoded(conversations.NEGOTIATE_PROTOCOL.server, startup=False)
    assert server[0] == m.NegotiateProtocolVersion(newest_version=3 << 16)
