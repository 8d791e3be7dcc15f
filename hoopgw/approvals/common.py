"""What reviews and grants share: the refusal error, the role lookup and small helpers."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from hoopgw.errors import HoopgwError
from hoopgw.records import AuditEntry
from hoopgw.reviews import ReviewRecord, ReviewVote
from hoopgw.session import Command, Identity

__all__ = [
    "SEE_ALL",
    "ApprovalError",
    "Notifier",
    "decision_refused",
    "duration_text",
    "gather",
    "may_see",
    "new_id",
    "review_entry",
    "roles_of",
    "shown_parameters",
    "shown_text",
    "statement_digest",
]

Notifier = Callable[[ReviewRecord, str], None]
"""Called as ``notify(review, event)`` after every change of a review (see the
``review_updated`` hook)."""

SEE_ALL = frozenset({"auditor", "admin"})
"""Roles that see every review and grant."""


class ApprovalError(HoopgwError):
    """A request the service refuses; :attr:`code` says why (the admin API maps it to a
    status): ``not_found``, ``forbidden``, ``conflict`` or ``invalid``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def roles_of(identity: Identity, roles: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """The admin-API roles (``approver``, ``auditor``, ``admin``) the identity's groups hold."""
    return frozenset(role for role, groups in roles.items() if identity.groups & set(groups))


def new_id() -> str:
    """A fresh review or grant id."""
    return secrets.token_hex(6)


def duration_text(seconds: float) -> str:
    """``seconds`` as people write it: ``2h``, ``15m`` or ``90s``."""
    seconds = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def gather(writes: list[defer.Deferred[Any]]) -> defer.Deferred[None]:
    """Fires once every write is done (failures are consumed)."""
    gathered = defer.gatherResults(writes, consumeErrors=True)
    return gathered.addCallback(lambda _: None)


def review_entry(kind: str, review: ReviewRecord, time: float, **details: Any) -> AuditEntry:
    """The audit record ``kind`` of ``review`` with ``details``."""
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
    return AuditEntry(kind=kind, session_id=review.session_id, time=time, data=data)


def statement_digest(key: bytes, command: Command) -> str:
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
    return hmac.new(key, encoded, hashlib.sha256).hexdigest()


def shown_text(command: Command) -> str:
    """The statement as a review keeps it (masked when masking is on)."""
    return command.text if command.recorded_text is None else command.recorded_text


def shown_parameters(command: Command) -> tuple[str | None, ...]:
    """The parameter values as a review keeps them (masked when masking is on)."""
    if command.recorded_parameters is not None:
        return command.recorded_parameters
    return tuple(p.shown for p in command.parameters)


def decision_refused(
    review: ReviewRecord, identity: Identity, votes: list[ReviewVote]
) -> ApprovalError | None:
    """Why ``identity`` may not answer ``review`` now (given its ``votes`` so far), or
    None when it may: the one test
    :meth:`~hoopgw.approvals.reviews.ReviewService.decide` applies, which the console also uses to
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


def may_see(review: ReviewRecord, identity: Identity, roles: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether ``identity`` may see ``review``: its requester, the members of its approver
    groups, auditors and admins. The ``approver`` role alone shows nothing more: an
    approver of one connection has no business with another connection's statements."""
    return (
        review.requester == identity.name
        or bool(identity.groups & set(review.approvers))
        or bool(roles_of(identity, roles) & SEE_ALL)
    )
