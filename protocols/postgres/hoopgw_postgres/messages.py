"""Sans-io codec for the PostgreSQL frontend/backend protocol, version 3.

Two layers:

* **Framing** -- :class:`MessageReader` cuts a byte stream into whole messages without looking
  inside them. It is the proxy's hot path: each message comes back with its exact wire bytes, so
  a message that passes unchanged is forwarded by slicing, never re-encoded.
* **Messages** -- one frozen attrs class per message type, each with ``encode() -> bytes`` (the
  complete wire form, header included) and ``decode(body)`` (the bytes after the length word).
  :func:`decode_frontend` and :func:`decode_backend` pick the class from the type byte.

Text fields are decoded as UTF-8 with ``errors="surrogateescape"``: bytes that are not UTF-8
survive a decode/encode round trip unchanged. Every malformed body -- truncated, a string without
its NUL, trailing bytes, an out-of-range code -- raises :class:`ProtocolViolation`.

Reference: PostgreSQL documentation, chapter "Frontend/Backend Protocol", sections "Message
Flow" and "Message Formats".
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple, Self

import attrs

from hoopgw.errors import HoopgwError

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "MAX_MESSAGE_LENGTH",
    "MAX_STARTUP_LENGTH",
    "PROTOCOL_3_0",
    "SSL_REQUEST_CODE",
    "AuthenticationCleartextPassword",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationRequest",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "BackendKeyData",
    "BackendMessage",
    "Bind",
    "BindComplete",
    "Buffer",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "EmptyQueryResponse",
    "ErrorResponse",
    "Execute",
    "FieldDescription",
    "Flush",
    "FrontendMessage",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "MessageReader",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "ProtocolViolation",
    "Query",
    "RawMessage",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupMessage",
    "StartupPacket",
    "Sync",
    "Terminate",
    "decode_authentication",
    "decode_backend",
    "decode_data_row",
    "decode_frontend",
    "decode_startup",
    "encode_data_row",
    "error_response",
    "join_messages",
    "split_messages",
]


class ProtocolViolation(HoopgwError):
    """The peer sent bytes that are not a valid PostgreSQL protocol message.

    The connection cannot be trusted to stay in step after this; the caller ends it.
    """


PROTOCOL_3_0 = 3 << 16
"""Protocol version 3.0 as carried in a StartupMessage (major in the high 16 bits)."""
CANCEL_REQUEST_CODE = 80877102
"""Code of a CancelRequest (1234 in the high 16 bits, 5678 in the low)."""
SSL_REQUEST_CODE = 80877103
"""Code of an SSLRequest (1234 in the high 16 bits, 5679 in the low)."""
GSSENC_REQUEST_CODE = 80877104
"""Code of a GSSENCRequest (1234 in the high 16 bits, 5680 in the low)."""
MAX_STARTUP_LENGTH = 10000
"""Largest startup packet accepted, as PostgreSQL's own ``MAX_STARTUP_PACKET_LENGTH``."""
MAX_MESSAGE_LENGTH = 0x3FFFFFFF
"""Default ``max_length``: PostgreSQL's largest allocation. Callers should usually set less."""
_MAX_CANCEL_KEY_LENGTH = 256
"""Protocol 3.2 lets the secret key grow to 256 bytes; 3.0 always uses 4."""

_INT8 = struct.Struct("!b")
_INT16 = struct.Struct("!h")
_UINT16 = struct.Struct("!H")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_TYPED_HEADER = struct.Struct("!ci")
_NULL_VALUE = b"\xff\xff\xff\xff"

Buffer = bytes | bytearray | memoryview


# -- framing -------------------------------------------------------------------------------------


class RawMessage(NamedTuple):
    """One framed message, not yet decoded.

    A plain tuple underneath, so ``type_, body, wire = message`` works and equality with the
    tuples of :meth:`MessageReader.feed_raw` holds.
    """

    type: bytes
    """Type byte (``b"Q"``, ``b"D"``, ...); ``b""`` for a startup-phase packet, which has none."""
    body: bytes
    """Bytes after the length word: what ``decode`` takes. A startup packet's body starts with
    its Int32 code."""
    wire: bytes
    """The exact bytes received, header included: forward these when nothing changed."""


_new_tuple = tuple.__new__


