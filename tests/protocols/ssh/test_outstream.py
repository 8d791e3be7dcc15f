"""Tests for hoopgw_ssh.outstream: output handed on without splitting a value, on a fake clock."""

from __future__ import annotations

from hoopgw_ssh.outstream import HARD_DELAY, MAX_HELD, SOFT_DELAY, OutputBuffer
from twisted.internet.task import Clock

TEXT = "id: 7 mail: alice.liddell@example.com end\nnext line\nprompt$ "


def _buffer() -> tuple[OutputBuffer, list[str], Clock]:
    pieces: list[str] = []
    clock = Clock()
    return OutputBuffer(pieces.append, clock), pieces, clock


def test_lines_go_at_once_and_the_tail_waits() -> None:
    buffer, pieces, _ = _buffer()
    buffer.feed("one\ntwo\nthr")
    assert pieces == ["one\ntwo\n"]
    assert buffer.held == "thr"


def test_a_value_split_at_any_point_reaches_the_hooks_whole() -> None:
    value = "alice.liddell@example.com"
    for cut in range(1, len(TEXT)):
        buffer, pieces, clock = _buffer()
        buffer.feed(TEXT[:cut])
        clock.advance(SOFT_DELAY / 2)
        buffer.feed(TEXT[cut:])
        clock.advance(SOFT_DELAY + HARD_DELAY)
        assert "".join(pieces) == TEXT
        assert any(value in piece for piece in pieces), (cut, pieces)


def test_a_pause_hands_on_up_to_the_last_whitespace_then_everything() -> None:
    buffer, pieces, clock = _buffer()
    buffer.feed("$ ")
    clock.advance(SOFT_DELAY)
    assert pieces == ["$ "]
    buffer.feed("typed abc")
    clock.advance(SOFT_DELAY)
    assert pieces == ["$ ", "typed "]
    clock.advance(HARD_DELAY - 0.001)
    assert buffer.held == "abc"
    clock.advance(0.002)
    assert pieces == ["$ ", "typed ", "abc"]
    assert not clock.getDelayedCalls()


def test_more_data_restarts_the_wait() -> None:
    buffer, pieces, clock = _buffer()
    buffer.feed("alice")
    clock.advance(SOFT_DELAY * 0.9)
    buffer.feed("@example.com")
    clock.advance(SOFT_DELAY * 0.9)
    assert pieces == []


def test_a_long_line_is_cut_after_whitespace() -> None:
    buffer, pieces, _ = _buffer()
    buffer.feed("x" * 10 + " " + "y" * MAX_HELD)
    assert pieces == ["x" * 10 + " "]
    buffer.feed("z")
    assert pieces[-1] == "y" * MAX_HELD + "z"


def test_a_long_word_goes_whole() -> None:
    buffer, pieces, _ = _buffer()
    buffer.feed("y" * (MAX_HELD + 1))
    assert pieces == ["y" * (MAX_HELD + 1)]
    assert buffer.held == ""


def test_flush_and_discard() -> None:
    buffer, pieces, clock = _buffer()
    buffer.feed("abc")
    buffer.flush()
    assert pieces == ["abc"]
    assert not clock.getDelayedCalls()
    buffer.feed("def")
    buffer.discard()
    clock.advance(1)
    assert pieces == ["abc"]
    buffer.feed("")
    assert not clock.getDelayedCalls()
