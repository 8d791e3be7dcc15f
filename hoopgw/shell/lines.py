"""Lines typed at a shell, judged as commands (``judge_shell_lines = true``).

Shared by the protocols that relay a shell's input (SSH session channels, Kubernetes exec and
attach): each hands a :class:`LineJudge` the input of one shell through a :class:`LineChannel`.

The gateway sees keystrokes, not what the shell will run. It follows the line editing it
understands and holds everything after a key that may run the line until the line is decided.

- **With a pty**, the keys come from the terminal modes the client set in its ``pty-req``
  (:class:`TerminalKeys`; modes it cannot follow refuse the pty: :func:`unfollowable_modes`).
  Printable text, erase (Backspace), kill (Ctrl-U) and interrupt (Ctrl-C) are followed. CR and
  LF end the line: it is decided before the key goes on. Any other control key (Ctrl-O runs
  the line, Ctrl-D, Ctrl-X Ctrl-E, Tab, arrows, a remapped end-of-line character, ...) may run
  the line too, so the line so far is decided before that key goes on, and from then on the
  line is one the gateway cannot follow: refused at its end. A line the shell continues (a
  trailing ``|``, ``&&`` or ``\\``, an open quote or block) goes on without a decision, since
  nothing runs yet, and is judged together with its continuation. A refused line is
  cancelled with the terminal's interrupt character (the whole command, continuation lines
  included) and the client is told why.
- **Without a pty**, nothing edits the input: it is a script. Each complete command (up to a
  newline where the shell would not wait for more) is decided before any of it reaches the
  shell; the last line without a newline is decided when the client ends its input, and the
  end of input (EOF) waits behind it. After a refusal the rest of the input is dropped and the
  shell gets EOF: it ran only what was allowed.

What it cannot see (docs/protocols/ssh.md says so too): what a script, alias or function runs;
input to a program that is not the shell (an editor, a REPL, a password prompt: their lines are
judged, and recorded, like shell lines); text the shell reads from elsewhere.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Protocol

import attrs

from hoopgw import errors as refusals
from hoopgw.session import CommandOutcome
from hoopgw.shell.parser import needs_more
from hoopgw.verdicts import Allow, Block

__all__ = ["LineChannel", "LineJudge", "TerminalKeys", "parse_modes", "unfollowable_modes"]

UNFOLLOWED = (
    "the line was edited in a way the gateway cannot follow (Tab, arrows, history, other"
    " control keys, ! or ^ history expansion, bytes that are not UTF-8); type it out in full"
)
"""Why a line whose editing the gateway could not follow is refused."""
BACKLOG_LIMIT = 2**20
"""Bytes of typed-ahead input held while a line is decided; more ends the channel."""
LINE_LIMIT = 2**16
"""Bytes of one line (of one command without a pty) the gateway follows; longer is refused."""
CONTINUED_LINES_LIMIT = 100
"""Lines one command may span (each new line re-reads the whole command); more is refused."""

_NEWLINE = 0x0A
_SUBMIT = frozenset({0x0D, 0x0A})
# Interactive bash expands `!word` and a leading `^old^new` from history: the line that runs is
# not the line typed.
_HISTORY = re.compile(r"^\s*\^|!(?![\s=(]|$)", re.MULTILINE)

# RFC 4254, 8: opcodes of the terminal modes in a pty-req.
_VINTR, _VERASE, _VKILL = 1, 3, 4
_SPECIAL_CHARS = range(1, 19)  # VINTR .. VDISCARD
_TTY_OP_END, _FIRST_UNDEFINED = 0, 160
_DISABLED = frozenset({0, 0xFF})  # _POSIX_VDISABLE
_ISTRIP, _INLCR, _IGNCR, _ICRNL, _IUCLC = 33, 34, 35, 36, 37
_ISIG, _ICANON, _NOFLSH = 50, 51, 57
_REQUIRED = {
    _ISTRIP: 0,  # would turn bytes above 127 into other ASCII characters
    _INLCR: 0,
    _IGNCR: 0,
    _ICRNL: 1,
    _IUCLC: 0,  # would turn RM into rm
    _ISIG: 1,  # the interrupt character cancels a refused line
    _ICANON: 1,
    _NOFLSH: 0,  # the interrupt must drop a refused line the kernel still holds
}


def parse_modes(modes: bytes) -> dict[int, int]:
    """The opcodes and values of a pty-req's terminal modes (the last of each wins, as in
    sshd).

    :raises ValueError: if they are malformed.
    """
    parsed: dict[int, int] = {}
    index = 0
    while index < len(modes):
        opcode = modes[index]
        if opcode == _TTY_OP_END or opcode >= _FIRST_UNDEFINED:
            break
        if index + 5 > len(modes):
            raise ValueError("malformed terminal modes")
        (parsed[opcode],) = struct.unpack(">L", modes[index + 1 : index + 5])
        index += 5
    return parsed


@attrs.frozen
class TerminalKeys:
    """The editing keys of a pty as its modes set them (Linux defaults for modes not sent)."""

    interrupt: int = 0x03
    erase: frozenset[int] = frozenset({0x7F, 0x08})
    kill: frozenset[int] = frozenset({0x15})

    @classmethod
    def from_modes(cls, modes: dict[int, int]) -> TerminalKeys:
        """The keys ``modes`` set; readline binds Backspace, Ctrl-H and Ctrl-U as well."""
        erase, kill = modes.get(_VERASE, 0x7F), modes.get(_VKILL, 0x15)
        return cls(
            interrupt=modes.get(_VINTR, 0x03),
            erase=frozenset({0x7F, 0x08} | ({erase} - _DISABLED)),
            kill=frozenset({0x15} | ({kill} - _DISABLED)),
        )


def unfollowable_modes(modes: bytes) -> str | None:
    """Why the terminal modes of a pty-req would edit or end lines in ways :class:`LineJudge`
    does not follow, or None. Modes a client does not send keep the pty's defaults."""
    try:
        parsed = parse_modes(modes)
    except ValueError as exc:
        return str(exc)
    keys = TerminalKeys.from_modes(parsed)
    own = {_VINTR: {keys.interrupt}, _VERASE: keys.erase, _VKILL: keys.kill}
    tracked = {keys.interrupt} | keys.erase | keys.kill
    if len(tracked) != 1 + len(keys.erase) + len(keys.kill):
        # One key for two of interrupt, erase and kill: which one the shell does is unknown.
        return "terminal modes give the interrupt, erase or kill key a second meaning"
    for opcode, value in parsed.items():
        if opcode in _REQUIRED and value != _REQUIRED[opcode]:
            return f"terminal mode {opcode} = {value} changes how lines end or are edited"
        if opcode not in _SPECIAL_CHARS or (value in _DISABLED and opcode != _VINTR):
            continue
        if value in _DISABLED:
            return "no interrupt character: a refused line could not be cancelled"
        if not (value < 0x20 or value == 0x7F):
            return f"terminal mode {opcode} makes {value:#x} a line editing key"
        if value in _SUBMIT:
            return f"terminal mode {opcode} gives CR or LF another meaning"
        if value in tracked and value not in own.get(opcode, set()):
            return f"terminal mode {opcode} gives {value:#x} a second meaning"
    return None


