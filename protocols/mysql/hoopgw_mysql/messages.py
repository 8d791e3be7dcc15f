"""Sans-io codec for the MySQL client/server protocol (protocol 10, ``CLIENT_PROTOCOL_41``).

Two layers:

* **Framing** -- :class:`PacketReader` cuts a byte stream into *logical* packets: a payload of
  16 MiB - 1 bytes or more travels as several physical packets (each full one followed by the
  next, the last shorter, possibly empty) and comes back joined, with the sequence id of its
  last piece. :func:`encode_packet` splits a payload again and numbers the pieces, so a proxy
  that rewrites a payload (a masked row grows or shrinks) re-frames it correctly.
* **Payloads** -- one frozen attrs class per message the gateway reads or writes, with
  ``encode() -> bytes`` (the payload, no header) and ``decode(payload)``.

Every malformed payload -- truncated, a length past its end, an unknown value where the
protocol allows a fixed set -- raises :class:`ProtocolViolation`.

Reference: the MySQL Internals manual, "Client/Server Protocol" (packets, handshake,
text and binary protocols), and MariaDB's "Clients & Utilities / Server & Client protocol".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Self

import attrs

from hoopgw.errors import HoopgwError

MAX_PAYLOAD = 0xFFFFFF
"""Largest payload of one physical packet; a longer logical payload is split."""


class ProtocolViolation(HoopgwError):
    """The peer sent bytes that are not a valid MySQL protocol packet; the caller ends the
    connection (it cannot be trusted to stay in step)."""


# -- capability flags (Internals: "Capability Flags") ---------------------------------------

CLIENT_LONG_PASSWORD = 1
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_NO_SCHEMA = 1 << 4
CLIENT_COMPRESS = 1 << 5
CLIENT_ODBC = 1 << 6
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_IGNORE_SPACE = 1 << 8
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_IGNORE_SIGPIPE = 1 << 12
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_RESERVED = 1 << 14
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
CLIENT_ZSTD_COMPRESSION = 1 << 26
CLIENT_QUERY_ATTRIBUTES = 1 << 27

# -- status flags ------------------------------------------------------------------------------

SERVER_STATUS_IN_TRANS = 1
SERVER_STATUS_AUTOCOMMIT = 2
SERVER_MORE_RESULTS_EXISTS = 8
SERVER_STATUS_CURSOR_EXISTS = 0x40
SERVER_STATUS_LAST_ROW_SENT = 0x80
SERVER_SESSION_STATE_CHANGED = 0x4000

SESSION_TRACK_SYSTEM_VARIABLES = 0x00
"""The type of a session-state entry that reports a system variable's new value (MySQL
Internals, OK_Packet, ``session_state_info``)."""

# -- commands (Internals: "Text Protocol", "Prepared Statements", "Utility Commands") ----------

COM_SLEEP = 0x00
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_CREATE_DB = 0x05
COM_DROP_DB = 0x06
COM_REFRESH = 0x07
COM_SHUTDOWN = 0x08
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_CONNECT = 0x0B
COM_PROCESS_KILL = 0x0C
COM_DEBUG = 0x0D
COM_PING = 0x0E
COM_TIME = 0x0F
COM_DELAYED_INSERT = 0x10
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_TABLE_DUMP = 0x13
COM_CONNECT_OUT = 0x14
COM_REGISTER_SLAVE = 0x15
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_DAEMON = 0x1D
COM_BINLOG_DUMP_GTID = 0x1E
COM_RESET_CONNECTION = 0x1F

COMMAND_NAMES = {
    value: name[4:].lower()
    for name, value in globals().copy().items()
    if name.startswith("COM_") and isinstance(value, int)
}
"""Command byte to its name without ``COM_``, lower-cased (``query``, ``stmt_prepare``...)."""

# -- column types (Internals: "Column Types") -------------------------------------------------

TYPE_NAMES = {
    0x00: "DECIMAL",
    0x01: "TINY",
    0x02: "SHORT",
    0x03: "LONG",
    0x04: "FLOAT",
    0x05: "DOUBLE",
    0x06: "NULL",
    0x07: "TIMESTAMP",
    0x08: "LONGLONG",
    0x09: "INT24",
    0x0A: "DATE",
    0x0B: "TIME",
    0x0C: "DATETIME",
    0x0D: "YEAR",
    0x0E: "NEWDATE",
    0x0F: "VARCHAR",
    0x10: "BIT",
    0x11: "TIMESTAMP2",
    0x12: "DATETIME2",
    0x13: "TIME2",
    0xF5: "JSON",
    0xF6: "NEWDECIMAL",
    0xF7: "ENUM",
    0xF8: "SET",
    0xF9: "TINY_BLOB",
    0xFA: "MEDIUM_BLOB",
    0xFB: "LONG_BLOB",
    0xFC: "BLOB",
    0xFD: "VAR_STRING",
    0xFE: "STRING",
    0xFF: "GEOMETRY",
}
"""Column type code to the protocol's name for it (``MYSQL_TYPE_<name>``)."""

