"""Replaying recorded sessions: database sessions as timed transcripts, terminal sessions as
asciicast v2.

A database session is replayed from its recorded commands (:meth:`Store.get_session`): each
statement at its offset from the session start, with its verdict and reason, rows, duration,
error and the masked row sample if one was recorded. :func:`play` prints it at once or, with
``real_time``, waits between statements as long as they were apart (scaled by ``speed``).

Terminal sessions (SSH, Kubernetes exec) are written as asciicast v2
(https://docs.asciinema.org/manual/asciicast/v2/), which ``asciinema play`` accepts:
:func:`write_asciicast` turns the recorded output chunks into that file.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import attrs

from hoopgw.audit.export import iso_time_precise


@attrs.frozen(kw_only=True)
class TranscriptStep:
    """One statement of a replayed database session."""

    offset: float
    """Seconds from the session start to when the gateway received the statement."""
    seq: int
    """The statement's position in its session, from 1."""
    kind: str
    """The protocol message that carried it (``query``, ``parse``, ...)."""
    text: str
    """The statement as recorded (masked if masking was on)."""
    verdict: str | None
    """``allow``, ``block``, or None if the session ended before a decision."""
    reason: str
    """Why, as shown to the client or approver."""
    plugin: str
    """The plugin(s) that decided."""
    rule: str
    """The rule that matched, if any."""
    status: str | None
    """``ok``, ``error``, ``blocked``, ``cancelled``, ``aborted``, or None if never completed."""
    rows: int | None
    """Rows returned or affected."""
    duration: float | None
    """Seconds from forwarding to completion."""
    error_code: str | None
    """The error's code (an SQLSTATE for databases)."""
    error_message: str | None
    """The error as the client saw it."""
    sample: tuple[tuple[str | None, ...], ...] | None
    """The recorded result rows (after masking), or None if sampling was off."""


def transcript(session: Mapping[str, Any]) -> list[TranscriptStep]:
    """The steps of a session as :meth:`Store.get_session` returns it, in session order."""
    started = session["started_at"]
    steps = []
    for command in session.get("commands", []):
        sample = command.get("sample")
        steps.append(
            TranscriptStep(
                offset=max(0.0, command["received_at"] - started),
                seq=command["seq"],
                kind=command.get("kind") or "",
                text=command.get("text") or "",
                verdict=command.get("verdict") or None,
                reason=command.get("verdict_reason") or "",
                plugin=command.get("verdict_plugin") or "",
                rule=command.get("rule") or "",
                status=command.get("status") or None,
                rows=command.get("rows"),
                duration=command.get("duration"),
                error_code=command.get("error_code") or None,
                error_message=command.get("error_message") or None,
                sample=None if sample is None else tuple(tuple(row) for row in sample),
            )
        )
    return steps


def render_header(session: Mapping[str, Any]) -> list[str]:
    """The lines that introduce a replayed session: who, where, when and how it ended."""
    ended = session.get("ended_at")
    end = (
        f"ended {iso_time_precise(ended)} ({session.get('end_reason') or 'no reason'})"
        if ended is not None
        else "not ended"
    )
    count = len(session.get("commands", []))
    return [
        f"session {session['id']}",
        f"  {session.get('identity')} via {session.get('connection')}"
        f" ({session.get('protocol')} {session.get('target')})"
        f" from {session.get('client_address')}",
        f"  started {iso_time_precise(session['started_at'])}, {end},"
        f" {count} statement{'' if count == 1 else 's'}",
    ]


def render_step(step: TranscriptStep) -> list[str]:
    """The lines of one statement: offset and text, then verdict, outcome and sample."""
    lines = [f"+{step.offset:.3f}s  #{step.seq} {step.kind}"]
    lines += [f"    {line}" for line in step.text.splitlines() or [""]]
    verdict = step.verdict or "undecided"
    decided_by = ", ".join(
        part for part in (step.plugin, step.rule and f"rule {step.rule}") if part
    )
    if step.reason:
        verdict += f": {step.reason}"
    if decided_by:
        verdict += f" ({decided_by})"
    outcome = [step.status or "not completed"]
    if step.rows is not None:
        outcome.append(f"{step.rows} row{'' if step.rows == 1 else 's'}")
    if step.duration is not None:
        outcome.append(format_duration(step.duration))
    lines.append(f"    -> {verdict}; {', '.join(outcome)}")
    if step.error_code or step.error_message:
        lines.append(f"    error {step.error_code or '-'}: {step.error_message or ''}".rstrip())
    if step.sample:
        lines.append(f"    sample ({len(step.sample)} row{'' if len(step.sample) == 1 else 's'}):")
        lines += [f"      {line}" for line in _sample_table(step.sample)]
    return lines


