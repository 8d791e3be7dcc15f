"""Tests for :mod:`hoopgw_postgres.frontend`: one client session, driven byte by byte.

The client side is a ``StringTransport`` on a loopback peer; the upstream is a fake object with
``send``/``close``/``transport`` installed in place of the real connection; time is a
``MemoryReactorClock``. Server answers are built with the message encoders and fed through a
``MessageReader``, as the real upstream connection does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hoopgw_postgres import analysis as analysis_module
from hoopgw_postgres import messages as m
from hoopgw_postgres.auth import ScramClient
from hoopgw_postgres.frontend import (
    HELD_SQLSTATE,
    READ_AHEAD_LIMIT,
    REFUSED_STATEMENT,
    ClientSession,
)
from hoopgw_recording import RecordingPlugin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, globalLogPublisher

from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.errors import HELD_NOTICE_INTERVAL, STORE_UNAVAILABLE, HeldStatement, StoreError
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import PluginContext, hookimpl, validate_options
from hoopgw.protocol import ConnectionRuntime
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.runtime.throttle import BackoffSettings, FailureThrottle
from hoopgw.session import Column, ConnectionInfo
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeApprover, FakeAuditWriter, HookLog
from hoopgw.verdicts import Block, Hold

AUTH_TIMEOUT = 30.0
REAL_CONNECT_UPSTREAM = ClientSession._connect_upstream
UPSTREAM_PARAMETERS = [
    m.ParameterStatus(name="server_version", value="15.20").encode(),
    m.ParameterStatus(name="client_encoding", value="UTF8").encode(),
    m.ParameterStatus(name="standard_conforming_strings", value="on").encode(),
]


class Policy:
    """Refuses commands that contain a word; records what it was told."""

    def __init__(self, deny: Sequence[str] = ("forbidden",)) -> None:
        self.deny = tuple(deny)
        self.decided: list[tuple[str, str]] = []
        self.completed: list[tuple[str, str, str]] = []
        self.closed: list[str] = []

    @hookimpl
    def client_command(self, command: Any) -> Any:
        if any(word in command.text for word in self.deny):
            return Block(reason="forbidden word")
        return None

    @hookimpl
    def command_decided(self, command: Any, verdict: Any) -> None:
        self.decided.append((command.text, type(verdict).__name__))

    @hookimpl
    def command_completed(self, command: Any, outcome: Any) -> None:
        self.completed.append((command.text, outcome.status, outcome.error_code))

    @hookimpl
    def session_closed(self, reason: str) -> None:
        self.closed.append(reason)


class Deferring:
    """Answers every command with a Deferred the test fires."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []

    @hookimpl
    def client_command(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


class FakeUpstream:
    """Stands in for :class:`UpstreamConnection`: records what the session forwards."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True

    def forwarded(self) -> bytes:
        """Every byte the session sent to the target so far."""
        return self.transport.value() + b"".join(self.sent)


class Gateway:
    """One connection's runtime and a key store, from which client sessions are made."""

    def __init__(
        self,
        plugins: Sequence[tuple[str, object]] = (),
        *,
        allow_groups: Sequence[str] = ("agents",),
        client_auth: str = "auto",
    ) -> None:
        self.clock = MemoryReactorClock()
        store = SQLiteStore(":memory:")
        store.migrate()
        self.keys = KeyService(store)
        self.secret, record = self.keys.create("agent", ["agents"], now=time.time())
        self.key_id = record.key_id
        config = ConnectionConfig(
            name="pg",
            protocol="postgres",
            listen="tcp:15432:interface=127.0.0.1",
            target="127.0.0.1:5432",
            credential=CredentialConfig(user="postgres"),
            allow_groups=tuple(allow_groups),
            plugins=tuple(name for name, _ in plugins),
            upstream_tls=UpstreamTlsConfig(sslmode="disable"),
            client_auth=client_auth,
        )
        self.sessions = SessionRegistry()
        self.runtime = ConnectionRuntime(
            config=config,
            gateway=GatewayConfig(auth_timeout=AUTH_TIMEOUT),
            info=ConnectionInfo(name="pg", protocol="postgres", target=config.target),
            chain=PluginChain(list(plugins), reactor=self.clock),
            authenticator=Authenticator(self.keys),
            sessions=self.sessions,
            reactor=self.clock,
        )

    def connect(self, host: str = "127.0.0.1") -> Client:
        return Client(self, host)


class Client:
    """A client session with its transport and, once connected upstream, its fake upstream."""

    def __init__(self, gateway: Gateway, host: str) -> None:
        self.gateway = gateway
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
        self.session = ClientSession(gateway.runtime)
        self.session.makeConnection(self.transport)

    @property
    def upstream(self) -> FakeUpstream | None:
        """The fake upstream, once the session connected to the target."""
        return self.session.upstream  # type: ignore[return-value]

    def send(self, data: bytes, *, split: int | None = None) -> None:
        """Feed client bytes, in pieces of ``split`` bytes if given."""
        step = split or len(data) or 1
        for start in range(0, len(data), step):
            self.session.dataReceived(data[start : start + step])

    def received(self) -> list[Any]:
        """Decode and clear what the gateway sent to the client."""
        data = self.transport.value()
        self.transport.clear()
        return [m.decode_backend(t, body) for t, body, _ in m.MessageReader().feed(data)]

    def login(self, user: str = "agent", password: str | None = None) -> None:
        """Startup, password, and a ready upstream."""
        self.send(startup(user))
        self.send(m.PasswordMessage(password=password or self.gateway.secret).encode())
        self.upstream_ready()

    def upstream_ready(self) -> None:
        assert self.upstream is not None, "the session did not connect upstream"
        self.session.upstream_ready(list(UPSTREAM_PARAMETERS), (4242, b"srvk"), False)

    def server(self, *messages: Any) -> None:
        """The target answers with these messages."""
        wire = b"".join(message.encode() for message in messages)
        self.session.upstream_messages(*m.MessageReader().feed_block(wire))

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


@pytest.fixture(autouse=True)
def fake_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the real upstream connection with a :class:`FakeUpstream`."""

    def connect(self: ClientSession) -> None:
        self.upstream = FakeUpstream()  # type: ignore[assignment]

    monkeypatch.setattr(ClientSession, "_connect_upstream", connect)


def startup(user: str = "agent", *, minor: int = 0, **params: str) -> bytes:
    return m.StartupMessage(
        protocol=m.PROTOCOL_3_0 | minor, params={"user": user, "database": "app", **params}
    ).encode()


def errors(messages: list[Any]) -> list[tuple[str, str]]:
    return [(e.fields["S"], e.fields["C"]) for e in messages if isinstance(e, m.ErrorResponse)]


def types_of(messages: list[Any]) -> list[str]:
    return [type(message).__name__ for message in messages]


def upstream_messages(client: Client) -> list[Any]:
    assert client.upstream is not None
    frames = m.MessageReader().feed(client.upstream.forwarded())
    return [m.decode_frontend(t, body) for t, body, _ in frames]


# -- startup and authentication ---------------------------------------------------------------


def test_login_with_cleartext_password_on_loopback() -> None:
    client = Gateway().connect()
    client.send(startup())
    assert types_of(client.received()) == ["AuthenticationCleartextPassword"]
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    assert client.received() == []
    assert client.upstream is not None
    client.upstream_ready()
    received = client.received()
    assert types_of(received) == [
        "AuthenticationOk",
        "ParameterStatus",
        "ParameterStatus",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
    ]
    assert received[1] == m.ParameterStatus(name="server_version", value="15.20")
    # The client gets the target's process id with a secret of the gateway's making, never the
    # target's own secret.
    [key] = [x for x in received if isinstance(x, m.BackendKeyData)]
    assert key.pid == 4242
    assert key.key != b"srvk" and len(key.key) == 4
    assert received[5] == m.ReadyForQuery(status="I")
    assert len(client.gateway.sessions) == 1
    assert not client.closed


def test_login_by_key_id_as_user_name() -> None:
    gateway = Gateway()
    client = gateway.connect()
    client.login(user=gateway.key_id)
    assert types_of(client.received())[-1] == "ReadyForQuery"


def test_non_loopback_client_gets_scram_in_auto_mode() -> None:
    client = Gateway().connect(host="192.0.2.10")
    client.send(startup())
    [request] = client.received()
    assert request == m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256",))


def scram_first(client: Client, user: str, password: str) -> tuple[ScramClient, list[Any]]:
    """Startup and the client-first message; the client and what the gateway answered."""
    scram = ScramClient(password)
    client.send(startup(user))
    client.received()
    client.send(m.SASLInitialResponse(mechanism="SCRAM-SHA-256", data=scram.first()).encode())
    return scram, client.received()


def test_scram_salt_of_an_unknown_user_is_as_stable_as_a_real_one() -> None:
    # A salt that changed on every attempt would tell a made-up user from a real key.
    gateway = Gateway()
    salts = []
    for user in ("nobody", "nobody", "agent", "agent"):
        _, [challenge] = scram_first(gateway.connect(host="192.0.2.10"), user, "guess")
        salts.append(challenge.data.split(b",")[1])
    assert salts[0] == salts[1] and salts[2] == salts[3]
    assert salts[0] != salts[2]
    _, [other] = scram_first(gateway.connect(host="192.0.2.10"), "someone-else", "guess")
    assert other.data.split(b",")[1] != salts[0]


def test_scram_from_an_address_with_every_slot_busy_is_refused_unread() -> None:
    gateway = Gateway()
    throttle = FailureThrottle(
        gateway.clock, BackoffSettings(free_failures=0, base_delay=10.0, max_pending=1)
    )
    runtime = attrs.evolve(
        gateway.runtime, authenticator=Authenticator(gateway.keys, throttle=throttle)
    )
    gateway.runtime = runtime
    first = gateway.connect(host="192.0.2.10")
    scram, [challenge] = scram_first(first, "agent", "wrong")
    first.send(m.SASLResponse(data=scram.final(challenge.data)).encode())
    assert first.received() == []  # the failure waits out its delay, holding the one slot
    second = gateway.connect(host="192.0.2.10")
    _, answer = scram_first(second, "agent", gateway.secret)
    assert errors(answer) == [("FATAL", "28P01")]
    assert "too many failed authentication attempts" in answer[0].fields["M"]
    assert second.closed


@pytest.mark.parametrize("scram", [False, True])
def test_a_login_while_the_store_is_unavailable_is_refused_as_that(
    scram: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway()

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk I/O error")

    store = gateway.keys._store
    monkeypatch.setattr(store, "get_key", unavailable)
    monkeypatch.setattr(store, "find_keys_by_identity", unavailable)
    if scram:
        client = gateway.connect(host="192.0.2.10")
        _, answer = scram_first(client, "agent", gateway.secret)
    else:
        client = gateway.connect()
        client.send(startup())
        client.send(m.PasswordMessage(password=gateway.secret).encode())
        answer = client.received()
    assert errors(answer) == [("FATAL", "57P03")]
    assert answer[-1].fields["M"] == STORE_UNAVAILABLE
    assert client.closed


def test_cleartext_password_off_loopback_without_tls_is_refused() -> None:
    client = Gateway(client_auth="password").connect(host="192.0.2.10")
    client.send(startup())
    assert errors(client.received()) == [("FATAL", "28000")]
    assert client.closed


def test_wrong_key_is_refused() -> None:
    client = Gateway().connect()
    client.send(startup())
    client.received()
    client.send(m.PasswordMessage(password="hgw_000000000000_" + "A" * 43).encode())
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "28P01")
    assert client.gateway.secret not in error.fields["M"]
    assert client.closed
    assert client.upstream is None


def test_key_of_another_identity_is_refused() -> None:
    client = Gateway().connect()
    client.send(startup(user="someone-else"))
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    assert errors(client.received()) == [("FATAL", "28P01")]
    assert client.closed


def test_identity_outside_allow_groups_is_refused() -> None:
    policy = Policy()
    client = Gateway([("policy", policy)], allow_groups=("dba",)).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    [error] = [e for e in client.received() if isinstance(e, m.ErrorResponse)]
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "28000")
    assert "allow_groups" in error.fields["M"]
    assert client.closed
    assert client.upstream is None
    assert policy.closed == []  # no session was started


def test_session_refused_by_a_plugin() -> None:
    class Closed:
        @hookimpl
        def session_started(self) -> Any:
            return Block(reason="maintenance")

    client = Gateway([("closed", Closed())]).connect()
    client.login()
    [error] = [e for e in client.received() if isinstance(e, m.ErrorResponse)]
    assert error.fields["C"] == "28000"
    assert "maintenance" in error.fields["M"]
    # The session starts once the target accepted the login (so the record holds the TLS
    # actually in use upstream); refused, it closes that upstream connection again.
    assert client.upstream is not None and client.upstream.closed
    assert not any(isinstance(e, m.AuthenticationOk) for e in client.received())


def test_session_records_the_tls_actually_used_upstream() -> None:
    seen = []

    class Watcher:
        @hookimpl
        def session_started(self, session: Any) -> None:
            seen.append(session.upstream_tls)

    client = Gateway([("watcher", Watcher())]).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    assert seen == []  # not before the target accepted the login
    client.session.upstream_ready(list(UPSTREAM_PARAMETERS), (4242, b"srvk"), True)
    assert seen == [True]


def test_connection_refused_by_a_plugin() -> None:
    class Firewall:
        @hookimpl
        def client_connected(self, client_address: str) -> Any:
            return Block(reason=f"{client_address} is not welcome")

    client = Gateway([("firewall", Firewall())]).connect()
    [error] = client.received()
    assert error.fields["C"] == "28000"
    assert "127.0.0.1:50000 is not welcome" in error.fields["M"]
    assert client.closed


def test_garbage_startup_is_a_protocol_violation() -> None:
    client = Gateway().connect()
    client.send(b"\x00\x00\x00\x08\x12\x34\x56\x78")
    assert errors(client.received()) == [("FATAL", "08P01")]
    assert client.closed
    client.send(startup())
    assert client.transport.value() == b""


def test_http_request_is_a_protocol_violation() -> None:
    client = Gateway().connect()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert errors(client.received()) == [("FATAL", "08P01")]
    assert client.closed


def test_auth_timeout() -> None:
    client = Gateway().connect()
    client.send(startup())
    client.received()
    client.gateway.clock.advance(AUTH_TIMEOUT - 1)
    assert not client.closed
    client.gateway.clock.advance(1)
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "08P01")
    assert "timed out" in error.fields["M"]
    assert client.closed


def test_a_target_that_never_finishes_the_login_is_given_up_on() -> None:
    client = Gateway().connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    assert client.upstream is not None  # connected, but the target never answers
    client.gateway.clock.advance(AUTH_TIMEOUT)
    [error] = [e for e in client.received() if isinstance(e, m.ErrorResponse)]
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "08006")
    assert client.closed and client.upstream.closed


def test_auth_timer_is_cancelled_after_login() -> None:
    client = Gateway().connect()
    client.login()
    client.received()
    client.gateway.clock.advance(AUTH_TIMEOUT * 2)
    assert client.received() == []
    assert not client.closed


def test_ssl_request_is_answered_n_without_tls_config() -> None:
    client = Gateway().connect()
    client.send(m.SSLRequest().encode())
    assert client.transport.value() == b"N"
    client.transport.clear()
    client.send(startup())
    assert types_of(client.received()) == ["AuthenticationCleartextPassword"]


def test_gssenc_request_is_answered_n() -> None:
    client = Gateway().connect()
    client.send(m.GSSENCRequest().encode())
    assert client.transport.value() == b"N"
    client.transport.clear()
    client.send(startup())
    assert types_of(client.received()) == ["AuthenticationCleartextPassword"]


def test_minor_version_3_2_gets_negotiate_protocol_version() -> None:
    client = Gateway().connect()
    client.send(startup(minor=2, **{"_pq_.test": "x"}))
    negotiate, request = client.received()
    assert negotiate == m.NegotiateProtocolVersion(
        newest_version=m.PROTOCOL_3_0, unrecognized_options=("_pq_.test",)
    )
    assert isinstance(request, m.AuthenticationCleartextPassword)


def test_protocol_version_2_is_a_protocol_violation() -> None:
    client = Gateway().connect()
    client.send(b"\x00\x00\x00\x09\x00\x02\x00\x00\x00")
    assert errors(client.received()) == [("FATAL", "08P01")]
    assert client.closed


def test_replication_is_refused() -> None:
    client = Gateway().connect()
    client.send(startup(replication="database"))
    assert errors(client.received()) == [("FATAL", "0A000")]
    assert client.closed


def test_cancel_request_with_a_known_key_reaches_the_right_session() -> None:
    gateway = Gateway()
    first, second = gateway.connect(), gateway.connect()
    first.login()
    second.login()
    keys = {}
    for client in (first, second):
        [key] = [x for x in client.received() if isinstance(x, m.BackendKeyData)]
        keys[client] = key
    cancelled: list[Client] = []
    for client in (first, second):
        client.session.forward_cancel = lambda client=client: cancelled.append(client)  # type: ignore[method-assign]
    canceller = gateway.connect()
    canceller.send(m.CancelRequest(pid=keys[second].pid, key=keys[second].key).encode())
    assert cancelled == [second]
    assert canceller.transport.value() == b""
    assert canceller.closed


def test_cancel_request_with_the_pid_but_a_wrong_secret_cancels_nothing() -> None:
    """Both sessions share the target's process id here (as two targets may); only the secret
    tells them apart, and the target's own secret is no key at all."""
    gateway = Gateway()
    first, second = gateway.connect(), gateway.connect()
    first.login()
    second.login()
    cancelled: list[Client] = []
    for client in (first, second):
        client.session.forward_cancel = lambda client=client: cancelled.append(client)  # type: ignore[method-assign]
    [key] = [x for x in first.received() if isinstance(x, m.BackendKeyData)]
    wrong = bytes([key.key[0] ^ 1]) + key.key[1:]
    for secret in (wrong, b"srvk"):
        canceller = gateway.connect()
        canceller.send(m.CancelRequest(pid=key.pid, key=secret).encode())
        assert canceller.closed
    assert cancelled == []


def test_cancel_request_with_an_unknown_key_does_nothing() -> None:
    gateway = Gateway()
    client = gateway.connect()
    client.login()
    client.session.forward_cancel = lambda: pytest.fail("cancelled")  # type: ignore[method-assign]
    canceller = gateway.connect()
    canceller.send(m.CancelRequest(pid=1, key=b"nope").encode())
    assert canceller.transport.value() == b""
    assert canceller.closed


def test_cancel_request_is_judged_with_the_address_it_came_from() -> None:
    """The registry limits cancel requests matching no session per client address."""
    gateway = Gateway()
    seen: list[tuple[int, bytes, str]] = []
    gateway.sessions.cancel = lambda pid, key, address: seen.append((pid, key, address))  # type: ignore[method-assign,assignment,misc]
    canceller = gateway.connect("10.1.2.3")
    canceller.send(m.CancelRequest(pid=1, key=b"nope").encode())
    assert seen == [(1, b"nope", "10.1.2.3:50000")]
    assert canceller.closed


# -- the proxy loop -----------------------------------------------------------------------------


def logged_in(plugins: Sequence[tuple[str, object]] = ()) -> Client:
    client = Gateway(plugins).connect()
    client.login()
    client.received()
    return client


def test_allowed_query_is_forwarded_and_answers_relayed() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT 1").encode())
    assert upstream_messages(client) == [m.Query(query="SELECT 1")]
    answer = (
        m.RowDescription(fields=()),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    client.server(*answer)
    assert client.received() == list(answer)
    assert policy.decided == [("SELECT 1", "Allow")]
    assert policy.completed == [("SELECT 1", "ok", "")]


def test_blocked_query_is_replaced_upstream_and_client_gets_our_error() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT forbidden_secret FROM t").encode())
    assert client.upstream is not None
    assert b"forbidden_secret" not in client.upstream.forwarded()
    assert upstream_messages(client) == [m.Query(query=REFUSED_STATEMENT)]
    # Nothing reaches the client before the target answered: order is kept.
    assert client.received() == []
    client.server(
        m.error_response("ERROR", "42601", 'syntax error at or near "hoopgw"'),
        m.ReadyForQuery(status="I"),
    )
    error, ready = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("ERROR", "42501")
    assert "forbidden word" in error.fields["M"]
    assert "syntax" not in error.fields["M"]
    assert ready == m.ReadyForQuery(status="I")
    assert policy.decided == [("SELECT forbidden_secret FROM t", "Block")]
    assert policy.completed == [("SELECT forbidden_secret FROM t", "blocked", "42501")]


def test_blocked_parse_discards_the_pipeline_until_sync() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="DELETE FROM forbidden").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Describe(kind="P", name="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
        + m.Query(query="SELECT 2").encode()
    )
    assert upstream_messages(client) == [
        m.Parse(name="", query=REFUSED_STATEMENT),
        m.Sync(),
        m.Query(query="SELECT 2"),
    ]
    client.server(
        m.error_response("ERROR", "42601", "syntax error"),
        m.ReadyForQuery(status="I"),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    received = client.received()
    assert types_of(received) == [
        "ErrorResponse",
        "ReadyForQuery",
        "CommandComplete",
        "ReadyForQuery",
    ]
    assert received[0].fields["C"] == "42501"
    assert policy.decided == [("DELETE FROM forbidden", "Block"), ("SELECT 2", "Allow")]


def test_allowed_pipeline_is_forwarded_whole() -> None:
    client = logged_in([("policy", Policy())])
    pipeline = (
        m.Parse(name="s1", query="SELECT $1").encode()
        + m.Bind(portal="", statement="s1", params=(b"1",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.send(pipeline)
    assert client.upstream is not None
    assert client.upstream.forwarded() == pipeline


def test_pipelined_queries_stay_in_order_while_a_decision_is_pending() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow)])
    client.send(m.Query(query="SELECT 1").encode() + m.Query(query="SELECT 2").encode())
    assert client.upstream is not None
    assert client.upstream.forwarded() == b""
    assert len(slow.pending) == 1  # the second waits for the first
    # Reading goes on (a little) while a decision is pending, so a disconnect is noticed.
    assert client.transport.producerState == "producing"
    client.send(b"Q" + (READ_AHEAD_LIMIT + 4).to_bytes(4, "big") + b"x" * (READ_AHEAD_LIMIT - 1))
    assert client.transport.producerState == "paused"  # but not without bound
    slow.pending[0].callback(None)
    assert upstream_messages(client) == [m.Query(query="SELECT 1")]
    assert len(slow.pending) == 2
    slow.pending[1].callback(None)
    assert upstream_messages(client) == [m.Query(query="SELECT 1"), m.Query(query="SELECT 2")]
    assert client.transport.producerState == "producing"


def test_a_disconnect_while_a_decision_is_pending_cancels_it() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow)])
    client.send(m.Query(query="DELETE FROM t").encode())
    client.session.connectionLost()
    assert slow.pending[0].called  # cancelled: the chain reports it withdrawn
    assert client.upstream is not None and client.upstream.forwarded() == b""


