"""Tests for hoopgw_ssh.shell_lines: typed lines decided before Enter reaches the shell."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from typing import Any

from hoopgw_ssh.shell_lines import KILL_LINE, LineJudge


def _fakes() -> Any:
    name = "hoopgw_tests_ssh_fakes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fakes.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


FakeChannel = _fakes().FakeChannel


def _judge() -> tuple[LineJudge, Any]:
    channel = FakeChannel()
    return LineJudge(channel), channel


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
    assert channel.to_target[-1] == KILL_LINE + b"\r"
    assert b"hoopgw: refused: denied" in b"".join(channel.to_client)
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
    channel.session.allow()  # decided and recorded like any line, then refused
    assert channel.session.completed[0][1].status == "blocked"
    assert "cannot follow" in channel.session.completed[0][1].error_message
    assert channel.to_target[-1] == KILL_LINE + b"\r"
    judge.feed(b"\x1b[Aq\r")  # an arrow key: history
    channel.session.allow()
    assert channel.session.completed[1][1].status == "blocked"


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
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
    assert channel.to_target[-1] == KILL_LINE + b"\r"
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
    channel = FakeChannel()
    judge = LineJudge(channel, terminal=False)
    judge.feed(b"rm -rf / \x7f\x7f\n")
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
    judge.feed(b"x=\r rm -rf / #\n")
    [(command, _)] = channel.session.pending
    assert command.text == "x= rm -rf / #"  # one line, and judged as such
    channel.session.allow()
    assert channel.session.completed[1][1].status == "blocked"  # CR: not followed
    judge.feed(b"ls -l\n")
    channel.session.allow()
    assert channel.session.completed[2][1].status == "ok"


def test_terminal_modes_that_change_line_editing_are_found() -> None:
    from hoopgw_ssh.shell_lines import unfollowable_modes

    def modes(*pairs: tuple[int, int]) -> bytes:
        return b"".join(struct.pack(">BL", op, value) for op, value in pairs) + b"\x00"

    # What OpenSSH sends for a usual terminal.
    assert unfollowable_modes(modes((1, 3), (3, 0x7F), (4, 0x15), (6, 0xFF), (36, 1))) is None
    assert unfollowable_modes(b"") is None
    assert unfollowable_modes(modes((3, ord("Z")))) is not None  # erase is "Z"
    assert unfollowable_modes(modes((4, ord("q")))) is not None  # kill is "q"
    assert unfollowable_modes(modes((36, 0))) is not None  # CR stays CR
    assert unfollowable_modes(modes((51, 0))) is not None  # no canonical editing
    assert unfollowable_modes(b"\x03\x00") is not None  # truncated


def test_a_line_longer_than_the_limit_is_not_kept_and_refused() -> None:
    from hoopgw_ssh.shell_lines import LINE_LIMIT

    judge, channel = _judge()
    judge.feed(b"x" * (3 * LINE_LIMIT))
    assert len(judge._line) == LINE_LIMIT
    judge.feed(b"\r")
    channel.session.allow()
    assert channel.session.completed[0][1].status == "blocked"
