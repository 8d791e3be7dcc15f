"""API keys: how automation and people authenticate to the gateway without a target credential.

A key's secret looks like ``hgw_<key_id>_<random>``: ``key_id`` is 12 lowercase hex characters
(public, shown in listings and audit records), ``random`` is 32 random bytes, URL-safe base64.
The secret is shown once, at creation, and never stored: the store keeps its SHA-256 (for
clients that send it in clear over TLS) and a SCRAM-SHA-256 verifier (for clients that log in
with SCRAM, which never send it at all).

Store access is blocking: the gateway calls these methods through
:class:`hoopgw.store.calls.StoreCalls` (the CLI calls them directly).

A key revoked (``hoopgw keys revoke``, often from another process) or past its expiry fails at
the next login, and the gateway's periodic check (:func:`sessions_by_key`, then
:func:`inactive_keys` off the reactor thread, then :func:`end_sessions_of_inactive_keys`)
ends the live sessions it opened: the store is the signal, so no process needs to reach another.
A credential that carries its own end (an OIDC token's ``exp``, see
:attr:`~hoopgw.session.Identity.expires_at`) needs no store: the same periodic check ends its
sessions with :func:`end_sessions_of_expired_identities`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from hoopgw.errors import AuthenticationError
from hoopgw.secrets import ScramVerifier, make_verifier
from hoopgw.session import Identity
from hoopgw.store.base import ApiKeyRecord, Store

__all__ = [
    "EXPIRY_REASON",
    "ApiKeyRecord",
    "KeyService",
    "end_sessions_of_expired_identities",
    "end_sessions_of_inactive_keys",
    "inactive_keys",
    "sessions_by_key",
]

_SECRET = re.compile(r"hgw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_INVALID_KEY = "invalid API key"
# Compared against when the key id is unknown, so both failures take the same path.
_NO_SUCH_HASH = "0" * 64
EXPIRY_REASON = "access token has expired"
"""Why a session whose identity's :attr:`~hoopgw.session.Identity.expires_at` passed ended."""


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check_name(what: str, name: str) -> None:
    if not name:
        raise ValueError(f"{what} must not be empty")
    if not name.isprintable() or any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"{what} {name!r} must be printable, without whitespace or commas")


