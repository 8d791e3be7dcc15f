"""``hoopgw audit search``, ``hoopgw audit export`` and ``hoopgw replay``.

``docs/audit-export.md`` describes the commands and the export schema.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hoopgw.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    error,
    full_session_id,
    iso_time,
    opened_store,
    out,
    out_json,
    parse_time,
    positive_int,
    progress_reporter,
    table,
    with_iso_times,
)
from hoopgw.errors import HoopgwError

# The handlers import the export, replay and asciicast modules and the config loader when they
# run (through the audit records they pull in Twisted): building the command line must stay quick.

EXPORT_FORMATS = ("jsonl", "csv")
"""``--format`` choices: :data:`hoopgw.audit.export.FORMATS`, repeated here so that building the
command line does not import the exporter (a test checks they are the same)."""

TEXT_COLUMN_WIDTH = 60
"""Longest statement text shown in the ``audit search`` table; ``--json`` shows it whole."""


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add this module's commands: top-level ones to ``commands``, ``hoopgw audit ...`` ones to
    ``audit_commands``; ``with_config`` and ``with_json`` are parents giving ``-c`` and
    ``--json``."""
    with_range = argparse.ArgumentParser(add_help=False)
    with_range.add_argument(
        "--since",
        type=since_date,
        metavar="DATE",
        help="from this UTC date or ISO-8601 time on (inclusive)",
    )
    with_range.add_argument(
        "--until",
        type=until_date,
        metavar="DATE",
        help="up to this ISO-8601 time (exclusive), or to the end of this UTC date",
    )
    with_range.add_argument(
        "--instance",
        metavar="ID",
        help="only this gateway instance's chain (a shared PostgreSQL store); default: every one",
    )

    search = audit_commands.add_parser(
        "search",
        parents=[with_config, with_json, with_range],
        help="search recorded commands, newest first",
    )
    search.add_argument("--identity", metavar="NAME", help="only sessions of this identity")
    search.add_argument("--group", metavar="GROUP", help="only identities in this group")
    search.add_argument("--connection", metavar="NAME", help="only this connection")
    search.add_argument("--session", metavar="ID", help="only this session")
    search.add_argument("--verdict", choices=("allow", "block"), help="only this verdict")
    search.add_argument("--rule", metavar="RULE", help="only commands decided by this rule")
    search.add_argument(
        "--text", metavar="SUBSTRING", help="only statements holding this (ignoring case)"
    )
    search.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many (default 100)"
    )
    search.set_defaults(handler=_search)

    export = audit_commands.add_parser(
        "export",
        parents=[with_config, with_range],
        help="stream every audit record as JSON Lines or CSV",
    )
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    export.add_argument(
        "--out", metavar="FILE", help="write to FILE (replaced only once complete); default stdout"
    )
    export.add_argument(
        "--progress",
        action="store_true",
        help="report progress on stderr even when it is not a terminal",
    )
    export.set_defaults(handler=_export)

    replay = commands.add_parser(
        "replay",
        parents=[with_config, with_json],
        help="replay a recorded database session as a timed transcript",
    )
    replay.add_argument("session_id", metavar="SESSION")
    replay.add_argument(
        "--real-time",
        action="store_true",
        help="wait between statements as long as they were apart when recorded",
    )
    replay.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="with --real-time, replay X times faster (default 1)",
    )
    terminal = replay.add_mutually_exclusive_group()
    terminal.add_argument(
        "--asciicast",
        action="store_true",
        help="print a terminal channel (see --channel) as an asciicast v2 file",
    )
    terminal.add_argument(
        "--terminal",
        action="store_true",
        help="play a terminal channel (see --channel) as the client saw it",
    )
    replay.add_argument(
        "--channel",
        type=int,
        metavar="SEQ",
        help="with --asciicast or --terminal: the terminal channel SEQ (default: the first)",
    )
    replay.set_defaults(handler=_replay)


# -- argument types ------------------------------------------------------------------------------


def since_date(text: str) -> float:
    """``--since``: see :func:`hoopgw.cli.common.parse_time` (a date alone means its start)."""
    return parse_time(text, now=time.time())


def until_date(text: str) -> float:
    """``--until``: see :func:`hoopgw.cli.common.parse_time` (a date alone means the end of
    that day)."""
    return parse_time(text, now=time.time(), end_of_day=True)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text!r}")
    return value


# -- audit search --------------------------------------------------------------------------------