class Holding:
    """Holds every command for approval."""

    @hookimpl
    def client_command(self) -> Hold:
        return Hold(reason="risky", approvers=("dba",))


@pytest.mark.parametrize("held", [False, True], ids=["pending decision", "held for approval"])
def test_a_disconnect_before_the_verdict_completes_the_command_as_cancelled(held: bool) -> None:
    # The hook contract: command_decided once, command_completed once, session_closed once,
    # in that order, even when the client leaves while its command waits for a verdict.
    slow, approver, log = Deferring(), FakeApprover(), HookLog()
    deciders = [("hold", Holding()), ("approver", approver)] if held else [("slow", slow)]
    client = logged_in([*deciders, ("log", log)])
    client.send(m.Query(query="DELETE FROM t").encode())
    assert log.events == []
    client.session.connectionLost()
    assert approver.withdrawn == (1 if held else 0)
    assert log.events == [
        ("decided", "DELETE FROM t", "Block"),
        ("completed", "DELETE FROM t", "cancelled"),
        ("closed", "client closed"),
    ]
    assert client.upstream is not None and client.upstream.forwarded() == b""


@pytest.mark.parametrize("how", ["cancel request", "disconnect"])
def test_a_command_waiting_for_its_record_is_recorded_cancelled_quietly(how: str) -> None:
    """The client cancels (or leaves) while its command waits for its write-ahead record: the
    record still becomes durable, the outcome is recorded as cancelled, nothing reaches the
    target, and nothing is logged as an error."""
    audit = FakeAuditWriter()
    values = validate_options("recording", RecordingPlugin.options, {}, connection="pg")
    recording = RecordingPlugin(
        PluginContext(
            connection=ConnectionInfo(name="pg", protocol="postgres", target="127.0.0.1:5432"),
            options=values,
            audit=audit,  # type: ignore[arg-type]
            log=Logger(namespace="hoopgw.plugins.recording"),
            reactor=MemoryReactorClock(),
        )
    )
    gateway = Gateway([("recording", recording)])
    client = gateway.connect()
    client.login()
    [key] = [x for x in client.received() if isinstance(x, m.BackendKeyData)]
    audit.manual = True
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        client.send(m.Query(query="DELETE FROM t").encode())
        if how == "cancel request":
            gateway.connect().send(m.CancelRequest(pid=key.pid, key=key.key).encode())
            # Answered (57014) in order, once the target has answered what was before it.
        else:
            client.session.connectionLost()
        audit.flush()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [e for e in logged if e.get("log_level") in (LogLevel.error, LogLevel.critical)] == []
    assert client.upstream is not None and b"DELETE" not in client.upstream.forwarded()
    kinds = audit.kinds()
    assert kinds[kinds.index("command_received") :][:3] == [
        "command_received",
        "command_decided",
        "command_completed",
    ]
    [completed] = [r for r in audit.records if r.kind == "command_completed"]
    assert completed.data["status"] == "cancelled"


