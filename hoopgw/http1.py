"""HTTP/1.1 messages on the wire, sans-io and strict (RFC 9112): the one reader of every
protocol that speaks HTTP/1.x (``http``, ``kubernetes``), so that no two parsers in the gateway
can read the same bytes two ways.

A :class:`MessageReader` turns the bytes of one direction into events: :class:`Head` (a
request or a status line with its header fields), :class:`Data` (body bytes, de-chunked) and
:class:`End`. It reads one message at a time and stops after its :class:`End`; the next
:meth:`MessageReader.feed` goes on with the bytes it kept (a pipelined request waits there).

The gateway re-frames every message it forwards, so no framing ambiguity can pass through it
to the target; still, a message that two parsers could read differently is refused outright
(request smuggling, RFC 9112 section 11.2), with the status :class:`BadMessage` carries:

- a line ending that is not CRLF (a bare LF or a bare CR, section 2.2);
- a header field line folded onto the next (``obs-fold``, section 5.2) or whitespace between
  a field name and its colon (section 5.1);
- a control character in a field value (RFC 9110 section 5.5);
- both ``Transfer-Encoding`` and ``Content-Length`` (section 6.3, point 3), a transfer coding
  other than exactly ``chunked``, or ``Transfer-Encoding`` on an HTTP/1.0 message;
- a ``Content-Length`` that is not one decimal number, or given twice;
- a chunk size that is not hexadecimal, a chunk without its CRLF.
"""

from __future__ import annotations

import re

import attrs

__all__ = [
    "BadMessage",
    "Data",
    "End",
    "Head",
    "MessageReader",
    "chunk",
    "serialize_head",
]

MAX_HEAD = 64 * 1024
"""Largest request or status line plus header fields accepted, in bytes."""
MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (with extensions) or trailer line accepted."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_STATUS = re.compile(rb"[1-9][0-9][0-9]")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_NO_BODY_STATUS = (204, 304)


class BadMessage(Exception):
    """A message the gateway refuses to read; ``status`` is the HTTP status to answer with
    (when the peer is the client), the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen(kw_only=True)
class Head:
    """A request line or status line with its header fields."""

    version: str
    """``HTTP/1.1`` or ``HTTP/1.0``."""
    fields: tuple[tuple[bytes, bytes], ...]
    """Header fields in order: (lower-case name, value without surrounding whitespace)."""
    method: str = ""
    """The request method (requests only)."""
    target: bytes = b""
    """The request-target exactly as sent (requests only)."""
    status: int = 0
    """The status code (responses only)."""
    reason: bytes = b""
    """The reason phrase (responses only)."""

    def get(self, name: bytes) -> list[bytes]:
        """The values of every field named ``name`` (lower case), in order."""
        return [value for field, value in self.fields if field == name]

    def tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated, lower-cased list elements of every field named ``name``."""
        return {
            item.strip().lower()
            for value in self.get(name)
            for item in value.split(b",")
            if item.strip()
        }


@attrs.frozen(kw_only=True)
class Data:
    """Body bytes, with any chunked framing removed."""

    data: bytes


@attrs.frozen(kw_only=True)
class End:
    """The message is complete."""


Event = Head | Data | End


