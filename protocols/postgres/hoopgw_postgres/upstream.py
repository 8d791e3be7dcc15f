"""The gateway's own connection to the target PostgreSQL: TLS per ``sslmode``, login with the
stored credential, then a plain message pipe for the client session."""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw_postgres import messages as m
from hoopgw_postgres.auth import ScramClient, md5_password

log = Logger(namespace="hoopgw.postgres.upstream")

# Sent on their own: the server answers a single byte, 'S' or 'N' (protocol chapter 55.2.10).
SSL_REQUEST = m.SSLRequest().encode()


class UpstreamListener(TypingProtocol):
    """What the upstream connection reports to the client session."""

    def upstream_ready(
        self, parameters: list[bytes], backend_key: tuple[int, bytes], tls: bool
    ) -> None:
        """Login succeeded; ``parameters`` are the wire ParameterStatus messages to relay."""

    def upstream_failed(self, code: str, message: str) -> None:
        """Login or connection failed; ``message`` never holds the credential."""

    def upstream_messages(self, block: bytes, starts: list[int]) -> None:
        """Server messages after login, in order: message ``i`` is
        ``block[starts[i]:starts[i + 1]]`` (see :meth:`MessageReader.feed_block`)."""

    def upstream_closed(self) -> None:
        """The connection to the target ended."""


def tls_failure_message(reason: Failure) -> str | None:
    """Say why the TLS handshake with the target failed, or ``None`` when ``reason`` is no TLS
    failure (the target just closed the connection)."""
    error = reason.value
    if isinstance(error, VerificationError):
        names = ", ".join(
            _identity_text(getattr(mismatch, "mismatched_id", None)) for mismatch in error.errors
        )
        return f"the target's certificate is not valid for {names} (sslmode=verify-full)"
    if isinstance(error, SSL.Error):
        # OpenSSL reports a list of (library, function, reason) tuples; the reasons say it.
        entries = error.args[0] if error.args and isinstance(error.args[0], list) else []
        reasons = [str(entry[-1]) for entry in entries if isinstance(entry, tuple) and entry]
        return f"TLS handshake with the target failed: {'; '.join(reasons) or 'unknown error'}"
    return None


def _identity_text(identity: Any) -> str:
    name = getattr(identity, "hostname", None) or getattr(identity, "ip", None)
    if isinstance(name, bytes):
        return name.decode("ascii", "replace")
    return str(name) if name is not None else "the expected name"


