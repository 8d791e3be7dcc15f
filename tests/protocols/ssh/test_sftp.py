"""Tests for hoopgw_ssh.sftp: file operations judged in order, answers complete them."""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from hoopgw_ssh.sftp import (
    FX_PERMISSION_DENIED,
    FXP_DATA,
    FXP_EXTENDED,
    FXP_HANDLE,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_STATUS,
    SftpError,
    SftpJudge,
    SftpReplies,
    describe_request,
)

from hoopgw.session import Output


def _fakes() -> Any:
    # tests/protocols/ssh/fakes.py, loaded by tests/conftest.py (tests are no package).
    return sys.modules["hoopgw_tests_ssh_fakes"]


def _s(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">L", len(data)) + data


def _packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">L", len(body)) + body


def _request(kind: int, request_id: int, *fields: bytes) -> bytes:
    return _packet(kind, struct.pack(">L", request_id), *fields)


OPEN_WRITE = _request(FXP_OPEN, 7, _s("/tmp/a"), struct.pack(">LL", 2 | 8 | 16, 0))
READ = _request(5, 8, _s(b"handle"), struct.pack(">QL", 0, 4096))


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (OPEN_WRITE, (7, "open /tmp/a write,create,truncate")),
        (
            _request(FXP_OPEN, 1, _s("/etc/hosts"), struct.pack(">LL", 1, 0)),
            (1, "open /etc/hosts read"),
        ),
        (_request(FXP_REMOVE, 2, _s("/x")), (2, "remove /x")),
        (_request(FXP_MKDIR, 3, _s("/d"), struct.pack(">L", 0)), (3, "mkdir /d")),
        (_request(FXP_RENAME, 4, _s("/a"), _s("/b")), (4, "rename /a /b")),
        (
            _request(FXP_EXTENDED, 5, _s("posix-rename@openssh.com"), _s("/a"), _s("/b")),
            (5, "posix-rename@openssh.com /a /b"),
        ),
        (
            _request(FXP_EXTENDED, 6, _s("statvfs@openssh.com"), _s("/")),
            (6, "extended statvfs@openssh.com"),
        ),
        (READ, None),
        (_packet(1, struct.pack(">L", 3)), None),
    ],
)
def test_describe_request(packet: bytes, expected: Any) -> None:
    assert describe_request(packet) == expected


@pytest.mark.parametrize(
    "packet",
    [
        _request(FXP_REMOVE, 2, struct.pack(">L", 99) + b"/x"),
        _request(FXP_OPEN, 2, _s("/x")),
        _packet(FXP_REMOVE, b"\x00"),
    ],
)
def test_malformed_requests(packet: bytes) -> None:
    with pytest.raises(SftpError):
        describe_request(packet)


def _channel() -> Any:
    return _fakes().FakeChannel()


def test_operations_wait_for_their_decision_in_every_split() -> None:
    stream = OPEN_WRITE + READ + _request(FXP_REMOVE, 9, _s("/x"))
    for size in (1, 2, 3, 5, 8, 13, len(stream)):
        channel = _channel()
        judge = SftpJudge(channel)
        for start in range(0, len(stream), size):
            judge.feed(stream[start : start + size])
        assert channel.to_target == []
        assert [c.text for c, _ in channel.session.pending] == ["open /tmp/a write,create,truncate"]
        channel.session.allow()
        assert b"".join(channel.to_target) == OPEN_WRITE + READ
        assert [c.text for c, _ in channel.session.pending] == ["remove /x"]
        channel.session.block("not here")
        assert b"".join(channel.to_target) == OPEN_WRITE + READ
        [answer] = channel.to_client
        body = answer[4:]
        assert body[0] == FXP_STATUS
        assert struct.unpack(">LL", body[1:9]) == (9, FX_PERMISSION_DENIED)
        assert b"hoopgw: refused: not here" in body
        assert channel.session.completed[-1][1].status == "blocked"


