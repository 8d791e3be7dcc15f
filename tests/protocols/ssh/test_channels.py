"""Tests for hoopgw_ssh.channels: a session channel against fake connections on both sides."""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace
from typing import Any

from hoopgw_ssh.channels import EXIT_REFUSED, STDERR, SessionChannel, UpstreamSessionChannel
from hoopgw_ssh.options import SshConfig
from hoopgw_ssh.outstream import HARD_DELAY, SOFT_DELAY
from twisted.conch.ssh.common import NS

from hoopgw.errors import HeldStatement
from hoopgw.session import Output


def _fakes() -> Any:
    # tests/protocols/ssh/fakes.py, loaded by tests/conftest.py (tests are no package).
    return sys.modules["hoopgw_tests_ssh_fakes"]


fakes = _fakes()


def _open(
    settings: SshConfig | None = None, masker: Any = None
) -> tuple[SessionChannel, UpstreamSessionChannel, Any, Any]:
    session = fakes.FakeSession()
    session.upstream = fakes.FakeConnection()
    session.runtime.config = SimpleNamespace(protocol_options=settings or SshConfig(host_key="k"))
    session.runtime.chain = SimpleNamespace(
        has_output_hooks=masker is not None,
        has_input_hooks=False,
        hook=SimpleNamespace(server_output=masker),
    )
    client = fakes.FakeConnection()
    channel = SessionChannel(remoteWindow=2**20, remoteMaxPacket=2**15, avatar=session)
    channel.conn = client
    channel.id = 0
    channel.channelOpen(b"")
    [upstream] = session.upstream.opened
    upstream.remoteWindowLeft = 2**20
    upstream.remoteMaxPacket = 2**15
    upstream.channelOpen(b"")
    return channel, upstream, client, session


def _answers(channel: SessionChannel, *requests: tuple[bytes, bytes]) -> list[Any]:
    answers: list[Any] = []
    for kind, data in requests:
        channel.requestReceived(kind, data).addCallback(answers.append)
    return answers


def _exec(text: bytes) -> tuple[bytes, bytes]:
    return b"exec", NS(text)


def test_env_only_from_the_allow_list() -> None:
    channel, _, _, session = _open(SshConfig(host_key="k", env_allow=("LC_*", "LANG")))
    answers = _answers(
        channel,
        (b"env", NS(b"LC_ALL") + NS(b"C")),
        (b"env", NS(b"LD_PRELOAD") + NS(b"/evil.so")),
        (b"env", NS(b"LANG") + NS(b"C")),
    )
    assert answers == [True, False, True]
    names = [s[3][4:].split(b"\x00")[0] for s in session.upstream.of("request")]
    assert names == [b"LC_ALL", b"LANG"]


def test_allowed_exec_runs_after_the_decision_and_input_waits() -> None:
    channel, upstream, client, session = _open()
    answers = _answers(channel, _exec(b"uptime"))
    channel.dataReceived(b"typed ahead")
    assert session.upstream.of("request") == []
    command = session.allow()
    assert (command.text, command.kind) == ("uptime", "exec")
    [(_, to, kind, data, want)] = session.upstream.of("request")
    assert (to, kind, data, want) == (upstream, b"exec", NS(b"uptime"), True)
    session.upstream.request_answers[0].callback(None)
    assert answers == [True]
    assert session.upstream.of("data") == [("data", upstream, b"typed ahead")]
    upstream.dataReceived(b"up 3 days\n")
    upstream.requestReceived(b"exit-status", struct.pack(">L", 0))
    assert client.of("data") == [("data", channel, b"up 3 days\n")]
    assert client.of("request")[-1][2:4] == (b"exit-status", struct.pack(">L", 0))
    channel.closed()
    [(_, outcome)] = session.completed
    assert (outcome.status, outcome.bytes) == ("ok", 10)


def test_input_and_eof_sent_before_the_decision_follow_the_exec_in_order() -> None:
    channel, _, _, session = _open()
    _answers(channel, _exec(b"cat > f"))
    channel.dataReceived(b"payload")
    channel.eofReceived()
    assert session.upstream.sent == []  # neither the data nor the EOF overtakes the exec
    session.allow()
    session.upstream.request_answers[0].callback(None)
    assert [s[0] for s in session.upstream.sent] == ["request", "data", "eof"]