class MessageReader:
    """Cuts one direction of a connection into messages.

    A reader for the client side starts with ``startup=True``: it expects untyped packets
    (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and switches to typed messages by
    itself right after a StartupMessage, as the protocol does. A reader for the server side
    reads typed messages from the start. The single-byte answer to an SSLRequest or
    GSSENCRequest is not a message; the caller reads it before feeding this reader.

    Any violation -- a length below the minimum or above ``max_length``, an unknown startup
    code, bytes pipelined after an SSLRequest or GSSENCRequest -- raises
    :class:`ProtocolViolation`, and every later :meth:`feed` raises again.
    """

    __slots__ = ("_buffer", "_failure", "_max_length", "_need", "_startup")

    def __init__(self, *, startup: bool = False, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        """:param startup: expect the untyped startup phase first (the client side).
        :param max_length: largest value accepted in a typed message's length word."""
        if max_length < 4:
            raise ValueError("max_length must be at least 4")
        self._buffer = bytearray()
        self._need = 0
        self._max_length = max_length
        self._startup = startup
        self._failure: str | None = None

    @property
    def in_startup(self) -> bool:
        """True while the reader expects untyped startup packets."""
        return self._startup

    @property
    def buffered(self) -> int:
        """Bytes held back because they do not yet make a whole message."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[RawMessage]:
        """Add received bytes; return every message now complete, in order."""
        return [_new_tuple(RawMessage, message) for message in self.feed_raw(data)]

    def feed_raw(self, data: Buffer) -> list[tuple[bytes, bytes, bytes]]:
        """Like :meth:`feed`, but each message is a plain ``(type, body, wire)`` tuple.

        The fastest form, for the proxy's forwarding path.
        """
        if self._failure is not None:
            raise ProtocolViolation(self._failure)
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            data = bytes(buffer)
            buffer.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        try:
            return self._parse(data)
        except ProtocolViolation as violation:
            self._failure = str(violation)
            buffer.clear()
            raise

    def feed_block(self, data: Buffer) -> tuple[bytes, list[int]]:
        """Like :meth:`feed_raw` for typed messages, without cutting them apart: return the
        complete messages as one block and where each starts, followed by where the last ends
        (message ``i`` is ``block[starts[i]:starts[i + 1]]``).

        The proxy's relay: it forwards the block as received when no message in it changes.
        Only for a reader past the startup phase.
        """
        if self._failure is not None:
            raise ProtocolViolation(self._failure)
        if self._startup:
            raise ValueError("feed_block reads typed messages only")
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return b"", [0]
            data = bytes(buffer)
            buffer.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        starts: list[int] = []
        append = starts.append
        unpack_header = _TYPED_HEADER.unpack_from
        max_length = self._max_length
        pos = 0
        end = len(data)
        need = 0
        while end - pos >= 5:
            message_type, length = unpack_header(data, pos)
            if length < 4 or length > max_length:
                self._failure = (
                    f"message {message_type!r} has invalid length {length}"
                    f" (allowed 4 to {max_length})"
                )
                raise ProtocolViolation(self._failure)
            stop = pos + 1 + length
            if stop > end:
                need = stop - pos
                break
            append(pos)
            pos = stop
        append(pos)
        if pos < end:
            self._buffer += memoryview(data)[pos:]
            self._need = need
            return data[:pos], starts
        return data, starts

    def _parse(self, data: bytes) -> list[tuple[bytes, bytes, bytes]]:
        messages: list[tuple[bytes, bytes, bytes]] = []
        pos = 0
        end = len(data)
        need = 0
        if self._startup:
            pos, need = self._parse_startup(data, messages)
        if not self._startup:
            append = messages.append
            unpack_header = _TYPED_HEADER.unpack_from
            max_length = self._max_length
            while end - pos >= 5:
                message_type, length = unpack_header(data, pos)
                if length < 4 or length > max_length:
                    raise ProtocolViolation(
                        f"message {message_type!r} has invalid length {length}"
                        f" (allowed 4 to {max_length})"
                    )
                stop = pos + 1 + length
                if stop > end:
                    need = stop - pos
                    break
                append((message_type, data[pos + 5 : stop], data[pos:stop]))
                pos = stop
        if pos < end:
            self._buffer += memoryview(data)[pos:]
            self._need = need
        return messages

    def _parse_startup(
        self, data: bytes, messages: list[tuple[bytes, bytes, bytes]]
    ) -> tuple[int, int]:
        """Parse untyped packets until a StartupMessage ends the phase.

        Returns the position reached and the length of an incomplete packet (0 if unknown).
        """
        pos = 0
        end = len(data)
        while self._startup and end - pos >= 4:
            (length,) = _INT32.unpack_from(data, pos)
            if length < 8 or length > MAX_STARTUP_LENGTH:
                raise ProtocolViolation(
                    f"startup packet has invalid length {length}"
                    f" (allowed 8 to {MAX_STARTUP_LENGTH})"
                )
            stop = pos + length
            if stop > end:
                return pos, length
            (code,) = _INT32.unpack_from(data, pos + 4)
            if code >> 16 == 3:
                self._startup = False
            elif code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
                # The client must wait for the one-byte answer; anything sent before it would be
                # read as plaintext although it precedes encryption (CVE-2021-23214).
                if stop != end:
                    raise ProtocolViolation("client sent data before the encryption answer")
            elif code != CANCEL_REQUEST_CODE:
                raise ProtocolViolation(f"unsupported protocol version or request code {code}")
            messages.append((b"", data[pos + 4 : stop], data[pos:stop]))
            pos = stop
        return pos, 0


# -- body parsing and encoding helpers -----------------------------------------------------------


class _BodyReader:
    """Reads the fields of one message body, raising ProtocolViolation instead of overrunning."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, body: Buffer, what: str) -> None:
        self._data = body if type(body) is bytes else bytes(body)
        self._pos = 0
        self._what = what

    def _advance(self, size: int) -> int:
        start = self._pos
        if start + size > len(self._data):
            raise ProtocolViolation(f"{self._what} message is truncated")
        self._pos = start + size
        return start

    def byte(self) -> str:
        start = self._advance(1)
        return chr(self._data[start])

    def int8(self) -> int:
        return _INT8.unpack_from(self._data, self._advance(1))[0]

    def int16(self) -> int:
        return _INT16.unpack_from(self._data, self._advance(2))[0]

    def count16(self) -> int:
        # Counts are sent as Int16 but PostgreSQL reads them unsigned (up to 65535 parameters).
        return _UINT16.unpack_from(self._data, self._advance(2))[0]

    def int32(self) -> int:
        return _INT32.unpack_from(self._data, self._advance(4))[0]

    def oid(self) -> int:
        return _UINT32.unpack_from(self._data, self._advance(4))[0]

    def int16_array(self, count: int) -> tuple[int, ...]:
        return struct.unpack_from(f"!{count}h", self._data, self._advance(2 * count))

    def oid_array(self, count: int) -> tuple[int, ...]:
        return struct.unpack_from(f"!{count}I", self._data, self._advance(4 * count))

    def raw(self, size: int) -> bytes:
        start = self._advance(size)
        return self._data[start : start + size]

    def value(self) -> bytes | None:
        """An Int32 length (-1 for NULL) followed by that many bytes."""
        size = self.int32()
        if size == -1:
            return None
        if size < 0:
            raise ProtocolViolation(f"{self._what} message has invalid value length {size}")
        return self.raw(size)

    def cstring(self) -> str:
        start = self._pos
        stop = self._data.find(b"\x00", start)
        if stop < 0:
            raise ProtocolViolation(f"{self._what} message has a string without its NUL")
        self._pos = stop + 1
        return self._data[start:stop].decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        start = self._pos
        self._pos = len(self._data)
        return self._data[start:]

    def finish(self) -> None:
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
            raise ProtocolViolation(f"{self._what} message has {extra} unexpected trailing bytes")


def join_messages(frames: Sequence[RawMessage]) -> tuple[bytes, list[int]]:
    """Framed messages as :meth:`MessageReader.feed_block` returns them: one block and where
    each message starts, followed by where the last ends."""
    starts = [0]
    for frame in frames:
        starts.append(starts[-1] + len(frame.wire))
    return b"".join(frame.wire for frame in frames), starts


def split_messages(block: bytes, starts: Sequence[int]) -> list[RawMessage]:
    """The messages of a block that :meth:`MessageReader.feed_block` returned."""
    return [
        RawMessage(block[pos : pos + 1], block[pos + 5 : stop], block[pos:stop])
        for pos, stop in itertools.pairwise(starts)
    ]


def _frame(message_type: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return message_type + _INT32.pack(len(body) + 4) + body


def _cstring(text: str) -> bytes:
    encoded = text.encode("utf-8", "surrogateescape")
    if b"\x00" in encoded:
        raise ValueError(f"a protocol string cannot contain NUL: {text!r}")
    return encoded + b"\x00"


def _value(value: bytes | None) -> bytes:
    if value is None:
        return _NULL_VALUE
    return _INT32.pack(len(value)) + value


def _int16_array(values: Sequence[int]) -> bytes:
    return _UINT16.pack(len(values)) + struct.pack(f"!{len(values)}h", *values)


def _values(values: Sequence[bytes | None]) -> bytes:
    return _UINT16.pack(len(values)) + b"".join(_value(value) for value in values)


class _NoFields:
    """Shared code of messages that are only a type byte and the length 4."""

    TYPE: ClassVar[bytes]

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self.TYPE + b"\x00\x00\x00\x04"

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Check that ``body`` is empty, as it must be."""
        if len(body):
            raise ProtocolViolation(f"{cls.__name__} message must be empty, has {len(body)} bytes")
        return cls()


# -- startup phase (untyped) ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StartupMessage:
    """The first packet of a normal connection: protocol version and session parameters."""

    protocol: int = PROTOCOL_3_0
    """Requested version, major in the high 16 bits, minor in the low 16 (3.0 is 196608)."""
    params: dict[str, str]
    """Parameters in the order sent: ``user`` (required), ``database``, ``options``,
    ``application_name``, any run-time setting, and ``_pq_.*`` protocol options."""

    def encode(self) -> bytes:
        """The packet's wire bytes (untyped: Int32 length, Int32 version, pairs, NUL)."""
        pairs = b"".join(_cstring(k) + _cstring(v) for k, v in self.params.items())
        body = _INT32.pack(self.protocol) + pairs + b"\x00"
        return _INT32.pack(len(body) + 4) + body

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a startup packet body (after the length word)."""
        reader = _BodyReader(body, "StartupMessage")
        protocol = reader.int32()
        if protocol >> 16 != 3:
            raise ProtocolViolation(
                f"unsupported protocol version {protocol >> 16}.{protocol & 0xFFFF}"
            )
        params: dict[str, str] = {}
        while True:
            name = reader.cstring()
            if not name:
                break
            if name in params:
                # Reject rather than pick one: the gateway and the server must not disagree about
                # which "user" or "database" the client asked for.
                raise ProtocolViolation(f"StartupMessage repeats parameter {name!r}")
            params[name] = reader.cstring()
        reader.finish()
        return cls(protocol=protocol, params=params)


@attrs.frozen(kw_only=True)
class SSLRequest:
    """The client asks to switch to TLS; the answer is the single byte ``S`` or ``N``."""

    def encode(self) -> bytes:
        """The packet's wire bytes."""
        return _INT32.pack(8) + _INT32.pack(SSL_REQUEST_CODE)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a startup packet body (after the length word)."""
        reader = _BodyReader(body, "SSLRequest")
        if reader.int32() != SSL_REQUEST_CODE:
            raise ProtocolViolation("not an SSLRequest")
        reader.finish()
        return cls()


@attrs.frozen(kw_only=True)
class GSSENCRequest:
    """The client asks for GSSAPI encryption; the answer is the single byte ``G`` or ``N``."""

    def encode(self) -> bytes:
        """The packet's wire bytes."""
        return _INT32.pack(8) + _INT32.pack(GSSENC_REQUEST_CODE)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a startup packet body (after the length word)."""
        reader = _BodyReader(body, "GSSENCRequest")
        if reader.int32() != GSSENC_REQUEST_CODE:
            raise ProtocolViolation("not a GSSENCRequest")
        reader.finish()
        return cls()


@attrs.frozen(kw_only=True)
class CancelRequest:
    """Sent on a new connection to cancel the query running in another one."""

    pid: int
    """Process id from the target session's BackendKeyData."""
    key: bytes
    """Secret key from the target session's BackendKeyData: 4 bytes in protocol 3.0, up to 256
    in 3.2."""

    def encode(self) -> bytes:
        """The packet's wire bytes."""
        body = _INT32.pack(CANCEL_REQUEST_CODE) + _INT32.pack(self.pid) + self.key
        return _INT32.pack(len(body) + 4) + body

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a startup packet body (after the length word)."""
        reader = _BodyReader(body, "CancelRequest")
        if reader.int32() != CANCEL_REQUEST_CODE:
            raise ProtocolViolation("not a CancelRequest")
        pid = reader.int32()
        key = reader.rest()
        if not 4 <= len(key) <= _MAX_CANCEL_KEY_LENGTH:
            raise ProtocolViolation(f"CancelRequest key has invalid length {len(key)}")
        return cls(pid=pid, key=key)


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(body: Buffer) -> StartupPacket:
    """Decode the body of an untyped startup-phase packet (a :class:`RawMessage` with type
    ``b""``) by its code."""
    reader = _BodyReader(body, "startup")
    code = reader.int32()
    if code >> 16 == 3:
        return StartupMessage.decode(body)
    if code == SSL_REQUEST_CODE:
        return SSLRequest.decode(body)
    if code == GSSENC_REQUEST_CODE:
        return GSSENCRequest.decode(body)
    if code == CANCEL_REQUEST_CODE:
        return CancelRequest.decode(body)
    raise ProtocolViolation(f"unsupported protocol version or request code {code}")


# -- frontend messages ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PasswordMessage:
    """``p`` answering AuthenticationCleartextPassword or AuthenticationMD5Password.

    ``p`` also carries SASL messages; the authentication exchange in progress says which class
    decodes it, so :func:`decode_frontend` does not.
    """

    TYPE: ClassVar[bytes] = b"p"
    password: str
    """The password, or ``"md5"`` and 32 hex digits for MD5."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"p", _cstring(self.password))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode the body of a ``p`` message sent in answer to a password request."""
        reader = _BodyReader(body, "PasswordMessage")
        password = reader.cstring()
        reader.finish()
        return cls(password=password)


@attrs.frozen(kw_only=True)
class SASLInitialResponse:
    """``p`` answering AuthenticationSASL: the chosen mechanism and the client-first message."""

    TYPE: ClassVar[bytes] = b"p"
    mechanism: str
    """Chosen mechanism, such as ``SCRAM-SHA-256``."""
    data: bytes | None
    """Mechanism-specific initial response; None when absent (length -1)."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"p", _cstring(self.mechanism), _value(self.data))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode the body of a ``p`` message sent in answer to AuthenticationSASL."""
        reader = _BodyReader(body, "SASLInitialResponse")
        mechanism = reader.cstring()
        data = reader.value()
        reader.finish()
        return cls(mechanism=mechanism, data=data)


@attrs.frozen(kw_only=True)
class SASLResponse:
    """``p`` answering AuthenticationSASLContinue: the next SASL message (client-final)."""

    TYPE: ClassVar[bytes] = b"p"
    data: bytes
    """Mechanism-specific message data."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"p", self.data)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode the body of a ``p`` message sent in answer to AuthenticationSASLContinue."""
        return cls(data=bytes(body))


@attrs.frozen(kw_only=True)
class Query:
    """``Q``: a simple query, one or more statements separated by semicolons."""

    TYPE: ClassVar[bytes] = b"Q"
    query: str
    """The SQL text."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"Q", _cstring(self.query))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``Q`` body."""
        reader = _BodyReader(body, "Query")
        query = reader.cstring()
        reader.finish()
        return cls(query=query)


@attrs.frozen(kw_only=True)
class Parse:
    """``P``: prepare a statement (extended query protocol)."""

    TYPE: ClassVar[bytes] = b"P"
    name: str
    """Prepared statement name; ``""`` is the unnamed statement."""
    query: str
    """One SQL statement, parameters written ``$1``, ``$2``, ..."""
    param_oids: tuple[int, ...] = ()
    """Type OIDs of parameters the client specifies; 0 leaves one to the server."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        oids = self.param_oids
        return _frame(
            b"P",
            _cstring(self.name),
            _cstring(self.query),
            _UINT16.pack(len(oids)),
            struct.pack(f"!{len(oids)}I", *oids),
        )

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``P`` body."""
        reader = _BodyReader(body, "Parse")
        name = reader.cstring()
        query = reader.cstring()
        param_oids = reader.oid_array(reader.count16())
        reader.finish()
        return cls(name=name, query=query, param_oids=param_oids)


@attrs.frozen(kw_only=True)
class Bind:
    """``B``: bind parameter values to a prepared statement, making a portal."""

    TYPE: ClassVar[bytes] = b"B"
    portal: str
    """Destination portal; ``""`` is the unnamed portal."""
    statement: str
    """Source prepared statement; ``""`` is the unnamed statement."""
    param_formats: tuple[int, ...] = ()
    """Parameter format codes (0 text, 1 binary): none (all text), one (for all), or one each."""
    params: tuple[bytes | None, ...] = ()
    """Parameter values; None is SQL NULL."""
    result_formats: tuple[int, ...] = ()
    """Result column format codes, with the same none/one/each rule."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(
            b"B",
            _cstring(self.portal),
            _cstring(self.statement),
            _int16_array(self.param_formats),
            _values(self.params),
            _int16_array(self.result_formats),
        )

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``B`` body."""
        reader = _BodyReader(body, "Bind")
        portal = reader.cstring()
        statement = reader.cstring()
        param_formats = reader.int16_array(reader.count16())
        params = tuple(reader.value() for _ in range(reader.count16()))
        result_formats = reader.int16_array(reader.count16())
        reader.finish()
        return cls(
            portal=portal,
            statement=statement,
            param_formats=param_formats,
            params=params,
            result_formats=result_formats,
        )


def _target_kind(reader: _BodyReader, what: str) -> str:
    kind = reader.byte()
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"{what} message has invalid kind {kind!r}")
    return kind


@attrs.frozen(kw_only=True)
class Describe:
    """``D`` from the client: describe a prepared statement or a portal."""

    TYPE: ClassVar[bytes] = b"D"
    kind: str
    """``"S"`` for a prepared statement, ``"P"`` for a portal."""
    name: str
    """Its name; ``""`` is the unnamed one."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"D", self.kind.encode("ascii"), _cstring(self.name))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a frontend ``D`` body."""
        reader = _BodyReader(body, "Describe")
        kind = _target_kind(reader, "Describe")
        name = reader.cstring()
        reader.finish()
        return cls(kind=kind, name=name)


@attrs.frozen(kw_only=True)
class Execute:
    """``E`` from the client: run a portal."""

    TYPE: ClassVar[bytes] = b"E"
    portal: str
    """Portal name; ``""`` is the unnamed portal."""
    max_rows: int = 0
    """Row limit for this call (0: no limit); the server answers PortalSuspended at the limit."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"E", _cstring(self.portal), _INT32.pack(self.max_rows))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a frontend ``E`` body."""
        reader = _BodyReader(body, "Execute")
        portal = reader.cstring()
        max_rows = reader.int32()
        reader.finish()
        return cls(portal=portal, max_rows=max_rows)


@attrs.frozen(kw_only=True)
class Close:
    """``C`` from the client: close a prepared statement or a portal."""

    TYPE: ClassVar[bytes] = b"C"
    kind: str
    """``"S"`` for a prepared statement, ``"P"`` for a portal."""
    name: str
    """Its name; ``""`` is the unnamed one."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"C", self.kind.encode("ascii"), _cstring(self.name))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a frontend ``C`` body."""
        reader = _BodyReader(body, "Close")
        kind = _target_kind(reader, "Close")
        name = reader.cstring()
        reader.finish()
        return cls(kind=kind, name=name)


@attrs.frozen(kw_only=True)
class Sync(_NoFields):
    """``S`` from the client: end of an extended-query batch; the server answers ReadyForQuery."""

    TYPE: ClassVar[bytes] = b"S"


@attrs.frozen(kw_only=True)
class Flush(_NoFields):
    """``H`` from the client: ask the server to send what it has buffered."""

    TYPE: ClassVar[bytes] = b"H"


@attrs.frozen(kw_only=True)
class Terminate(_NoFields):
    """``X``: the client is closing the connection."""

    TYPE: ClassVar[bytes] = b"X"


@attrs.frozen(kw_only=True)
class CopyData:
    """``d``, either direction: a chunk of COPY data."""

    TYPE: ClassVar[bytes] = b"d"
    data: bytes
    """The chunk; message boundaries need not match row boundaries."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"d", self.data)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``d`` body."""
        return cls(data=bytes(body))


@attrs.frozen(kw_only=True)
class CopyDone(_NoFields):
    """``c``, either direction: the COPY data is complete."""

    TYPE: ClassVar[bytes] = b"c"


@attrs.frozen(kw_only=True)
class CopyFail:
    """``f`` from the client: abort a COPY FROM STDIN."""

    TYPE: ClassVar[bytes] = b"f"
    message: str
    """Why; the server reports it in its ErrorResponse."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"f", _cstring(self.message))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``f`` body."""
        reader = _BodyReader(body, "CopyFail")
        message = reader.cstring()
        reader.finish()
        return cls(message=message)


@attrs.frozen(kw_only=True)
class FunctionCall:
    """``F``: the legacy fast-path function call."""

    TYPE: ClassVar[bytes] = b"F"
    function_oid: int
    """OID of the function to call."""
    arg_formats: tuple[int, ...] = ()
    """Argument format codes, with Bind's none/one/each rule."""
    args: tuple[bytes | None, ...] = ()
    """Argument values; None is SQL NULL."""
    result_format: int = 0
    """Format code of the result."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(
            b"F",
            _UINT32.pack(self.function_oid),
            _int16_array(self.arg_formats),
            _values(self.args),
            _INT16.pack(self.result_format),
        )

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``F`` body."""
        reader = _BodyReader(body, "FunctionCall")
        function_oid = reader.oid()
        arg_formats = reader.int16_array(reader.count16())
        args = tuple(reader.value() for _ in range(reader.count16()))
        result_format = reader.int16()
        reader.finish()
        return cls(
            function_oid=function_oid,
            arg_formats=arg_formats,
            args=args,
            result_format=result_format,
        )


FrontendMessage = (
    StartupPacket
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
)


# -- backend messages ----------------------------------------------------------------------------


class _Authentication:
    """Shared code of the ``R`` messages: an Int32 request code, then per-code data."""

    TYPE: ClassVar[bytes] = b"R"
    CODE: ClassVar[int]

    def _encode_with(self, data: bytes) -> bytes:
        return _frame(b"R", _INT32.pack(self.CODE), data)

    @classmethod
    def _reader(cls, body: Buffer) -> _BodyReader:
        reader = _BodyReader(body, cls.__name__)
        code = reader.int32()
        if code != cls.CODE:
            raise ProtocolViolation(f"{cls.__name__} must have code {cls.CODE}, not {code}")
        return reader


@attrs.frozen(kw_only=True)
class AuthenticationOk(_Authentication):
    """``R`` code 0: authentication succeeded."""

    CODE: ClassVar[int] = 0

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(b"")

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        cls._reader(body).finish()
        return cls()


@attrs.frozen(kw_only=True)
class AuthenticationCleartextPassword(_Authentication):
    """``R`` code 3: send the password in clear text."""

    CODE: ClassVar[int] = 3

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(b"")

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        cls._reader(body).finish()
        return cls()


@attrs.frozen(kw_only=True)
class AuthenticationMD5Password(_Authentication):
    """``R`` code 5: send the MD5-hashed password with this salt."""

    CODE: ClassVar[int] = 5
    salt: bytes
    """Four random bytes."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(self.salt)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        reader = cls._reader(body)
        salt = reader.raw(4)
        reader.finish()
        return cls(salt=salt)


@attrs.frozen(kw_only=True)
class AuthenticationSASL(_Authentication):
    """``R`` code 10: start SASL with one of these mechanisms."""

    CODE: ClassVar[int] = 10
    mechanisms: tuple[str, ...]
    """Mechanism names in the server's order of preference."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(b"".join(_cstring(m) for m in self.mechanisms) + b"\x00")

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        reader = cls._reader(body)
        mechanisms = []
        while mechanism := reader.cstring():
            mechanisms.append(mechanism)
        reader.finish()
        return cls(mechanisms=tuple(mechanisms))


@attrs.frozen(kw_only=True)
class AuthenticationSASLContinue(_Authentication):
    """``R`` code 11: a SASL challenge (server-first message for SCRAM)."""

    CODE: ClassVar[int] = 11
    data: bytes
    """Mechanism-specific data."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(self.data)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        return cls(data=cls._reader(body).rest())


@attrs.frozen(kw_only=True)
class AuthenticationSASLFinal(_Authentication):
    """``R`` code 12: SASL outcome data (server-final message for SCRAM)."""

    CODE: ClassVar[int] = 12
    data: bytes
    """Mechanism-specific data."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return self._encode_with(self.data)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``R`` body with this code."""
        return cls(data=cls._reader(body).rest())


AuthenticationRequest = (
    AuthenticationOk
    | AuthenticationCleartextPassword
    | AuthenticationMD5Password
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
)

_AUTHENTICATION_CLASSES: dict[int, type[AuthenticationRequest]] = {
    cls.CODE: cls
    for cls in (
        AuthenticationOk,
        AuthenticationCleartextPassword,
        AuthenticationMD5Password,
        AuthenticationSASL,
        AuthenticationSASLContinue,
        AuthenticationSASLFinal,
    )
}


def decode_authentication(body: Buffer) -> AuthenticationRequest:
    """Decode an ``R`` body by its request code.

    Methods the gateway cannot perform (Kerberos, GSSAPI, SSPI) raise ProtocolViolation, so an
    upstream that demands them fails the login instead of stalling it.
    """
    code = _BodyReader(body, "Authentication").int32()
    cls = _AUTHENTICATION_CLASSES.get(code)
    if cls is None:
        raise ProtocolViolation(f"unsupported authentication request code {code}")
    return cls.decode(body)


@attrs.frozen(kw_only=True)
class BackendKeyData:
    """``K``: what a client needs to send a CancelRequest for this session."""

    TYPE: ClassVar[bytes] = b"K"
    pid: int
    """Backend process id."""
    key: bytes
    """Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"K", _INT32.pack(self.pid), self.key)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``K`` body."""
        reader = _BodyReader(body, "BackendKeyData")
        pid = reader.int32()
        key = reader.rest()
        if not 4 <= len(key) <= _MAX_CANCEL_KEY_LENGTH:
            raise ProtocolViolation(f"BackendKeyData key has invalid length {len(key)}")
        return cls(pid=pid, key=key)


@attrs.frozen(kw_only=True)
class ParameterStatus:
    """``S`` from the server: the current value of a reported run-time parameter."""

    TYPE: ClassVar[bytes] = b"S"
    name: str
    """Parameter name, such as ``server_version``."""
    value: str
    """Its value."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"S", _cstring(self.name), _cstring(self.value))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a backend ``S`` body."""
        reader = _BodyReader(body, "ParameterStatus")
        name = reader.cstring()
        value = reader.cstring()
        reader.finish()
        return cls(name=name, value=value)


@attrs.frozen(kw_only=True)
class ReadyForQuery:
    """``Z``: the server is ready for a new query cycle."""

    TYPE: ClassVar[bytes] = b"Z"
    status: str
    """Transaction status: ``"I"`` idle, ``"T"`` in a transaction, ``"E"`` in a failed one."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"Z", self.status.encode("ascii"))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``Z`` body."""
        reader = _BodyReader(body, "ReadyForQuery")
        status = reader.byte()
        reader.finish()
        if status not in ("I", "T", "E"):
            raise ProtocolViolation(f"ReadyForQuery has invalid status {status!r}")
        return cls(status=status)


_FIELD = struct.Struct("!IhIhih")


@attrs.frozen(kw_only=True)
class FieldDescription:
    """One column of a RowDescription."""

    name: str
    """Column name (or alias)."""
    table_oid: int = 0
    """OID of the source table, 0 if the column is not a plain table column."""
    column_attr: int = 0
    """Attribute number of the column in that table, 0 if none."""
    type_oid: int = 0
    """OID of the data type."""
    type_size: int = -1
    """``pg_type.typlen``: negative for variable-width types."""
    type_modifier: int = -1
    """``pg_attribute.atttypmod``, type-specific (-1 for none)."""
    format: int = 0
    """0 text, 1 binary; always 0 in a RowDescription answering Describe of a statement."""


@attrs.frozen(kw_only=True)
class RowDescription:
    """``T``: the columns of the rows that follow."""

    TYPE: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]
    """One entry per column, in order."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        parts = [_UINT16.pack(len(self.fields))]
        for f in self.fields:
            parts.append(_cstring(f.name))
            parts.append(
                _FIELD.pack(
                    f.table_oid, f.column_attr, f.type_oid, f.type_size, f.type_modifier, f.format
                )
            )
        return _frame(b"T", *parts)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``T`` body."""
        reader = _BodyReader(body, "RowDescription")
        fields = []
        for _ in range(reader.count16()):
            name = reader.cstring()
            table_oid, column_attr, type_oid, type_size, type_modifier, fmt = _FIELD.unpack(
                reader.raw(_FIELD.size)
            )
            fields.append(
                FieldDescription(
                    name=name,
                    table_oid=table_oid,
                    column_attr=column_attr,
                    type_oid=type_oid,
                    type_size=type_size,
                    type_modifier=type_modifier,
                    format=fmt,
                )
            )
        reader.finish()
        return cls(fields=tuple(fields))


