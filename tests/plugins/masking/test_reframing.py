"""The masking plugin inside the PostgreSQL frontend: every server message that can carry a
value is rewritten and re-framed, whatever the split of the byte stream from the target.

The client side is a ``StringTransport``; the upstream is a fake fed through one persistent
``MessageReader``, as the real upstream connection feeds the session.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import pytest
from hoopgw_masking import MaskingPlugin
from hoopgw_postgres import messages as m
from hoopgw_postgres.frontend import ClientSession
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger

from hoopgw.config.gateway import GatewayConfig
from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.keys import KeyService
from hoopgw.plugin import PluginContext, hookimpl, validate_options
from hoopgw.protocol import ConnectionRuntime
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import ConnectionInfo
from hoopgw.store.sqlite import SQLiteStore

EMAIL = "ann.lee@example.com"
CARD = "4111 1111 1111 1111"
SSN = "536-22-1234"


class FakeUpstream:
    def __init__(self) -> None:
        self.transport = StringTransport()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fake_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: ClientSession) -> None:
        self.upstream = FakeUpstream()  # type: ignore[assignment]

    monkeypatch.setattr(ClientSession, "_connect_upstream", connect)


def logged_in() -> tuple[ClientSession, StringTransport]:
    clock = MemoryReactorClock()
    store = SQLiteStore(":memory:")
    store.migrate()
    keys = KeyService(store)
    secret, _ = keys.create("agent", ["agents"], now=time.time())
    info = ConnectionInfo(name="pg", protocol="postgres", target="127.0.0.1:5432")
    plugin = MaskingPlugin(
        PluginContext(
            connection=info,
            options=validate_options("masking", MaskingPlugin.options, {}, connection="pg"),
            audit=None,
            log=Logger(),
            reactor=clock,
        )
    )
    config = ConnectionConfig(
        name="pg",
        protocol="postgres",
        listen="tcp:15432:interface=127.0.0.1",
        target="127.0.0.1:5432",
        credential=CredentialConfig(user="postgres"),
        allow_groups=("agents",),
        plugins=("masking",),
        upstream_tls=UpstreamTlsConfig(sslmode="disable"),
    )
    runtime = ConnectionRuntime(
        config=config,
        gateway=GatewayConfig(),
        info=info,
        chain=PluginChain([("masking", plugin)], reactor=clock),
        authenticator=Authenticator(keys),
        sessions=SessionRegistry(),
        reactor=clock,
    )
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    session = ClientSession(runtime)
    session.makeConnection(transport)
    session.dataReceived(
        m.StartupMessage(
            protocol=m.PROTOCOL_3_0, params={"user": "agent", "database": "app"}
        ).encode()
    )
    session.dataReceived(m.PasswordMessage(password=secret).encode())
    # What every PostgreSQL reports at login: without it the session is refused.
    reports = [
        m.ParameterStatus(name="client_encoding", value="UTF8").encode(),
        m.ParameterStatus(name="standard_conforming_strings", value="on").encode(),
    ]
    session.upstream_ready(reports, (1, b"key1"), False)
    transport.clear()
    return session, transport


def field(name: str, type_oid: int, fmt: int = 0) -> m.FieldDescription:
    return m.FieldDescription(name=name, type_oid=type_oid, format=fmt)


def server_bytes() -> tuple[bytes, bytes, bytes]:
    """A simple query's whole answer with values everywhere, then a COPY and async output."""
    doc = json.dumps({"owner": {"email": EMAIL}, "cards": [CARD]}).encode()
    array = b'{"' + EMAIL.encode() + b'",plain}'
    binary_array = (
        struct.pack("!iiIii", 1, 0, 25, 1, 1) + struct.pack("!i", len(SSN)) + SSN.encode()
    )
    messages: list[Any] = [
        m.RowDescription(
            fields=(
                field("id", 23),
                field("email", 25),
                field("doc", 3802, 1),
                field("tags", 1009),
                field("bin", 1009, 1),
            )
        ),
        *[
            m.DataRow(
                values=(
                    str(i).encode(),
                    f"{EMAIL} / {CARD}".encode(),
                    b"\x01" + doc,
                    array,
                    binary_array,
                )
            )
            for i in range(3)
        ],
        m.DataRow(values=(b"9", None, None, None, None)),
        m.CommandComplete(tag="SELECT 4"),
        m.NoticeResponse(fields={"S": "NOTICE", "C": "00000", "M": f"hello {EMAIL}"}),
        m.error_response("ERROR", "23505", "duplicate key"),
        m.ReadyForQuery(status="I"),
        m.NotificationResponse(pid=7, channel="ch", payload=f"card {CARD}"),
        m.ParameterStatus(name="application_name", value=EMAIL),
    ]
    wire = b"".join(message.encode() for message in messages)
    error = m.ErrorResponse(
        fields={"S": "ERROR", "C": "23505", "M": "dup", "D": f"Key (ssn)=({SSN}) already exists."}
    ).encode()
    copy = (
        m.CopyOutResponse(format=0, column_formats=(0, 0)).encode()
        + m.CopyData(data=f"1\t{EMAIL}\n".encode()).encode()
        + m.CopyDone().encode()
        + m.CommandComplete(tag="COPY 1").encode()
        + m.ReadyForQuery(status="I").encode()
    )
    return wire, error, copy