# Binary-protocol value widths of fixed-size types; the date and time types carry a one-byte
# length; every other type is a length-encoded string.
_FIXED_WIDTH = {0x01: 1, 0x02: 2, 0x0D: 2, 0x03: 4, 0x09: 4, 0x04: 4, 0x08: 8, 0x05: 8, 0x06: 0}
_DATE_TIME = frozenset({0x07, 0x0A, 0x0B, 0x0C, 0x0E, 0x11, 0x12, 0x13})


# -- framing ----------------------------------------------------------------------------------


@attrs.frozen
class Packet:
    """One logical packet: a payload (joined when it was split) and its last sequence id."""

    seq: int
    """Sequence id of the last physical packet that carried it."""
    payload: bytes
    """The payload, without headers."""
    pieces: int = 1
    """How many physical packets carried it."""


class PacketReader:
    """Cuts one direction of a connection into logical packets.

    :param max_length: largest logical payload accepted; a longer one raises
        :class:`ProtocolViolation` before it is buffered in full.
    """

    __slots__ = ("_buffer", "_joined", "_max_length", "_parts", "_pieces")

    def __init__(self, *, max_length: int = 1 << 30) -> None:
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._pieces = 0
        self._joined = 0
        self._max_length = max_length

    @property
    def max_length(self) -> int:
        """Largest logical payload accepted (may be changed between feeds)."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._max_length = value

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole logical packet."""
        return len(self._buffer) + self._joined

    def take_buffered(self) -> bytes:
        """Remove and return the bytes that do not yet make a whole packet (after an SSLRequest
        they are the start of the TLS handshake, which belongs to the TLS layer)."""
        data = b"".join(self._parts) + bytes(self._buffer)
        self._parts, self._joined, self._pieces = [], 0, 0
        self._buffer = bytearray()
        return data

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return every logical packet completed by it, in order."""
        self._buffer += data
        out: list[Packet] = []
        buffer = self._buffer
        pos = 0
        while len(buffer) - pos >= 4:
            length = buffer[pos] | buffer[pos + 1] << 8 | buffer[pos + 2] << 16
            if self._joined + length > self._max_length:
                raise ProtocolViolation(f"packet longer than {self._max_length} bytes")
            end = pos + 4 + length
            if len(buffer) < end:
                break
            seq = buffer[pos + 3]
            chunk = bytes(buffer[pos + 4 : end])
            pos = end
            self._pieces += 1
            if length == MAX_PAYLOAD:
                self._parts.append(chunk)
                self._joined += length
                continue
            if self._parts:
                self._parts.append(chunk)
                chunk = b"".join(self._parts)
                self._parts = []
                self._joined = 0
            out.append(Packet(seq, chunk, self._pieces))
            self._pieces = 0
        if pos:
            del buffer[:pos]
        return out


def encode_packet(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Frame ``payload`` as physical packets from sequence id ``seq``.

    :return: the wire bytes and the sequence id that follows the last piece.
    """
    if len(payload) < MAX_PAYLOAD:
        header = len(payload).to_bytes(3, "little") + bytes((seq & 0xFF,))
        return header + payload, (seq + 1) & 0xFF
    pieces = []
    view = memoryview(payload)
    pos = 0
    while True:
        chunk = view[pos : pos + MAX_PAYLOAD]
        pieces.append(len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)))
        pieces.append(bytes(chunk))
        seq = (seq + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_PAYLOAD:
            break
    return b"".join(pieces), seq


# -- primitive readers and writers ------------------------------------------------------------


class Cursor:
    """Reads protocol primitives from a payload; every overrun raises ProtocolViolation."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        """Bytes left to read."""
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("packet is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        """A little-endian unsigned integer of ``n`` bytes."""
        return int.from_bytes(self.take(n), "little")

    def lenenc_int(self) -> int | None:
        """A length-encoded integer; None for the NULL marker (0xFB)."""
        first = self.uint(1)
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise ProtocolViolation("invalid length-encoded integer (0xFF)")

    def lenenc_bytes(self) -> bytes | None:
        """A length-encoded string; None for NULL."""
        length = self.lenenc_int()
        return None if length is None else self.take(length)

    def nul_bytes(self) -> bytes:
        """A NUL-terminated string (the NUL is consumed, not returned)."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("string without its NUL terminator")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def rest(self) -> bytes:
        """Everything left."""
        return self.take(self.remaining)


def lenenc_int(value: int) -> bytes:
    """Encode ``value`` as a length-encoded integer."""
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def lenenc_bytes(value: bytes) -> bytes:
    """Encode ``value`` as a length-encoded string."""
    return lenenc_int(len(value)) + value


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


# -- connection phase ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Handshake:
    """Initial Handshake Packet, protocol 10: the server's greeting."""

    server_version: str
    connection_id: int
    scramble: bytes
    """The auth plugin data (20 bytes for the usual plugins, 32 for ed25519 on MariaDB)."""
    capabilities: int
    charset: int = 45
    status: int = SERVER_STATUS_AUTOCOMMIT
    auth_plugin: str = ""
    mariadb_capabilities: int = 0
    """MariaDB's extended capabilities (only when ``CLIENT_LONG_PASSWORD`` is clear)."""

    def encode(self) -> bytes:
        scramble = self.scramble
        caps = self.capabilities
        extra = scramble[8:]
        return b"".join(
            [
                b"\x0a",
                _bytes(self.server_version) + b"\0",
                struct.pack("<I", self.connection_id),
                scramble[:8],
                b"\0",
                struct.pack("<HBHH", caps & 0xFFFF, self.charset, self.status, caps >> 16),
                bytes((len(scramble) + 1 if caps & CLIENT_PLUGIN_AUTH else 0,)),
                b"\0" * 6,
                struct.pack("<I", self.mariadb_capabilities),
                extra + b"\0" if caps & CLIENT_SECURE_CONNECTION else b"",
                _bytes(self.auth_plugin) + b"\0" if caps & CLIENT_PLUGIN_AUTH else b"",
            ]
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload)
        version = c.uint(1)
        if version != 10:
            if version == 0xFF:
                raise ProtocolViolation(
                    f"the server refused the connection: {_error_text(payload)}"
                )
            raise ProtocolViolation(f"unsupported handshake protocol version {version}")
        server_version = _text(c.nul_bytes())
        connection_id = c.uint(4)
        scramble = c.take(8)
        c.take(1)
        caps = c.uint(2)
        charset = status = 0
        plugin = ""
        mariadb = 0
        if c.remaining:
            charset = c.uint(1)
            status = c.uint(2)
            caps |= c.uint(2) << 16
            data_length = c.uint(1)
            c.take(6)
            mariadb = c.uint(4)
            if caps & CLIENT_SECURE_CONNECTION:
                part2 = max(13, data_length - 8)
                scramble += c.take(part2)
                scramble = scramble[:-1] if scramble.endswith(b"\0") else scramble
            if caps & CLIENT_PLUGIN_AUTH:
                rest = c.rest()
                plugin = _text(rest.split(b"\0", 1)[0])
        return cls(
            server_version=server_version,
            connection_id=connection_id,
            scramble=scramble,
            capabilities=caps,
            charset=charset,
            status=status,
            auth_plugin=plugin,
            mariadb_capabilities=0 if caps & CLIENT_LONG_PASSWORD else mariadb,
        )


def _error_text(payload: bytes) -> str:
    try:
        return ErrPacket.decode(payload).message
    except ProtocolViolation:
        return "unreadable error"


SSL_REQUEST_LENGTH = 32
"""Length of an SSLRequest: the first 32 bytes of a HandshakeResponse41."""


@attrs.frozen(kw_only=True)
class HandshakeResponse:
    """HandshakeResponse41 (or, with only its fixed part, an SSLRequest)."""

    capabilities: int
    max_packet: int = MAX_PAYLOAD + 1
    charset: int = 45
    user: str = ""
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str = ""
    attributes: dict[str, str] = attrs.field(factory=dict)
    mariadb_capabilities: int = 0
    ssl_request: bool = False
    """True for an SSLRequest (nothing after the fixed part)."""

    def encode(self) -> bytes:
        caps = self.capabilities
        parts = [
            struct.pack("<IIB", caps, self.max_packet, self.charset),
            b"\0" * 19,
            struct.pack("<I", self.mariadb_capabilities),
        ]
        if self.ssl_request:
            return b"".join(parts)
        parts.append(_bytes(self.user) + b"\0")
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            parts.append(lenenc_bytes(self.auth_response))
        else:
            parts.append(bytes((len(self.auth_response),)) + self.auth_response)
        if caps & CLIENT_CONNECT_WITH_DB:
            parts.append(_bytes(self.database or "") + b"\0")
        if caps & CLIENT_PLUGIN_AUTH:
            parts.append(_bytes(self.auth_plugin) + b"\0")
        if caps & CLIENT_CONNECT_ATTRS:
            attrs_data = b"".join(
                lenenc_bytes(_bytes(k)) + lenenc_bytes(_bytes(v))
                for k, v in self.attributes.items()
            )
            parts.append(lenenc_bytes(attrs_data))
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload)
        caps = c.uint(4)
        if not caps & CLIENT_PROTOCOL_41:
            raise ProtocolViolation("the client does not speak protocol 4.1 (CLIENT_PROTOCOL_41)")
        max_packet = c.uint(4)
        charset = c.uint(1)
        c.take(19)
        mariadb = c.uint(4)
        if not c.remaining:
            if not caps & CLIENT_SSL:
                raise ProtocolViolation("handshake response is truncated")
            return cls(
                capabilities=caps,
                max_packet=max_packet,
                charset=charset,
                mariadb_capabilities=mariadb,
                ssl_request=True,
            )
        user = _text(c.nul_bytes())
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = c.lenenc_bytes() or b""
        elif caps & CLIENT_SECURE_CONNECTION:
            auth = c.take(c.uint(1))
        else:
            auth = c.nul_bytes()
        database = None
        if caps & CLIENT_CONNECT_WITH_DB and c.remaining:
            database = _text(c.nul_bytes())
        plugin = ""
        if caps & CLIENT_PLUGIN_AUTH and c.remaining:
            plugin = _text(c.nul_bytes())
        attributes: dict[str, str] = {}
        if caps & CLIENT_CONNECT_ATTRS and c.remaining:
            data = Cursor(c.lenenc_bytes() or b"")
            while data.remaining:
                key = _text(data.lenenc_bytes() or b"")
                attributes[key] = _text(data.lenenc_bytes() or b"")
        return cls(
            capabilities=caps,
            max_packet=max_packet,
            charset=charset,
            user=user,
            auth_response=auth,
            database=database,
            auth_plugin=plugin,
            attributes=attributes,
            mariadb_capabilities=mariadb,
        )


