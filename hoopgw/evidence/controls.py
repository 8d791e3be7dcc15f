"""The NIST SP 800-53 controls an evidence pack maps to what demonstrates them."""

from __future__ import annotations

from typing import Any

from hoopgw.config.load import Config
from hoopgw.evidence.model import (
    ENCRYPTED_PROTOCOLS,
    describe_checkpoint,
    durability_text,
    grants_text,
    reviews_text,
)


def controls(doc: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Each control, the statements that demonstrate it, and the files holding the evidence."""
    sessions, commands, records = doc["sessions"], doc["commands"], doc["records"]
    verification = doc["verification"]
    verdicts = commands["by_verdict"]
    recorded = [c.name for c in config.connections if "recording" in c.plugins]
    unrecorded = [c.name for c in config.connections if "recording" not in c.plugins]
    guarded = [c.name for c in config.connections if "guardrails" in c.plugins]
    masked = [c.name for c in config.connections if "masking" in c.plugins]
    kinds = ", ".join(f"{k}: {n}" for k, n in records["by_kind"].items()) or "none"
    policy_files = [p["file"] for p in doc["policies"]]

    def names(items: list[str]) -> str:
        return ", ".join(items) if items else "none"

    chain = (
        f"Hash chain verified intact: {verification['checked']} records, head record "
        f"{verification['head_seq']} ({verification['head_hash'] or 'empty store'})."
        if verification["chain_ok"]
        else f"FAILED: the hash chain does not verify at record {verification['first_bad_seq']}: "
        f"{verification['problem']}."
    )
    checkpoint_text = f"Latest signed checkpoint: {describe_checkpoint(verification)}."
    retention = (
        "Records pruned under retention: "
        + (
            "; ".join(
                f"records {p['first_seq']} to {p['last_seq']} (older than {p['older_than']}), "
                f"pruned {p['pruned_at']}"
                for p in verification["pruned"]
            )
            or "none"
        )
        + "."
    )
    control_rows = [
        (
            "AU-2",
            "Event logging",
            [
                f"Connections recording every session and command: {names(recorded)}.",
                f"Connections without recording: {names(unrecorded)}.",
                f"Audit records in range by kind: {kinds}.",
            ],
            ["summary.json", *policy_files],
        ),
        (
            "AU-3",
            "Content of audit records",
            [
                f"Sessions: {sessions['count']}, each with who (identity, groups, method, key id), "
                "from where (client address), to what (connection, target) and when.",
                f"Commands: {commands['count']}, each with text, time, verdict, reason, rule, "
                "status, rows and error.",
            ],
            ["sessions.csv", "sessions.json", "commands.jsonl"],
        ),
        (
            "AU-9",
            "Protection of audit information",
            [chain, checkpoint_text, retention],
            ["verification.json"],
        ),
        (
            "AU-12",
            "Audit record generation",
            [
                f"{records['in_range']} records written in range (records "
                f"{records['first_seq'] or '-'} to {records['last_seq'] or '-'}), each "
                "session and command recorded before it was allowed to proceed.",
                durability_text(verification["durability"], records),
            ],
            ["summary.json", "verification.json"],
        ),
        (
            "AC-2",
            "Account management",
            [
                f"API keys: {doc['accounts']['count']} (identity, groups, created, expires, "
                "revoked, last used).",
                f"Identities with sessions in range: {names(sessions['identities'])}.",
                grants_text(doc),
            ],
            ["accounts.csv", "sessions.csv", "approvals.csv"],
        ),
        (
            "AC-3",
            "Access enforcement",
            [
                f"Commands by verdict: allow {verdicts['allow']}, block {verdicts['block']}, "
                f"hold {verdicts['hold']}, undecided {verdicts['undecided']}.",
                reviews_text(doc),
            ],
            ["commands.jsonl", "approvals.csv", *policy_files],
        ),
        (
            "AC-6",
            "Least privilege",
            [
                "Each connection admits only its allow_groups: "
                + "; ".join(
                    f"{p['connection']}: {', '.join(p['allow_groups']) or 'nobody'}"
                    for p in doc["policies"]
                )
                + ".",
                f"Connections with guardrails: {names(guarded)}.",
                "Just-in-time connections: "
                + names([c.name for c in config.connections if c.access == "jit"])
                + f". {grants_text(doc)}",
            ],
            [*policy_files, "approvals.csv"],
        ),
        (
            "SC-7",
            "Boundary protection",
            [
                "Sessions in range by connection: "
                + (", ".join(f"{k}: {n}" for k, n in sessions["by_connection"].items()) or "none")
                + "; the caller never receives the target credential.",
            ],
            ["sessions.csv", *policy_files],
        ),
        (
            "SC-8",
            "Transmission confidentiality and integrity",
            transport_lines(doc, config),
            ["sessions.csv", *policy_files],
        ),
        (
            "SI-4",
            "System monitoring",
            [
                f"Commands blocked: {verdicts['block']} (by rule: "
                + (", ".join(f"{k}: {n}" for k, n in commands["blocked_by_rule"].items()) or "none")
                + ").",
                f"Connections with guardrails: {names(guarded)}; with masking: {names(masked)}.",
            ],
            ["commands.jsonl", *policy_files],
        ),
        (
            "IR-4",
            "Incident handling",
            [
                f"Sessions ({sessions['count']}) and their commands ({commands['count']}) can be "
                "reconstructed in order (hoopgw replay SESSION).",
                "Command outcomes: "
                + (", ".join(f"{k}: {n}" for k, n in commands["by_status"].items()) or "none")
                + ".",
            ],
            ["commands.jsonl", "sessions.json"],
        ),
    ]
    return [
        {"id": control, "title": title, "evidence": evidence, "files": files}
        for control, title, evidence, files in control_rows
    ]


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
