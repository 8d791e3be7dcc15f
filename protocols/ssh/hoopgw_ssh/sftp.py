"""SFTP (``allow_sftp = true``): file operations become commands.

The ``sftp`` subsystem speaks the SFTP protocol (draft-ietf-secsh-filexfer-02, version 3,
which OpenSSH uses) inside the channel. :class:`SftpJudge` reads the client's packets and
turns each file operation into a command of kind ``sftp`` (``open /etc/hosts read``,
``remove /tmp/x``, ``rename /a /b``, ...), decided like any other command before the packet is
forwarded; a refused operation is answered by the gateway with ``SSH_FX_PERMISSION_DENIED``
and the reason, and the session goes on. :class:`SftpReplies` reads the target's answers to
complete those commands (``ok`` or ``error`` with the SFTP status code) and passes file data
(``SSH_FXP_DATA``) through the ``server_output`` hooks with kind ``file``: a plugin that would
change file data (masking) cannot be honoured inside a transfer, so the channel is closed
instead (fail closed). Reads and writes of open files are data, not commands.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hoopgw.session import Command, CommandOutcome, Output
from hoopgw.verdicts import Allow

if TYPE_CHECKING:
    from hoopgw_ssh.channels import SessionChannel

__all__ = ["SftpJudge", "SftpReplies", "describe_request"]

MAX_PACKET = 2**20
"""Largest SFTP packet accepted either way (OpenSSH sends at most 256 KiB)."""
BACKLOG_LIMIT = 2**22
"""Bytes of client packets held while an operation is decided; more ends the channel."""

FXP_INIT, FXP_OPEN, FXP_SETSTAT, FXP_OPENDIR, FXP_REMOVE, FXP_MKDIR = 1, 3, 9, 11, 13, 14
FXP_RMDIR, FXP_RENAME, FXP_SYMLINK, FXP_EXTENDED = 15, 18, 20, 200
FXP_STATUS, FXP_HANDLE, FXP_DATA = 101, 102, 103
FX_OK, FX_PERMISSION_DENIED = 0, 3
_OPEN_FLAGS = ((1, "read"), (2, "write"), (4, "append"), (8, "create"), (16, "truncate"))
_ONE_PATH = {FXP_OPENDIR: "opendir", FXP_REMOVE: "remove", FXP_MKDIR: "mkdir"}
_ONE_PATH |= {FXP_RMDIR: "rmdir", FXP_SETSTAT: "setstat"}
_TWO_PATHS = {FXP_RENAME: "rename", FXP_SYMLINK: "symlink"}
_EXTENDED_ONE_PATH = {"lsetstat@openssh.com": "lsetstat"}
_EXTENDED_TWO_PATHS = {"posix-rename@openssh.com", "hardlink@openssh.com"}


class SftpError(ValueError):
    """A malformed SFTP packet."""


class _Packets:
    """Splits a byte stream into SFTP packets (``uint32 length`` + body)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">L", self._buffer[:4])
            if length < 1 or length > MAX_PACKET:
                raise SftpError(f"SFTP packet of {length} bytes")
            if len(self._buffer) < 4 + length:
                return
            packet = bytes(self._buffer[: 4 + length])
            del self._buffer[: 4 + length]
            yield packet


def _string(body: bytes, offset: int) -> tuple[str, int]:
    if offset + 4 > len(body):
        raise SftpError("truncated string")
    (length,) = struct.unpack(">L", body[offset : offset + 4])
    end = offset + 4 + length
    if end > len(body):
        raise SftpError("truncated string")
    return body[offset + 4 : end].decode("utf-8", "surrogateescape"), end


def describe_request(packet: bytes) -> tuple[int, str] | None:
    """The request id and command text of a client packet that is a file operation; None for
    other packets (init, reads, writes, stat, close, ...).

    :raises SftpError: for a malformed packet.
    """
    body = packet[4:]
    kind = body[0]
    if kind not in (FXP_OPEN, FXP_EXTENDED, *_ONE_PATH, *_TWO_PATHS):
        return None
    if len(body) < 5:
        raise SftpError("truncated request")
    (request_id,) = struct.unpack(">L", body[1:5])
    first, offset = _string(body, 5)
    if kind == FXP_OPEN:
        if offset + 4 > len(body):
            raise SftpError("truncated open")
        (flags,) = struct.unpack(">L", body[offset : offset + 4])
        modes = ",".join(name for bit, name in _OPEN_FLAGS if flags & bit) or "none"
        return request_id, f"open {first} {modes}"
    if kind in _ONE_PATH:
        return request_id, f"{_ONE_PATH[kind]} {first}"
    if kind in _TWO_PATHS:
        second, _ = _string(body, offset)
        return request_id, f"{_TWO_PATHS[kind]} {first} {second}"
    if first in _EXTENDED_ONE_PATH:
        path, _ = _string(body, offset)
        return request_id, f"{_EXTENDED_ONE_PATH[first]} {path}"
    if first in _EXTENDED_TWO_PATHS:
        old, offset = _string(body, offset)
        new, _ = _string(body, offset)
        return request_id, f"{first} {old} {new}"
    return request_id, f"extended {first}"


