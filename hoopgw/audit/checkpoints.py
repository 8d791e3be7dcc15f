"""Signed checkpoints of the audit chain: proof that the log was not truncated or rewritten.

The hash chain (:func:`hoopgw.audit.chain.verify_chain`) shows that no record was changed, removed,
inserted or reordered, but not that records were cut off the end, nor that someone who could
rewrite the whole store recomputed the whole chain. A *checkpoint* closes that gap: the gateway
signs the chain head (its ``seq`` and ``hash``) with an Ed25519 key, and the operator keeps the
checkpoint files away from the host. A later log that does not hold that record with that hash
was truncated or rewritten.

A checkpoint is a signed note in the format of C2SP ``signed-note`` (as used by transparency
log checkpoints, ``tlog-checkpoint``), so tools that read signed notes (Go's
``golang.org/x/mod/sumdb/note``) can verify it too::

    hoopgw-audit
    1234
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    2026-11-25T17:00:00Z

    — hoopgw-audit Wv2jt0x5kq2yMpL3...(base64 of the key id and the signature)...

The body is the origin line, the tree size (the head's ``seq``), the head's hex ``hash`` and the
UTC time of signing, each ending in a newline; after a blank line comes one signature line: an
em dash, the key name, and base64 of the 4-byte key id followed by the 64-byte Ed25519 signature
of the body. The key id is the first 4 bytes of SHA-256(key name, ``\\n``, ``0x01``, public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hoopgw.audit.chain import AuditRecord, VerifyResult, verify_chain
from hoopgw.errors import HoopgwError

KEY_NAME = "hoopgw-audit"
"""The origin line of every checkpoint, and the key name on its signature line."""

_ED25519 = b"\x01"  # signed-note signature type of Ed25519
_SIGNATURE_DASH = "\u2014 "
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_FILE_NAME = re.compile(r"checkpoint-([0-9]{20})\.txt")


class CheckpointError(HoopgwError):
    """A checkpoint or a signing key is malformed, unreadable, or its signature is not valid."""


@attrs.frozen(kw_only=True)
class Checkpoint:
    """The signed statement: the chain had ``seq`` records, the last with ``hash``, at ``time``."""

    origin: str
    """The log the checkpoint belongs to (:data:`KEY_NAME`)."""
    seq: int
    """The head's seq: how many records the chain had ever held (pruned ones included)."""
    hash: str
    """The head's hex SHA-256 hash."""
    time: float
    """POSIX time of signing, whole seconds."""


# -- keys ------------------------------------------------------------------------------------


