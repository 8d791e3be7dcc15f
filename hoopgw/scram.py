"""SCRAM-SHA-256 key derivation (RFC 5802, RFC 7677), shared by stored verifiers and protocols."""

from __future__ import annotations

import hashlib
import hmac

import attrs

DEFAULT_ITERATIONS = 4096


@attrs.frozen(kw_only=True)
class ScramVerifier:
    """What a server stores to check a SCRAM-SHA-256 client without knowing its password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(Normalize(password), salt, i)``; passwords are used as UTF-8 without SASLprep,
    as PostgreSQL does for passwords that are not valid SASLprep input."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def client_key(salted: bytes) -> bytes:
    """``HMAC(SaltedPassword, "Client Key")``."""
    return hmac.digest(salted, b"Client Key", "sha256")


def server_key(salted: bytes) -> bytes:
    """``HMAC(SaltedPassword, "Server Key")``."""
    return hmac.digest(salted, b"Server Key", "sha256")


def make_verifier(
    password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS
) -> ScramVerifier:
    """Derive the stored verifier for ``password``."""
    salted = salted_password(password, salt, iterations)
    return ScramVerifier(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key(salted)).digest(),
        server_key=server_key(salted),
    )
