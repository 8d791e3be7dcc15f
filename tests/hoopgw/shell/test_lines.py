"""Tests for hoopgw.shell.lines, through SSH channel fakes (``tests/protocols/ssh/fakes.py``):
typed lines decided before Enter reaches the shell."""

from __future__ import annotations

import struct
import sys
from typing import Any

import pytest

from hoopgw.shell import LineJudge, parse_modes


def _fakes() -> Any:
    # tests/protocols/ssh/fakes.py, loaded by tests/conftest.py (tests are no package).
    return sys.modules["hoopgw_tests_ssh_fakes"]


FakeChannel = _fakes().FakeChannel
EOF = _fakes().EOF
INTERRUPT = b"\x03"


def _modes(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">BL", op, value) for op, value in pairs) + b"\x00"


def _judge(modes: bytes = b"") -> tuple[LineJudge, Any]:
    channel = FakeChannel()
    return LineJudge(channel, modes=parse_modes(modes)), channel


def _script() -> tuple[LineJudge, Any]:
    channel = FakeChannel()
    return LineJudge(channel, modes=None), channel


def test_enter_waits_for_the_decision_in_every_split() -> None:
    typed = b"ls -l\r"
    for size in range(1, len(typed) + 1):
        judge, channel = _judge()
        for start in range(0, len(typed), size):
            judge.feed(typed[start : start + size])
        assert b"".join(channel.to_target) == b"ls -l"
        [(command, _)] = channel.session.pending
        assert (command.text, command.kind) == ("ls -l", "shell-line")
        channel.session.allow()
        assert b"".join(channel.to_target) == typed
        assert channel.session.completed[0][1].status == "ok"


def test_refused_line_is_erased_and_explained() -> None:
    judge, channel = _judge()
    judge.feed(b"reboot\r")
    channel.session.block("denied")
    assert channel.to_target[-1] == INTERRUPT  # cancels the line, wherever the cursor is
    assert b"\r" not in b"".join(channel.to_target)
    assert b"hoopgw refused the command: denied" in b"".join(channel.to_client)
    assert channel.session.completed[0][1].status == "blocked"


def test_typed_ahead_input_waits_and_is_judged_in_order() -> None:
    judge, channel = _judge()
    judge.feed(b"one\rtwo\r")
    assert [c.text for c, _ in channel.session.pending] == ["one"]
    channel.session.allow()
    assert [c.text for c, _ in channel.session.pending] == ["two"]
    channel.session.allow()
    assert b"".join(channel.to_target) == b"one\rtwo\r"


def test_backspace_ctrl_u_and_ctrl_c_are_followed() -> None:
    judge, channel = _judge()
    judge.feed(b"rm -rf /\x15echo hi\x7f\x7fok\r")
    assert channel.session.pending[0][0].text == "echo ok"
    channel.session.allow()
    judge.feed(b"sleep\x03ls\n")
    assert channel.session.pending[0][0].text == "ls"


def test_editing_the_gateway_cannot_follow_is_refused() -> None:
    judge, channel = _judge()
    judge.feed(b"rm -rf /tm\tx\r")
    # The Tab may have run the line: "rm -rf /tm" is decided before the Tab goes on.
    assert channel.session.pending[0][0].text == "rm -rf /tm"
    assert b"".join(channel.to_target) == b"rm -rf /tm"
    channel.session.allow()
    assert b"".join(channel.to_target) == b"rm -rf /tm\tx"
    channel.session.allow()  # decided and recorded like any line, then refused
    assert channel.session.completed[1][1].status == "blocked"
    assert "cannot follow" in channel.session.completed[1][1].error_message
    assert channel.to_target[-1] == INTERRUPT
    judge.feed(b"\x1b[Aq\r")  # an arrow key: history
    channel.session.allow()
    assert channel.session.completed[2][1].status == "blocked"


def test_empty_lines_pass_without_a_decision() -> None:
    judge, channel = _judge()
    judge.feed(b"\r\r  ")
    assert not channel.session.pending
    assert b"".join(channel.to_target) == b"\r\r  "


def test_too_much_typed_ahead_ends_the_channel() -> None:
    judge, channel = _judge()
    judge.feed(b"x\r")
    judge.feed(b"y" * (2**20 + 1))
    assert channel.lost


def test_ctrl_u_after_an_arrow_key_keeps_the_line_unfollowed() -> None:
    # Home, then Ctrl-U erases nothing at the shell: "rm -rf /" stays after the cursor and
    # the shell runs "echo ok;rm -rf /". The gateway must not judge "echo ok;" alone.
    judge, channel = _judge()
    judge.feed(b"rm -rf /\x1b[H\x15echo ok;\r")
    channel.session.block()  # "rm -rf /", decided at the Escape key
    assert b"".join(channel.to_target).startswith(b"rm -rf /" + INTERRUPT + b"[H")
    channel.session.allow()  # "[Hecho ok;" after the interrupt: a new line
    judge.feed(b"x\x03ls\r")  # Ctrl-C discards the whole line: followed again
    channel.session.allow()
    assert channel.session.completed[1][1].status == "ok"


