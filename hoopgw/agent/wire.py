"""What the gateway and an agent say to each other, without I/O.

After TLS, the agent sends one hello line with its token; the gateway answers with one line,
``OK <agent name>`` or ``ERR <reason>`` (then closes). From then on the connection is HTTP/2
(RFC 9113) with the roles reversed: the gateway, which accepted the TCP connection, is the
HTTP/2 *client* and opens one stream per upstream TCP connection with a ``CONNECT`` request
(RFC 9113 section 8.5: ``:method CONNECT`` and ``:authority HOST:PORT``, no ``:scheme`` or
``:path``); the agent answers ``200`` and the stream's DATA frames are the TCP bytes both ways,
or answers an error status with a ``hoopgw-error`` header saying why and ends the stream.
HTTP/2 gives each stream its own flow-control window, so one slow client never stalls the
others.
"""

from __future__ import annotations

from h2.config import H2Configuration

__all__ = [
    "HELLO",
    "LineReader",
    "ProtocolViolation",
    "StreamRefused",
    "connect_request",
    "encode_hello",
    "encode_reply",
    "h2_config",
    "parse_connect_request",
    "parse_hello",
    "parse_reply",
    "parse_stream_answer",
    "stream_answer",
]

HELLO = b"HOOPGW-AGENT/1 "
"""How an agent's hello line starts (the protocol and its version)."""
MAX_LINE = 1024
"""Longest hello or reply line, in bytes, newline included."""
ERROR_HEADER = "hoopgw-error"
"""The response header that says why a stream was refused."""
STATUS_REFUSED = "403"
"""The answer to a stream the allow-list does not permit."""
STATUS_UNREACHABLE = "502"
"""The answer to a stream whose target did not accept the TCP connection."""
STATUS_BAD_REQUEST = "400"
"""The answer to a malformed stream request."""
STATUS_BUSY = "503"
"""The answer to a stream request while too many target connections are being opened."""


class ProtocolViolation(Exception):
    """The peer broke the agent protocol; the connection must be dropped."""


class StreamRefused(Exception):
    """The agent refused to open a stream, or could not; the message says why."""


class LineReader:
    """Collects bytes up to the first newline (the hello and its reply)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[str, bytes] | None:
        """Add ``data``.

        :return: the line (without its newline) and the bytes after it, once the line is
            complete; None while it is not.
        :raises ProtocolViolation: for a line longer than :data:`MAX_LINE` or not ASCII.
        """
        self._buffer += data
        line, newline, rest = self._buffer.partition(b"\n")
        if not newline:
            if len(self._buffer) >= MAX_LINE:
                raise ProtocolViolation(f"no newline in the first {MAX_LINE} bytes")
            return None
        if len(line) >= MAX_LINE or not line.isascii():
            raise ProtocolViolation("the line is too long or not ASCII")
        return line.decode("ascii").rstrip("\r"), rest


def encode_hello(token: str) -> bytes:
    """The agent's hello line carrying ``token``."""
    return HELLO + token.encode("ascii") + b"\n"


def parse_hello(line: str) -> str:
    """The token of a hello line.

    :raises ProtocolViolation: if it is not a hello of this version.
    """
    prefix = HELLO.decode("ascii")
    if not line.startswith(prefix) or not line[len(prefix) :]:
        raise ProtocolViolation("not a hoopgw agent (expected HOOPGW-AGENT/1 and a token)")
    return line[len(prefix) :]


def encode_reply(*, name: str | None = None, error: str | None = None) -> bytes:
    """The gateway's answer: welcome agent ``name``, or refuse with ``error``."""
    if error is not None:
        return b"ERR " + " ".join(error.split()).encode("ascii", "replace")[:900] + b"\n"
    assert name is not None
    return b"OK " + name.encode("ascii") + b"\n"


def parse_reply(line: str) -> str:
    """The agent name the gateway welcomed.

    :raises StreamRefused: the gateway refused the agent (the message is its reason).
    :raises ProtocolViolation: for any other line.
    """
    kind, _, text = line.partition(" ")
    if kind == "OK" and text:
        return text
    if kind == "ERR":
        raise StreamRefused(text or "refused without a reason")
    raise ProtocolViolation("the gateway did not answer the hello")


def h2_config(*, client_side: bool) -> H2Configuration:
    """HTTP/2 settings of either side (the gateway is the client side)."""
    return H2Configuration(client_side=client_side, header_encoding="utf-8")


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(host: str, port: int) -> list[tuple[str, str]]:
    """The headers of a stream request for a TCP connection to ``host:port``."""
    return [(":method", "CONNECT"), (":authority", _authority(host, port))]


def parse_connect_request(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """The ``(host, port)`` a stream request asks for.

    :raises ValueError: for anything but a ``CONNECT`` to ``HOST:PORT``.
    """
    fields = dict(headers)
    if fields.get(":method") != "CONNECT":
        raise ValueError("only CONNECT requests are served")
    authority = fields.get(":authority", "")
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, _, port = authority.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{authority!r} is not HOST:PORT")
    return host, int(port)


def stream_answer(
    error: str | None = None, *, status: str = STATUS_REFUSED
) -> list[tuple[str, str]]:
    """The agent's answer to a stream request: ``200``, or ``status`` with ``error``."""
    if error is None:
        return [(":status", "200")]
    return [(":status", status), (ERROR_HEADER, " ".join(error.split()))]


def parse_stream_answer(headers: list[tuple[str, str]]) -> str | None:
    """None if the agent opened the stream, else why not."""
    fields = dict(headers)
    if fields.get(":status") == "200":
        return None
    return fields.get(ERROR_HEADER) or f"the agent answered {fields.get(':status', '?')}"
