"""Lines typed at an interactive shell, judged as commands (``judge_shell_lines = true``).

The gateway sees keystrokes, not what the shell will run. It follows the simple line editing
every shell does (printable text, Backspace, Ctrl-U, Ctrl-C) and holds the Enter key until the
line is decided: allowed, Enter goes on; refused, the line is erased at the shell (Ctrl-U) and
the client is told why. A line edited in ways the gateway cannot follow (Tab completion, arrow
keys, history, any other control key) is refused when Enter comes: fail closed.

What it cannot see (docs/protocols/ssh.md says so too): what a script, alias or function runs;
input to a program that is not the shell (an editor, a REPL, a password prompt: their Enter is
judged, and recorded, like a shell line); text the shell reads from elsewhere.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

from hoopgw.session import CommandOutcome
from hoopgw.verdicts import Allow

if TYPE_CHECKING:
    from hoopgw_ssh.channels import SessionChannel

__all__ = ["LineJudge", "unfollowable_modes"]

KILL_LINE = b"\x15"
"""Ctrl-U: what erases a refused line at the shell."""
UNFOLLOWED = (
    "the line was edited in a way the gateway cannot follow (Tab, arrows, history,"
    " ! or ^ history expansion, bytes that are not UTF-8); type it out in full"
)
"""Why a line whose editing the gateway could not follow is refused."""
BACKLOG_LIMIT = 2**20
"""Bytes of typed-ahead input held while a line is decided; more ends the channel."""
LINE_LIMIT = 2**16
"""Bytes of one line the gateway follows; a longer line is refused, and not kept."""

_ERASE = {0x7F, 0x08}
_KILL = 0x15
_INTERRUPT = 0x03
_ENTER = {0x0D, 0x0A}
_NEWLINE = {0x0A}  # without a pty, CR is a byte of the line, not its end
# Interactive bash expands `!word` and a leading `^old^new` from history: the line that runs is
# not the line typed.
_HISTORY = re.compile(rb"^\s*\^|!(?![\s=(]|$)")


class LineJudge:
    """Follows one shell channel's input and decides each entered line."""

    def __init__(self, channel: SessionChannel, *, terminal: bool = True) -> None:
        """:param terminal: whether the channel has a pty. Without one nothing edits the line
        (Backspace, Ctrl-U and Ctrl-C reach the shell as bytes of it), so every control key
        makes the line unfollowed."""
        self._channel = channel
        self._terminal = terminal
        self._line = bytearray()
        self._followed = True
        self._backlog = bytearray()
        self._deciding = False

    def feed(self, data: bytes) -> None:
        """Client keystrokes: forwarded at once, except Enter, which waits for a decision."""
        if self._deciding:
            if len(self._backlog) + len(data) > BACKLOG_LIMIT:
                self._channel.loseConnection()
                return
            self._backlog += data
            return
        start = 0
        enter = _ENTER if self._terminal else _NEWLINE
        for index, byte in enumerate(data):
            if byte in enter:
                self._channel.forward_input(data[start:index])
                line, followed = bytes(self._line), self._followed
                self._line.clear()
                self._followed = True
                if not line.strip() and followed:
                    start = index
                    continue
                self._backlog += data[index + 1 :]
                self._decide(line, followed, data[index : index + 1])
                return
            if not self._terminal and (byte < 0x20 or byte == 0x7F):
                self._followed = False
            elif byte in _ERASE:
                # One character, not one byte: drop UTF-8 continuation bytes with it.
                while self._line and 0x80 <= self._line[-1] < 0xC0:
                    del self._line[-1]
                del self._line[-1:]
            elif byte == _KILL:
                # Erases what is before the cursor only; once the cursor may have moved (an
                # arrow key), text after it stays, so the line stays unfollowed.
                self._line.clear()
            elif byte == _INTERRUPT:
                self._line.clear()
                self._followed = True
            elif byte < 0x20 or len(self._line) >= LINE_LIMIT:
                self._followed = False
            else:
                self._line.append(byte)
        self._channel.forward_input(data[start:])

    def _decide(self, line: bytes, followed: bool, enter: bytes) -> None:
        channel = self._channel
        session = channel.session
        text = line.decode("utf-8", "replace")
        if _HISTORY.search(line) or "\ufffd" in text:
            followed = False
        details: dict[str, Any] = {"channel": channel.id}
        command = session.new_command(text, "shell-line", details)
        self._deciding = True

        def decided(verdict: Any) -> None:
            if not isinstance(verdict, Allow):
                self._refused(command, verdict.reason, enter)
            elif not followed:
                # Decided (and recorded) like any line, but refused whatever the plugins said.
                self._refused(command, UNFOLLOWED, enter)
            else:
                channel.forward_input(enter)
                session.complete(command, CommandOutcome(status="ok"))
                self._resume()

        session.decide(command).addCallback(decided)

    def _refused(self, command: Any, reason: str, enter: bytes) -> None:
        channel = self._channel
        channel.session.complete(command, CommandOutcome(status="blocked", error_message=reason))
        if not channel._closed:
            channel.write(f"\r\nhoopgw: refused: {reason}\r\n".encode("utf-8", "replace"))
            channel.forward_input(KILL_LINE + enter)
        self._resume()

    def _resume(self) -> None:
        self._deciding = False
        backlog, self._backlog = bytes(self._backlog), bytearray()
        if backlog:
            self.feed(backlog)


# RFC 4254, 8: opcodes of the terminal modes in a pty-req.
_SPECIAL_CHARS = range(1, 19)  # VINTR .. VDISCARD
_TTY_OP_END, _FIRST_UNDEFINED = 0, 160
_INLCR, _IGNCR, _ICRNL, _ICANON = 34, 35, 36, 51
_REQUIRED = {_INLCR: 0, _IGNCR: 0, _ICRNL: 1, _ICANON: 1}


def unfollowable_modes(modes: bytes) -> str | None:
    """Why the terminal modes of a pty-req would edit lines in ways :class:`LineJudge` does not
    follow (a printable erase or kill character, CR not turned into NL, no line editing), or
    None. Modes a client does not send keep the pty's defaults, which are followed."""
    index = 0
    while index < len(modes):
        opcode = modes[index]
        if opcode == _TTY_OP_END or opcode >= _FIRST_UNDEFINED:
            return None
        if index + 5 > len(modes):
            return "malformed terminal modes"
        (value,) = struct.unpack(">L", modes[index + 1 : index + 5])
        index += 5
        if opcode in _SPECIAL_CHARS and not (value < 0x20 or value in (0x7F, 0xFF)):
            return f"terminal mode {opcode} makes {value:#x} a line editing key"
        if opcode in _REQUIRED and value != _REQUIRED[opcode]:
            return f"terminal mode {opcode} = {value} changes how lines end or are edited"
    return None