def run(split: int | None) -> bytes:
    session, transport = logged_in()
    wire, error, copy = server_bytes()
    reader = m.MessageReader()

    def feed(data: bytes) -> None:
        step = split or len(data)
        for start in range(0, len(data), step):
            session.upstream_messages(*reader.feed_block(data[start : start + step]))

    session.dataReceived(m.Query(query="SELECT * FROM people").encode())
    feed(wire)
    session.dataReceived(m.Query(query="INSERT INTO people VALUES (...)").encode())
    feed(error + m.ReadyForQuery(status="I").encode())
    session.dataReceived(m.Query(query="COPY people TO STDOUT").encode())
    feed(copy)
    return bytes(transport.value())


def test_every_split_gives_the_same_masked_bytes() -> None:
    whole = run(None)
    for raw in (EMAIL, CARD, SSN, CARD.replace(" ", "")):
        assert raw.encode() not in whole
    messages = [m.decode_backend(t, body) for t, body, _ in m.MessageReader().feed(whole)]
    rows = [x for x in messages if isinstance(x, m.DataRow)]
    assert rows[0].values[1] == b"[EMAIL] / [CREDIT_CARD]"
    assert rows[0].values[2] == b'\x01{"owner": {"email": "[EMAIL]"}, "cards": ["[CREDIT_CARD]"]}'
    assert rows[0].values[3] == b'{"[EMAIL]","plain"}'
    assert rows[0].values[4] == (
        struct.pack("!iiIii", 1, 0, 25, 1, 1) + struct.pack("!i", 5) + b"[SSN]"
    )
    assert rows[3].values == (b"9", None, None, None, None)
    [notice] = [x for x in messages if isinstance(x, m.NoticeResponse)]
    assert notice.fields["M"] == "hello [EMAIL]"
    [note] = [x for x in messages if isinstance(x, m.NotificationResponse)]
    assert note.payload == "card [CREDIT_CARD]"
    details = [x.fields.get("D") for x in messages if isinstance(x, m.ErrorResponse)]
    assert "Key (ssn)=([SSN]) already exists." in details
    [parameter] = [x for x in messages if isinstance(x, m.ParameterStatus)]
    assert parameter.value == "[EMAIL]"
    [copy] = [x for x in messages if isinstance(x, m.CopyData)]
    assert copy.data == b"1\t[EMAIL]\n"
    for split in (1, 2, 3, 5, 7, 64):
        assert run(split) == whole, f"split {split}"