def decode_data_row(body: Buffer) -> list[bytes | None]:
    """Decode a ``D`` (DataRow) body into its column values, None for SQL NULL.

    Returns a list so that masking can rewrite values in place before :func:`encode_data_row`.
    """
    if type(body) is not bytes:
        body = bytes(body)
    unpack_length = _INT32.unpack_from
    values: list[bytes | None] = []
    append = values.append
    try:
        (count,) = _UINT16.unpack_from(body, 0)
        pos = 2
        for _ in range(count):
            (size,) = unpack_length(body, pos)
            pos += 4
            if size >= 0:
                # An overlong size yields a short slice; the position check below catches it.
                append(body[pos : pos + size])
                pos += size
            elif size == -1:
                append(None)
            else:
                raise ProtocolViolation(f"DataRow message has invalid value length {size}")
    except struct.error:
        raise ProtocolViolation("DataRow message is truncated") from None
    if pos > len(body):
        raise ProtocolViolation("DataRow message is truncated")
    if pos < len(body):
        raise ProtocolViolation(f"DataRow message has {len(body) - pos} unexpected trailing bytes")
    return values


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    """The wire bytes of a ``D`` (DataRow) message holding ``values`` (None for SQL NULL)."""
    pack_length = _INT32.pack
    parts = [b"", _UINT16.pack(len(values))]
    append = parts.append
    size = 6  # length word and column count
    for value in values:
        if value is None:
            append(_NULL_VALUE)
            size += 4
        else:
            append(pack_length(len(value)))
            append(value)
            size += 4 + len(value)
    parts[0] = b"D" + pack_length(size)
    return b"".join(parts)