@attrs.frozen(kw_only=True)
class AuthSwitchRequest:
    """The server asks the client to authenticate with another plugin (0xFE)."""

    plugin: str
    data: bytes

    def encode(self) -> bytes:
        return b"\xfe" + _bytes(self.plugin) + b"\0" + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload, 1)
        if not c.remaining:  # the pre-4.1 "old password" switch
            raise ProtocolViolation("the server asked for the pre-4.1 password scheme")
        plugin = _text(c.nul_bytes())
        return cls(plugin=plugin, data=c.rest())


@attrs.frozen(kw_only=True)
class AuthMoreData:
    """Extra authentication data from the server (0x01)."""

    data: bytes

    def encode(self) -> bytes:
        return b"\x01" + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(data=payload[1:])


# -- generic responses -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OkPacket:
    """OK_Packet (header 0x00, or 0xFE where it replaces EOF with ``CLIENT_DEPRECATE_EOF``)."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = SERVER_STATUS_AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    """The human-readable status and, with ``CLIENT_SESSION_TRACK``, the session state
    changes, as they follow the fixed part (kept raw)."""
    header: int = 0x00

    def encode(self) -> bytes:
        return (
            bytes((self.header,))
            + lenenc_int(self.affected_rows)
            + lenenc_int(self.last_insert_id)
            + struct.pack("<HH", self.status, self.warnings)
            + self.info
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload)
        header = c.uint(1)
        if header not in (0x00, 0xFE):
            raise ProtocolViolation(f"not an OK packet (header 0x{header:02x})")
        affected = c.lenenc_int() or 0
        insert_id = c.lenenc_int() or 0
        status = warnings = 0
        if c.remaining >= 4:
            status = c.uint(2)
            warnings = c.uint(2)
        return cls(
            affected_rows=affected,
            last_insert_id=insert_id,
            status=status,
            warnings=warnings,
            info=c.rest(),
            header=header,
        )

    def message(self, capabilities: int) -> bytes:
        """The human-readable info string (``Rows matched: 1 ...``), without session state."""
        if not self.info:
            return b""
        if capabilities & CLIENT_SESSION_TRACK:
            try:
                return Cursor(self.info).lenenc_bytes() or b""
            except ProtocolViolation:
                return b""
        return self.info

    def with_message(self, text: bytes, capabilities: int) -> Self:
        """A copy whose info string is ``text`` (session state changes kept)."""
        if capabilities & CLIENT_SESSION_TRACK:
            c = Cursor(self.info)
            try:
                c.lenenc_bytes()
                rest = c.rest()
            except ProtocolViolation:
                rest = b""
            info = lenenc_bytes(text) + rest if (text or rest) else b""
        else:
            info = text
        return attrs.evolve(self, info=info)

    def system_variables(self, capabilities: int) -> dict[str, bytes]:
        """The system variables this OK reports as set (``SESSION_TRACK_SYSTEM_VARIABLES``
        entries, with ``CLIENT_SESSION_TRACK``), name to value, later entries winning.

        :raises ProtocolViolation: a truncated session-state block.
        """
        if not capabilities & CLIENT_SESSION_TRACK or not self.status & (
            SERVER_SESSION_STATE_CHANGED
        ):
            return {}
        c = Cursor(self.info)
        c.lenenc_bytes()  # the human-readable info
        state = Cursor(c.lenenc_bytes() or b"")
        found: dict[str, bytes] = {}
        while state.remaining:
            kind = state.uint(1)
            entry = Cursor(state.lenenc_bytes() or b"")
            if kind == SESSION_TRACK_SYSTEM_VARIABLES:
                name = (entry.lenenc_bytes() or b"").decode("ascii", "replace").lower()
                found[name] = entry.lenenc_bytes() or b""
        return found

    def for_client(self, upstream: int, client: int) -> Self:
        """This OK (read with the target's ``upstream`` capabilities) as a client that
        negotiated ``client`` expects it: without the session-state block when the client did
        not ask for ``CLIENT_SESSION_TRACK`` (the gateway always does, to follow the
        session's settings)."""
        if client & CLIENT_SESSION_TRACK or not upstream & CLIENT_SESSION_TRACK:
            return self
        return attrs.evolve(
            self,
            info=self.message(upstream),
            status=self.status & ~SERVER_SESSION_STATE_CHANGED,
        )


@attrs.frozen(kw_only=True)
class ErrPacket:
    """ERR_Packet (0xFF): error number, SQL state and message."""

    code: int
    message: str
    sqlstate: str = "HY000"

    def encode(self) -> bytes:
        return (
            b"\xff"
            + struct.pack("<H", self.code)
            + b"#"
            + self.sqlstate.encode("ascii")[:5].ljust(5, b"0")
            + _bytes(self.message)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload)
        if c.uint(1) != 0xFF:
            raise ProtocolViolation("not an ERR packet")
        code = c.uint(2)
        sqlstate = "HY000"
        if c.remaining and c.data[c.pos : c.pos + 1] == b"#":
            c.take(1)
            sqlstate = c.take(5).decode("ascii", "replace")
        return cls(code=code, message=_text(c.rest()), sqlstate=sqlstate)


@attrs.frozen(kw_only=True)
class EofPacket:
    """EOF_Packet (0xFE, before ``CLIENT_DEPRECATE_EOF``)."""

    warnings: int = 0
    status: int = SERVER_STATUS_AUTOCOMMIT

    def encode(self) -> bytes:
        return b"\xfe" + struct.pack("<HH", self.warnings, self.status)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload, 1)
        if c.remaining < 4:
            return cls(warnings=0, status=0)
        return cls(warnings=c.uint(2), status=c.uint(2))


def is_err(payload: bytes) -> bool:
    """Whether ``payload`` is an ERR packet."""
    return payload[:1] == b"\xff"


def is_ok(payload: bytes) -> bool:
    """Whether ``payload`` is an OK packet (header 0x00)."""
    return payload[:1] == b"\x00"


def is_eof(payload: bytes) -> bool:
    """Whether ``payload`` ends a row stream: an EOF packet, or an OK packet with the 0xFE
    header (``CLIENT_DEPRECATE_EOF``). A text row whose first value is 16 MiB or longer also
    starts with 0xFE, but is never this short."""
    return payload[:1] == b"\xfe" and len(payload) < MAX_PAYLOAD


def terminator_status(payload: bytes) -> int:
    """Server status flags of an EOF or OK packet that ends a result."""
    if len(payload) == 5:
        return EofPacket.decode(payload).status
    return OkPacket.decode(payload).status


# -- result sets -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ColumnDefinition:
    """Column Definition 41."""

    catalog: bytes = b"def"
    schema: bytes = b""
    table: bytes = b""
    org_table: bytes = b""
    name: bytes = b""
    org_name: bytes = b""
    charset: int = 33
    length: int = 0
    type: int = 0xFD
    flags: int = 0
    decimals: int = 0
    extra: bytes = b""
    """What follows the fixed part (a COM_FIELD_LIST default value), kept raw."""

    def encode(self) -> bytes:
        return (
            b"".join(
                lenenc_bytes(v)
                for v in (
                    self.catalog,
                    self.schema,
                    self.table,
                    self.org_table,
                    self.name,
                    self.org_name,
                )
            )
            + b"\x0c"
            + struct.pack("<HIBHB", self.charset, self.length, self.type, self.flags, self.decimals)
            + b"\0\0"
            + self.extra
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload)
        values = [c.lenenc_bytes() or b"" for _ in range(6)]
        fixed = c.lenenc_int()
        if fixed is None or fixed < 10:
            raise ProtocolViolation("column definition is truncated")
        block = Cursor(c.take(fixed))
        charset = block.uint(2)
        length = block.uint(4)
        type_ = block.uint(1)
        flags = block.uint(2)
        decimals = block.uint(1)
        return cls(
            catalog=values[0],
            schema=values[1],
            table=values[2],
            org_table=values[3],
            name=values[4],
            org_name=values[5],
            charset=charset,
            length=length,
            type=type_,
            flags=flags,
            decimals=decimals,
            extra=c.rest(),
        )

    @property
    def type_name(self) -> str:
        """The protocol's name of the column type (``VAR_STRING``, ``LONGLONG``...)."""
        return TYPE_NAMES.get(self.type, f"TYPE_{self.type}")


def decode_text_row(payload: bytes, count: int) -> list[bytes | None]:
    """The values of a text-protocol row (NULL as None)."""
    c = Cursor(payload)
    row = [c.lenenc_bytes() for _ in range(count)]
    if c.remaining:
        raise ProtocolViolation("text row has bytes after its last value")
    return row


def encode_text_row(row: Sequence[bytes | None]) -> bytes:
    """A text-protocol row from its values."""
    return b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in row)


