"""Every live session of the gateway: for shutdown, for cancel requests, and to end the
sessions of a credential or grant that ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hoopgw.protocol import LiveSession

__all__ = ["SessionRegistry"]


class SessionRegistry:
    """Every live session of the gateway, for shutdown and for cancel requests."""

    def __init__(self, *, on_added: Callable[[LiveSession], None] | None = None) -> None:
        """
        :param on_added: called with each session :meth:`add` tracks (the gateway counts them).
        """
        self._sessions: set[LiveSession] = set()
        self._cancel_keys: dict[Any, LiveSession] = {}
        self._on_added = on_added

    def add(self, session: LiveSession) -> None:
        """Track ``session`` until :meth:`remove`."""
        if session not in self._sessions and self._on_added is not None:
            self._on_added(session)
        self._sessions.add(session)

    def remove(self, session: LiveSession) -> None:
        """Forget ``session`` and its cancel key; removing twice is harmless."""
        self._sessions.discard(session)
        for key in [k for k, s in self._cancel_keys.items() if s is session]:
            del self._cancel_keys[key]

    def add_cancel_key(self, key: Any, session: LiveSession) -> bool:
        """Bind a protocol cancel key to ``session``; False if the key is already taken."""
        if key in self._cancel_keys:
            return False
        self._cancel_keys[key] = session
        return True

    def by_cancel_key(self, key: Any) -> LiveSession | None:
        """The session that owns ``key``, if it is still live."""
        return self._cancel_keys.get(key)

    def sessions_of(self, identity: str, connection: str) -> list[LiveSession]:
        """The live sessions of ``identity`` on the connection named ``connection`` (those a
        just-in-time grant admitted, when it ends)."""
        return [
            s
            for s in self._sessions
            if s.identity is not None
            and s.identity.name == identity
            and s.runtime.config.name == connection
        ]

    def find(self, prefix: str) -> list[LiveSession]:
        """The live, authenticated sessions whose id starts with ``prefix``."""
        return [
            s
            for s in self._sessions
            if s.session_info is not None and s.session_info.id.startswith(prefix)
        ]

    def __iter__(self) -> Any:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)