def test_a_disconnect_during_a_result_aborts_the_command_once() -> None:
    log = HookLog()
    client = logged_in([("log", log)])
    client.send(m.Query(query="SELECT x FROM t").encode())
    client.server(
        m.RowDescription(fields=(m.FieldDescription(name="x", type_oid=23),)),
        m.DataRow(values=(b"1",)),
    )
    client.session.connectionLost()
    client.session.connectionLost()
    assert log.events == [
        ("decided", "SELECT x FROM t", "Allow"),
        ("completed", "SELECT x FROM t", "aborted"),
        ("closed", "client closed"),
    ]


def test_function_call_is_refused() -> None:
    client = logged_in()
    client.send(m.FunctionCall(function_oid=1234, args=(b"x",)).encode())
    assert upstream_messages(client) == [m.Query(query=REFUSED_STATEMENT)]
    client.server(m.error_response("ERROR", "42601", "syntax error"), m.ReadyForQuery(status="I"))
    error, ready = client.received()
    assert error.fields["C"] == "0A000"
    assert "FunctionCall" in error.fields["M"]
    assert isinstance(ready, m.ReadyForQuery)


def test_unknown_message_type_ends_the_session() -> None:
    client = logged_in()
    client.send(b"?\x00\x00\x00\x04")
    assert errors(client.received()) == [("FATAL", "08P01")]
    assert client.closed
    assert client.upstream is not None and client.upstream.closed