class KeyService:
    """Creates, checks and revokes API keys kept in a :class:`~hoopgw.store.base.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(
        self,
        identity: str,
        groups: Sequence[str],
        *,
        expires_in: float | None = None,
        now: float,
    ) -> tuple[str, ApiKeyRecord]:
        """Make a new key for ``identity`` with ``groups``.

        :param expires_in: seconds from ``now`` until the key stops working; None for never.
        :return: the secret (show it once; it cannot be recovered) and the stored record.
        :raises ValueError: for an invalid identity or group name, or a non-positive lifetime.
        """
        _check_name("identity", identity)
        for group in groups:
            _check_name("group", group)
        if expires_in is not None and expires_in <= 0:
            raise ValueError("expires_in must be positive")
        key_id = secrets.token_hex(6)
        secret = f"hgw_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKeyRecord(
            key_id=key_id,
            identity=identity,
            groups=tuple(sorted(set(groups))),
            secret_sha256=_sha256(secret),
            scram=make_verifier(secret, secrets.token_bytes(16)),
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        self._store.add_key(record)
        return secret, record

    def authenticate(self, secret: str, *, now: float) -> Identity:
        """Check a secret sent in clear (over TLS) and record the key's use.

        :raises AuthenticationError: with a message safe to show; an unknown key and a wrong
            secret get the same one, and the secret is never part of it.
        """
        match = _SECRET.fullmatch(secret)
        if match is None:
            raise AuthenticationError(_INVALID_KEY)
        record = self._store.get_key(match.group(1))
        expected = _NO_SUCH_HASH if record is None else record.secret_sha256
        if not hmac.compare_digest(_sha256(secret), expected) or record is None:
            raise AuthenticationError(_INVALID_KEY)
        # Only the key's owner gets this far, so saying why it no longer works reveals nothing.
        if record.revoked_at is not None:
            raise AuthenticationError(f"API key {record.key_id} has been revoked")
        if not record.is_active(now):
            raise AuthenticationError(f"API key {record.key_id} has expired")
        self._store.touch_key(record.key_id, now)
        return _identity(record)

    def scram_verifier(self, user: str, *, now: float) -> tuple[ScramVerifier, Identity] | None:
        """The SCRAM verifier to check a client that logs in as ``user``.

        ``user`` is a key id, or an identity name; for a name with several active keys the
        newest one is used, so a client that holds an older key must log in with its key id.
        The caller records the use with :meth:`record_use` once the SCRAM proof checks out.

        :return: the verifier and the identity it proves, or None if no active key fits.
        """
        if _KEY_ID.fullmatch(user):
            record = self._store.get_key(user)
            if record is not None and record.is_active(now):
                return record.scram, _identity(record)
        for record in self._store.find_keys_by_identity(user):
            if record.is_active(now):
                return record.scram, _identity(record)
        return None

    def record_use(self, key_id: str, *, now: float) -> None:
        """Note that ``key_id`` authenticated at ``now`` (after a SCRAM login)."""
        self._store.touch_key(key_id, now)

    def check_active(self, key_id: str, *, now: float) -> bool:
        """Whether the key exists and is neither revoked nor expired at ``now``."""
        record = self._store.get_key(key_id)
        return record is not None and record.is_active(now)

    def why_inactive(self, key_id: str, *, now: float) -> str | None:
        """``revoked`` or ``expired`` (an unknown key counts as revoked), or None while the
        key is active at ``now``."""
        record = self._store.get_key(key_id)
        if record is not None and record.is_active(now):
            return None
        return "revoked" if record is None or record.revoked_at is not None else "expired"

    def ssh_key_revoked(self, fingerprint: str) -> bool:
        """Whether the SSH key (``hoopgw keys add-ssh``) is revoked or no longer registered."""
        record = self._store.get_ssh_key(fingerprint)
        return record is None or record.revoked_at is not None

    def list(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        return self._store.list_keys()

    def revoke(self, key_id: str, *, now: float | None = None) -> bool:
        """Revoke a key from now on (``now`` defaults to the current time).

        :return: True if it was revoked by this call; False if it is unknown or already revoked.
        """
        return self._store.revoke_key(key_id, when=time.time() if now is None else now)


def _identity(record: ApiKeyRecord) -> Identity:
    return Identity(
        name=record.identity,
        groups=frozenset(record.groups),
        method="api-key",
        credential_id=record.key_id,
    )


def sessions_by_key(sessions: Iterable[Any]) -> dict[tuple[str, str], list[Any]]:
    """The live sessions that logged in with an API key or an SSH key, by
    ``(method, key id or fingerprint)``: what :func:`inactive_keys` checks.

    :param sessions: live sessions (see :class:`hoopgw.protocol.SessionRegistry`); a session
        exposes the :class:`~hoopgw.session.Identity` it logged in as in ``identity`` (None
        before login) and ends with ``terminate(reason)``.
    """
    by_key: dict[tuple[str, str], list[Any]] = {}
    for session in sessions:
        identity = getattr(session, "identity", None)
        if (
            identity is not None
            and identity.method in ("api-key", "ssh-key")
            and identity.credential_id
        ):
            by_key.setdefault((identity.method, identity.credential_id), []).append(session)
    return by_key


def inactive_keys(
    keys: KeyService, credentials: Iterable[tuple[str, str]], *, now: float
) -> dict[tuple[str, str], str]:
    """Which of ``credentials`` (``(method, id)`` pairs, as :func:`sessions_by_key` keys them)
    no longer work at ``now``, each with why: API keys revoked or expired, SSH keys revoked.

    It only reads the store (the gateway calls it off the reactor thread).
    """
    reasons: dict[tuple[str, str], str] = {}
    for method, key_id in credentials:
        if method == "ssh-key":
            if keys.ssh_key_revoked(key_id):
                reasons[(method, key_id)] = f"SSH key {key_id} has been revoked"
            continue
        why = keys.why_inactive(key_id, now=now)
        if why is not None:
            reasons[(method, key_id)] = f"API key {key_id} has " + (
                "been revoked" if why == "revoked" else why
            )
    return reasons


def end_sessions_of_inactive_keys(
    owned: dict[tuple[str, str], list[Any]], reasons: dict[tuple[str, str], str]
) -> int:
    """End every session of ``owned`` (from :func:`sessions_by_key`) whose credential has a
    reason to stop in ``reasons`` (from :func:`inactive_keys`), with that reason.

    :return: how many sessions were ended.
    """
    ended = 0
    for credential, sessions in owned.items():
        reason = reasons.get(credential)
        if reason is None:
            continue
        for session in sessions:
            session.terminate(reason)
            ended += 1
    return ended


def end_sessions_of_expired_identities(sessions: Iterable[Any], *, now: float) -> int:
    """End every live session whose identity's credential has expired by ``now`` (its
    :attr:`~hoopgw.session.Identity.expires_at`, set for OIDC tokens), with
    :data:`EXPIRY_REASON`.

    :param sessions: live sessions, as for :func:`sessions_by_key`.
    :return: how many sessions were ended.
    """
    ended = 0
    for session in sessions:
        identity = getattr(session, "identity", None)
        expires_at = None if identity is None else identity.expires_at
        if expires_at is not None and expires_at <= now:
            session.terminate(EXPIRY_REASON)
            ended += 1
    return ended
