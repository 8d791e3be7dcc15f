"""Upstream authentication: the answers a MySQL or MariaDB client gives each auth plugin.

Sans-io: :class:`PasswordAuthenticator` is handed the plugin name and data the server sent (in
the greeting or an AuthSwitchRequest) and the AuthMoreData packets that follow, and returns the
bytes to send back. The gateway uses it to log in to the target with the stored credential.

Plugins and their specifications:

* ``mysql_native_password``: ``SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))``.
* ``caching_sha2_password`` (MySQL 8): the fast path answers
  ``SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble)``; the server replies
  ``0x01 0x03`` (cached, accepted) or ``0x01 0x04`` (full authentication). Full authentication
  sends the password NUL-terminated in clear over TLS, or, without TLS, XORed with the scramble
  and encrypted with RSA-OAEP under the server's public key (asked for with ``0x02``).
* ``sha256_password``: full authentication only, as above (the key is asked for with ``0x01``).
* ``client_ed25519`` (MariaDB): an Ed25519 signature of the 32-byte scramble whose secret key is
  derived from ``SHA512(password)`` the way RFC 8032 derives it from a seed.
* ``mysql_clear_password``: the password NUL-terminated, in clear -- only over TLS or to a target
  on loopback.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hoopgw.errors import HoopgwError

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
SHA256 = "sha256_password"
ED25519 = "client_ed25519"
CLEAR = "mysql_clear_password"

SUPPORTED = (NATIVE, CACHING_SHA2, SHA256, ED25519, CLEAR)

FAST_AUTH_OK = b"\x03"
PERFORM_FULL_AUTH = b"\x04"
REQUEST_PUBLIC_KEY = b"\x02"


class UpstreamAuthError(HoopgwError):
    """The target asked for an authentication the gateway cannot or will not do safely."""


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def native_password(password: bytes, scramble: bytes) -> bytes:
    """The ``mysql_native_password`` answer (empty for an empty password)."""
    if not password:
        return b""
    # SHA-1 is what the plugin is defined with; prefer caching_sha2_password on the target.
    stage1 = hashlib.sha1(password).digest()  # noqa: S324
    stage2 = hashlib.sha1(stage1).digest()  # noqa: S324
    return _xor(stage1, hashlib.sha1(scramble[:20] + stage2).digest())  # noqa: S324


def caching_sha2_scramble(password: bytes, scramble: bytes) -> bytes:
    """The ``caching_sha2_password`` fast-path answer (empty for an empty password)."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + scramble[:20]).digest())


