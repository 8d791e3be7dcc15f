"""The auditor's evidence pack: what the audit trail shows about a time range, and proof of it.

:func:`build_pack` reads the whole audit chain once (to verify it, so the records in the range
are proven unaltered together with everything before them), summarises the records whose time
falls in ``[since, until)``, and writes a folder that needs no server to read:

``index.html``, ``index.md``
    each NIST SP 800-53 control the gateway supports, mapped to the counts and files that
    demonstrate it, with the chain verification result at the top;
``summary.json``
    every count of the index, for machines (keys documented in ``docs/evidence.md``);
``sessions.csv``, ``sessions.json``
    the sessions that started in the range;
``commands.jsonl``
    every command received in the range, with its verdict and outcome (no result samples);
``accounts.csv``
    the API keys as they stand when the pack is made (never their secrets or hashes);
``approvals.csv``
    every review and access-grant event in the range (requested, voted, decided, re-run,
    granted, expired, revoked), from the verified audit chain;
``policies/<connection>.json``
    each connection's access and plugin settings from the config (never its credential);
``verification.json``
    the chain verification result, the chain head and the latest checkpoint;
``manifest.sha256``
    the SHA-256 of every other file, in the format ``sha256sum -c`` checks.

Recorded text (statements, client-sent attributes) is attacker-controlled: the HTML escapes all
of it, the Markdown escapes its markup, and CSV cells that a spreadsheet would run as a formula
are prefixed with ``'``. The JSON files keep the exact values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from hoopgw.audit.chain import AuditRecord, VerifyResult
from hoopgw.audit.checkpoints import (
    Checkpoint,
    LogVerification,
    verify_log,
)
from hoopgw.audit.export import chains
from hoopgw.cli.common import iso_time
from hoopgw.config.load import Config
from hoopgw.connection import ConnectionConfig
from hoopgw.evidence.model import (
    ACCOUNT_FIELDS,
    APPROVAL_FIELDS,
    MANIFEST,
    SESSION_FIELDS,
    LatestCheckpoint,
    TimeRange,
    file_sha256,
)
from hoopgw.evidence.render import render_html, render_markdown
from hoopgw.evidence.summary import (
    Summary,
    combined_verification,
    find_journal_problem,
    summary_document,
    undrained_problem,
    verification_document,
)
from hoopgw.secrets import Secret
from hoopgw.store.base import Store


@attrs.frozen(kw_only=True)
class PackResult:
    """What :func:`build_pack` wrote."""

    folder: Path
    """The pack's folder."""
    verification: VerifyResult
    """The verification result of :attr:`instance`'s chain: the first chain that does not
    verify, else the config's own; the pack is marked FAILED when it is not ok."""
    instance: str
    """The gateway instance whose chain :attr:`verification` and the problems below are of."""
    instances: tuple[str, ...]
    """Every instance whose chain the pack verified and summarises (``("",)`` for SQLite)."""
    checkpoint_problem: str
    """Why the log does not match the latest checkpoint (truncated, rewritten, bad signature);
    empty when it matches or there is none."""
    journal_problem: str
    """Why the log is not complete yet (records a stopped gateway left in its audit journal);
    empty when it is."""
    sessions: int
    """Sessions that started in the range."""
    commands: int
    """Commands received in the range."""
    files: tuple[str, ...]
    """Every file of the pack, relative to :attr:`folder`, the manifest last."""

    @property
    def verified(self) -> bool:
        """Whether the chain verified intact, complete, and matches the latest checkpoint."""
        return self.verification.ok and not self.checkpoint_problem and not self.journal_problem