@attrs.frozen(kw_only=True)
class DataRow:
    """``D`` from the server: one result row. See also :func:`decode_data_row`, the fast path."""

    TYPE: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]
    """Column values in the format RowDescription announced; None is SQL NULL."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return encode_data_row(self.values)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a backend ``D`` body."""
        return cls(values=tuple(decode_data_row(body)))


@attrs.frozen(kw_only=True)
class CommandComplete:
    """``C`` from the server: a statement finished."""

    TYPE: ClassVar[bytes] = b"C"
    tag: str
    """Command tag, such as ``SELECT 3``, ``INSERT 0 1`` or ``COPY 2``."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"C", _cstring(self.tag))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a backend ``C`` body."""
        reader = _BodyReader(body, "CommandComplete")
        tag = reader.cstring()
        reader.finish()
        return cls(tag=tag)


@attrs.frozen(kw_only=True)
class EmptyQueryResponse(_NoFields):
    """``I``: answers an empty query string in place of CommandComplete."""

    TYPE: ClassVar[bytes] = b"I"


_ERROR_SEVERITIES = frozenset({"ERROR", "FATAL", "PANIC"})


class _Fields:
    """Shared code of ErrorResponse and NoticeResponse: typed fields, each a code and a string."""

    TYPE: ClassVar[bytes]
    fields: dict[str, str]

    @property
    def severity(self) -> str:
        """Non-localized severity (``V``), or the localized one (``S``) from older servers."""
        return self.fields.get("V") or self.fields.get("S", "")

    @property
    def code(self) -> str:
        """SQLSTATE (``C``)."""
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        """Primary human-readable message (``M``)."""
        return self.fields.get("M", "")

    def encode(self) -> bytes:
        """The message's wire bytes."""
        parts = []
        for code, value in self.fields.items():
            if len(code) != 1 or code == "\x00":
                raise ValueError(f"a field code is one non-NUL character, not {code!r}")
            parts.append(code.encode("latin-1") + _cstring(value))
        parts.append(b"\x00")
        return _frame(self.TYPE, *parts)

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode the body: fields until a zero code byte, which must end it."""
        reader = _BodyReader(body, cls.__name__)
        fields: dict[str, str] = {}
        while (code := reader.byte()) != "\x00":
            if code in fields:
                raise ProtocolViolation(f"{cls.__name__} repeats field {code!r}")
            fields[code] = reader.cstring()
        reader.finish()
        return cls(fields=fields)  # type: ignore[call-arg]


@attrs.frozen(kw_only=True)
class ErrorResponse(_Fields):
    """``E`` from the server: a statement or the session failed."""

    TYPE: ClassVar[bytes] = b"E"
    fields: dict[str, str]
    """Fields in the order sent, keyed by their one-letter code: ``S`` severity (localized),
    ``V`` severity, ``C`` SQLSTATE, ``M`` message, ``D`` detail, ``H`` hint, ``P`` position,
    ``p``/``q`` internal position/query, ``W`` where, ``s`` schema, ``t`` table, ``c`` column,
    ``d`` data type, ``n`` constraint, ``F`` file, ``L`` line, ``R`` routine."""


@attrs.frozen(kw_only=True)
class NoticeResponse(_Fields):
    """``N``: a warning or notice; the statement goes on."""

    TYPE: ClassVar[bytes] = b"N"
    fields: dict[str, str]
    """Fields keyed by one-letter code, as in :class:`ErrorResponse`."""


def error_response(
    severity: str, code: str, message: str, detail: str | None = None, hint: str | None = None
) -> ErrorResponse:
    """Build the ErrorResponse the gateway itself sends; ``.encode()`` gives its bytes.

    :param severity: ``ERROR`` (the statement fails) or ``FATAL`` (the session ends); sent both
        as the localized ``S`` and the non-localized ``V`` field, as servers since 9.6 do.
    :param code: the five-character SQLSTATE, such as ``42501`` (insufficient privilege).
    """
    if severity not in _ERROR_SEVERITIES:
        raise ValueError(f"error severity must be one of {sorted(_ERROR_SEVERITIES)}")
    if len(code) != 5 or not code.isascii() or not code.isalnum():
        raise ValueError(f"SQLSTATE must be five letters or digits, not {code!r}")
    fields = {"S": severity, "V": severity, "C": code, "M": message}
    if detail is not None:
        fields["D"] = detail
    if hint is not None:
        fields["H"] = hint
    return ErrorResponse(fields=fields)


@attrs.frozen(kw_only=True)
class NotificationResponse:
    """``A``: a NOTIFY delivered to this session's LISTEN."""

    TYPE: ClassVar[bytes] = b"A"
    pid: int
    """Process id of the notifying backend."""
    channel: str
    """Channel name."""
    payload: str
    """Payload string (may be empty)."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"A", _INT32.pack(self.pid), _cstring(self.channel), _cstring(self.payload))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode an ``A`` body."""
        reader = _BodyReader(body, "NotificationResponse")
        pid = reader.int32()
        channel = reader.cstring()
        payload = reader.cstring()
        reader.finish()
        return cls(pid=pid, channel=channel, payload=payload)