class UpstreamConnection(protocol.Protocol):
    """Logs in to the target, then pipes messages to and from the client session."""

    transport: Any  # a TCP or TLS transport once connected

    def __init__(
        self,
        listener: UpstreamListener,
        *,
        user: str,
        password: str | None,
        params: dict[str, str],
        sslmode: str,
        tls_options: Any,
    ) -> None:
        self.listener = listener
        self._user = user
        self._password = password
        self._params = params
        self._sslmode = sslmode
        self._tls_options = tls_options
        self._reader = m.MessageReader()
        self._phase = "connecting"
        self._scram: ScramClient | None = None
        self._parameters: list[bytes] = []
        self._backend_key: tuple[int, bytes] = (0, b"")
        self.tls = False

    # -- Twisted -----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if self._sslmode == "disable":
            self._send_startup()
        else:
            self._phase = "ssl"
            self.transport.write(SSL_REQUEST)

    def dataReceived(self, data: bytes) -> None:
        if self._phase == "ssl":
            self._ssl_answer(data)
            return
        try:
            if self._phase == "ready":
                block, starts = self._reader.feed_block(data)
                if len(starts) > 1:
                    self.listener.upstream_messages(block, starts)
                return
            frames = self._reader.feed(data)
        except m.ProtocolViolation as exc:
            self._fail("08P01", f"invalid message from target: {exc}")
            return
        for index, frame in enumerate(frames):
            self._login_message(frame)
            if self._phase == "ready":
                rest = frames[index + 1 :]
                if rest:
                    self.listener.upstream_messages(*m.join_messages(rest))
                return
            if self._phase == "failed":
                return

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._phase in ("ready", "closed"):
            self._phase = "closed"
            self.listener.upstream_closed()
        elif self._phase != "failed":
            self._phase = "failed"
            message = (self.tls and tls_failure_message(reason)) or (
                "the target closed the connection during login"
            )
            self.listener.upstream_failed("08006", message)

    # -- login -------------------------------------------------------------------------------

    def _ssl_answer(self, data: bytes) -> None:
        answer, rest = data[:1], data[1:]
        if rest:
            # Bytes after the answer were not protected by TLS (CVE-2021-23222): refuse them.
            self._fail("08P01", "the target sent unencrypted data after its TLS answer")
            return
        if answer == b"S":
            self.transport.startTLS(self._tls_options)
            self.tls = True
        elif answer == b"N":
            if self._sslmode in ("require", "verify-full"):
                self._fail("08001", f"the target does not support TLS (sslmode={self._sslmode})")
                return
        else:
            self._fail("08P01", "the target answered the TLS request with garbage")
            return
        self._send_startup()

    def _send_startup(self) -> None:
        self._phase = "auth"
        params = dict(self._params)
        params["user"] = self._user
        self.transport.write(m.StartupMessage(protocol=m.PROTOCOL_3_0, params=params).encode())

    def _login_message(self, frame: Any) -> None:
        kind = frame.type
        if kind == b"R":
            self._authentication(m.decode_authentication(frame.body))
        elif kind == b"S":
            self._parameters.append(bytes(frame.wire))
        elif kind == b"K":
            key = m.BackendKeyData.decode(frame.body)
            self._backend_key = (key.pid, key.key)
        elif kind == b"Z":
            self._phase = "ready"
            self.listener.upstream_ready(self._parameters, self._backend_key, self.tls)
        elif kind == b"E":
            fields = m.ErrorResponse.decode(frame.body).fields
            self._fail(
                fields.get("C", "08006"), f"login to the target failed: {fields.get('M', '')}"
            )
        elif kind in (b"N", b"v"):
            pass  # notices and protocol negotiation during login concern only the gateway
        else:
            self._fail("08P01", f"unexpected message {kind!r} from the target during login")

    def _authentication(self, auth: Any) -> None:
        if isinstance(auth, m.AuthenticationOk):
            if self._scram is not None and not self._scram.verified:
                # A target that skips SCRAM's final step has not proven it knows the password.
                self._fail("08006", "the target skipped SCRAM server verification")
            return
        if isinstance(auth, m.AuthenticationSASLFinal):
            assert self._scram is not None
            try:
                self._scram.verify(auth.data)
            except Exception:
                self._fail("08006", "the target failed SCRAM server verification")
            return
        if self._password is None:
            self._fail("28000", "the target asks for a password, but the connection has none")
            return
        if isinstance(auth, m.AuthenticationCleartextPassword):
            self.transport.write(m.PasswordMessage(password=self._password).encode())
        elif isinstance(auth, m.AuthenticationMD5Password):
            digest = md5_password(self._user, self._password, auth.salt)
            self.transport.write(m.PasswordMessage(password=digest.decode("ascii")).encode())
        elif isinstance(auth, m.AuthenticationSASL):
            if "SCRAM-SHA-256" not in auth.mechanisms:
                self._fail(
                    "28000", f"the target offers no supported SASL mechanism {auth.mechanisms}"
                )
                return
            self._scram = ScramClient(self._password)
            self.transport.write(
                m.SASLInitialResponse(mechanism="SCRAM-SHA-256", data=self._scram.first()).encode()
            )
        elif isinstance(auth, m.AuthenticationSASLContinue):
            assert self._scram is not None
            self.transport.write(m.SASLResponse(data=self._scram.final(auth.data)).encode())
        else:
            self._fail(
                "28000", f"the target asks for an unsupported login method {type(auth).__name__}"
            )

    def _fail(self, code: str, message: str) -> None:
        if self._phase in ("failed", "closed"):
            return
        self._phase = "failed"
        self.transport.loseConnection()
        self.listener.upstream_failed(code, message)

    # -- session -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Forward bytes to the target."""
        self.transport.write(data)

    def close(self) -> None:
        """Say goodbye to the target and close."""
        if self.transport is None:
            # Never connected (the target is unreachable): nothing to close.
            self._phase = "closed"
            return
        if self._phase == "ready":
            self._phase = "closed"
            self.transport.write(m.Terminate().encode())
        self.transport.loseConnection()