def generate_signing_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """``key`` as an unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(pem: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in an unencrypted PKCS#8 PEM (as ``hoopgw audit keygen`` writes).

    :raises CheckpointError: if ``pem`` is no such key; the message never holds the key.
    """
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise CheckpointError(
            "not an unencrypted PEM private key (make one with hoopgw audit keygen)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError("the signing key must be an Ed25519 key")
    return key


def key_id(public_key: Ed25519PublicKey, name: str = KEY_NAME) -> bytes:
    """The 4-byte signed-note key id of ``public_key`` under ``name``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + raw).digest()[:4]


def verifier_key(public_key: Ed25519PublicKey) -> str:
    """The public key as a signed-note verifier key: ``NAME+KEYID+BASE64``, safe to publish."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    encoded = base64.b64encode(_ED25519 + raw).decode()
    return f"{KEY_NAME}+{key_id(public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> Ed25519PublicKey:
    """The public key of a verifier key that :func:`verifier_key` wrote.

    :raises CheckpointError: if ``text`` is not one, or its key id does not match its key.
    """
    name, _, rest = text.strip().partition("+")
    id_hex, _, encoded = rest.partition("+")
    try:
        decoded = base64.b64decode(encoded, validate=True)
        expected_id = bytes.fromhex(id_hex)
    except (binascii.Error, ValueError):
        raise CheckpointError("not a verifier key (NAME+KEYID+BASE64)") from None
    if name != KEY_NAME or len(decoded) != 33 or decoded[:1] != _ED25519:
        raise CheckpointError(f"not a {KEY_NAME} Ed25519 verifier key")
    public_key = Ed25519PublicKey.from_public_bytes(decoded[1:])
    if key_id(public_key) != expected_id:
        raise CheckpointError("the verifier key's id does not match its key")
    return public_key


# -- the note --------------------------------------------------------------------------------


def _body(checkpoint: Checkpoint) -> str:
    when = datetime.fromtimestamp(checkpoint.time, UTC).strftime(_TIME_FORMAT)
    return f"{checkpoint.origin}\n{checkpoint.seq}\n{checkpoint.hash}\n{when}\n"


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The signed note for ``checkpoint`` (its time is cut to whole seconds)."""
    body = _body(checkpoint)
    signature = key.sign(body.encode())
    encoded = base64.b64encode(key_id(key.public_key()) + signature).decode()
    return f"{body}\n{_SIGNATURE_DASH}{KEY_NAME} {encoded}\n"


def verify_checkpoint(text: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in the signed note ``text``, once a signature by ``public_key`` verifies.

    :raises CheckpointError: if the note is malformed, holds no signature by that key (by key
        id), or the signature does not verify (the note was changed or forged).
    """
    body, separator, signatures = text.partition("\n\n")
    if not separator or not body:
        raise CheckpointError("not a signed note: no blank line before the signatures")
    body += "\n"
    wanted = key_id(public_key)
    for line in signatures.splitlines():
        if not line.startswith(_SIGNATURE_DASH):
            raise CheckpointError("malformed signature line")
        name, _, encoded = line.removeprefix(_SIGNATURE_DASH).partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CheckpointError("malformed signature line") from None
        if name != KEY_NAME or blob[:4] != wanted:
            continue
        try:
            public_key.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError(
                "the checkpoint's signature does not verify: it was changed or forged"
            ) from None
        return _parse_body(body)
    raise CheckpointError("the checkpoint holds no signature by this key")


def _parse_body(body: str) -> Checkpoint:
    lines = body.splitlines()
    if len(lines) != 4 or lines[0] != KEY_NAME:
        raise CheckpointError(f"not a {KEY_NAME} checkpoint")
    origin, seq_text, head_hash, when = lines
    if not seq_text.isascii() or not seq_text.isdigit() or not _HEX_HASH.fullmatch(head_hash):
        raise CheckpointError("malformed checkpoint: bad seq or hash line")
    try:
        signed_at = datetime.strptime(when, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise CheckpointError("malformed checkpoint: bad time line") from None
    return Checkpoint(origin=origin, seq=int(seq_text), hash=head_hash, time=signed_at)


# -- files -----------------------------------------------------------------------------------


def checkpoint_file_name(seq: int) -> str:
    """The file name of the checkpoint at ``seq``; names sort in seq order."""
    return f"checkpoint-{seq:020d}.txt"


def write_checkpoint_file(directory: Path, seq: int, text: str) -> Path:
    """Write the note ``text`` atomically (temporary file, fsync, rename) into ``directory``.

    :return: the file written.
    :raises CheckpointError: if it cannot be written.
    """
    target = directory / checkpoint_file_name(seq)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, 0o644)  # a checkpoint is public; mkstemp makes files 0600
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # The rename is durable only once the folder itself is flushed.
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {str(target)!r}: {exc.strerror}") from None
    return target


def latest_checkpoint_file(directory: Path) -> Path | None:
    """The checkpoint file with the highest seq in ``directory``, or None if there is none."""
    try:
        names = [entry.name for entry in os.scandir(directory) if _FILE_NAME.fullmatch(entry.name)]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot list checkpoints in {str(directory)!r}: {exc}") from None
    return directory / max(names) if names else None


def read_checkpoint_file(path: Path, public_key: Ed25519PublicKey) -> Checkpoint:
    """Read and verify the checkpoint file at ``path``.

    :raises CheckpointError: if it cannot be read or does not verify with ``public_key``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {reason}") from None
    return verify_checkpoint(text, public_key)


# -- writing them as the chain grows (in the writer process) ---------------------------------


class Checkpointer:
    """Signs the chain head and writes a checkpoint file when it is due.

    Due once the chain has grown by ``every`` records since the last checkpoint, or once
    ``interval`` seconds have passed and it has grown at all, and at shutdown (:meth:`write`).
    Used by the writer process (:mod:`hoopgw.audit.process`) between commits.
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey,
        directory: Path,
        read_head: Callable[[], AuditRecord | None],
        every: int,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        :param key: signs the checkpoints.
        :param directory: where checkpoint files go; the newest one already there counts as
            the last checkpoint written.
        :param read_head: returns the store's current head (:meth:`Store.last_record`).
        :param every: records between checkpoints.
        :param interval: longest time, in seconds, a grown chain waits for its checkpoint.
        :param clock: POSIX time now.
        """
        self._key = key
        self._directory = directory
        self._read_head = read_head
        self._every = every
        self._interval = interval
        self._clock = clock
        latest = latest_checkpoint_file(directory)
        match = None if latest is None else _FILE_NAME.fullmatch(latest.name)
        self._last_seq = 0 if match is None else int(match[1])
        self._attempted_seq = self._last_seq
        self._last_time = clock()

    def committed(self, head_seq: int) -> Path | None:
        """Note a commit whose last record is ``head_seq``; write a checkpoint if one is due.

        :raises CheckpointError: if the checkpoint cannot be written (retried at the interval).
        """
        if head_seq - self._attempted_seq >= self._every:
            # Attempted even if the head cannot be read: retried at the interval, not at the
            # next commit.
            self._attempted_seq = head_seq
            return self.write()
        return None

    def seconds_until_due(self) -> float:
        """How long until the interval's checkpoint is due (0 if it is due now)."""
        return max(0.0, self._last_time + self._interval - self._clock())

    def write(self) -> Path | None:
        """Write a checkpoint of the current head now, unless it was checkpointed already.

        :return: the file written, or None when the head has not moved.
        :raises CheckpointError: if the head cannot be signed or written.
        """
        now = self._clock()
        self._last_time = now
        head = self._read_head()
        if head is None or head.seq == self._last_seq:
            return None
        self._attempted_seq = head.seq
        checkpoint = Checkpoint(origin=KEY_NAME, seq=head.seq, hash=head.hash, time=int(now))
        path = write_checkpoint_file(
            self._directory, head.seq, sign_checkpoint(checkpoint, self._key)
        )
        self._last_seq = head.seq
        return path


# -- verifying a log against a checkpoint ----------------------------------------------------


@attrs.frozen(kw_only=True)
class LogVerification:
    """The outcome of :func:`verify_log`: the chain, and the checkpoint if one was given."""

    chain: VerifyResult
    """The hash chain's verification."""
    checkpoint: Checkpoint | None
    """The (signature-verified) checkpoint the log was compared with, if any."""
    checkpoint_problem: str = ""
    """Why the log does not match the checkpoint; empty when it does or none was given."""

    @property
    def ok(self) -> bool:
        """Whether the chain is intact and matches the checkpoint."""
        return self.chain.ok and not self.checkpoint_problem


def verify_log(
    records: Iterable[AuditRecord], checkpoint: Checkpoint | None, *, instance: str = ""
) -> LogVerification:
    """Verify the chain of ``records`` (streamed, in seq order; gateway instance ``instance``'s
    chain) and compare it with ``checkpoint``, whose signature the caller has verified
    (:func:`verify_checkpoint`).

    The log matches the checkpoint when it still holds the record at the checkpoint's seq with
    the checkpoint's hash. When that record was pruned, the ``pruned`` record that accounts for
    the first remaining record must name it (as the last one removed); a checkpoint of an
    older record cannot be checked any more, and fails.
    """
    seen: dict[str, str] = {}

    def noting(stream: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        for record in stream:
            if checkpoint is not None and record.seq == checkpoint.seq:
                seen["hash"] = record.hash
            yield record

    chain = verify_chain(noting(records), instance=instance)
    if checkpoint is None or not chain.ok:
        return LogVerification(chain=chain, checkpoint=checkpoint)
    return LogVerification(
        chain=chain, checkpoint=checkpoint, checkpoint_problem=_mismatch(chain, checkpoint, seen)
    )


def _mismatch(chain: VerifyResult, checkpoint: Checkpoint, seen: dict[str, str]) -> str:
    at = checkpoint.seq
    if chain.last_seq is None or chain.last_seq < at:
        ends = "is empty" if chain.last_seq is None else f"ends at record {chain.last_seq}"
        return f"the log was truncated: the checkpoint covers record {at}, the log {ends}"
    if "hash" in seen:
        if seen["hash"] != checkpoint.hash:
            return f"the log was rewritten: record {at} differs from the checkpoint's"
        return ""
    anchor = next((p for p in chain.pruned if p.last_seq == (chain.first_seq or 1) - 1), None)
    if anchor is not None and anchor.last_seq == at:
        if anchor.last_hash != checkpoint.hash:
            return f"the log was rewritten: record {at} differs from the checkpoint's"
        return ""
    return (
        f"record {at} was pruned, so this checkpoint can no longer be checked; "
        "use a checkpoint written after the pruning"
    )
