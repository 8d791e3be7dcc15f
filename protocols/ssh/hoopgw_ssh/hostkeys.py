"""Host keys on both sides of the gateway.

- The gateway's own host key per connection: read from ``[connections.ssh] host_key``, or
  generated (Ed25519, mode 0600) on the first start, so clients can pin it.
- The target's host key: accepted only when the connection's ``known_hosts`` file (OpenSSH
  format, hashed entries included) holds it for the target, or its fingerprint is listed in
  ``host_key_fingerprints``. An unknown or changed key is refused: the gateway never trusts a
  key on first use, since nobody would see the prompt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.ssh import keys
from twisted.python.filepath import FilePath

from hoopgw.config import SshConfig

__all__ = ["HostKeyRefused", "fingerprint", "host_key_status", "load_or_create_host_key"]


class HostKeyRefused(Exception):
    """The target presented a host key that the connection's config does not accept."""


def fingerprint(key: keys.Key) -> str:
    """``SHA256:<base64>`` of the key blob, as OpenSSH prints it (no ``=`` padding)."""
    digest = hashlib.sha256(key.public().blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_or_create_host_key(path: str) -> tuple[keys.Key, bool]:
    """The private host key at ``path``; generated and written (0600) when the file is missing.

    :return: the key and whether it was just created.
    :raises keys.BadKeyError: if the file exists but holds no usable private key.
    """
    file = Path(path)
    if file.exists():
        return keys.Key.fromString(file.read_bytes()), False
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    file.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two gateways starting at once must not overwrite each other's key.
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    return keys.Key.fromString(pem), True


def host_key_status(path: str) -> str:
    """What ``hoopgw config check`` says about a gateway host key: its fingerprint or why not."""
    file = Path(path)
    if not file.exists():
        return f"not created yet ({path}; made on the first start)"
    try:
        return f"{fingerprint(keys.Key.fromString(file.read_bytes()))} ({path})"
    except (keys.BadKeyError, OSError, ValueError) as exc:
        return f"unreadable ({path}: {exc})"


def _known_hosts_name(host: str, port: int) -> bytes:
    # OpenSSH writes a non-default port as [host]:port.
    name = host if port == 22 else f"[{host}]:{port}"
    return name.encode("utf-8")


def check_target_key(settings: SshConfig, host: str, port: int, key: keys.Key) -> None:
    """Accept the target's host ``key`` or raise :class:`HostKeyRefused` saying why.

    :param settings: the connection's ``[connections.ssh]`` table.
    """
    key = key.public()
    shown = fingerprint(key)
    if shown in settings.host_key_fingerprints:
        return
    if settings.known_hosts is not None:
        known = KnownHostsFile.fromPath(FilePath(settings.known_hosts))
        try:
            if known.hasHostKey(_known_hosts_name(host, port), key):
                return
        except HostKeyChanged:
            raise HostKeyRefused(
                f"the target's host key CHANGED ({key.sshType().decode()} {shown}); it does "
                f"not match {settings.known_hosts}: refused (possible man-in-the-middle)"
            ) from None
    raise HostKeyRefused(
        f"the target's host key {key.sshType().decode()} {shown} is unknown"
        " (not in known_hosts nor host_key_fingerprints): refused"
    )
