"""Tests for :mod:`hoopgw_postgres.upstream`: the gateway's own login to the target."""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import pytest
from hoopgw_postgres import messages as m
from hoopgw_postgres.auth import ScramServer, md5_password
from hoopgw_postgres.upstream import SSL_REQUEST, UpstreamConnection
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, DNSMismatch
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hoopgw.secrets import make_verifier

PARAMETER = m.ParameterStatus(name="server_version", value="15.20").encode()
LOGIN_DONE = (
    m.AuthenticationOk().encode()
    + PARAMETER
    + m.BackendKeyData(pid=77, key=b"abcd").encode()
    + m.ReadyForQuery(status="I").encode()
)


class Listener:
    """Records what the upstream connection reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def upstream_ready(
        self, parameters: list[bytes], backend_key: tuple[int, bytes], tls: bool
    ) -> None:
        self.events.append(("ready", (parameters, backend_key, tls)))

    def upstream_failed(self, code: str, message: str) -> None:
        self.events.append(("failed", (code, message)))

    def upstream_messages(self, block: bytes, starts: list[int]) -> None:
        self.events.append(("messages", [block[i : i + 1] for i in starts[:-1]]))

    def upstream_closed(self) -> None:
        self.events.append(("closed", None))


class TLSTransport(StringTransport):
    """A StringTransport that remembers a switch to TLS."""

    tls_options: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls_options = options


def connect(
    *, sslmode: str = "disable", password: str | None = "s3cret"
) -> tuple[UpstreamConnection, TLSTransport, Listener]:
    listener = Listener()
    upstream = UpstreamConnection(
        listener,
        user="postgres",
        password=password,
        params={"database": "app", "application_name": "psql"},
        sslmode=sslmode,
        tls_options="tls-options",
    )
    transport = TLSTransport()
    upstream.makeConnection(transport)
    return upstream, transport, listener


def sent(transport: StringTransport) -> list[Any]:
    """Decode and clear what the gateway sent to the target after the startup packet."""
    data = transport.value()
    transport.clear()
    return [t + body for t, body, _ in m.MessageReader().feed(data)]


def startup_of(data: bytes) -> m.StartupMessage:
    [(kind, body, _)] = m.MessageReader(startup=True).feed(data)
    assert kind == b""
    message = m.decode_startup(body)
    assert isinstance(message, m.StartupMessage)
    return message


def test_startup_uses_the_stored_user_and_the_client_parameters() -> None:
    _, transport, _ = connect()
    startup = startup_of(transport.value())
    assert startup.params == {"database": "app", "application_name": "psql", "user": "postgres"}


def test_trust_login_reports_ready_with_parameters_and_key() -> None:
    upstream, transport, listener = connect()
    transport.clear()
    upstream.dataReceived(LOGIN_DONE)
    assert listener.events == [("ready", ([PARAMETER], (77, b"abcd"), False))]


def test_messages_after_ready_in_the_same_chunk_are_relayed() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(LOGIN_DONE + m.NoticeResponse(fields={"M": "hi"}).encode())
    upstream.dataReceived(m.CommandComplete(tag="SELECT 1").encode())
    assert listener.events[1:] == [("messages", [b"N"]), ("messages", [b"C"])]


@pytest.mark.parametrize("split", [1, 2, 5])
def test_login_in_any_split(split: int) -> None:
    upstream, _, listener = connect()
    data = m.AuthenticationCleartextPassword().encode() + LOGIN_DONE
    for start in range(0, len(data), split):
        upstream.dataReceived(data[start : start + split])
    assert listener.events == [("ready", ([PARAMETER], (77, b"abcd"), False))]


def test_cleartext_password() -> None:
    upstream, transport, _ = connect()
    transport.clear()
    upstream.dataReceived(m.AuthenticationCleartextPassword().encode())
    assert transport.value() == m.PasswordMessage(password="s3cret").encode()


def test_md5_password() -> None:
    upstream, transport, _ = connect()
    transport.clear()
    upstream.dataReceived(m.AuthenticationMD5Password(salt=b"salt").encode())
    digest = md5_password("postgres", "s3cret", b"salt")
    assert (
        digest
        == b"md5"
        + hashlib.md5(hashlib.md5(b"s3cretpostgres").hexdigest().encode() + b"salt")
        .hexdigest()
        .encode()
    )
    assert transport.value() == b"p" + struct.pack("!i", 4 + len(digest) + 1) + digest + b"\0"


def test_scram_login_against_a_real_scram_server() -> None:
    upstream, transport, listener = connect()
    server = ScramServer(make_verifier("s3cret", os.urandom(16), 4096))
    transport.clear()
    upstream.dataReceived(m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256",)).encode())
    [(_, body, _)] = m.MessageReader().feed(transport.value())
    transport.clear()
    initial = m.SASLInitialResponse.decode(body)
    assert initial.mechanism == "SCRAM-SHA-256"
    upstream.dataReceived(m.AuthenticationSASLContinue(data=server.first(initial.data)).encode())
    [(_, body, _)] = m.MessageReader().feed(transport.value())
    final = server.final(m.SASLResponse.decode(body).data)
    upstream.dataReceived(m.AuthenticationSASLFinal(data=final).encode() + LOGIN_DONE)
    assert [kind for kind, _ in listener.events] == ["ready"]


def test_scram_with_a_forged_server_signature_fails() -> None:
    upstream, transport, listener = connect()
    server = ScramServer(make_verifier("other password", os.urandom(16), 4096))
    transport.clear()
    upstream.dataReceived(m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256",)).encode())
    [(_, body, _)] = m.MessageReader().feed(transport.value())
    transport.clear()
    first = server.first(m.SASLInitialResponse.decode(body).data)
    upstream.dataReceived(m.AuthenticationSASLContinue(data=first).encode())
    # The server cannot check the proof; a forged final message must not be accepted.
    upstream.dataReceived(m.AuthenticationSASLFinal(data=b"v=" + b"A" * 44).encode())
    assert listener.events == [("failed", ("08006", "the target failed SCRAM server verification"))]
    assert transport.disconnecting


def test_unsupported_sasl_mechanism_fails() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(m.AuthenticationSASL(mechanisms=("SCRAM-SHA-256-PLUS",)).encode())
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "28000")


def test_password_request_without_a_password_fails() -> None:
    upstream, transport, listener = connect(password=None)
    upstream.dataReceived(m.AuthenticationCleartextPassword().encode())
    assert listener.events == [
        ("failed", ("28000", "the target asks for a password, but the connection has none"))
    ]
    assert transport.disconnecting


def test_login_error_is_reported_without_the_password() -> None:
    upstream, transport, listener = connect()
    upstream.dataReceived(
        m.error_response("FATAL", "28P01", 'password authentication failed for user "x"').encode()
    )
    [(kind, (code, message))] = listener.events
    assert (kind, code) == ("failed", "28P01")
    assert "s3cret" not in message
    assert transport.disconnecting


def test_unexpected_message_during_login_fails() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(m.CommandComplete(tag="SELECT 1").encode())
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "08P01")


def test_notices_and_negotiation_during_login_are_ignored() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(
        m.NegotiateProtocolVersion(newest_version=m.PROTOCOL_3_0).encode()
        + m.NoticeResponse(fields={"M": "hello"}).encode()
        + LOGIN_DONE
    )
    assert [kind for kind, _ in listener.events] == ["ready"]


def test_garbage_from_the_target_fails() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(b"R\x00\x00\x00\x01")
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "08P01")


def test_prefer_sends_ssl_request_and_starts_tls_on_s() -> None:
    upstream, transport, listener = connect(sslmode="prefer")
    assert transport.value() == SSL_REQUEST
    transport.clear()
    upstream.dataReceived(b"S")
    assert transport.tls_options == "tls-options"
    assert startup_of(transport.value()).params["user"] == "postgres"
    upstream.dataReceived(LOGIN_DONE)
    assert listener.events == [("ready", ([PARAMETER], (77, b"abcd"), True))]


def test_prefer_continues_in_clear_on_n() -> None:
    upstream, transport, _ = connect(sslmode="prefer")
    transport.clear()
    upstream.dataReceived(b"N")
    assert transport.tls_options is None
    assert startup_of(transport.value()).params["user"] == "postgres"


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
def test_required_tls_refused_by_the_target_fails(sslmode: str) -> None:
    upstream, transport, listener = connect(sslmode=sslmode)
    transport.clear()
    upstream.dataReceived(b"N")
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "08001")
    assert transport.value() == b""


def test_data_after_the_tls_answer_is_refused() -> None:
    upstream, transport, listener = connect(sslmode="require")
    upstream.dataReceived(b"S" + m.AuthenticationOk().encode())
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "08P01")
    assert transport.tls_options is None


def test_garbage_tls_answer_fails() -> None:
    upstream, _, listener = connect(sslmode="prefer")
    upstream.dataReceived(b"E")
    [(kind, (code, _))] = listener.events
    assert (kind, code) == ("failed", "08P01")


def test_connection_lost_during_login_fails_once() -> None:
    upstream, _, listener = connect()
    upstream.connectionLost()
    assert listener.events == [
        ("failed", ("08006", "the target closed the connection during login"))
    ]


def test_failed_tls_handshake_says_why() -> None:
    upstream, _, listener = connect(sslmode="require")
    upstream.dataReceived(b"S")
    upstream.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    assert listener.events == [
        ("failed", ("08006", "TLS handshake with the target failed: certificate verify failed"))
    ]


def test_certificate_for_another_name_says_which_name() -> None:
    upstream, _, listener = connect(sslmode="verify-full")
    upstream.dataReceived(b"S")
    mismatch = DNSMismatch(mismatched_id=DNS_ID("db.example"))
    upstream.connectionLost(Failure(VerificationError(errors=[mismatch])))
    assert listener.events == [
        (
            "failed",
            ("08006", "the target's certificate is not valid for db.example (sslmode=verify-full)"),
        )
    ]


def test_connection_lost_after_a_failure_is_not_reported_again() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(m.error_response("FATAL", "3D000", "no such database").encode())
    upstream.connectionLost()
    assert [kind for kind, _ in listener.events] == ["failed"]


def test_connection_lost_after_ready_reports_closed() -> None:
    upstream, _, listener = connect()
    upstream.dataReceived(LOGIN_DONE)
    upstream.connectionLost()
    assert listener.events[1:] == [("closed", None)]


def test_send_and_close_after_ready() -> None:
    upstream, transport, listener = connect()
    upstream.dataReceived(LOGIN_DONE)
    transport.clear()
    upstream.send(b"Q-bytes")
    upstream.close()
    assert transport.value() == b"Q-bytes" + m.Terminate().encode()
    assert transport.disconnecting
    upstream.connectionLost()
    assert listener.events[1:] == [("closed", None)]


def test_close_during_login_sends_no_terminate() -> None:
    upstream, transport, _ = connect()
    transport.clear()
    upstream.close()
    assert transport.value() == b""
    assert transport.disconnecting
