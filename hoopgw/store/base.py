"""The store interface: audit records, their projections for the CLI, and API keys.

A store is a blocking API: the audit writer calls it on its own thread, the CLI calls it
directly. Every implementation (SQLite; PostgreSQL for several gateway instances) must keep the
same guarantees: :meth:`Store.append` is one durable transaction that assigns ``seq`` without
gaps in the instance's chain and extends that hash chain
(:func:`hoopgw.audit.hashing.record_hash_v2`), and every failure is raised as
:class:`~hoopgw.errors.StoreError`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from hoopgw.audit.chain import AuditRecord, EncodedEntry
from hoopgw.records import AuditEntry, SshKeyStore
from hoopgw.reviews import ReviewStore
from hoopgw.secrets import ScramVerifier
from hoopgw.store.agents import AgentStore


@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """A stored API key. The secret itself is never stored, only what checks it."""

    key_id: str
    """Public identifier: 12 lowercase hex characters, also part of the secret."""
    identity: str
    """The identity the key authenticates as."""
    groups: tuple[str, ...]
    """Groups granted to that identity while it uses this key."""
    secret_sha256: str = attrs.field(repr=False)
    """Hex SHA-256 of the whole secret string."""
    scram: ScramVerifier = attrs.field(repr=False)
    """SCRAM-SHA-256 verifier of the whole secret, for clients that speak SCRAM."""
    created_at: float
    """POSIX time the key was made."""
    expires_at: float | None = None
    """POSIX time the key stops working, or None for never."""
    revoked_at: float | None = None
    """POSIX time the key was revoked, or None."""
    last_used_at: float | None = None
    """POSIX time of the last successful authentication, or None."""

    def is_active(self, now: float) -> bool:
        """Whether the key may authenticate at ``now`` (neither revoked nor expired)."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@attrs.frozen(kw_only=True)
class WriterState:
    """What the store knows of one instance's audit writer (its journal may hold records the
    store lacks until the writer has drained it)."""

    instance: str
    """The gateway instance."""
    journal: str
    """``HOST:PATH`` of its local audit journal."""
    started_at: float
    """When the writer last started."""
    stopped_at: float | None
    """When it stopped with its journal drained; None while it runs, or if it did not."""
    running: bool | None
    """Whether it runs now (it holds its instance's lock); None where the store cannot tell."""

    @property
    def undrained(self) -> bool:
        """The writer is gone without having drained its journal: records that ran may be
        missing from the store until that instance starts again."""
        return self.stopped_at is None and self.running is False