def test_message_during_upstream_login_waits() -> None:
    client = Gateway([("policy", Policy())]).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    client.send(m.Query(query="SELECT 1").encode())
    assert client.upstream is not None
    assert client.upstream.forwarded() == b""
    client.upstream_ready()
    assert upstream_messages(client) == [m.Query(query="SELECT 1")]


def test_terminate_sends_fatal_57p01_and_reports_the_session_closed() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.session.terminate("gateway stopping")
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "57P01")
    assert "gateway stopping" in error.fields["M"]
    assert client.closed
    assert client.upstream is not None and client.upstream.closed
    assert policy.closed == ["gateway stopping"]
    assert len(client.gateway.sessions) == 0


def test_terminate_unregisters_the_upstream_reader_so_a_tls_client_closes() -> None:
    # Twisted's TLS transport closes only once no producer is registered: a client over TLS
    # kept its connection open after the FATAL of a terminate.
    client = logged_in()
    assert client.transport.producer is not None
    client.session.terminate("agent 'edge' lost its connection to the gateway")
    assert client.transport.producer is None
    assert client.closed


def test_client_goodbye_closes_and_reports_open_commands_aborted() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT pg_sleep(10)").encode())
    client.session.connectionLost()
    assert policy.completed == [("SELECT pg_sleep(10)", "aborted", "")]
    assert policy.closed == ["client closed"]
    assert len(client.gateway.sessions) == 0


def test_upstream_closed_ends_the_session() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.session.upstream_closed()
    assert client.closed
    assert policy.closed == ["the target closed the connection"]


# -- every split of a conversation gives the same outcome --------------------------------------


def conversation(split: int | None) -> tuple[bytes, list[Any], list[tuple[str, str]]]:
    """Run one whole conversation; return upstream bytes, client messages and decisions."""
    policy = Policy()
    gateway = Gateway([("policy", policy)])
    client = gateway.connect()
    secret = gateway.secret
    client.send(
        startup(application_name="split")
        + m.PasswordMessage(password=secret).encode()
        + m.Query(query="SELECT 1").encode(),
        split=split,
    )
    client.upstream_ready()
    client.send(
        m.Query(query="SELECT forbidden").encode()
        + m.Parse(name="", query="SELECT $1").encode()
        + m.Bind(portal="", statement="", params=(b"7",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode(),
        split=split,
    )
    client.server(m.CommandComplete(tag="SELECT 1"), m.ReadyForQuery(status="I"))
    client.server(m.error_response("ERROR", "42601", "syntax"), m.ReadyForQuery(status="I"))
    client.server(
        m.ParseComplete(),
        m.BindComplete(),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    client.send(m.Terminate().encode(), split=split)
    assert client.upstream is not None
    received = [x for x in client.received() if not isinstance(x, m.BackendKeyData)]
    return client.upstream.forwarded(), received, policy.decided


def test_every_byte_split_gives_the_same_outcome() -> None:
    whole = conversation(None)
    assert b"forbidden" not in whole[0]
    assert whole[2] == [
        ("SELECT 1", "Allow"),
        ("SELECT forbidden", "Block"),
        ("SELECT $1", "Allow"),
    ]
    for split in (1, 2, 3, 7):
        assert conversation(split) == whole, f"split {split}"


def test_cancel_while_a_decision_is_pending_answers_the_client() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow)])
    client.send(m.Query(query="SELECT 1").encode())
    client.session.forward_cancel()
    assert client.upstream is not None
    assert b"SELECT 1" not in client.upstream.forwarded()
    # The withdrawn query is replaced upstream, so its answer keeps its place in the order.
    assert upstream_messages(client) == [m.Query(query=REFUSED_STATEMENT)]
    client.server(
        m.error_response("ERROR", "42601", 'syntax error at or near "hoopgw"'),
        m.ReadyForQuery(status="I"),
    )
    received = client.received()
    assert errors(received) == [("ERROR", "57014")]
    assert isinstance(received[-1], m.ReadyForQuery)
    assert client.transport.producerState == "producing"


# -- hostile clients and failing plugins --------------------------------------------------------


class FailingInput:
    """A data hook that fails on client COPY data."""

    @hookimpl
    def client_input(self) -> None:
        raise ValueError("cannot process the data")


class FailingRows:
    """A data hook that fails on result rows."""

    @hookimpl
    def server_rows(self) -> None:
        raise ValueError("cannot process the rows")


def test_data_hook_failure_after_a_pending_decision_ends_the_session() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow), ("failing", FailingInput())])
    client.send(
        m.Query(query="COPY t FROM STDIN").encode()
        + m.CopyData(data=b"1\n").encode()
        + m.CopyData(data=b"2\n").encode()
        + m.CopyDone().encode()
    )
    slow.pending[0].callback(None)
    assert errors(client.received()) == [("FATAL", "XX000")]
    assert client.closed
    assert client.upstream is not None and client.upstream.closed
    assert not any(isinstance(message, m.CopyData) for message in upstream_messages(client))


def test_data_hook_failure_on_client_data_ends_the_session() -> None:
    client = logged_in([("failing", FailingInput())])
    client.send(m.Query(query="COPY t FROM STDIN").encode() + m.CopyData(data=b"1\n").encode())
    assert errors(client.received()) == [("FATAL", "XX000")]
    assert client.closed
    assert not any(isinstance(message, m.CopyData) for message in upstream_messages(client))