@attrs.frozen(kw_only=True)
class ParseComplete(_NoFields):
    """``1``: a Parse succeeded."""

    TYPE: ClassVar[bytes] = b"1"


@attrs.frozen(kw_only=True)
class BindComplete(_NoFields):
    """``2``: a Bind succeeded."""

    TYPE: ClassVar[bytes] = b"2"


@attrs.frozen(kw_only=True)
class CloseComplete(_NoFields):
    """``3``: a Close succeeded."""

    TYPE: ClassVar[bytes] = b"3"


@attrs.frozen(kw_only=True)
class NoData(_NoFields):
    """``n``: the described statement or portal returns no rows."""

    TYPE: ClassVar[bytes] = b"n"


@attrs.frozen(kw_only=True)
class PortalSuspended(_NoFields):
    """``s``: an Execute reached its row limit; the portal can be executed again."""

    TYPE: ClassVar[bytes] = b"s"


@attrs.frozen(kw_only=True)
class ParameterDescription:
    """``t``: the parameter types of a described statement."""

    TYPE: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]
    """Type OID of each parameter."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        oids = self.type_oids
        return _frame(b"t", _UINT16.pack(len(oids)), struct.pack(f"!{len(oids)}I", *oids))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``t`` body."""
        reader = _BodyReader(body, "ParameterDescription")
        type_oids = reader.oid_array(reader.count16())
        reader.finish()
        return cls(type_oids=type_oids)


