"""Tests for hoopgw_ssh.hostkeys: the gateway's own key and the check of the target's."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hoopgw_ssh.hostkeys import (
    HostKeyRefused,
    check_target_key,
    fingerprint,
    host_key_status,
    load_or_create_host_key,
)
from hoopgw_ssh.options import SshConfig
from twisted.conch.ssh import keys


def _key() -> keys.Key:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return keys.Key.fromString(pem)


def _line(key: keys.Key) -> str:
    return key.public().toString("openssh").decode()


def test_fingerprint_is_openssh_sha256_without_padding() -> None:
    key = _key()
    digest = hashlib.sha256(key.public().blob()).digest()
    assert fingerprint(key) == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert fingerprint(key) == fingerprint(key.public())
    assert len(fingerprint(key)) == len("SHA256:") + 43


def test_host_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "gw_key"
    assert host_key_status(str(path)).startswith("not created yet")
    key, created = load_or_create_host_key(str(path))
    assert created and key.type() == "Ed25519" and not key.isPublic()
    assert path.stat().st_mode & 0o777 == 0o600
    again, created = load_or_create_host_key(str(path))
    assert not created and fingerprint(again) == fingerprint(key)
    assert host_key_status(str(path)) == f"{fingerprint(key)} ({path})"
    path.write_text("garbage")
    assert host_key_status(str(path)).startswith("unreadable")


def _settings(
    tmp_path: Path, known: str | None = None, fingerprints: tuple[str, ...] = ()
) -> SshConfig:
    known_hosts = None
    if known is not None:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(known)
    return SshConfig(
        host_key=str(tmp_path / "gw"),
        known_hosts=None if known_hosts is None else str(known_hosts),
        host_key_fingerprints=fingerprints,
    )


def test_target_key_from_fingerprints(tmp_path: Path) -> None:
    key = _key()
    check_target_key(_settings(tmp_path, fingerprints=(fingerprint(key),)), "h", 22, key)
    with pytest.raises(HostKeyRefused, match="is unknown"):
        check_target_key(_settings(tmp_path, fingerprints=(fingerprint(_key()),)), "h", 22, key)


def test_target_key_from_known_hosts_plain_and_hashed(tmp_path: Path) -> None:
    key = _key()
    plain = f"[127.0.0.1]:2222 {_line(key)}\n"
    check_target_key(_settings(tmp_path, plain), "127.0.0.1", 2222, key)
    with pytest.raises(HostKeyRefused, match="is unknown"):
        check_target_key(_settings(tmp_path, plain), "127.0.0.1", 22, key)
    salt = b"0123456789abcdef0123"
    digest = hmac.new(salt, b"db.example", hashlib.sha1).digest()
    hashed = (
        f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {_line(key)}\n"
    )
    check_target_key(_settings(tmp_path, hashed), "db.example", 22, key)


def test_changed_target_key_is_refused(tmp_path: Path) -> None:
    known = f"[127.0.0.1]:2222 {_line(_key())}\n"
    with pytest.raises(HostKeyRefused, match="CHANGED"):
        check_target_key(_settings(tmp_path, known), "127.0.0.1", 2222, _key())


def test_empty_known_hosts_refuses(tmp_path: Path) -> None:
    with pytest.raises(HostKeyRefused, match="is unknown"):
        check_target_key(_settings(tmp_path, ""), "127.0.0.1", 22, _key())


def test_revoked_target_key_is_refused_even_if_listed(tmp_path: Path) -> None:
    key = _key()
    known = f"@revoked * {_line(key)}\n[127.0.0.1]:2222 {_line(key)}\n"
    settings = _settings(tmp_path, known, fingerprints=(fingerprint(key),))
    with pytest.raises(HostKeyRefused, match="@revoked"):
        check_target_key(settings, "127.0.0.1", 2222, key)
    other = _key()
    check_target_key(
        _settings(tmp_path, f"@revoked * {_line(other)}\n[127.0.0.1]:2222 {_line(key)}\n"),
        "127.0.0.1",
        2222,
        key,
    )


def test_any_of_several_keys_of_one_type_for_the_host_is_accepted(tmp_path: Path) -> None:
    key = _key()
    known = f"[127.0.0.1]:2222 {_line(_key())}\n[127.0.0.1]:2222 {_line(key)}\n"
    check_target_key(_settings(tmp_path, known), "127.0.0.1", 2222, key)