def test_input_waiting_for_the_decision_withholds_window_until_the_command_runs() -> None:
    channel, _, client, session = _open()
    _answers(channel, _exec(b"cat > f"))
    assert not channel.withholds_window()
    channel.dataReceived(b"payload")
    assert channel.withholds_window()  # RelayConnection grants no window meanwhile
    channel.owe_window(7)
    session.allow()
    session.upstream.request_answers[0].callback(None)
    assert not channel.withholds_window()
    assert client.of("window") == [("window", channel, 7)]


def test_input_and_eof_of_a_refused_exec_are_dropped() -> None:
    channel, _, _, session = _open()
    _answers(channel, _exec(b"reboot"))
    channel.dataReceived(b"payload")
    channel.eofReceived()
    session.block("no")
    session.runtime.reactor.advance(0)
    assert session.upstream.sent == []


def test_refused_exec_explains_exits_126_and_never_reaches_the_target() -> None:
    channel, _, client, session = _open()
    answers = _answers(channel, _exec(b"reboot"))
    session.block("no reboots")
    assert answers == [True]
    session.runtime.reactor.advance(0)
    [(_, _, kind, data)] = client.of("ext")
    assert kind == STDERR
    assert data.startswith(b"hoopgw refused the command: no reboots [code=HGW-REFUSED]")
    assert data.endswith(b"\r\n") and data.count(b"\n") == 1
    assert client.of("request")[-1][2:4] == (b"exit-status", struct.pack(">L", EXIT_REFUSED))
    assert client.of("eof") and client.of("close")
    assert session.upstream.of("request") == []
    assert session.completed[0][1].status == "blocked"


def test_a_held_exec_says_so_in_one_stderr_line_then_runs_once_allowed() -> None:
    channel, _, client, session = _open()
    answers = _answers(channel, _exec(b"rm -rf /srv/cache"))
    [tell] = session.held
    tell(
        HeldStatement(review_id="abc123def456", command_seq=1, approvers=("ops",), hold_until=120.0)
    )
    [(_, _, kind, data)] = client.of("ext")
    assert kind == STDERR
    assert data.startswith(
        b"hoopgw held for review abc123def456 by group ops, waiting up to 120 s [code=HGW-HELD]."
    )
    assert b"hoopgw reviews approve abc123def456" in data
    assert data.endswith(b"\r\n") and data.count(b"\n") == 1
    assert answers == []
    session.allow()
    [(_, _, kind, _, _)] = session.upstream.of("request")
    assert kind == b"exec"
    session.upstream.request_answers[0].callback(None)
    assert answers == [True]


def test_exit_codes_and_signals_complete_the_command() -> None:
    for request, data, expected in (
        (b"exit-status", struct.pack(">L", 3), ("error", "3")),
        (b"exit-signal", NS(b"TERM") + b"\x00" + NS(b"") + NS(b""), ("error", "SIGTERM")),
    ):
        channel, upstream, _, session = _open()
        _answers(channel, _exec(b"job"))
        session.allow()
        session.upstream.request_answers[0].callback(None)
        upstream.requestReceived(request, data)
        channel.closed()
        outcome = session.completed[0][1]
        assert (outcome.status, outcome.error_code) == expected


def test_a_command_without_exit_is_aborted_and_not_utf8_is_refused() -> None:
    channel, _, _, session = _open()
    _answers(channel, _exec(b"sleep 9"))
    session.allow()
    session.upstream.request_answers[0].callback(None)
    channel.closed()
    assert session.completed[0][1].status == "aborted"

    channel, _, _, session = _open()
    answers = _answers(channel, _exec(b"cat \xff"))
    session.allow()  # whatever the plugins say
    assert answers == [True]
    assert session.completed[0][1].error_message == "the command is not valid UTF-8"


def test_pty_size_is_a_detail_of_the_command_and_follows_window_changes() -> None:
    channel, _, _, session = _open()
    pty = NS(b"xterm") + struct.pack(">4L", 100, 30, 0, 0) + NS(b"")
    answers = _answers(channel, (b"pty-req", pty))
    session.upstream.request_answers[0].callback(None)
    _answers(channel, (b"window-change", struct.pack(">4L", 120, 40, 0, 0)), (b"shell", b""))
    command = session.allow()
    assert answers == [True]
    assert command.kind == "shell" and command.text == ""
    assert command.details["pty"] == {"term": "xterm", "width": 120, "height": 40}


