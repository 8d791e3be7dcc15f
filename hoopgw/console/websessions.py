"""Signed-in people and sign-ins under way, kept on the server.

The browser holds only a random session id in a cookie; everything else (the identity, its
groups, the CSRF token, the times) stays here, so ending a session on the server ends it for
the browser. A session ends after ``idle_timeout`` seconds without a request, after
``absolute_timeout`` seconds from its sign-in however busy, or at sign-out. Ids are kept
hashed, so the table itself holds nothing a browser could present.

A sign-in under way (:class:`LoginAttempt`: the OIDC ``state``, ``nonce`` and PKCE verifier,
or the SAML request id) is bound to the browser that started it by a second random cookie,
lives :data:`LOGIN_TTL` seconds and is used at most once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from typing import Any

import attrs

from hoopgw.session import Identity
from hoopgw.signin import LoginAttempt

__all__ = ["LOGIN_TTL", "LoginAttempts", "WebSession", "WebSessions"]

LOGIN_TTL = 600.0
"""Seconds a sign-in may take at the identity provider."""

MAX_ATTEMPTS = 10_000
"""Sign-ins under way kept at most; the oldest is dropped beyond (a flood cannot exhaust
memory, and only delays sign-ins that started long before)."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@attrs.define(kw_only=True)
class WebSession:
    """One signed-in person."""

    key: str
    """SHA-256 of the cookie value."""
    identity: Identity
    """Who signed in, with the groups their provider (and group sources) gave."""
    via: str
    """How: ``oidc:<name>`` or ``saml``."""
    csrf: str
    """The token every form of this session carries."""
    started_at: float
    """When they signed in."""
    seen_at: float
    """Their last request."""

    def csrf_matches(self, sent: str) -> bool:
        """Whether ``sent`` is this session's CSRF token (compared in constant time)."""
        return hmac.compare_digest(self.csrf.encode(), sent.encode("utf-8", "replace"))


class WebSessions:
    """The console sessions of one gateway.

    :param clock: ``seconds()``; the reactor in the gateway.
    """

    def __init__(self, clock: Any, *, idle_timeout: float, absolute_timeout: float) -> None:
        self._clock = clock
        self._idle = idle_timeout
        self._absolute = absolute_timeout
        self._sessions: dict[str, WebSession] = {}

    def create(self, identity: Identity, *, via: str) -> tuple[str, WebSession]:
        """Start a session for ``identity``.

        :return: the cookie value (shown to the browser once) and the session.
        """
        self._sweep()
        cookie = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        session = WebSession(
            key=_digest(cookie),
            identity=identity,
            via=via,
            csrf=secrets.token_urlsafe(32),
            started_at=now,
            seen_at=now,
        )
        self._sessions[session.key] = session
        return cookie, session

    def find(self, cookie: str | None, *, touch: bool = True) -> tuple[WebSession | None, str]:
        """The live session of the cookie value, its idle time restarted unless ``touch`` is
        false (a page refreshing itself is not someone at the keyboard).

        :return: the session, or None and why (``none``, ``unknown``, ``idle``, ``expired``);
            a session found timed out is ended.
        """
        if not cookie:
            return None, "none"
        key = _digest(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None, "unknown"
        now = self._clock.seconds()
        if now - session.started_at >= self._absolute:
            del self._sessions[key]
            return None, "expired"
        if now - session.seen_at >= self._idle:
            del self._sessions[key]
            return None, "idle"
        if touch:
            session.seen_at = now
        return session, ""

    def end(self, session: WebSession) -> None:
        """End ``session`` (sign-out)."""
        self._sessions.pop(session.key, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self) -> None:
        now = self._clock.seconds()
        for key, s in list(self._sessions.items()):
            if now - s.started_at >= self._absolute or now - s.seen_at >= self._idle:
                del self._sessions[key]


class LoginAttempts:
    """Sign-ins under way, each bound to the browser that started it.

    :param clock: ``seconds()``.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._attempts: OrderedDict[str, tuple[str, LoginAttempt]] = OrderedDict()

    def start(self, attempt: LoginAttempt) -> str:
        """Keep ``attempt``.

        :return: the value of the browser-binding cookie to set.
        """
        self._sweep()
        binding = secrets.token_urlsafe(32)
        self._attempts[_digest(attempt.state)] = (_digest(binding), attempt)
        while len(self._attempts) > MAX_ATTEMPTS:
            self._attempts.popitem(last=False)
        return binding

    def take(self, state: str, binding: str | None) -> LoginAttempt | None:
        """The attempt ``state`` names, if this browser (``binding``, its cookie) started it
        and it is not older than :data:`LOGIN_TTL`; it is removed either way (one use)."""
        found = self._attempts.pop(_digest(state), None)
        if found is None or not binding:
            return None
        bound, attempt = found
        if not hmac.compare_digest(bound, _digest(binding)):
            return None
        if self._clock.seconds() - attempt.started_at >= LOGIN_TTL:
            return None
        return attempt

    def _sweep(self) -> None:
        now = self._clock.seconds()
        while self._attempts:
            _, (_, oldest) = next(iter(self._attempts.items()))
            if now - oldest.started_at < LOGIN_TTL:
                break
            self._attempts.popitem(last=False)
