"""Which SSH algorithms the gateway offers, on both legs (towards clients and the target).

Conch's defaults still include SHA-1 and CBC choices kept for old peers; the gateway offers
modern ones only: no ``ssh-rsa`` (SHA-1) or ``ssh-dss`` host keys, no SHA-1 key exchange
(``diffie-hellman-group1-sha1``, ``-group14-sha1``, ``-group-exchange-sha1``), no SHA-1 or MD5
MACs, no CBC or 3DES ciphers. A peer that knows nothing better cannot connect.

The same holds for user authentication: a client's RSA key must sign with ``rsa-sha2-256`` or
``rsa-sha2-512``, and weak keys (DSA, RSA below 2048 bits) are refused by
:func:`hoopgw.records.weak_key_reason`, the rule ``hoopgw keys add-ssh`` applies too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "RSA_SIGNATURES",
    "USER_KEY_ALGORITHMS",
    "modern_transport",
]

RSA_SIGNATURES = frozenset({b"rsa-sha2-256", b"rsa-sha2-512"})
"""The signature algorithms accepted for an RSA user key (``ssh-rsa`` is SHA-1)."""

USER_KEY_ALGORITHMS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)
"""User-auth signature algorithms the gateway's server accepts, announced to clients as
``server-sig-algs`` (RFC 8308) so that an OpenSSH client signs with SHA-2 for an RSA key."""

_REFUSED_HOST_KEYS = frozenset({b"ssh-rsa", b"ssh-dss"})
_REFUSED_KEX = frozenset(
    {
        b"diffie-hellman-group1-sha1",
        b"diffie-hellman-group14-sha1",
        b"diffie-hellman-group-exchange-sha1",
    }
)
_REFUSED_MACS = frozenset({b"hmac-sha1", b"hmac-md5"})


def _keep(names: Iterable[bytes], refused: frozenset[bytes]) -> list[bytes]:
    return [name for name in names if name not in refused]


def modern_transport(transport: Any) -> None:
    """Narrow the algorithm lists of a Conch transport (server or client) before it sends its
    ``KEXINIT``; the order of preference is Conch's."""
    transport.supportedPublicKeys = _keep(transport.supportedPublicKeys, _REFUSED_HOST_KEYS)
    transport.supportedKeyExchanges = [
        name
        for name in transport.supportedKeyExchanges
        if name not in _REFUSED_KEX and not name.endswith(b"-sha1")
    ]
    transport.supportedMACs = _keep(transport.supportedMACs, _REFUSED_MACS)
    transport.supportedCiphers = [
        name
        for name in transport.supportedCiphers
        if not name.endswith(b"-cbc") and not name.startswith(b"3des")
    ]
