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

from hoopgw.errors import AuthenticationError
from hoopgw.secrets import ScramVerifier, salted_password, server_key
from hoopgw.secrets import client_key as scram_client_key

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
    "MECHANISM",
    "AuthenticationFailed",
    "ScramClient",
    "ScramServer",
    "md5_password",
]

MECHANISM = "SCRAM-SHA-256"
"""The SASL mechanism name both sides use."""
DEFAULT_MAX_ITERATIONS = 100_000
"""Most PBKDF2 rounds a client accepts by default: 25 times PostgreSQL's default, and far
below what would let a hostile server stall the gateway."""
_NONCE_BYTES = 18
"""Random bytes in a nonce, as PostgreSQL uses (24 characters once base64-encoded)."""
_GS2_HEADER = "n,,"
"""What the client sends before client-first-message-bare: no channel binding, no authzid."""


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


class _Exchange:
    """Steps taken in a fixed order; a step that fails ends the exchange."""

    _stage: str

    def _enter(self, stage: str) -> None:
        if self._stage != stage:
            self._stage = "failed"
            raise AuthenticationFailed("unexpected SCRAM message")
        # A step that raises leaves the exchange failed, so it cannot be retried.
        self._stage = "failed"


class ScramServer(_Exchange):
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
        verifier: ScramVerifier,
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
        self._enter("first")
        gs2_flag, authzid, bare = _split_client_first(_text(client_first))
        self._gs2_header = f"{gs2_flag},{authzid},"
        parts = bare.split(",")
        if len(parts) < 2:
            raise AuthenticationFailed("malformed SCRAM message: client-first is incomplete")
        if parts[0].startswith("m="):
            raise AuthenticationFailed("client requires an unsupported SCRAM extension")
        _attribute(parts[0], "n")  # present but ignored, as the class docstring says
        client_nonce = _attribute(parts[1], "r")
        if not _printable(client_nonce):
            raise AuthenticationFailed("malformed SCRAM message: invalid client nonce")
        _check_extensions(parts[2:])
        self._nonce = client_nonce + self._server_nonce
        verifier = self._verifier
        server_first = f"r={self._nonce},s={_b64(verifier.salt)},i={verifier.iterations}"
        self._auth_message_start = f"{bare},{server_first},"
        self._stage = "final"
        return server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """Check the client-final message's proof; return the server-final message."""
        self._enter("final")
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
        self._stage = "done"
        return f"v={_b64(server_signature)}".encode("ascii")


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


class ScramClient(_Exchange):
    """Client side of SCRAM-SHA-256, for the gateway's login to the target.

    Send ``first()`` as SASLInitialResponse data, ``final(server_first)`` as SASLResponse data,
    and pass the AuthenticationSASLFinal data to :meth:`verify`. Accept the following
    AuthenticationOk only if :attr:`verified` is true: a server that skips the final step, or
    signs it wrongly, has not proved it knows the password.
    """

    def __init__(
        self,
        password: str,
        *,
        username: str = "",
        nonce: str | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        """:param password: the target credential.
        :param username: sent in client-first; PostgreSQL ignores it, so libpq sends ``""``.
        :param nonce: client nonce; random unless a test fixes it.
        :param max_iterations: refuse servers that ask for more PBKDF2 rounds."""
        if nonce is not None and not _printable(nonce):
            raise ValueError("a SCRAM nonce is printable ASCII without ','")
        self._password = password
        self._client_nonce = nonce if nonce is not None else _new_nonce()
        self._client_first_bare = f"n={_escape_username(username)},r={self._client_nonce}"
        self._max_iterations = max_iterations
        self._server_signature = b""
        self._stage = "first"

    @property
    def verified(self) -> bool:
        """True once :meth:`verify` accepted the server's signature."""
        return self._stage == "done"

    def first(self) -> bytes:
        """The client-first message."""
        self._enter("first")
        self._stage = "final"
        return f"{_GS2_HEADER}{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        """Read the server-first message; return the client-final message with the proof."""
        self._enter("final")
        text = _text(server_first)
        parts = text.split(",")
        if len(parts) < 3:
            raise AuthenticationFailed("malformed SCRAM message: server-first is incomplete")
        if parts[0].startswith("m="):
            raise AuthenticationFailed("server requires an unsupported SCRAM extension")
        nonce = _attribute(parts[0], "r")
        if not (
            len(nonce) > len(self._client_nonce)
            and nonce.startswith(self._client_nonce)
            and _printable(nonce)
        ):
            raise AuthenticationFailed("SCRAM server nonce does not extend the client nonce")
        salt = _unb64(_attribute(parts[1], "s"), "salt")
        if not salt:
            raise AuthenticationFailed("malformed SCRAM message: empty salt")
        iterations_text = _attribute(parts[2], "i")
        if not iterations_text.isascii() or not iterations_text.isdigit():
            raise AuthenticationFailed("malformed SCRAM message: invalid iteration count")
        iterations = int(iterations_text)
        if not 1 <= iterations <= self._max_iterations:
            raise AuthenticationFailed(
                f"SCRAM iteration count {iterations} is outside 1 to {self._max_iterations}"
            )
        _check_extensions(parts[3:])
        without_proof = f"c={_b64(_GS2_HEADER.encode())},r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        salted = salted_password(self._password, salt, iterations)
        client_key = scram_client_key(salted)
        stored_key = hashlib.sha256(client_key).digest()
        client_signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = _xor(client_key, client_signature)
        self._server_signature = hmac.digest(server_key(salted), auth_message, "sha256")
        self._stage = "verify"
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server-final message; raise :class:`AuthenticationFailed` unless the server
        proved it knows the password."""
        self._enter("verify")
        parts = _text(server_final).split(",")
        if parts[0].startswith("e="):
            raise AuthenticationFailed(f"server rejected the SCRAM exchange: {parts[0][2:]}")
        signature = _unb64(_attribute(parts[0], "v"), "server signature")
        _check_extensions(parts[1:])
        if not hmac.compare_digest(signature, self._server_signature):
            raise AuthenticationFailed("SCRAM server signature is wrong")
        self._stage = "done"
