"""The NIST SP 800-53 controls an evidence pack maps to what demonstrates them.

The map is data (``controls.toml``, shipped with the package): each control, the statements
that demonstrate it, written with ``{fact}`` fields, and the pack's files holding the evidence.
This module computes the facts of a pack (:data:`FACTS`) and fills the map in; :func:`load_map`
checks the map and names the entry of any mistake.
"""

from __future__ import annotations

import functools
import string
import tomllib
from importlib import resources
from typing import Any

import attrs

from hoopgw.config.load import Config
from hoopgw.errors import HoopgwError
from hoopgw.evidence.model import (
    ENCRYPTED_PROTOCOLS,
    describe_checkpoint,
    durability_text,
    grants_text,
    reviews_text,
)

MAP_FILE = "controls.toml"
"""The control map, next to this module."""

FACTS = {
    "recorded": "connections with recording",
    "unrecorded": "connections without recording",
    "guarded": "connections with guardrails",
    "masked": "connections with masking",
    "jit": "just-in-time connections",
    "allow_groups": "each connection and the groups it admits",
    "records_by_kind": "audit records in range, by kind",
    "records": "audit records in range",
    "first_seq": "the first record in range",
    "last_seq": "the last record in range",
    "sessions": "sessions in range",
    "sessions_by_connection": "sessions in range, by connection",
    "identities": "identities with sessions in range",
    "commands": "commands in range",
    "allowed": "commands allowed",
    "blocked": "commands blocked",
    "held": "commands held",
    "undecided": "commands undecided",
    "blocked_by_rule": "commands blocked, by rule",
    "outcomes": "commands by outcome",
    "api_keys": "API keys",
    "chain": "whether the hash chain verifies (a sentence)",
    "checkpoint": "the latest signed checkpoint",
    "retention": "records pruned under retention (a sentence)",
    "durability": "the audit durability covering the records (a sentence)",
    "grants": "access grants made (a sentence)",
    "reviews": "reviews decided (a sentence)",
}
"""The facts a statement of the map may name, with what each is."""
LIST_FACTS = {
    "transport": "SC-8 per protocol and per connection (several statements)",
    "policy_files": "the policy file of each connection (several files)",
}
"""Facts that are lists: an entry that is only ``{name}`` stands for each of their items."""


class ControlMapError(HoopgwError):
    """The control map is invalid; the message names the entry and why."""


@attrs.frozen
class Control:
    """One control of the map, its statements and files still holding their ``{fact}``s."""

    id: str
    title: str
    evidence: tuple[str, ...]
    files: tuple[str, ...]


@functools.cache
def control_map() -> tuple[Control, ...]:
    """The shipped map (``controls.toml``), checked once."""
    text = resources.files("hoopgw.evidence").joinpath(MAP_FILE).read_text(encoding="utf-8")
    return load_map(text)