class LineSession(Protocol):
    """What a :class:`LineJudge` asks of the session: numbered, decided, completed commands."""

    def new_command(self, text: str, kind: str, details: dict[str, Any]) -> Any:
        """The session's next command."""

    def decide(self, command: Any) -> Any:
        """A Deferred firing with the command's ``Allow`` or ``Block``."""

    def complete(self, command: Any, outcome: CommandOutcome) -> None:
        """Report the command finished."""


class LineChannel(Protocol):
    """The shell's stream as a :class:`LineJudge` sees it (an SSH session channel, a
    Kubernetes exec)."""

    @property
    def session(self) -> LineSession:
        """The session the lines are commands of."""

    @property
    def id(self) -> Any:
        """Recorded with each line as ``details["channel"]``."""

    @property
    def _closed(self) -> bool:
        """Whether the stream has ended (nothing more is written to the client)."""

    def forward_input(self, data: bytes, data_type: int | None = None) -> None:
        """Pass input on to the shell."""

    def forward_eof(self) -> None:
        """Pass the end of input on to the shell."""

    def write(self, data: bytes) -> None:
        """Write to the client's terminal (stdout)."""

    def write_stderr(self, data: bytes) -> None:
        """Write to the client's stderr."""

    def loseConnection(self) -> None:
        """End the stream (the client sent too much while a line was decided)."""