def test_backspace_erases_a_whole_utf8_character() -> None:
    judge, channel = _judge()
    judge.feed("rm -rf /é\x7f\r".encode())
    assert channel.session.pending[0][0].text == "rm -rf /"


def test_history_expansion_and_bytes_that_are_not_utf8_are_not_followed() -> None:
    for typed in (b"^xmp^\r", b"!!:s/xmp//\r", b"echo !rm\r", b"\xf2\xed -rf /\r"):
        judge, channel = _judge()
        judge.feed(typed)
        channel.session.allow()
        assert channel.session.completed[0][1].status == "blocked", typed
    judge, channel = _judge()
    judge.feed(b"echo hi! a != b\r")
    channel.session.allow()
    assert channel.session.completed[0][1].status == "ok"


def test_without_a_pty_nothing_edits_the_line() -> None:
    # No pty: Backspace reaches the shell as a byte, and CR does not end the line, so the
    # shell would run "x=\r rm -rf / ..." or "rm -rf / \x7f\x7f" as typed.
    judge, channel = _script()
    judge.feed(b"x=\r rm -rf / #\n")
    [(command, _)] = channel.session.pending
    assert command.text == "x=\r rm -rf / #"  # one line, and judged as such
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"  # CR: not followed
    assert channel.to_target == [EOF]  # nothing of it ran; the shell gets no more
    judge.feed(b"ls -l\n")
    assert not channel.session.pending


def test_without_a_pty_each_command_waits_whole() -> None:
    judge, channel = _script()
    judge.feed(b"ls\ncat x |\n")
    assert [c.text for c, _ in channel.session.pending] == ["ls"]
    assert channel.to_target == []
    channel.session.allow()
    assert channel.to_target == [b"ls\n"]
    assert not channel.session.pending  # "cat x |": the shell waits for more, so does this
    judge.feed(b"sh\necho done")
    assert [c.text for c, _ in channel.session.pending] == ["cat x |\nsh"]
    channel.session.block("denied")
    assert channel.to_target == [b"ls\n", EOF]
    assert b"stderr:hoopgw refused the command: denied" in b"".join(channel.to_client)
    assert not channel.session.pending  # the rest is dropped


def test_without_a_pty_the_last_line_is_judged_before_eof() -> None:
    judge, channel = _script()
    judge.feed(b"echo a\nrm -rf /")
    judge.eof()
    assert channel.to_target == []
    channel.session.allow()
    assert [c.text for c, _ in channel.session.pending] == ["rm -rf /"]
    assert channel.to_target == [b"echo a\n"]  # EOF does not overtake the held line
    channel.session.block()
    assert channel.to_target == [b"echo a\n", EOF]
    judge, channel = _script()
    judge.feed(b"echo a")
    judge.eof()
    channel.session.allow()
    assert channel.to_target == [b"echo a", EOF]


def test_with_a_pty_eof_waits_behind_a_held_line() -> None:
    judge, channel = _judge()
    judge.feed(b"reboot\r")
    judge.eof()
    assert EOF not in channel.to_target
    channel.session.block()
    assert channel.to_target[-2:] == [INTERRUPT, EOF]


@pytest.mark.parametrize(
    "key",
    [b"\x0f", b"\n", b"\x04", b"\x18\x05", b"\x1b\r", b"\x16\n", b"\x00", b"\x1f"],
)
def test_any_key_that_may_run_the_line_waits_for_its_decision(key: bytes) -> None:
    # Ctrl-O (operate-and-get-next), Ctrl-J, Ctrl-D, Ctrl-X Ctrl-E, Meta-Enter, Ctrl-V...
    judge, channel = _judge()
    judge.feed(b"rm -rf /" + key + b"ls\r")
    assert b"".join(channel.to_target) == b"rm -rf /"
    [(command, _)] = channel.session.pending
    assert command.text == "rm -rf /"
    channel.session.block()
    assert b"".join(channel.to_target) == b"rm -rf /" + INTERRUPT + key[1:] + b"ls"
    assert channel.session.pending[0][0].text == "ls"  # typed ahead: a new line


def test_a_remapped_interrupt_is_followed_and_used() -> None:
    judge, channel = _judge(_modes((1, 0x1C)))  # VINTR is Ctrl-\
    judge.feed(b"rm -rf /\x03")  # Ctrl-C is no interrupt now: it may run the line
    [(command, _)] = channel.session.pending
    assert command.text == "rm -rf /"
    channel.session.block()
    assert channel.to_target[-1] == b"\x1c"
    judge.feed(b"rm\x1cls\r")  # the interrupt the client set discards the line
    assert channel.session.pending[0][0].text == "ls"


def test_a_remapped_kill_character_is_followed() -> None:
    judge, channel = _judge(_modes((4, 0x0B)))  # VKILL is Ctrl-K
    judge.feed(b"rm -rf /\x0bls\r")
    assert channel.session.pending[0][0].text == "ls"


