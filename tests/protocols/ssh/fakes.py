"""A fake session channel for the SSH input judges: records what crosses, decisions by hand."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

from twisted.conch.ssh.common import getNS
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from hoopgw.session import Command, CommandOutcome
from hoopgw.verdicts import Allow, Block

EOF = b"<EOF>"
"""What :meth:`FakeChannel.forward_eof` records in ``to_target``."""


class FakeSession:
    """Numbers commands and leaves each decision pending until the test answers it."""

    def __init__(self) -> None:
        self.pending: list[tuple[Command, defer.Deferred[Any]]] = []
        self.completed: list[tuple[Command, CommandOutcome]] = []
        self.terminated: list[str] = []
        self.runtime = SimpleNamespace(
            reactor=Clock(),
            chain=SimpleNamespace(has_output_hooks=False),
            info=SimpleNamespace(name="host"),
        )
        self.held: list[Any] = []  # what each decision calls when its command is held
        self.info = SimpleNamespace(id="s1")
        self.is_closed = False
        self._seq = 0

    @property
    def chain(self) -> Any:
        """The chain in force (the real session's follows config reloads)."""
        return self.runtime.chain

    def new_command(self, text: str, kind: str, details: dict[str, Any]) -> Command:
        self._seq += 1
        return Command(session_id="s1", seq=self._seq, text=text, kind=kind, details=details)

    def decide(self, command: Command, held: Any = None) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((command, d))
        self.held.append(held)
        return d

    def allow(self) -> Command:
        command, d = self.pending.pop(0)
        d.callback(Allow())
        return command

    def block(self, reason: str = "no") -> Command:
        command, d = self.pending.pop(0)
        d.callback(Block(reason=reason))
        return command

    def complete(self, command: Command, outcome: CommandOutcome) -> None:
        self.completed.append((command, outcome))

    def terminate(self, reason: str) -> None:
        self.terminated.append(reason)


class FakeChannel:
    """What the judges call on a :class:`~hoopgw_ssh.channels.SessionChannel`."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.id = 0
        self._closed = False
        self.command: Command | None = None
        self.to_target: list[bytes] = []
        self.to_client: list[bytes] = []
        self.lost = False

    def forward_input(self, data: bytes, data_type: int | None = None) -> None:
        if data:
            self.to_target.append(data)

    forward_raw = forward_input

    def forward_eof(self) -> None:
        self.to_target.append(EOF)

    def write(self, data: bytes) -> None:
        self.to_client.append(data)

    def write_stderr(self, data: bytes) -> None:
        self.to_client.append(b"stderr:" + data)

    write_raw = write

    def loseConnection(self) -> None:
        self.lost = True


class FakeConnection:
    """What Conch channels call on their ``ssh-connection`` service; records it all."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.opened: list[Any] = []
        self.request_answers: list[defer.Deferred[Any]] = []

    def openChannel(self, channel: Any, extra: bytes = b"") -> None:
        channel.conn = self
        self.opened.append(channel)

    def sendRequest(self, channel: Any, kind: bytes, data: bytes, wantReply: bool = False) -> Any:
        self.sent.append(("request", channel, kind, data, wantReply))
        if wantReply:
            answer: defer.Deferred[Any] = defer.Deferred()
            self.request_answers.append(answer)
            return answer
        return None

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(("data", channel, data))

    def sendExtendedData(self, channel: Any, kind: int, data: bytes) -> None:
        self.sent.append(("ext", channel, kind, data))

    def sendEOF(self, channel: Any) -> None:
        self.sent.append(("eof", channel))

    def sendClose(self, channel: Any) -> None:
        self.sent.append(("close", channel))
        channel.localClosed = True

    def adjustWindow(self, channel: Any, amount: int) -> None:
        self.sent.append(("window", channel, amount))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        """What was sent of one kind."""
        return [s for s in self.sent if s[0] == kind]


class TcpTransport(StringTransport):
    """A ``StringTransport`` that also records ``setTcpNoDelay`` (as a TCP transport has)."""

    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def plain_packets(written: bytes) -> list[bytes]:
    """The payloads of the unencrypted SSH packets after the version line in ``written``."""
    _, _, rest = written.partition(b"\r\n")
    payloads = []
    while len(rest) >= 5:
        length, padding = struct.unpack(">LB", rest[:5])
        payloads.append(rest[5 : 4 + length - padding])
        rest = rest[4 + length :]
    return payloads


def kexinit_lists(payload: bytes) -> dict[str, list[bytes]]:
    """The algorithm name-lists of a ``KEXINIT`` payload (RFC 4253, 7.1)."""
    assert payload[0] == 20, "not a KEXINIT"
    names = getNS(payload[17:], 10)[:10]
    fields = ["kex", "host_key", "cipher_out", "cipher_in", "mac_out", "mac_in"]
    return {field: names[i].split(b",") for i, field in enumerate(fields)}