class LineJudge:
    """Follows one shell channel's input and decides each line (each command without a pty)."""

    def __init__(self, channel: LineChannel, *, modes: dict[int, int] | None) -> None:
        """:param modes: the pty's terminal modes (:func:`parse_modes`), None without a pty."""
        self._channel = channel
        self._keys = TerminalKeys.from_modes(modes) if modes is not None else None
        self._line = bytearray()
        """With a pty: the line typed so far (already forwarded). Without: the bytes held."""
        self._script = ""
        """With a pty: earlier lines of a command the shell waits to complete."""
        self._followed = True
        self._backlog = bytearray()
        self._deciding = False
        self._eof = False
        self._stopped = False
        self._utf8_left = 0

    def feed(self, data: bytes) -> None:
        """Client input: forwarded at once, except from a key that may run a line on, which
        waits for the decision (without a pty, each command waits whole)."""
        if self._stopped:
            return
        if self._deciding:
            if len(self._backlog) + len(data) > BACKLOG_LIMIT:
                self._channel.loseConnection()
                return
            self._backlog += data
            return
        if self._keys is None:
            self._feed_script(data)
        else:
            self._feed_terminal(data, self._keys)

    def eof(self) -> None:
        """The client ended its input: EOF goes on after every held line is decided (the
        last line without a newline first)."""
        if self._deciding:
            self._eof = True
            return
        if self._keys is None and self._line and not self._stopped:
            self._eof = True
            self._decide(bytes(self._line), self._followed, b"")
            return
        self._channel.forward_eof()

    # -- with a pty ----------------------------------------------------------------------------

    def _feed_terminal(self, data: bytes, keys: TerminalKeys) -> None:
        start = 0
        for index, byte in enumerate(data):
            key = data[index : index + 1]
            if (
                self._meta(byte)
                or byte in _SUBMIT
                or (
                    (byte < 0x20 or byte == 0x7F)
                    and not (byte in keys.erase or byte in keys.kill or byte == keys.interrupt)
                )
            ):
                self._channel.forward_input(data[start:index])
                if self._line_end(key, submitted=byte in _SUBMIT):
                    self._backlog[:0] = data[index + 1 :]
                    return
                start = index + 1
            elif byte in keys.erase:
                # One character, not one byte: drop UTF-8 continuation bytes with it.
                while self._line and 0x80 <= self._line[-1] < 0xC0:
                    del self._line[-1]
                del self._line[-1:]
            elif byte in keys.kill:
                # Erases what is before the cursor only; once the cursor may have moved (an
                # arrow key), text after it stays, so the line stays unfollowed.
                self._line.clear()
            elif byte == keys.interrupt:
                self._line.clear()
                self._script = ""
                self._followed = True
            elif len(self._line) >= LINE_LIMIT:
                self._followed = False
            else:
                self._line.append(byte)
        self._channel.forward_input(data[start:])

    def _meta(self, byte: int) -> bool:
        """Whether ``byte`` is no part of a UTF-8 character: a readline that does not read
        UTF-8 takes it as a Meta key, which may run the line (Meta-Ctrl-M)."""
        if self._utf8_left:
            if 0x80 <= byte < 0xC0:
                self._utf8_left -= 1
                return False
            self._utf8_left = 0
        if byte < 0x80:
            return False
        if not 0xC2 <= byte < 0xF5:
            return True  # a stray continuation byte or an invalid lead byte
        self._utf8_left = 1 if byte < 0xE0 else 2 if byte < 0xF0 else 3
        return False

    def _line_end(self, key: bytes, *, submitted: bool) -> bool:
        """A key that may run the line: True if it waits for a decision."""
        text = self._script + self._line.decode("utf-8", "replace")
        if len(text) > LINE_LIMIT or text.count("\n") >= CONTINUED_LINES_LIMIT:
            self._followed = False  # continuation lines are bounded too
        if not submitted:
            if not text.strip():  # nothing typed yet: nothing can run, but the shell's
                self._followed = False  # line may now hold text the gateway did not see
                self._channel.forward_input(key)
                return False
            self._decide(bytes(self._line), self._followed, key, keep=True)
            return True
        if self._followed and not text.strip():
            self._channel.forward_input(key)
            return False
        if self._followed and needs_more(text) and not _HISTORY.search(text):
            # The shell reads the next line before it runs any of this one.
            self._script = text + "\n"
            self._line.clear()
            self._channel.forward_input(key)
            return False
        self._decide(bytes(self._line), self._followed, key)
        return True

    # -- without a pty -------------------------------------------------------------------------

    def _feed_script(self, data: bytes) -> None:
        for index, byte in enumerate(data):
            self._line.append(byte)
            if (byte < 0x20 and byte not in (0x09, _NEWLINE)) or byte == 0x7F:
                # Nothing edits the input: Backspace or CR are bytes of the command, which
                # a reader of the record would not see.
                self._followed = False
            too_long = len(self._line) > LINE_LIMIT or (
                byte == _NEWLINE and self._line.count(b"\n") > CONTINUED_LINES_LIMIT
            )
            if byte == _NEWLINE or too_long:
                text = self._line.decode("utf-8", "replace")
                if self._followed and not too_long and needs_more(text):
                    continue  # the shell waits for the rest of the command: so does this
                self._backlog[:0] = data[index + 1 :]
                self._decide(bytes(self._line), self._followed and not too_long, b"")
                return

    # -- deciding ------------------------------------------------------------------------------

    def _decide(self, line: bytes, followed: bool, key: bytes, *, keep: bool = False) -> None:
        """Decide the command ending in ``line`` (with the held lines before it); ``key`` goes
        on if allowed. ``keep``: the line may go on (a key that may not have run it)."""
        channel = self._channel
        session = channel.session
        text = self._script + line.decode("utf-8", "replace")
        if _HISTORY.search(text) or "\ufffd" in text:
            followed = False
        details: dict[str, Any] = {"channel": channel.id}
        command = session.new_command(text.rstrip("\n"), "shell-line", details)
        self._deciding = True

        def decided(verdict: Any) -> None:
            if not isinstance(verdict, Allow):  # fail closed: only an Allow runs it
                if not isinstance(verdict, Block):
                    verdict = Block(reason="no verdict; refused")
                self._refused(command, verdict.reason, refusals.refused(verdict))
            elif not followed:
                # Decided (and recorded) like any line, but refused whatever the plugins said.
                self._refused(command, UNFOLLOWED, refusals.unreadable(UNFOLLOWED))
            else:
                session.complete(command, CommandOutcome(status="ok"))
                if self._keys is None:
                    channel.forward_input(bytes(self._line))
                    self._line.clear()
                elif keep:
                    # The shell's line may now differ from the one followed (Tab, Ctrl-O).
                    self._followed = False
                else:
                    self._line.clear()
                    self._script = ""
                channel.forward_input(key)
            self._resume()

        session.decide(command).addCallback(decided)

    def _refused(self, command: Any, reason: str, shown: refusals.Refusal) -> None:
        channel = self._channel
        channel.session.complete(command, CommandOutcome(status="blocked", error_message=reason))
        self._line.clear()
        self._script = ""
        self._followed = True
        if channel._closed:
            return
        message = f"\r\n{shown.text()}\r\n".encode("utf-8", "replace")
        if self._keys is not None:
            channel.write(message)
            # The interrupt cancels the whole command at the shell, continuation lines too,
            # wherever the cursor is.
            channel.forward_input(bytes([self._keys.interrupt]))
            return
        # Without a pty, what follows may depend on what was refused: the shell gets no more.
        channel.write_stderr(message.lstrip(b"\r\n"))
        self._stopped = True
        self._backlog.clear()
        self._eof = False
        channel.forward_eof()

    def _resume(self) -> None:
        self._deciding = False
        backlog, self._backlog = bytes(self._backlog), bytearray()
        if backlog:
            self.feed(backlog)
        if self._eof and not self._deciding and not self._stopped:
            self._eof = False
            self.eof()