def test_answers_complete_the_operations() -> None:
    channel = _channel()
    judge = SftpJudge(channel)
    replies = SftpReplies(channel, judge)
    judge.feed(OPEN_WRITE + _request(FXP_REMOVE, 9, _s("/x")))
    channel.session.allow()
    channel.session.allow()
    handle = _request(FXP_HANDLE, 7, _s(b"h1"))
    status = _request(FXP_STATUS, 9, struct.pack(">L", 2), _s("no such file"), _s(""))
    stream = handle + status
    for index in range(len(stream)):
        replies.feed(stream[index : index + 1])
    assert channel.to_client == [handle, status]
    outcomes = {c.text: o for c, o in channel.session.completed}
    assert outcomes["open /tmp/a write,create,truncate"].status == "ok"
    assert outcomes["remove /x"].status == "error"
    assert outcomes["remove /x"].error_code == "SSH_FX_2"


def test_file_data_a_plugin_would_change_ends_the_session() -> None:
    channel = _channel()
    replies = SftpReplies(channel, SftpJudge(channel))

    def mask(session: Any, command: Any, output: Output) -> None:
        output.fields["data"] = output.fields["data"].replace("secret", "******")

    channel.session.runtime.chain = SimpleNamespace(
        has_output_hooks=True, hook=SimpleNamespace(server_output=mask)
    )
    plain = _request(FXP_DATA, 1, _s(b"nothing to see"))
    replies.feed(plain)
    assert channel.to_client == [plain]
    replies.feed(_request(FXP_DATA, 2, _s(b"the secret")))
    assert channel.to_client == [plain]
    assert "masking cannot apply inside SFTP" in channel.session.terminated[0]


def test_oversized_packets_end_the_session() -> None:
    channel = _channel()
    SftpJudge(channel).feed(struct.pack(">L", 2**21))
    assert channel.session.terminated


def test_too_much_input_while_an_operation_is_decided_ends_the_channel() -> None:
    from hoopgw_ssh.sftp import BACKLOG_LIMIT

    channel = _channel()
    judge = SftpJudge(channel)
    judge.feed(OPEN_WRITE)  # held for a decision
    burst = READ * (2**16 // len(READ))
    for _ in range(BACKLOG_LIMIT // len(burst) + 1):
        assert not channel.lost
        judge.feed(burst)
    assert channel.lost


def test_lsetstat_is_recorded_with_its_path() -> None:
    packet = _request(
        FXP_EXTENDED, 11, _s("lsetstat@openssh.com"), _s("/etc/link"), struct.pack(">L", 0)
    )
    assert describe_request(packet) == (11, "lsetstat /etc/link")
    with pytest.raises(SftpError):
        describe_request(_request(FXP_EXTENDED, 11, _s("lsetstat@openssh.com")))


@pytest.mark.parametrize(
    "reuse",
    [_request(FXP_REMOVE, 7, _s("/x")), _request(5, 7, _s(b"handle"), struct.pack(">QL", 0, 1))],
    ids=["operation", "read"],
)
def test_a_request_reusing_a_waiting_id_ends_the_channel(reuse: bytes) -> None:
    channel = _channel()
    judge = SftpJudge(channel)
    judge.feed(OPEN_WRITE)
    channel.session.allow()
    assert 7 in judge.pending and not channel.lost
    judge.feed(reuse + _request(FXP_REMOVE, 9, _s("/y")))
    assert channel.lost
    assert b"".join(channel.to_target) == OPEN_WRITE
    assert [c.text for c, _ in channel.session.pending] == []
    judge.feed(_request(FXP_REMOVE, 10, _s("/z")))
    assert b"".join(channel.to_target) == OPEN_WRITE
    [(command, _)] = judge.pending.values()
    assert command.text == "open /tmp/a write,create,truncate"


def test_a_request_id_may_be_reused_once_answered() -> None:
    channel = _channel()
    judge = SftpJudge(channel)
    replies = SftpReplies(channel, judge)
    judge.feed(OPEN_WRITE)
    channel.session.allow()
    replies.feed(_request(FXP_HANDLE, 7, _s(b"h1")))
    judge.feed(_request(FXP_REMOVE, 7, _s("/x")))
    channel.session.allow()
    assert not channel.lost
    assert [c.text for c, _ in judge.pending.values()] == ["remove /x"]
