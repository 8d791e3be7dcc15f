"""Tests for hoopgw_ssh.server and hoopgw_ssh.upstream start-up checks (no network)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hoopgw_ssh.hostkeys import fingerprint
from hoopgw_ssh.server import GatewaySession, SshServerFactory
from hoopgw_ssh.upstream import load_private_key
from twisted.conch.ssh import keys
from twisted.conch.ssh.common import getNS
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import hookimpl
from hoopgw.protocol import ConnectionRuntime
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.secrets import Secret
from hoopgw.session import CommandOutcome, ConnectionInfo
from hoopgw.store import open_store
from hoopgw.testing import FakeApprover, HookLog, make_session
from hoopgw.verdicts import Block, Hold

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
    assert Path(runtime.config.protocol_options.host_key).exists()
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


def _fakes() -> Any:
    # tests/protocols/ssh/fakes.py, loaded by tests/conftest.py (tests are no package).
    return sys.modules["hoopgw_tests_ssh_fakes"]


def _assert_modern(lists: dict[str, list[bytes]]) -> None:
    for weak in (b"ssh-rsa", b"ssh-dss"):
        assert weak not in lists["host_key"]
    assert not [kex for kex in lists["kex"] if kex.endswith(b"sha1")]
    assert b"diffie-hellman-group1-sha1" not in lists["kex"]
    for direction in ("cipher_out", "cipher_in"):
        assert lists[direction]
        assert not [c for c in lists[direction] if c.endswith(b"-cbc") or c.startswith(b"3des")]
    for direction in ("mac_out", "mac_in"):
        assert lists[direction]
        assert not [m for m in lists[direction] if m in (b"hmac-sha1", b"hmac-md5")]


@pytest.mark.parametrize("host_key", ["ed25519", "rsa"])
def test_server_offers_modern_algorithms_and_sets_no_delay(tmp_path: Path, host_key: str) -> None:
    if host_key == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa

        pem = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        (tmp_path / "box.ssh_host_ed25519_key").write_bytes(pem)
    runtime, store = _runtime(tmp_path, PRIVATE.toString("openssh").decode())
    fakes = _fakes()
    server = SshServerFactory(runtime).buildProtocol(None)
    link = fakes.TcpTransport()
    server.makeConnection(link)
    assert link.no_delay is True
    [kexinit] = fakes.plain_packets(link.value())
    lists = fakes.kexinit_lists(kexinit)
    _assert_modern(lists)
    expected = [b"ssh-ed25519"] if host_key == "ed25519" else [b"rsa-sha2-512", b"rsa-sha2-256"]
    assert lists["host_key"] == expected
    assert b"curve25519-sha256" in lists["kex"]
    store.close()


def test_server_announces_sha2_user_signatures(tmp_path: Path) -> None:
    runtime, store = _runtime(tmp_path, PRIVATE.toString("openssh").decode())
    fakes = _fakes()
    server = SshServerFactory(runtime).buildProtocol(None)
    server.makeConnection(fakes.TcpTransport())
    sent: list[tuple[int, bytes]] = []
    server.sendPacket = lambda kind, payload: sent.append((kind, payload))
    server._peerSupportsExtensions = True
    server.sendExtInfo([(b"server-sig-algs", b"ssh-ed25519")])
    [(kind, ext_info)] = sent
    assert kind == 7  # SSH_MSG_EXT_INFO
    name, value = getNS(ext_info[4:], 2)[:2]
    assert name == b"server-sig-algs"
    algorithms = value.split(b",")
    assert b"rsa-sha2-256" in algorithms and b"rsa-sha2-512" in algorithms
    assert b"ssh-rsa" not in algorithms and b"ssh-dss" not in algorithms
    store.close()


def test_upstream_offers_modern_algorithms_and_sets_no_delay() -> None:
    from types import SimpleNamespace

    from hoopgw_ssh.upstream import _Transport
    from twisted.internet import defer

    fakes = _fakes()
    client = _Transport(SimpleNamespace(), defer.Deferred())
    link = fakes.TcpTransport()
    client.makeConnection(link)
    assert link.no_delay is True
    [kexinit] = fakes.plain_packets(link.value())
    lists = fakes.kexinit_lists(kexinit)
    _assert_modern(lists)
    assert b"ssh-ed25519" in lists["host_key"] and b"rsa-sha2-256" in lists["host_key"]


# -- the session's commands: decided once, completed once, closed once -------------------------


class _Holding:
    @hookimpl
    def client_command(self) -> Hold:
        return Hold(reason="risky", approvers=("ops",))


class _Slow:
    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []

    @hookimpl
    def client_command(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


class _Transport:
    """What a :class:`GatewaySession` asks of the client transport."""

    def __init__(self) -> None:
        self.disconnects: list[bytes] = []

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.disconnects.append(reason)


class _Upstream:
    def __init__(self) -> None:
        self.transport = StringTransport()
        self.on_lost: Any = None
        self.on_channel_open: Any = None


def _session(plugins: list[tuple[str, object]]) -> tuple[GatewaySession, HookLog]:
    log = HookLog()
    reactor = MemoryReactorClock()
    runtime = ConnectionRuntime(
        config=None,  # type: ignore[arg-type]
        gateway=None,  # type: ignore[arg-type]
        info=ConnectionInfo(name="box", protocol="ssh", target="127.0.0.1:22"),
        chain=PluginChain([*plugins, ("log", log)], reactor=reactor),
        authenticator=None,  # type: ignore[arg-type]
        sessions=SessionRegistry(),
        reactor=reactor,
    )
    info = make_session(connection=runtime.info)
    session = GatewaySession(runtime, _Transport(), info, _Upstream())  # type: ignore[arg-type]
    runtime.sessions.add(session)
    return session, log


@pytest.mark.parametrize("held", [False, True], ids=["pending decision", "held for approval"])
def test_a_client_leaving_before_the_verdict_gets_its_command_cancelled_once(held: bool) -> None:
    approver = FakeApprover()
    deciders = [("hold", _Holding()), ("approver", approver)] if held else [("slow", _Slow())]
    session, log = _session(deciders)
    verdicts: list[Any] = []
    session.decide(session.new_command("rm -rf /srv", "exec", {})).addCallback(verdicts.append)
    session.logout()
    session.closed("again")
    assert isinstance(verdicts[0], Block)
    assert approver.withdrawn == (1 if held else 0)
    assert log.events == [
        ("decided", "rm -rf /srv", "Block"),
        ("completed", "rm -rf /srv", "cancelled"),
        ("closed", "client closed"),
    ]
    assert session.upstream.transport.disconnecting  # type: ignore[attr-defined]


def test_a_client_leaving_while_its_command_runs_gets_it_aborted_once() -> None:
    session, log = _session([])
    command = session.new_command("tail -f log", "exec", {})
    session.decide(command)
    session.terminate("access revoked")
    session.complete(command, CommandOutcome(status="ok"))  # too late: the first report won
    assert log.events == [
        ("decided", "tail -f log", "Allow"),
        ("completed", "tail -f log", "aborted"),
        ("closed", "access revoked"),
    ]
