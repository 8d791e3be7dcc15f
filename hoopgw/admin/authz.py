"""Who may do what on the admin listener: the one set of role rules the admin API and the web
console share.

Reviews and grants follow the review rules of :mod:`hoopgw.approvals.common` (nobody decides
their own request, only the review's approver groups decide, ``auditor`` and ``admin`` see every
review); the rules here cover the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from hoopgw.approvals.common import roles_of
from hoopgw.session import Identity

__all__ = ["may_read_audit", "may_reload", "may_terminate_sessions", "sees_every_session"]

Roles = Mapping[str, tuple[str, ...]]


def sees_every_session(identity: Identity, roles: Roles) -> bool:
    """Whether ``identity`` sees every session (live or recorded), not only its own:
    ``admin`` and ``auditor`` do."""
    return bool(roles_of(identity, roles) & {"admin", "auditor"})


def may_terminate_sessions(identity: Identity, roles: Roles) -> bool:
    """Whether ``identity`` may end other people's live sessions: ``admin`` only."""
    return "admin" in roles_of(identity, roles)


def may_reload(identity: Identity, roles: Roles) -> bool:
    """Whether ``identity`` may make the gateway reload its config file: ``admin`` only."""
    return "admin" in roles_of(identity, roles)


def may_read_audit(identity: Identity, roles: Roles) -> bool:
    """Whether ``identity`` may search and export the audit trail, replay any session and
    build evidence packs: ``auditor`` and ``admin``."""
    return bool(roles_of(identity, roles) & {"admin", "auditor"})