def test_data_hook_failure_on_rows_ends_the_session_before_any_row_is_sent() -> None:
    client = logged_in([("failing", FailingRows())])
    client.send(m.Query(query="SELECT secret FROM t").encode())
    client.server(
        m.RowDescription(fields=()),
        m.DataRow(values=(b"raw",)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    received = client.received()
    assert errors(received) == [("FATAL", "XX000")]
    assert not any(isinstance(message, m.DataRow) for message in received)
    assert client.closed
    assert client.upstream is not None and client.upstream.closed


def test_unnamed_statement_bound_again_after_sync_is_a_new_command() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="DELETE FROM t WHERE id = $1").encode()
        + m.Bind(portal="", statement="", params=(b"1",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.send(
        m.Bind(portal="", statement="", params=(b"2",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    # It waits until the server has accepted the Parse (or not).
    assert policy.decided == [("DELETE FROM t WHERE id = $1", "Allow")]
    client.server(
        m.ParseComplete(),
        m.BindComplete(),
        m.CommandComplete(tag="DELETE 1"),
        m.ReadyForQuery(status="I"),
    )
    assert policy.decided == [
        ("DELETE FROM t WHERE id = $1", "Allow"),
        ("DELETE FROM t WHERE id = $1", "Allow"),
    ]


def test_a_name_runs_its_old_statement_when_the_new_parse_fails() -> None:
    # PostgreSQL refuses a Parse of an existing name and keeps the old statement.
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="s1", query="DELETE FROM t WHERE id = $1").encode() + m.Sync().encode()
    )
    client.server(m.ParseComplete(), m.ReadyForQuery(status="I"))
    client.send(m.Parse(name="s1", query="SELECT $1").encode() + m.Sync().encode())
    client.send(m.Bind(portal="", statement="s1", params=(b"2",)).encode() + m.Sync().encode())
    client.server(m.error_response("ERROR", "42P05", "exists"), m.ReadyForQuery(status="I"))
    assert [text for text, _ in policy.decided] == [
        "DELETE FROM t WHERE id = $1",
        "SELECT $1",
        "DELETE FROM t WHERE id = $1",
    ]


def test_unnamed_statement_is_forgotten_when_its_replacement_is_refused() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="SELECT 1").encode()
        + m.Sync().encode()
        + m.Parse(name="", query="SELECT forbidden").encode()
        + m.Sync().encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.server(
        m.ParseComplete(),
        m.ReadyForQuery(status="I"),
        m.error_response("ERROR", "42601", "syntax error"),
        m.ReadyForQuery(status="I"),
    )
    # The poison Parse replaced the target's unnamed statement: the Bind runs nothing known.
    assert policy.decided == [("SELECT 1", "Allow"), ("SELECT forbidden", "Block"), ("", "Allow")]


def test_client_is_not_read_during_the_upstream_login() -> None:
    client = Gateway([("policy", Policy())]).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    # A client that floods while the target is slow to log in is not read into memory.
    assert client.transport.producerState == "paused"
    client.upstream_ready()
    assert client.transport.producerState == "producing"


def test_the_target_closing_after_terminate_is_still_the_client_closing() -> None:
    # The target may see Terminate and close before the client's socket is reported closed.
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Terminate().encode())
    client.session.upstream_closed()
    client.session.connectionLost()
    assert policy.closed == ["client closed"]


def test_a_command_answered_after_terminate_is_recorded_as_it_ended() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT 1").encode() + m.Terminate().encode())
    client.server(
        m.RowDescription(fields=(m.FieldDescription(name="x", type_oid=23),)),
        m.DataRow(values=(b"1",)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    client.session.upstream_closed()
    client.session.connectionLost()
    assert policy.completed == [("SELECT 1", "ok", "")]
    assert policy.closed == ["client closed"]


def test_nothing_after_terminate_is_decided_or_forwarded() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Terminate().encode() + m.Query(query="SELECT 1").encode())
    assert policy.decided == []
    assert b"SELECT 1" not in client.upstream.forwarded()
    assert client.closed


class TextMasker:
    """Masks text (OID 25) columns; declines the rows of a result without one."""

    @hookimpl
    def result_columns(self, columns: list[Column]) -> bool | None:
        return None if any(c.type_oid == 25 for c in columns) else False

    @hookimpl
    def server_rows(self, columns: list[Column], rows: list[list[bytes | None]]) -> None:
        for row in rows:
            for i, column in enumerate(columns):
                if column.type_oid == 25:
                    row[i] = b"***"


@pytest.mark.parametrize("split", [None, 1, 7])
def test_rows_of_a_portal_are_masked_by_its_own_description(split: int | None) -> None:
    # p2 (no text column) is described last; p1's rows must still be judged as p1's.
    client = logged_in([("mask", TextMasker())])
    client.send(
        m.Parse(name="s1", query="SELECT ssn FROM t").encode()
        + m.Parse(name="s2", query="SELECT 1").encode()
        + m.Bind(portal="p1", statement="s1").encode()
        + m.Describe(kind="P", name="p1").encode()
        + m.Bind(portal="p2", statement="s2").encode()
        + m.Describe(kind="P", name="p2").encode()
        + m.Execute(portal="p1", max_rows=1).encode()
        + m.Execute(portal="p2").encode()
        + m.Execute(portal="p1").encode()
        + m.Sync().encode(),
        split=split,
    )
    client.server(
        m.ParseComplete(),
        m.ParseComplete(),
        m.BindComplete(),
        m.RowDescription(fields=(m.FieldDescription(name="ssn", type_oid=25),)),
        m.BindComplete(),
        m.RowDescription(fields=(m.FieldDescription(name="n", type_oid=23),)),
        m.DataRow(values=(b"123-45-6789",)),
        m.PortalSuspended(),
        m.DataRow(values=(b"1",)),
        m.CommandComplete(tag="SELECT 1"),
        m.DataRow(values=(b"987-65-4321",)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="T"),
    )
    rows = [x.values for x in client.received() if isinstance(x, m.DataRow)]
    assert rows == [(b"***",), (b"1",), (b"***",)]


def test_rows_of_a_portal_whose_description_was_not_seen_all_go_through_the_hooks() -> None:
    # A closed and bound-again portal has unknown columns: its rows are never streamed as is.
    seen: list[list[Column]] = []

    class Rows(TextMasker):
        @hookimpl
        def server_rows(self, columns: list[Column], rows: list[list[bytes | None]]) -> None:
            seen.append(list(columns))

    client = logged_in([("rows", Rows())])
    client.send(
        m.Parse(name="s2", query="SELECT 1").encode()
        + m.Bind(portal="p", statement="s2").encode()
        + m.Describe(kind="P", name="p").encode()
        + m.Execute(portal="p").encode()
        + m.Close(kind="P", name="p").encode()
        + m.Execute(portal="p").encode()
        + m.Sync().encode()
    )
    client.server(
        m.ParseComplete(),
        m.BindComplete(),
        m.RowDescription(fields=(m.FieldDescription(name="n", type_oid=23),)),
        m.DataRow(values=(b"1",)),
        m.CommandComplete(tag="SELECT 1"),
        m.CloseComplete(),
        m.DataRow(values=(b"x",)),
        m.CommandComplete(tag="SELECT 1"),
        m.ReadyForQuery(status="I"),
    )
    assert seen == [[]]


class _MaskEverything:
    """An ``audit_text`` plugin, as masking is: the connection's audit text is rewritten."""

    @hookimpl
    def audit_text(self, output: Any) -> None:
        for name in output.fields:
            output.fields[name] = "[masked]"


def test_a_refused_upstream_login_is_told_to_the_client_but_withheld_from_the_log() -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = Gateway([("mask", _MaskEverything())]).connect()
        client.send(startup())
        client.send(m.PasswordMessage(password=client.gateway.secret).encode())
        client.session.upstream_failed("3D000", 'database "jane@example.com" does not exist')
    finally:
        globalLogPublisher.removeObserver(events.append)
    told = [e.fields["M"] for e in client.received() if isinstance(e, m.ErrorResponse)]
    assert told == ['database "jane@example.com" does not exist']
    logged = " ".join(str(value) for event in events for value in event.values())
    assert "jane@example.com" not in logged


# -- read-only connections (issue 14) -----------------------------------------------------------


class ReadOnly:
    """Requires read-only upstream sessions."""

    @hookimpl
    def upstream_options(self) -> Any:
        from hoopgw.session import UpstreamOptions

        return UpstreamOptions(read_only=True, reasons=("test",))


def _real_upstream(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Undo :func:`fake_upstream`; record the connections the session would open."""
    opened: list[Any] = []
    monkeypatch.setattr(ClientSession, "_connect_upstream", REAL_CONNECT_UPSTREAM)
    monkeypatch.setattr(
        ConnectionRuntime,
        "connect_upstream",
        lambda self, host, port, upstream, **_: opened.append(upstream) or defer.Deferred(),
    )
    return opened


def test_a_read_only_connection_starts_the_upstream_session_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = _real_upstream(monkeypatch)
    client = Gateway([("ro", ReadOnly())]).connect()
    # Whatever the client asks for, the startup parameter the target gets is "on".
    client.send(startup(default_transaction_read_only="off", DEFAULT_Transaction_Read_Only="0"))
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    [upstream] = opened
    assert [k for k in upstream._params if k.lower() == "default_transaction_read_only"] == [
        "default_transaction_read_only"
    ]
    assert list(upstream._params.items())[-1] == ("default_transaction_read_only", "on")
    # A target that does not report it on does not get the session.
    client.received()
    off = m.ParameterStatus(name="default_transaction_read_only", value="off").encode()
    client.session.upstream_ready([*UPSTREAM_PARAMETERS, off], (4242, b"srvk"), False)
    assert errors(client.received()) == [("FATAL", "28000")]
    assert client.closed


def test_a_connection_without_the_requirement_passes_the_clients_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = _real_upstream(monkeypatch)
    client = Gateway().connect()
    client.send(startup(application_name="x"))
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    [upstream] = opened
    assert "default_transaction_read_only" not in upstream._params


def test_a_reported_change_to_read_write_ends_a_read_only_session() -> None:
    client = Gateway([("ro", ReadOnly())]).connect()
    client.login()
    client.session._read_only = True  # what the (faked) upstream login set up
    client.received()
    client.send(m.Query(query="SELECT f()").encode())
    client.server(
        m.ParameterStatus(name="default_transaction_read_only", value="on"),
        m.ParameterStatus(name="application_name", value="x"),
    )
    assert not client.closed
    client.server(m.ParameterStatus(name="default_transaction_read_only", value="off"))
    assert ("FATAL", "25006") in errors(client.received())
    assert client.closed


def test_whether_a_text_ends_the_transaction_is_remembered_per_session_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only session parses each bound text once; another session, even of the same
    identity, parses it again: no session can time what another bound."""
    asked: list[str] = []
    real = analysis_module.parse

    def spy(text: str) -> Any:
        asked.append(text)
        return real(text)

    monkeypatch.setattr(analysis_module, "parse", spy)  # what ends_transaction runs
    gateway = Gateway([("ro", ReadOnly())])
    pipeline = (
        m.Parse(name="s", query="SELECT 1").encode()
        + (m.Bind(portal="", statement="s").encode() + m.Execute(portal="").encode()) * 2
        + m.Sync().encode()
    )
    for n in (1, 2):
        client = gateway.connect()
        client.login()
        client.session._read_only = True  # what the (faked) upstream login set up
        client.send(pipeline)
        assert m.Bind(portal="", statement="s") in upstream_messages(client)
        assert asked == ["SELECT 1"] * n


# -- an approval covers the values a statement runs with (issue 14, class 8) ------------------


class ValuePolicy:
    """Refuses a command bound to a value; records each decided command's kind and values."""

    def __init__(self, deny: bytes = b"2") -> None:
        self.deny = deny
        self.decided: list[tuple[str, tuple[Any, ...]]] = []
        self.prepared_only: list[bool] = []

    @hookimpl
    def client_command(self, command: Any) -> Any:
        self.prepared_only.append(command.prepared_only)
        if any(p.value == self.deny for p in command.parameters):
            return Block(reason="forbidden value")
        return None

    @hookimpl
    def command_decided(self, command: Any) -> None:
        values = tuple((p.value, p.format, p.type, p.shown) for p in command.parameters)
        self.decided.append((command.kind, values))


@pytest.mark.parametrize("split", [None, 1, 7])
def test_a_parse_is_decided_with_the_values_its_bind_carries(split: int | None) -> None:
    policy = ValuePolicy()
    client = logged_in([("policy", policy)])
    pipeline = (
        m.Parse(name="", query="DELETE FROM t WHERE id = $1 AND n = $2", param_oids=(23,)).encode()
        + m.Bind(
            portal="", statement="", param_formats=(1, 0), params=(b"\0\0\0\x2a", None)
        ).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.send(pipeline, split=split)
    assert policy.decided == [("parse", ((b"\0\0\0\x2a", 1, "23", "42"), (None, 0, "0", None)))]
    assert policy.prepared_only == [False]  # it runs: the Bind follows
    assert client.upstream is not None and client.upstream.forwarded() == pipeline


def test_a_second_bind_in_the_same_pipeline_is_decided_with_its_own_values() -> None:
    policy = ValuePolicy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="DELETE FROM t WHERE id = $1").encode()
        + m.Bind(portal="", statement="", params=(b"1",)).encode()
        + m.Execute(portal="").encode()
        + m.Bind(portal="", statement="", params=(b"2",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    assert [(kind, [v[0] for v in values]) for kind, values in policy.decided] == [
        ("parse", [b"1"]),
        ("execute", [b"2"]),
    ]
    binds = [message for message in upstream_messages(client) if isinstance(message, m.Bind)]
    assert [bind.params for bind in binds] == [(b"1",)]  # the refused value never left


def test_a_bind_after_a_describe_is_decided_with_its_values() -> None:
    policy = ValuePolicy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="s1", query="DELETE FROM t WHERE id = $1").encode()
        + m.Describe(kind="S", name="s1").encode()
        + m.Bind(portal="", statement="s1", params=(b"2",)).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    assert [(kind, [v[0] for v in values]) for kind, values in policy.decided] == [
        ("parse", []),
        ("execute", [b"2"]),
    ]
    assert policy.prepared_only == [True, False]
    assert not any(isinstance(message, m.Bind) for message in upstream_messages(client))


# -- lexing settings (issue 14): known from the server's reports, judged in lock-step ----------


def reported(**values: str) -> list[bytes]:
    """Login reports: UPSTREAM_PARAMETERS with ``values`` replacing or adding parameters."""
    params = {
        status.name: status.value
        for status in (m.ParameterStatus.decode(wire[5:]) for wire in UPSTREAM_PARAMETERS)
    }
    params.update(values)
    return [m.ParameterStatus(name=k, value=v).encode() for k, v in params.items() if v]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"standard_conforming_strings": "off"}, "standard_conforming_strings=off is refused"),
        ({"client_encoding": "SJIS"}, "client_encoding=SJIS is refused"),
        ({"client_encoding": "BIG5"}, "client_encoding=BIG5 is refused"),
        ({"client_encoding": "KLINGON"}, "client_encoding=KLINGON is refused"),
        ({"standard_conforming_strings": ""}, "did not report standard_conforming_strings"),
    ],
)
def test_a_login_reporting_a_state_the_gateway_cannot_lex_is_refused(
    values: dict[str, str], named: str
) -> None:
    policy = Policy()
    client = Gateway([("policy", policy)]).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    client.received()
    assert client.upstream is not None
    client.session.upstream_ready(reported(**values), (4242, b"srvk"), False)
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "0A000")
    assert named in error.fields["M"]
    assert client.closed and client.upstream.closed
    [reason] = policy.closed  # recorded as the session's end
    assert named in reason


