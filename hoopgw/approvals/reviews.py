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
durable. Holding a statement and deciding run their store calls through the grants'
:class:`~hoopgw.store.calls.StoreCalls` (off the reactor thread with a PostgreSQL store; see
:mod:`hoopgw.approvals.holds` for a client that leaves while its review is being stored); a
store error refuses the command or the decision.
"""

from __future__ import annotations

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
    gather,
    may_see,
    roles_of,
)
from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.holds import StatementHolds, _Held
from hoopgw.reviews import GrantRecord, ReviewRecord, ReviewVote
from hoopgw.session import Identity
from hoopgw.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.store import Store

__all__ = ["ReviewService"]

log = Logger(namespace="hoopgw.approvals")


class ReviewService(StatementHolds):
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
        self.calls = grants.calls
        """Runs the reviews' store calls: the grants' (see :mod:`hoopgw.store.calls`)."""
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

    def _look_at_held(self) -> defer.Deferred[Any]:
        """The fallback when no change notice comes: look at every held review (the next look
        waits until this one's reads are answered)."""
        return gather([self.review_changed(review_id) for review_id in list(self._held)])

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

        def unrecorded(failure: Failure) -> Failure:
            self._drop_unrecorded(review)
            return failure

        def stored(_: Any) -> defer.Deferred[ReviewRecord]:
            self.grants.expire_later(review)
            self._notify(review, "requested")
            written = self._record("review_requested", review, reason=reason, duration=duration)
            return written.addCallbacks(lambda _: review, unrecorded)

        return self.calls.call(self._store.add_review, review).addCallback(stored)

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
        """Record ``identity``'s answer and apply it once it is durable. The Deferred fails
        with :class:`ApprovalError` for an unknown review, one not pending, one's own request,
        a non-approver, an answer given already, or a denial without a reason; with the store's
        error when the store fails (nothing is decided then)."""
        now = self._now()
        voted = self.calls.call(self._vote, review_id, identity, approve, reason, now)
        return voted.addCallback(self._voted, identity, approve, reason, now)

    def _vote(
        self, review_id: str, identity: Identity, approve: bool, reason: str, now: float
    ) -> tuple[ReviewRecord, list[ReviewVote]]:
        """On a store thread: check and store the answer; return the review and every answer
        stored so far (read again, so that answers given at once all count)."""
        review = self._store.get_review(review_id)
        if review is None or not may_see(review, identity, self.roles):
            raise ApprovalError("not_found", f"no review {review_id!r}")
        refused = decision_refused(review, identity, self._store.list_votes(review_id))
        if refused is not None:
            raise refused
        if not approve and not reason.strip():
            raise ApprovalError("invalid", "a denial needs a reason")
        vote = ReviewVote(
            review_id=review_id,
            identity=identity.name,
            approve=approve,
            reason=reason,
            decided_at=now,
        )
        self._store.add_vote(vote)
        return review, self._store.list_votes(review_id)

    def _voted(
        self,
        voted: tuple[ReviewRecord, list[ReviewVote]],
        identity: Identity,
        approve: bool,
        reason: str,
        now: float,
    ) -> defer.Deferred[ReviewRecord]:
        review, votes = voted
        approvals = tuple(dict.fromkeys(v.identity for v in votes if v.approve))
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
        replaced = self.calls.call(self._store.replace_review, decided, expected_status="pending")
        return replaced.addCallback(self._decided, decided, grant, reason)

    def _decided(
        self, changed: bool, decided: ReviewRecord, grant: GrantRecord | None, reason: str
    ) -> defer.Deferred[ReviewRecord]:
        review_id = decided.id
        if not changed:
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
            verdict = Block(
                reason=f"denied by {decided.decided_by} in review {review_id}: {reason}"
            )

        if decided.status == "denied" or review_id in self._held:
            self._digests.pop(review_id, None)  # no re-run can follow

        def durable(_: Any) -> defer.Deferred[ReviewRecord]:
            admitted = defer.succeed(None) if grant is None else self.grants.admit(grant)
            # Tells the instance that holds the statement (another one, maybe) that it may go.
            recorded = attrs.evolve(decided, decision_recorded_at=self._now())
            stored = admitted.addCallback(
                lambda _: self.calls.call(
                    self._store.replace_review, recorded, expected_status=decided.status
                )
            )
            # Fail closed: a decision the holding instance cannot see releases nothing here.
            stored.addCallbacks(lambda _: self._release(review_id, verdict), unrecorded)
            return stored.addCallback(lambda _: recorded)

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
