"""Tests for hoopgw_ssh.server and hoopgw_ssh.upstream start-up checks (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hoopgw_ssh.hostkeys import fingerprint
from hoopgw_ssh.server import SshServerFactory
from hoopgw_ssh.upstream import load_private_key
from twisted.conch.ssh import keys
from twisted.internet.testing import MemoryReactorClock

from hoopgw.authn import Authenticator
from hoopgw.chain import PluginChain
from hoopgw.config import parse_config
from hoopgw.errors import ConfigError
from hoopgw.identity import KeyService
from hoopgw.protocol import ConnectionRuntime, SessionRegistry
from hoopgw.secrets import Secret
from hoopgw.session import ConnectionInfo
from hoopgw.store import open_store

PRIVATE = keys.Key.fromString(
    ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
)


def _runtime(tmp_path: Path, private_key: str) -> tuple[ConnectionRuntime, Any]:
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id_key").write_text(private_key)
    config = parse_config(
        """
[gateway]
store = "sqlite:///:memory:"
[[connections]]
name = "box"
protocol = "ssh"
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:22"
allow_groups = ["agents"]
credential = { user = "deploy", private_key = "file:id_key" }
ssh = { known_hosts = "known_hosts" }
""",
        base_dir=tmp_path,
    )
    store = open_store("sqlite:///:memory:")
    store.migrate()
    reactor = MemoryReactorClock()
    [connection] = config.connections
    runtime = ConnectionRuntime(
        config=connection,
        gateway=config.gateway,
        info=ConnectionInfo(name="box", protocol="ssh", target=connection.target),
        chain=PluginChain([], reactor=reactor, approval_timeout=10),
        authenticator=Authenticator(KeyService(store)),
        sessions=SessionRegistry(),
        reactor=reactor,
        store=store,
    )
    return runtime, store


def test_factory_creates_and_serves_the_host_key(tmp_path: Path) -> None:
    runtime, store = _runtime(tmp_path, PRIVATE.toString("openssh").decode())
    factory = SshServerFactory(runtime)
    [key] = factory.privateKeys.values()
    assert Path(runtime.config.ssh.host_key).exists()
    again = SshServerFactory(runtime)
    assert fingerprint(next(iter(again.privateKeys.values()))) == fingerprint(key)
    assert factory.publicKeys[key.sshType()].isPublic()
    store.close()


@pytest.mark.parametrize("text", ["garbage", PRIVATE.public().toString("openssh").decode()])
def test_factory_refuses_an_unusable_private_key(tmp_path: Path, text: str) -> None:
    runtime, store = _runtime(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SshServerFactory(runtime)
    assert caught.value.key == "credential.private_key"
    store.close()


def test_load_private_key() -> None:
    assert (
        load_private_key(
            Secret(reference="t", value=PRIVATE.toString("openssh").decode())
        ).isPublic()
        is False
    )
    with pytest.raises(keys.BadKeyError):
        load_private_key(Secret(reference="t", value=PRIVATE.public().toString("openssh").decode()))