def test_a_login_in_a_safe_encoding_is_welcome() -> None:
    client = Gateway().connect()
    client.send(startup(client_encoding="LATIN1"))
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    client.session.upstream_ready(reported(client_encoding="LATIN1"), (1, b"k"), False)
    assert types_of(client.received())[-1] == "ReadyForQuery"


class WordMasker:
    """Replaces a word in every message field, as masking's deny_words does."""

    def __init__(self, word: str, mask: str) -> None:
        self.word, self.mask = word, mask

    @hookimpl
    def server_output(self, output: Any) -> None:
        for name, value in output.fields.items():
            output.fields[name] = value.replace(self.word, self.mask)


def latin1_session(masker: WordMasker) -> Client:
    client = Gateway([("masker", masker)]).connect()
    client.send(startup(client_encoding="LATIN1"))
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    client.session.upstream_ready(reported(client_encoding="LATIN1"), (1, b"k"), False)
    client.received()
    client.send(m.Query(query="SELECT 1").encode())
    return client


def test_notices_and_errors_are_read_in_the_client_encoding() -> None:
    """The server writes message fields in the client encoding: plugins read them in it (a
    word with a non-ASCII letter is found) and the client gets them back in it."""
    client = latin1_session(WordMasker("Müller", "[DENY_LIST]"))
    latin1 = "Herr Müller".encode("latin-1").decode("utf-8", "surrogateescape")
    client.server(
        m.NoticeResponse(fields={"S": "NOTICE", "C": "00000", "M": latin1}),
        m.ErrorResponse(fields={"S": "ERROR", "C": "22P02", "M": latin1, "D": latin1}),
        m.ReadyForQuery(status="I"),
    )
    notice, error, _ = client.received()
    assert notice.fields["M"] == "Herr [DENY_LIST]"
    assert (error.fields["M"], error.fields["D"]) == ("Herr [DENY_LIST]", "Herr [DENY_LIST]")
    assert not client.closed


def test_a_masked_text_the_client_encoding_cannot_hold_ends_the_session() -> None:
    client = latin1_session(WordMasker("Müller", "\u2588" * 6))
    latin1 = "Herr Müller".encode("latin-1").decode("utf-8", "surrogateescape")
    client.server(m.NoticeResponse(fields={"S": "NOTICE", "C": "00000", "M": latin1}))
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "22021")
    assert "client_encoding LATIN1" in error.fields["M"] and "Müller" not in str(error.fields)
    assert client.closed


def test_a_message_not_in_the_reported_encoding_ends_the_session() -> None:
    """A function's own ``SET client_encoding`` (or ``set_config`` in a query that then
    fails, which rolls it back) makes the server write a message in an encoding it never
    reports: bytes not valid in UTF-8 are not read as text the plugins could mask."""
    client = Gateway([("masker", WordMasker("Müller", "[DENY_LIST]"))]).connect()
    client.login()
    client.received()
    client.send(m.Query(query="SELECT f()").encode())
    latin1 = "Herr Müller".encode("latin-1").decode("utf-8", "surrogateescape")
    client.server(m.ErrorResponse(fields={"S": "ERROR", "C": "22P02", "M": latin1}))
    [error] = client.received()
    assert (error.fields["S"], error.fields["C"]) == ("FATAL", "22021")
    assert "client_encoding UTF8" in error.fields["M"] and "ller" not in error.fields["M"]
    assert client.closed