class MessageReader:
    """Reads the requests (``response=False``) or responses of one connection.

    For responses, call :meth:`expect` with each request's method before its response
    arrives: the body of a response to ``HEAD`` is empty whatever its fields say.
    """

    def __init__(self, *, response: bool, max_head: int = MAX_HEAD) -> None:
        self._response = response
        self._max_head = max_head
        self._buffer = bytearray()
        self._scanned = 0  # bytes of an unfinished line already searched and checked
        self._state = "head"  # head, length, chunk-size, chunk-data, chunk-crlf, trailer, close
        self._remaining = 0
        self._head_only = False
        self.head: Head | None = None
        """The head of the message being read (None before it)."""

    def expect(self, method: str) -> None:
        """The method of the request whose response is read next."""
        self._head_only = method == "HEAD"

    @property
    def between_messages(self) -> bool:
        """Whether no message has begun (nothing of the next one has been read)."""
        return self._state == "head" and not self._buffer

    @property
    def done(self) -> bool:
        """Whether the last message read ended and the next one has not begun."""
        return self._state == "done"

    def feed(self, data: bytes) -> list[Event]:
        """Take ``data`` and return the events it completes, up to the end of one message.

        :raises BadMessage: when the bytes cannot be read unambiguously.
        """
        self._buffer += data
        if self._state == "done":
            self._state = "head"
            self.head = None
        events: list[Event] = []
        while self._state != "done":
            progressed = self._step(events)
            if not progressed:
                break
        return events

    def take_rest(self) -> bytes:
        """The bytes kept after the last message, taken out: the connection switched to
        another protocol (a ``101 Switching Protocols``), so they are not HTTP."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        self._scanned = 0
        return rest

    def eof(self) -> list[Event]:
        """The peer closed its side: the end of a close-delimited body, or an error.

        :raises BadMessage: when a message was cut short.
        """
        if self._state == "close":
            self._state = "done"
            return [End()]
        if self._state in ("head", "done") and not self._buffer:
            return []
        raise BadMessage("the connection closed in the middle of a message", 502)

    # -- states --------------------------------------------------------------------------------

    def _step(self, events: list[Event]) -> bool:
        state = self._state
        if state == "head":
            return self._read_head(events)
        if state == "length":
            return self._read_length(events)
        if state == "close":
            if self._buffer:
                events.append(Data(data=bytes(self._buffer)))
                self._buffer.clear()
            return False
        if state == "chunk-size":
            return self._read_chunk_size()
        if state == "chunk-data":
            return self._read_chunk_data(events)
        if state == "chunk-crlf":
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise BadMessage("a chunk does not end with CRLF")
            del self._buffer[:2]
            self._state = "chunk-size"
            return True
        if state == "trailer":
            return self._read_trailer(events)
        raise AssertionError(state)  # pragma: no cover

    def _read_head(self, events: list[Event]) -> bool:
        if not self._response:
            # RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before a
            # request line (some clients send CRLF after a POST body).
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
                self._scanned = 0
        end = self._line_end(b"\r\n\r\n", self._max_head, "the header section is too large", 431)
        if end < 0:
            return False
        if end + 4 > self._max_head:
            raise BadMessage("the header section is too large", 431)
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        _check_line_endings(raw)
        lines = raw.split(b"\r\n")
        head = self._status_line(lines[0]) if self._response else self._request_line(lines[0])
        fields = tuple(_field(line) for line in lines[1:])
        head = attrs.evolve(head, fields=fields)
        self.head = head
        events.append(head)
        self._frame(head, events)
        return True

    def _request_line(self, line: bytes) -> Head:
        parts = line.split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
            raise BadMessage("malformed request line")
        if not _VERSION.fullmatch(parts[2]):
            raise BadMessage("only HTTP/1.1 and HTTP/1.0 are served", 505)
        return Head(version=parts[2].decode(), fields=(), method=parts[0].decode(), target=parts[1])

    def _status_line(self, line: bytes) -> Head:
        version, _, rest = line.partition(b" ")
        status, _, reason = rest.partition(b" ")
        if not _VERSION.fullmatch(version) or not _STATUS.fullmatch(status) or _CTL.search(reason):
            raise BadMessage("malformed status line from the target", 502)
        return Head(version=version.decode(), fields=(), status=int(status), reason=reason)

    def _frame(self, head: Head, events: list[Event]) -> None:
        """Choose how the body is delimited (RFC 9112 section 6.3)."""
        bad = 502 if self._response else 400
        codings = head.get(b"transfer-encoding")
        lengths = head.get(b"content-length")
        if self._response and (
            self._head_only or head.status < 200 or head.status in _NO_BODY_STATUS
        ):
            self._finish(events)
            return
        if codings:
            if lengths:
                raise BadMessage("both Transfer-Encoding and Content-Length", bad)
            if head.version == "HTTP/1.0":
                raise BadMessage("Transfer-Encoding in an HTTP/1.0 message", bad)
            if len(codings) != 1 or codings[0].lower() != b"chunked":
                raise BadMessage(
                    "the only transfer coding accepted is chunked", 501 if bad == 400 else bad
                )
            self._state = "chunk-size"
            return
        if lengths:
            if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0]):
                raise BadMessage("Content-Length is not one decimal number", bad)
            self._remaining = int(lengths[0])
            if self._remaining == 0:
                self._finish(events)
            else:
                self._state = "length"
            return
        if self._response:
            self._state = "close"
        else:
            self._finish(events)

    def _finish(self, events: list[Event]) -> None:
        events.append(End())
        self._state = "done"

    def _read_length(self, events: list[Event]) -> bool:
        if not self._take_body(events):
            return False
        if self._remaining == 0:
            self._finish(events)
        return True

    def _take_body(self, events: list[Event]) -> bool:
        """Move up to the rest of the body or chunk from the buffer into a Data event; False
        when the buffer is empty."""
        if not self._buffer:
            return False
        take = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(take)]
        self._remaining -= len(take)
        events.append(Data(data=take))
        return True

    def _line_end(self, terminator: bytes, limit: int, too_long: str, status: int = 400) -> int:
        """Where ``terminator`` starts in the buffer, or -1 while it has not come; then the
        bytes so far must be at most ``limit`` and hold no bare CR or LF.

        Each byte is searched and checked once however the line trickles in (a client sending
        a byte at a time costs no more than one sending the line at once).
        """
        start = max(self._scanned - len(terminator) + 1, 0)
        end = self._buffer.find(terminator, start)
        if end >= 0:
            self._scanned = 0  # the caller takes the line out of the buffer
            return end
        if len(self._buffer) > limit:
            raise BadMessage(too_long, status)
        checked = self._scanned
        if checked and self._buffer[checked - 1] == 0x0D:
            checked -= 1  # a CR checked alone: its LF may have come now
        _check_line_endings(bytes(self._buffer[checked:]))
        self._scanned = len(self._buffer)
        return -1

    def _read_chunk_size(self) -> bool:
        end = self._line_end(b"\r\n", MAX_CHUNK_LINE, "a chunk-size line is too long")
        if end < 0:
            return False
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        _check_line_endings(line)
        size, _, extensions = line.partition(b";")
        if not _HEX.fullmatch(size) or _CTL.search(extensions):
            raise BadMessage("malformed chunk size")
        self._remaining = int(size, 16)
        self._state = "chunk-data" if self._remaining else "trailer"
        return True

    def _read_chunk_data(self, events: list[Event]) -> bool:
        if not self._take_body(events):
            return False
        if self._remaining == 0:
            self._state = "chunk-crlf"
        return True

    def _read_trailer(self, events: list[Event]) -> bool:
        # Trailer fields are read and dropped: nothing the gateway judges may hide there.
        end = self._line_end(b"\r\n", MAX_CHUNK_LINE, "a trailer line is too long")
        if end < 0:
            return False
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        if line:
            _check_line_endings(line)
            _field(line)
            return True
        self._finish(events)
        return True


def _check_line_endings(raw: bytes) -> None:
    """Refuse a bare CR or a bare LF (``raw`` holds whole CRLF-ended lines, perhaps a partial
    last one ending in CR)."""
    stripped = raw.replace(b"\r\n", b"")
    if raw.endswith(b"\r"):
        stripped = stripped[:-1]
    if b"\r" in stripped or b"\n" in stripped:
        raise BadMessage("a line ends with a bare CR or LF instead of CRLF")


def _field(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise BadMessage("a folded header field line (obs-fold)")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise BadMessage("malformed header field name")
    value = value.strip(b" \t")
    if _CTL.search(value):
        raise BadMessage("a control character in a header field value")
    return name.lower(), value


def serialize_head(first_line: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    """The bytes of a head: its first line, its fields, the empty line."""
    lines = [first_line, *(name + b": " + value for name, value in fields), b"", b""]
    return b"\r\n".join(lines)


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (empty ``data`` is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"
