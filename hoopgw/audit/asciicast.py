"""Terminal recordings: from ``terminal_output`` audit records to asciicast v2, and back.

The ``recording`` plugin stores what an SSH client saw (after masking) as ``terminal_output``
records, each with the command ``seq`` of its channel, the stream (``stdout``/``stderr``) and
the text. :func:`channel_recording` turns one channel's records into an asciicast v2 file
(https://docs.asciinema.org/manual/asciicast/v2/) with :func:`hoopgw.audit.replay.write_asciicast`,
so ``asciinema play`` accepts it; :func:`read_asciicast` reads such a file and :func:`play`
writes its output with the recorded timing, as ``hoopgw replay --terminal`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

import attrs

from hoopgw.audit.chain import AuditRecord
from hoopgw.audit.replay import write_asciicast

__all__ = ["Cast", "channel_recording", "play", "read_asciicast", "terminal_channels"]

TERMINAL_KINDS = ("exec", "shell", "subsystem", "attach")
"""Command kinds that open a terminal channel."""
DEFAULT_SIZE = (80, 24)
"""Columns and rows when the channel had no pty (exec without ``-t``)."""


@attrs.frozen(kw_only=True)
class Cast:
    """An asciicast v2 file, read."""

    header: Mapping[str, Any]
    """The first line: ``version`` (2), ``width``, ``height`` and optional fields."""
    events: tuple[tuple[float, str, str], ...]
    """``(offset, code, data)``: seconds from the start, ``o`` output (or ``i``, ``m``,
    ``r``), and its text."""

    def output(self) -> str:
        """All output, concatenated."""
        return "".join(data for _, code, data in self.events if code == "o")


def terminal_channels(session: Mapping[str, Any]) -> list[int]:
    """Seqs of the session's commands that had a terminal channel (exec, shell, subsystem)."""
    return [c["seq"] for c in session.get("commands", []) if c.get("kind") in TERMINAL_KINDS]


def channel_recording(
    session: Mapping[str, Any],
    received: Iterable[AuditRecord],
    output: Iterable[AuditRecord],
    seq: int,
    stream: TextIO,
) -> int:
    """Write channel ``seq`` of ``session`` as asciicast v2 to ``stream``.

    :param session: as :meth:`hoopgw.store.base.Store.get_session` returns it.
    :param received: the session's ``command_received`` records (for the pty size).
    :param output: the session's ``terminal_output`` records.
    :return: how many output events were written.
    :raises LookupError: if the session has no terminal command ``seq``.
    """
    command = next(
        (
            c
            for c in session.get("commands", [])
            if c["seq"] == seq and c.get("kind") in TERMINAL_KINDS
        ),
        None,
    )
    if command is None:
        raise LookupError(f"session {session['id']} has no terminal channel #{seq}")
    details: Mapping[str, Any] = next(
        (r.data.get("details") or {} for r in received if r.data.get("seq") == seq), {}
    )
    pty = details.get("pty") or {}
    width = int(pty.get("width") or DEFAULT_SIZE[0])
    height = int(pty.get("height") or DEFAULT_SIZE[1])
    start = float(command["received_at"])
    chunks = (
        (max(0.0, record.time - start), str(record.data.get("data", "")))
        for record in output
        if record.data.get("seq") == seq
    )
    env = {"TERM": str(pty["term"])} if pty.get("term") else None
    title = f"{session.get('identity')} on {session.get('connection')}: " + (
        command.get("text") or command.get("kind") or ""
    )
    return write_asciicast(
        stream,
        _monotonic(chunks),
        width=width,
        height=height,
        timestamp=int(start),
        title=title,
        env=env,
    )


def _monotonic(chunks: Iterable[tuple[float, str]]) -> Iterator[tuple[float, str]]:
    # Records are in write order; a clock step back must not make an invalid file.
    last = 0.0
    for offset, data in chunks:
        last = max(last, offset)
        yield last, data


def read_asciicast(stream: TextIO) -> Cast:
    """Read an asciicast v2 file.

    :raises ValueError: if it is not one (wrong version, bad JSON, malformed event).
    """
    lines = iter(stream)
    try:
        header = json.loads(next(lines))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise ValueError(f"not an asciicast file: {exc}") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise ValueError("not an asciicast v2 file (the header's version is not 2)")
    for key in ("width", "height"):
        if not isinstance(header.get(key), int) or header[key] < 1:
            raise ValueError(f"the header's {key} is not a positive whole number")
    events = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            offset, code, data = json.loads(line)
        except (json.JSONDecodeError, ValueError, TypeError):
            raise ValueError(f"line {number} is not an event [time, code, data]") from None
        if not isinstance(offset, int | float) or not isinstance(code, str):
            raise ValueError(f"line {number} is not an event [time, code, data]")
        if not isinstance(data, str):
            raise ValueError(f"line {number}: event data must be text")
        events.append((float(offset), code, data))
    return Cast(header=header, events=tuple(events))


def play(
    cast: Cast,
    write: Callable[[str], None],
    *,
    real_time: bool = False,
    speed: float = 1.0,
    sleep: Callable[[float], None],
) -> int:
    """Write the output events of ``cast``; with ``real_time``, as far apart as recorded
    (divided by ``speed``).

    :return: how many output events were written.
    :raises ValueError: if ``speed`` is not above 0.
    """
    if not speed > 0:
        raise ValueError(f"speed must be above 0, not {speed!r}")
    previous = 0.0
    written = 0
    for offset, code, data in cast.events:
        if code != "o":
            continue
        if real_time and offset > previous:
            sleep((offset - previous) / speed)
        previous = max(previous, offset)
        write(data)
        written += 1
    return written