def load_map(text: str, *, source: str = MAP_FILE) -> tuple[Control, ...]:
    """Read and check a control map.

    :raises ControlMapError: naming the control and the entry that is wrong.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ControlMapError(f"{source}: not valid TOML: {exc}") from None
    if set(document) != {"control"} or not isinstance(document["control"], list):
        raise ControlMapError(f"{source}: holds only [[control]] tables")
    controls: list[Control] = []
    seen: set[str] = set()
    for number, table in enumerate(document["control"], start=1):
        if not isinstance(table, dict):
            raise ControlMapError(f"{source}: control #{number}: must be a table")
        where = f"{source}: control {table.get('id') or f'#{number}'}"
        if set(table) != {"id", "title", "evidence", "files"}:
            raise ControlMapError(f"{where}: needs exactly id, title, evidence and files")
        if not isinstance(table["id"], str) or not table["id"] or table["id"] in seen:
            raise ControlMapError(f"{where}: id must be a new, non-empty string")
        seen.add(table["id"])
        if not isinstance(table["title"], str) or not table["title"]:
            raise ControlMapError(f"{where}: title must be a non-empty string")
        for key in ("evidence", "files"):
            entries = table[key]
            if not entries or not isinstance(entries, list):
                raise ControlMapError(f"{where}: {key} must be a non-empty list")
            for index, entry in enumerate(entries, start=1):
                problem = _entry_problem(entry)
                if problem is not None:
                    raise ControlMapError(f"{where}: {key} {index}: {problem}")
        controls.append(
            Control(
                id=table["id"],
                title=table["title"],
                evidence=tuple(table["evidence"]),
                files=tuple(table["files"]),
            )
        )
    if not controls:
        raise ControlMapError(f"{source}: no control")
    return tuple(controls)


def _entry_problem(entry: Any) -> str | None:
    """Why a statement or file entry of the map is wrong, or ``None``."""
    if not isinstance(entry, str) or not entry:
        return "must be a non-empty string"
    try:
        fields = [part[1:] for part in string.Formatter().parse(entry) if part[1] is not None]
    except ValueError as exc:
        return f"{exc} (write {{{{ and }}}} for a brace)"
    for name, spec, conversion in fields:
        if spec or conversion:
            return f"{{{name}}} takes no format or conversion"
        if name in LIST_FACTS:
            if entry != f"{{{name}}}":
                return f"{{{name}}} is a list: it stands alone in its entry"
        elif name not in FACTS:
            known = ", ".join(sorted({*FACTS, *LIST_FACTS}))
            return f"unknown fact {{{name}}} (known: {known})"
    return None


def controls(doc: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Each control, the statements that demonstrate it, and the files holding the evidence."""
    values, lists = facts(doc, config)

    def filled(entries: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for entry in entries:
            name = entry[1:-1]
            if entry == f"{{{name}}}" and name in lists:
                out.extend(lists[name])
            else:
                out.append(entry.format_map(values))
        return out

    return [
        {
            "id": control.id,
            "title": control.title,
            "evidence": filled(control.evidence),
            "files": filled(control.files),
        }
        for control in control_map()
    ]


def facts(doc: dict[str, Any], config: Config) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The :data:`FACTS` and :data:`LIST_FACTS` of a summary document."""
    sessions, commands, records = doc["sessions"], doc["commands"], doc["records"]
    verification = doc["verification"]
    verdicts = commands["by_verdict"]
    connections = config.connections

    def names(items: list[str]) -> str:
        return ", ".join(items) if items else "none"

    def counts(by: dict[str, int]) -> str:
        return ", ".join(f"{k}: {n}" for k, n in by.items()) or "none"

    chain = (
        f"Hash chain verified intact: {verification['checked']} records, head record "
        f"{verification['head_seq']} ({verification['head_hash'] or 'empty store'})."
        if verification["chain_ok"]
        else f"FAILED: the hash chain does not verify at record {verification['first_bad_seq']}: "
        f"{verification['problem']}."
    )
    pruned = "; ".join(
        f"records {p['first_seq']} to {p['last_seq']} (older than {p['older_than']}), "
        f"pruned {p['pruned_at']}"
        for p in verification["pruned"]
    )
    values = {
        "recorded": names([c.name for c in connections if "recording" in c.plugins]),
        "unrecorded": names([c.name for c in connections if "recording" not in c.plugins]),
        "guarded": names([c.name for c in connections if "guardrails" in c.plugins]),
        "masked": names([c.name for c in connections if "masking" in c.plugins]),
        "jit": names([c.name for c in connections if c.access == "jit"]),
        "allow_groups": "; ".join(
            f"{p['connection']}: {', '.join(p['allow_groups']) or 'nobody'}"
            for p in doc["policies"]
        ),
        "records_by_kind": counts(records["by_kind"]),
        "records": str(records["in_range"]),
        "first_seq": str(records["first_seq"] or "-"),
        "last_seq": str(records["last_seq"] or "-"),
        "sessions": str(sessions["count"]),
        "sessions_by_connection": counts(sessions["by_connection"]),
        "identities": names(sessions["identities"]),
        "commands": str(commands["count"]),
        "allowed": str(verdicts["allow"]),
        "blocked": str(verdicts["block"]),
        "held": str(verdicts["hold"]),
        "undecided": str(verdicts["undecided"]),
        "blocked_by_rule": counts(commands["blocked_by_rule"]),
        "outcomes": counts(commands["by_status"]),
        "api_keys": str(doc["accounts"]["count"]),
        "chain": chain,
        "checkpoint": describe_checkpoint(verification),
        "retention": f"Records pruned under retention: {pruned or 'none'}.",
        "durability": durability_text(verification["durability"], records),
        "grants": grants_text(doc),
        "reviews": reviews_text(doc),
    }
    lists = {
        "transport": transport_lines(doc, config),
        "policy_files": [p["file"] for p in doc["policies"]],
    }
    return values, lists


def transport_lines(doc: dict[str, Any], config: Config) -> list[str]:
    """SC-8 per protocol: what the sessions really used, and what each connection offers."""
    lines = []
    for protocol, counts in doc["sessions"]["by_protocol"].items():
        if protocol in ENCRYPTED_PROTOCOLS:
            lines.append(
                f"{protocol}: {counts['sessions']} session(s), every one encrypted by the"
                " protocol itself (client to gateway and gateway to target)."
            )
        else:
            lines.append(
                f"{protocol}: {counts['sessions']} session(s); used TLS from the client:"
                f" {counts['client_tls']}; to the target: {counts['upstream_tls']}."
            )
    if not lines:
        lines.append("No sessions in range.")
    offered = []
    for connection in config.connections:
        upstream = f"sslmode {connection.upstream_tls.sslmode}"
        if connection.protocol in ENCRYPTED_PROTOCOLS:
            client = upstream = "encrypted (SSH)"
        elif connection.client_tls == "disabled":
            client = "no TLS (client_tls disabled)"
        elif config.gateway.tls_cert is None:
            client = "no TLS offered (no [gateway] tls_cert)"
        elif connection.client_tls == "required":
            client = "TLS required"
        else:
            client = "TLS offered, not required"
        offered.append(f"{connection.name}: from clients {client}; to the target {upstream}")
    lines.append("Configured: " + ("; ".join(offered) or "none") + ".")
    return lines
