"""Reviews, approvals and just-in-time grants as the store keeps them, and the policy a held
statement is reviewed by (:class:`ReviewPolicy`, which the approval plugin makes). Public: the
approval and webhook plugins use these values.

A *review* is a request for a human decision: a held statement (``kind = "statement"``) or a
request for time-bound access to a connection (``kind = "access"``). Each approver's answer is
a :class:`ReviewVote`; an approved access request becomes a :class:`GrantRecord`. The rules
(who may decide, how many approvals) live in :mod:`hoopgw.approvals.reviews`; the store only keeps
the
records and changes them with compare-and-set, so two deciders can never both win.
"""

from __future__ import annotations

import abc

import attrs


@attrs.frozen(kw_only=True)
class ReviewPolicy:
    """How a held statement is reviewed (the approval plugin's options)."""

    approvers: tuple[str, ...]
    """Groups whose members may decide."""
    required: int = 1
    """Distinct approvals needed."""
    timeout: float = 0.0
    """Seconds the client waits; 0 uses the gateway's ``approval_timeout``."""
    valid_for: float = 600.0
    """Seconds an approval given after the hold timed out stays usable for one re-run."""


REVIEW_KINDS = ("statement", "access")
"""What a review is about."""

REVIEW_STATUSES = ("pending", "approved", "denied", "withdrawn", "aborted", "expired")
"""``pending`` until decided; ``withdrawn`` when the client cancelled or left; ``aborted`` when
the gateway stopped or restarted while it was pending; ``expired`` when an access request was
not decided within its connection's ``jit_request_ttl``."""


@attrs.frozen(kw_only=True)
class ReviewRecord:
    """One review."""

    id: str
    """Public identifier (12 lowercase hex characters)."""
    kind: str
    """``statement`` or ``access``."""
    status: str
    """One of :data:`REVIEW_STATUSES`."""
    requester: str
    """Identity that sent the statement or asked for access."""
    requester_groups: tuple[str, ...]
    """Its groups at the time."""
    connection: str
    """Connection name."""
    reason: str
    """Why the statement was held, or why the requester asks for access."""
    approvers: tuple[str, ...]
    """Groups whose members may decide."""
    required: int
    """Distinct approvals needed."""
    created_at: float
    """POSIX time the review was made."""
    session_id: str = ""
    """For a statement: the session that sent it."""
    command_seq: int = 0
    """For a statement: its position in the session."""
    statement: str = ""
    """For a statement: its text as the target would run it."""
    parameters: tuple[str | None, ...] = ()
    """For a statement: the bind parameter values it runs with, as reviewers may see them
    (masked when masking is on; ``None`` is SQL NULL). The approval covers these values too."""
    hold_until: float | None = None
    """For a statement: when the client stops waiting (the hold times out)."""
    timed_out_at: float | None = None
    """When the hold timed out while the review stayed open (a later approval allows one re-run)."""
    valid_for: float = 0.0
    """Seconds an approval that came after the hold timed out stays usable for a re-run."""
    duration: float | None = None
    """For access: seconds of access requested."""
    decided_at: float | None = None
    """When the review left ``pending``."""
    decided_by: str = ""
    """Who decided (approvers comma-separated, or who denied); empty for withdrawn/aborted."""
    decision_reason: str = ""
    """Why it was denied, withdrawn or aborted, or the approvers' note."""
    valid_until: float | None = None
    """For a statement approved after its hold timed out: until when one re-run is allowed."""
    used_at: float | None = None
    """When that re-run happened."""
    grant_id: str = ""
    """For approved access: the grant it created."""
    instance: str = ""
    """The gateway instance that holds the statement or took the request (``""`` with a
    SQLite store): the one that aborts it when it restarts or stops."""
    decision_recorded_at: float | None = None
    """When the decision's audit record was durable: only then may an approval given on
    another gateway instance release the statement this instance holds."""