class _CopyResponse:
    """Shared code of the three Copy*Response messages."""

    TYPE: ClassVar[bytes]
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(self.TYPE, _INT8.pack(self.format), _int16_array(self.column_formats))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode the body: overall format, then one format code per column."""
        reader = _BodyReader(body, cls.__name__)
        fmt = reader.int8()
        column_formats = reader.int16_array(reader.count16())
        reader.finish()
        if fmt not in (0, 1):
            raise ProtocolViolation(f"{cls.__name__} has invalid format {fmt}")
        return cls(format=fmt, column_formats=column_formats)  # type: ignore[call-arg]


@attrs.frozen(kw_only=True)
class CopyInResponse(_CopyResponse):
    """``G``: the server is ready for COPY FROM STDIN data."""

    TYPE: ClassVar[bytes] = b"G"
    format: int
    """0 textual (rows separated by newlines), 1 binary."""
    column_formats: tuple[int, ...]
    """Format code per column; all 0 when ``format`` is 0."""


@attrs.frozen(kw_only=True)
class CopyOutResponse(_CopyResponse):
    """``H`` from the server: COPY TO STDOUT data follows."""

    TYPE: ClassVar[bytes] = b"H"
    format: int
    """0 textual, 1 binary."""
    column_formats: tuple[int, ...]
    """Format code per column."""


@attrs.frozen(kw_only=True)
class CopyBothResponse(_CopyResponse):
    """``W``: COPY data flows both ways (streaming replication)."""

    TYPE: ClassVar[bytes] = b"W"
    format: int
    """0 textual, 1 binary."""
    column_formats: tuple[int, ...]
    """Format code per column."""


@attrs.frozen(kw_only=True)
class NegotiateProtocolVersion:
    """``v``: the server does not support the requested minor version or some options."""

    TYPE: ClassVar[bytes] = b"v"
    newest_version: int
    """Newest version the server supports for the requested major. Servers send the full
    version number (3.0 is 196608), not only the minor, though the documentation says minor."""
    unrecognized_options: tuple[str, ...] = ()
    """``_pq_.*`` options of the StartupMessage the server does not know."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        options = self.unrecognized_options
        return _frame(
            b"v",
            _INT32.pack(self.newest_version),
            _INT32.pack(len(options)),
            *(_cstring(option) for option in options),
        )

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``v`` body."""
        reader = _BodyReader(body, "NegotiateProtocolVersion")
        newest_version = reader.int32()
        count = reader.int32()
        if count < 0:
            raise ProtocolViolation(f"NegotiateProtocolVersion has invalid option count {count}")
        options = []
        for _ in range(count):
            options.append(reader.cstring())
        reader.finish()
        return cls(newest_version=newest_version, unrecognized_options=tuple(options))


@attrs.frozen(kw_only=True)
class FunctionCallResponse:
    """``V``: the result of a FunctionCall."""

    TYPE: ClassVar[bytes] = b"V"
    value: bytes | None
    """The result value; None is SQL NULL."""

    def encode(self) -> bytes:
        """The message's wire bytes."""
        return _frame(b"V", _value(self.value))

    @classmethod
    def decode(cls, body: Buffer) -> Self:
        """Decode a ``V`` body."""
        reader = _BodyReader(body, "FunctionCallResponse")
        value = reader.value()
        reader.finish()
        return cls(value=value)


