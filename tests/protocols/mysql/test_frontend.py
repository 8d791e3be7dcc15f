"""Tests for :mod:`hoopgw_mysql.frontend`: one client session, driven byte by byte.

The client side is a ``StringTransport`` on a loopback (or remote) peer; the upstream is a fake
with ``send``/``close``/``transport``; time is a ``MemoryReactorClock``. Server answers are
encoded with the codec and handed to the session as the real upstream connection does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from attrs import evolve as attrs_evolve
from hoopgw_mysql import messages as m
from hoopgw_mysql.analysis import TRACKED_VARIABLES, LexingState
from hoopgw_mysql.frontend import GATEWAY_CAPABILITIES, ClientSession
from hoopgw_mysql.upstream import TRACKING_SETUP, TargetInfo, read_only_statement
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.errors import STORE_UNAVAILABLE, StoreError
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import hookimpl
from hoopgw.protocol import ConnectionRuntime
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.runtime.throttle import BackoffSettings, FailureThrottle
from hoopgw.session import ConnectionInfo
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeApprover, HookLog
from hoopgw.verdicts import Block, Hold

CLIENT_CAPS = (
    m.CLIENT_PROTOCOL_41
    | m.CLIENT_SECURE_CONNECTION
    | m.CLIENT_PLUGIN_AUTH
    | m.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | m.CLIENT_CONNECT_WITH_DB
    | m.CLIENT_MULTI_RESULTS
)
SERVER_CAPS = GATEWAY_CAPABILITIES | m.CLIENT_SSL


class Policy:
    """Refuses commands with a word; rewrites row values and error messages; records."""

    def __init__(self, deny: Sequence[str] = ("forbidden",)) -> None:
        self.deny = tuple(deny)
        self.completed: list[tuple[str, str, int]] = []
        self.columns: list[list[tuple[str, str, int]]] = []
        self.closed: list[str] = []

    @hookimpl
    def client_command(self, command: Any) -> Any:
        return Block(reason="forbidden word") if any(w in command.text for w in self.deny) else None

    @hookimpl
    def result_columns(self, columns: Any) -> None:
        self.columns.append([(c.name, c.type_name, c.format) for c in columns])

    @hookimpl
    def server_rows(self, rows: Any) -> None:
        for row in rows:
            for i, value in enumerate(row):
                if value == b"secret":
                    row[i] = b"*" * 20

    @hookimpl
    def server_output(self, output: Any) -> None:
        if "message" in output.fields:
            output.fields["message"] = output.fields["message"].replace("secret", "***")

    @hookimpl
    def command_completed(self, command: Any, outcome: Any) -> None:
        self.completed.append((command.text, outcome.status, outcome.rows))

    @hookimpl
    def session_closed(self, reason: str) -> None:
        self.closed.append(reason)


class FakeUpstream:
    def __init__(self) -> None:
        self.transport = StringTransport()
        self.closed = False
        # What the gateway always asks a real target for (session-state tracking), and the
        # lexing settings its tracking setup reported.
        self.capabilities = CLIENT_CAPS | m.CLIENT_SESSION_TRACK
        self.lexing = LexingState()
        self.results_charset = "utf8mb4"
        self.read_only_variable = "tx_read_only"

    def send(self, payload: bytes, seq: int) -> int:
        data, following = m.encode_packet(payload, seq)
        self.transport.write(data)
        return following

    def close(self) -> None:
        self.closed = True

    def commands(self) -> list[bytes]:
        packets = m.PacketReader().feed(self.transport.value())
        self.transport.clear()
        return [p.payload for p in packets]


class Gateway:
    def __init__(self, plugins: Sequence[tuple[str, object]] = (), **config: Any) -> None:
        self.clock = MemoryReactorClock()
        store = SQLiteStore(":memory:")
        store.migrate()
        self.keys = KeyService(store)
        self.secret, _ = self.keys.create("agent", ["agents"], now=time.time())
        connection = ConnectionConfig(
            name="my",
            protocol="mysql",
            listen="tcp:13306:interface=127.0.0.1",
            target="127.0.0.1:3306",
            credential=CredentialConfig(user="app"),
            allow_groups=("agents",),
            plugins=tuple(name for name, _ in plugins),
            upstream_tls=UpstreamTlsConfig(sslmode="disable"),
            **config,
        )
        self.sessions = SessionRegistry()
        self.runtime = ConnectionRuntime(
            config=connection,
            gateway=GatewayConfig(auth_timeout=30.0),
            info=ConnectionInfo(name="my", protocol="mysql", target=connection.target),
            chain=PluginChain(list(plugins), reactor=self.clock),
            authenticator=Authenticator(self.keys),
            sessions=self.sessions,
            reactor=self.clock,
        )
        self.target = TargetInfo()
        self.target.learned(
            m.Handshake(
                server_version="10.11.6-MariaDB",
                connection_id=1,
                scramble=b"x" * 20,
                capabilities=SERVER_CAPS,
            )
        )

    def connect(self, host: str = "127.0.0.1") -> Client:
        return Client(self, host)


class Client:
    def __init__(self, gateway: Gateway, host: str) -> None:
        self.gateway = gateway
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
        self.session = ClientSession(gateway.runtime, gateway.target)
        self.session.makeConnection(self.transport)
        self.seq = 0

    @property
    def upstream(self) -> FakeUpstream:
        assert self.session.upstream is not None, "the session did not connect upstream"
        return self.session.upstream  # type: ignore[return-value]

    def send(self, payload: bytes, *, seq: int, split: int | None = None) -> None:
        data, _ = m.encode_packet(payload, seq)
        step = split or len(data)
        for start in range(0, len(data), step):
            self.session.dataReceived(data[start : start + step])

    def received(self) -> list[m.Packet]:
        data = self.transport.value()
        self.transport.clear()
        return m.PacketReader().feed(data)

    def login(self, *, split: int | None = None, user: str = "agent") -> list[m.Packet]:
        [greeting] = self.received()
        handshake = m.Handshake.decode(greeting.payload)
        response = m.HandshakeResponse(
            capabilities=CLIENT_CAPS,
            user=user,
            auth_response=b"\x00" * 20,
            database="shop",
            auth_plugin="mysql_native_password",
        )
        self.send(response.encode(), seq=1, split=split)
        [switch] = self.received()
        assert m.AuthSwitchRequest.decode(switch.payload).plugin == "mysql_clear_password"
        assert switch.seq == 2
        self.send(self.gateway.secret.encode() + b"\0", seq=3, split=split)
        assert handshake.server_version == "10.11.6-MariaDB"
        return self.received()

    def ready(self) -> None:
        self.session.upstream_ready(m.OkPacket(status=2).encode(), False)

    def server(self, *payloads: bytes) -> None:
        wire = b"".join(m.encode_packet(p, i + 1)[0] for i, p in enumerate(payloads))
        self.session.upstream_packets(m.PacketReader().feed(wire))


@pytest.fixture(autouse=True)
def fake_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: ClientSession) -> None:
        self.upstream = FakeUpstream()  # type: ignore[assignment]

    monkeypatch.setattr(ClientSession, "_connect_upstream", connect)


def column(name: bytes, type_: int = 0xFD) -> bytes:
    return m.ColumnDefinition(name=name, org_name=name, org_table=b"t", type=type_).encode()


def tracking_ok(status: int = 2, **variables: str) -> bytes:
    """An OK that reports system variables (session-state tracking)."""
    entries = b"".join(
        b"\x00" + m.lenenc_bytes(m.lenenc_bytes(k.encode()) + m.lenenc_bytes(v.encode()))
        for k, v in variables.items()
    )
    return m.OkPacket(
        status=status | m.SERVER_SESSION_STATE_CHANGED,
        info=m.lenenc_bytes(b"") + m.lenenc_bytes(entries),
    ).encode()


SETUP_OK = tracking_ok(
    sql_mode="STRICT_TRANS_TABLES", character_set_client="utf8mb4", character_set_results="utf8mb4"
)


def setup_ok(results: str = "utf8mb4") -> bytes:
    """The OK of TRACKING_SETUP, reporting ``character_set_results`` = ``results``."""
    return tracking_ok(
        sql_mode="STRICT_TRANS_TABLES",
        character_set_client="utf8mb4",
        character_set_results=results,
    )


def eof(status: int = 2) -> bytes:
    return m.EofPacket(status=status).encode()


def logged_in(plugins: Sequence[tuple[str, object]] = ()) -> Client:
    client = Gateway(plugins).connect()
    assert client.login() == []
    client.ready()
    [ok] = client.received()
    assert m.is_ok(ok.payload) and ok.seq == 4
    return client


# -- greeting and login -------------------------------------------------------------------------


def test_greeting_offers_what_the_target_can_do_and_never_local_infile() -> None:
    client = Gateway().connect()
    [greeting] = client.received()
    handshake = m.Handshake.decode(greeting.payload)
    assert greeting.seq == 0
    assert handshake.auth_plugin == "mysql_native_password"
    assert not handshake.capabilities & (m.CLIENT_LOCAL_FILES | m.CLIENT_COMPRESS)
    assert not handshake.capabilities & m.CLIENT_SSL  # no tls_cert configured
    assert handshake.capabilities & m.CLIENT_DEPRECATE_EOF


@pytest.mark.parametrize("split", [1, 2, 7, None])
def test_login_in_every_split(split: int | None) -> None:
    client = Gateway().connect()
    assert client.login(split=split) == []
    assert client.session.upstream is not None
    client.ready()
    [ok] = client.received()
    assert m.is_ok(ok.payload)


def test_wrong_key_is_access_denied() -> None:
    client = Gateway().connect()
    client.received()
    client.send(
        m.HandshakeResponse(
            capabilities=CLIENT_CAPS,
            user="agent",
            auth_response=b"hgw_wrong\0",
            auth_plugin="mysql_clear_password",
        ).encode(),
        seq=1,
    )
    client.gateway.clock.advance(60)
    [error] = client.received()
    err = m.ErrPacket.decode(error.payload)
    assert err.code == 1045 and err.sqlstate == "28000"
    assert client.transport.disconnecting
    assert client.session.upstream is None


def test_a_key_off_loopback_without_tls_is_refused_before_it_is_asked_for() -> None:
    client = Gateway().connect(host="192.0.2.10")
    client.received()
    client.send(
        m.HandshakeResponse(capabilities=CLIENT_CAPS, user="agent", auth_response=b"x").encode(),
        seq=1,
    )
    [error] = client.received()
    assert "TLS" in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting


@pytest.mark.parametrize("charset", [28, 13, 1])  # gbk, sjis, big5
def test_a_character_set_the_analysis_cannot_read_is_refused_at_login(charset: int) -> None:
    client = Gateway().connect()
    client.received()
    client.send(
        m.HandshakeResponse(
            capabilities=CLIENT_CAPS,
            user="agent",
            auth_response=b"x",
            charset=charset,
        ).encode(),
        seq=1,
    )
    [error] = client.received()
    assert m.ErrPacket.decode(error.payload).code == 1115
    assert client.transport.disconnecting
    assert client.session.upstream is None


def test_a_large_packet_before_login_is_refused_unbuffered() -> None:
    client = Gateway().connect()
    client.received()
    client.session.dataReceived((1 << 20).to_bytes(3, "little") + b"\x01" + b"x" * 100)
    [error] = client.received()
    assert m.ErrPacket.decode(error.payload).code == 1153
    assert client.transport.disconnecting


def test_after_login_packets_up_to_max_message_size_are_read() -> None:
    client = logged_in()
    query = b"\x03SELECT '" + b"x" * (1 << 20) + b"'"
    client.send(query, seq=0)
    assert client.upstream.commands() == [query]


def test_the_user_name_must_be_the_keys_identity() -> None:
    client = Gateway().connect()
    [error] = client.login(user="someone-else")
    assert m.ErrPacket.decode(error.payload).code == 1045


# -- commands ---------------------------------------------------------------------------------


def test_query_with_text_rows_passes_through_data_hooks() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x03SELECT a, b FROM t", seq=0)
    assert client.upstream.commands() == [b"\x03SELECT a, b FROM t"]
    client.server(
        b"\x02",
        column(b"a"),
        column(b"b", 0x08),
        eof(),
        m.encode_text_row([b"secret", b"1"]),
        m.encode_text_row([None, b"2"]),
        eof(),
    )
    packets = client.received()
    assert [p.seq for p in packets] == list(range(1, 8))
    assert m.decode_text_row(packets[4].payload, 2) == [b"*" * 20, b"1"]
    assert m.decode_text_row(packets[5].payload, 2) == [None, b"2"]
    assert policy.columns == [[("a", "VAR_STRING", 0), ("b", "LONGLONG", 0)]]
    assert policy.completed == [("SELECT a, b FROM t", "ok", 2)]


def test_a_refused_command_never_reaches_the_target() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x03DELETE forbidden", seq=0)
    assert client.upstream.commands() == []
    [error] = client.received()
    err = m.ErrPacket.decode(error.payload)
    assert (err.code, error.seq) == (1227, 1)
    assert "forbidden word" in err.message
    assert policy.completed == [("DELETE forbidden", "blocked", 0)]
    # The session goes on.
    client.send(b"\x0e", seq=0)
    assert client.upstream.commands() == [b"\x0e"]


class RuleBlock:
    """Refuses every command by a named rule."""

    @hookimpl
    def client_command(self) -> Block:
        return Block(reason="ddl: DROP TABLE is not allowed", rule="ddl")


def test_a_refusal_names_code_rule_and_next_step_in_its_message() -> None:
    client = logged_in([("rules", RuleBlock())])
    client.send(b"\x03DROP TABLE t", seq=0)
    [error] = client.received()
    err = m.ErrPacket.decode(error.payload)
    assert err.code == 1227
    assert err.message.startswith(
        "hoopgw refused the command: ddl: DROP TABLE is not allowed"
        " [code=HGW-DENIED rule=ddl plugin=rules]. Rule ddl does not allow this on connection"
    )


def test_errors_pass_through_server_output() -> None:
    client = logged_in([("policy", Policy())])
    client.send(b"\x03SELECT x", seq=0)
    client.server(m.ErrPacket(code=1054, sqlstate="42S22", message="no secret here").encode())
    # The error waits until the target reported character_set_results again.
    assert client.received() == []
    assert client.upstream.commands() == [b"\x03SELECT x", b"\x03" + TRACKING_SETUP.encode()]
    client.server(setup_ok())
    [error] = client.received()
    assert m.ErrPacket.decode(error.payload).message == "no *** here"


def test_an_error_is_read_in_character_set_results_a_function_changed_unreported() -> None:
    # SELECT f() where f sets character_set_results = latin1: the result set's EOF reports
    # nothing, and the next error came in latin1 while the gateway read UTF-8.
    client = logged_in([("policy", Policy())])
    client.send(b"\x03SELECT f()", seq=0)
    client.server(b"\x01", column(b"f()"), eof(), b"\x011", eof(2 | m.SERVER_SESSION_STATE_CHANGED))
    client.received()
    client.send(b"\x03SELECT x", seq=0)
    latin1 = "no secr\u00e9t here".encode("latin-1").decode("utf-8", "surrogateescape")
    client.server(m.ErrPacket(code=1054, sqlstate="42S22", message=latin1).encode())
    client.server(setup_ok("latin1"))
    [error] = client.received()
    message = m.ErrPacket.decode(error.payload).message.encode("utf-8", "surrogateescape")
    assert message.decode("latin-1") == "no secr\u00e9t here"  # read in latin1: no UTF-8 error


def test_errors_are_read_in_the_reported_character_set_of_results() -> None:
    """The server writes its errors in ``character_set_results``, as each OK reports it: the
    plugins read them in it, and the client gets them back in it; in a set hoopgw cannot read
    exactly, the session ends rather than pass the text unread."""
    client = logged_in([("policy", Policy())])
    client.send(b"\x03SET character_set_results = utf16", seq=0)
    client.server(tracking_ok(character_set_results="utf16"))
    client.received()
    client.send(b"\x03SELECT x", seq=0)
    wide = "no secret here".encode("utf-16-be").decode("utf-8", "surrogateescape")
    client.server(m.ErrPacket(code=1054, sqlstate="42S22", message=wide).encode())
    client.server(setup_ok("utf16"))
    [error] = client.received()
    message = m.ErrPacket.decode(error.payload).message.encode("utf-8", "surrogateescape")
    assert message.decode("utf-16-be") == "no *** here"
    client.send(b"\x03SET character_set_results = sjis", seq=0)
    client.server(tracking_ok(character_set_results="sjis"))
    client.received()
    client.send(b"\x03SELECT x", seq=0)
    client.server(m.ErrPacket(code=1054, sqlstate="42S22", message="no secret").encode())
    client.server(setup_ok("sjis"))
    [error] = client.received()
    assert "cannot read exactly" in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting


@pytest.mark.parametrize(
    ("codec", "why"), [("utf-16-be", "NUL bytes"), ("latin-1", "not valid UTF-8")]
)
def test_an_error_in_a_set_not_reported_ends_the_session(codec: str, why: str) -> None:
    """A routine may set character_set_results and fail before any OK reports it (MariaDB
    keeps the routine's setting); the gateway asks for the set before it reads the error. A
    message that still does not read in the set the server names (here UTF-8) would match no
    pattern: it ends the session instead."""
    client = logged_in([("policy", Policy())])
    client.send(b"\x03CALL p()", seq=0)
    text = "no s\xe9cret secret here".encode(codec).decode("utf-8", "surrogateescape")
    client.server(m.ErrPacket(code=1146, sqlstate="42S02", message=text).encode())
    client.server(setup_ok("utf8mb4"))
    [error] = client.received()
    message = m.ErrPacket.decode(error.payload).message
    assert why in message and "cret" not in message
    assert client.transport.disconnecting


def test_commands_wait_for_the_previous_answer() -> None:
    client = logged_in()
    client.send(b"\x03SELECT 1", seq=0)
    client.send(b"\x03SELECT 2", seq=0)
    assert client.upstream.commands() == [b"\x03SELECT 1"]
    client.server(m.OkPacket().encode())
    assert client.upstream.commands() == [b"\x03SELECT 2"]


def test_multi_results_end_only_at_the_last_result() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x03SELECT 1; UPDATE t SET a = 1", seq=0)
    client.send(b"\x0e", seq=0)
    assert client.upstream.commands() == [b"\x03SELECT 1; UPDATE t SET a = 1"]
    client.server(
        b"\x01",
        column(b"1"),
        eof(),
        m.encode_text_row([b"1"]),
        eof(2 | m.SERVER_MORE_RESULTS_EXISTS),
        m.OkPacket(affected_rows=3).encode(),
    )
    assert len(client.received()) == 6
    assert client.upstream.commands() == [b"\x0e"]
    assert policy.completed == [("SELECT 1; UPDATE t SET a = 1", "ok", 1)]


def test_prepared_statements_and_binary_rows() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x16SELECT a, n FROM t WHERE id = ?", seq=0)
    assert client.upstream.commands() == [b"\x16SELECT a, n FROM t WHERE id = ?"]
    client.server(
        m.StmtPrepareOk(statement_id=9, columns=2, params=1).encode(),
        column(b"?"),
        eof(),
        column(b"a"),
        column(b"n", 0x03),
        eof(),
    )
    assert len(client.received()) == 6
    execute = b"\x17" + (9).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00" + b"\x00\x01\x03\x00"
    execute += (1).to_bytes(4, "little")
    client.send(execute, seq=0)
    assert client.upstream.commands() == [execute]
    row = m.encode_binary_row([b"secret", (5).to_bytes(4, "little")], [0xFD, 0x03])
    client.server(b"\x02", column(b"a"), column(b"n", 0x03), eof(), row, eof())
    packets = client.received()
    assert m.decode_binary_row(packets[4].payload, [0xFD, 0x03]) == [
        b"*" * 20,
        (5).to_bytes(4, "little"),
    ]
    assert policy.columns[-1] == [("a", "VAR_STRING", 1), ("n", "LONG", 1)]
    texts = [c[0] for c in policy.completed]
    assert texts == ["SELECT a, n FROM t WHERE id = ?"] * 2


def test_execute_of_an_unknown_statement_is_answered_by_the_gateway() -> None:
    client = logged_in()
    client.send(b"\x17" + (77).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00", seq=0)
    [error] = client.received()
    assert m.is_err(error.payload)
    assert client.upstream.commands() == []


def test_unsupported_commands_are_refused() -> None:
    client = logged_in()
    client.send(b"\x12\x00\x00\x00\x00", seq=0)  # COM_BINLOG_DUMP
    [error] = client.received()
    assert "not supported" in m.ErrPacket.decode(error.payload).message
    assert client.upstream.commands() == []
    assert not client.transport.disconnecting


def change_user(client: Client, user: str, secret: str, database: str = "") -> None:
    caps = CLIENT_CAPS
    client.send(
        m.ChangeUser(
            user=user,
            auth_response=b"\x01" * 20,
            database=database,
            charset=45,
            auth_plugin="mysql_native_password",
        ).encode(caps),
        seq=0,
    )
    [switch] = client.received()
    assert m.AuthSwitchRequest.decode(switch.payload).plugin == "mysql_clear_password"
    assert switch.seq == 1
    client.send(secret.encode() + b"\0", seq=2)


def test_change_user_to_the_same_identity_resets_the_target_session() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    change_user(client, "agent", client.gateway.secret, database="other")
    assert client.upstream.commands() == [bytes((m.COM_RESET_CONNECTION,))]
    client.server(m.OkPacket().encode())
    assert client.received() == []  # the reset's answer is the gateway's own
    assert client.upstream.commands() == [b"\x03" + TRACKING_SETUP.encode()]
    client.server(SETUP_OK)
    assert client.received() == []
    assert client.upstream.commands() == [b"\x02other"]
    client.server(m.OkPacket().encode())
    [ok] = client.received()
    assert m.is_ok(ok.payload) and ok.seq == 3
    assert policy.completed == [("COM_CHANGE_USER `agent`", "ok", 0), ("USE `other`", "ok", 0)]


def test_a_refused_change_user_leaves_the_target_session_as_it_was() -> None:
    client = logged_in([("policy", Policy(deny=["COM_CHANGE_USER"]))])
    prepare_statement(client, 4)
    change_user(client, "agent", client.gateway.secret)
    [error] = client.received()
    assert "refused" in m.ErrPacket.decode(error.payload).message and error.seq == 3
    assert client.upstream.commands() == []
    execute = b"\x17" + (4).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
    client.send(execute, seq=0)  # still known to the gateway, as to the target
    assert client.upstream.commands() == [execute]


def test_change_user_to_another_identity_ends_the_connection() -> None:
    client = logged_in()
    other, _ = client.gateway.keys.create("someone", ["agents"], now=time.time())
    change_user(client, "someone", other)
    [error] = client.received()
    assert "open a new connection" in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting
    assert client.upstream.commands() == []


class Audit:
    """Collects the records the authenticator writes."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def write(self, entry: Any, urgent: bool = True) -> Any:
        from twisted.internet import defer

        self.records.append(entry)
        return defer.succeed(None)


def audited_gateway() -> tuple[Gateway, Audit]:
    """A gateway whose failures are recorded and answered after a 10 s back-off."""
    gateway = Gateway()
    audit = Audit()
    throttle = FailureThrottle(gateway.clock, BackoffSettings(free_failures=0, base_delay=10.0))
    authenticator = Authenticator(gateway.keys, throttle=throttle, audit=audit)  # type: ignore[arg-type]
    gateway.runtime = attrs_evolve(gateway.runtime, authenticator=authenticator)
    return gateway, audit


def test_a_user_name_that_is_not_the_keys_identity_is_audited_and_slowed() -> None:
    gateway, audit = audited_gateway()
    client = gateway.connect()
    assert client.login(user="someone-else") == []  # the back-off holds the answer
    assert [r.kind for r in audit.records] == ["authentication_failed"]
    assert "does not match" in audit.records[0].data["reason"]
    gateway.clock.advance(10)
    [error] = client.received()
    assert m.ErrPacket.decode(error.payload).code == 1045
    assert client.transport.disconnecting


def test_a_login_while_the_store_is_unavailable_is_refused_as_that_unslowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, audit = audited_gateway()

    def unavailable(key_id: str) -> Any:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(gateway.keys._store, "get_key", unavailable)
    client = gateway.connect()
    # Answered at once although every failure of this gateway waits 10 s: not counted.
    [error] = client.login()
    err = m.ErrPacket.decode(error.payload)
    assert (err.code, err.sqlstate, err.message) == (1105, "HY000", STORE_UNAVAILABLE)
    assert client.transport.disconnecting
    assert audit.records == []


def test_change_user_to_another_identity_is_audited_and_slowed() -> None:
    gateway, audit = audited_gateway()
    client = gateway.connect()
    assert client.login() == []
    client.ready()
    client.received()
    other, _ = gateway.keys.create("someone", ["agents"], now=time.time())
    change_user(client, "someone", other)
    assert client.received() == []  # the back-off holds the answer
    assert [r.kind for r in audit.records] == ["authentication_failed"]
    assert "COM_CHANGE_USER" in audit.records[0].data["reason"]
    gateway.clock.advance(10)
    [error] = client.received()
    assert "open a new connection" in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting
    assert client.upstream.commands() == []


def test_a_row_rewritten_across_16_mib_is_renumbered() -> None:
    class Grow:
        @hookimpl
        def server_rows(self, rows: Any) -> None:
            rows[0][0] = b"y" * (m.MAX_PAYLOAD + 10)

    client = logged_in([("grow", Grow())])
    client.send(b"\x03SELECT a", seq=0)
    client.server(b"\x01", column(b"a"), eof(), m.encode_text_row([b"x"]), eof())
    packets = client.received()
    assert [p.seq for p in packets] == [1, 2, 3, 5, 6]  # the row took two packets (4 and 5)
    assert packets[3].pieces == 2


def test_quit_ends_the_session_as_client_closed() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x01", seq=0)
    assert client.upstream.commands() == [b"\x01"]
    client.session.upstream_closed()
    assert policy.closed == ["client closed"]


def test_a_command_withdrawn_while_it_waits_is_completed_once() -> None:
    from twisted.internet import defer

    class Holding(Policy):
        def __init__(self) -> None:
            super().__init__()
            self.pending: list[defer.Deferred[Any]] = []

        @hookimpl
        def client_command(self, command: Any) -> Any:
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            return d

    policy = Holding()
    client = logged_in([("policy", policy)])
    client.send(b"\x03SELECT slow", seq=0)
    assert policy.pending and client.upstream.commands() == []
    client.session.connectionLost()
    assert policy.completed == [("SELECT slow", "cancelled", 0)]
    assert policy.closed == ["client closed"]


class Holding:
    """Holds every command for approval."""

    @hookimpl
    def client_command(self) -> Hold:
        return Hold(reason="risky", approvers=("dba",))


def test_a_command_held_for_approval_is_cancelled_once_when_the_client_leaves() -> None:
    approver, log = FakeApprover(), HookLog()
    client = logged_in([("hold", Holding()), ("approver", approver), ("log", log)])
    client.send(b"\x03DELETE FROM t", seq=0)
    assert approver.requests and client.upstream.commands() == []
    client.session.connectionLost()
    assert approver.withdrawn == 1
    assert log.events == [
        ("decided", "DELETE FROM t", "Block"),
        ("completed", "DELETE FROM t", "cancelled"),
        ("closed", "client closed"),
    ]


def test_a_client_leaving_during_a_result_gets_its_command_aborted_once() -> None:
    log = HookLog()
    client = logged_in([("log", log)])
    client.send(b"\x03SELECT a FROM t", seq=0)
    client.server(b"\x01", column(b"a"), eof(), m.encode_text_row([b"x"]))
    client.session.connectionLost()
    client.session.connectionLost()
    assert log.events == [
        ("decided", "SELECT a FROM t", "Allow"),
        ("completed", "SELECT a FROM t", "aborted"),
        ("closed", "client closed"),
    ]


def test_tls_request_hands_the_pipelined_handshake_to_tls() -> None:
    gateway = Gateway(client_tls="optional")
    gateway.runtime = attrs_evolve(gateway.runtime, server_tls=object())
    client = gateway.connect()
    [greeting] = client.received()
    assert m.Handshake.decode(greeting.payload).capabilities & m.CLIENT_SSL
    started: list[Any] = []
    client.transport.startTLS = started.append  # type: ignore[attr-defined]
    fed: list[bytes] = []

    class TlsLayer:
        def dataReceived(self, data: bytes) -> None:
            fed.append(data)

    client.transport.protocol = TlsLayer()  # type: ignore[attr-defined]
    request = m.HandshakeResponse(capabilities=CLIENT_CAPS | m.CLIENT_SSL, ssl_request=True)
    data, _ = m.encode_packet(request.encode(), 1)
    client.session.dataReceived(data + b"\x16\x03\x01\x02\x00hello")
    assert started and client.session.client_tls
    assert fed == [b"\x16\x03\x01\x02\x00hello"]


def test_tls_required_refuses_a_plain_login() -> None:
    client = Gateway(client_tls="required").connect()
    client.received()
    client.send(
        m.HandshakeResponse(capabilities=CLIENT_CAPS, user="agent", auth_response=b"").encode(),
        seq=1,
    )
    [error] = client.received()
    assert "requires TLS" in m.ErrPacket.decode(error.payload).message


def test_terminate_while_idle_answers_the_next_command() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x0e", seq=0)
    client.server(m.OkPacket().encode())
    client.received()
    client.session.terminate("access grant revoked")
    [error] = client.received()
    assert error.seq == 1  # read by the client as the answer to its next command
    err = m.ErrPacket.decode(error.payload)
    assert err.code == 1927 and "access grant revoked" in err.message
    assert client.transport.disconnecting
    assert policy.closed == ["access grant revoked"]


def test_rows_fetched_from_a_cursor_pass_the_data_hooks() -> None:
    policy = Policy()
    client = logged_in([("policy", policy)])
    client.send(b"\x16SELECT a FROM t", seq=0)
    client.server(
        m.StmtPrepareOk(statement_id=3, columns=1, params=0).encode(), column(b"a"), eof()
    )
    client.received()
    execute = b"\x17" + (3).to_bytes(4, "little") + b"\x01\x01\x00\x00\x00"  # a read-only cursor
    client.send(execute, seq=0)
    client.server(b"\x01", column(b"a"), eof(2 | m.SERVER_STATUS_CURSOR_EXISTS))
    assert len(client.received()) == 3
    fetch = b"\x1c" + (3).to_bytes(4, "little") + (10).to_bytes(4, "little")
    client.send(fetch, seq=0)
    client.upstream.commands()
    client.server(m.encode_binary_row([b"secret"], [0xFD]), eof(2 | m.SERVER_STATUS_LAST_ROW_SENT))
    rows = client.received()
    assert m.decode_binary_row(rows[0].payload, [0xFD]) == [b"*" * 20]
    # The fetch belongs to the execute, reported once.
    assert [c[0] for c in policy.completed] == ["SELECT a FROM t"] * 2


def test_a_fetch_without_a_known_cursor_is_refused() -> None:
    client = logged_in()
    client.send(b"\x1c" + (5).to_bytes(4, "little") + (10).to_bytes(4, "little"), seq=0)
    [error] = client.received()
    assert m.is_err(error.payload)
    assert client.upstream.commands() == []


# -- protocol commands: recorded and decided like statements (AU-2) ------------------------------


class Recorder(Policy):
    """A policy that also keeps every command handed to ``client_command``."""

    def __init__(self, deny: Sequence[str] = ("forbidden",)) -> None:
        super().__init__(deny)
        self.decided: list[tuple[str, str, bool, str]] = []

    @hookimpl
    def client_command(self, command: Any) -> Any:
        self.decided.append((command.kind, command.text, command.statement, command.statement_name))
        return super().client_command(command)


def prepare_statement(client: Client, statement: int) -> None:
    client.send(b"\x16SELECT ?", seq=0)
    client.upstream.commands()
    client.server(
        m.StmtPrepareOk(statement_id=statement, columns=0, params=1).encode(), column(b"?"), eof()
    )
    client.received()


def stmt(code: int, statement: int, rest: bytes = b"") -> bytes:
    return bytes((code,)) + statement.to_bytes(4, "little") + rest


ANSWERED = [
    (b"\x1b\x00\x00", "set_option", "COM_SET_OPTION MULTI_STATEMENTS_ON", ""),
    (b"\x1b\x01\x00", "set_option", "COM_SET_OPTION MULTI_STATEMENTS_OFF", ""),
    (b"\x1f", "reset_connection", "COM_RESET_CONNECTION", ""),
    (stmt(0x1A, 4), "stmt_reset", "COM_STMT_RESET 4", "4"),
]


@pytest.mark.parametrize(("payload", "kind", "text", "name"), ANSWERED)
@pytest.mark.parametrize("split", [None, 1])
def test_protocol_commands_are_decided_recorded_and_answered(
    payload: bytes, kind: str, text: str, name: str, split: int | None
) -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    client.send(payload, seq=0, split=split)
    assert recorder.decided == [(kind, text, False, name)]
    assert client.upstream.commands() == [payload]
    client.server(m.OkPacket().encode())
    if kind == "reset_connection":
        # The target's tracking list is the global default again: set up again first.
        assert client.received() == []
        assert client.upstream.commands() == [b"\x03" + TRACKING_SETUP.encode()]
        client.server(SETUP_OK)
    [ok] = client.received()
    assert m.is_ok(ok.payload) and ok.seq == 1
    assert recorder.completed == [(text, "ok", 0)]


def test_statistics_is_recorded_and_its_answer_relayed() -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    client.send(b"\x09", seq=0)
    assert recorder.decided == [("statistics", "COM_STATISTICS", False, "")]
    client.server(b"Uptime: 5  Threads: 1")
    [answer] = client.received()
    assert answer.payload == b"Uptime: 5  Threads: 1"
    assert recorder.completed == [("COM_STATISTICS", "ok", 0)]


@pytest.mark.parametrize("payload", [p for p, *_ in ANSWERED] + [b"\x09"])
def test_a_refused_protocol_command_never_reaches_the_target(payload: bytes) -> None:
    recorder = Recorder(deny=["COM_"])
    client = logged_in([("recorder", recorder)])
    client.send(payload, seq=0)
    [error] = client.received()
    assert "refused" in m.ErrPacket.decode(error.payload).message and error.seq == 1
    assert client.upstream.commands() == []
    assert [status for _, status, _ in recorder.completed] == ["blocked"]


def test_statement_close_and_long_data_are_recorded_without_an_answer() -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    prepare_statement(client, 4)
    long_data = stmt(0x18, 4, b"\x00\x00" + b"x" * 10)
    close = stmt(0x19, 4)
    client.send(long_data, seq=0)
    client.send(close, seq=0)
    assert client.upstream.commands() == [long_data, close]
    assert client.received() == []  # neither has an answer
    assert recorder.decided[1:] == [
        ("stmt_send_long_data", "COM_STMT_SEND_LONG_DATA 4 parameter 0 (10 bytes)", False, "4"),
        ("stmt_close", "COM_STMT_CLOSE 4", False, "4"),
    ]
    assert recorder.completed[1:] == [
        ("COM_STMT_SEND_LONG_DATA 4 parameter 0 (10 bytes)", "ok", 0),
        ("COM_STMT_CLOSE 4", "ok", 0),
    ]
    client.send(stmt(0x17, 4, b"\x00\x01\x00\x00\x00"), seq=0)
    [error] = client.received()
    assert "unknown prepared statement" in m.ErrPacket.decode(error.payload).message


def test_refused_long_data_refuses_the_next_execute_and_drops_the_partial_data() -> None:
    recorder = Recorder(deny=["parameter 1"])
    client = logged_in([("recorder", recorder)])
    prepare_statement(client, 4)
    allowed = stmt(0x18, 4, b"\x00\x00abc")
    client.send(allowed, seq=0)
    client.send(stmt(0x18, 4, b"\x01\x00def"), seq=0)
    assert client.received() == []  # COM_STMT_SEND_LONG_DATA is never answered
    assert client.upstream.commands() == [allowed]
    client.send(stmt(0x17, 4, b"\x00\x01\x00\x00\x00"), seq=0)
    assert client.upstream.commands() == [stmt(0x1A, 4)]  # a reset, not the execute
    client.server(m.OkPacket().encode())
    [error] = client.received()
    assert "refused" in m.ErrPacket.decode(error.payload).message and error.seq == 1
    execute = stmt(0x17, 4, b"\x00\x01\x00\x00\x00")
    client.send(execute, seq=0)  # the next execute runs again
    assert client.upstream.commands() == [execute]


def test_a_refused_close_keeps_the_statement() -> None:
    client = logged_in([("recorder", Recorder(deny=["COM_STMT_CLOSE"]))])
    prepare_statement(client, 4)
    client.send(stmt(0x19, 4), seq=0)
    assert client.received() == [] and client.upstream.commands() == []
    execute = stmt(0x17, 4, b"\x00\x01\x00\x00\x00")
    client.send(execute, seq=0)
    assert client.upstream.commands() == [execute]


def test_reset_connection_forgets_the_prepared_statements() -> None:
    client = logged_in([("recorder", Recorder())])
    prepare_statement(client, 4)
    client.send(b"\x1f", seq=0)
    client.server(m.OkPacket().encode())
    client.server(SETUP_OK)
    client.received()
    client.upstream.commands()
    client.send(stmt(0x17, 4, b"\x00\x01\x00\x00\x00"), seq=0)
    [error] = client.received()
    assert "unknown prepared statement" in m.ErrPacket.decode(error.payload).message


def test_ping_is_forwarded_without_a_record() -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    client.send(b"\x0e", seq=0)
    assert client.upstream.commands() == [b"\x0e"]
    client.server(m.OkPacket().encode())
    [ok] = client.received()
    assert m.is_ok(ok.payload)
    assert recorder.decided == [] and recorder.completed == []


# -- read-only connections (issue 14) -----------------------------------------------------------

READ_ONLY_SET = bytes((m.COM_QUERY,)) + read_only_statement("tx_read_only")


class ReadOnly:
    """Requires read-only upstream sessions."""

    @hookimpl
    def upstream_options(self) -> Any:
        from hoopgw.session import UpstreamOptions

        return UpstreamOptions(read_only=True, reasons=("test",))


def read_only_client() -> Client:
    client = logged_in([("ro", ReadOnly())])
    client.session._read_only = True  # what the (faked) upstream login set up
    return client


def test_a_reset_makes_the_session_read_only_again_before_the_client_is_answered() -> None:
    client = read_only_client()
    client.send(bytes((m.COM_RESET_CONNECTION,)), seq=0)
    assert client.upstream.commands() == [bytes((m.COM_RESET_CONNECTION,))]
    client.server(m.OkPacket().encode())
    assert client.received() == []
    assert client.upstream.commands() == [b"\x03" + TRACKING_SETUP.encode()]
    client.server(SETUP_OK)
    assert client.received() == []
    assert client.upstream.commands() == [READ_ONLY_SET]
    client.server(m.OkPacket().encode())
    [ok] = client.received()
    assert m.is_ok(ok.payload) and ok.seq == 1


def test_a_change_of_user_makes_the_session_read_only_again_before_its_use() -> None:
    client = read_only_client()
    change_user(client, "agent", client.gateway.secret, database="other")
    assert client.upstream.commands() == [bytes((m.COM_RESET_CONNECTION,))]
    client.server(m.OkPacket().encode())
    assert client.upstream.commands() == [b"\x03" + TRACKING_SETUP.encode()]
    client.server(SETUP_OK)
    assert client.upstream.commands() == [READ_ONLY_SET]
    client.server(m.OkPacket().encode())
    assert client.received() == []
    assert client.upstream.commands() == [b"\x02other"]
    client.server(m.OkPacket().encode())
    [ok] = client.received()
    assert m.is_ok(ok.payload) and ok.seq == 3


def test_a_session_that_cannot_be_made_read_only_again_ends() -> None:
    client = read_only_client()
    client.send(bytes((m.COM_RESET_CONNECTION,)), seq=0)
    client.server(m.OkPacket().encode())
    client.server(SETUP_OK)
    assert client.upstream.commands() == [
        bytes((m.COM_RESET_CONNECTION,)),
        b"\x03" + TRACKING_SETUP.encode(),
        READ_ONLY_SET,
    ]
    client.server(m.ErrPacket(code=1227, sqlstate="42000", message="no").encode())
    [error] = client.received()
    assert "read-only again" in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting and client.upstream.closed


def test_a_read_only_session_runs_one_statement_per_packet() -> None:
    # MySQL runs the second statement before the gateway reads the first one's answer: a
    # stored function in the first could turn read-only off for the second's transaction.
    client = read_only_client()
    client.send(query(b"SELECT flip(); SELECT sneaky()"), seq=0)
    [error] = client.received()
    assert "one statement per packet" in m.ErrPacket.decode(error.payload).message
    assert client.upstream.commands() == []
    client.send(query(b"SELECT 1;"), seq=0)  # one statement and its semicolon
    assert client.upstream.commands() == [query(b"SELECT 1;")]


@pytest.mark.parametrize("answer", ["eof", "eof-changed", "error"])
def test_every_answer_makes_the_session_read_only_again(answer: str) -> None:
    # A result set's EOF says at most that tracked state changed, not what; an ERR says
    # nothing; and a function that first empties session_track_system_variables turns
    # read-only off with no flag at all. So every command is followed by the restore.
    client = read_only_client()
    client.send(query(b"SELECT flip()"), seq=0)
    assert client.upstream.commands() == [query(b"SELECT flip()")]
    if answer == "error":
        client.server(m.ErrPacket(code=1242, message="no").encode())
    else:
        status = 2 | (m.SERVER_SESSION_STATE_CHANGED if answer == "eof-changed" else 0)
        client.server(b"\x01", column(b"flip()"), eof(), b"\x011", eof(status))
    assert client.received()  # the answer reaches the client at once
    client.send(query(b"SELECT sneaky()"), seq=0)
    # The next command waits until the target made the session read-only again.
    assert client.upstream.commands() == [READ_ONLY_SET]
    client.server(tracking_ok(tx_read_only="ON"))
    assert client.received() == []
    assert client.upstream.commands() == [query(b"SELECT sneaky()")]


def test_a_ping_costs_no_round_trip() -> None:
    client = read_only_client()
    client.send(bytes((m.COM_PING,)), seq=0)
    client.server(m.OkPacket().encode())
    client.send(bytes((m.COM_PING,)), seq=0)
    assert client.upstream.commands() == [bytes((m.COM_PING,))] * 2


def test_error_messages_are_read_in_character_set_results() -> None:
    # The server sends its messages in character_set_results: latin1 bytes were read as
    # UTF-8 (no match for a word with a non-ASCII letter), and in `filename` an e-mail
    # address reads alice@0040example@002ecom.
    seen: list[str] = []

    class Masker:
        @hookimpl
        def server_output(self, session: Any, command: Any, output: Any) -> None:
            seen.append(output.fields["message"])
            output.fields["message"] = output.fields["message"].replace("Zoë", "[NAME]")

    client = logged_in([("masker", Masker())])
    client.send(query(b"SET character_set_results = latin1"), seq=0)
    client.server(tracking_ok(character_set_results="latin1"))
    client.received()
    client.send(query(b"SELECT x"), seq=0)
    client.server(m.ErrPacket(code=1105, message="bad: 'Zo\udceb'").encode())
    client.server(setup_ok("latin1"))
    [error] = client.received()
    assert seen == ["bad: 'Zoë'"]
    assert error.payload.endswith(b"bad: '[NAME]'")
    client.send(query(b"SET character_set_results = filename"), seq=0)
    client.server(tracking_ok(character_set_results="filename"))
    client.received()
    client.send(query(b"SELECT x"), seq=0)
    client.server(m.ErrPacket(code=1105, message="'alice@0040example@002ecom'").encode())
    client.server(setup_ok("filename"))
    [error] = client.received()
    message = m.ErrPacket.decode(error.payload).message
    assert "filename" in message and "alice" not in message
    assert client.transport.disconnecting


# -- lexing settings (issue 14, class 1) ---------------------------------------------------------


def query(text: bytes) -> bytes:
    return bytes((m.COM_QUERY,)) + text


@pytest.mark.parametrize("split", [None, 1])
def test_a_statement_behind_a_settings_change_in_one_packet_never_reaches_the_target(
    split: int | None,
) -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    text = b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT '\\'; DELETE FROM canary; -- '"
    client.send(query(text), seq=0, split=split)
    [error] = client.received()
    refusal = m.ErrPacket.decode(error.payload)
    assert refusal.code == 1231 and "last statement of its packet" in refusal.message
    assert client.upstream.commands() == []
    assert recorder.completed[-1][1] == "blocked"


def test_the_reported_mode_is_how_later_statements_are_read() -> None:
    seen: list[Any] = []

    class Spy:
        @hookimpl
        def client_command(self, command: Any) -> None:
            seen.append(command.details["lexing"])

    client = logged_in([("spy", Spy())])
    client.send(query(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'"), seq=0)
    client.server(tracking_ok(sql_mode="NO_BACKSLASH_ESCAPES"))
    [ok] = client.received()
    # The client did not ask for session tracking: the OK comes without it.
    assert m.OkPacket.decode(ok.payload).status & m.SERVER_SESSION_STATE_CHANGED == 0
    assert m.OkPacket.decode(ok.payload).info == b""
    client.send(query(b"SELECT 1"), seq=0)
    assert seen[-1] == {"sql_mode": "NO_BACKSLASH_ESCAPES", "character_set_client": "utf8mb4"}


@pytest.mark.parametrize(
    ("text", "report", "why"),
    [
        # A change no statement could make (a route the gateway did not see).
        (b"SELECT 1", {"sql_mode": "ANSI_QUOTES"}, "which no statement"),
        # A value the gateway cannot read, however it was computed.
        (b"SET character_set_client = @cs", {"character_set_client": "sjis"}, "sjis"),
        # A SET the target did not report: its tracking list was emptied.
        (b"SET sql_mode = 'ANSI_QUOTES'", {}, "did not report the sql_mode"),
        (b"CALL p()", {"session_track_system_variables": ""}, "stopped reporting"),
        # Messages would come in a set the target no longer reports.
        (
            b"CALL p()",
            {"session_track_system_variables": ",".join(TRACKED_VARIABLES)},
            "stopped reporting character_set_results",
        ),
    ],
)
def test_a_report_the_gateway_did_not_expect_ends_the_session(
    text: bytes, report: dict[str, str], why: str
) -> None:
    recorder = Recorder()
    client = logged_in([("recorder", recorder)])
    client.send(query(text), seq=0)
    client.server(tracking_ok(**report) if report else m.OkPacket().encode())
    [error] = client.received()
    assert why in m.ErrPacket.decode(error.payload).message
    assert client.transport.disconnecting
    assert why in recorder.closed[0]


def test_bytes_not_valid_utf8_are_recorded_byte_for_byte() -> None:
    recorded: list[str | None] = []

    class Store:
        @hookimpl
        def client_command(self, command: Any) -> None:
            recorded.append(command.recorded_text)

    client = logged_in([("store", Store())])
    client.send(query(b"SELECT _binary'\xff'"), seq=0)
    # The target gets the bytes as sent; the audit store text it can keep.
    assert client.upstream.commands() == [query(b"SELECT _binary'\xff'")]
    assert recorded == ["SELECT _binary'\\xff'"]


def test_latin1_is_accepted_at_login() -> None:
    client = Gateway().connect()
    client.received()
    client.send(
        m.HandshakeResponse(
            capabilities=CLIENT_CAPS, user="agent", auth_response=b"x", charset=8
        ).encode(),
        seq=1,
    )
    [switch] = client.received()
    assert m.AuthSwitchRequest.decode(switch.payload).plugin == "mysql_clear_password"


class Picker:
    """Needs the rows holding ``secret`` (seen in the rows' bytes), and masks them."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, list[int], str]] = []
        self.rewritten: list[list[Any]] = []

    @hookimpl
    def server_row_messages(self, data: bytes, starts: list[int], encoding: str) -> list[int]:
        self.calls.append((data, starts, encoding))
        bounds = [*starts[1:], len(data)]
        return [
            i for i, (s, e) in enumerate(zip(starts, bounds, strict=True)) if b"secret" in data[s:e]
        ]

    @hookimpl
    def server_rows(self, rows: Any) -> None:
        self.rewritten.append([list(row) for row in rows])
        for row in rows:
            row[0] = b"*" * 6


def test_rows_no_plugin_needs_are_forwarded_as_they_came() -> None:
    picker = Picker()
    client = logged_in([("picker", picker)])
    client.send(b"\x03SELECT a, b", seq=0)
    rows = [[b"plain", None], [b"secret", b"1"], [b"x" * 300, b"2"]]
    payloads = [m.encode_text_row(row) for row in rows]
    client.server(b"\x02", column(b"a"), column(b"b", 0x08), eof(), *payloads, eof())
    received = [p.payload for p in client.received()]
    assert received[4:7] == [payloads[0], m.encode_text_row([b"******", b"1"]), payloads[2]]
    [(data, starts, encoding)] = picker.calls
    assert data == b"".join(payloads) and starts == [0, 7, 16]
    assert encoding == "utf8mb3"  # the collation of column(): 33
    assert picker.rewritten == [[[b"secret", b"1"]]]


def test_the_rows_encoding_is_their_columns_character_set_or_unknown() -> None:
    from hoopgw_mysql.frontend import _rows_encoding

    def columns(*charsets: int) -> list[m.ColumnDefinition]:
        return [m.ColumnDefinition(charset=c) for c in charsets]

    assert _rows_encoding(columns(45, 63, 224)) == "utf8mb4"
    assert _rows_encoding(columns(63, 63)) == "binary"
    assert _rows_encoding(columns(45, 8)) == ""  # two character sets
    assert _rows_encoding(columns(45, 54)) == ""  # utf16: not known to keep ASCII
    assert _rows_encoding([]) == ""


def test_a_cursor_fetched_after_a_reload_passes_the_new_chain() -> None:
    """Rows of a cursor opened before a config reload that enabled a row plugin (masking)
    pass that plugin when fetched after it: a fetch is no new command, but the rows flow
    under the chain in force."""
    client = logged_in()
    client.send(b"\x16SELECT a FROM t", seq=0)
    client.upstream.commands()
    client.server(
        m.StmtPrepareOk(statement_id=9, columns=1, params=0).encode(), column(b"a"), eof()
    )
    client.received()
    execute = b"\x17" + (9).to_bytes(4, "little") + b"\x01" + (1).to_bytes(4, "little")
    client.send(execute, seq=0)
    assert client.upstream.commands() == [execute]
    client.server(b"\x01", column(b"a"), eof(m.SERVER_STATUS_CURSOR_EXISTS | 2))
    client.received()
    policy = Policy()
    ledger = client.session._ledger
    assert ledger is not None
    ledger.chain.successor = PluginChain([("policy", policy)], reactor=client.gateway.clock)
    fetch = b"\x1c" + (9).to_bytes(4, "little") + (10).to_bytes(4, "little")
    client.send(fetch, seq=0)
    assert client.upstream.commands() == [fetch]
    client.server(m.encode_binary_row([b"secret"], [0xFD]), eof(m.SERVER_STATUS_LAST_ROW_SENT | 2))
    row = client.received()[0]
    assert m.decode_binary_row(row.payload, [0xFD]) == [b"*" * 20]