def _sample_table(rows: tuple[tuple[str | None, ...], ...]) -> list[str]:
    cells = [["NULL" if value is None else value for value in row] for row in rows]
    widths = [
        max(len(row[i]) for row in cells if i < len(row))
        for i in range(max(len(row) for row in cells))
    ]
    return [
        "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"
        for row in cells
    ]


def play(
    session: Mapping[str, Any],
    write: Callable[[str], None],
    *,
    real_time: bool = False,
    speed: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write the transcript of ``session`` line by line.

    :param write: receives each line (without a line end).
    :param real_time: wait before each statement as long as it came after the one before.
    :param speed: how many times faster than it happened (with ``real_time``); above 0.
    :param sleep: waits a number of seconds (``time.sleep``; a fake in tests).
    :return: how many statements were written.
    :raises ValueError: if ``speed`` is not above 0.
    """
    if not speed > 0:
        raise ValueError(f"speed must be above 0, not {speed!r}")
    for line in render_header(session):
        write(line)
    steps = transcript(session)
    previous = 0.0
    for step in steps:
        if real_time and step.offset > previous:
            sleep((step.offset - previous) / speed)
        previous = max(previous, step.offset)
        write("")
        for line in render_step(step):
            write(line)
    return len(steps)


# -- terminal sessions ---------------------------------------------------------------------------


def write_asciicast(
    stream: TextIO,
    chunks: Iterable[tuple[float, bytes | str]],
    *,
    width: int,
    height: int,
    timestamp: int | None = None,
    title: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Write a terminal session's output as an asciicast v2 file.

    The first line is the header object; then one ``[time, "o", data]`` event per chunk, one
    JSON array per line. Byte chunks are decoded as UTF-8 across chunk boundaries, so a
    character split between two chunks is kept whole; invalid bytes become U+FFFD.

    :param chunks: ``(offset, data)`` pairs: seconds from the session start, and what the
        terminal showed. Offsets must not decrease.
    :param width: terminal columns; :param height: terminal rows.
    :param timestamp: POSIX time the session started (whole seconds), if known.
    :param title: a title for players to show.
    :param env: environment facts, such as ``SHELL`` and ``TERM``.
    :return: how many events were written.
    :raises ValueError: for a size below 1 or a negative or decreasing offset.
    """
    if width < 1 or height < 1:
        raise ValueError(f"terminal size must be at least 1x1, not {width}x{height}")
    header: dict[str, Any] = {"version": 2, "width": width, "height": height}
    if timestamp is not None:
        header["timestamp"] = int(timestamp)
    if title is not None:
        header["title"] = title
    if env:
        header["env"] = dict(env)
    stream.write(json.dumps(header, ensure_ascii=False) + "\n")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last = 0.0
    events = 0
    for offset, data in chunks:
        if offset < last:
            raise ValueError(f"output offset {offset} comes before {last}")
        last = offset
        text = decoder.decode(data) if isinstance(data, bytes) else data
        if text:
            _write_event(stream, offset, text)
            events += 1
    tail = decoder.decode(b"", final=True)
    if tail:
        _write_event(stream, last, tail)
        events += 1
    return events


def _write_event(stream: TextIO, offset: float, text: str) -> None:
    # Microsecond precision, as asciinema itself writes.
    stream.write(json.dumps([round(offset, 6), "o", text], ensure_ascii=False) + "\n")


def format_duration(seconds: float) -> str:
    """A duration for people: ``4.0 ms`` below a second, ``1.25 s`` below a minute, then
    ``3 min 5 s`` or ``2 h 4 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