class Store(ReviewStore, SshKeyStore, AgentStore):
    """Where audit records, session projections, API keys, SSH keys, agents,
    reviews and grants are kept.

    Every method may raise :class:`~hoopgw.errors.StoreError`; none raises anything else for
    a storage problem. An instance is used from one thread only.
    """

    @abc.abstractmethod
    def migrate(self) -> None:
        """Bring the schema to the version this code knows; a no-op when it is already there.

        :raises StoreError: if the store's schema is newer than this code knows.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's connection; the instance is unusable afterwards."""

    @abc.abstractmethod
    def writable(self) -> bool:
        """Whether the store answers and its files may be written (a cheap readiness check
        that changes nothing)."""

    # -- audit ---------------------------------------------------------------------------------

    instance: str
    """The gateway instance whose hash chain the audit methods below are about (``""``, the
    one chain of a SQLite store). Keys, sessions, reviews and grants are shared."""

    @abc.abstractmethod
    def instances(self) -> list[str]:
        """The ids of every instance that has a chain (records or a journal mark), sorted."""

    @abc.abstractmethod
    def chain(self, instance: str) -> Store:
        """A store object for ``instance``'s chain, on the same connection (for reading:
        ``hoopgw audit verify`` checks every chain).

        :raises StoreError: if this store cannot hold that chain.
        """

    @abc.abstractmethod
    def append(
        self,
        entries: Sequence[AuditEntry | EncodedEntry],
        *,
        journal_mark: int | None = None,
        sync: bool = True,
    ) -> list[AuditRecord]:
        """Durably append ``entries``, in order, in ONE transaction.

        An :class:`~hoopgw.audit.chain.EncodedEntry`'s data text is stored and hashed as it is
        (record format 2); an :class:`AuditEntry`'s data is serialised once here.

        Assigns each its ``seq``, chains its hash to the previous record, and updates the
        ``sessions`` and ``commands`` projections. When this returns, the records survive a
        crash; when it raises, none of them was written.

        :param journal_mark: the audit journal number of the last entry
            (:mod:`hoopgw.audit.journal`), kept in the same transaction; see
            :meth:`journal_mark`.
        :param sync: False lets a store that can (SQLite) commit without syncing to disk: the
            records then survive a crash of the process but only a later :meth:`sync` (or
            synced commit) makes them survive a crash of the host. The audit writer appends so,
            since its journal keeps the entries until the store is synced.
        :return: the records, in the order of ``entries``.
        """

    def sync(self) -> None:
        """Make every transaction committed so far survive a crash of the host (see
        :meth:`append`'s ``sync``). Safe to call from any thread. A store whose every commit is
        synced does nothing.

        :raises StoreError: if the disk reports an error.
        """

    @abc.abstractmethod
    def writer_started(self, journal: str, *, now: float) -> None:
        """Claim this instance's chain for the calling audit writer, whose journal is
        ``journal`` (``HOST:PATH``), until :meth:`close`.

        :raises StoreError: also when another writer of the same instance runs.
        """

    @abc.abstractmethod
    def writer_stopped(self, *, now: float) -> None:
        """Note that this instance's writer stops with its journal drained."""

    @abc.abstractmethod
    def writers(self) -> list[WriterState]:
        """Every instance's audit writer the store knows, by instance."""

    @abc.abstractmethod
    def journal_mark(self) -> int:
        """The audit journal number of the last entry appended with one (0 for none)."""

    @abc.abstractmethod
    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Yield the records with ``seq > after_seq`` in seq order, reading lazily."""

    @abc.abstractmethod
    def session_records(self, session_id: str, kind: str) -> Iterator[AuditRecord]:
        """Yield the records of one session and kind (such as ``terminal_output``) in seq
        order, reading lazily."""

    @abc.abstractmethod
    def last_record(self) -> AuditRecord | None:
        """The chain head: the record with the highest seq, or None for an empty store."""

    @abc.abstractmethod
    def prune(self, *, older_than: float, now: float) -> AuditRecord | None:
        """Remove the oldest records, those written before ``older_than``, in ONE transaction.

        Only a prefix of the chain goes: the records before the first one whose ``time`` is
        ``older_than`` or later. In the same transaction a ``pruned`` record
        (:func:`hoopgw.audit.chain.pruned_entry`) is appended, so the chain still verifies from the
        first remaining record, and the sessions left without any record leave the ``sessions``
        and ``commands`` projections. A session that keeps some records keeps its projection
        whole.

        :return: the ``pruned`` record, or None if no record was old enough (nothing changed).
        """

    # -- projections ---------------------------------------------------------------------------

    @abc.abstractmethod
    def list_sessions(
        self, *, limit: int = 100, connection: str | None = None, identity: str | None = None
    ) -> list[dict[str, Any]]:
        """Sessions, newest first, optionally only those of one connection or identity.

        Each dict has ``id``, ``connection``, ``protocol``, ``target``, ``identity``, ``groups``
        (list), ``method``, ``credential_id``, ``client_address``, ``client_tls``,
        ``upstream_tls``, ``started_at``, ``ended_at`` (None while open), ``end_reason``,
        ``command_count`` and ``attributes`` (dict).
        """

    @abc.abstractmethod
    def session_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Ids of recorded sessions that start with ``prefix``, at most ``limit`` of them."""

    @abc.abstractmethod
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """One session as in :meth:`list_sessions`, plus ``commands``; None if unknown.

        ``commands`` is a list, in session order, of dicts with ``seq``, ``kind``, ``text``,
        ``parameter_count``, ``statement_name``, ``received_at``, ``verdict`` (``allow``,
        ``block`` or None while undecided), ``verdict_reason``, ``verdict_plugin``, ``rule``,
        ``status``, ``rows``, ``bytes``, ``duration``, ``error_code``, ``error_message``,
        ``sample`` (list of rows or None) and ``completed_at``.
        """

    # -- API keys ------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_key(self, key: ApiKeyRecord) -> None:
        """Store a new key.

        :raises StoreError: also if a key with the same id exists.
        """

    @abc.abstractmethod
    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""

    @abc.abstractmethod
    def find_keys_by_identity(self, identity: str) -> list[ApiKeyRecord]:
        """Every key of ``identity`` (active or not), newest first."""

    @abc.abstractmethod
    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""

    @abc.abstractmethod
    def revoke_key(self, key_id: str, *, when: float) -> bool:
        """Mark the key revoked at ``when``.

        :return: True if this call revoked it; False if it is unknown or already revoked.
        """

    @abc.abstractmethod
    def touch_key(self, key_id: str, when: float) -> None:
        """Record that the key authenticated successfully at ``when``."""

    # -- login back-off ------------------------------------------------------------------------

    @abc.abstractmethod
    def count_login_failure(self, host: str, *, now: float, forget_after: float) -> int:
        """Count a failed login from ``host`` at ``now`` and return its failures so far, from
        every gateway instance on the store; a count idle ``forget_after`` seconds starts again
        (:mod:`hoopgw.throttle`)."""
