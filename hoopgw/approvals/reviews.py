"""Reviews: a human decides before risky work runs.

One :class:`ReviewService` per gateway keeps every review in the store and applies the rules:

- a held statement becomes a ``statement`` review; the session waits on a Deferred that fires
  when the review is decided (:meth:`ReviewService.hold`), times out, or is withdrawn by the
  client (cancel or disconnect cancels the Deferred);
- an access request becomes an ``access`` review; its approval creates a grant (see
  :mod:`hoopgw.approvals.grants`, which also ends a request nobody decides in time);
- nobody decides their own request; only members of the review's approver groups decide; a
  review needs ``required`` distinct approvals and one denial ends it;
- an approval covers the statement's text and its bind parameter values (with their formats
  and types): the same text with other values is other work and needs its own review;
- a hold that times out leaves the review open: a later approval lets the same identity run the
  identical statement, with identical parameter values, on the same connection once, within
  ``valid_for`` seconds;
- at start and stop every pending review ends ``aborted``: nothing waits across a restart.

Every request, answer and decision is an audit record, written through the gateway's
:class:`~hoopgw.audit.writer.AuditWriter`; a decision takes effect only once its record is
durable. The store is used from the reactor thread (its calls are short, indexed, local).
"""

from __future__ import annotations

import hmac
import secrets
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
    decision_refused,
    duration_text,
    gather,
    may_see,
    new_id,
    review_entry,
    roles_of,
    shown_parameters,
    shown_text,
    statement_digest,
)
from hoopgw.approvals.grants import GrantService
from hoopgw.errors import REVIEW_TIMEOUT_RULE, HeldStatement, HoopgwError
from hoopgw.reviews import ReviewPolicy, ReviewRecord, ReviewVote
from hoopgw.session import Command, Identity, SessionInfo
from hoopgw.verdicts import Allow, Block, Hold, Verdict

if TYPE_CHECKING:
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.store import Store

__all__ = ["ReviewService"]

log = Logger(namespace="hoopgw.approvals")


@attrs.define
class _Held:
    """A statement waiting for its review."""

    decision: defer.Deferred[Verdict]
    timer: Any