def build_pack(
    store: Store,
    config: Config,
    *,
    config_file: Path,
    time_range: TimeRange,
    folder: Path,
    now: float,
    latest: LatestCheckpoint | None = None,
    progress: Callable[[int], None] = lambda count: None,
    checkpoints: Callable[[str], LatestCheckpoint | None] | None = None,
) -> PackResult:
    """Verify the audit chains, summarise ``time_range`` and write the pack into ``folder``.

    A store that several gateway instances share holds a chain per instance: every one is
    verified and summarised (:func:`hoopgw.audit.export.chains`), and ``verification.json``
    lists each in ``chains``. The pack is written whether or not they verify; when one does
    not, the index says FAILED at the top and ``verification.json`` has ``"ok": false``.

    :param config: the gateway's config, for the policies in force.
    :param config_file: the file ``config`` was read from; its SHA-256 goes into the pack.
    :param folder: created if absent; must be empty.
    :param now: POSIX time the pack is made.
    :param latest: the latest checkpoint (:func:`latest_checkpoint`), or None when the gateway
        writes none.
    :param progress: called with the number of audit records read so far, after each one
        (a :class:`~hoopgw.audit.progress.Progress`, say).
    :param checkpoints: the latest checkpoint of another instance's chain, by instance id
        (:func:`latest_checkpoint` with ``instance``); None checks no checkpoint of theirs.
    :raises FileExistsError: if ``folder`` exists and is not empty.
    :raises StoreError: if the store cannot be read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; an evidence pack needs a folder of its own")
    documents = []
    results: dict[str, tuple[VerifyResult, str, str]] = {}
    with (folder / "commands.jsonl").open("w", encoding="utf-8", newline="\n") as commands_file:
        summary = Summary(time_range, commands_file)
        for chain in chains(store):
            own = chain.instance == store.instance
            found = latest if own else None if checkpoints is None else checkpoints(chain.instance)
            before = summary.read
            summary.head_seq, summary.head_hash = 0, ""
            log = _read_chain(
                chain.records(),
                None if found is None else found.checkpoint,
                summary,
                progress,
                chain.instance,
            )
            checkpoint_problem = log.checkpoint_problem or ("" if found is None else found.problem)
            journal_problem = (
                find_journal_problem(store, config)
                if own
                else undrained_problem(store, chain.instance)
            )
            results[chain.instance] = (log.chain, checkpoint_problem, journal_problem)
            documents.append(
                verification_document(
                    log.chain,
                    checkpoint_problem,
                    journal_problem,
                    summary,
                    found,
                    instance=chain.instance,
                    read=summary.read - before,
                )
            )
        summary.flush_commands()
    verification_doc = combined_verification(documents, store.instance)
    verification, checkpoint_problem, journal_problem = results[verification_doc["instance"]]
    accounts = [_account_row(key) for key in store.list_keys()]

    policies = _write_policies(folder, config)
    _write_sessions(folder, summary.sessions_in_order())
    _write_csv(folder / "accounts.csv", ACCOUNT_FIELDS, accounts)
    _write_csv(
        folder / "approvals.csv",
        APPROVAL_FIELDS,
        (
            {**row, "time": iso_time(row["time"]), "expires_at": iso_time(row["expires_at"])}
            for row in summary.approvals
        ),
    )
    active_grants = len(store.list_grants(active_at=now, limit=1_000_000))
    _write_json(folder / "verification.json", verification_doc)
    document = summary_document(
        summary=summary,
        config=config,
        config_file=config_file,
        time_range=time_range,
        now=now,
        verification=verification_doc,
        policies=policies,
        accounts=len(accounts),
        active_grants=active_grants,
    )
    _write_json(folder / "summary.json", document)
    (folder / "index.md").write_text(render_markdown(document), encoding="utf-8")
    (folder / "index.html").write_text(render_html(document), encoding="utf-8")
    files = write_manifest(folder)
    return PackResult(
        folder=folder,
        verification=verification,
        instance=verification_doc["instance"],
        instances=tuple(d["instance"] for d in documents),
        checkpoint_problem=checkpoint_problem,
        journal_problem=journal_problem,
        sessions=len(summary.sessions),
        commands=summary.command_count,
        files=(*files, MANIFEST),
    )


def write_manifest(folder: Path) -> list[str]:
    """Write ``manifest.sha256`` with the SHA-256 of every other file under ``folder``.

    :return: the files listed, relative to ``folder``, sorted.
    """
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    )
    lines = [f"{file_sha256(folder / name)}  {name}\n" for name in files]
    (folder / MANIFEST).write_text("".join(lines), encoding="utf-8", newline="\n")
    return files


# -- reading the chain ---------------------------------------------------------------------------


def _read_chain(
    records: Iterator[AuditRecord],
    checkpoint: Checkpoint | None,
    summary: Summary,
    progress: Callable[[int], None],
    instance: str,
) -> LogVerification:
    """Verify the chain of gateway instance ``instance`` (the config's own; the pack holds
    that instance's records) while summarising it."""
    records = iter(records)

    def observed() -> Iterator[AuditRecord]:
        for record in records:
            summary.add(record)
            progress(summary.read)
            yield record

    result = verify_log(observed(), checkpoint, instance=instance)
    # Verification stops at the first break; the pack still describes every record after it.
    for record in records:
        summary.add(record)
        progress(summary.read)
    return result


def _account_row(key: Any) -> dict[str, Any]:
    # Named fields only: a key record also carries what checks the secret, never shown.
    return {
        "key_id": key.key_id,
        "identity": key.identity,
        "groups": list(key.groups),
        "created_at": iso_time(key.created_at),
        "expires_at": iso_time(key.expires_at),
        "revoked_at": iso_time(key.revoked_at),
        "last_used_at": iso_time(key.last_used_at),
    }


# -- writing the files ---------------------------------------------------------------------------


def policy_excerpt(connection: ConnectionConfig) -> dict[str, Any]:
    """The settings of ``connection`` that decide who may do what through it, without its
    credential: access groups, TLS on both sides, and each enabled plugin with its options."""
    return {
        "connection": connection.name,
        "protocol": connection.protocol,
        "listen": connection.listen,
        "target": connection.target,
        "allow_groups": list(connection.allow_groups),
        "client_tls": connection.client_tls,
        "client_auth": connection.client_auth,
        "allow_cleartext_password": connection.allow_cleartext_password,
        "upstream_tls": {
            "sslmode": connection.upstream_tls.sslmode,
            "ca_file": connection.upstream_tls.ca_file,
            "server_name": connection.upstream_tls.server_name,
        },
        "plugins": list(connection.plugins),
        "options": {
            name: dict(connection.plugin_options.get(name, {})) for name in connection.plugins
        },
    }


def _write_policies(folder: Path, config: Config) -> list[dict[str, Any]]:
    (folder / "policies").mkdir()
    written = []
    for connection in config.connections:
        name = f"policies/{connection.name}.json"
        _write_json(folder / name, policy_excerpt(connection))
        written.append(
            {
                "connection": connection.name,
                "plugins": list(connection.plugins),
                "allow_groups": list(connection.allow_groups),
                "client_tls": connection.client_tls,
                "sslmode": connection.upstream_tls.sslmode,
                "file": name,
                "sha256": file_sha256(folder / name),
            }
        )
    return written


def _write_sessions(folder: Path, sessions: list[dict[str, Any]]) -> None:
    shown = [
        {**s, "started_at": iso_time(s["started_at"]), "ended_at": iso_time(s["ended_at"])}
        for s in sessions
    ]
    _write_json(folder / "sessions.json", shown)
    _write_csv(folder / "sessions.csv", SESSION_FIELDS, shown)


def _write_csv(path: Path, fields: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_csv_cell(row[field]) for field in fields])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(map(str, value))
    text = str(value)
    # A spreadsheet runs a cell that starts like this as a formula (CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _json_value(value: Any) -> Any:
    if isinstance(value, Secret):
        return {"secret_reference": value.reference}
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _write_json(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=_json_value)
    path.write_text(text + "\n", encoding="utf-8", newline="\n")
