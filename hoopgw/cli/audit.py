"""``hoopgw audit verify``, ``hoopgw audit prune`` and ``hoopgw audit keygen``: the integrity
of the audit trail. ``docs/audit.md`` describes them and their JSON output."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from hoopgw.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    error,
    iso_time,
    opened_store,
    out,
    out_json,
    parse_duration,
    progress_reporter,
)
from hoopgw.errors import ConfigError

# The handlers import the audit, journal and checkpoint modules (and through them Twisted and
# cryptography) when they run: building the command line must stay quick.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from hoopgw.audit.chain import AuditRecord, DurabilityPeriod, PrunedRange
    from hoopgw.audit.checkpoints import LogVerification
    from hoopgw.audit.journal import JournalBacklog
    from hoopgw.config.load import Config
    from hoopgw.store import Store
    from hoopgw.store.base import WriterState


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add this module's commands: top-level ones to ``commands``, ``hoopgw audit ...`` ones to
    ``audit_commands``; ``with_config`` and ``with_json`` are parents giving ``-c`` and
    ``--json``."""
    verify = audit_commands.add_parser(
        "verify",
        parents=[with_config, with_json],
        help="check the hash chain of the whole store, and compare it with a signed checkpoint",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="checkpoint file to compare with (default: the latest in the checkpoint folder)",
    )
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="verifier key (as hoopgw audit keygen prints it), or a file holding it"
        " (default: derived from [gateway] signing_key)",
    )
    verify.set_defaults(handler=_verify)

    prune = audit_commands.add_parser(
        "prune",
        parents=[with_config, with_json],
        help="remove records older than a duration, leaving a 'pruned' record in the chain",
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="remove records written longer ago than this, e.g. 90d",
    )
    prune.set_defaults(handler=_prune)

    keygen = audit_commands.add_parser(
        "keygen", help="write a new checkpoint signing key and print its public verifier key"
    )
    keygen.add_argument(
        "--out", required=True, metavar="FILE", help="where to write the private key (mode 600)"
    )
    keygen.set_defaults(handler=_keygen)


# -- verify ----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from hoopgw.audit.journal import backlog
    from hoopgw.config.load import load_config

    config = load_config(args.config)
    own = config.gateway.instance
    with opened_store(config) as store:
        # A SQLite store holds the one chain ""; a PostgreSQL store one per gateway instance.
        instances = (store.instances() or [own]) if own else [""]
        chains = [_verify_chain(args, config, store.chain(name), name) for name in instances]
        waiting = backlog(config.journal_path, store.journal_mark())
        writers = store.writers() if own else []
    # Records answered for but left in the journal by a crash: the log is not complete yet.
    stranded = waiting is not None and waiting.stranded
    undrained = [w for w in writers if w.undrained and w.instance != own]
    ok = all(chain.ok for chain in chains) and not stranded and not undrained
    if args.json:
        if own:
            report: dict[str, Any] = {
                "ok": ok,
                "chains": [{"instance": c.instance, **c.report()} for c in chains],
                "writers": [_writer_json(w) for w in writers],
            }
        else:
            report = chains[0].report()
            report["ok"] = report["ok"] and not stranded
        report["journal"] = _journal_json(waiting)
        out_json(report)
    else:
        for chain in chains:
            if own:
                out(f"chain of instance {chain.instance}:")
            chain.print()
        _print_journal(waiting)
        for writer in undrained:
            out(
                f"INCOMPLETE: the audit writer of instance {writer.instance} stopped without"
                f" draining its journal {writer.journal} (started {iso_time(writer.started_at)}):"
                " records may be missing from the store until that instance starts again"
            )
    return EXIT_OK if ok else EXIT_FAILED


@attrs.define
class _ChainCheck:
    """One chain's verification against its latest checkpoint (or ``--checkpoint``)."""

    instance: str
    result: LogVerification
    path: Path | None
    checkpoint_error: str

    @property
    def ok(self) -> bool:
        return self.result.ok and not self.checkpoint_error

    def report(self) -> dict[str, Any]:
        return _verify_report(self.result, self.path, self.checkpoint_error)

    def print(self) -> None:
        _print_verification(self.result, self.path, self.checkpoint_error)


def _verify_chain(
    args: argparse.Namespace, config: Config, store: Store, instance: str
) -> _ChainCheck:
    from hoopgw.audit.checkpoints import (
        Checkpoint,
        CheckpointError,
        latest_checkpoint_file,
        read_checkpoint_file,
        verify_log,
    )

    # An explicit --checkpoint is about this gateway's own chain.
    explicit = args.checkpoint is not None and instance == config.gateway.instance
    path = (
        Path(args.checkpoint)
        if explicit
        else latest_checkpoint_file(config.chain_checkpoint_path(instance))
    )
    checkpoint: Checkpoint | None = None
    checkpoint_error = ""
    if path is not None:
        try:
            checkpoint = read_checkpoint_file(path, _public_key(args.public_key, config))
        except CheckpointError as exc:
            checkpoint_error = str(exc)
    progress = progress_reporter("verified")
    result = verify_log(progress.track(store.records()), checkpoint, instance=instance)
    progress.finish()
    return _ChainCheck(instance, result, path, checkpoint_error)


