"""Tests for hoopgw.audit.asciicast: terminal_output records to asciicast v2 and back."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from hoopgw.audit.asciicast import channel_recording, play, read_asciicast, terminal_channels
from hoopgw.audit.chain import AuditRecord

START = 1_700_000_000.0

SESSION: dict[str, Any] = {
    "id": "s1",
    "identity": "robot",
    "connection": "ssh",
    "commands": [
        {"seq": 1, "kind": "shell", "text": "", "received_at": START},
        {"seq": 2, "kind": "shell-line", "text": "ls", "received_at": START + 1},
        {"seq": 3, "kind": "exec", "text": "uptime", "received_at": START + 5},
    ],
}


def _record(seq: int, kind: str, time: float, data: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=seq, kind=kind, session_id="s1", time=time, data=data, prev_hash="", hash=""
    )


RECEIVED = [
    _record(
        1,
        "command_received",
        START,
        {"seq": 1, "details": {"pty": {"term": "xterm", "width": 100, "height": 30}}},
    ),
    _record(2, "command_received", START + 5, {"seq": 3}),
]
OUTPUT = [
    _record(3, "terminal_output", START + 0.5, {"seq": 1, "stream": "stdout", "data": "$ "}),
    _record(
        4, "terminal_output", START + 1.25, {"seq": 1, "stream": "stdout", "data": "ls\r\nfile\r\n"}
    ),
    _record(5, "terminal_output", START + 1.0, {"seq": 1, "stream": "stdout", "data": "é"}),
    _record(
        6, "terminal_output", START + 5.5, {"seq": 3, "stream": "stderr", "data": "up 3 days\n"}
    ),
]


def _cast(seq: int) -> str:
    stream = io.StringIO()
    channel_recording(SESSION, RECEIVED, OUTPUT, seq, stream)
    return stream.getvalue()


def test_terminal_channels_are_exec_shell_and_subsystem_commands() -> None:
    assert terminal_channels(SESSION) == [1, 3]


def test_a_shell_channel_with_its_pty_size() -> None:
    lines = _cast(1).splitlines()
    header = json.loads(lines[0])
    assert header == {
        "version": 2,
        "width": 100,
        "height": 30,
        "timestamp": int(START),
        "title": "robot on ssh: shell",
        "env": {"TERM": "xterm"},
    }
    events = [json.loads(line) for line in lines[1:]]
    # A record written out of clock order keeps the events in order.
    assert events == [[0.5, "o", "$ "], [1.25, "o", "ls\r\nfile\r\n"], [1.25, "o", "é"]]


def test_an_exec_channel_without_pty_uses_80x24() -> None:
    cast = read_asciicast(io.StringIO(_cast(3)))
    assert (cast.header["width"], cast.header["height"]) == (80, 24)
    assert cast.header["title"] == "robot on ssh: uptime"
    assert cast.events == ((0.5, "o", "up 3 days\n"),)


def test_only_terminal_channels_have_recordings() -> None:
    with pytest.raises(LookupError):
        _cast(2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json\n",
        '{"version": 1, "width": 80, "height": 24}\n',
        '{"version": 2, "width": 0, "height": 24}\n',
        '{"version": 2, "width": 80, "height": 24}\n[1, "o"]\n',
        '{"version": 2, "width": 80, "height": 24}\n["x", "o", "a"]\n',
        '{"version": 2, "width": 80, "height": 24}\n[1, "o", 5]\n',
    ],
)
def test_read_refuses_what_is_not_asciicast_v2(text: str) -> None:
    with pytest.raises(ValueError):
        read_asciicast(io.StringIO(text))


def test_play_waits_as_recorded_divided_by_speed() -> None:
    cast = read_asciicast(io.StringIO(_cast(1) + '[1.5, "m", "marker"]\n\n'))
    written: list[str] = []
    slept: list[float] = []
    assert play(cast, written.append, real_time=True, speed=2.0, sleep=slept.append) == 3
    assert written == ["$ ", "ls\r\nfile\r\n", "é"]
    assert slept == [0.25, 0.375]
    assert cast.output() == "$ ls\r\nfile\r\né"
    with pytest.raises(ValueError):
        play(cast, written.append, speed=0, sleep=slept.append)
