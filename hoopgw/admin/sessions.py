"""Live sessions as the admin API shows and ends them (``hoopgw sessions live|kill``).

Admins (the ``admin`` role) see and may end every live session; auditors see every one;
anyone else sees their own. Ending a session is audited write-ahead: the
``session_terminated`` record (who, why) is durable before the session is told to end, and a
store that cannot write leaves the session running and the request refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet import defer

from hoopgw.admin.authz import may_terminate_sessions, sees_every_session
from hoopgw.approvals.common import ApprovalError
from hoopgw.errors import HeldStatement, StoreError
from hoopgw.records import AuditEntry
from hoopgw.session import Identity

__all__ = ["SESSION_TERMINATED_KIND", "PeerSessions", "SessionControl", "describe_session"]

SESSION_TERMINATED_KIND = "session_terminated"
"""Audit record kind of a session ended through the admin API."""

MIN_PREFIX = 8
"""Fewest characters of a session id that name a session."""


class PeerSessions(Protocol):
    """The live sessions of the gateway's other worker processes (``[gateway] workers``), as
    :func:`describe_session` shows them."""

    def sessions(self) -> list[tuple[int, dict[str, Any]]]:
        """Every other worker's live sessions: (worker number, session shown)."""

    def terminate(self, worker: int, session_id: str, reason: str) -> None:
        """Tell worker ``worker`` to end its session ``session_id`` with ``reason``."""


class SessionControl:
    """Lists and ends live sessions for the admin API.

    :param sessions: the gateway's :class:`~hoopgw.protocol.SessionRegistry`.
    :param audit: the gateway's audit writer.
    :param roles: the ``[roles]`` table.
    :param clock: ``seconds()`` for record times.
    :param peers: the other worker processes' sessions, which this one lists and ends too;
        None with one process.
    """

    def __init__(
        self,
        *,
        sessions: Any,
        audit: Any,
        roles: Mapping[str, tuple[str, ...]],
        clock: Any,
        peers: PeerSessions | None = None,
    ) -> None:
        self._peers = peers
        self._sessions = sessions
        self._audit = audit
        self._roles = roles
        self._clock = clock

    def visible(self, identity: Identity) -> list[dict[str, Any]]:
        """The live sessions ``identity`` may see, oldest first."""
        every = sees_every_session(identity, self._roles)
        shown = [
            describe_session(s, self._sessions.held_statement(s.session_info.id))
            for s in self._sessions
            if s.session_info is not None
            and (every or s.session_info.identity.name == identity.name)
        ]
        for _, remote in self._remote():
            if every or remote["identity"] == identity.name:
                shown.append(remote)
        return sorted(shown, key=lambda s: (s["started_at"], s["id"]))

    def terminate(
        self, identity: Identity, session_id: str, reason: str
    ) -> defer.Deferred[dict[str, Any]]:
        """End the live session ``session_id`` (or the one whose id starts with it) for
        ``identity``, an admin.

        :return: a Deferred firing with the session as :meth:`visible` shows it, once the
            record is durable and the session was told to end.
        :raises ApprovalError: not an admin, no such live session, or an ambiguous prefix.
        """
        if not may_terminate_sessions(identity, self._roles):
            raise ApprovalError("forbidden", "ending a session needs the admin role")
        if len(session_id) < MIN_PREFIX:
            raise ApprovalError(
                "invalid", f"give at least {MIN_PREFIX} characters of the session id"
            )
        found = self._sessions.find(session_id)
        remote = [(k, s) for k, s in self._remote() if s["id"].startswith(session_id)]
        if not found and not remote:
            raise ApprovalError("not_found", f"no live session {session_id}")
        if len(found) + len(remote) > 1:
            raise ApprovalError(
                "invalid",
                f"{session_id} names {len(found) + len(remote)} live sessions; give more of the id",
            )
        if found:
            session = found[0]
            shown = describe_session(
                session, self._sessions.held_statement(session.session_info.id)
            )
        else:
            worker, shown = remote[0]
        entry = AuditEntry(
            kind=SESSION_TERMINATED_KIND,
            session_id=shown["id"],
            time=self._clock.seconds(),
            data={"by": identity.name, "reason": reason, "connection": shown["connection"]},
        )

        def recorded(_: Any) -> dict[str, Any]:
            ended = f"ended by {identity.name}" + (f": {reason}" if reason else "")
            if found:
                session.terminate(ended)
            elif self._peers is not None:
                self._peers.terminate(worker, shown["id"], ended)
            return shown

        def unrecorded(failure: Any) -> Any:
            failure.trap(StoreError)
            raise ApprovalError(
                "internal", "cannot record the termination; the session was not ended"
            )

        return self._audit.write(entry).addCallbacks(recorded, unrecorded)

    def _remote(self) -> list[tuple[int, dict[str, Any]]]:
        return [] if self._peers is None else self._peers.sessions()


def describe_session(session: Any, held: HeldStatement | None) -> dict[str, Any]:
    """A live session as the API shows it; ``pending_review`` is the review its statement
    waits for (MySQL clients, which get no notice, poll it), or null."""
    info = session.session_info
    return {
        "pending_review": None
        if held is None
        else {
            "id": held.review_id,
            "approvers": list(held.approvers),
            "hold_until": held.hold_until,
            "reason": held.reason,
        },
        "id": info.id,
        "identity": info.identity.name,
        "connection": info.connection.name,
        "protocol": info.connection.protocol,
        "client_address": info.client_address,
        "started_at": info.started_at,
    }
