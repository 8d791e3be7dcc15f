"""Who is calling, and may they use this connection: the checks every protocol makes.

Every protocol front end (PostgreSQL, MySQL, SSH, the admin API) asks the same
:class:`Authenticator`, so a kind of credential added here (an OIDC token, say) works on all
of them at once, and the rules for admission (groups, just-in-time grants) are written once.

Both checks answer with a Deferred: a check may need the network (a JWKS refresh, a directory
lookup). A front end must not act on client input while one is outstanding.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from hoopgw.config import ConnectionConfig
from hoopgw.errors import AccessDenied, AuthenticationError
from hoopgw.identity import KeyService
from hoopgw.session import Identity

__all__ = ["AccessDenied", "AuthenticationError", "Authenticator"]


class Authenticator:
    """Turns a secret into an :class:`~hoopgw.session.Identity` and admits it to connections."""

    def __init__(self, keys: KeyService) -> None:
        self.keys = keys
        """The API keys, for protocols that verify a key without receiving it (SCRAM)."""

    def authenticate(self, secret: str, *, client_address: str) -> defer.Deferred[Identity]:
        """Check a secret the client sent (over TLS or loopback).

        :param secret: what the client gave as its password or token.
        :param client_address: ``host:port`` of the client, for failure accounting.
        :return: a Deferred that fires with the identity, or fails with
            :class:`~hoopgw.errors.AuthenticationError` whose message is safe to show (it
            never says which part of a secret was wrong, nor repeats the secret).
        """
        try:
            return defer.succeed(self.keys.authenticate(secret, now=time.time()))
        except AuthenticationError:
            return defer.fail()

    def admit(self, identity: Identity, connection: ConnectionConfig) -> defer.Deferred[None]:
        """Decide whether ``identity`` may open a session on ``connection``.

        :return: a Deferred that fires with None when it may, or fails with
            :class:`~hoopgw.errors.AccessDenied` whose message is safe to show and says what
            the caller can do about it.
        """
        if not set(connection.allow_groups) & identity.groups:
            return defer.fail(
                AccessDenied(
                    f'identity "{identity.name}" may not use connection "{connection.name}" '
                    "(none of its groups is in allow_groups)"
                )
            )
        return defer.succeed(None)