@attrs.frozen(kw_only=True)
class ReviewVote:
    """One approver's answer to a review."""

    review_id: str
    """The review."""
    identity: str
    """Who answered."""
    approve: bool
    """True for approve, False for deny."""
    reason: str
    """Their note (required for a denial)."""
    decided_at: float
    """When."""


@attrs.frozen(kw_only=True)
class GrantRecord:
    """Time-bound access of one identity to one connection."""

    id: str
    """Public identifier (12 lowercase hex characters)."""
    review_id: str
    """The access review that created it."""
    identity: str
    """Who may connect."""
    connection: str
    """Where."""
    reason: str
    """Why it was asked for."""
    approved_by: tuple[str, ...]
    """Who approved it."""
    created_at: float
    """When it was granted."""
    expires_at: float
    """When it ends."""
    revoked_at: float | None = None
    """When it was revoked, or None."""
    revoked_by: str = ""
    """Who revoked it."""
    revoke_reason: str = ""
    """Why."""
    ended_at: float | None = None
    """When the gateway processed its end (expiry or revocation) and ended its sessions."""

    def is_active(self, now: float) -> bool:
        """Whether the grant admits sessions at ``now``."""
        return self.revoked_at is None and now < self.expires_at

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if now < self.expires_at else "expired"


class ReviewStore(abc.ABC):
    """The part of :class:`~hoopgw.store.base.Store` that keeps reviews and grants."""

    @abc.abstractmethod
    def add_review(self, review: ReviewRecord) -> None:
        """Store a new review. :raises StoreError: also if the id exists."""

    @abc.abstractmethod
    def get_review(self, review_id: str) -> ReviewRecord | None:
        """The review with this id, or None."""

    @abc.abstractmethod
    def list_reviews(
        self,
        *,
        status: str | None = None,
        requester: str | None = None,
        visible_to: tuple[str, frozenset[str]] | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        """Reviews, newest first, optionally of one status or one requester.

        With ``visible_to = (name, groups)``, only the reviews requested by ``name`` or with an
        approver group in ``groups`` (filtered before ``limit`` applies).
        """

    @abc.abstractmethod
    def replace_review(self, review: ReviewRecord, *, expected_status: str) -> bool:
        """Overwrite the review with the same id if its status is still ``expected_status``.

        :return: whether it was written (False: someone else changed it first, or unknown).
        """

    @abc.abstractmethod
    def find_rerun_approvals(
        self,
        *,
        requester: str,
        connection: str,
        statement: str,
        parameters: tuple[str | None, ...] = (),
        now: float,
    ) -> list[ReviewRecord]:
        """The approved, unused statement reviews of ``requester`` on ``connection`` for
        exactly ``statement`` and ``parameters`` (as reviews keep them) whose re-run window
        (``valid_until``) is still open at ``now``, oldest first."""

    @abc.abstractmethod
    def add_vote(self, vote: ReviewVote) -> None:
        """Store an answer. :raises StoreError: also if this identity already answered."""

    @abc.abstractmethod
    def list_votes(self, review_id: str) -> list[ReviewVote]:
        """The answers to a review, oldest first."""

    @abc.abstractmethod
    def add_grant(self, grant: GrantRecord) -> None:
        """Store a new grant. :raises StoreError: also if the id exists."""

    @abc.abstractmethod
    def get_grant(self, grant_id: str) -> GrantRecord | None:
        """The grant with this id, or None."""

    @abc.abstractmethod
    def list_grants(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        active_at: float | None = None,
        visible_to: tuple[str, frozenset[str]] | None = None,
        limit: int = 100,
    ) -> list[GrantRecord]:
        """Grants, newest first; with ``active_at``, only those active then.

        With ``visible_to = (name, connections)``, only the grants of identity ``name`` or on a
        connection in ``connections`` (filtered before ``limit`` applies).
        """

    @abc.abstractmethod
    def replace_grant(self, grant: GrantRecord) -> None:
        """Overwrite the grant with the same id."""
