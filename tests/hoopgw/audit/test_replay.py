"""Tests for hoopgw.audit.replay: database transcripts (no real time) and asciicast v2 files."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from hoopgw.audit.replay import TranscriptStep, play, render_step, transcript, write_asciicast

T0 = 1_764_090_000.0  # 2025-11-25T17:00:00Z


def command(seq: int, received_at: float, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": "query",
        "text": text,
        "parameter_count": 0,
        "statement_name": "",
        "received_at": received_at,
        "verdict": "allow",
        "verdict_reason": "",
        "verdict_plugin": "",
        "rule": "",
        "status": "ok",
        "rows": 1,
        "bytes": 10,
        "duration": 0.0125,
        "error_code": None,
        "error_message": None,
        "sample": None,
        "completed_at": received_at + 0.0125,
        **extra,
    }


def session(*commands: dict[str, Any], ended: float | None = T0 + 9) -> dict[str, Any]:
    return {
        "id": "5f0c",
        "connection": "pg",
        "protocol": "postgres",
        "target": "db:5432",
        "identity": "agent",
        "groups": ["agents"],
        "client_address": "127.0.0.1:50000",
        "started_at": T0,
        "ended_at": ended,
        "end_reason": "client closed" if ended else None,
        "commands": list(commands),
    }


RECORDED = session(
    command(
        1, T0 + 0.5, "SELECT name, email FROM users", rows=2, sample=[["ann", "a***"], ["bo", None]]
    ),
    command(
        2,
        T0 + 2.5,
        "DROP TABLE users",
        verdict="block",
        verdict_reason="DROP is not allowed",
        verdict_plugin="guardrails",
        rule="no-drop",
        status="blocked",
        rows=None,
        duration=None,
        error_code="42501",
        error_message="DROP is not allowed",
    ),
    command(
        3,
        T0 + 3,
        "SELECT 1/0",
        status="error",
        rows=0,
        error_code="22012",
        error_message="division by zero",
    ),
)


def test_transcript_has_each_statement_at_its_offset_in_order():
    steps = transcript(RECORDED)

    assert [(s.seq, s.offset, s.text) for s in steps] == [
        (1, 0.5, "SELECT name, email FROM users"),
        (2, 2.5, "DROP TABLE users"),
        (3, 3.0, "SELECT 1/0"),
    ]
    assert steps[0].sample == (("ann", "a***"), ("bo", None))
    assert (steps[1].verdict, steps[1].reason, steps[1].plugin, steps[1].rule) == (
        "block",
        "DROP is not allowed",
        "guardrails",
        "no-drop",
    )
    assert steps[2].sample is None


def test_render_step_shows_verdict_outcome_and_aligned_sample():
    first = transcript(RECORDED)[0]

    assert render_step(first) == [
        "+0.500s  #1 query",
        "    SELECT name, email FROM users",
        "    -> allow; ok, 2 rows, 12.5 ms",
        "    sample (2 rows):",
        "      | ann | a*** |",
        "      | bo  | NULL |",
    ]


def test_render_step_of_a_blocked_statement_shows_reason_rule_and_error():
    blocked = transcript(RECORDED)[1]

    assert render_step(blocked) == [
        "+2.500s  #2 query",
        "    DROP TABLE users",
        "    -> block: DROP is not allowed (guardrails, rule no-drop); blocked",
        "    error 42501: DROP is not allowed",
    ]


def test_render_step_of_a_statement_cut_off_by_the_session_end():
    step = TranscriptStep(
        offset=1.0,
        seq=4,
        kind="parse",
        text="SELECT $1\nFROM t",
        verdict=None,
        reason="",
        plugin="",
        rule="",
        status=None,
        rows=None,
        duration=None,
        error_code=None,
        error_message=None,
        sample=None,
    )

    assert render_step(step) == [
        "+1.000s  #4 parse",
        "    SELECT $1",
        "    FROM t",
        "    -> undecided; not completed",
    ]


def test_play_writes_header_then_every_step_without_waiting():
    lines: list[str] = []
    waits: list[float] = []

    count = play(RECORDED, lines.append, sleep=waits.append)

    assert count == 3
    assert lines[0] == "session 5f0c"
    assert lines[1] == "  agent via pg (postgres db:5432) from 127.0.0.1:50000"
    assert lines[2] == (
        "  started 2025-11-25T17:00:00.000000Z, ended 2025-11-25T17:00:09.000000Z"
        " (client closed), 3 statements"
    )
    assert [line for line in lines if line.startswith("+")] == [
        "+0.500s  #1 query",
        "+2.500s  #2 query",
        "+3.000s  #3 query",
    ]
    assert waits == []


def test_play_in_real_time_waits_as_long_as_statements_were_apart():
    waits: list[float] = []

    play(RECORDED, lambda line: None, real_time=True, sleep=waits.append)

    assert waits == [0.5, 2.0, 0.5]


def test_play_in_real_time_scales_waits_by_speed():
    waits: list[float] = []

    play(RECORDED, lambda line: None, real_time=True, speed=4, sleep=waits.append)

    assert waits == [0.125, 0.5, 0.125]


def test_play_of_an_open_session_says_so():
    lines: list[str] = []

    play(session(ended=None), lines.append)

    assert lines[2] == "  started 2025-11-25T17:00:00.000000Z, not ended, 0 statements"


@pytest.mark.parametrize("speed", [0, -1.0])
def test_play_refuses_a_speed_not_above_zero(speed):
    with pytest.raises(ValueError, match="speed must be above 0"):
        play(RECORDED, lambda line: None, speed=speed)


# -- asciicast v2 --------------------------------------------------------------------------------


def cast(chunks: Any, **kwargs: Any) -> list[Any]:
    stream = io.StringIO()
    write_asciicast(stream, chunks, **{"width": 80, "height": 24, **kwargs})
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_asciicast_header_then_one_output_event_per_chunk():
    header, *events = cast(
        [(0.0, "$ "), (0.5, "ls\r\n"), (1.25, "a  b\r\n")],
        timestamp=1764090000,
        title="ssh web-1",
        env={"TERM": "xterm-256color", "SHELL": "/bin/bash"},
    )

    assert header == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1764090000,
        "title": "ssh web-1",
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
    }
    assert events == [[0.0, "o", "$ "], [0.5, "o", "ls\r\n"], [1.25, "o", "a  b\r\n"]]


def test_asciicast_header_has_only_the_required_keys_by_default():
    [header] = cast([])

    assert header == {"version": 2, "width": 80, "height": 24}


def test_asciicast_keeps_a_character_split_across_byte_chunks_whole():
    euro = "€".encode()

    _, *events = cast([(0.0, b"price: " + euro[:1]), (0.1, euro[1:]), (0.2, b" \x1b[1mok\x1b[0m")])

    assert events == [[0.0, "o", "price: "], [0.1, "o", "€"], [0.2, "o", " \x1b[1mok\x1b[0m"]]


def test_asciicast_replaces_invalid_bytes_and_flushes_a_dangling_one():
    _, *events = cast([(0.0, b"a\xffb"), (0.3, b"\xe2\x82")])

    assert events == [[0.0, "o", "a\ufffdb"], [0.3, "o", "\ufffd"]]


def test_asciicast_events_are_one_json_array_per_line():
    stream = io.StringIO()

    count = write_asciicast(stream, [(0.0, "line 1\nline 2\n")], width=10, height=2)

    assert count == 1
    assert stream.getvalue().splitlines()[1] == '[0.0, "o", "line 1\\nline 2\\n"]'


def test_asciicast_refuses_decreasing_offsets():
    with pytest.raises(ValueError, match="comes before"):
        cast([(1.0, "a"), (0.5, "b")])


def test_asciicast_refuses_an_empty_terminal():
    with pytest.raises(ValueError, match="at least 1x1"):
        cast([], width=0)