def test_rows_of_a_portal_without_description_never_use_an_earlier_one() -> None:
    session, transport = logged_in()
    # A first result says "int4"; then a portal is executed without Describe: its text rows
    # must not be taken for integers (that would let them through unscanned).
    session.dataReceived(m.Query(query="SELECT 1").encode())
    session.upstream_messages(
        *m.MessageReader().feed_block(
            m.RowDescription(fields=(field("n", 23),)).encode()
            + m.DataRow(values=(b"1",)).encode()
            + m.CommandComplete(tag="SELECT 1").encode()
            + m.ReadyForQuery(status="I").encode()
        )
    )
    session.dataReceived(
        m.Parse(name="", query="SELECT email FROM people").encode()
        + m.Bind(portal="", statement="", params=()).encode()
        + m.Execute(portal="").encode()
        + m.Sync().encode()
    )
    transport.clear()
    session.upstream_messages(
        *m.MessageReader().feed_block(
            m.ParseComplete().encode()
            + m.BindComplete().encode()
            + m.DataRow(values=(EMAIL.encode(),)).encode()
            + m.CommandComplete(tag="SELECT 1").encode()
            + m.ReadyForQuery(status="I").encode()
        )
    )
    assert EMAIL.encode() not in transport.value()
    assert b"[EMAIL]" in transport.value()


def test_the_target_gets_the_original_text_and_the_record_the_masked_one() -> None:
    session, _ = logged_in()
    seen: list[Any] = []

    class Spy:
        @hookimpl
        def client_command(self, command: Any) -> None:
            seen.append(command)

    session.chain._pm.register(Spy(), name="spy")
    session.dataReceived(m.Query(query=f"SELECT '{EMAIL}'").encode())
    assert session.upstream is not None
    assert EMAIL.encode() in session.upstream.transport.value()  # type: ignore[attr-defined]
    [command] = seen
    assert command.text == f"SELECT '{EMAIL}'"
    assert command.recorded_text == "SELECT '[EMAIL]'"
    assert command.annotations == {"masked": {"email": 1}}


def test_results_without_text_columns_stream_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    session, transport = logged_in()

    def not_called(body: Any) -> Any:
        raise AssertionError("a row of a result without text columns was decoded")

    monkeypatch.setattr(m, "decode_data_row", not_called)
    session.dataReceived(m.Query(query="SELECT n, t FROM numbers").encode())
    transport.clear()
    rows = [m.DataRow(values=(str(i).encode(), b"2024-01-01 10:00:00")) for i in range(3)]
    wire = b"".join(
        x.encode()
        for x in (
            m.RowDescription(fields=(field("n", 23), field("t", 1114))),
            *rows,
            m.CommandComplete(tag="SELECT 3"),
            m.ReadyForQuery(status="I"),
        )
    )
    session.upstream_messages(*m.MessageReader().feed_block(wire))
    assert transport.value() == wire


def test_rows_without_a_candidate_are_forwarded_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    session, transport = logged_in()
    decoded: list[bytes] = []
    decode = m.decode_data_row

    def counted(body: Any) -> Any:
        decoded.append(bytes(body))
        return decode(body)

    monkeypatch.setattr(m, "decode_data_row", counted)
    session.dataReceived(m.Query(query="SELECT id, note FROM notes").encode())
    transport.clear()
    plain = [m.DataRow(values=(str(i).encode(), b"shipped on 5 May, box 12")) for i in range(4)]
    secret = m.DataRow(values=(b"7", f"mail {EMAIL}".encode()))
    description = m.RowDescription(fields=(field("id", 23), field("note", 25)))
    messages = [description, *plain[:2], secret, *plain[2:], m.CommandComplete(tag="SELECT 5")]
    wire = b"".join(x.encode() for x in [*messages, m.ReadyForQuery(status="I")])
    session.upstream_messages(*m.MessageReader().feed_block(wire))
    expected = wire.replace(secret.encode(), m.DataRow(values=(b"7", b"mail [EMAIL]")).encode())
    assert transport.value() == expected
    assert decoded == [secret.encode()[5:]]
