"""Tests for :mod:`hoopgw.runtime.gateway`: listeners per connection, a clean stop, TLS options."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hoopgw_postgres.frontend import ClientSessionFactory
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from hoopgw.audit.chain import Durability
from hoopgw.audit.checkpoints import generate_signing_key, private_key_pem
from hoopgw.audit.writer import AuditWriter
from hoopgw.config.load import Config, parse_config
from hoopgw.errors import ReloadError, StartupError
from hoopgw.runtime import gateway as gateway_module
from hoopgw.runtime.gateway import Gateway
from hoopgw.testing import InlineWriterProcess

CONFIG = """
[gateway]
store = "sqlite:///hoopgw.db"
shutdown_grace = 2.0

[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
plugins = ["recording"]

[connections.credential]
user = "postgres"

[[connections]]
name = "pg2"
protocol = "postgres"
listen = "tcp:15433:interface=127.0.0.1"
target = "127.0.0.1:5433"
allow_groups = ["dba"]

[connections.credential]
user = "app"
"""


class Reactor(MemoryReactorClock):
    """A memory reactor whose ``callFromThread`` runs the call at once and whose listening
    ports record that they stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: list[int] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = super().listenTCP(port, factory, backlog, interface)
        listening.stopListening = lambda: self.stopped.append(port)
        return listening

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


RUNTIME = SimpleNamespace(config=SimpleNamespace(name="pg", protocol="postgres"))


class Lingering:
    """A live session that does not go away when told to."""

    runtime = RUNTIME

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def terminate(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.fixture(autouse=True)
def inline_audit_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        gateway_module,
        "AuditWriter",
        lambda url, reactor, spawn: AuditWriter(url, reactor, spawn=InlineWriterProcess().spawn),
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(CONFIG, base_dir=tmp_path)


def started(config: Config) -> tuple[Gateway, Reactor]:
    reactor = Reactor()
    gateway = Gateway(config, reactor)
    failures: list[Any] = []
    gateway.start().addErrback(failures.append)
    assert failures == []
    return gateway, reactor


def test_start_listens_on_every_connection_with_its_own_chain(config: Config) -> None:
    gateway, reactor = started(config)
    servers = {
        (port, interface): switch.current for port, switch, _, interface in reactor.tcpServers
    }
    assert set(servers) == {(15432, "127.0.0.1"), (15433, "127.0.0.1")}
    first, second = servers[(15432, "127.0.0.1")], servers[(15433, "127.0.0.1")]
    assert isinstance(first, ClientSessionFactory)
    assert first.runtime.info.name == "pg"
    assert first.runtime.chain.names == ("recording",)
    assert second.runtime.chain.names == ()
    assert first.runtime.sessions is second.runtime.sessions is gateway.sessions
    assert first.runtime.authenticator is second.runtime.authenticator
    assert first.runtime.server_tls is None
    assert first.runtime.reactor is reactor


def test_start_opens_the_store_and_the_audit_writer(config: Config, tmp_path: Path) -> None:
    gateway, _ = started(config)
    assert gateway.audit is not None
    assert (tmp_path / "hoopgw.db").exists()


def test_the_writer_process_is_spawned_without_checkpoints_by_default(config: Config) -> None:
    spawner = Gateway(config, Reactor())._writer_spawner()
    assert spawner.func is gateway_module.spawn_writer_process
    assert spawner.keywords["checkpoints"] is None
    assert spawner.keywords["durability"] == Durability(mode="fsync", sync_interval=0.01)


def test_the_writer_process_is_spawned_in_the_configured_durability_mode(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "shutdown_grace = 2.0",
        'shutdown_grace = 2.0\naudit_durability = "os"\naudit_sync_interval = 0.05',
    )
    spawner = Gateway(parse_config(text, base_dir=tmp_path), Reactor())._writer_spawner()
    assert spawner.keywords["durability"] == Durability(mode="os", sync_interval=0.05)


def test_a_signing_key_makes_the_writer_process_sign_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "signing.pem").write_bytes(private_key_pem(generate_signing_key()))
    text = CONFIG.replace(
        "shutdown_grace = 2.0",
        'shutdown_grace = 2.0\nsigning_key = "file:signing.pem"\ncheckpoint_every = 50\n'
        "checkpoint_interval = 60",
    )
    config = parse_config(text, base_dir=tmp_path)
    spawner = Gateway(config, Reactor())._writer_spawner()
    settings = spawner.keywords["checkpoints"]
    assert spawner.func is gateway_module.spawn_writer_process
    assert settings.directory == str(tmp_path / "checkpoints")
    assert (settings.every, settings.interval) == (50, 60.0)
    assert settings.signing_key is config.gateway.signing_key


def test_stop_ends_sessions_with_a_goodbye_and_stops_listening(config: Config) -> None:
    gateway, reactor = started(config)

    class Leaving:
        runtime = RUNTIME

        def __init__(self) -> None:
            self.reasons: list[str] = []

        def terminate(self, reason: str) -> None:
            self.reasons.append(reason)
            gateway.sessions.remove(self)

    session = Leaving()
    gateway.sessions.add(session)
    done: list[Any] = []
    gateway.stop().addBoth(done.append)
    assert done == [None]
    assert session.reasons == ["gateway stopping"]
    assert len(gateway.sessions) == 0
    assert sorted(reactor.stopped) == [15432, 15433]


def test_stop_waits_at_most_the_grace_period(config: Config) -> None:
    gateway, reactor = started(config)
    session = Lingering()
    gateway.sessions.add(session)
    done: list[Any] = []
    gateway.stop().addBoth(done.append)
    assert session.reasons == ["gateway stopping"]
    reactor.advance(1.0)
    assert done == []
    for _ in range(100):
        reactor.advance(0.05)
    assert done == [None]


class BusyPortReactor(Reactor):
    """A memory reactor on which port 15433 is taken by another program."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port == 15433:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address in use"))
        return super().listenTCP(port, factory, backlog, interface)


def test_a_busy_port_names_the_connection_and_leaves_nothing_listening(config: Config) -> None:
    reactor = BusyPortReactor()
    failures: list[Any] = []
    Gateway(config, reactor).start().addErrback(failures.append)
    [failure] = failures
    assert failure.check(StartupError)
    assert str(failure.value) == (
        "connection 'pg2' cannot listen on tcp:15433:interface=127.0.0.1: Address in use"
    )
    assert reactor.stopped == [15432]


def test_an_unreachable_target_is_warned_about_at_start(config: Config) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gateway, reactor = started(config)
        _refuse_second_target(reactor)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_level") is LogLevel.warn]
    assert event["connection"] == "pg2"
    assert event["target"] == "127.0.0.1:5433"
    assert gateway._listening  # a warning, not a failure to start


def _refuse_second_target(reactor: Reactor) -> None:
    targets = {(host, port): factory for host, port, factory, _, _ in reactor.tcpClients}
    assert set(targets) == {("127.0.0.1", 5432), ("127.0.0.1", 5433)}
    connector = reactor.connectors[1]
    targets[("127.0.0.1", 5433)].clientConnectionFailed(
        connector, Failure(ConnectionRefusedError("Connection refused"))
    )


def test_a_requirement_the_protocol_cannot_enforce_refuses_the_connection() -> None:
    from twisted.internet import task

    from hoopgw.connection import ConnectionConfig, CredentialConfig
    from hoopgw.errors import ConfigError
    from hoopgw.plugin import hookimpl
    from hoopgw.protocol import ProtocolSpec
    from hoopgw.runtime.chain import PluginChain
    from hoopgw.runtime.connections import upstream_options
    from hoopgw.session import UpstreamOptions

    class ReadOnly:
        @hookimpl
        def upstream_options(self) -> UpstreamOptions:
            return UpstreamOptions(read_only=True, reasons=("test: why",))

    connection = ConnectionConfig(
        name="box",
        protocol="ssh",
        listen="tcp:2222",
        target="127.0.0.1:22",
        credential=CredentialConfig(user="u"),
        allow_groups=("agents",),
    )
    chain = PluginChain([("ro", ReadOnly())], reactor=task.Clock())
    blind = ProtocolSpec(name="ssh", build_factory=lambda runtime: None)
    with pytest.raises(ConfigError, match="cannot enforce") as refused:
        upstream_options(connection, chain, blind)
    assert refused.value.connection == "box" and "test: why" in str(refused.value)
    enforcing = ProtocolSpec(
        name="ssh", build_factory=lambda runtime: None, enforces=frozenset({"read_only"})
    )
    assert upstream_options(connection, chain, enforcing).read_only


def test_a_worker_listens_only_on_the_sockets_its_parent_bound(config: Config) -> None:
    """A worker of ``[gateway] workers`` adopts the listening sockets it inherited; a listener
    the parent did not bind (a reload adding one) fails, saying why and what to do."""
    from hoopgw.runtime.worker import ControlLink, WorkerLink

    reactor = Reactor()
    link = WorkerLink(
        index=2, instance="w2", listeners={}, audit_fd=-1, control_fd=-1, serves_admin=False
    )
    gateway = Gateway(config, reactor, link)
    gateway._control = ControlLink(gateway.sessions, 2, reactor)
    failures: list[Failure] = []
    gateway.listen("tcp:15499", object(), "connection 'new'").addErrback(failures.append)
    [failure] = failures
    assert failure.check(StartupError)
    assert "connection 'new' cannot listen on tcp:15499: workers serve the listeners" in str(
        failure.value
    )
    assert reactor.tcpServers == []


def test_worker_1_s_admin_api_reloads_every_worker_through_the_parent(config: Config) -> None:
    """``POST /api/reload`` reaches worker 1 alone: reloading only it would leave the other
    workers enforcing the old config while the caller is told the reload was done. Worker 1
    asks the parent, which reloads every worker and answers with the result."""
    import json

    from twisted.internet.testing import StringTransport

    from hoopgw.runtime.worker import ControlLink, WorkerLink

    link = WorkerLink(
        index=1, instance="w1", listeners={}, audit_fd=-1, control_fd=-1, serves_admin=True
    )
    gateway = Gateway(config, Reactor(), link)
    gateway._control = ControlLink(gateway.sessions, 1, gateway.reactor)
    transport = StringTransport()
    gateway._control.makeConnection(transport)
    reloaded: list[Any] = []
    gateway.admin_reload(by="alice (admin API)").addCallbacks(reloaded.append, reloaded.append)
    assert json.loads(transport.value()) == {"op": "reload", "by": "alice (admin API)"}
    assert reloaded == []  # until the parent answers
    gateway._control.lineReceived(b'{"op": "reload_result", "ok": false, "error": "invalid"}')
    [failure] = reloaded
    assert failure.check(ReloadError) and failure.getErrorMessage() == "invalid"


def test_a_worker_calls_its_sqlite_store_on_the_reactor_thread(config: Config) -> None:
    """The SQLite connection is made on the reactor thread and refuses any other: a worker's
    store calls (logins, key checks) must stay there, though other workers share the file."""
    from hoopgw.runtime.worker import WorkerLink

    link = WorkerLink(
        index=2, instance="w2", listeners={}, audit_fd=-1, control_fd=-1, serves_admin=False
    )
    assert not Gateway(config, Reactor(), link).store_calls.threaded_pool
