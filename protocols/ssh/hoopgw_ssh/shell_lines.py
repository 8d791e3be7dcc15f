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

from typing import TYPE_CHECKING, Any

from hoopgw.session import CommandOutcome
from hoopgw.verdicts import Allow

if TYPE_CHECKING:
    from hoopgw_ssh.channels import SessionChannel

__all__ = ["LineJudge"]

KILL_LINE = b"\x15"
"""Ctrl-U: what erases a refused line at the shell."""
UNFOLLOWED = (
    "the line was edited in a way the gateway cannot follow (Tab, arrows, history);"
    " type it out in full"
)
"""Why a line whose editing the gateway could not follow is refused."""
BACKLOG_LIMIT = 2**20
"""Bytes of typed-ahead input held while a line is decided; more ends the channel."""

_ERASE = {0x7F, 0x08}
_CLEAR = {0x15, 0x03}
_ENTER = {0x0D, 0x0A}


class LineJudge:
    """Follows one shell channel's input and decides each entered line."""

    def __init__(self, channel: SessionChannel) -> None:
        self._channel = channel
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
        for index, byte in enumerate(data):
            if byte in _ENTER:
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
            if byte in _ERASE:
                del self._line[-1:]
            elif byte in _CLEAR:
                self._line.clear()
                self._followed = True
            elif byte < 0x20:
                self._followed = False
            else:
                self._line.append(byte)
        self._channel.forward_input(data[start:])

    def _decide(self, line: bytes, followed: bool, enter: bytes) -> None:
        channel = self._channel
        session = channel.session
        text = line.decode("utf-8", "replace")
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
