"""What every ``hoopgw`` command module shares: exit codes, argument types, output (tables,
JSON, times, progress), and the config's store.

Results go to standard output, messages and errors to standard error, so that
``KEY=$(hoopgw keys create ...)`` captures the key alone. Times are shown in UTC, ISO-8601.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hoopgw.audit.progress import Progress
from hoopgw.errors import HoopgwError

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


def cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a fixed-width text table."""
    cells = [list(headers)] + [[cell(v) for v in row] for row in rows]
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


def out_listing(
    records: Iterable[Any],
    columns: Sequence[tuple[str, str]],
    *,
    as_json: bool,
    also: Sequence[str] = (),
) -> None:
    """Print store records (objects, or mappings) by field name, as :func:`out_records` does:
    the table shows ``columns`` (header, field), the JSON their fields and then ``also``'s.
    ``*_at`` times show as UTC ISO-8601. Only named fields are shown: a record may carry
    others (a key's hash) that never are."""
    names = [field for _, field in columns] + list(also)
    rows = [with_iso_times({name: _field(record, name) for name in names}) for record in records]
    out_records(rows, columns, as_json=as_json)


def out_revoked(revoked: bool, *, missing: str, done: str) -> int:
    """Say on standard error what a ``revoke`` did: ``done``, or ``missing`` when there was
    nothing active to revoke; the exit status."""
    error(done if revoked else missing)
    return EXIT_OK if revoked else EXIT_FAILED


def _field(record: Any, name: str) -> Any:
    value = record[name] if isinstance(record, Mapping) else getattr(record, name)
    return list(value) if isinstance(value, tuple | frozenset) else value


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
    """A :class:`~hoopgw.audit.progress.Progress` that reports on standard error, like
    :func:`error`.

    :param verb: what the command did to the records in the end (``verified``, ``exported``).
    """
    return Progress(error, clock=time.monotonic, verb=verb, interval=PROGRESS_INTERVAL)
