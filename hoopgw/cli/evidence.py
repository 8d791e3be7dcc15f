"""``hoopgw evidence``: the auditor's evidence pack (see :mod:`hoopgw.evidence.pack`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hoopgw.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    error,
    opened_store,
    out,
    parse_time,
    progress_reporter,
)


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add this module's commands: top-level ones to ``commands``, ``hoopgw audit ...`` ones to
    ``audit_commands``; ``with_config`` and ``with_json`` are parents giving ``-c`` and
    ``--json``."""
    evidence = commands.add_parser(
        "evidence",
        parents=[with_config],
        help="write an evidence pack for auditors (verifies the audit chain)",
    )
    evidence.add_argument(
        "--since",
        required=True,
        metavar="DATE",
        help="first instant covered: 2026-11-25, 2026-11-25T17:00:00Z (UTC) or a duration "
        "ago such as 30d",
    )
    evidence.add_argument(
        "--until", metavar="DATE", help="first instant no longer covered (default: now)"
    )
    evidence.add_argument(
        "--out", required=True, metavar="DIR", help="folder to write (created; must be empty)"
    )
    evidence.set_defaults(handler=_evidence)


def _evidence(args: argparse.Namespace) -> int:
    # Imported here, not at the top: building the command line must stay quick.
    from hoopgw.config.load import load_config
    from hoopgw.evidence.model import TimeRange, latest_checkpoint
    from hoopgw.evidence.pack import build_pack

    now = time.time()
    try:
        since = parse_time(args.since, now=now)
        until = None if args.until is None else parse_time(args.until, now=now, end_of_day=True)
    except argparse.ArgumentTypeError as exc:
        error(str(exc))
        return EXIT_USAGE
    if until is not None and until <= since:
        error("--until must be later than --since")
        return EXIT_USAGE
    folder = Path(args.out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        error(f"{folder} exists and is not an empty folder; choose a new one for the pack")
        return EXIT_USAGE
    config = load_config(args.config)
    progress = progress_reporter("read")
    with opened_store(config) as store:
        result = build_pack(
            store,
            config,
            config_file=Path(args.config),
            time_range=TimeRange(since=since, until=until),
            folder=folder,
            now=now,
            latest=latest_checkpoint(config),
            progress=progress,
            checkpoints=lambda instance: latest_checkpoint(config, instance),
        )
    progress.finish()
    summary = (
        f"sessions: {result.sessions}, commands: {result.commands}, files: {len(result.files)}"
    )
    several = len(result.instances) > 1
    if not result.verified:
        problem = result.verification.problem or result.checkpoint_problem or result.journal_problem
        of = f" of instance {result.instance}" if several else ""
        error(f"the audit log{of} does NOT verify: {problem}")
        error(f"evidence pack written to {folder}, marked FAILED verification ({summary})")
        return EXIT_FAILED
    verified = f"chains of {', '.join(result.instances)} verified" if several else "chain verified"
    out(f"evidence pack written to {folder} ({summary}; {verified})")
    return EXIT_OK
