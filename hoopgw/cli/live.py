"""``hoopgw sessions live|kill``: the gateway's live sessions, through its admin API.

Like ``hoopgw reviews``, these commands act as the person using them (``HOOPGW_URL``,
``HOOPGW_TOKEN``): only the running gateway knows its live sessions and can end one. Ending a
session needs the ``admin`` role and is audited before the session ends.
"""

from __future__ import annotations

import argparse
import urllib.parse

from hoopgw.cli.api import api_request
from hoopgw.cli.common import EXIT_OK, out, out_json, out_records, with_iso_times


def register(
    sessions_commands: argparse._SubParsersAction, with_json: argparse.ArgumentParser
) -> None:
    """Add ``live`` and ``kill`` to ``hoopgw sessions``."""
    live = sessions_commands.add_parser(
        "live",
        parents=[with_json],
        help="live sessions, through the admin API (HOOPGW_URL, HOOPGW_TOKEN)",
    )
    live.set_defaults(handler=_live)
    kill = sessions_commands.add_parser(
        "kill",
        parents=[with_json],
        help="end a live session now (admin role; audited), through the admin API",
    )
    kill.add_argument("session_id", metavar="ID", help="the session id, or its first 8+ characters")
    kill.add_argument("--reason", default="", help="why (the client and the record are told)")
    kill.set_defaults(handler=_kill)


def _live(args: argparse.Namespace) -> int:
    sessions = [with_iso_times(s) for s in api_request("GET", "/api/sessions/live")["sessions"]]
    out_records(
        sessions,
        [
            ("ID", "id"),
            ("CONNECTION", "connection"),
            ("PROTOCOL", "protocol"),
            ("IDENTITY", "identity"),
            ("CLIENT", "client_address"),
            ("STARTED", "started_at"),
        ],
        as_json=args.json,
    )
    return EXIT_OK


def _kill(args: argparse.Namespace) -> int:
    path = f"/api/sessions/{urllib.parse.quote(args.session_id, safe='')}/terminate"
    ended = api_request("POST", path, {"reason": args.reason})
    if args.json:
        out_json(ended)
    else:
        out(f"ended session {ended['id']} of {ended['identity']} on {ended['connection']}")
    return EXIT_OK