def _status(request_id: int, code: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")
    body = struct.pack(">BLL", FXP_STATUS, request_id, code)
    body += struct.pack(">L", len(text)) + text + struct.pack(">L", 0)
    return struct.pack(">L", len(body)) + body


class SftpJudge:
    """Decides the client's file operations, one at a time, in order."""

    def __init__(self, channel: SessionChannel) -> None:
        self._channel = channel
        self._packets = _Packets()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._deciding = False
        self._ended = False
        self.pending: dict[int, tuple[Command, float]] = {}
        """Forwarded operations waiting for the target's answer, by request id."""

    def feed(self, data: bytes) -> None:
        """Client bytes: complete packets are judged or forwarded in order."""
        if self._ended:
            return
        try:
            for packet in self._packets.feed(data):
                self._queue.append(packet)
                self._queued += len(packet)
        except SftpError as exc:
            self._channel.session.terminate(f"malformed SFTP from the client: {exc}")
            return
        if self._queued > BACKLOG_LIMIT:
            # An operation held for approval must not let the client fill the gateway's memory.
            self._channel.loseConnection()
            return
        self._drain()

    def _drain(self) -> None:
        channel = self._channel
        while self._queue and not self._deciding:
            packet = self._queue.popleft()
            self._queued -= len(packet)
            if self._reuses_waiting_id(packet):
                # The target's answer could not be told apart from the waiting operation's:
                # it would complete (and record) the wrong one.
                self._ended = True
                self._queue.clear()
                channel.loseConnection()
                return
            try:
                operation = describe_request(packet)
            except SftpError as exc:
                channel.session.terminate(f"malformed SFTP from the client: {exc}")
                return
            if operation is None:
                channel.forward_raw(packet)
                continue
            request_id, text = operation
            command = channel.session.new_command(text, "sftp", {"channel": channel.id})
            self._deciding = True
            channel.session.decide(command).addCallback(self._decided, packet, request_id, command)

    def _reuses_waiting_id(self, packet: bytes) -> bool:
        body = packet[4:]
        if body[0] == FXP_INIT or len(body) < 5:
            return False
        (request_id,) = struct.unpack(">L", body[1:5])
        return request_id in self.pending

    def _decided(self, verdict: Any, packet: bytes, request_id: int, command: Command) -> None:
        channel = self._channel
        self._deciding = False
        if isinstance(verdict, Allow):
            self.pending[request_id] = (command, channel.session.runtime.reactor.seconds())
            channel.forward_raw(packet)
        else:
            channel.session.complete(
                command, CommandOutcome(status="blocked", error_message=verdict.reason)
            )
            channel.write_raw(
                _status(request_id, FX_PERMISSION_DENIED, f"hoopgw: refused: {verdict.reason}")
            )
        self._drain()


class SftpReplies:
    """Reads the target's SFTP answers: completes file operations, checks file data."""

    def __init__(self, channel: SessionChannel, judge: SftpJudge) -> None:
        self._channel = channel
        self._judge = judge
        self._packets = _Packets()

    def feed(self, data: bytes) -> None:
        """Target bytes: forwarded packet by packet once checked."""
        channel = self._channel
        try:
            packets = list(self._packets.feed(data))
        except SftpError as exc:
            channel.session.terminate(f"malformed SFTP from the target: {exc}")
            return
        for packet in packets:
            body = packet[4:]
            if body[0] in (FXP_STATUS, FXP_HANDLE) and len(body) >= 5:
                (request_id,) = struct.unpack(">L", body[1:5])
                self._answered(request_id, body)
            elif body[0] == FXP_DATA and not self._data_unchanged(body):
                channel.session.terminate(
                    "a plugin would change file data in an SFTP transfer; the transfer is"
                    " refused (masking cannot apply inside SFTP)"
                )
                return
            channel.write_raw(packet)

    def _answered(self, request_id: int, body: bytes) -> None:
        pending = self._judge.pending.pop(request_id, None)
        if pending is None:
            return
        command, started = pending
        duration = self._channel.session.runtime.reactor.seconds() - started
        code = FX_OK
        if body[0] == FXP_STATUS and len(body) >= 9:
            (code,) = struct.unpack(">L", body[5:9])
        outcome = CommandOutcome(
            status="ok" if code == FX_OK else "error",
            duration=duration,
            error_code="" if code == FX_OK else f"SSH_FX_{code}",
        )
        self._channel.session.complete(command, outcome)

    def _data_unchanged(self, body: bytes) -> bool:
        chain = self._channel.session.chain
        if not chain.has_output_hooks:
            return True
        try:
            text, _ = _string(body, 5)
        except SftpError:
            return False
        output = Output("file", {"data": text})
        try:
            chain.hook.server_output(
                session=self._channel.session.info, command=self._channel.command, output=output
            )
        except Exception:
            return False
        return output.fields.get("data") == text
