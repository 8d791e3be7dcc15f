"""Every live session of the gateway: for shutdown, for cancel requests, and to end the
sessions of a credential or grant that ends."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from hoopgw.errors import HeldStatement
from hoopgw.protocol import LiveSession
from hoopgw.runtime.throttle import CancelLimit

__all__ = ["SessionRegistry"]


class SessionRegistry:
    """Every live session of the gateway, for shutdown and for cancel requests."""

    def __init__(
        self,
        *,
        on_added: Callable[[LiveSession], None] | None = None,
        cancel_limit: CancelLimit | None = None,
    ) -> None:
        """
        :param on_added: called with each session :meth:`add` tracks (the gateway counts them).
        :param cancel_limit: how many cancel requests matching no session each client address
            may send (:meth:`cancel`); None limits none.
        """
        self._sessions: set[LiveSession] = set()
        # Process id -> (secret, session): ids are the targets' own, so two targets may give
        # the same one; the secret, made by the gateway, tells them apart.
        self._cancel_keys: dict[int, list[tuple[bytes, LiveSession]]] = {}
        self._on_added = on_added
        self._cancel_limit = cancel_limit
        self._held: dict[str, HeldStatement] = {}  # session id -> its statement under review
        self.ask_peers: Callable[[int, bytes, str], None] | None = None
        """Passes on a cancel request that names none of these sessions (with the client's
        address) to the other worker processes of the gateway (``[gateway] workers``); None
        with one process."""
        self.tell_peers_matched: Callable[[str], None] | None = None
        """Tells the other worker processes that a cancel request one of them passed on (from
        the client address given) matched a session here, so they give back what its miss
        cost that address (:meth:`cancel_for_peer`); None with one process."""
        self.on_cancel: Callable[[str], None] | None = None
        """Called with the outcome of each cancel request :meth:`cancel` handles (metrics)."""

    def add(self, session: LiveSession) -> None:
        """Track ``session`` until :meth:`remove`."""
        if session not in self._sessions and self._on_added is not None:
            self._on_added(session)
        self._sessions.add(session)

    def remove(self, session: LiveSession) -> None:
        """Forget ``session`` and its cancel key; removing twice is harmless."""
        self._sessions.discard(session)
        for pid, entries in list(self._cancel_keys.items()):
            kept = [(k, s) for k, s in entries if s is not session]
            if kept:
                self._cancel_keys[pid] = kept
            else:
                del self._cancel_keys[pid]

    def add_cancel_key(self, pid: int, secret: bytes, session: LiveSession) -> bool:
        """Bind a protocol cancel key (process id and secret) to ``session``; False if that
        pair is already taken (the caller makes another secret)."""
        entries = self._cancel_keys.setdefault(pid, [])
        if any(hmac.compare_digest(k, secret) for k, _ in entries):
            return False
        entries.append((secret, session))
        return True

    def by_cancel_key(self, pid: int, secret: bytes) -> LiveSession | None:
        """The live session whose key is ``pid`` and ``secret``, or None. Secrets are compared
        in constant time, so a wrong guess says nothing of how close it came."""
        found = None
        for key, session in self._cancel_keys.get(pid, ()):
            if hmac.compare_digest(key, secret):
                found = session
        return found

    def cancel(self, pid: int, secret: bytes, client_address: str = "") -> str:
        """A client's cancel request: the session it names forwards it (to its target, or by
        withdrawing a pending decision); a key no session here holds goes to the other worker
        processes, if any. A wrong key cancels nothing, anywhere. An address that sent too
        many requests matching no session has its requests dropped unread
        (:class:`~hoopgw.runtime.throttle.CancelLimit`).

        :param client_address: ``HOST:PORT`` of the client that sent it.
        :return: ``forwarded`` (a session here took it), ``asked`` (passed to the other
            workers), ``unmatched`` or ``limited`` (dropped unread).
        """
        limit = self._cancel_limit
        if limit is not None and not limit.allows(client_address):
            outcome = "limited"
        elif self.cancel_here(pid, secret):
            outcome = "forwarded"
        else:
            if limit is not None:
                limit.missed(client_address)
            outcome = "unmatched"
            if self.ask_peers is not None:
                self.ask_peers(pid, secret, client_address)
                outcome = "asked"
        if self.on_cancel is not None:
            self.on_cancel(outcome)
        return outcome

    def cancel_for_peer(self, pid: int, secret: bytes, client_address: str = "") -> None:
        """A cancel request another worker passed on (it matched none of that worker's
        sessions, and its address was within its budget there): forward it if a session here
        names it (and tell the others, which counted it as a miss: a client cancelling its own
        queries spends nothing, whichever worker its request reaches); else spend the
        address's budget here too, so that every worker counts every miss and spreading
        guesses over the workers (each accepts from the same queue) gives an address no more
        than one budget."""
        if self.cancel_here(pid, secret):
            if self.tell_peers_matched is not None:
                self.tell_peers_matched(client_address)
        elif self._cancel_limit is not None:
            self._cancel_limit.missed(client_address)

    def peer_matched(self, client_address: str) -> None:
        """Another worker forwarded a cancel request from ``client_address`` that this one
        counted as a miss: give the address its token back."""
        if self._cancel_limit is not None:
            self._cancel_limit.refund(client_address)

    def cancel_here(self, pid: int, secret: bytes) -> bool:
        """Forward the cancel request to the session here whose key it names; False if none."""
        target = self.by_cancel_key(pid, secret)
        forward = getattr(target, "forward_cancel", None)
        if forward is None:
            return False
        forward()
        return True

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

    def statement_held(self, session_id: str, statement: HeldStatement) -> None:
        """The session ``session_id`` has a statement waiting for review: remember it (the
        admin API shows it) and tell the session, if its protocol can tell its client
        (a ``statement_held(statement)`` method)."""
        self._held[session_id] = statement
        for session in self._live(session_id):
            told = getattr(session, "statement_held", None)
            if told is not None:
                told(statement)

    def statement_released(self, session_id: str, review_id: str) -> None:
        """The review ``review_id`` of session ``session_id`` ended (decided, timed out or
        withdrawn): forget it and tell the session (a ``statement_released(review_id)``
        method)."""
        held = self._held.get(session_id)
        if held is None or held.review_id != review_id:
            return
        del self._held[session_id]
        for session in self._live(session_id):
            told = getattr(session, "statement_released", None)
            if told is not None:
                told(review_id)

    def held_statement(self, session_id: str) -> HeldStatement | None:
        """The statement of session ``session_id`` now waiting for review, or None."""
        return self._held.get(session_id)

    def _live(self, session_id: str) -> list[LiveSession]:
        return [
            s
            for s in self._sessions
            if s.session_info is not None and s.session_info.id == session_id
        ]

    def __iter__(self) -> Any:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)
