"""Held statements: a session waits while its statement's review is decided.

:class:`StatementHolds` is the part of :class:`~hoopgw.approvals.reviews.ReviewService` that
holds statements: it opens a statement review, lets an earlier approval be used once for the
identical re-run, times a hold out, withdraws it when the client goes away, and releases it with
the decision.

Every store call of a hold runs through the service's
:class:`~hoopgw.store.calls.StoreCalls` (off the reactor thread with a PostgreSQL store), so
the answer may come after the client has gone. The rules for that:

- a client that leaves (cancel, disconnect, a killed session or the core's approval timeout
  cancels the hold's Deferred) before its review is stored gets no review left pending: the
  review is withdrawn (or timed out) as soon as it lands, and its digest is never kept, so no
  approval of it can be used by a re-run;
- a store error at any step refuses the command (fail closed): nothing is forwarded.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.approvals.common import (
    duration_text,
    new_id,
    review_entry,
    shown_parameters,
    shown_text,
    statement_digest,
)
from hoopgw.errors import REVIEW_TIMEOUT_RULE, HeldStatement
from hoopgw.reviews import ReviewPolicy, ReviewRecord
from hoopgw.session import Command, SessionInfo
from hoopgw.verdicts import Allow, Block, Hold, Verdict

if TYPE_CHECKING:
    from hoopgw.approvals.common import Notifier
    from hoopgw.approvals.grants import GrantService
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.store import Store
    from hoopgw.store.calls import StoreCalls

__all__ = ["LOOKUP_REFUSED", "RECORD_REFUSED", "STOPPING", "StatementHolds"]

log = Logger(namespace="hoopgw.approvals")

LOOKUP_REFUSED = "cannot read the review store; refused"
"""Why a held statement is refused when the store cannot be read."""

RECORD_REFUSED = "cannot record the review; refused"
"""Why a held statement is refused when its review cannot be stored or recorded."""

STOPPING = "the gateway is stopping; refused"
"""Why a statement held while the gateway stops is refused."""

_WITHDRAWN = "the client cancelled or disconnected"


@attrs.define
class _Held:
    """A statement waiting for its review."""

    decision: defer.Deferred[Verdict]
    timer: Any
    review: ReviewRecord


@attrs.define
class _Opening:
    """A hold whose store calls are under way; ``cancelled`` once its client left."""

    cancelled: bool = False
    review_id: str | None = None


def _end_hold(
    store: Store, review_id: str, now: float, why: str
) -> tuple[str, ReviewRecord] | None:
    """On a store thread: end a pending review whose client left: ``timed_out`` when its hold
    time is over (the core's own timeout cancelled it), ``withdrawn`` otherwise. Returns the
    event and the stored review, or None when it was not pending any more."""
    review = store.get_review(review_id)
    if review is None or review.status != "pending":
        return None
    if review.hold_until is not None and now >= review.hold_until - 0.01:
        ended = attrs.evolve(review, timed_out_at=now)
        event = "timed_out"
    else:
        ended = attrs.evolve(review, status="withdrawn", decided_at=now, decision_reason=why)
        event = "withdrawn"
    if not store.replace_review(ended, expected_status="pending"):
        return None
    return event, ended


def _time_out(store: Store, review_id: str, now: float) -> ReviewRecord | None:
    """On a store thread: mark a pending review's hold as timed out (it stays open)."""
    review = store.get_review(review_id)
    if review is None or review.status != "pending":
        return None
    timed_out = attrs.evolve(review, timed_out_at=now)
    return timed_out if store.replace_review(timed_out, expected_status="pending") else None


class StatementHolds:
    """Holding statements for their reviews (the base of
    :class:`~hoopgw.approvals.reviews.ReviewService`, which sets these attributes)."""

    _store: Store
    calls: StoreCalls
    _audit: AuditWriter
    _reactor: Any
    _sessions: SessionRegistry
    _approval_timeout: float
    _instance: str
    _stopping: bool
    _held: dict[str, _Held]
    _digests: dict[str, str]
    _digest_key: bytes
    _notifiers: dict[str, Notifier]
    roles: Mapping[str, tuple[str, ...]]
    grants: GrantService

    def hold(
        self, session: SessionInfo, command: Command, hold: Hold, policy: ReviewPolicy
    ) -> defer.Deferred[Verdict]:
        """Review a held statement; the Deferred fires with ``Allow`` or ``Block``.

        An approval given after an earlier hold of the identical statement timed out is used
        instead (once). Cancelling the Deferred withdraws the review (also one still being
        stored). A command that only prepares its statement is allowed without a review: its
        executions are held.

        The review keeps the statement and its parameter values as the audit store may keep
        them (:attr:`~hoopgw.session.Command.recorded_text` and
        :attr:`~hoopgw.session.Command.recorded_parameters`: masked, when masking is on);
        whether a re-run is the *identical* work is decided on a digest of the real text and
        the real parameter values, formats and types, kept in memory only (after a restart, a
        re-run needs a new review).
        """
        if self._stopping:
            return defer.succeed(Block(reason=STOPPING))
        if command.prepared_only:
            # Nothing runs yet, and no values are known: each execution is held with its own.
            return defer.succeed(
                Allow(reason="only prepared: each execution is reviewed with its parameter values")
            )
        opening = _Opening()

        def cancelled(_: defer.Deferred[Verdict]) -> None:
            # Called by Deferred.cancel() from the protocol: it must not raise.
            opening.cancelled = True
            if opening.review_id is not None:
                self._withdraw(opening.review_id)

        decision: defer.Deferred[Verdict] = defer.Deferred(cancelled)
        looked = self.calls.call(
            self._store.find_rerun_approvals,
            requester=session.identity.name,
            connection=session.connection.name,
            statement=shown_text(command),
            parameters=shown_parameters(command),
            now=self._now(),
        )

        def refused(failure: Failure) -> None:
            log.failure("cannot look up earlier approvals", failure)
            self._answer(decision, Block(reason=LOOKUP_REFUSED))

        def failed(failure: Failure) -> None:
            # Fail closed on anything unforeseen too: the statement is refused, not left waiting.
            log.failure("cannot hold a statement", failure)
            self._answer(decision, Block(reason=RECORD_REFUSED))

        looked.addCallbacks(
            self._looked_up,
            refused,
            callbackArgs=(session, command, hold, policy, decision, opening),
        ).addErrback(failed)
        return decision

    def _looked_up(
        self,
        earlier: list[ReviewRecord],
        session: SessionInfo,
        command: Command,
        hold: Hold,
        policy: ReviewPolicy,
        decision: defer.Deferred[Verdict],
        opening: _Opening,
    ) -> None:
        if opening.cancelled:
            return  # nobody waits: no review, and no earlier approval used up
        if self._stopping:
            self._answer(decision, Block(reason=STOPPING))
            return
        digest = statement_digest(self._digest_key, command)
        for approved in earlier:
            if hmac.compare_digest(self._digests.get(approved.id, ""), digest):
                self._rerun(approved, session, command).addCallback(
                    lambda verdict: self._answer(decision, verdict)
                )
                return
        approvers = hold.approvers or policy.approvers or self.roles.get("approver", ())
        if not approvers:
            reason = f"needs approval ({hold.reason}), but no approver group is set"
            self._answer(decision, Block(reason=reason))
            return
        now = self._now()
        timeout = min(policy.timeout or self._approval_timeout, self._approval_timeout)
        review = ReviewRecord(
            id=new_id(),
            kind="statement",
            status="pending",
            requester=session.identity.name,
            requester_groups=tuple(sorted(session.identity.groups)),
            connection=session.connection.name,
            reason=hold.reason,
            approvers=tuple(sorted(set(approvers))),
            required=policy.required,
            created_at=now,
            session_id=session.id,
            command_seq=command.seq,
            statement=shown_text(command),
            parameters=shown_parameters(command),
            hold_until=now + timeout,
            valid_for=policy.valid_for,
            instance=self._instance,
        )

        def unstored(failure: Failure) -> None:
            log.failure("cannot store a review", failure)
            self._answer(decision, Block(reason=RECORD_REFUSED))

        stored = self.calls.call(self._store.add_review, review)
        stored.addCallbacks(
            lambda _: self._stored(review, digest, session, hold, timeout, decision, opening),
            unstored,
        ).addErrback(unstored)

    def _stored(
        self,
        review: ReviewRecord,
        digest: str,
        session: SessionInfo,
        hold: Hold,
        timeout: float,
        decision: defer.Deferred[Verdict],
        opening: _Opening,
    ) -> None:
        if self._stopping:
            # Stored while the gateway stops: it ends aborted like the other pending ones.
            self._answer(decision, Block(reason=STOPPING))
            self._abort(review, "the gateway is stopping").addErrback(
                lambda f: log.failure("cannot record an aborted review", f)
            )
            return
        self._digests[review.id] = digest
        if not opening.cancelled:
            timer = self._reactor.callLater(timeout, self._timed_out, review.id)
            self._held[review.id] = _Held(decision=decision, timer=timer, review=review)
            opening.review_id = review.id
        written = self._record(
            "review_requested",
            review,
            reason=hold.reason,
            statement=review.statement,
            parameters=list(review.parameters),
        )

        def unrecorded(failure: Failure) -> None:
            log.failure("review {review} could not be recorded", failure, review=review.id)
            self._release(review.id, Block(reason=RECORD_REFUSED))
            self._drop_unrecorded(review)

        written.addErrback(unrecorded)
        self._notify(review, "requested")
        if opening.cancelled:
            # The client left while the review was being stored: end it now that it is there,
            # so that nobody approves work that nobody waits for.
            self._withdraw_stored(review.id)
            return
        if review.id not in self._held:
            return  # refused already: its request could not be recorded
        self._sessions.statement_held(
            session.id,
            HeldStatement(
                review_id=review.id,
                command_seq=review.command_seq or 0,
                approvers=review.approvers,
                hold_until=review.hold_until or 0.0,
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
            who=review.requester,
            connection=review.connection,
            reason=hold.reason,
        )

    def _rerun(
        self, review: ReviewRecord, session: SessionInfo, command: Command
    ) -> defer.Deferred[Verdict]:
        self._digests.pop(review.id, None)
        used = attrs.evolve(review, used_at=self._now())
        replaced = self.calls.call(self._store.replace_review, used, expected_status="approved")

        def stored(changed: bool) -> defer.Deferred[Verdict] | Verdict:
            if not changed:
                return Block(reason=f"review {review.id} changed; refused")
            written = self._record(
                "review_rerun",
                used,
                session=session.id,
                seq=command.seq,
                statement=shown_text(command),
                parameters=list(shown_parameters(command)),
            )
            allow = Allow(
                reason=f"approved in review {review.id} (re-run after the hold timed out)"
            )
            return written.addCallbacks(
                lambda _: allow,
                lambda _: Block(reason="cannot record the re-run; refused"),
            )

        def unstored(failure: Failure) -> Verdict:
            log.failure("cannot use review {review} for a re-run", failure, review=review.id)
            return Block(reason=LOOKUP_REFUSED)

        return replaced.addCallbacks(stored, unstored)

    def _timed_out(self, review_id: str) -> None:
        held = self._held.pop(review_id, None)
        if held is None:
            return
        window = duration_text(held.review.valid_for)
        timeout = Block(
            reason=(
                f"review {review_id} was not decided in time; if it is approved, the"
                " identical statement with the same parameter values may be run once"
                f" within {window} of the approval"
            ),
            rule=REVIEW_TIMEOUT_RULE,
        )
        marked = self.calls.call(_time_out, self._store, review_id, self._now())

        def stored(timed_out: ReviewRecord | None) -> None:
            if timed_out is not None:
                self._record("review_timed_out", timed_out)
                self._notify(timed_out, "timed_out")

        def unstored(failure: Failure) -> None:
            log.failure("cannot record that review {review} timed out", failure, review=review_id)

        marked.addCallbacks(stored, unstored)
        # The answer waits for the store, so that the time-out is stored (and a later
        # approval opens the re-run window) before the client is told it may re-run.
        marked.addBoth(lambda _: self._answer(held.decision, timeout))

    def _withdraw(self, review_id: str) -> None:
        held = self._held.pop(review_id, None)
        if held is None or self._stopping:
            return
        if held.timer.active():
            held.timer.cancel()
        self._withdraw_stored(review_id)

    def _withdraw_stored(self, review_id: str) -> None:
        """End the stored review of a hold whose client left (see :func:`_end_hold`)."""
        ended = self.calls.call(_end_hold, self._store, review_id, self._now(), _WITHDRAWN)

        def stored(result: tuple[str, ReviewRecord] | None) -> None:
            if result is None:
                self._digests.pop(review_id, None)  # decided meanwhile: nobody runs it
                return
            event, review = result
            if event == "timed_out":
                self._record("review_timed_out", review)
            else:
                self._digests.pop(review_id, None)
                self._record("review_decided", review, status="withdrawn", reason=_WITHDRAWN)
            self._notify(review, event)

        def unstored(failure: Failure) -> None:
            self._digests.pop(review_id, None)  # fail closed: no re-run of it
            log.failure(
                "cannot record that review {review} was withdrawn", failure, review=review_id
            )

        ended.addCallbacks(stored, unstored)

    def _release(self, review_id: str, verdict: Verdict) -> None:
        held = self._held.pop(review_id, None)
        if held is None:
            return
        if held.timer.active():
            held.timer.cancel()
        self._answer(held.decision, verdict)

    @staticmethod
    def _answer(decision: defer.Deferred[Verdict], verdict: Verdict) -> None:
        """Fire ``decision`` unless its client has cancelled it."""
        if not decision.called:
            decision.callback(verdict)

    # -- decisions from other instances --------------------------------------------------------

    def review_changed(self, review_id: str) -> defer.Deferred[None]:
        """Another gateway instance (or the store) changed a review: when this instance holds
        its statement and the review is decided, and (for an approval) the decision's record is
        durable, release the statement. One that cannot be read waits for the next look."""
        if review_id not in self._held:
            return defer.succeed(None)
        read = self.calls.call(self._store.get_review, review_id)
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

    # -- helpers -------------------------------------------------------------------------------

    def _drop_unrecorded(self, review: ReviewRecord) -> None:
        """A review whose request could not be recorded never becomes decidable: it ends
        ``aborted`` (fail closed: no approval, grant or re-run can follow an unaudited request)."""
        self._digests.pop(review.id, None)
        aborted = self._abort(review, "the request could not be recorded")
        aborted.addErrback(
            lambda f: log.failure(
                "cannot abort the unrecorded review {review}", f, review=review.id
            )
        )

    def _abort(self, review: ReviewRecord, why: str) -> defer.Deferred[Any]:
        """End a pending review as ``aborted`` (its waiting client gets an error)."""
        aborted = attrs.evolve(
            review, status="aborted", decided_at=self._now(), decision_reason=why
        )
        replaced = self.calls.call(self._store.replace_review, aborted, expected_status="pending")

        def stored(changed: bool) -> defer.Deferred[Any] | None:
            if not changed:
                return None
            self._digests.pop(aborted.id, None)
            self.grants.cancel_request_timer(aborted.id)
            written = self._record("review_decided", aborted, status="aborted", reason=why)
            self._release(aborted.id, Block(reason=f"review {aborted.id} aborted: {why}"))
            self._notify(aborted, "aborted")
            return written

        return replaced.addCallback(stored)

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