def test_a_row_not_in_the_reported_encoding_ends_the_session() -> None:
    """``SELECT set_config('client_encoding', 'LATIN1', false), name FROM people``: the rows
    come in LATIN1 before the ParameterStatus that reports it. Read as UTF-8 they would pass
    a deny word unseen; a text value not valid in UTF-8 ends the session instead."""
    seen: list[bytes | None] = []

    class Spy(TextMasker):
        @hookimpl
        def server_rows(self, columns: list[Column], rows: list[list[bytes | None]]) -> None:
            seen.extend(row[0] for row in rows)

    client = logged_in([("spy", Spy())])
    client.send(m.Query(query="SELECT f(), name FROM people").encode())
    client.server(
        m.RowDescription(fields=(m.FieldDescription(name="name", type_oid=25),)),
        m.DataRow(values=("Herr Müller".encode("latin-1"),)),
    )
    received = client.received()
    assert not [x for x in received if isinstance(x, m.DataRow)]
    assert (received[-1].fields["S"], received[-1].fields["C"]) == ("FATAL", "22021")
    assert seen == [] and client.closed


@pytest.mark.parametrize("split", [None, 1, 5])
def test_a_report_of_a_refused_value_ends_the_session(split: int | None) -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT flip()").encode(), split=split)
    client.send(m.Query(query="SELECT 'a\\' || 'b'").encode(), split=split)
    assert upstream_messages(client) == [m.Query(query="SELECT flip()")]  # the second waits
    wire = b"".join(
        message.encode()
        for message in (
            m.CommandComplete(tag="SELECT 1"),
            m.ParameterStatus(name="standard_conforming_strings", value="off"),
            m.ReadyForQuery(status="I"),
        )
    )
    reader = m.MessageReader()
    step = split or len(wire)
    for start in range(0, len(wire), step):
        client.session.upstream_messages(*reader.feed_block(wire[start : start + step]))
    received = client.received()
    assert types_of(received) == ["CommandComplete", "ErrorResponse"]
    assert (received[1].fields["S"], received[1].fields["C"]) == ("FATAL", "0A000")
    assert "standard_conforming_strings=off is refused" in received[1].fields["M"]
    assert client.closed
    assert upstream_messages(client)[:1] == [m.Query(query="SELECT flip()")]
    assert all(
        message != m.Query(query="SELECT 'a\\' || 'b'") for message in upstream_messages(client)
    )
    assert policy.decided == [("SELECT flip()", "Allow")]
    assert "standard_conforming_strings=off is refused" in policy.closed[0]


@pytest.mark.parametrize("split", [None, 1, 3])
def test_a_text_that_could_read_differently_waits_for_the_state_it_will_meet(
    split: int | None,
) -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    latin1 = "SELECT 'café'".encode("latin-1")
    client.send(
        m.Query(query="SET client_encoding = 'LATIN1'").encode()
        + b"Q"
        + (len(latin1) + 5).to_bytes(4, "big")
        + latin1
        + b"\0",
        split=split,
    )
    # Bytes that read alike in every state go on; these wait for the first command's answer.
    assert upstream_messages(client) == [m.Query(query="SET client_encoding = 'LATIN1'")]
    assert policy.decided == [("SET client_encoding = 'LATIN1'", "Allow")]
    client.server(m.CommandComplete(tag="SET"))
    client.server(m.ParameterStatus(name="client_encoding", value="LATIN1"))
    assert len(upstream_messages(client)) == 1
    client.server(m.ReadyForQuery(status="I"))
    # Judged in the encoding the server reported, and forwarded byte for byte.
    assert policy.decided[-1] == ("SELECT 'café'", "Allow")
    assert client.upstream is not None
    assert client.upstream.forwarded().endswith(latin1 + b"\0")


def test_texts_that_read_alike_in_every_state_are_not_held() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Query(query="SELECT set_config('x.y', 'z', false)").encode()
        + m.Query(query="SELECT 'plain ascii; no backslash'").encode()
    )
    assert len(upstream_messages(client)) == 2


def test_an_unsynced_extended_pipeline_refuses_a_text_that_could_read_differently() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="SELECT flip()").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Parse(name="s2", query="SELECT E'\\x41'").encode()
        + m.Bind(portal="", statement="s2").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    # No answer about the first could come before the server reads the second: refused.
    assert upstream_messages(client) == [
        m.Parse(name="", query="SELECT flip()"),
        m.Bind(portal="", statement=""),
        m.Execute(portal=""),
        m.Parse(name="", query=REFUSED_STATEMENT),
        m.Sync(),
    ]
    client.server(
        m.ParseComplete(),
        m.BindComplete(),
        m.CommandComplete(tag="SELECT 1"),
        m.error_response("ERROR", "42601", "syntax error"),
        m.ReadyForQuery(status="I"),
    )
    error = [e for e in client.received() if isinstance(e, m.ErrorResponse)]
    assert error[0].fields["C"] == "0A000"
    assert "send Sync before it" in error[0].fields["M"]
    assert policy.decided[-1][1] == "Block"
    assert ("SELECT E'\\x41'", "blocked", "0A000") in policy.completed


def test_a_synced_extended_pipeline_waits_for_the_ready_for_query() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    second = (
        m.Parse(name="", query="SELECT 'ü'").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.send(
        m.Parse(name="", query="SELECT 1").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
        + second,
        split=1,
    )
    assert len(upstream_messages(client)) == 4
    client.server(m.ParseComplete(), m.BindComplete(), m.CommandComplete(tag="SELECT 1"))
    assert len(upstream_messages(client)) == 4
    client.server(m.ReadyForQuery(status="I"))
    assert client.upstream is not None
    assert client.upstream.forwarded().endswith(second)
    assert policy.decided[-1] == ("SELECT 'ü'", "Allow")


def test_a_text_with_a_tag_that_may_compare_differently_is_refused() -> None:
    policy = Policy()
    client = Gateway([("policy", policy)]).connect()
    client.send(startup())
    client.send(m.PasswordMessage(password=client.gateway.secret).encode())
    client.session.upstream_ready(
        reported(client_encoding="EUC_JP", server_encoding="EUC_JP"), (1, b"k"), False
    )
    client.received()
    text = "SELECT $タグ$ x $タグ$".encode("euc_jp")
    client.send(b"Q" + (len(text) + 5).to_bytes(4, "big") + text + b"\0")
    assert upstream_messages(client) == [m.Query(query=REFUSED_STATEMENT)]
    assert policy.completed[-1][1:] == ("blocked", "0A000")


def test_messages_behind_a_held_text_keep_their_order() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Query(query="SELECT 1").encode()
        + m.Query(query="SELECT 'ö'").encode()
        + m.Query(query="SELECT 2").encode()
        + m.Terminate().encode()
    )
    # "SELECT 2" reads alike in every state, but it may not overtake the text before it.
    assert upstream_messages(client) == [m.Query(query="SELECT 1")]
    assert not client.closed
    client.server(m.CommandComplete(tag="SELECT 1"), m.ReadyForQuery(status="I"))
    assert upstream_messages(client) == [
        m.Query(query="SELECT 1"),
        m.Query(query="SELECT 'ö'"),
        m.Query(query="SELECT 2"),
        m.Terminate(),
    ]
    assert [text for text, _ in policy.decided] == ["SELECT 1", "SELECT 'ö'", "SELECT 2"]


def test_a_client_leaving_while_a_text_is_held_ends_the_session() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(m.Query(query="SELECT 1").encode() + m.Query(query="SELECT 'ö'").encode())
    client.session.connectionLost()
    assert client.upstream is not None and client.upstream.closed
    assert policy.closed == ["client closed"]
    assert [text for text, _ in policy.decided] == ["SELECT 1"]


def test_a_query_the_server_skips_after_a_pipeline_error_does_not_hold_later_texts() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="SELEC 1").encode()
        + m.Query(query="SELECT 1").encode()
        + m.Sync().encode()
    )
    client.server(m.error_response("ERROR", "42601", "syntax error"), m.ReadyForQuery(status="I"))
    client.send(m.Query(query="SELECT 2").encode())
    client.server(m.CommandComplete(tag="SELECT 1"), m.ReadyForQuery(status="I"))
    # Counting the skipped Query as still pending would hold this text for ever.
    client.send(m.Query(query="SELECT 'ö'").encode())
    assert upstream_messages(client)[-1] == m.Query(query="SELECT 'ö'")


