"""The ``hoopgw`` command: run the gateway, check its config, manage API keys, read sessions.

Exit codes: 0 success, 1 the operation failed (store error, unknown id), 2 bad usage or an
invalid config. Results go to standard output, messages and errors to standard error, so that
``KEY=$(hoopgw keys create ...)`` captures the key alone. Times are shown in UTC, ISO-8601.
``docs/cli.md`` describes every command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hoopgw import __version__
from hoopgw.errors import ConfigError, HoopgwError
from hoopgw.progress import Progress

# Start-up time: building the parser imports no command's implementation; each handler imports
# what it uses (the config loader, the store, Twisted), so `--version` and `--help` stay quick
# (tests/hoopgw/test_cli_startup.py).
if TYPE_CHECKING:
    from hoopgw.config.load import Config
    from hoopgw.store import Store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""The reader of standard output went away (128 + SIGPIPE, what a shell reports for cat)."""
PROGRESS_INTERVAL = 1.0
"""Seconds between two progress lines of a long command."""

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Turn ``90s``, ``30m``, ``12h`` or ``30d`` into seconds.

    :raises argparse.ArgumentTypeError: for anything else (argparse reports it, exit 2).
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a whole number and s, m, h or d, e.g. 30d"
        )
    return float(int(match[1]) * _UNIT_SECONDS[match[2]])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (``hoopgw replay ... | head``): stop quietly, as cat does. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        error(str(exc))
        return EXIT_USAGE
    except HoopgwError as exc:
        error(str(exc))
        return EXIT_FAILED


# -- parser ----------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoopgw", description="Layer-7 access gateway: audited, guarded access to targets."
    )
    parser.add_argument("--version", action="version", version=f"hoopgw {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the gateway's TOML config file"
    )
    with_json = argparse.ArgumentParser(add_help=False)
    with_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    run = commands.add_parser(
        "run", parents=[with_config], help="run the gateway in the foreground"
    )
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="work with the config file")
    config_commands = config.add_subparsers(metavar="COMMAND", required=True)
    check = config_commands.add_parser(
        "check", parents=[with_config, with_json], help="validate the config file"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also log in to each target with its stored credential and warn about that login"
        " (a superuser behind a read-only connection)",
    )
    check.set_defaults(handler=_config_check)

    keys = commands.add_parser("keys", help="manage API keys")
    keys_commands = keys.add_subparsers(metavar="COMMAND", required=True)
    create = keys_commands.add_parser(
        "create", parents=[with_config], help="create an API key and print it (shown once)"
    )
    add_identity_options(create, identity_help="identity the key authenticates as")
    create.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime such as 90s, 30m, 12h, 30d (default: never expires)",
    )
    create.set_defaults(handler=_keys_create)
    listing = keys_commands.add_parser(
        "list", parents=[with_config, with_json], help="list API keys (never their secrets)"
    )
    listing.set_defaults(handler=_keys_list)
    revoke = keys_commands.add_parser("revoke", parents=[with_config], help="revoke an API key")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=_keys_revoke)
    from hoopgw import cli_ssh_keys

    cli_ssh_keys.register(keys_commands, with_config, with_json)

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
    from hoopgw import cli_live

    cli_live.register(sessions_commands, with_json)

    audit = commands.add_parser("audit", help="verify, search and export the audit trail")
    audit_commands = audit.add_subparsers(metavar="COMMAND", required=True)
    from hoopgw import cli_access, cli_audit, cli_evidence, cli_export, cli_mcp, cli_reviews

    for module in (cli_audit, cli_export, cli_evidence, cli_reviews, cli_access, cli_mcp):
        module.register(commands, audit_commands, with_config, with_json)
    return parser


def parse_time(text: str, *, now: float, end_of_day: bool = False) -> float:
    """Turn a ``--since``/``--until`` value into POSIX time.

    Accepts an ISO-8601 date (``2026-11-25``: its start, or with ``end_of_day`` the start of
    the next day), a date and time (``2026-11-25T17:00:00Z``; UTC unless it has an offset), or a
    duration before ``now`` (``90s``, ``30m``, ``12h``, ``30d``).

    :raises argparse.ArgumentTypeError: for anything else.
    """
    text = text.strip()
    if _DURATION.fullmatch(text):
        return now - parse_duration(text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return (start + timedelta(days=1) if end_of_day else start).timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}: use 2026-11-25, 2026-11-25T17:00:00Z or a duration such as 30d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


