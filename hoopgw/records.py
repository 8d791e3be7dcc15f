"""Records the gateway keeps that plugins and protocols see: :class:`AuditEntry`, what the
recording plugin writes through :attr:`hoopgw.plugin.PluginContext.audit`; and the SSH public
keys registered to identities (:class:`SshKeyRecord`, looked up through :class:`SshKeyStore`,
which the SSH protocol gets as :attr:`hoopgw.protocol.ConnectionRuntime.store`).

A client that logs in to an SSH connection with a public key is the identity the key is
registered to (``hoopgw keys add-ssh``). The store keeps the public key only, found by its
SHA-256 fingerprint; it never sees a private key.
"""

from __future__ import annotations

import abc
from typing import Any

import attrs

__all__ = ["MIN_RSA_BITS", "AuditEntry", "SshKeyRecord", "SshKeyStore", "weak_key_reason"]


@attrs.frozen(kw_only=True)
class AuditEntry:
    """A record to be written; the store assigns its place in the chain."""

    kind: str
    """What happened: ``session_started``, ``command_received``, ``command_decided``, ..."""
    session_id: str
    """The session it belongs to."""
    time: float
    """POSIX time it happened."""
    data: dict[str, Any]
    """Details; JSON-serialisable (str keys; str, int, float, bool, None, lists, dicts)."""


MIN_RSA_BITS = 2048
"""Smallest RSA key that may be registered or log in."""


def weak_key_reason(key_type: str, bits: int) -> str | None:
    """Why a user key is too weak to register or to log in with, or None.

    The one rule for ``hoopgw keys add-ssh`` and for the SSH server (which also refuses keys
    registered before the rule existed).

    :param key_type: ``"RSA"``, ``"DSA"``, ``"EC"``, ``"Ed25519"``, ... (Conch's ``Key.type()``).
    :param bits: the key size in bits.
    """
    if key_type == "DSA":
        return "DSA (ssh-dss) keys are refused: use an Ed25519, ECDSA or RSA (2048+ bits) key"
    if key_type == "RSA" and bits < MIN_RSA_BITS:
        return f"RSA key of {bits} bits is refused: at least {MIN_RSA_BITS} bits are required"
    return None


@attrs.frozen(kw_only=True)
class SshKeyRecord:
    """One registered SSH public key."""

    fingerprint: str
    """``SHA256:<base64 without padding>`` of the key blob, as ``ssh-keygen -lf`` prints it."""
    identity: str
    """The identity the key authenticates as."""
    groups: tuple[str, ...]
    """Groups granted to that identity while it uses this key."""
    public_key: str
    """The key in OpenSSH one-line form (``ssh-ed25519 AAAA...``), without its comment."""
    comment: str
    """The comment of the registered line (often ``user@host``), for listings."""
    created_at: float
    """POSIX time the key was registered."""
    revoked_at: float | None = None
    """POSIX time the key was revoked, or None."""
    last_used_at: float | None = None
    """POSIX time of the last successful login with it, or None."""


class SshKeyStore(abc.ABC):
    """The store's part that keeps SSH public keys; every method may raise ``StoreError``."""

    @abc.abstractmethod
    def add_ssh_key(self, key: SshKeyRecord) -> None:
        """Store a new key.

        :raises StoreError: also if a key with the same fingerprint is registered already.
        """

    @abc.abstractmethod
    def get_ssh_key(self, fingerprint: str) -> SshKeyRecord | None:
        """The key with this fingerprint (revoked or not), or None."""

    @abc.abstractmethod
    def list_ssh_keys(self) -> list[SshKeyRecord]:
        """Every key, oldest first."""

    @abc.abstractmethod
    def revoke_ssh_key(self, fingerprint: str, *, when: float) -> bool:
        """Mark the key revoked at ``when``.

        :return: True if this call revoked it; False if it is unknown or already revoked.
        """

    @abc.abstractmethod
    def touch_ssh_key(self, fingerprint: str, when: float) -> None:
        """Record that the key logged in successfully at ``when``."""
