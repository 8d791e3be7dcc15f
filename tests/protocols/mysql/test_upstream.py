"""The gateway's login to the target, driven with a scripted server on a ``StringTransport``:
capabilities asked for, TLS per sslmode, every auth plugin's exchange and auth switches."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_mysql import auth
from hoopgw_mysql import messages as m
from hoopgw_mysql.analysis import LexingState
from hoopgw_mysql.upstream import TRACKING_SETUP, TargetInfo, UpstreamConnection
from twisted.internet.testing import StringTransport

SERVER_CAPS = (
    m.CLIENT_PROTOCOL_41
    | m.CLIENT_SECURE_CONNECTION
    | m.CLIENT_PLUGIN_AUTH
    | m.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | m.CLIENT_CONNECT_WITH_DB
    | m.CLIENT_DEPRECATE_EOF
    | m.CLIENT_MULTI_STATEMENTS
    | m.CLIENT_MULTI_RESULTS
    | m.CLIENT_LOCAL_FILES
    | m.CLIENT_COMPRESS
    | m.CLIENT_SSL
    | m.CLIENT_CONNECT_ATTRS
    | m.CLIENT_SESSION_TRACK
)
SCRAMBLE = b"abcdefghij0123456789"


class Listener:
    def __init__(self) -> None:
        self.ready: list[bytes] = []
        self.failed: list[tuple[int, str]] = []
        self.packets: list[m.Packet] = []
        self.greeted: list[m.Handshake] = []

    def upstream_greeted(self, handshake: m.Handshake) -> None:
        self.greeted.append(handshake)

    def upstream_ready(self, ok: bytes, tls: bool) -> None:
        self.ready.append(ok)

    def upstream_failed(self, code: int, message: str) -> None:
        self.failed.append((code, message))

    def upstream_packets(self, packets: list[m.Packet]) -> None:
        self.packets.extend(packets)

    def upstream_closed(self) -> None:
        pass


class TlsTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.tls: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls = options


def connect(
    *,
    client_caps: int,
    sslmode: str = "disable",
    password: str = "pw",
    loopback: bool = False,
    read_only: bool = False,
) -> tuple[UpstreamConnection, Listener, TlsTransport]:
    listener = Listener()
    connection = UpstreamConnection(
        listener,
        user="app",
        password=password,
        database="shop",
        capabilities=client_caps,
        charset=45,
        sslmode=sslmode,
        tls_options=object() if sslmode != "disable" else None,
        loopback=loopback,
        max_length=1 << 30,
        read_only=read_only,
    )
    transport = TlsTransport()
    connection.makeConnection(transport)
    return connection, listener, transport


def greet(connection: UpstreamConnection, plugin: str, caps: int = SERVER_CAPS) -> None:
    greeting = m.Handshake(
        server_version="10.11.6-MariaDB",
        connection_id=7,
        scramble=SCRAMBLE,
        capabilities=caps,
        auth_plugin=plugin,
    )
    connection.dataReceived(m.encode_packet(greeting.encode(), 0)[0])


def sent(transport: StringTransport) -> list[m.Packet]:
    packets = m.PacketReader().feed(transport.value())
    transport.clear()
    return packets


def server(connection: UpstreamConnection, payload: bytes, seq: int) -> None:
    connection.dataReceived(m.encode_packet(payload, seq)[0])


def login_ok(
    connection: UpstreamConnection, listener: Listener, transport: StringTransport, seq: int
) -> None:
    """The target accepts the login: the gateway sets up session-state tracking, and only
    the setup's answer (the lexing settings) makes the connection ready."""
    sent(transport)
    server(connection, m.OkPacket().encode(), seq)
    assert not listener.ready
    [setup] = sent(transport)
    assert (setup.seq, setup.payload) == (0, b"\x03" + TRACKING_SETUP.encode())
    server(
        connection,
        tracking_ok(
            sql_mode="ANSI_QUOTES", character_set_client="latin1", character_set_results="latin1"
        ),
        1,
    )
    assert listener.ready
    assert connection.lexing == LexingState(sql_mode=frozenset({"ANSI_QUOTES"}), charset="latin1")
    assert connection.results_charset == "latin1"


def tracking_ok(**variables: str) -> bytes:
    entries = b"".join(
        b"\x00" + m.lenenc_bytes(m.lenenc_bytes(k.encode()) + m.lenenc_bytes(v.encode()))
        for k, v in variables.items()
    )
    return m.OkPacket(
        status=2 | m.SERVER_SESSION_STATE_CHANGED,
        info=m.lenenc_bytes(b"") + m.lenenc_bytes(entries),
    ).encode()