# -- commands --------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from hoopgw.config.gateway import resolve_store_url
    from hoopgw.config.load import load_config
    from hoopgw.logs import start_logging

    config = load_config(args.config)
    # Before anything opens it: a store others may read or change is refused, not used.
    from hoopgw.store import check_store_private

    check_store_private(resolve_store_url(config.gateway.store, base_dir=config.base_dir))
    start_logging(config.gateway.log_format, config.gateway.log_level)
    # Imported here: the gateway pulls in the reactor and protocols, which other commands
    # do not need.
    from hoopgw.gateway import run_gateway

    return run_gateway(config)


def _config_check(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if not args.json:
            raise
        problem = {"ok": False, "error": str(exc), "key": exc.key, "connection": exc.connection}
        out(json.dumps(problem))
        return EXIT_USAGE
    facts = {c.name: _protocol_facts(c) for c in config.connections}
    if args.online:
        return _online_check(config, facts, as_json=args.json)
    if args.json:
        summary = [
            {
                "name": c.name,
                "protocol": c.protocol,
                "listen": c.listen,
                "target": c.target,
                "plugins": list(c.plugins),
                **({"facts": facts[c.name]} if facts[c.name] else {}),
            }
            for c in config.connections
        ]
        out(json.dumps({"ok": True, "connections": summary}))
        return EXIT_OK
    names = [c.name for c in config.connections]
    noun = "connection" if len(names) == 1 else "connections"
    listed = f" ({', '.join(names)})" if names else ""
    out(f"ok: {len(names)} {noun}{listed}")
    for name, described in facts.items():
        for key, value in described.items():
            out(f"  {name}: {key}: {value}")
    return EXIT_OK


def _online_check(config: Config, facts: dict[str, dict[str, str]], *, as_json: bool) -> int:
    """``config check --online``: what each connection requires of its target, and whether its
    stored credential logs in and is fit for that (warnings are not failures; a failed login
    or a requirement the protocol cannot enforce is)."""
    from twisted.internet.task import Clock

    from hoopgw.gateway import build_chain, login_warnings, upstream_options
    from hoopgw.protocol import load_protocol

    results = []
    for connection in config.connections:
        spec = load_protocol(connection.protocol)
        result: dict[str, Any] = {
            "name": connection.name,
            "checked": spec.inspect_login is not None,
            "warnings": [],
            "error": "",
        }
        try:
            chain = build_chain(connection, reactor=Clock(), approval_timeout=1.0)
            options = upstream_options(connection, chain, spec)
            result["read_only"] = options.read_only
            result["warnings"] = login_warnings(connection, spec, options)
        except ConfigError as exc:
            result["error"] = str(exc)
        except Exception as exc:  # the login failed: the client library says why
            result["error"] = f"connection {connection.name!r}: cannot log in to the target: {exc}"
        results.append(result)
    failed = any(r["error"] for r in results)
    if as_json:
        for result in results:
            if facts[result["name"]]:
                result["facts"] = facts[result["name"]]
        out(json.dumps({"ok": not failed, "connections": results}))
        return EXIT_FAILED if failed else EXIT_OK
    for result in results:
        name = result["name"]
        for key, value in facts[name].items():
            out(f"  {name}: {key}: {value}")
        if result["error"]:
            error(result["error"])
            continue
        mode = "read-only" if result.get("read_only") else "read-write"
        login = "ok" if result["checked"] else "not checked (its protocol has no check)"
        out(f"  {name}: upstream login {login} ({mode} sessions)")
        for warning in result["warnings"]:
            error(f"warning: {warning}")
    names = ", ".join(r["name"] for r in results)
    if failed:
        error(f"failed: {sum(1 for r in results if r['error'])} of {len(results)} connections")
        return EXIT_FAILED
    out(f"ok: {len(results)} {'connection' if len(results) == 1 else 'connections'} ({names})")
    return EXIT_OK


def _protocol_facts(connection: Any) -> dict[str, str]:
    from hoopgw.protocol import load_protocol

    describe = load_protocol(connection.protocol).describe
    return {} if describe is None else describe(connection)


def _keys_create(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity import KeyService
    from hoopgw.oidc import token_prefix_of

    config = load_config(args.config)
    prefix = token_prefix_of(args.identity, config.identity.oidc)
    if prefix is not None:
        error(f"identity {args.identity!r} starts with {prefix!r}, reserved for an issuer's tokens")
        return EXIT_USAGE
    with opened_store(config) as store:
        try:
            secret, record = KeyService(store).create(
                args.identity, tuple(args.groups), expires_in=args.expires, now=time.time()
            )
        except ValueError as exc:  # an identity or group name the key service refuses
            error(str(exc))
            return EXIT_USAGE
    out(secret)
    error(
        f"created key {record.key_id} for identity {record.identity!r}"
        f" (groups: {', '.join(record.groups)}; expires: {iso_time(record.expires_at) or 'never'})."
        " The key is shown only this once."
    )
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity import KeyService

    with opened_store(load_config(args.config)) as store:
        records = KeyService(store).list()
    # Named fields only: a record may also carry the key's hash, which is never shown.
    keys = [
        {
            "key_id": r.key_id,
            "identity": r.identity,
            "groups": list(r.groups),
            "created_at": iso_time(r.created_at),
            "expires_at": iso_time(r.expires_at),
            "revoked_at": iso_time(r.revoked_at),
            "last_used_at": iso_time(r.last_used_at),
        }
        for r in records
    ]
    out_records(
        keys,
        [
            ("KEY ID", "key_id"),
            ("IDENTITY", "identity"),
            ("GROUPS", "groups"),
            ("CREATED", "created_at"),
            ("EXPIRES", "expires_at"),
            ("REVOKED", "revoked_at"),
            ("LAST USED", "last_used_at"),
        ],
        as_json=args.json,
    )
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity import KeyService

    with opened_store(load_config(args.config)) as store:
        revoked = KeyService(store).revoke(args.key_id)
    if not revoked:
        error(f"no active key with id {args.key_id!r}")
        return EXIT_FAILED
    error(f"revoked key {args.key_id}")
    return EXIT_OK


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
        out(f"{key:<{width}}  {_cell(shown)}")
    out("")
    for command in commands:
        out(
            f"#{command['seq']} {command['received_at']} {command['kind']}"
            f" verdict={_cell(command['verdict'])} status={_cell(command['status'])}"
            f" rows={_cell(command['rows'])} duration={_cell(_duration(command['duration']))}"
        )
        if command.get("verdict_reason"):
            by = command.get("verdict_plugin")
            out(f"    reason: {command['verdict_reason']}" + (f" ({by})" if by else ""))
        if command.get("error_code") or command.get("error_message"):
            code, message = _cell(command.get("error_code")), command.get("error_message") or ""
            out(f"    error: {code} {message}".rstrip())
        for line in str(command["text"]).splitlines() or [""]:
            out(f"    {line}")
    return EXIT_OK


# -- helpers ---------------------------------------------------------------------------------


def full_session_id(store: Store, given: str) -> str:
    """The recorded session id that ``given`` is, or is the unique start of.

    :raises HoopgwError: no session starts with it, or several do.
    """
    found = store.session_ids_starting(given, limit=3)
    if given in found or not found:
        return given
    if len(found) > 1:
        shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
        raise HoopgwError(f"{given!r} is the start of several sessions ({shown}); give more of it")
    return found[0]


@contextmanager
def opened_store(config: Config) -> Iterator[Store]:
    """The config's store, migrated, closed on exit (for command modules)."""
    from hoopgw.store import open_store

    store = open_store(config.store_url, instance=config.gateway.instance)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def add_identity_options(parser: argparse.ArgumentParser, *, identity_help: str) -> None:
    """Add the required ``--identity`` and ``--group`` (repeatable, into ``groups``) options of
    a command that registers a credential."""
    parser.add_argument("--identity", required=True, help=identity_help)
    parser.add_argument(
        "--group",
        dest="groups",
        action="append",
        required=True,
        metavar="GROUP",
        help="group of the identity (repeat for several)",
    )


def with_iso_times(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a store record with every ``*_at`` POSIX time as UTC ISO-8601."""
    return {k: iso_time(v) if k.endswith("_at") else v for k, v in record.items()}


def iso_time(value: Any) -> Any:
    """A POSIX time as UTC ISO-8601; anything else unchanged."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _duration(seconds: Any) -> Any:
    from hoopgw.replay import format_duration

    return format_duration(seconds) if isinstance(seconds, int | float) else seconds


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a fixed-width text table."""
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def out_records(
    records: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, as_json: bool
) -> None:
    """Print records as indented JSON, or as a :func:`table` of ``columns`` (header, record key)
    where a list shows comma-separated."""
    if as_json:
        out_json(records)
        return
    rows = [[_listed(record[key]) for _, key in columns] for record in records]
    out(table([header for header, _ in columns], rows))


def _listed(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def out(text: str) -> None:
    """Print a result on standard output."""
    print(text, file=sys.stdout)


def out_json(value: Any) -> None:
    """Print a ``--json`` result on standard output: indented, non-ASCII kept, values JSON
    has no type for (times, paths) as text."""
    out(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def error(text: str) -> None:
    """Print an error on standard error, prefixed ``hoopgw:``."""
    print(f"hoopgw: {text}", file=sys.stderr)


def progress_reporter(verb: str) -> Progress:
    """A :class:`~hoopgw.progress.Progress` that reports on standard error, like :func:`error`.

    :param verb: what the command did to the records in the end (``verified``, ``exported``).
    """
    return Progress(error, clock=time.monotonic, verb=verb, interval=PROGRESS_INTERVAL)
