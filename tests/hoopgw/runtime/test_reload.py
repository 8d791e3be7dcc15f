"""Tests for :mod:`hoopgw.runtime.reload`: a reload applies changed connections all or nothing,
keeps unchanged plugin instances, and ends the sessions the new config no longer allows."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from hoopgw.audit.writer import AuditWriter
from hoopgw.config.load import load_config
from hoopgw.errors import ReloadError
from hoopgw.reviews import GrantRecord
from hoopgw.runtime import gateway as gateway_module
from hoopgw.runtime.gateway import Gateway
from hoopgw.runtime.switch import ListenerSwitch
from hoopgw.session import Identity
from hoopgw.testing import InlineWriterProcess, make_session

HEAD = """
[gateway]
store = "sqlite:///hoopgw.db"
shutdown_grace = 0.1
"""

PG = """
[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = {groups}
plugins = ["recording", "guardrails"]

[connections.credential]
user = "{user}"

[connections.guardrails]
deny = {deny}
"""

PG2 = """
[[connections]]
name = "pg2"
protocol = "postgres"
listen = "tcp:{port}:interface=127.0.0.1"
target = "127.0.0.1:5433"
allow_groups = ["dba"]

[connections.credential]
user = "app"
"""


class Reactor(MemoryReactorClock):
    """Records stopped ports; refuses to listen on the ports in :attr:`taken`."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: list[int] = []
        self.taken: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        listening = super().listenTCP(port, factory, backlog, interface)
        listening.stopListening = lambda: self.stopped.append(port)
        return listening

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class Live:
    """A live session of a connection, as the registry holds it."""

    count = 0

    def __init__(self, gateway: Gateway, connection: str, groups: frozenset[str]) -> None:
        Live.count += 1
        self.session_info = make_session(
            groups=sorted(groups), session_id=f"00000000-0000-4000-8000-{Live.count:012d}"
        )
        self.identity: Identity = self.session_info.identity
        [config] = [c for c in gateway.config.connections if c.name == connection]
        self.runtime = SimpleNamespace(config=config)
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


def write(
    path: Path,
    *,
    groups: str = '["agents"]',
    deny: str = '["ddl"]',
    pg2: int = 0,
    user: str = "postgres",
) -> None:
    text = HEAD + PG.format(groups=groups, deny=deny, user=user)
    if pg2:
        text += PG2.format(port=pg2)
    path.write_text(text)


def started(tmp_path: Path) -> tuple[Gateway, Reactor, Path]:
    path = tmp_path / "hoopgw.toml"
    write(path)
    reactor = Reactor()
    gateway = Gateway(load_config(path), reactor)
    failures: list[Any] = []
    gateway.start().addErrback(failures.append)
    assert failures == []
    return gateway, reactor, path


def reload(gateway: Gateway) -> Any:
    results: list[Any] = []
    gateway.reload(by="test").addBoth(results.append)
    assert results, "the reload did not finish"
    return results[0]


def records(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "hoopgw.db") as db:
        rows = db.execute(
            "SELECT session_id, data FROM audit_records WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [{"session_id": s, **json.loads(d)} for s, d in rows]


def test_a_changed_policy_and_a_new_connection_apply_keeping_unchanged_plugins(
    tmp_path: Path,
) -> None:
    gateway, reactor, path = started(tmp_path)
    before = gateway.served["pg"]
    old_chain, switch = before.runtime.chain, before.switch
    write(path, deny='["ddl", "drop"]', pg2=15433)
    changes = reload(gateway)
    assert changes == {
        "added": ["pg2"],
        "removed": [],
        "changed": {"pg": ["guardrails"]},
        "ended_sessions": [],
    }
    new_chain = gateway.served["pg"].runtime.chain
    assert old_chain.successor is new_chain  # live sessions take it at their next command
    old, new = dict(old_chain.plugins), dict(new_chain.plugins)
    assert new["recording"] is old["recording"]  # options unchanged: the same instance
    assert new["guardrails"] is not old["guardrails"]
    # The address did not change: the same listener, its new clients reach the new factory.
    assert gateway.served["pg"].switch is switch and switch.current.runtime.chain is new_chain
    ports = [(port, interface) for port, _, _, interface in reactor.tcpServers]
    assert ports.count((15432, "127.0.0.1")) == 1 and (15433, "127.0.0.1") in ports
    assert [c.name for c in gateway.config.connections] == ["pg", "pg2"]
    [record] = records(tmp_path, "config_reloaded")
    assert record["by"] == "test" and record["digest"].startswith("sha256:")
    assert record["changed"] == {"pg": ["guardrails"]} and record["added"] == ["pg2"]


def test_an_invalid_config_is_refused_and_the_old_one_keeps_running(tmp_path: Path) -> None:
    gateway, _reactor, path = started(tmp_path)
    config, chain = gateway.config, gateway.served["pg"].runtime.chain
    path.write_text(path.read_text().replace('deny = ["ddl"]', 'deny = ["no-such-class"]'))
    failure = reload(gateway)
    assert failure.check(ReloadError)
    assert "no-such-class" in failure.getErrorMessage()
    assert "connection 'pg'" in failure.getErrorMessage() or "pg" in failure.getErrorMessage()
    assert gateway.config is config and gateway.served["pg"].runtime.chain is chain
    assert chain.successor is None
    assert records(tmp_path, "config_reloaded") == []
    # The refusal itself is in the audit chain: who asked, which file, and why.
    [refused] = records(tmp_path, "config_reload_refused")
    assert refused["by"] == "test" and refused["session_id"] == ""
    assert refused["file"] == str(path.resolve())
    assert refused["digest"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert refused["errors"] == [failure.getErrorMessage()]


def test_every_refused_reload_is_recorded_even_an_unreadable_file(tmp_path: Path) -> None:
    gateway, reactor, path = started(tmp_path)
    reactor.taken.add(15433)
    write(path, pg2=15433)
    assert reload(gateway).check(ReloadError)  # valid, but its listener cannot bind
    path.write_bytes(b"\xff not UTF-8")
    assert reload(gateway).check(ReloadError)
    path.unlink()
    assert reload(gateway).check(ReloadError)
    refused = records(tmp_path, "config_reload_refused")
    assert [r["digest"] != "" for r in refused] == [True, True, False]  # the last: no file
    assert "cannot listen on" in refused[0]["errors"][0]
    assert "not UTF-8 text" in refused[1]["errors"][0]
    assert "No such file" in refused[2]["errors"][0]
    assert records(tmp_path, "config_reloaded") == []


def test_a_refused_reload_is_verified_exported_and_counted_in_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hoopgw.cli.main import main

    gateway, reactor, path = started(tmp_path)
    reactor.taken.add(15433)
    write(path, pg2=15433)
    assert reload(gateway).check(ReloadError)
    capsys.readouterr()
    assert main(["audit", "verify", "-c", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["audit", "export", "-c", str(path), "--format", "jsonl"]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [refused] = [r for r in exported if r["kind"] == "config_reload_refused"]
    assert "cannot listen on" in refused["data"]["errors"][0]
    pack = tmp_path / "pack"
    assert main(["evidence", "-c", str(path), "--since", "1970-01-01", "--out", str(pack)]) == 0
    summary = json.loads((pack / "summary.json").read_text())
    assert "config_reload_refused" in json.dumps(summary)


def test_a_reload_a_worker_refuses_for_the_admin_api_is_recorded_naming_the_admin(
    tmp_path: Path,
) -> None:
    """With workers the parent asks each worker to reload for worker 1's admin API: a worker
    that refuses records it, naming the admin, and answers the parent with why."""
    from twisted.internet.testing import StringTransport

    from hoopgw.runtime.worker import ControlLink

    gateway, _, path = started(tmp_path)
    path.chmod(0o666)
    link = ControlLink(
        gateway.sessions, 2, gateway.reactor, reload=lambda by: gateway.reload(by=by)
    )
    transport = StringTransport()
    link.makeConnection(transport)
    link.lineReceived(b'{"op": "reload", "id": 1, "by": "alice (admin API)"}')
    [answer] = [json.loads(line) for line in transport.value().splitlines()]
    assert answer["op"] == "reloaded" and answer["ok"] is False
    [refused] = records(tmp_path, "config_reload_refused")
    assert refused["by"] == "alice (admin API)"
    assert refused["errors"] == [answer["error"]]


def test_a_config_file_others_may_write_is_refused_by_a_reload(tmp_path: Path) -> None:
    gateway, _, path = started(tmp_path)
    write(path, deny='["ddl", "drop"]')
    path.chmod(0o666)
    failure = reload(gateway)
    assert failure.check(ReloadError) and "writable by group or others" in failure.getErrorMessage()
    assert str(path.resolve()) in failure.getErrorMessage()
    assert [r["errors"] for r in records(tmp_path, "config_reload_refused")] == [
        [failure.getErrorMessage()]
    ]


def test_a_listener_that_cannot_bind_refuses_the_whole_reload(tmp_path: Path) -> None:
    gateway, reactor, path = started(tmp_path)
    chain = gateway.served["pg"].runtime.chain
    reactor.taken.add(15433)
    write(path, deny='["ddl", "drop"]', pg2=15433)
    failure = reload(gateway)
    assert failure.check(ReloadError)
    assert "connection 'pg2' cannot listen on" in failure.getErrorMessage()
    assert "the running config stays" in failure.getErrorMessage()
    assert chain.successor is None and "pg2" not in gateway.served  # nothing of it applied


def test_a_moved_listener_binds_first_then_closes_the_old_address(tmp_path: Path) -> None:
    gateway, reactor, path = started(tmp_path)
    write(path, pg2=15433)
    reload(gateway)
    old_switch = gateway.served["pg2"].switch
    write(path, pg2=15434)
    assert reload(gateway)["changed"] == {"pg2": ["listen"]}
    assert 15433 in reactor.stopped and 15434 not in reactor.stopped
    assert gateway.served["pg2"].switch is not old_switch


def test_a_changed_gateway_table_needs_a_restart(tmp_path: Path) -> None:
    gateway, _, path = started(tmp_path)
    path.write_text(path.read_text().replace("shutdown_grace = 0.1", "shutdown_grace = 3.0"))
    failure = reload(gateway)
    assert failure.check(ReloadError)
    assert "[gateway] changed" in failure.getErrorMessage()


def test_a_removed_connection_ends_its_sessions_with_a_record(tmp_path: Path) -> None:
    gateway, reactor, path = started(tmp_path)
    write(path, pg2=15433)
    reload(gateway)
    live = Live(gateway, "pg2", frozenset({"dba"}))
    gateway.sessions.add(live)
    write(path)
    changes = reload(gateway)
    assert changes["removed"] == ["pg2"]
    assert changes["ended_sessions"] == [live.session_info.id]
    assert live.reasons == [
        'connection "pg2" was removed from the gateway\'s config (config reloaded)'
    ]
    assert 15433 in reactor.stopped
    [ended] = records(tmp_path, "session_terminated")
    assert ended["session_id"] == live.session_info.id
    assert ended["by"] == "config reload (test)"


def test_a_session_whose_identity_lost_access_is_ended(tmp_path: Path) -> None:
    gateway, _, path = started(tmp_path)
    kept = Live(gateway, "pg", frozenset({"agents", "dba"}))
    lost = Live(gateway, "pg", frozenset({"agents"}))
    gateway.sessions.add(kept)
    gateway.sessions.add(lost)
    write(path, groups='["dba"]')
    changes = reload(gateway)
    assert changes["ended_sessions"] == [lost.session_info.id]
    assert kept.reasons == []
    assert lost.reasons and "may no longer use connection" in lost.reasons[0]
    # A client logging in now is judged by the new config too.
    assert gateway.authenticator is not None and gateway.authenticator.connections is not None
    assert gateway.authenticator.connections["pg"].allow_groups == ("dba",)


def test_a_connection_made_just_in_time_keeps_only_the_granted_sessions(tmp_path: Path) -> None:
    path = tmp_path / "hoopgw.toml"
    write(path)
    # Just-in-time access needs the admin API (where requests are decided).
    path.write_text(
        path.read_text().replace(
            "shutdown_grace = 0.1\n",
            'shutdown_grace = 0.1\nadmin_listen = "tcp:18080:interface=127.0.0.1"\n',
        )
    )
    reactor = Reactor()
    gateway = Gateway(load_config(path), reactor)
    gateway.start()
    granted = Live(gateway, "pg", frozenset({"agents"}))
    ungranted = Live(gateway, "pg", frozenset({"agents"}))
    ungranted.session_info = make_session(
        identity="bob", groups=["agents"], session_id="00000000-0000-4000-8000-0000000000ff"
    )
    ungranted.identity = ungranted.session_info.identity
    gateway.sessions.add(granted)
    gateway.sessions.add(ungranted)
    assert gateway._store is not None
    gateway._store.add_grant(
        GrantRecord(
            id="0123456789ab",
            review_id="ba9876543210",
            identity=granted.identity.name,
            connection="pg",
            reason="incident",
            approved_by=("lead",),
            created_at=reactor.seconds(),
            expires_at=reactor.seconds() + 3600,
        )
    )
    text = path.read_text().replace(
        'plugins = ["recording", "guardrails"]\n',
        'plugins = ["recording", "guardrails"]\naccess = "jit"\njit_approvers = ["leads"]\n',
    )
    path.write_text(text)
    changes = reload(gateway)
    assert changes["ended_sessions"] == [ungranted.session_info.id]
    assert granted.reasons == []
    assert ungranted.reasons and "needs a just-in-time grant" in ungranted.reasons[0]


def test_a_changed_upstream_login_ends_the_live_sessions(tmp_path: Path) -> None:
    """A rotated credential or a lower-privileged login must not leave sessions of the old
    one running: they end and reconnect under the new one."""
    gateway, _, path = started(tmp_path)
    live = Live(gateway, "pg", frozenset({"agents"}))
    gateway.sessions.add(live)
    write(path, user="reader")
    changes = reload(gateway)
    assert changes["ended_sessions"] == [live.session_info.id]
    assert live.reasons == [
        'connection "pg" changed how the gateway reaches the target (credential); reconnect'
        " (config reloaded)"
    ]


def test_the_listener_switch_hands_new_clients_to_the_newest_factory() -> None:
    built: list[str] = []

    class Factory:
        def __init__(self, name: str) -> None:
            self.name = name

        def buildProtocol(self, addr: Any) -> str:
            built.append(self.name)
            return self.name

        def doStart(self) -> None:
            built.append(f"start {self.name}")

        def doStop(self) -> None:
            built.append(f"stop {self.name}")

    switch = ListenerSwitch(Factory("old"))
    switch.doStart()
    assert switch.buildProtocol(None) == "old"
    new = Factory("new")
    new.doStart()  # the reload starts it before anything changes
    switch.switch(new)
    assert switch.buildProtocol(None) == "new"
    assert built == ["start old", "old", "start new", "stop old", "new"]


def test_a_reload_before_the_start_or_after_the_stop_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hoopgw.toml"
    write(path)
    gateway = Gateway(load_config(path), Reactor())
    assert reload(gateway).check(ReloadError)
    gateway, _, _ = started(tmp_path)
    gateway.stop()
    failure = reload(gateway)
    assert failure.check(ReloadError) and "not serving" in failure.getErrorMessage()


def test_a_factory_that_cannot_start_refuses_the_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _, path = started(tmp_path)
    chain, switch = gateway.served["pg"].runtime.chain, gateway.served["pg"].switch
    building = gateway.build_connection

    class NoHostKeys:
        def doStart(self) -> None:
            raise RuntimeError("no host keys, failing")

    def build(connection: Any, **options: Any) -> Any:
        runtime, _ = building(connection, **options)
        return runtime, NoHostKeys()

    monkeypatch.setattr(gateway, "build_connection", build)
    write(path, deny='["ddl", "drop"]')
    failure = reload(gateway)
    assert failure.check(ReloadError) and "no host keys" in failure.getErrorMessage()
    assert chain.successor is None and gateway.served["pg"].switch.current is switch.current
    assert records(tmp_path, "config_reloaded") == []


def test_a_reload_that_cannot_be_recorded_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet import defer

    from hoopgw.errors import StoreError

    gateway, reactor, path = started(tmp_path)
    chain = gateway.served["pg"].runtime.chain
    assert gateway.audit is not None
    monkeypatch.setattr(
        gateway.audit, "write", lambda entry, **_: defer.fail(StoreError("disk full"))
    )
    write(path, deny='["ddl", "drop"]', pg2=15433)
    failure = reload(gateway)
    assert failure.check(ReloadError) and "cannot record the reload" in failure.getErrorMessage()
    assert chain.successor is None and "pg2" not in gateway.served
    assert 15433 in reactor.stopped  # the listener it had bound is closed again


class LoggingIn(Live):
    """A client admitted on a connection whose target login is still under way: it has an
    identity, but no session yet."""

    def __init__(self, gateway: Gateway, connection: str, groups: frozenset[str]) -> None:
        super().__init__(gateway, connection, groups)
        self.session_info = None  # type: ignore[assignment]


def test_a_client_still_logging_in_to_the_target_is_ended_too(tmp_path: Path) -> None:
    """Admitted under the old config, its session would start after the reload checked the
    live ones: on a removed connection, or with an identity that lost access."""
    gateway, _, path = started(tmp_path)
    write(path, pg2=15433)
    reload(gateway)
    removed = LoggingIn(gateway, "pg2", frozenset({"dba"}))
    lost = LoggingIn(gateway, "pg", frozenset({"agents"}))
    kept = LoggingIn(gateway, "pg", frozenset({"dba"}))
    for session in (removed, lost, kept):
        gateway.sessions.add(session)
    write(path, groups='["dba"]')
    changes = reload(gateway)
    assert changes["removed"] == ["pg2"]
    assert removed.reasons and "was removed" in removed.reasons[0]
    assert lost.reasons and "may no longer use connection" in lost.reasons[0]
    assert kept.reasons == []
    ended = records(tmp_path, "session_terminated")
    assert sorted(e["identity"] for e in ended) == [lost.identity.name, removed.identity.name]


def test_a_session_admitted_while_the_reload_is_recorded_is_ended_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of a reload takes time (a write to the store); a client admitted under the
    old config meanwhile must not escape the new one."""
    gateway, _, path = started(tmp_path)
    write_record = gateway.audit.write
    late: list[Live] = []

    def write_then_admit(entry: Any) -> Any:
        written = write_record(entry)
        if entry.kind == "config_reloaded":
            late.append(Live(gateway, "pg", frozenset({"agents"})))
            gateway.sessions.add(late[0])
        return written

    monkeypatch.setattr(gateway.audit, "write", write_then_admit)
    write(path, groups='["dba"]')
    changes = reload(gateway)
    assert late[0].reasons and "may no longer use connection" in late[0].reasons[0]
    assert changes["ended_sessions"] == [late[0].session_info.id]


def test_the_old_runtime_starts_no_session_the_new_config_would_set_up_otherwise(
    tmp_path: Path,
) -> None:
    """A client still logging in on the replaced runtime is admitted by the new config, but
    its target login is the old runtime's: no session may start there once the change is one
    the hand-over cannot carry (read-only newly required, another target, a removed
    connection). A policy change alone leaves it free to start (its first command takes the
    new chain)."""
    gateway, _, path = started(tmp_path)
    first = gateway.served["pg"].runtime.chain
    write(path, deny='["ddl", "drop"]', pg2=15433)
    reload(gateway)
    assert first.retired is None
    second = gateway.served["pg"].runtime.chain
    pg2 = gateway.served["pg2"].runtime.chain
    write(path, deny='["write"]')
    reload(gateway)
    assert second.retired is not None and "read-only" in second.retired
    assert pg2.retired is not None and "removed" in pg2.retired
    third = gateway.served["pg"].runtime.chain
    path.write_text(path.read_text().replace("127.0.0.1:5432", "127.0.0.1:5499"))
    reload(gateway)
    assert third.retired is not None and "target" in third.retired
    assert gateway.served["pg"].runtime.chain.retired is None


def test_a_reload_the_gateway_stops_during_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a reload's record is being written: the stop closes the listeners it
    knows; the reload must not then apply and leave a new listener open on a stopping
    gateway."""
    from twisted.internet import defer

    gateway, reactor, path = started(tmp_path)
    assert gateway.audit is not None
    write_record = gateway.audit.write
    pending: list[defer.Deferred[Any]] = []

    def slow(entry: Any, **kwargs: Any) -> Any:
        if entry.kind != "config_reloaded":
            return write_record(entry, **kwargs)
        d: defer.Deferred[Any] = defer.Deferred()
        pending.append(d)
        return d

    monkeypatch.setattr(gateway.audit, "write", slow)
    write(path, pg2=15433)
    results: list[Any] = []
    gateway.reload(by="test").addBoth(results.append)
    assert pending and not results
    gateway.stop()
    pending[0].callback(None)
    assert results and isinstance(results[0], Failure) and results[0].check(ReloadError)
    assert "pg2" not in gateway.served
    assert 15433 in reactor.stopped
