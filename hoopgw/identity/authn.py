"""Who is calling, and may they use this connection: the checks every protocol makes.

Every protocol front end (PostgreSQL, MySQL, SSH, the admin API) asks the same
:class:`Authenticator`, so a kind of credential added here (an OIDC token, say) works on all
of them at once, and the rules for admission (groups, just-in-time grants) are written once.

A secret is either an API key (``hgw_...``, see :mod:`hoopgw.identity.keys`) or a JSON Web Token
from a trusted issuer (see :mod:`hoopgw.identity.oidc`), whose identity then gets the groups of the
configured group sources (see :mod:`hoopgw.groups`). Every failure is written to the audit
trail (``authentication_failed`` or ``access_denied`` records, with the detailed reason) and
answered, after the client address's back-off delay (see :mod:`hoopgw.runtime.throttle`), with a
message that is safe to show and never says which part of a secret was wrong. A check that
cannot read the store (the keys live there) is no failure of the caller's: it is refused at
once with :data:`hoopgw.errors.STORE_UNAVAILABLE` (a :class:`~hoopgw.errors.StoreError`), and
counts toward no back-off.

Both checks answer with a Deferred: a check may need the network (a JWKS refresh, a directory
lookup). A front end must not act on client input while one is outstanding.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit.writer import AuditWriter
from hoopgw.config.load import Config
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import (
    STORE_UNAVAILABLE,
    AccessDenied,
    AuthenticationError,
    StoreError,
    access_needed,
)
from hoopgw.groups import GroupSourceContext, load_group_source
from hoopgw.identity.fetch import JsonFetcher
from hoopgw.identity.groups import GroupResolver
from hoopgw.identity.keys import (
    KeyService,
    end_sessions_of_expired_identities,
    end_sessions_of_inactive_keys,
)
from hoopgw.identity.oidc import IssuerKeys, TokenVerifier, looks_like_jwt
from hoopgw.records import AuditEntry
from hoopgw.runtime.throttle import FailureThrottle
from hoopgw.session import Identity
from hoopgw.store import Store

__all__ = ["AccessDenied", "AuthenticationError", "Authenticator", "build_authenticator"]

log = Logger(namespace="hoopgw.authn")

AUTH_FAILED_KIND = "authentication_failed"
"""Audit record kind of a secret that was not accepted (no session exists)."""
ACCESS_DENIED_KIND = "access_denied"
"""Audit record kind of an authenticated identity refused a connection."""

_TOO_MANY = "too many failed authentication attempts from your address; try again later"


class Authenticator:
    """Turns a secret into an :class:`~hoopgw.session.Identity` and admits it to connections.

    :param keys: the API keys.
    :param tokens: checks OIDC tokens; None when no issuer is trusted (a token is refused).
    :param groups: adds the groups of the configured group sources to token identities.
    :param throttle: the per-address back-off; None answers failures at once (tests).
    :param audit: where failures are recorded; None records nothing (config checks, tests).
    :param clock: ``seconds()`` for key expiry and record times; the reactor in the gateway.
    :param grants: the just-in-time grants (:class:`hoopgw.approvals.grants.GrantService`); None
        refuses every connection with ``access = "jit"``.
    """

    def __init__(
        self,
        keys: KeyService,
        *,
        tokens: TokenVerifier | None = None,
        groups: GroupResolver | None = None,
        throttle: FailureThrottle | None = None,
        audit: AuditWriter | None = None,
        clock: Any = None,
        grants: Any = None,
    ) -> None:
        self.keys = keys
        """The API keys, for protocols that verify a key without receiving it (SCRAM)."""
        self.tokens = tokens
        self.groups = groups or GroupResolver([])
        self.throttle = throttle
        self._audit = audit
        self._clock: Any = clock or _WallClock()
        self._key_watch: task.LoopingCall | None = None
        self._sessions: Any = None
        self.grants = grants
        """Where live just-in-time grants are looked up (set by the gateway)."""
        self.connections: Mapping[str, ConnectionConfig] | None = None
        """The configured connections by name, as the latest config reload left them (set by
        the gateway): :meth:`admit` judges a client by its connection's newest config, so a
        client that was logging in during a reload is held to the new rules. None: as given."""
        self.failure_observers: list[Callable[[str, str], None]] = []
        """Called with ``(connection, method)`` for every failed authentication (the gateway
        counts them)."""

    def start(self, sessions: Any, *, key_check_interval: float) -> None:
        """Start the gateway-wide work: load the issuers' keys, and every
        ``key_check_interval`` seconds end the sessions of revoked or expired API keys, of
        revoked SSH keys and of expired OIDC tokens.

        :param sessions: the gateway's :class:`~hoopgw.protocol.SessionRegistry`.
        """
        for issuer in self.tokens.issuers if self.tokens is not None else []:
            issuer.refresh()
        self._sessions = sessions
        self._key_watch = task.LoopingCall(self._check_keys, sessions)
        self._key_watch.clock = self._clock
        self._key_watch.start(key_check_interval, now=False).addErrback(
            lambda f: log.failure("the API key check stopped", f)
        )

    def check_keys_now(self) -> None:
        """Run the periodic key check at once (another gateway instance revoked a key)."""
        if self._sessions is not None:
            self._check_keys(self._sessions)

    def _check_keys(self, sessions: Any) -> None:
        now = self._clock.seconds()
        expired = end_sessions_of_expired_identities(sessions, now=now)
        if expired:
            log.info("ended {count} session(s) of expired access tokens", count=expired)
        ended = end_sessions_of_inactive_keys(self.keys, sessions, now=now)
        if ended:
            log.info("ended {count} session(s) of revoked or expired keys", count=ended)

    def stop(self) -> None:
        """Stop the periodic key check and close the group sources."""
        if self._key_watch is not None and self._key_watch.running:
            self._key_watch.stop()
        self.groups.close()

    def authenticate(
        self, secret: str, *, client_address: str, connection: str = ""
    ) -> defer.Deferred[Identity]:
        """Check a secret the client sent (over TLS or loopback).

        :param secret: what the client gave as its password or token.
        :param client_address: ``host:port`` of the client, for failure accounting.
        :param connection: the connection's name, for the audit record of a failure.
        :return: a Deferred that fires with the identity, or fails with
            :class:`~hoopgw.errors.AuthenticationError` whose message is safe to show (it
            never says which part of a secret was wrong, nor repeats the secret). A failure
            is answered only after the address's back-off delay.
        """
        method = "oidc" if looks_like_jwt(secret) else "api-key"
        saturated = self.refuse_if_saturated(
            method=method, client_address=client_address, connection=connection
        )
        if saturated is not None:
            return saturated
        if method == "oidc":
            if self.tokens is None:
                d: defer.Deferred[Identity] = defer.fail(
                    _Detailed("invalid token", reason="a token, but no issuer is trusted")
                )
            else:
                d = self.tokens.verify(secret).addCallback(self.groups.resolve)
        else:
            d = defer.maybeDeferred(self.keys.authenticate, secret, now=self._clock.seconds())
        return d.addErrback(self._failed, method, client_address, connection)

    def refuse_if_saturated(
        self, *, method: str, client_address: str, connection: str = ""
    ) -> defer.Deferred[Any] | None:
        """For a protocol that checks a secret itself (SCRAM): call before the check.

        :return: None when the check may go on; a Deferred failing with
            :class:`~hoopgw.errors.AuthenticationError` (audited, answered at once) when the
            client address has every back-off slot busy.
        """
        if self.throttle is None or not self.throttle.saturated(client_address):
            return None
        # Refused without looking at the secret, so it tells the caller nothing.
        self._record_failure(
            method, "back-off: too many pending failures", client_address, connection
        )
        return defer.fail(AuthenticationError(_TOO_MANY))

    def failed(
        self, message: str, *, reason: str, method: str, client_address: str, connection: str = ""
    ) -> defer.Deferred[Any]:
        """Report an authentication that a protocol checked itself (a SCRAM proof that does
        not verify, a user name that does not fit the identity): it is audited and counted
        like any other.

        :param message: what the client will be told (safe to show).
        :param reason: the detailed cause, for the audit record and the log.
        :param method: ``api-key``, ``oidc``, ``scram``, ...
        :return: a Deferred that fails with ``AuthenticationError(message)`` once the
            address's back-off delay has passed.
        """
        return defer.fail(_Detailed(message, reason=reason)).addErrback(
            self._failed, method, client_address, connection
        )

    def _failed(
        self, failure: Failure, method: str, client_address: str, connection: str
    ) -> defer.Deferred[Any]:
        if failure.check(StoreError):
            # The gateway's fault, not the caller's: refused as such, at once, uncounted.
            log.warn(
                "login from {client} on {connection} refused: the store is unavailable: {why}",
                client=client_address,
                connection=connection or "-",
                why=failure.getErrorMessage(),
            )
            return defer.fail(StoreError(STORE_UNAVAILABLE))
        if not failure.check(AuthenticationError):
            # An unexpected error: refuse (fail closed), without showing its text.
            log.failure("authentication check failed unexpectedly", failure)
            shown, reason = "authentication failed", f"internal error: {failure.getErrorMessage()}"
        else:
            shown = str(failure.value)
            reason = getattr(failure.value, "reason", shown)
        self._record_failure(method, reason, client_address, connection)
        wait = (
            defer.succeed(None) if self.throttle is None else self.throttle.failed(client_address)
        )

        def answer(_: Any) -> Any:
            raise AuthenticationError(shown)

        return wait.addCallback(answer)

    def _record_failure(
        self, method: str, reason: str, client_address: str, connection: str
    ) -> None:
        for observe in self.failure_observers:
            observe(connection or "-", method)
        log.info(
            "authentication failed ({method}) from {client} on {connection}: {reason}",
            method=method,
            client=client_address,
            connection=connection or "-",
            reason=reason,
        )
        self._write(
            AUTH_FAILED_KIND,
            {
                "method": method,
                "reason": reason,
                "client_address": client_address,
                "connection": connection,
            },
        )

    def _write(self, kind: str, data: dict[str, Any]) -> None:
        if self._audit is None:
            return
        entry = AuditEntry(kind=kind, session_id="", time=self._clock.seconds(), data=data)
        d = self._audit.write(entry, urgent=False)
        # The refusal does not wait on the record: a store outage must not open the door.
        d.addErrback(lambda f: log.error("cannot record {kind}: {why}", kind=kind, why=f.value))

    def admit(
        self, identity: Identity, connection: ConnectionConfig, *, client_address: str = ""
    ) -> defer.Deferred[None]:
        """Decide whether ``identity`` may open a session on ``connection``.

        :param client_address: ``host:port`` of the client, for the audit record of a refusal.
        :return: a Deferred that fires with None when it may, or fails with
            :class:`~hoopgw.errors.AccessDenied` whose message is safe to show and says what
            the caller can do about it.
        """
        if self.connections is not None:
            current = self.connections.get(connection.name)
            if current is None:
                return defer.fail(
                    AccessDenied(f'connection "{connection.name}" is no longer configured')
                )
            connection = current
        if not set(connection.allow_groups) & identity.groups:
            self._write(
                ACCESS_DENIED_KIND,
                {
                    "identity": identity.name,
                    "method": identity.method,
                    "credential_id": identity.credential_id,
                    "groups": sorted(identity.groups),
                    "connection": connection.name,
                    "client_address": client_address,
                    "reason": "none of its groups is in allow_groups",
                },
            )
            return defer.fail(
                AccessDenied(
                    access_needed(
                        f'identity "{identity.name}" may not use connection "{connection.name}"'
                        " (none of its groups is in allow_groups)",
                        connection=connection.name,
                        jit=False,
                    ).text()
                )
            )
        if connection.access == "jit" and (
            self.grants is None or self.grants.active_grant(identity.name, connection.name) is None
        ):
            self._write(
                ACCESS_DENIED_KIND,
                {
                    "identity": identity.name,
                    "method": identity.method,
                    "credential_id": identity.credential_id,
                    "groups": sorted(identity.groups),
                    "connection": connection.name,
                    "client_address": client_address,
                    "reason": "no live just-in-time grant",
                },
            )
            return defer.fail(
                AccessDenied(
                    access_needed(
                        f'connection "{connection.name}" needs a just-in-time grant and identity'
                        f' "{identity.name}" has none',
                        connection=connection.name,
                        jit=True,
                    ).text()
                )
            )
        return defer.succeed(None)


class _Detailed(AuthenticationError):
    def __init__(self, shown: str, *, reason: str) -> None:
        super().__init__(shown)
        self.reason = reason


class _WallClock:
    @staticmethod
    def seconds() -> float:
        return time.time()


def build_authenticator(
    config: Config,
    *,
    store: Store,
    audit: AuditWriter | None,
    reactor: Any,
    shared_store: bool = False,
) -> Authenticator:
    """The gateway's authenticator for ``config``'s ``[identity]`` table.

    :param shared_store: other gateway instances use ``store``: failed logins are counted
        there, so that the back-off follows an address across instances.
    """
    identity = config.identity
    issuers = [
        IssuerKeys(
            settings,
            fetch_json=JsonFetcher(
                reactor, ca_file=settings.ca_file, timeout=settings.fetch_timeout
            ),
            clock=reactor,
        )
        for settings in identity.oidc
    ]
    sources = []
    for name in identity.group_sources:
        context = GroupSourceContext(
            name=name,
            options=identity.group_source_options.get(name, {}),
            reactor=reactor,
            base_dir=config.base_dir,
        )
        sources.append((name, load_group_source(name)(context)))
    return Authenticator(
        KeyService(store),
        tokens=TokenVerifier(issuers, clock=reactor) if issuers else None,
        groups=GroupResolver(sources),
        throttle=FailureThrottle(
            reactor,
            identity.backoff,
            shared=functools.partial(_count_failure, store, identity.backoff.forget_after)
            if shared_store
            else None,
        ),
        audit=audit,
        clock=reactor,
    )


def _count_failure(store: Store, forget_after: float, host: str, now: float) -> int:
    return store.count_login_failure(host, now=now, forget_after=forget_after)