def _writer_json(writer: WriterState) -> dict[str, Any]:
    return {
        "instance": writer.instance,
        "journal": writer.journal,
        "started_at": iso_time(writer.started_at),
        "stopped_at": iso_time(writer.stopped_at),
        "running": writer.running,
        "undrained": writer.undrained,
    }


def _journal_json(waiting: JournalBacklog | None) -> dict[str, Any] | None:
    if waiting is None:
        return None
    return {"file": waiting.path, "waiting": waiting.entries, "gateway_running": waiting.in_use}


def _print_journal(waiting: JournalBacklog | None) -> None:
    if waiting is None or not waiting.entries:
        return
    if waiting.in_use:
        out(f"journal: {waiting.entries} record(s) on their way to the store (the gateway runs)")
    else:
        out(
            f"INCOMPLETE: the audit journal {waiting.path} holds {waiting.entries} record(s)"
            " the store does not have yet (the gateway stopped before appending them): start"
            " the gateway, which appends them, then verify again"
        )


def _public_key(option: str | None, config: Config) -> Ed25519PublicKey:
    """The key checkpoints are verified with: ``--public-key``, or the configured key's."""
    from hoopgw.audit.checkpoints import (
        KEY_NAME,
        CheckpointError,
        load_signing_key,
        parse_verifier_key,
    )

    if option is not None:
        text = option
        if not option.startswith(f"{KEY_NAME}+"):
            try:
                text = Path(option).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"cannot read public key file {option!r}: {exc}") from None
        return parse_verifier_key(text)
    if config.gateway.signing_key is None:
        raise ConfigError(
            "a checkpoint needs a public key to verify it: pass --public-key or set it",
            key="gateway.signing_key",
        )
    return load_signing_key(config.gateway.signing_key.reveal()).public_key()


def _pruned_json(pruning: PrunedRange) -> dict[str, Any]:
    return {
        "first_seq": pruning.first_seq,
        "last_seq": pruning.last_seq,
        "last_hash": pruning.last_hash,
        "older_than": iso_time(pruning.older_than),
        "sessions_removed": pruning.sessions_removed,
        "pruned_at": iso_time(pruning.pruned_at),
        "record_seq": pruning.record_seq,
    }


def _durability_json(period: DurabilityPeriod) -> dict[str, Any]:
    durability = period.durability
    return {
        **({"mode": None, "sync_interval": None} if durability is None else durability.as_dict()),
        "first_seq": period.first_seq,
        "last_seq": period.last_seq,
        "since": iso_time(period.since),
        "until": iso_time(period.until),
    }


def _verify_report(
    result: LogVerification, path: Path | None, checkpoint_error: str
) -> dict[str, Any]:
    chain = result.chain
    checkpoint = None
    if path is not None:
        signed = result.checkpoint
        problem = checkpoint_error or result.checkpoint_problem
        checkpoint = {
            "file": str(path),
            "ok": not problem and chain.ok,
            "seq": None if signed is None else signed.seq,
            "hash": None if signed is None else signed.hash,
            "signed_at": None if signed is None else iso_time(signed.time),
            "problem": problem,
        }
    return {
        "ok": result.ok and not checkpoint_error,
        "records_checked": chain.checked,
        "first_seq": chain.first_seq,
        "last_seq": chain.last_seq,
        "last_hash": chain.last_hash,
        "first_bad_seq": chain.first_bad_seq,
        "problem": chain.problem,
        "pruned": [_pruned_json(p) for p in chain.pruned],
        "durability": [_durability_json(p) for p in chain.durability],
        "checkpoint": checkpoint,
    }


def _print_verification(result: LogVerification, path: Path | None, checkpoint_error: str) -> None:
    from hoopgw.audit.chain import describe_durability

    chain = result.chain
    if not chain.ok:
        out(f"FAILED: {chain.problem} (first bad record: {chain.first_bad_seq})")
        out(f"{chain.checked} records read; the chain is intact up to record {chain.last_seq}")
    elif chain.last_seq is None:
        out("ok: the audit log is empty")
    else:
        out(
            f"ok: {chain.checked} records intact (seq {chain.first_seq} to {chain.last_seq}),"
            f" head {chain.last_hash}"
        )
    for pruning in chain.pruned:
        out(
            f"pruned: records {pruning.first_seq} to {pruning.last_seq} (older than"
            f" {iso_time(pruning.older_than)}, {pruning.sessions_removed} session(s)) removed at"
            f" {iso_time(pruning.pruned_at)}, recorded as record {pruning.record_seq}"
        )
    for period in chain.durability:
        out(
            f"durability: records {period.first_seq} to {period.last_seq} ({iso_time(period.since)}"
            f" to {iso_time(period.until)}): {describe_durability(period.durability)}"
        )
    if path is None:
        out("checkpoint: none found; truncation of the newest records cannot be detected")
        return
    problem = checkpoint_error or result.checkpoint_problem
    signed = result.checkpoint
    if problem:
        out(f"FAILED: checkpoint {path}: {problem}")
    elif signed is not None and chain.ok:
        out(
            f"checkpoint: {path} (record {signed.seq}, signed {iso_time(signed.time)}):"
            " signature valid, the log holds that record unchanged"
        )
    else:
        out(f"checkpoint: {path}: not compared, the chain is broken")


