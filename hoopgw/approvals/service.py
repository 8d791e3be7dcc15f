"""Reviews and just-in-time access: a human decides before risky work runs.

One :class:`ApprovalService` per gateway keeps every review and grant in the store and applies
the rules:

- a held statement becomes a ``statement`` review; the session waits on a Deferred that fires
  when the review is decided (:meth:`ApprovalService.hold`), times out, or is withdrawn by the
  client (cancel or disconnect cancels the Deferred);
- an access request becomes an ``access`` review; its approval creates a :class:`GrantRecord`
  that admits sessions until it expires or is revoked, and its end ends those sessions;
- nobody decides their own request; only members of the review's approver groups decide; a
  review needs ``required`` distinct approvals and one denial ends it;
- an approval covers the statement's text and its bind parameter values (with their formats
  and types): the same text with other values is other work and needs its own review;
- a hold that times out leaves the review open: a later approval lets the same identity run the
  identical statement, with identical parameter values, on the same connection once, within
  ``valid_for`` seconds;
- an access request not decided within its connection's ``jit_request_ttl`` ends ``expired``;
- at start and stop every pending review ends ``aborted``: nothing waits across a restart.

Every request, answer, decision, grant, revocation and expiry is an audit record, written through
the gateway's :class:`~hoopgw.audit.writer.AuditWriter`; a decision takes effect only once its
record is
durable. The store is used from the reactor thread (its calls are short, indexed, local).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import REVIEW_TIMEOUT_RULE, HeldStatement, HoopgwError
from hoopgw.records import AuditEntry
from hoopgw.reviews import GrantRecord, ReviewPolicy, ReviewRecord, ReviewVote
from hoopgw.session import Command, Identity, SessionInfo
from hoopgw.verdicts import Allow, Block, Hold, Verdict

if TYPE_CHECKING:
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.connection import ConnectionConfig
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.store import Store

__all__ = ["ApprovalError", "ApprovalService", "roles_of"]

log = Logger(namespace="hoopgw.approvals")

GRANT_SWEEP_INTERVAL = 5.0
"""Seconds between two looks for sessions on ``jit`` connections without a live grant."""

Notifier = Callable[[ReviewRecord, str], None]
"""Called as ``notify(review, event)`` after every change of a review (see the
``review_updated`` hook)."""


class ApprovalError(HoopgwError):
    """A request the service refuses; :attr:`code` says why (the admin API maps it to a
    status): ``not_found``, ``forbidden``, ``conflict`` or ``invalid``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def roles_of(identity: Identity, roles: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """The admin-API roles (``approver``, ``auditor``, ``admin``) the identity's groups hold."""
    return frozenset(role for role, groups in roles.items() if identity.groups & set(groups))


def _new_id() -> str:
    return secrets.token_hex(6)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@attrs.define
class _Held:
    """A statement waiting for its review."""

    decision: defer.Deferred[Verdict]
    timer: Any


class ApprovalService:
    """Every review and grant of one gateway, and the rules for deciding them."""

    def __init__(
        self,
        *,
        store: Store,
        audit: AuditWriter,
        reactor: Any,
        connections: Mapping[str, ConnectionConfig],
        roles: Mapping[str, tuple[str, ...]],
        sessions: SessionRegistry,
        approval_timeout: float,
        instance: str = "",
        poll_interval: float | None = None,
    ) -> None:
        """
        :param connections: configured connections by name (for access requests and grants).
        :param roles: the ``[roles]`` table.
        :param sessions: live sessions, which a grant's end ends.
        :param approval_timeout: ``[gateway] approval_timeout``, the longest hold.
        :param instance: this gateway's instance id in a shared store (``""`` alone).
        :param poll_interval: with a store other instances decide in, seconds between looks
            at the reviews this instance holds (:meth:`review_changed` answers sooner when the
            store says so); None for a store no other gateway uses.
        """
        self._store = store
        self._audit = audit
        self._reactor = reactor
        self.connections = connections
        self.roles = roles
        self._sessions = sessions
        self._approval_timeout = approval_timeout
        self._held: dict[str, _Held] = {}
        self._digests: dict[str, str] = {}
        self._digest_key = secrets.token_bytes(32)
        self._grant_timers: dict[str, Any] = {}
        self._request_timers: dict[str, Any] = {}
        self._notifiers: dict[str, Notifier] = {}
        self._stopping = False
        self._sweep = task.LoopingCall(self._end_sessions_without_grant)
        self._sweep.clock = reactor
        self._instance = instance
        self._poll_interval = poll_interval
        self._poll = task.LoopingCall(self._look_at_held)
        self._poll.clock = reactor

    # -- life cycle ----------------------------------------------------------------------------

    def add_notifier(self, connection: str, notify: Notifier) -> None:
        """Call ``notify`` for every change of a review on ``connection``."""
        self._notifiers[connection] = notify

    def start(self) -> defer.Deferred[None]:
        """End reviews left pending by an earlier run as ``aborted``; end grants that expired
        while the gateway was down; schedule the end of the live ones."""
        writes = [self._abort(review, "the gateway restarted") for review in self._pending()]
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
        if self._poll_interval is not None and not self._poll.running:
            self._poll.start(self._poll_interval, now=False).addErrback(
                lambda f: log.failure("the look at held reviews stopped", f)
            )
        return _all(writes)

    def stop(self) -> defer.Deferred[None]:
        """End every pending review as ``aborted`` (waiting clients get an error) and stop the
        grant timers; call before sessions are ended."""
        self._stopping = True
        if self._sweep.running:
            self._sweep.stop()
        if self._poll.running:
            self._poll.stop()
        for timer in [*self._grant_timers.values(), *self._request_timers.values()]:
            if timer.active():
                timer.cancel()
        self._grant_timers.clear()
        self._request_timers.clear()
        return _all([self._abort(review, "the gateway is stopping") for review in self._pending()])

    def _pending(self) -> list[ReviewRecord]:
        """This instance's pending reviews (other instances sharing the store keep theirs)."""
        found = self._store.list_reviews(status="pending", limit=1_000_000)
        return [review for review in found if review.instance == self._instance]

    def sweep_now(self) -> None:
        """End at once the sessions whose grant ended (the store says a grant changed)."""
        self._end_sessions_without_grant()

    def review_changed(self, review_id: str) -> None:
        """Another gateway instance (or the store) changed a review: when this instance holds
        its statement and the review is decided, and (for an approval) the decision's record is
        durable, release the statement."""
        if review_id not in self._held:
            return
        try:
            review = self._store.get_review(review_id)
        except HoopgwError:
            log.failure("cannot read review {review}", review=review_id)
            return
        if review is None or review.status == "pending":
            return
        if review.status == "approved":
            if review.decision_recorded_at is None:
                return  # its record is not durable yet: wait for the next change
            verdict: Verdict = Allow(
                reason=f"approved by {review.decided_by} in review {review_id}"
            )
        elif review.status == "denied":
            verdict = Block(
                reason=f"denied by {review.decided_by} in review {review_id}:"
                f" {review.decision_reason}"
            )
        else:
            verdict = Block(reason=f"review {review_id} {review.status}: {review.decision_reason}")
        self._digests.pop(review_id, None)
        self._release(review_id, verdict)

    def _look_at_held(self) -> None:
        """The fallback when no change notice comes: look at every held review."""
        for review_id in list(self._held):
            self.review_changed(review_id)

    def _abort(self, review: ReviewRecord, why: str) -> defer.Deferred[Any]:
        aborted = attrs.evolve(
            review, status="aborted", decided_at=self._now(), decision_reason=why
        )
        if not self._store.replace_review(aborted, expected_status="pending"):
            return defer.succeed(None)
        self._digests.pop(aborted.id, None)
        self._cancel_request_timer(aborted.id)
        written = self._record("review_decided", aborted, status="aborted", reason=why)
        self._release(aborted.id, Block(reason=f"review {aborted.id} aborted: {why}"))
        self._notify(aborted, "aborted")
        return written

    # -- statement reviews ---------------------------------------------------------------------

    def hold(
        self, session: SessionInfo, command: Command, hold: Hold, policy: ReviewPolicy
    ) -> defer.Deferred[Verdict]:
        """Review a held statement; the Deferred fires with ``Allow`` or ``Block``.

        An approval given after an earlier hold of the identical statement timed out is used
        instead (once). Cancelling the Deferred withdraws the review. A command that only
        prepares its statement is allowed without a review: its executions are held.

        The review keeps the statement and its parameter values as the audit store may keep
        them (:attr:`~hoopgw.session.Command.recorded_text` and
        :attr:`~hoopgw.session.Command.recorded_parameters`: masked, when masking is on);
        whether a re-run is the *identical* work is decided on a digest of the real text and
        the real parameter values, formats and types, kept in memory only (after a restart, a
        re-run needs a new review).
        """
        if self._stopping:
            return defer.succeed(Block(reason="the gateway is stopping; refused"))
        if command.prepared_only:
            # Nothing runs yet, and no values are known: each execution is held with its own.
            return defer.succeed(
                Allow(reason="only prepared: each execution is reviewed with its parameter values")
            )
        now = self._now()
        identity, connection = session.identity, session.connection.name
        shown = _shown(command)
        parameters = _shown_parameters(command)
        digest = self._digest(command)
        try:
            earlier = self._store.find_rerun_approvals(
                requester=identity.name,
                connection=connection,
                statement=shown,
                parameters=parameters,
                now=now,
            )
            for approved in earlier:
                if hmac.compare_digest(self._digests.get(approved.id, ""), digest):
                    return self._rerun(approved, session, command)
        except HoopgwError:
            log.failure("cannot look up earlier approvals")
            return defer.succeed(Block(reason="cannot read the review store; refused"))
        approvers = hold.approvers or policy.approvers or self.roles.get("approver", ())
        if not approvers:
            return defer.succeed(
                Block(reason=f"needs approval ({hold.reason}), but no approver group is set")
            )
        timeout = min(policy.timeout or self._approval_timeout, self._approval_timeout)
        review = ReviewRecord(
            id=_new_id(),
            kind="statement",
            status="pending",
            requester=identity.name,
            requester_groups=tuple(sorted(identity.groups)),
            connection=connection,
            reason=hold.reason,
            approvers=tuple(sorted(set(approvers))),
            required=policy.required,
            created_at=now,
            session_id=session.id,
            command_seq=command.seq,
            statement=shown,
            parameters=parameters,
            hold_until=now + timeout,
            valid_for=policy.valid_for,
            instance=self._instance,
        )
        try:
            self._store.add_review(review)
        except HoopgwError:
            log.failure("cannot store a review")
            return defer.succeed(Block(reason="cannot record the review; refused"))
        self._digests[review.id] = digest
        decision: defer.Deferred[Verdict] = defer.Deferred(lambda _: self._withdrawn(review.id))
        timer = self._reactor.callLater(timeout, self._timed_out, review.id)
        self._held[review.id] = _Held(decision=decision, timer=timer)
        written = self._record(
            "review_requested",
            review,
            reason=hold.reason,
            statement=shown,
            parameters=list(parameters),
        )

        def unrecorded(failure: Failure) -> None:
            log.failure("review {review} could not be recorded", failure, review=review.id)
            self._release(review.id, Block(reason="cannot record the review; refused"))
            self._drop_unrecorded(review)

        written.addErrback(unrecorded)
        self._notify(review, "requested")
        self._sessions.statement_held(
            session.id,
            HeldStatement(
                review_id=review.id,
                command_seq=command.seq,
                approvers=review.approvers,
                hold_until=now + timeout,
                reason=hold.reason,
                rule=hold.rule,
                plugin=hold.plugin,
            ),
        )

        def released(result: Any) -> Any:
            self._sessions.statement_released(session.id, review.id)
            return result

        decision.addBoth(released)
        log.info(
            "review {review}: {who} on {connection} held: {reason}",
            review=review.id,
            who=identity.name,
            connection=connection,
            reason=hold.reason,
        )
        return decision

    def _rerun(
        self, review: ReviewRecord, session: SessionInfo, command: Command
    ) -> defer.Deferred[Verdict]:
        self._digests.pop(review.id, None)
        used = attrs.evolve(review, used_at=self._now())
        if not self._store.replace_review(used, expected_status="approved"):
            return defer.succeed(Block(reason=f"review {review.id} changed; refused"))
        written = self._record(
            "review_rerun",
            used,
            session=session.id,
            seq=command.seq,
            statement=_shown(command),
            parameters=list(_shown_parameters(command)),
        )
        allow = Allow(reason=f"approved in review {review.id} (re-run after the hold timed out)")
        return written.addCallbacks(
            lambda _: allow,
            lambda _: Block(reason="cannot record the re-run; refused"),
        )

    def _timed_out(self, review_id: str) -> None:
        held = self._held.pop(review_id, None)
        if held is None:
            return
        window = "a while"
        try:
            self._hold_ended(review_id)
            review = self._store.get_review(review_id)
            if review is not None:
                window = _duration(review.valid_for)
        except HoopgwError:
            log.failure("cannot record that review {review} timed out", review=review_id)
        held.decision.callback(
            Block(
                reason=(
                    f"review {review_id} was not decided in time; if it is approved, the"
                    " identical statement with the same parameter values may be run once"
                    f" within {window} of the approval"
                ),
                rule=REVIEW_TIMEOUT_RULE,
            )
        )

    def _hold_ended(self, review_id: str) -> None:
        review = self._store.get_review(review_id)
        if review is None or review.status != "pending":
            return
        timed_out = attrs.evolve(review, timed_out_at=self._now())
        if self._store.replace_review(timed_out, expected_status="pending"):
            self._record("review_timed_out", timed_out)
            self._notify(timed_out, "timed_out")

    def _withdrawn(self, review_id: str) -> None:
        # Called by Deferred.cancel() from the protocol: it must not raise.
        try:
            self._withdraw(review_id)
        except HoopgwError:
            log.failure("cannot record that review {review} was withdrawn", review=review_id)

    def _withdraw(self, review_id: str) -> None:
        held = self._held.pop(review_id, None)
        if held is None or self._stopping:
            return
        if held.timer.active():
            held.timer.cancel()
        review = self._store.get_review(review_id)
        if review is None or review.status != "pending":
            return
        if review.hold_until is not None and self._now() >= review.hold_until - 0.01:
            # The core's own approval timeout cancelled the hold: it timed out.
            self._hold_ended(review_id)
            return
        self._digests.pop(review_id, None)
        why = "the client cancelled or disconnected"
        withdrawn = attrs.evolve(
            review, status="withdrawn", decided_at=self._now(), decision_reason=why
        )
        if self._store.replace_review(withdrawn, expected_status="pending"):
            self._record("review_decided", withdrawn, status="withdrawn", reason=why)
            self._notify(withdrawn, "withdrawn")

    def _release(self, review_id: str, verdict: Verdict) -> None:
        held = self._held.pop(review_id, None)
        if held is None:
            return
        if held.timer.active():
            held.timer.cancel()
        held.decision.callback(verdict)

    # -- access requests and grants ------------------------------------------------------------

    def request_access(
        self, identity: Identity, *, connection: str, duration: float, reason: str
    ) -> defer.Deferred[ReviewRecord]:
        """Ask for ``duration`` seconds of access to a ``jit`` connection.

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
                f"duration must be more than 0 and at most {_duration(config.jit_max_duration)}"
                f" (jit_max_duration of {connection!r})",
            )
        if not reason.strip():
            raise ApprovalError("invalid", "a reason is required")
        review = ReviewRecord(
            id=_new_id(),
            kind="access",
            status="pending",
            requester=identity.name,
            requester_groups=tuple(sorted(identity.groups)),
            connection=connection,
            reason=reason,
            approvers=tuple(sorted(set(config.jit_approvers))),
            required=1,
            created_at=self._now(),
            duration=float(duration),
            instance=self._instance,
        )
        self._store.add_review(review)
        self._request_timers[review.id] = self._reactor.callLater(
            config.jit_request_ttl, self._request_expired, review.id, config.jit_request_ttl
        )
        self._notify(review, "requested")
        written = self._record("review_requested", review, reason=reason, duration=duration)

        def unrecorded(failure: Failure) -> Failure:
            self._drop_unrecorded(review)
            return failure

        return written.addCallbacks(lambda _: review, unrecorded)

    def _cancel_request_timer(self, review_id: str) -> None:
        timer = self._request_timers.pop(review_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _request_expired(self, review_id: str, ttl: float) -> None:
        """The access request was not decided in time: it ends ``expired``."""
        self._request_timers.pop(review_id, None)
        why = f"not decided within {_duration(ttl)} (jit_request_ttl)"
        try:
            review = self._store.get_review(review_id)
            if review is None or review.status != "pending":
                return
            expired = attrs.evolve(
                review, status="expired", decided_at=self._now(), decision_reason=why
            )
            if not self._store.replace_review(expired, expected_status="pending"):
                return
        except HoopgwError:
            log.failure("cannot expire access request {review}", review=review_id)
            return
        self._record(
            "review_decided", expired, status="expired", by="gateway", reason=why
        ).addErrback(lambda f: log.failure("cannot record an expired review", f))
        self._notify(expired, "expired")
        log.info("review {review} expired: {why}", review=review_id, why=why)

    def _drop_unrecorded(self, review: ReviewRecord) -> None:
        """A review whose request could not be recorded never becomes decidable: it ends
        ``aborted`` (fail closed: no approval, grant or re-run can follow an unaudited request)."""
        self._digests.pop(review.id, None)
        try:
            aborted = self._abort(review, "the request could not be recorded")
        except HoopgwError:
            log.failure("cannot abort the unrecorded review {review}", review=review.id)
            return
        aborted.addErrback(lambda f: log.failure("cannot record an aborted review", f))

    def active_grant(self, identity: str, connection: str) -> GrantRecord | None:
        """The live grant that admits ``identity`` to ``connection``, if any."""
        found = self._store.list_grants(
            identity=identity, connection=connection, active_at=self._now(), limit=1
        )
        return found[0] if found else None

    def revoke(self, grant_id: str, by: Identity, reason: str) -> defer.Deferred[GrantRecord]:
        """Revoke a grant now and end its sessions.

        Allowed to admins, to members of the connection's ``jit_approvers``, and to the grantee.

        :raises ApprovalError: unknown grant, not allowed, or no longer active.
        """
        grant = self._store.get_grant(grant_id)
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
        self._store.replace_grant(revoked)
        timer = self._grant_timers.pop(grant_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        ended = attrs.evolve(revoked, ended_at=now)
        return self._end_grant(revoked, "revoked").addCallback(lambda _: ended)

    def _new_grant(self, review: ReviewRecord, approved_by: tuple[str, ...]) -> GrantRecord:
        now = self._now()
        return GrantRecord(
            id=_new_id(),
            review_id=review.id,
            identity=review.requester,
            connection=review.connection,
            reason=review.reason,
            approved_by=approved_by,
            created_at=now,
            expires_at=now + (review.duration or 0.0),
        )

    def _schedule_expiry(self, grant: GrantRecord) -> None:
        delay = max(grant.expires_at - self._now(), 0.0)
        self._grant_timers[grant.id] = self._reactor.callLater(delay, self._expired, grant.id)

    def _expired(self, grant_id: str) -> None:
        self._grant_timers.pop(grant_id, None)
        grant = self._store.get_grant(grant_id)
        if grant is None or grant.ended_at is not None or grant.revoked_at is not None:
            return
        self._end_grant(grant, "expired")

    def _end_grant(self, grant: GrantRecord, how: str) -> defer.Deferred[Any]:
        """Mark the grant ended, end the sessions it admitted, and record it."""
        ended_grant = attrs.evolve(grant, ended_at=self._now())
        try:
            self._store.replace_grant(ended_grant)
            other = self.active_grant(grant.identity, grant.connection)
        except HoopgwError:
            # Fail closed: the sessions end even when the store cannot say so.
            log.failure("cannot record the end of grant {grant}", grant=grant.id)
            other = None
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

    def _end_sessions_without_grant(self) -> None:
        """End every session on a ``jit`` connection whose identity holds no live grant.

        A grant's end ends the sessions registered then; this catches one that a protocol
        registered later (admitted under the grant, then still logging in upstream when the
        grant ended), so that none outlives its grant by more than
        :data:`GRANT_SWEEP_INTERVAL`.
        """
        for live in list(self._sessions):
            identity = live.identity
            config = self.connections.get(live.runtime.config.name)
            if identity is None or config is None or config.access != "jit":
                continue
            try:
                granted = self.active_grant(identity.name, config.name) is not None
            except HoopgwError:
                log.failure("cannot look up the grants of {who}", who=identity.name)
                continue
            if granted:
                continue
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

    # -- deciding ------------------------------------------------------------------------------

    def visible(self, review: ReviewRecord, identity: Identity) -> bool:
        """Whether ``identity`` may see ``review``: its requester, the members of its approver
        groups, auditors and admins. The ``approver`` role alone shows nothing more: an
        approver of one connection has no business with another connection's statements."""
        return (
            review.requester == identity.name
            or bool(identity.groups & set(review.approvers))
            or bool(roles_of(identity, self.roles) & _SEE_ALL)
        )

    def votes(self, review_id: str) -> list[ReviewVote]:
        """The answers given so far."""
        return self._store.list_votes(review_id)

    def get(self, review_id: str, identity: Identity) -> ReviewRecord:
        """The review, if ``identity`` may see it. :raises ApprovalError: ``not_found``."""
        review = self._store.get_review(review_id)
        if review is None or not self.visible(review, identity):
            raise ApprovalError("not_found", f"no review {review_id!r}")
        return review

    def list_reviews(
        self, identity: Identity, *, status: str | None, limit: int
    ) -> list[ReviewRecord]:
        """The reviews ``identity`` may see, newest first (the store filters, so that older
        visible reviews are not lost behind newer hidden ones)."""
        if roles_of(identity, self.roles) & _SEE_ALL:
            return self._store.list_reviews(status=status, limit=limit)
        return self._store.list_reviews(
            status=status, visible_to=(identity.name, frozenset(identity.groups)), limit=limit
        )

    def list_grants(self, identity: Identity, *, active: bool, limit: int) -> list[GrantRecord]:
        """Grants ``identity`` may see: its own, those on connections whose ``jit_approvers``
        it belongs to, and every grant for auditors and admins."""
        active_at = self._now() if active else None
        if roles_of(identity, self.roles) & _SEE_ALL:
            return self._store.list_grants(active_at=active_at, limit=limit)
        approves = frozenset(
            name
            for name, config in self.connections.items()
            if identity.groups & set(config.jit_approvers)
        )
        visible_to = (identity.name, approves)
        return self._store.list_grants(active_at=active_at, visible_to=visible_to, limit=limit)

    def decision_refused(
        self, review: ReviewRecord, identity: Identity, votes: list[ReviewVote]
    ) -> ApprovalError | None:
        """Why ``identity`` may not answer ``review`` now (given its ``votes`` so far), or
        None when it may: the one test :meth:`decide` applies, which the console also uses to
        show the approve and deny buttons only to those who may press them."""
        if review.status != "pending":
            return ApprovalError("conflict", f"review {review.id} is {review.status}")
        if identity.name == review.requester:
            return ApprovalError("forbidden", "nobody may decide their own request")
        if not identity.groups & set(review.approvers):
            return ApprovalError(
                "forbidden",
                f"only members of {', '.join(review.approvers)} may decide review {review.id}",
            )
        if any(v.identity == identity.name for v in votes):
            return ApprovalError(
                "conflict", f"identity {identity.name!r} has answered review {review.id} already"
            )
        return None

    def decide(
        self, review_id: str, identity: Identity, *, approve: bool, reason: str
    ) -> defer.Deferred[ReviewRecord]:
        """Record ``identity``'s answer and apply it once it is durable.

        :raises ApprovalError: unknown review, not pending, own request, not an approver,
            answered already, or a denial without a reason.
        """
        review = self.get(review_id, identity)
        votes = self._store.list_votes(review_id)
        refused = self.decision_refused(review, identity, votes)
        if refused is not None:
            raise refused
        if not approve and not reason.strip():
            raise ApprovalError("invalid", "a denial needs a reason")
        now = self._now()
        vote = ReviewVote(
            review_id=review_id,
            identity=identity.name,
            approve=approve,
            reason=reason,
            decided_at=now,
        )
        self._store.add_vote(vote)
        approvals = tuple(v.identity for v in [*votes, vote] if v.approve)
        if approve and len(approvals) < review.required:
            written = self._record(
                "review_voted", review, by=identity.name, approve=True, reason=reason
            )
            self._notify(review, "voted")
            return written.addCallback(lambda _: review)
        if approve:
            decided = attrs.evolve(
                review,
                status="approved",
                decided_at=now,
                decided_by=",".join(approvals),
                decision_reason=reason,
                # A re-run window opens only for a hold that timed out; a hold another instance
                # keeps (or one whose time-out could not be stored) gets none: it runs once.
                valid_until=now + review.valid_for
                if review.kind == "statement"
                and review.id not in self._held
                and review.timed_out_at is not None
                else None,
            )
        else:
            decided = attrs.evolve(
                review,
                status="denied",
                decided_at=now,
                decided_by=identity.name,
                decision_reason=reason,
            )
        grant = None
        if decided.status == "approved" and decided.kind == "access":
            # Stored (and so admitting sessions) only once its records are durable.
            grant = self._new_grant(decided, approvals)
            decided = attrs.evolve(decided, grant_id=grant.id)
        if not self._store.replace_review(decided, expected_status="pending"):
            raise ApprovalError("conflict", f"review {review_id} was decided meanwhile")
        self._cancel_request_timer(review_id)
        written = self._record(
            "review_decided",
            decided,
            status=decided.status,
            by=decided.decided_by,
            reason=reason,
            grant=decided.grant_id,
        )
        if grant is not None:
            written.addCallback(
                lambda _: self._write(
                    AuditEntry(
                        kind="grant_created",
                        session_id="",
                        time=now,
                        data={
                            "grant": grant.id,
                            "review": decided.id,
                            "identity": grant.identity,
                            "connection": grant.connection,
                            "approved_by": list(grant.approved_by),
                            "reason": grant.reason,
                            "expires_at": grant.expires_at,
                        },
                    )
                )
            )
        if decided.status == "approved":
            verdict: Verdict = Allow(
                reason=f"approved by {decided.decided_by} in review {review_id}"
            )
        else:
            verdict = Block(reason=f"denied by {identity.name} in review {review_id}: {reason}")

        if decided.status == "denied" or review_id in self._held:
            self._digests.pop(review_id, None)  # no re-run can follow

        def durable(_: Any) -> ReviewRecord:
            if grant is not None:
                self._store.add_grant(grant)
                self._schedule_expiry(grant)
            # Tells the instance that holds the statement (another one, maybe) that it may go.
            recorded = attrs.evolve(decided, decision_recorded_at=self._now())
            self._store.replace_review(recorded, expected_status=decided.status)
            self._release(review_id, verdict)
            return recorded

        def unrecorded(failure: Failure) -> Failure:
            # Fail closed: an approval without its record allows nothing, not even a re-run.
            self._digests.pop(review_id, None)
            self._release(review_id, Block(reason="cannot record the decision; refused"))
            return failure

        self._notify(decided, decided.status)
        log.info(
            "review {review} {status} by {who}",
            review=review_id,
            status=decided.status,
            who=decided.decided_by,
        )
        return written.addCallbacks(durable, unrecorded)

    # -- helpers -------------------------------------------------------------------------------

    def _digest(self, command: Command) -> str:
        """What an approval binds to: the real text and every parameter's value, format and
        type (never what reviewers see, which masking may make alike for different values).
        Keyed, so that the digest of a short secret in a statement cannot be guessed."""
        work = [
            command.text,
            [
                [p.format, p.type, None if p.value is None else p.value.hex()]
                for p in command.parameters
            ],
        ]
        encoded = json.dumps(work, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        return hmac.new(self._digest_key, encoded, hashlib.sha256).hexdigest()

    def _now(self) -> float:
        return float(self._reactor.seconds())

    def _record(self, kind: str, review: ReviewRecord, **details: Any) -> defer.Deferred[Any]:
        data = {
            "review": review.id,
            "review_kind": review.kind,
            "requester": review.requester,
            "connection": review.connection,
            "approvers": list(review.approvers),
            **details,
        }
        if review.kind == "statement":
            data.setdefault("seq", review.command_seq)
        if review.kind == "access":
            data.setdefault("duration", review.duration)
        return self._write(
            AuditEntry(kind=kind, session_id=review.session_id, time=self._now(), data=data)
        )

    def _write(self, entry: AuditEntry) -> defer.Deferred[Any]:
        return self._audit.write(entry)

    def _notify(self, review: ReviewRecord, event: str) -> None:
        notify = self._notifiers.get(review.connection)
        if notify is None:
            return
        try:
            notify(review, event)
        except Exception:
            log.failure("notification of review {review} failed", review=review.id)


_SEE_ALL = frozenset({"auditor", "admin"})
"""Roles that see every review and grant."""


def _shown(command: Command) -> str:
    return command.text if command.recorded_text is None else command.recorded_text


def _shown_parameters(command: Command) -> tuple[str | None, ...]:
    """The parameter values as a review keeps them (masked when masking is on)."""
    if command.recorded_parameters is not None:
        return command.recorded_parameters
    return tuple(p.shown for p in command.parameters)


def _all(writes: list[defer.Deferred[Any]]) -> defer.Deferred[None]:
    gathered = defer.gatherResults(writes, consumeErrors=True)
    return gathered.addCallback(lambda _: None)