def test_a_target_that_does_not_report_the_lexing_settings_is_refused() -> None:
    connection, listener, transport = connect(client_caps=CLIENT)
    greet(connection, auth.NATIVE)
    sent(transport)
    server(connection, m.OkPacket().encode(), 2)
    server(connection, m.OkPacket().encode(), 1)  # no session state
    assert not listener.ready
    assert (
        "did not report character_set_client, character_set_results, sql_mode"
        in listener.failed[0][1]
    )


def test_a_target_without_session_tracking_is_refused() -> None:
    connection, listener, _transport = connect(client_caps=CLIENT)
    greet(connection, auth.NATIVE, caps=SERVER_CAPS & ~m.CLIENT_SESSION_TRACK)
    assert "session-state tracking" in listener.failed[0][1]


CLIENT = m.CLIENT_PROTOCOL_41 | m.CLIENT_SECURE_CONNECTION | m.CLIENT_PLUGIN_AUTH


def test_never_asks_the_target_for_what_the_client_did_not_negotiate() -> None:
    connection, listener, transport = connect(client_caps=CLIENT | m.CLIENT_MULTI_RESULTS)
    greet(connection, auth.NATIVE)
    [response] = sent(transport)
    caps = m.HandshakeResponse.decode(response.payload).capabilities
    assert caps & m.CLIENT_MULTI_RESULTS
    for flag in (
        m.CLIENT_MULTI_STATEMENTS,
        m.CLIENT_DEPRECATE_EOF,
        m.CLIENT_LOCAL_FILES,
        m.CLIENT_COMPRESS,
        m.CLIENT_SSL,
        m.CLIENT_CONNECT_ATTRS,
    ):
        assert not caps & flag, hex(flag)
    assert listener.greeted[0].server_version == "10.11.6-MariaDB"


def test_compression_and_local_files_are_stripped_even_when_the_client_sent_them() -> None:
    connection, _, transport = connect(
        client_caps=CLIENT | m.CLIENT_LOCAL_FILES | m.CLIENT_COMPRESS
    )
    greet(connection, auth.NATIVE)
    [response] = sent(transport)
    caps = m.HandshakeResponse.decode(response.payload).capabilities
    assert not caps & (m.CLIENT_LOCAL_FILES | m.CLIENT_COMPRESS)


def test_a_target_without_a_capability_the_client_uses_is_refused() -> None:
    connection, listener, _ = connect(client_caps=CLIENT | m.CLIENT_DEPRECATE_EOF)
    greet(connection, auth.NATIVE, caps=SERVER_CAPS & ~m.CLIENT_DEPRECATE_EOF)
    assert listener.failed and "lacks capabilities" in listener.failed[0][1]


@pytest.mark.parametrize("split", [1, 3, None])
def test_native_login(split: int | None) -> None:
    connection, listener, transport = connect(client_caps=CLIENT)
    greeting = m.Handshake(
        server_version="8.0.36",
        connection_id=1,
        scramble=SCRAMBLE,
        capabilities=SERVER_CAPS,
        auth_plugin=auth.NATIVE,
    )
    data = m.encode_packet(greeting.encode(), 0)[0]
    step = split or len(data)
    for i in range(0, len(data), step):
        connection.dataReceived(data[i : i + step])
    [response] = sent(transport)
    decoded = m.HandshakeResponse.decode(response.payload)
    assert response.seq == 1
    assert (decoded.user, decoded.database) == ("app", "shop")
    assert decoded.auth_response == auth.native_password(b"pw", SCRAMBLE)
    login_ok(connection, listener, transport, 2)


def test_auth_switch_to_ed25519() -> None:
    connection, listener, transport = connect(client_caps=CLIENT)
    greet(connection, auth.NATIVE)
    sent(transport)
    nonce = bytes(range(32))
    server(connection, m.AuthSwitchRequest(plugin=auth.ED25519, data=nonce).encode(), 2)
    [answer] = sent(transport)
    assert answer.seq == 3
    assert answer.payload == auth.ed25519_sign(b"pw", nonce)
    login_ok(connection, listener, transport, 4)


def test_caching_sha2_full_authentication_asks_for_the_key_without_tls() -> None:
    connection, _listener, transport = connect(client_caps=CLIENT)
    greet(connection, auth.CACHING_SHA2)
    [response] = sent(transport)
    assert m.HandshakeResponse.decode(response.payload).auth_response == (
        auth.caching_sha2_scramble(b"pw", SCRAMBLE)
    )
    server(connection, m.AuthMoreData(data=auth.PERFORM_FULL_AUTH).encode(), 2)
    [request] = sent(transport)
    assert request.payload == auth.REQUEST_PUBLIC_KEY
    assert b"pw" not in transport.value()