# -- prune -----------------------------------------------------------------------------------


def _prune(args: argparse.Namespace) -> int:
    from hoopgw.audit.chain import PrunedRange
    from hoopgw.audit.checkpoints import load_signing_key
    from hoopgw.config.load import load_config

    config = load_config(args.config)
    now = time.time()
    older_than = now - args.older_than
    key = None
    if config.gateway.signing_key is not None:
        key = load_signing_key(config.gateway.signing_key.reveal())
    own = config.gateway.instance
    with opened_store(config) as store:
        # Every gateway instance's chain (one for a SQLite store), each verified first.
        instances = (store.instances() or [own]) if own else [""]
        chains = [store.chain(name) for name in instances]
        for name, chain in zip(instances, chains, strict=True):
            problem = _chain_problem(chain, name)
            if problem:
                error(f"refusing to prune a broken chain{_of(name)}: {problem}")
                return EXIT_FAILED
        results = []
        for name, chain in zip(instances, chains, strict=True):
            record, checkpoint_file = _prune_chain(config, chain, name, key, older_than, now)
            pruning = None if record is None else PrunedRange.from_record(record)
            results.append((name, pruning, checkpoint_file))
    if args.json:
        reports = [
            {
                "pruned": None if pruning is None else _pruned_json(pruning),
                "older_than": iso_time(older_than),
                "checkpoint": None if checkpoint_file is None else str(checkpoint_file),
            }
            for _, pruning, checkpoint_file in results
        ]
        if own:
            names = [name for name, _, _ in results]
            out_json(
                {
                    "chains": [
                        {"instance": name, **report}
                        for name, report in zip(names, reports, strict=True)
                    ]
                }
            )
        else:
            out_json(reports[0])
        return EXIT_OK
    for name, pruning, checkpoint_file in results:
        if pruning is None:
            out(f"nothing to prune{_of(name)}: no record is older than {iso_time(older_than)}")
            continue
        count = pruning.last_seq - pruning.first_seq + 1
        out(
            f"pruned records {pruning.first_seq} to {pruning.last_seq}{_of(name)} ({count}"
            f" records, {pruning.sessions_removed} session(s)) older than"
            f" {iso_time(older_than)}; recorded as record {pruning.record_seq}"
        )
        if checkpoint_file is not None:
            out(f"checkpoint: {checkpoint_file}")
    return EXIT_OK


def _of(instance: str) -> str:
    return f" of instance {instance}" if instance else ""


def _chain_problem(store: Store, instance: str) -> str:
    """Why the chain does not verify, or "" (pruning must not erase the evidence that the log
    was tampered with)."""
    from hoopgw.audit.chain import verify_chain

    progress = progress_reporter("verified")
    chain = verify_chain(progress.track(store.records()), instance=instance)
    progress.finish()
    if chain.ok:
        return ""
    return f"{chain.problem} (record {chain.first_bad_seq}); see hoopgw audit verify"


def _prune_chain(
    config: Config,
    store: Store,
    instance: str,
    key: Ed25519PrivateKey | None,
    older_than: float,
    now: float,
) -> tuple[AuditRecord | None, Path | None]:
    """Prune one chain; sign a checkpoint of its new head when something went."""
    from hoopgw.audit.checkpoints import (
        KEY_NAME,
        Checkpoint,
        sign_checkpoint,
        write_checkpoint_file,
    )

    record = store.prune(older_than=older_than, now=now)
    head = store.last_record()
    if record is None or key is None or head is None:
        return record, None
    signed = Checkpoint(origin=KEY_NAME, seq=head.seq, hash=head.hash, time=int(now))
    path = write_checkpoint_file(
        config.chain_checkpoint_path(instance), head.seq, sign_checkpoint(signed, key)
    )
    return record, path


# -- keygen ----------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    from hoopgw.audit.checkpoints import generate_signing_key, private_key_pem, verifier_key

    key = generate_signing_key()
    try:
        # O_EXCL: never overwrite a key that may have signed checkpoints already.
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        error(f"cannot create {args.out!r}: {exc.strerror}")
        return EXIT_FAILED
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    out(verifier_key(key.public_key()))
    error(
        f"wrote a new checkpoint signing key to {args.out} (mode 600). Set [gateway] signing_key"
        f' = "file:{os.path.abspath(args.out)}"; keep the public key above off this host to'
        " verify checkpoints with hoopgw audit verify --public-key."
    )
    return EXIT_OK
