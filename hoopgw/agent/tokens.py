"""Agent tokens: how a network agent proves to the gateway which agent it is.

A token looks like ``hga_<token_id>_<random>``: ``token_id`` is 12 lowercase hex characters
(public, shown in listings), ``random`` 32 random bytes in URL-safe base64. It is shown once,
at ``hoopgw agents create``, and never stored: the store keeps its SHA-256, compared in
constant time. Store access is blocking.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from hoopgw.errors import AuthenticationError
from hoopgw.store.agents import AgentRecord, AgentStore

__all__ = ["AgentTokens", "check_agent_name"]

_TOKEN = re.compile(r"hga_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_INVALID = "invalid agent token"
# Compared against when the token id is unknown, so both failures take the same path.
_NO_SUCH_HASH = "0" * 64


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_agent_name(name: str) -> str:
    """Return ``name`` if it is a valid agent name.

    :raises ValueError: saying what a name may hold.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"agent name {name!r} must match [a-z0-9][a-z0-9_-]* (at most 63 characters)"
        )
    return name


class AgentTokens:
    """Creates, checks and revokes agent tokens kept in an :class:`AgentStore`."""

    def __init__(self, store: AgentStore) -> None:
        self._store = store

    def create(self, name: str, *, now: float) -> tuple[str, AgentRecord]:
        """Register the agent ``name`` with a new token.

        :return: the token (show it once) and the stored record.
        :raises ValueError: for an invalid name.
        :raises StoreError: if the name is taken.
        """
        check_agent_name(name)
        token_id = secrets.token_hex(6)
        token = f"hga_{token_id}_{secrets.token_urlsafe(32)}"
        record = AgentRecord(
            name=name, token_id=token_id, token_sha256=_sha256(token), created_at=now
        )
        self._store.add_agent(record)
        return token, record

    def authenticate(self, token: str) -> AgentRecord:
        """The agent ``token`` belongs to.

        :raises AuthenticationError: an unknown token and a wrong one get the same message,
            which never holds the token; a revoked one says so.
        """
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise AuthenticationError(_INVALID)
        record = self._store.get_agent_by_token(match.group(1))
        expected = _NO_SUCH_HASH if record is None else record.token_sha256
        if not hmac.compare_digest(_sha256(token), expected) or record is None:
            raise AuthenticationError(_INVALID)
        if record.revoked_at is not None:
            raise AuthenticationError(f"the token of agent {record.name!r} has been revoked")
        return record

    def list(self) -> list[AgentRecord]:
        """Every registered agent, by name."""
        return self._store.list_agents()

    def revoke(self, name: str, *, now: float) -> bool:
        """Revoke the agent's token; a gateway drops its connection at the next check.

        :return: False if no such agent, or it was revoked already.
        """
        return self._store.revoke_agent(name, when=now)