def test_a_copy_through_the_extended_protocol_does_not_hold_later_texts() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(
        m.Parse(name="", query="COPY t FROM STDIN").encode()
        + m.Bind(portal="", statement="").encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    client.server(
        m.ParseComplete(), m.BindComplete(), m.CopyInResponse(format=0, column_formats=(0,))
    )
    # The server ignores the Sync sent during copy-in; libpq sends another after CopyDone.
    client.send(m.CopyData(data=b"1\n").encode() + m.CopyDone().encode() + m.Sync().encode())
    client.server(m.CommandComplete(tag="COPY 1"), m.ReadyForQuery(status="I"))
    assert policy.completed == [("COPY t FROM STDIN", "ok", "")]
    client.send(m.Query(query="SELECT 1").encode())
    client.server(m.CommandComplete(tag="SELECT 1"), m.ReadyForQuery(status="I"))
    assert policy.completed[-1] == ("SELECT 1", "ok", "")
    # Counting the ignored Sync as pending would hold this text for ever.
    client.send(m.Query(query="SELECT 'ö'").encode())
    assert upstream_messages(client)[-1] == m.Query(query="SELECT 'ö'")


# -- what a client is told about refusals and holds ---------------------------------------------


class RuleBlock:
    """Refuses every command by a named rule."""

    @hookimpl
    def client_command(self) -> Block:
        return Block(reason="ddl: DROP TABLE is not allowed", rule="ddl")


def test_a_refusal_names_code_rule_and_next_step_in_detail_and_hint() -> None:
    client = logged_in([("rules", RuleBlock())])
    client.send(m.Query(query="DROP TABLE t").encode())
    client.server(
        m.error_response("ERROR", "42601", 'syntax error at or near "hoopgw"'),
        m.ReadyForQuery(status="I"),
    )
    error, _ = client.received()
    assert error.fields["C"] == "42501"
    assert error.fields["M"] == "hoopgw refused the command: ddl: DROP TABLE is not allowed"
    assert error.fields["D"] == "code=HGW-DENIED rule=ddl plugin=rules"
    assert "Rule ddl does not allow this on connection pg" in error.fields["H"]


def held_statement(session: ClientSession, hold_until: float) -> HeldStatement:
    assert session.session_info is not None
    return HeldStatement(
        review_id="abc123def456",
        command_seq=1,
        approvers=("dba",),
        hold_until=hold_until,
        reason="risky",
    )


def notices(messages: list[Any]) -> list[dict[str, str]]:
    return [n.fields for n in messages if isinstance(n, m.NoticeResponse)]


def test_a_held_statement_is_noticed_at_once_and_at_intervals_until_released() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow)])
    clock = client.gateway.clock
    client.send(m.Query(query="DELETE FROM t").encode())
    assert client.session.session_info is not None
    session_id = client.session.session_info.id
    statement = held_statement(client.session, hold_until=clock.seconds() + 300)
    client.gateway.sessions.statement_held(session_id, statement)
    [first] = notices(client.received())
    assert (first["S"], first["C"]) == ("NOTICE", HELD_SQLSTATE)
    assert first["M"] == (
        "hoopgw: held for review abc123def456 by group dba, waiting up to 300 s: risky"
    )
    assert first["D"] == "code=HGW-HELD"
    assert "hoopgw reviews approve abc123def456" in first["H"]
    clock.advance(HELD_NOTICE_INTERVAL - 1)
    assert client.received() == []
    clock.advance(1)
    [second] = notices(client.received())
    assert "waiting up to 270 s" in second["M"]
    client.gateway.sessions.statement_released(session_id, "abc123def456")
    clock.advance(HELD_NOTICE_INTERVAL * 3)
    assert client.received() == []
    slow.pending[0].callback(None)
    assert upstream_messages(client) == [m.Query(query="DELETE FROM t")]


def test_held_notices_stop_when_the_session_ends() -> None:
    slow = Deferring()
    client = logged_in([("slow", slow)])
    clock = client.gateway.clock
    client.send(m.Query(query="DELETE FROM t").encode())
    assert client.session.session_info is not None
    statement = held_statement(client.session, hold_until=clock.seconds() + 300)
    client.gateway.sessions.statement_held(client.session.session_info.id, statement)
    client.received()
    client.session.connectionLost()
    clock.advance(HELD_NOTICE_INTERVAL * 2)
    assert client.received() == []


# -- the lean relay: bytes as received unless a plugin needs them -----------------------------


class Outcomes:
    """Observes outcomes only: it neither judges commands nor reads rows."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    @hookimpl
    def command_completed(self, outcome: Any) -> None:
        self.outcomes.append(outcome)


class EveryRow:
    """Reads and rewrites every row, to prove it is shown each one."""

    def __init__(self) -> None:
        self.seen: list[bytes | None] = []

    @hookimpl
    def server_rows(self, rows: list[list[bytes | None]]) -> None:
        for row in rows:
            self.seen.append(row[0])
            row[0] = b"<" + (row[0] or b"") + b">"


def many_rows_answer() -> tuple[Any, ...]:
    return (
        m.RowDescription(fields=(m.FieldDescription(name="v", type_oid=25),)),
        *(m.DataRow(values=(f"row{i}".encode(),)) for i in range(5)),
        m.NoticeResponse(fields={"S": "NOTICE", "C": "00000", "M": "half way"}),
        *(m.DataRow(values=(f"row{i}".encode(),)) for i in range(5, 9)),
        m.CommandComplete(tag="SELECT 9"),
        m.ReadyForQuery(status="I"),
    )


def serve_split(client: Client, messages: Sequence[Any], split: int | None) -> None:
    """The target answers with ``messages``, its bytes cut every ``split`` bytes."""
    wire = b"".join(message.encode() for message in messages)
    reader = m.MessageReader()
    step = split or len(wire)
    for start in range(0, len(wire), step):
        client.session.upstream_messages(*reader.feed_block(wire[start : start + step]))


@pytest.mark.parametrize("split", [None, 1, 2, 3, 7, 40])
def test_without_a_data_plugin_the_answer_is_relayed_byte_for_byte(split: int | None) -> None:
    outcomes = Outcomes()
    client = logged_in([("outcomes", outcomes)])
    client.send(m.Query(query="SELECT v FROM t").encode())
    answer = many_rows_answer()
    serve_split(client, answer, split)
    assert client.transport.value() == b"".join(message.encode() for message in answer)
    assert [(o.status, o.rows) for o in outcomes.outcomes] == [("ok", 9)]
    notice = answer[6].encode()  # asynchronous: no command's bytes
    assert outcomes.outcomes[0].bytes == len(client.transport.value()) - len(notice)


@pytest.mark.parametrize("split", [None, 1, 2, 3, 7, 40])
def test_a_plugin_that_reads_rows_sees_every_row_in_every_split(split: int | None) -> None:
    rows, outcomes = EveryRow(), Outcomes()
    client = logged_in([("rows", rows), ("outcomes", outcomes)])
    client.send(m.Query(query="SELECT v FROM t").encode())
    serve_split(client, many_rows_answer(), split)
    values = [f"row{i}".encode() for i in range(9)]
    assert rows.seen == values
    received = client.received()
    assert [x.values[0] for x in received if isinstance(x, m.DataRow)] == [
        b"<" + value + b">" for value in values
    ]
    assert types_of(received) == types_of(list(many_rows_answer()))
    assert [(o.status, o.rows) for o in outcomes.outcomes] == [("ok", 9)]


def test_copy_data_is_read_in_its_copy_encoding_parsed_once_per_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A COPY naming an ENCODING sends its data in it: the masker reads it there. Its text is
    parsed for that once per COPY, in the session (no cache shared with other sessions)."""
    parsed: list[str] = []
    real = analysis_module.parse

    def spy(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(analysis_module, "parse", spy)
    client = Gateway([("masker", WordMasker("Müller", "[DENY_LIST]"))]).connect()
    client.login()
    text = "COPY t TO STDOUT (ENCODING 'LATIN1')"
    for n in (1, 2):
        client.send(m.Query(query=text).encode())
        client.server(
            m.CopyOutResponse(format=0, column_formats=(0,)),
            m.CopyData(data=b"Herr M\xfcller\n"),
            m.CopyData(data=b"M\xfcller\n"),
            m.CopyDone(),
            m.CommandComplete(tag="COPY 2"),
            m.ReadyForQuery(status="I"),
        )
        data = [msg.data for msg in client.received() if isinstance(msg, m.CopyData)]
        assert data == [b"Herr [DENY_LIST]\n", b"[DENY_LIST]\n"]
        assert parsed.count(text) == n
