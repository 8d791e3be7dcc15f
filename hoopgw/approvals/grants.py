"""Just-in-time access grants: the access an approved request gives, and its end.

An approved ``access`` review (see :mod:`hoopgw.approvals.reviews`) creates a
:class:`~hoopgw.reviews.GrantRecord`, which admits its identity's sessions on a ``jit``
connection until it expires or is revoked; its end ends those sessions, and a periodic sweep ends
any session on a ``jit`` connection whose identity holds no live grant. Every grant, revocation,
expiry and ended session is an audit record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.approvals.common import (
    SEE_ALL,
    ApprovalError,
    Notifier,
    duration_text,
    gather,
    new_id,
    review_entry,
    roles_of,
)
from hoopgw.errors import HoopgwError
from hoopgw.records import AuditEntry
from hoopgw.reviews import GrantRecord, ReviewRecord
from hoopgw.session import Identity
from hoopgw.store.calls import StoreCalls

if TYPE_CHECKING:
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.connection import ConnectionConfig
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.store import Store

__all__ = ["GRANT_SWEEP_INTERVAL", "GrantService"]

log = Logger(namespace="hoopgw.approvals")

GRANT_SWEEP_INTERVAL = 5.0
"""Seconds between two looks for sessions on ``jit`` connections without a live grant."""


def _expire_request(store: Store, review_id: str, now: float, why: str) -> ReviewRecord | None:
    """On a store thread: end the pending access request ``review_id`` as ``expired``; the
    stored review, or None when it was not pending any more."""
    review = store.get_review(review_id)
    if review is None or review.status != "pending":
        return None
    expired = attrs.evolve(review, status="expired", decided_at=now, decision_reason=why)
    return expired if store.replace_review(expired, expected_status="pending") else None


class GrantService:
    """The just-in-time grants of one gateway: who may use which ``jit`` connection now."""

    def __init__(
        self,
        *,
        store: Store,
        audit: AuditWriter,
        reactor: Any,
        connections: Mapping[str, ConnectionConfig],
        roles: Mapping[str, tuple[str, ...]],
        sessions: SessionRegistry,
        calls: StoreCalls | None = None,
    ) -> None:
        """
        :param connections: configured connections by name.
        :param roles: the ``[roles]`` table.
        :param sessions: live sessions, which a grant's end ends.
        :param calls: runs the sweep's store reads; None runs them on the calling thread.
        """
        self._store = store
        self._audit = audit
        self._reactor = reactor
        self.connections = connections
        self.roles = roles
        self._sessions = sessions
        self._grant_timers: dict[str, Any] = {}
        self._request_timers: dict[str, Any] = {}
        self.notify: Notifier = lambda review, event: None
        """Told of every change of an access request (the review service sets it)."""
        self.calls = calls or StoreCalls.inline()
        """Runs the sweep's store reads (see :mod:`hoopgw.store.calls`)."""
        self._sweep = task.LoopingCall(self._end_sessions_without_grant)
        self._revoking: set[str] = set()
        """Ids of the grants this instance is revoking now (see :meth:`grant_changed`)."""
        self._sweep.clock = reactor

    def start(self) -> defer.Deferred[None]:
        """End grants that expired while the gateway was down; schedule the end of the live
        ones; start the sweep."""
        writes = []
        now = self._now()
        for grant in self._store.list_grants(limit=1_000_000):
            if grant.ended_at is not None:
                continue
            if grant.is_active(now):
                self._schedule_expiry(grant)
            else:
                writes.append(self._end_grant(grant, "expired"))
        if not self._sweep.running:
            self._sweep.start(GRANT_SWEEP_INTERVAL, now=False).addErrback(
                lambda f: log.failure("the grant sweep stopped", f)
            )
        return gather(writes)

    def stop(self) -> None:
        """Stop the sweep, the grant timers and the access requests' timers."""
        if self._sweep.running:
            self._sweep.stop()
        for timer in [*self._grant_timers.values(), *self._request_timers.values()]:
            if timer.active():
                timer.cancel()
        self._grant_timers.clear()
        self._request_timers.clear()

    def grant_changed(self, grant_id: str) -> None:
        """The store says grant ``grant_id`` changed: end at once the sessions whose grant
        ended. A revocation this instance is making itself is left to it, which ends those
        sessions naming the revocation (its own store notice may arrive first)."""
        if grant_id not in self._revoking:
            self._end_sessions_without_grant()

    # -- access requests -----------------------------------------------------------------------

    def access_request(
        self,
        identity: Identity,
        *,
        connection: str,
        duration: float,
        reason: str,
        now: float,
        instance: str,
    ) -> ReviewRecord:
        """The ``access`` review for ``identity``'s request of ``duration`` seconds of access
        to a ``jit`` connection (not stored yet).

        :raises ApprovalError: for an unknown or non-jit connection, a caller outside its
            ``allow_groups``, a duration above ``jit_max_duration``, or no reason.
        """
        config = self.connections.get(connection)
        if config is None:
            raise ApprovalError("not_found", f"no connection named {connection!r}")
        if config.access != "jit":
            raise ApprovalError(
                "invalid", f"connection {connection!r} does not use just-in-time access"
            )
        if not identity.groups & set(config.allow_groups):
            raise ApprovalError(
                "forbidden",
                f"identity {identity.name!r} may not use connection {connection!r}"
                " (none of its groups is in allow_groups)",
            )
        if not 0 < duration <= config.jit_max_duration:
            raise ApprovalError(
                "invalid",
                f"duration must be more than 0 and at most"
                f" {duration_text(config.jit_max_duration)} (jit_max_duration of {connection!r})",
            )
        if not reason.strip():
            raise ApprovalError("invalid", "a reason is required")
        return ReviewRecord(
            id=new_id(),
            kind="access",
            status="pending",
            requester=identity.name,
            requester_groups=tuple(sorted(identity.groups)),
            connection=connection,
            reason=reason,
            approvers=tuple(sorted(set(config.jit_approvers))),
            required=1,
            created_at=now,
            duration=float(duration),
            instance=instance,
        )

    def expire_later(self, review: ReviewRecord) -> None:
        """End the stored access request ``review`` as ``expired`` when nobody decides it
        within its connection's ``jit_request_ttl``."""
        ttl = self.connections[review.connection].jit_request_ttl
        self._request_timers[review.id] = self._reactor.callLater(
            ttl, self._request_expired, review.id, ttl
        )

    def cancel_request_timer(self, review_id: str) -> None:
        """The access request ``review_id`` was decided or ended: it no longer expires."""
        timer = self._request_timers.pop(review_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _request_expired(self, review_id: str, ttl: float) -> None:
        """The access request was not decided in time: it ends ``expired``."""
        self._request_timers.pop(review_id, None)
        why = f"not decided within {duration_text(ttl)} (jit_request_ttl)"
        ended = self.calls.call(_expire_request, self._store, review_id, self._now(), why)

        def stored(expired: ReviewRecord | None) -> None:
            if expired is None:
                return
            entry = review_entry(
                "review_decided", expired, self._now(), status="expired", by="gateway", reason=why
            )
            self._write(entry).addErrback(
                lambda f: log.failure("cannot record an expired review", f)
            )
            self.notify(expired, "expired")
            log.info("review {review} expired: {why}", review=review_id, why=why)

        ended.addCallbacks(
            stored,
            lambda f: log.failure("cannot expire access request {review}", f, review=review_id),
        )

    # -- grants ------------------------------------------------------------------------------

    def active_grant(
        self, identity: str, connection: str, *, now: float | None = None
    ) -> GrantRecord | None:
        """The live grant that admits ``identity`` to ``connection`` at ``now`` (default: the
        reactor's time), if any. It only reads the store: callable off the reactor thread
        with ``now`` given."""
        found = self._store.list_grants(
            identity=identity,
            connection=connection,
            active_at=self._now() if now is None else now,
            limit=1,
        )
        return found[0] if found else None

    def revoke(self, grant_id: str, by: Identity, reason: str) -> defer.Deferred[GrantRecord]:
        """Revoke a grant now and end its sessions.

        Allowed to admins, to members of the connection's ``jit_approvers``, and to the grantee.
        The Deferred fails with :class:`ApprovalError` for an unknown grant, one ``by`` may not
        revoke, or one no longer active; with the store's error when the store fails.
        """
        read = self.calls.call(self._store.get_grant, grant_id)
        return read.addCallback(self._revoke, grant_id, by, reason)

    def _revoke(
        self, grant: GrantRecord | None, grant_id: str, by: Identity, reason: str
    ) -> defer.Deferred[GrantRecord]:
        if grant is None:
            raise ApprovalError("not_found", f"no grant {grant_id!r}")
        config = self.connections.get(grant.connection)
        approvers = set(config.jit_approvers) if config else set()
        allowed = (
            by.name == grant.identity
            or "admin" in roles_of(by, self.roles)
            or bool(by.groups & approvers)
        )
        if not allowed:
            raise ApprovalError(
                "forbidden", f"identity {by.name!r} may not revoke grant {grant_id}"
            )
        now = self._now()
        if not grant.is_active(now):
            raise ApprovalError("conflict", f"grant {grant_id} is {grant.status(now)}")
        revoked = attrs.evolve(grant, revoked_at=now, revoked_by=by.name, revoke_reason=reason)

        def stored(_: Any) -> defer.Deferred[GrantRecord]:
            timer = self._grant_timers.pop(grant_id, None)
            if timer is not None and timer.active():
                timer.cancel()
            ended = attrs.evolve(revoked, ended_at=now)
            return self._end_grant(revoked, "revoked").addCallback(lambda _: ended)

        self._revoking.add(grant_id)

        def done(result: Any) -> Any:
            self._revoking.discard(grant_id)
            return result

        return self.calls.call(self._store.replace_grant, revoked).addCallback(stored).addBoth(done)

    def new_grant(self, review: ReviewRecord, approved_by: tuple[str, ...]) -> GrantRecord:
        """The grant an approved access ``review`` creates (not stored yet: see :meth:`admit`)."""
        now = self._now()
        return GrantRecord(
            id=new_id(),
            review_id=review.id,
            identity=review.requester,
            connection=review.connection,
            reason=review.reason,
            approved_by=approved_by,
            created_at=now,
            expires_at=now + (review.duration or 0.0),
        )

    def admit(self, grant: GrantRecord) -> defer.Deferred[None]:
        """Store ``grant`` (from now on it admits sessions) and schedule its end; called once
        the records of its approval are durable."""
        stored = self.calls.call(self._store.add_grant, grant)
        return stored.addCallback(lambda _: self._schedule_expiry(grant))

    def _schedule_expiry(self, grant: GrantRecord) -> None:
        delay = max(grant.expires_at - self._now(), 0.0)
        self._grant_timers[grant.id] = self._reactor.callLater(delay, self._expired, grant.id)

    def _expired(self, grant_id: str) -> None:
        self._grant_timers.pop(grant_id, None)

        def read(grant: GrantRecord | None) -> defer.Deferred[Any] | None:
            if grant is None or grant.ended_at is not None or grant.revoked_at is not None:
                return None
            return self._end_grant(grant, "expired")

        # A grant that cannot be read now ends at the next sweep (its sessions, at least).
        self.calls.call(self._store.get_grant, grant_id).addCallback(read).addErrback(
            lambda f: log.failure("cannot end the expired grant {grant}", f, grant=grant_id)
        )

    def _end_grant(self, grant: GrantRecord, how: str) -> defer.Deferred[Any]:
        """Mark the grant ended, end the sessions it admitted (unless another grant admits
        them), and record it."""
        now = self._now()
        ended_grant = attrs.evolve(grant, ended_at=now)

        def store_end() -> GrantRecord | None:
            self._store.replace_grant(ended_grant)
            return self.active_grant(grant.identity, grant.connection, now=now)

        def unstored(failure: Failure) -> None:
            # Fail closed: the sessions end even when the store cannot say so.
            log.failure("cannot record the end of grant {grant}", failure, grant=grant.id)

        stored = self.calls.call(store_end).addErrback(unstored)
        return stored.addCallback(self._grant_ended, grant, how)

    def _grant_ended(
        self, other: GrantRecord | None, grant: GrantRecord, how: str
    ) -> defer.Deferred[Any]:
        ended: list[str] = []
        if other is None:
            why = f"access grant {grant.id} {how}"
            for live in self._sessions.sessions_of(grant.identity, grant.connection):
                info = getattr(live, "session", None)
                ended.append(info.id if info is not None else "")
                live.terminate(why)
        log.info(
            "grant {grant} of {who} on {connection} {how}; {count} session(s) ended",
            grant=grant.id,
            who=grant.identity,
            connection=grant.connection,
            how=how,
            count=len(ended),
        )
        data: dict[str, Any] = {
            "grant": grant.id,
            "review": grant.review_id,
            "identity": grant.identity,
            "connection": grant.connection,
            "expires_at": grant.expires_at,
            "sessions_ended": ended,
        }
        if how == "revoked":
            data.update(by=grant.revoked_by, reason=grant.revoke_reason)
        return self._write(
            AuditEntry(kind=f"grant_{how}", session_id="", time=self._now(), data=data)
        )

    def _end_sessions_without_grant(self) -> defer.Deferred[None]:
        """End every session on a ``jit`` connection whose identity holds no live grant.

        A grant's end ends the sessions registered then; this catches one that a protocol
        registered later (admitted under the grant, then still logging in upstream when the
        grant ended), so that none outlives its grant by more than
        :data:`GRANT_SWEEP_INTERVAL`. The grants are read through :attr:`calls` (off the
        reactor thread with a PostgreSQL store); a session whose grants cannot be read is
        left for the next sweep.
        """
        watched = []
        for live in list(self._sessions):
            identity = live.identity
            config = self.connections.get(live.runtime.config.name)
            if identity is not None and config is not None and config.access == "jit":
                watched.append((live, identity.name, config.name))
        if not watched:
            return defer.succeed(None)
        pairs = sorted({(who, where) for _, who, where in watched})
        now = self._now()
        ended = self.calls.call(self.granted, pairs, now=now).addCallback(
            lambda granted: self._end_ungranted(watched, granted)
        )
        # The sweep goes on at its next turn, whatever this one met.
        return ended.addErrback(lambda f: log.failure("the grant sweep failed", f))

    def granted(self, pairs: list[tuple[str, str]], *, now: float) -> set[tuple[str, str]]:
        """The (identity, connection) ``pairs`` that hold a live grant at ``now``; a pair whose
        grants cannot be read counts as granted (the next sweep looks again). It only reads
        the store: run it through :attr:`calls`."""
        granted = set()
        for who, where in pairs:
            try:
                if self.active_grant(who, where, now=now) is not None:
                    granted.add((who, where))
            except HoopgwError as exc:
                log.warn("cannot look up the grants of {who}: {why}", who=who, why=exc)
                granted.add((who, where))  # unknown: left for the next sweep
        return granted

    def _end_ungranted(
        self, watched: list[tuple[Any, str, str]], granted: set[tuple[str, str]]
    ) -> None:
        for live, name, connection in watched:
            if (name, connection) in granted:
                continue
            identity = live.identity
            config = self.connections[connection]
            why = f"no live access grant of {identity.name!r} on {config.name!r}"
            info = getattr(live, "session", None)
            try:
                live.terminate(why)
            except Exception:  # one session's failure must not stop the sweep for all
                log.failure("cannot end a session without a grant")
            self._write(
                AuditEntry(
                    kind="grant_session_ended",
                    session_id=info.id if info is not None else "",
                    time=self._now(),
                    data={"identity": identity.name, "connection": config.name, "reason": why},
                )
            ).addErrback(lambda f: log.failure("cannot record the end of a session", f))

    def list_grants(self, identity: Identity, *, active: bool, limit: int) -> list[GrantRecord]:
        """Grants ``identity`` may see: its own, those on connections whose ``jit_approvers``
        it belongs to, and every grant for auditors and admins."""
        active_at = self._now() if active else None
        if roles_of(identity, self.roles) & SEE_ALL:
            return self._store.list_grants(active_at=active_at, limit=limit)
        approves = frozenset(
            name
            for name, config in self.connections.items()
            if identity.groups & set(config.jit_approvers)
        )
        visible_to = (identity.name, approves)
        return self._store.list_grants(active_at=active_at, visible_to=visible_to, limit=limit)

    def record_created(self, grant: GrantRecord) -> defer.Deferred[Any]:
        """Write the ``grant_created`` record of ``grant``."""
        data = {
            "grant": grant.id,
            "review": grant.review_id,
            "identity": grant.identity,
            "connection": grant.connection,
            "approved_by": list(grant.approved_by),
            "reason": grant.reason,
            "expires_at": grant.expires_at,
        }
        return self._write(
            AuditEntry(kind="grant_created", session_id="", time=grant.created_at, data=data)
        )

    def _now(self) -> float:
        return float(self._reactor.seconds())

    def _write(self, entry: AuditEntry) -> defer.Deferred[Any]:
        return self._audit.write(entry)
