"""Network agents registered with the gateway, as the store keeps them.

An agent (``hoopgw agent``) runs inside a private network and dials out to the gateway; it
proves who it is with a token made by ``hoopgw agents create NAME``. The store keeps the
token's SHA-256 only, found by the token's public id, and the agent's last known state.
"""

from __future__ import annotations

import abc

import attrs


@attrs.frozen(kw_only=True)
class AgentRecord:
    """One registered agent."""

    name: str
    """The agent's name, which ``via`` in a connection refers to."""
    token_id: str
    """Public part of the token: 12 lowercase hex characters, shown in listings."""
    token_sha256: str = attrs.field(repr=False)
    """Hex SHA-256 of the whole token string."""
    created_at: float
    """POSIX time the agent was registered."""
    revoked_at: float | None = None
    """POSIX time its token was revoked, or None."""
    last_seen_at: float | None = None
    """POSIX time a gateway last heard from it, or None for never."""
    online: bool = False
    """Whether a gateway held its connection at :attr:`last_seen_at`."""
    address: str | None = None
    """Where it last connected from (``IP:PORT`` as the gateway saw it), or None."""


class AgentStore(abc.ABC):
    """The store's part that keeps agents; every method may raise ``StoreError``."""

    @abc.abstractmethod
    def add_agent(self, agent: AgentRecord) -> None:
        """Register a new agent.

        :raises StoreError: also if an agent of that name exists already (revoked or not).
        """

    @abc.abstractmethod
    def get_agent(self, name: str) -> AgentRecord | None:
        """The agent called ``name`` (revoked or not), or None."""

    @abc.abstractmethod
    def get_agent_by_token(self, token_id: str) -> AgentRecord | None:
        """The agent whose token has the public id ``token_id``, or None."""

    @abc.abstractmethod
    def list_agents(self) -> list[AgentRecord]:
        """Every agent, by name."""

    @abc.abstractmethod
    def revoke_agent(self, name: str, *, when: float) -> bool:
        """Mark the agent's token revoked at ``when``.

        :return: True if this call revoked it; False if it is unknown or already revoked.
        """

    @abc.abstractmethod
    def agent_seen(self, name: str, *, when: float, online: bool, address: str | None) -> None:
        """Record the agent's state as a gateway saw it at ``when``."""