def _search(args: argparse.Namespace) -> int:
    from hoopgw.audit.export import CommandFilter, iso_time_precise, search_commands
    from hoopgw.config.load import load_config

    criteria = CommandFilter(
        identity=args.identity,
        group=args.group,
        connection=args.connection,
        session_id=args.session,
        verdict=args.verdict,
        rule=args.rule,
        since=args.since,
        until=args.until,
        text=args.text,
    )
    with opened_store(load_config(args.config)) as store:
        found = search_commands(store, criteria, limit=args.limit, instance=args.instance)
    if args.json:
        out_json([{**c, "time": iso_time_precise(c["time"])} for c in found])
        return EXIT_OK
    # A shared store's commands come from several instances: say which (SQLite has one).
    shared = any(c["instance"] for c in found)
    out(
        table(
            (
                "TIME",
                *(("INSTANCE",) if shared else ()),
                "SESSION",
                "#",
                "IDENTITY",
                "CONNECTION",
                "VERDICT",
                "STATUS",
                "ROWS",
                "TEXT",
            ),
            [
                (
                    iso_time(c["time"]),
                    *((c["instance"],) if shared else ()),
                    c["session_id"],
                    c["command"],
                    c["identity"],
                    c["connection"],
                    c["verdict"],
                    c["status"],
                    c["rows"],
                    _one_line(c["text"], TEXT_COLUMN_WIDTH),
                )
                for c in found
            ],
        )
    )
    return EXIT_OK


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- audit export --------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from hoopgw.audit.export import export_records
    from hoopgw.config.load import load_config

    config = load_config(args.config)
    progress = None
    if args.progress or sys.stderr.isatty():
        progress = progress_reporter("exported")
    try:
        with opened_store(config) as store, _output(args.out) as stream:
            written = export_records(
                store,
                stream,
                format=args.format,
                since=args.since,
                until=args.until,
                progress=progress,
                instance=args.instance,
            )
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do, and
        # keep Python from failing again when it flushes standard output at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    if progress is not None:
        progress.finish(written)
    return EXIT_OK


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Standard output, or a file that appears at ``path`` only once written completely.

    A ``path`` that is not a regular file (``/dev/null``, a named pipe) is written in place:
    replacing it would put a regular file where the device or pipe was."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if target.exists() and not target.is_file():
        try:
            stream = target.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise HoopgwError(f"cannot write {str(target)!r}: {exc.strerror}") from None
        with stream:
            yield stream
        return
    partial = target.with_name(target.name + ".partial")
    try:
        stream = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise HoopgwError(f"cannot write {str(partial)!r}: {exc.strerror}") from None
    try:
        with stream:
            yield stream
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- replay --------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    import attrs

    from hoopgw.audit.replay import play, transcript
    from hoopgw.config.load import load_config

    if args.json and args.real_time:
        error("--json prints the whole transcript at once; it cannot be used with --real-time")
        return EXIT_USAGE
    if args.channel is not None and not (args.asciicast or args.terminal):
        error("--channel picks the terminal channel of --asciicast or --terminal")
        return EXIT_USAGE
    with opened_store(load_config(args.config)) as store:
        session = store.get_session(full_session_id(store, args.session_id))
    if session is None:
        error(f"no session with id {args.session_id!r}")
        return EXIT_FAILED
    args.session_id = session["id"]
    if args.asciicast or args.terminal:
        return _replay_terminal(args, session)
    if args.json:
        steps = [attrs.asdict(step) for step in transcript(session)]
        described = with_iso_times({k: v for k, v in session.items() if k != "commands"})
        out_json({"session": described, "steps": steps})
        return EXIT_OK

    def write(line: str) -> None:
        print(line, file=sys.stdout, flush=args.real_time)

    play(session, write, real_time=args.real_time, speed=args.speed, sleep=time.sleep)
    return EXIT_OK


def _replay_terminal(args: argparse.Namespace, session: dict[str, Any]) -> int:
    from hoopgw.audit.asciicast import channel_recording, read_asciicast, terminal_channels
    from hoopgw.audit.asciicast import play as play_cast
    from hoopgw.config.load import load_config

    channels = terminal_channels(session)
    wanted = args.channel
    if not channels or (wanted and wanted not in channels):
        which = f"terminal channel #{wanted}" if wanted else "terminal channel"
        error(f"session {args.session_id} has no {which} (with one: {channels or 'none'})")
        return EXIT_FAILED
    seq = wanted or channels[0]
    cast = io.StringIO()
    with opened_store(load_config(args.config)) as store:
        channel_recording(
            session,
            store.session_records(session["id"], "command_received"),
            store.session_records(session["id"], "terminal_output"),
            seq,
            cast,
        )
    if args.asciicast:
        sys.stdout.write(cast.getvalue())
        return EXIT_OK
    cast.seek(0)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    play_cast(
        read_asciicast(cast), write, real_time=args.real_time, speed=args.speed, sleep=time.sleep
    )
    return EXIT_OK
