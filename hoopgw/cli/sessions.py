"""``hoopgw sessions list|show``: recorded sessions, read from the store (``live`` and
``kill`` ask the running gateway: :mod:`hoopgw.cli.live`)."""

from __future__ import annotations

import argparse
from typing import Any

from hoopgw.cli import live
from hoopgw.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    cell,
    error,
    full_session_id,
    opened_store,
    out,
    out_json,
    out_records,
    positive_int,
    with_iso_times,
)


def register(
    commands: Any, with_config: argparse.ArgumentParser, with_json: argparse.ArgumentParser
) -> None:
    """Add ``sessions``."""
    sessions = commands.add_parser("sessions", help="read recorded sessions")
    sessions_commands = sessions.add_subparsers(metavar="COMMAND", required=True)
    session_list = sessions_commands.add_parser(
        "list", parents=[with_config, with_json], help="list sessions, newest first"
    )
    session_list.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many (default 100)"
    )
    session_list.add_argument("--connection", metavar="NAME", help="only this connection")
    session_list.add_argument("--identity", metavar="NAME", help="only this identity")
    session_list.set_defaults(handler=_sessions_list)
    show = sessions_commands.add_parser(
        "show", parents=[with_config, with_json], help="show a session and its commands"
    )
    show.add_argument("session_id", metavar="ID")
    show.set_defaults(handler=_sessions_show)
    live.register(sessions_commands, with_json)


def _sessions_list(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        sessions = store.list_sessions(
            limit=args.limit, connection=args.connection, identity=args.identity
        )
    sessions = [with_iso_times(s) for s in sessions]
    out_records(
        sessions,
        [
            ("ID", "id"),
            ("CONNECTION", "connection"),
            ("IDENTITY", "identity"),
            ("CLIENT", "client_address"),
            ("STARTED", "started_at"),
            ("ENDED", "ended_at"),
            ("END REASON", "end_reason"),
            ("COMMANDS", "command_count"),
        ],
        as_json=args.json,
    )
    return EXIT_OK


def _sessions_show(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        session = store.get_session(full_session_id(store, args.session_id))
    if session is None:
        error(f"no session with id {args.session_id!r}")
        return EXIT_FAILED
    session = with_iso_times(session)
    commands = [with_iso_times(c) for c in session.get("commands", [])]
    if args.json:
        out_json({**session, "commands": commands})
        return EXIT_OK
    fields = [k for k in session if k != "commands"]
    width = max(len(k) for k in fields)
    for key in fields:
        value = session[key]
        shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
        if isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        out(f"{key:<{width}}  {cell(shown)}")
    out("")
    for command in commands:
        out(
            f"#{command['seq']} {command['received_at']} {command['kind']}"
            f" verdict={cell(command['verdict'])} status={cell(command['status'])}"
            f" rows={cell(command['rows'])} duration={cell(_duration(command['duration']))}"
        )
        if command.get("verdict_reason"):
            by = command.get("verdict_plugin")
            out(f"    reason: {command['verdict_reason']}" + (f" ({by})" if by else ""))
        if command.get("error_code") or command.get("error_message"):
            code, message = cell(command.get("error_code")), command.get("error_message") or ""
            out(f"    error: {code} {message}".rstrip())
        for line in str(command["text"]).splitlines() or [""]:
            out(f"    {line}")
    return EXIT_OK


def _duration(seconds: Any) -> Any:
    from hoopgw.audit.replay import format_duration

    return format_duration(seconds) if isinstance(seconds, int | float) else seconds