def test_caching_sha2_fast_path() -> None:
    connection, listener, transport = connect(client_caps=CLIENT)
    greet(connection, auth.CACHING_SHA2)
    sent(transport)
    server(connection, m.AuthMoreData(data=auth.FAST_AUTH_OK).encode(), 2)
    assert sent(transport) == []
    login_ok(connection, listener, transport, 3)


def test_tls_request_precedes_the_login() -> None:
    connection, _listener, transport = connect(client_caps=CLIENT, sslmode="require")
    greet(connection, auth.CACHING_SHA2)
    assert transport.tls is not None
    ssl_request, response = sent(transport)
    assert m.HandshakeResponse.decode(ssl_request.payload).ssl_request
    assert (ssl_request.seq, response.seq) == (1, 2)
    # Over TLS, full authentication sends the password itself.
    server(connection, m.AuthMoreData(data=auth.PERFORM_FULL_AUTH).encode(), 3)
    [password] = sent(transport)
    assert password.payload == b"pw\0"


def test_required_tls_that_the_target_does_not_offer_fails() -> None:
    connection, listener, _ = connect(client_caps=CLIENT, sslmode="require")
    greet(connection, auth.NATIVE, caps=SERVER_CAPS & ~m.CLIENT_SSL)
    assert listener.failed and "does not offer TLS" in listener.failed[0][1]


def test_cleartext_switch_without_tls_off_loopback_is_refused() -> None:
    connection, listener, transport = connect(client_caps=CLIENT)
    greet(connection, auth.NATIVE)
    sent(transport)
    server(connection, m.AuthSwitchRequest(plugin=auth.CLEAR, data=b"").encode(), 2)
    assert listener.failed and "neither TLS nor loopback" in listener.failed[0][1]
    assert b"pw" not in transport.value()


def test_a_refused_login_is_reported_without_the_password() -> None:
    connection, listener, _ = connect(client_caps=CLIENT, password="hunter2")
    greet(connection, auth.NATIVE)
    server(connection, m.ErrPacket(code=1045, message="Access denied for user 'app'").encode(), 2)
    [(code, message)] = listener.failed
    assert code == 1045 and "hunter2" not in message


def test_target_info_releases_waiters_when_a_probe_ends() -> None:
    info = TargetInfo()
    waiting = info.known()
    assert not waiting.called
    info.probe_ended()
    assert waiting.called and info.version is None
    info.learned(
        m.Handshake(server_version="10.11", connection_id=1, scramble=SCRAMBLE, capabilities=1)
    )
    assert info.known().called and info.version == "10.11"


def test_a_read_only_session_is_made_read_only_before_it_is_ready() -> None:
    connection, listener, transport = connect(client_caps=CLIENT, read_only=True)
    greet(connection, auth.NATIVE)
    sent(transport)
    login_ok = m.OkPacket(warnings=1).encode()
    server(connection, login_ok, 2)
    [setup] = sent(transport)
    assert setup.payload == b"\x03" + TRACKING_SETUP.encode()
    server(
        connection,
        tracking_ok(sql_mode="", character_set_client="utf8mb4", character_set_results="utf8mb4"),
        1,
    )
    [statement] = sent(transport)
    assert statement.seq == 0
    # MariaDB's name for the access mode (the greeting's version says "MariaDB"), reported.
    assert statement.payload == bytes((m.COM_QUERY,)) + (
        b"SET SESSION session_track_system_variables = 'autocommit,character_set_client,"
        b"character_set_connection,character_set_results,time_zone,sql_mode,"
        b"character_set_client,session_track_system_variables,tx_read_only',"
        b" SESSION tx_read_only = 1"
    )
    assert not listener.ready
    server(connection, m.OkPacket().encode(), 1)
    # The client is greeted with the login's own OK.
    assert listener.ready == [login_ok] and not listener.failed


def test_a_target_that_refuses_read_only_fails_the_login() -> None:
    connection, listener, transport = connect(client_caps=CLIENT, read_only=True)
    greet(connection, auth.NATIVE)
    server(connection, m.OkPacket().encode(), 2)
    server(
        connection,
        tracking_ok(sql_mode="", character_set_client="utf8mb4", character_set_results="utf8mb4"),
        1,
    )
    server(connection, m.ErrPacket(code=1227, message="nope").encode(), 1)
    [(code, message)] = listener.failed
    assert not listener.ready
    assert code == 1792 and "read-only" in message and "nope" in message
    assert transport.disconnecting