BackendMessage = (
    AuthenticationRequest
    | BackendKeyData
    | ParameterStatus
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | EmptyQueryResponse
    | ErrorResponse
    | NoticeResponse
    | NotificationResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | PortalSuspended
    | ParameterDescription
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | CopyData
    | CopyDone
    | NegotiateProtocolVersion
    | FunctionCallResponse
)


# -- dispatch ------------------------------------------------------------------------------------

_FRONTEND_DECODERS: dict[bytes, Callable[[Buffer], FrontendMessage]] = {
    b"": decode_startup,
    **{
        cls.TYPE: cls.decode
        for cls in (
            Query,
            Parse,
            Bind,
            Describe,
            Execute,
            Close,
            Sync,
            Flush,
            Terminate,
            CopyData,
            CopyDone,
            CopyFail,
            FunctionCall,
        )
    },
}

_BACKEND_DECODERS: dict[bytes, Callable[[Buffer], BackendMessage]] = {
    b"R": decode_authentication,
    **{
        cls.TYPE: cls.decode
        for cls in (
            BackendKeyData,
            ParameterStatus,
            ReadyForQuery,
            RowDescription,
            DataRow,
            CommandComplete,
            EmptyQueryResponse,
            ErrorResponse,
            NoticeResponse,
            NotificationResponse,
            ParseComplete,
            BindComplete,
            CloseComplete,
            NoData,
            PortalSuspended,
            ParameterDescription,
            CopyInResponse,
            CopyOutResponse,
            CopyBothResponse,
            CopyData,
            CopyDone,
            NegotiateProtocolVersion,
            FunctionCallResponse,
        )
    },
}


def decode_frontend(message_type: bytes, body: Buffer) -> FrontendMessage:
    """Decode a message the client sent, startup packets (type ``b""``) included.

    ``p`` is not decoded here: whether it is a PasswordMessage, SASLInitialResponse or
    SASLResponse depends on the authentication request it answers, so the exchange decodes it
    with the class it expects. ``p`` and unknown types raise ProtocolViolation.
    """
    decoder = _FRONTEND_DECODERS.get(message_type)
    if decoder is None:
        raise ProtocolViolation(f"unexpected frontend message type {message_type!r}")
    return decoder(body)


def decode_backend(message_type: bytes, body: Buffer) -> BackendMessage:
    """Decode a message the server sent; unknown types raise ProtocolViolation."""
    decoder = _BACKEND_DECODERS.get(message_type)
    if decoder is None:
        raise ProtocolViolation(f"unexpected backend message type {message_type!r}")
    return decoder(body)
