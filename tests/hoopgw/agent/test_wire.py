"""The hello exchange and stream requests, without I/O."""

from __future__ import annotations

import pytest

from hoopgw.agent.wire import (
    MAX_LINE,
    LineReader,
    ProtocolViolation,
    StreamRefused,
    connect_request,
    encode_hello,
    encode_reply,
    parse_connect_request,
    parse_hello,
    parse_reply,
    parse_stream_answer,
    stream_answer,
)

TOKEN = "hga_0123456789ab_" + "A" * 43


def test_hello_round_trip_in_every_split() -> None:
    data = encode_hello(TOKEN) + b"rest"
    for split in range(1, len(data)):
        reader = LineReader()
        first = reader.feed(data[:split])
        got = first if first is not None else reader.feed(data[split:])
        assert got is not None, split
        line, rest = got
        if first is not None:
            rest += data[split:]
        assert parse_hello(line) == TOKEN
        assert rest == b"rest"


def test_one_byte_at_a_time() -> None:
    reader = LineReader()
    data = encode_reply(name="edge")
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == ("OK edge", b"")


def test_a_line_without_newline_is_bounded() -> None:
    reader = LineReader()
    with pytest.raises(ProtocolViolation, match="no newline"):
        for _ in range(MAX_LINE):
            reader.feed(b"x")


def test_non_ascii_lines_and_other_protocols_are_refused() -> None:
    with pytest.raises(ProtocolViolation):
        LineReader().feed("HOOPGW-AGENT/1 é\n".encode())
    for line in ("GET / HTTP/1.1", "HOOPGW-AGENT/2 token", "HOOPGW-AGENT/1 "):
        with pytest.raises(ProtocolViolation):
            parse_hello(line)


def test_replies() -> None:
    assert parse_reply("OK edge") == "edge"
    with pytest.raises(StreamRefused, match="invalid agent token"):
        parse_reply(encode_reply(error="invalid agent token").decode().strip())
    with pytest.raises(ProtocolViolation):
        parse_reply("HTTP/1.1 400 Bad Request")
    # A refusal is one line, whatever the reason holds.
    assert encode_reply(error="two\nlines") == b"ERR two lines\n"


def test_connect_requests() -> None:
    assert parse_connect_request(connect_request("db.internal", 5432)) == ("db.internal", 5432)
    assert parse_connect_request(connect_request("fd00::5", 22)) == ("fd00::5", 22)
    for headers in (
        [(":method", "GET"), (":authority", "db:5432")],
        [(":method", "CONNECT"), (":authority", "db")],
        [(":method", "CONNECT"), (":authority", "db:0")],
        [(":method", "CONNECT"), (":authority", "db:99999")],
        [(":method", "CONNECT"), (":authority", ":5432")],
        [(":method", "CONNECT"), (":authority", "[fd00::5]5432")],
    ):
        with pytest.raises(ValueError):
            parse_connect_request(headers)


def test_stream_answers() -> None:
    assert parse_stream_answer(stream_answer()) is None
    assert parse_stream_answer(stream_answer("not allowed")) == "not allowed"
    assert parse_stream_answer([(":status", "500")]) == "the agent answered 500"