def decode_binary_row(payload: bytes, types: Sequence[int]) -> list[bytes | None]:
    """The values of a binary-protocol row, each as its value bytes without a length prefix
    (little-endian integers and floats, the packed date/time structure, the string bytes)."""
    c = Cursor(payload)
    if c.uint(1) != 0x00:
        raise ProtocolViolation("binary row does not start with 0x00")
    bitmap = c.take((len(types) + 7 + 2) // 8)
    row: list[bytes | None] = []
    for i, type_ in enumerate(types):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            row.append(None)
        elif type_ in _FIXED_WIDTH:
            row.append(c.take(_FIXED_WIDTH[type_]))
        elif type_ in _DATE_TIME:
            row.append(c.take(c.uint(1)))
        else:
            row.append(c.lenenc_bytes() or b"")
    if c.remaining:
        raise ProtocolViolation("binary row has bytes after its last value")
    return row


def encode_binary_row(row: Sequence[bytes | None], types: Sequence[int]) -> bytes:
    """A binary-protocol row from its values (see :func:`decode_binary_row`).

    :raises ValueError: a fixed-width value (an integer or a float) changed its width; the
        protocol cannot carry it.
    """
    bitmap = bytearray((len(types) + 7 + 2) // 8)
    parts = []
    for i, (value, type_) in enumerate(zip(row, types, strict=True)):
        if value is None:
            bit = i + 2
            bitmap[bit // 8] |= 1 << (bit % 8)
        elif type_ in _FIXED_WIDTH:
            if len(value) != _FIXED_WIDTH[type_]:
                raise ValueError(
                    f"a {TYPE_NAMES[type_]} value must stay {_FIXED_WIDTH[type_]} bytes long"
                )
            parts.append(value)
        elif type_ in _DATE_TIME:
            if len(value) > 12:
                raise ValueError(f"a {TYPE_NAMES[type_]} value is at most 12 bytes long")
            parts.append(bytes((len(value),)) + value)
        else:
            parts.append(lenenc_bytes(value))
    return b"\x00" + bytes(bitmap) + b"".join(parts)


@attrs.frozen(kw_only=True)
class StmtPrepareOk:
    """COM_STMT_PREPARE_OK: the statement id and the counts of what follows."""

    statement_id: int
    columns: int
    params: int
    warnings: int = 0

    def encode(self) -> bytes:
        return b"\x00" + struct.pack(
            "<IHHBH", self.statement_id, self.columns, self.params, 0, self.warnings
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        c = Cursor(payload, 1)
        statement_id, columns, params = c.uint(4), c.uint(2), c.uint(2)
        warnings = 0
        if c.remaining >= 3:
            c.take(1)
            warnings = c.uint(2)
        return cls(statement_id=statement_id, columns=columns, params=params, warnings=warnings)


def statement_id(payload: bytes) -> int:
    """The statement id of a COM_STMT_EXECUTE/CLOSE/RESET/FETCH/SEND_LONG_DATA payload."""
    return Cursor(payload, 1).uint(4)


def execute_flags(payload: bytes) -> int:
    """The cursor flags of a COM_STMT_EXECUTE payload."""
    return Cursor(payload, 5).uint(1)


@attrs.frozen(kw_only=True)
class ChangeUser:
    """COM_CHANGE_USER: log in again as ``user`` on the same connection."""

    user: str
    auth_response: bytes = b""
    database: str = ""
    charset: int = 0
    auth_plugin: str = ""

    def encode(self, capabilities: int) -> bytes:
        parts = [bytes((COM_CHANGE_USER,)), _bytes(self.user) + b"\0"]
        if capabilities & CLIENT_SECURE_CONNECTION:
            parts.append(bytes((len(self.auth_response),)) + self.auth_response)
        else:
            parts.append(self.auth_response + b"\0")
        parts.append(_bytes(self.database) + b"\0")
        parts.append(struct.pack("<H", self.charset))
        if capabilities & CLIENT_PLUGIN_AUTH:
            parts.append(_bytes(self.auth_plugin) + b"\0")
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes, capabilities: int) -> Self:
        c = Cursor(payload, 1)
        user = _text(c.nul_bytes())
        if capabilities & CLIENT_SECURE_CONNECTION:
            auth = c.take(c.uint(1))
        else:
            auth = c.nul_bytes()
        database = _text(c.nul_bytes()) if c.remaining else ""
        charset = c.uint(2) if c.remaining >= 2 else 0
        plugin = ""
        if capabilities & CLIENT_PLUGIN_AUTH and c.remaining:
            plugin = _text(c.nul_bytes())
        return cls(
            user=user, auth_response=auth, database=database, charset=charset, auth_plugin=plugin
        )
