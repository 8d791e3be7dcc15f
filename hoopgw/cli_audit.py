"""``hoopgw audit verify`` and ``hoopgw audit prune``: the integrity of the audit trail."""

from __future__ import annotations

import argparse


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add this module's commands: top-level ones to ``commands``, ``hoopgw audit ...`` ones to
    ``audit_commands``; ``with_config`` and ``with_json`` are parents giving ``-c`` and
    ``--json``."""