def test_requests_are_answered_in_order_and_one_command_per_channel() -> None:
    channel, _, _, session = _open()
    answers = _answers(channel, _exec(b"a"), (b"env", NS(b"X") + NS(b"1")), _exec(b"b"))
    assert answers == []  # the exec decision holds the rest
    session.allow()
    session.upstream.request_answers[0].callback(None)
    assert answers == [True, False, False]


def test_sftp_agent_x11_are_off_unless_allowed() -> None:
    channel, _, _, _ = _open()
    answers = _answers(
        channel,
        (b"subsystem", NS(b"sftp")),
        (b"auth-agent-req@openssh.com", b""),
        (b"x11-req", b"\x00" + NS(b"MIT") + NS(b"00") + b"\x00\x00\x00\x00"),
        (b"keepalive@openssh.com", b""),
    )
    assert answers == [False, False, False, False]


def test_output_reaches_the_hooks_whole_and_masked() -> None:
    def mask(session: Any, command: Any, output: Output) -> None:
        output.fields["data"] = output.fields["data"].replace("alice@example.com", "[EMAIL]")

    channel, upstream, client, session = _open(masker=mask)
    _answers(channel, _exec(b"cat"))
    session.allow()
    session.upstream.request_answers[0].callback(None)
    upstream.dataReceived(b"mail: alice@exa")
    session.runtime.reactor.advance(SOFT_DELAY)
    upstream.dataReceived(b"mple.com\n")
    upstream.extReceived(STDERR, "é".encode()[:1])
    upstream.extReceived(STDERR, "é".encode()[1:] + b" \xff")
    session.runtime.reactor.advance(SOFT_DELAY + HARD_DELAY)
    upstream.requestReceived(b"exit-status", struct.pack(">L", 0))
    assert b"".join(s[2] for s in client.of("data")) == b"mail: [EMAIL]\n"
    assert b"".join(s[3] for s in client.of("ext")) == "é".encode() + b" \xff"


def test_too_many_requests_behind_a_held_command_end_the_channel() -> None:
    from hoopgw_ssh.channels import REQUEST_QUEUE_LIMIT

    channel, _, client, _ = _open()
    _answers(channel, _exec(b"apt install x"))  # held for approval
    for _ in range(REQUEST_QUEUE_LIMIT - 1):
        channel.requestReceived(b"window-change", struct.pack(">4L", 80, 24, 0, 0))
    assert not client.of("close")
    channel.requestReceived(b"window-change", struct.pack(">4L", 80, 24, 0, 0))
    assert client.of("close")


def test_judged_shell_refuses_a_pty_whose_modes_it_cannot_follow() -> None:
    from hoopgw.shell import LineJudge

    settings = SshConfig(host_key="k", judge_shell_lines=True)
    channel, _, _, session = _open(settings)
    erase_is_z = NS(b"xterm") + struct.pack(">4L", 80, 24, 0, 0) + NS(b"\x03\x00\x00\x00Z\x00")
    answers = _answers(channel, (b"pty-req", erase_is_z), (b"shell", b""))
    assert session.upstream.of("request") == []  # the pty-req never reached the target
    session.allow()
    session.upstream.request_answers[0].callback(None)
    assert answers == [False, True]
    judge = channel._input_judge
    assert isinstance(judge, LineJudge) and judge._keys is None


def test_a_pty_the_target_refused_is_not_a_pty() -> None:
    from twisted.conch.error import ConchError

    channel, _, _, session = _open(SshConfig(host_key="k", judge_shell_lines=True))
    pty = NS(b"xterm") + struct.pack(">4L", 80, 24, 0, 0) + NS(b"")
    answers = _answers(channel, (b"pty-req", pty))
    session.upstream.request_answers[0].errback(ConchError("no pty"))
    assert answers == [False] and channel.pty is None


def test_a_forward_keeps_its_address_only_in_the_text_that_masking_sees() -> None:
    # The recording plugin stores details as they are; the text passes audit_text (masking).
    from hoopgw_ssh.channels import DirectTcpipChannel

    session = fakes.FakeSession()
    session.runtime.config = SimpleNamespace(
        protocol_options=SshConfig(host_key="k", allow_port_forwarding=True)
    )
    data = NS(b"10.1.2.3") + struct.pack(">L", 5432) + NS(b"127.0.0.1") + struct.pack(">L", 4)
    channel = DirectTcpipChannel(
        remoteWindow=2**20, remoteMaxPacket=2**15, data=data, avatar=session
    )
    assert channel.command.text == "10.1.2.3:5432"
    assert "10.1.2.3" not in repr(channel.command.details)