class ReviewService:
    """Every review of one gateway, and the rules for deciding them."""

    def __init__(
        self,
        *,
        store: Store,
        audit: AuditWriter,
        reactor: Any,
        grants: GrantService,
        roles: Mapping[str, tuple[str, ...]],
        sessions: SessionRegistry,
        approval_timeout: float,
        instance: str = "",
        poll_interval: float | None = None,
    ) -> None:
        """
        :param grants: the gateway's grants, which an approved access request creates (the
            service starts and stops them with itself).
        :param roles: the ``[roles]`` table.
        :param sessions: live sessions, told which statement is held.
        :param approval_timeout: ``[gateway] approval_timeout``, the longest hold.
        :param instance: this gateway's instance id in a shared store (``""`` alone).
        :param poll_interval: with a store other instances decide in, seconds between looks
            at the reviews this instance holds (:meth:`review_changed` answers sooner when the
            store says so); None for a store no other gateway uses.
        """
        self._store = store
        self._audit = audit
        self._reactor = reactor
        self.grants = grants
        grants.notify = self._notify
        self.roles = roles
        self._sessions = sessions
        self._approval_timeout = approval_timeout
        self._held: dict[str, _Held] = {}
        self._digests: dict[str, str] = {}
        self._digest_key = secrets.token_bytes(32)
        self._notifiers: dict[str, Notifier] = {}
        self._stopping = False
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
        writes = [self.abort_pending("the gateway restarted"), self.grants.start()]
        if self._poll_interval is not None and not self._poll.running:
            self._poll.start(self._poll_interval, now=False).addErrback(
                lambda f: log.failure("the look at held reviews stopped", f)
            )
        return gather(writes)

    def stop(self) -> defer.Deferred[None]:
        """End every pending review as ``aborted`` (waiting clients get an error) and stop the
        grant timers; call before sessions are ended."""
        self._stopping = True
        self.grants.stop()
        if self._poll.running:
            self._poll.stop()
        return self.abort_pending("the gateway is stopping")

    def abort_pending(self, why: str, connection: str | None = None) -> defer.Deferred[None]:
        """Abort this instance's pending reviews (clients get ``why``): all, or the statement
        reviews of ``connection`` (a reload replaced the policy that held them)."""
        pending = self._pending()
        if connection is not None:
            pending = [r for r in pending if r.kind == "statement" and r.connection == connection]
        return gather([self._abort(review, why) for review in pending])

    def _pending(self) -> list[ReviewRecord]:
        """This instance's pending reviews (other instances sharing the store keep theirs)."""
        found = self._store.list_reviews(status="pending", limit=1_000_000)
        return [review for review in found if review.instance == self._instance]

    def review_changed(self, review_id: str) -> defer.Deferred[None]:
        """Another gateway instance (or the store) changed a review: when this instance holds
        its statement and the review is decided, and (for an approval) the decision's record is
        durable, release the statement. The review is read with the grants' store calls (off
        the reactor thread with a PostgreSQL store); one that cannot be read waits for the next
        look."""
        if review_id not in self._held:
            return defer.succeed(None)
        read = self.grants.calls.call(self._store.get_review, review_id)
        return read.addCallbacks(
            self._review_read,
            lambda f: log.failure("cannot read review {review}", f, review=review_id),
            callbackArgs=(review_id,),
        )

    def _review_read(self, review: ReviewRecord | None, review_id: str) -> None:
        if review is None or review.status == "pending" or review_id not in self._held:
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

    def _look_at_held(self) -> defer.Deferred[Any]:
        """The fallback when no change notice comes: look at every held review (the next look
        waits until this one's reads are answered)."""
        return gather([self.review_changed(review_id) for review_id in list(self._held)])

    def _abort(self, review: ReviewRecord, why: str) -> defer.Deferred[Any]:
        aborted = attrs.evolve(
            review, status="aborted", decided_at=self._now(), decision_reason=why
        )
        if not self._store.replace_review(aborted, expected_status="pending"):
            return defer.succeed(None)
        self._digests.pop(aborted.id, None)
        self.grants.cancel_request_timer(aborted.id)
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
        shown = shown_text(command)
        parameters = shown_parameters(command)
        digest = statement_digest(self._digest_key, command)
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
            id=new_id(),
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
            statement=shown_text(command),
            parameters=list(shown_parameters(command)),
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
                window = duration_text(review.valid_for)
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
        """Ask for ``duration`` seconds of access to a ``jit`` connection: an ``access`` review,
        which ends ``expired`` when nobody decides it within ``jit_request_ttl``.

        :raises ApprovalError: see :meth:`GrantService.access_request`.
        """
        review = self.grants.access_request(
            identity,
            connection=connection,
            duration=duration,
            reason=reason,
            now=self._now(),
            instance=self._instance,
        )
        self._store.add_review(review)
        self.grants.expire_later(review)
        self._notify(review, "requested")
        written = self._record("review_requested", review, reason=reason, duration=duration)

        def unrecorded(failure: Failure) -> Failure:
            self._drop_unrecorded(review)
            return failure

        return written.addCallbacks(lambda _: review, unrecorded)

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

    # -- deciding ------------------------------------------------------------------------------

    def votes(self, review_id: str) -> list[ReviewVote]:
        """The answers given so far."""
        return self._store.list_votes(review_id)

    def get(self, review_id: str, identity: Identity) -> ReviewRecord:
        """The review, if ``identity`` may see it. :raises ApprovalError: ``not_found``."""
        review = self._store.get_review(review_id)
        if review is None or not may_see(review, identity, self.roles):
            raise ApprovalError("not_found", f"no review {review_id!r}")
        return review

    def list_reviews(
        self, identity: Identity, *, status: str | None, limit: int
    ) -> list[ReviewRecord]:
        """The reviews ``identity`` may see, newest first (the store filters, so that older
        visible reviews are not lost behind newer hidden ones)."""
        if roles_of(identity, self.roles) & SEE_ALL:
            return self._store.list_reviews(status=status, limit=limit)
        return self._store.list_reviews(
            status=status, visible_to=(identity.name, frozenset(identity.groups)), limit=limit
        )

    def decide(
        self, review_id: str, identity: Identity, *, approve: bool, reason: str
    ) -> defer.Deferred[ReviewRecord]:
        """Record ``identity``'s answer and apply it once it is durable.

        :raises ApprovalError: unknown review, not pending, own request, not an approver,
            answered already, or a denial without a reason.
        """
        review = self.get(review_id, identity)
        votes = self._store.list_votes(review_id)
        refused = decision_refused(review, identity, votes)
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
            grant = self.grants.new_grant(decided, approvals)
            decided = attrs.evolve(decided, grant_id=grant.id)
        if not self._store.replace_review(decided, expected_status="pending"):
            raise ApprovalError("conflict", f"review {review_id} was decided meanwhile")
        self.grants.cancel_request_timer(review_id)
        written = self._record(
            "review_decided",
            decided,
            status=decided.status,
            by=decided.decided_by,
            reason=reason,
            grant=decided.grant_id,
        )
        if grant is not None:
            written.addCallback(lambda _: self.grants.record_created(grant))
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
                self.grants.admit(grant)
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

    def _now(self) -> float:
        return float(self._reactor.seconds())

    def _record(self, kind: str, review: ReviewRecord, **details: Any) -> defer.Deferred[Any]:
        return self._audit.write(review_entry(kind, review, self._now(), **details))

    def _notify(self, review: ReviewRecord, event: str) -> None:
        notify = self._notifiers.get(review.connection)
        if notify is None:
            return
        try:
            notify(review, event)
        except Exception:
            log.failure("notification of review {review} failed", review=review.id)
