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
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh import keys
from twisted.python.filepath import FilePath

from hoopgw_ssh.options import SshConfig

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
    if settings.known_hosts is not None and _revoked(Path(settings.known_hosts), key):
        raise HostKeyRefused(
            f"the target's host key {key.sshType().decode()} {shown} is marked @revoked in"
            f" {settings.known_hosts}: refused"
        )
    if shown in settings.host_key_fingerprints:
        return
    if settings.known_hosts is not None:
        known = KnownHostsFile.fromPath(FilePath(settings.known_hosts))
        name, changed = _known_hosts_name(host, port), False
        entry: Any  # zope interfaces confuse mypy about the methods' arguments
        # Any line for the host may hold the key (several during a key rotation); a line of
        # the same type with another key only counts as a change if none matches.
        for entry in known.iterentries():
            if entry.matchesHost(name):
                if entry.matchesKey(key):
                    return
                changed = changed or getattr(entry, "keyType", None) == key.sshType()
        if changed:
            raise HostKeyRefused(
                f"the target's host key CHANGED ({key.sshType().decode()} {shown}); it does "
                f"not match {settings.known_hosts}: refused (possible man-in-the-middle)"
            )
    raise HostKeyRefused(
        f"the target's host key {key.sshType().decode()} {shown} is unknown"
        " (not in known_hosts nor host_key_fingerprints): refused"
    )


def _revoked(path: Path, key: keys.Key) -> bool:
    """Whether an ``@revoked`` line of the known_hosts file at ``path`` holds ``key`` (for any
    host: a revoked key is refused wherever it shows up)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return False  # an unreadable file accepts nothing either
    blob = key.blob()
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == b"@revoked":
            try:
                if base64.b64decode(fields[3], validate=True) == blob:
                    return True
            except ValueError:
                continue
    return False
