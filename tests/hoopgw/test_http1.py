"""The strict HTTP/1.1 reader: every split of the bytes reads alike; smuggling shapes are
refused (RFC 9112 sections 2.2, 5.1, 5.2, 6.3, 7.1)."""

from __future__ import annotations

import pytest

from hoopgw import http1
from hoopgw.http1 import (
    BadMessage,
    Data,
    End,
    Event,
    Head,
    MessageReader,
    chunk,
    serialize_head,
)


def read_all(
    raw: bytes, *, response: bool = False, split: int = 0, method: str = "GET"
) -> list[Event]:
    """Feed ``raw`` in pieces of ``split`` bytes (all at once for 0), reading message after
    message; body pieces are joined."""
    reader = MessageReader(response=response)
    reader.expect(method)
    events: list[Event] = []
    pieces = [raw] if not split else [raw[i : i + split] for i in range(0, len(raw), split)]
    for piece in pieces:
        events += reader.feed(piece)
        while reader.done:
            more = reader.feed(b"")
            if not more:
                break
            events += more
    if response:
        events += reader.eof()
    return _joined(events)


def _joined(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(data=out[-1].data + event.data)
        elif not (isinstance(event, Data) and not event.data):
            out.append(event)
    return out


REQUESTS = [
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nTrailer-Field: x\r\n\r\n",
]


@pytest.mark.parametrize("raw", REQUESTS)
@pytest.mark.parametrize("split", [0, 1, 2, 7])
def test_requests_read_alike_in_every_split(raw: bytes, split: int) -> None:
    events = read_all(raw, split=split)
    head = events[0]
    assert isinstance(head, Head) and head.get(b"host") == [b"x"]
    assert isinstance(events[-1], End)
    bodies = [e.data for e in events if isinstance(e, Data)]
    assert b"".join(bodies) in (b"", b"hello")


def test_pipelined_requests_are_read_one_at_a_time() -> None:
    reader = MessageReader(response=False)
    first = reader.feed(REQUESTS[0] + REQUESTS[1])
    assert [type(e) for e in first] == [Head, End]
    second = reader.feed(b"")
    assert isinstance(second[0], Head) and second[0].method == "POST"


def test_head_fields_lower_case_names_and_trimmed_values() -> None:
    [head, _] = read_all(b"GET / HTTP/1.1\r\nHost:  x \r\nX-A: 1, 2\r\nx-a: 3\r\n\r\n")
    assert isinstance(head, Head)
    assert head.get(b"x-a") == [b"1, 2", b"3"]
    assert head.tokens(b"x-a") == {b"1", b"2", b"3"}
    assert head.target == b"/" and head.version == "HTTP/1.1"


SMUGGLING = [
    # Both framings (the classic CL.TE / TE.CL desync).
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    # Two Content-Lengths, or a list.
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
    # A transfer coding other than exactly chunked.
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    # obs-fold, whitespace before the colon.
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
    # Bare CR, bare LF.
    b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
    # A control character in a value.
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    # Malformed request lines.
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    # Malformed chunks.
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
]


@pytest.mark.parametrize("raw", SMUGGLING)
@pytest.mark.parametrize("split", [0, 1])
def test_ambiguous_messages_are_refused(raw: bytes, split: int) -> None:
    with pytest.raises(BadMessage):
        read_all(raw, split=split)


def test_refusal_statuses() -> None:
    with pytest.raises(BadMessage) as exc:
        read_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert exc.value.status == 501
    with pytest.raises(BadMessage) as exc:
        read_all(b"GET / HTTP/3\r\n\r\n")
    assert exc.value.status == 505


def test_a_head_too_large_is_refused_before_its_end() -> None:
    reader = MessageReader(response=False, max_head=100)
    with pytest.raises(BadMessage) as exc:
        reader.feed(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 200)
    assert exc.value.status == 431


@pytest.mark.parametrize("split", [0, 1, 3])
def test_responses_delimited_by_length_chunks_or_close(split: int) -> None:
    by_length = read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", response=True)
    chunked = read_all(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        response=True,
        split=split,
    )
    closed = read_all(b"HTTP/1.1 200 OK\r\n\r\nabc", response=True, split=split)
    for events in (by_length, chunked, closed):
        assert [type(e) for e in events] == [Head, Data, End]
        assert events[1] == Data(data=b"abc")


def test_no_body_for_head_204_304_and_interim_responses() -> None:
    head = read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", response=True, method="HEAD")
    assert [type(e) for e in head] == [Head, End]
    for status in (b"204 No Content", b"304 Not Modified"):
        events = read_all(b"HTTP/1.1 " + status + b"\r\n\r\n", response=True)
        assert [type(e) for e in events] == [Head, End]
    interim = read_all(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        response=True,
    )
    assert [type(e) for e in interim] == [Head, End, Head, Data, End]


def test_a_response_cut_short_is_an_error() -> None:
    reader = MessageReader(response=True)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(BadMessage):
        reader.eof()


def test_malformed_status_line_is_a_bad_gateway() -> None:
    with pytest.raises(BadMessage) as exc:
        read_all(b"HTTP/1.1 2000 OK\r\n\r\n", response=True)
    assert exc.value.status == 502


def test_serialisation() -> None:
    assert serialize_head(b"GET / HTTP/1.1", [(b"host", b"x")]) == (
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"") == b"0\r\n\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 30000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;" + b"e" * 4000 + b"\r\n{}\r\n0\r\nX-T: " + b"t" * 4000 + b"\r\n\r\n",
    ],
    ids=["head", "chunk-and-trailer-lines"],
)
def test_a_line_trickling_in_a_byte_at_a_time_is_checked_once(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Re-reading what came before at each byte would make a slow client cost the gateway
    # the square of what it sends (64 KiB of head: 2 GiB scanned).
    checked: list[int] = []
    check = http1._check_line_endings

    def counting(data: bytes) -> None:
        checked.append(len(data))
        check(data)

    monkeypatch.setattr(http1, "_check_line_endings", counting)
    assert read_all(raw, split=1) == read_all(raw)
    assert sum(checked) < 5 * len(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\r\n{}\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n\r\n",
    ],
)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_a_bare_cr_or_lf_is_caught_across_pieces(raw: bytes, split: int) -> None:
    with pytest.raises(BadMessage):
        read_all(raw, split=split)
