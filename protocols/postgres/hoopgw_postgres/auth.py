"""Sans-io password exchanges of the PostgreSQL protocol: SCRAM-SHA-256 both ways, and MD5.

:class:`ScramServer` checks a client that logs in to the gateway; :class:`ScramClient` logs the
gateway in to the target. Both take and return the SASL message payloads (the ``data`` of
SASLInitialResponse, AuthenticationSASLContinue, SASLResponse and AuthenticationSASLFinal);
framing them is the caller's job.

Channel binding (``SCRAM-SHA-256-PLUS``) is not offered: the gateway ends the client's TLS, so a
binding to that channel would prove nothing about the target.

References: RFC 5802 (SCRAM), RFC 7677 (SCRAM-SHA-256), PostgreSQL ``src/backend/libpq/
auth-scram.c`` and the protocol chapter's "SASL Authentication" section.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from hoopgw import scram
from hoopgw.errors import AuthenticationError

__all__ = ["MECHANISM", "AuthenticationFailed", "ScramClient", "ScramServer", "md5_password"]

MECHANISM = "SCRAM-SHA-256"
"""The SASL mechanism name both sides use."""
_NONCE_BYTES = 18
"""Random bytes in a nonce, as PostgreSQL uses (24 characters once base64-encoded)."""
_DEFAULT_MAX_ITERATIONS = 100_000
"""Most PBKDF2 rounds a client accepts by default: 25 times PostgreSQL's default, and far
below what would let a hostile server stall the gateway."""


class AuthenticationFailed(AuthenticationError):
    """A SCRAM exchange failed: wrong password, forged server, or a malformed message."""


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The answer to AuthenticationMD5Password: ``"md5" + md5(md5(password + user) + salt)``,
    both digests in lowercase hex."""
    inner = hashlib.md5((password + user).encode("utf-8"), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + salt, usedforsecurity=False).hexdigest()
    return b"md5" + outer.encode("ascii")


def _new_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise AuthenticationFailed(f"malformed SCRAM message: invalid base64 in {what}") from None


def _text(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed("malformed SCRAM message: not UTF-8") from None


def _attribute(part: str, name: str) -> str:
    """The value of ``name=value``; anything else is malformed."""
    if not part.startswith(name + "="):
        raise AuthenticationFailed(f"malformed SCRAM message: expected attribute {name!r}")
    return part[2:]


def _check_extensions(parts: list[str]) -> None:
    """Optional extensions are ignored, as PostgreSQL does, but must be well formed."""
    for part in parts:
        if len(part) < 2 or not part[0].isascii() or not part[0].isalpha() or part[1] != "=":
            raise AuthenticationFailed("malformed SCRAM message: invalid attribute")


def _printable(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _escape_username(username: str) -> str:
    return username.replace("=", "=3D").replace(",", "=2C")


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(len(left), "big")


class ScramServer:
    """Server side of SCRAM-SHA-256, as PostgreSQL runs it, for one login attempt.

    Call :meth:`first` with the client-first message (SASLInitialResponse data) and send the
    result as AuthenticationSASLContinue; call :meth:`final` with the client-final message
    (SASLResponse data) and send the result as AuthenticationSASLFinal, then AuthenticationOk.
    Any failure raises :class:`AuthenticationFailed`; the exchange cannot be resumed.

    The username in the client-first message is ignored: PostgreSQL authenticates the user of
    the StartupMessage, and clients send an empty one.
    """

    def __init__(
        self,
        verifier: scram.ScramVerifier,
        *,
        channel_binding: None = None,
        nonce: str | None = None,
    ) -> None:
        """:param verifier: what is stored for the user being authenticated.
        :param channel_binding: must be None; -PLUS is not offered (see the module docstring).
        :param nonce: server nonce part; random unless a test fixes it."""
        if channel_binding is not None:
            raise ValueError("SCRAM channel binding is not supported")
        if nonce is not None and not _printable(nonce):
            raise ValueError("a SCRAM nonce is printable ASCII without ','")
        self._verifier = verifier
        self._server_nonce = nonce if nonce is not None else _new_nonce()
        self._gs2_header = ""
        self._nonce = ""
        self._auth_message_start = ""
        self._stage = "first"

    def first(self, client_first: bytes) -> bytes:
        """Read the client-first message; return the server-first message."""
        self._advance("first", "final")
        gs2_flag, authzid, bare = _split_client_first(_text(client_first))
        self._gs2_header = f"{gs2_flag},{authzid},"
        parts = bare.split(",")
        if len(parts) < 2:
            raise AuthenticationFailed("malformed SCRAM message: client-first is incomplete")
        if parts[0].startswith("m="):
            raise AuthenticationFailed("client requires an unsupported SCRAM extension")
        _attribute(parts[0], "n")
        client_nonce = _attribute(parts[1], "r")
        if not _printable(client_nonce):
            raise AuthenticationFailed("malformed SCRAM message: invalid client nonce")
        _check_extensions(parts[2:])
        self._nonce = client_nonce + self._server_nonce
        verifier = self._verifier
        server_first = f"r={self._nonce},s={_b64(verifier.salt)},i={verifier.iterations}"
        self._auth_message_start = f"{bare},{server_first},"
        return server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """Check the client-final message's proof; return the server-final message."""
        self._advance("final", "done")
        without_proof, separator, proof_text = _text(client_final).rpartition(",p=")
        if not separator:
            raise AuthenticationFailed("malformed SCRAM message: client-final has no proof")
        parts = without_proof.split(",")
        if len(parts) < 2:
            raise AuthenticationFailed("malformed SCRAM message: client-final is incomplete")
        binding = _unb64(_attribute(parts[0], "c"), "channel binding")
        if binding != self._gs2_header.encode("utf-8"):
            raise AuthenticationFailed("SCRAM channel binding does not match the client-first")
        if not hmac.compare_digest(_attribute(parts[1], "r"), self._nonce):
            raise AuthenticationFailed("SCRAM nonce does not match")
        _check_extensions(parts[2:])
        proof = _unb64(proof_text, "proof")
        if len(proof) != hashlib.sha256().digest_size:
            raise AuthenticationFailed("malformed SCRAM message: proof has the wrong length")
        auth_message = (self._auth_message_start + without_proof).encode("utf-8")
        verifier = self._verifier
        client_signature = hmac.digest(verifier.stored_key, auth_message, "sha256")
        client_key = _xor(proof, client_signature)
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key):
            raise AuthenticationFailed("password authentication failed")
        server_signature = hmac.digest(verifier.server_key, auth_message, "sha256")
        return f"v={_b64(server_signature)}".encode("ascii")

    def _advance(self, expected: str, then: str) -> None:
        if self._stage != expected:
            self._stage = "failed"
            raise AuthenticationFailed("unexpected SCRAM message")
        # Until the step succeeds the exchange counts as failed, so it cannot be retried.
        self._stage = "failed"
        self._next_stage = then

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)


def _split_client_first(text: str) -> tuple[str, str, str]:
    """Split ``gs2-cbind-flag "," [authzid] "," client-first-message-bare``."""
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise AuthenticationFailed("malformed SCRAM message: client-first is incomplete")
    gs2_flag, authzid, bare = parts
    if gs2_flag.startswith("p="):
        raise AuthenticationFailed("SCRAM channel binding is not supported")
    if gs2_flag not in ("n", "y"):
        raise AuthenticationFailed("malformed SCRAM message: invalid channel binding flag")
    if authzid:
        raise AuthenticationFailed("SCRAM authorization identity is not supported")
    return gs2_flag, authzid, bare