def test_a_continued_line_is_judged_with_its_continuation() -> None:
    for first, second in [
        (b"curl x |", b"sh"),
        (b"rm -rf \\", b"/"),
        (b"echo 'a", b"'; reboot"),
        (b"true &&", b"reboot"),
        (b"if true; then", b"reboot; fi"),
    ]:
        judge, channel = _judge()
        judge.feed(first + b"\r")
        assert not channel.session.pending, first  # nothing runs yet
        assert b"".join(channel.to_target) == first + b"\r"
        judge.feed(second + b"\r")
        [(command, _)] = channel.session.pending
        assert command.text == (first + b"\n" + second).decode(), first
        channel.session.block()
        assert channel.to_target[-1] == INTERRUPT  # cancels the whole command
        judge.feed(b"ls\r")
        assert channel.session.pending[0][0].text == "ls"


def test_terminal_modes_that_change_line_editing_are_found() -> None:
    from hoopgw.shell import unfollowable_modes

    modes = _modes
    # What OpenSSH sends for a usual terminal.
    usual = ((1, 3), (3, 0x7F), (4, 0x15), (5, 4), (6, 0xFF), (7, 0), (36, 1), (50, 1), (51, 1))
    assert unfollowable_modes(modes(*usual)) is None
    assert unfollowable_modes(b"") is None
    assert unfollowable_modes(modes((3, ord("Z")))) is not None  # erase is "Z"
    assert unfollowable_modes(modes((4, ord("q")))) is not None  # kill is "q"
    assert unfollowable_modes(modes((36, 0))) is not None  # CR stays CR
    assert unfollowable_modes(modes((51, 0))) is not None  # no canonical editing
    assert unfollowable_modes(b"\x03\x00") is not None  # truncated
    assert unfollowable_modes(modes((6, 0x0D))) is not None  # VEOL is CR
    assert unfollowable_modes(modes((3, 0x0D))) is not None  # erase is CR
    assert unfollowable_modes(modes((6, 0x03))) is not None  # VEOL is the interrupt
    assert unfollowable_modes(modes((13, 0x15))) is not None  # VWERASE is the kill key
    assert unfollowable_modes(modes((1, 0))) is not None  # no interrupt
    assert unfollowable_modes(modes((50, 0))) is not None  # ISIG off
    assert unfollowable_modes(modes((37, 1))) is not None  # IUCLC: RM is rm
    assert unfollowable_modes(modes((33, 1))) is not None  # ISTRIP
    assert unfollowable_modes(modes((57, 1))) is not None  # NOFLSH
    assert unfollowable_modes(modes((36, 0), (36, 1))) is None  # the last one wins


def test_a_line_longer_than_the_limit_is_not_kept_and_refused() -> None:
    from hoopgw.shell import LINE_LIMIT

    judge, channel = _judge()
    judge.feed(b"x" * (3 * LINE_LIMIT))
    assert len(judge._line) == LINE_LIMIT
    judge.feed(b"\r")
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"


def test_continuation_lines_are_bounded() -> None:
    from hoopgw.shell import LINE_LIMIT

    judge, channel = _judge()
    judge.feed(b"echo 'a\r")
    line = b"x" * 1000 + b"\r"
    for _ in range(LINE_LIMIT // len(line) + 1):
        judge.feed(line)
    assert len(channel.session.pending) == 1
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
    assert "cannot follow" in channel.session.completed[0][1].error_message


def test_a_command_over_too_many_lines_is_refused() -> None:
    from hoopgw.shell import CONTINUED_LINES_LIMIT

    judge, channel = _judge()
    judge.feed(b"echo 'a\r" + b"x\r" * CONTINUED_LINES_LIMIT)
    assert len(channel.session.pending) == 1
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
    judge, channel = _script()
    judge.feed(b"echo 'a\n" + b"x\n" * CONTINUED_LINES_LIMIT)
    assert len(channel.session.pending) == 1
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
    assert channel.to_target == [EOF]


def test_a_byte_that_is_no_utf8_character_may_run_the_line() -> None:
    # A readline that does not read UTF-8 takes 0x8d as Meta-Ctrl-M.
    judge, channel = _judge()
    judge.feed("é".encode() + b" rm -rf /\x8dls\r")
    [(command, _)] = channel.session.pending
    assert command.text == "é rm -rf /"
    channel.session.block()
    assert b"\x8d" not in b"".join(channel.to_target)


def test_modes_that_give_one_key_two_editing_meanings_are_refused() -> None:
    from hoopgw.shell import unfollowable_modes

    assert unfollowable_modes(_modes((3, 0x15))) is not None  # erase is the kill key
    assert unfollowable_modes(_modes((4, 0x08))) is not None  # kill is Ctrl-H
    assert unfollowable_modes(_modes((1, 0x7F))) is not None  # interrupt is Backspace