def rsa_encrypt_password(password: bytes, scramble: bytes, public_key_pem: bytes) -> bytes:
    """The password, NUL-terminated, XORed with the scramble and encrypted with RSA-OAEP (SHA-1)
    under the server's public key, as full authentication without TLS sends it."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise UpstreamAuthError("the target's public key is not an RSA key")
    return key.encrypt(
        _xor(password + b"\0", scramble[:20]),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 -- the protocol's padding
    )


# -- Ed25519 with a password instead of a 32-byte seed (MariaDB's client_ed25519) -------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_GY = 4 * pow(5, _P - 2, _P) % _P
_GX_SQ = (_GY * _GY - 1) * pow(_D * _GY * _GY + 1, _P - 2, _P) % _P
_GX = pow(_GX_SQ, (_P + 3) // 8, _P)
if (_GX * _GX - _GX_SQ) % _P:
    _GX = _GX * pow(2, (_P - 1) // 4, _P) % _P
if _GX & 1:
    _GX = _P - _GX
_BASE = (_GX, _GY, 1, _GX * _GY % _P)


def _add(p: tuple[int, int, int, int], q: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    # Extended twisted Edwards coordinates (RFC 8032, section 5.1.4).
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int) -> tuple[int, int, int, int]:
    result = (0, 1, 1, 0)
    point = _BASE
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _encode_point(point: tuple[int, int, int, int]) -> bytes:
    inverse = pow(point[2], _P - 2, _P)
    x, y = point[0] * inverse % _P, point[1] * inverse % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def ed25519_public_key(password: bytes) -> bytes:
    """The public key MariaDB stores for ``password`` (``ed25519`` plugin, before base64)."""
    digest = hashlib.sha512(password).digest()
    return _encode_point(_multiply(_clamp(digest[:32])))


def _clamp(half: bytes) -> int:
    scalar = bytearray(half)
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return int.from_bytes(scalar, "little")


def ed25519_sign(password: bytes, message: bytes) -> bytes:
    """The ``client_ed25519`` answer: an RFC 8032 signature of ``message`` whose expanded
    secret key is ``SHA512(password)``."""
    digest = hashlib.sha512(password).digest()
    a = _clamp(digest[:32])
    public = _encode_point(_multiply(a))
    r = int.from_bytes(hashlib.sha512(digest[32:] + message).digest(), "little") % _L
    big_r = _encode_point(_multiply(r))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % _L
    s = (r + k * a) % _L
    return big_r + s.to_bytes(32, "little")


# -- the exchange ----------------------------------------------------------------------------


class PasswordAuthenticator:
    """Answers the target's authentication requests with one stored password.

    :param password: the stored credential (empty for none).
    :param secure: the connection is TLS-protected, so the password may be sent in clear.
    :param cleartext_allowed: ``mysql_clear_password`` may be used (TLS, or a loopback target).
    """

    def __init__(self, password: bytes, *, secure: bool, cleartext_allowed: bool) -> None:
        self._password = password
        self._secure = secure
        self._cleartext = cleartext_allowed
        self._plugin = ""
        self._scramble = b""
        self._awaiting_key = False
        self.plugin = ""
        """The plugin of the current exchange."""

    def start(self, plugin: str, data: bytes) -> bytes:
        """The answer to a greeting or an AuthSwitchRequest for ``plugin`` with ``data``.

        :raises UpstreamAuthError: an unknown plugin, or cleartext where it is not safe.
        """
        self.plugin = plugin
        self._scramble = data.rstrip(b"\0") if plugin != ED25519 else data[:32]
        self._awaiting_key = False
        if plugin == NATIVE or plugin == "":
            return native_password(self._password, self._scramble)
        if plugin == CACHING_SHA2:
            return caching_sha2_scramble(self._password, self._scramble)
        if plugin == SHA256:
            if not self._password:
                return b"\0"
            if self._secure:
                return self._password + b"\0"
            self._awaiting_key = True
            return b"\x01"
        if plugin == ED25519:
            return ed25519_sign(self._password, self._scramble)
        if plugin == CLEAR:
            if not self._cleartext:
                raise UpstreamAuthError(
                    "the target asked for mysql_clear_password over a connection that is "
                    "neither TLS nor loopback; refused (set upstream_tls sslmode=require)"
                )
            return self._password + b"\0"
        raise UpstreamAuthError(f"the target asked for an unsupported auth plugin {plugin!r}")

    def more_data(self, data: bytes) -> bytes | None:
        """The answer to an AuthMoreData packet (without its 0x01 header), or None when the
        server expects nothing (fast authentication succeeded; an OK follows).

        :raises UpstreamAuthError: data that does not fit the exchange.
        """
        if self.plugin == CACHING_SHA2 and not self._awaiting_key:
            if data == FAST_AUTH_OK:
                return None
            if data == PERFORM_FULL_AUTH:
                if self._secure:
                    return self._password + b"\0"
                self._awaiting_key = True
                return REQUEST_PUBLIC_KEY
            raise UpstreamAuthError("unexpected caching_sha2_password data from the target")
        if self._awaiting_key and self.plugin in (CACHING_SHA2, SHA256):
            self._awaiting_key = False
            return rsa_encrypt_password(self._password, self._scramble, data)
        raise UpstreamAuthError(f"unexpected authentication data for {self.plugin}")
