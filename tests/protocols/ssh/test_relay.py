"""Tests for hoopgw_ssh.relay: joined channels, EOF after data, window withheld while the other
side is congested."""

from __future__ import annotations

import sys
from typing import Any

from hoopgw_ssh.relay import BUFFER_LIMIT, RelayChannel, RelayConnection


def _fakes() -> Any:
    # tests/protocols/ssh/fakes.py, loaded by tests/conftest.py (tests are no package).
    return sys.modules["hoopgw_tests_ssh_fakes"]


fakes = _fakes()


def _pair(window: int = 2**20) -> tuple[RelayChannel, RelayChannel, Any, Any]:
    left_conn, right_conn = fakes.FakeConnection(), fakes.FakeConnection()
    left = RelayChannel(remoteWindow=window, remoteMaxPacket=2**15, conn=left_conn)
    right = RelayChannel(remoteWindow=window, remoteMaxPacket=2**15, conn=right_conn)
    return left, right, left_conn, right_conn


def test_held_data_and_eof_cross_once_linked() -> None:
    left, right, _, right_conn = _pair()
    left.dataReceived(b"early")
    left.extReceived(1, b"err")
    left.eofReceived()
    assert right_conn.sent == []
    left.link(right)
    assert right_conn.sent == [
        ("data", right, b"early"),
        ("ext", right, 1, b"err"),
        ("eof", right),
    ]


def test_eof_waits_for_buffered_data() -> None:
    left, right, _, right_conn = _pair(window=4)
    left.link(right)
    left.dataReceived(b"12345678")
    left.eofReceived()
    assert right_conn.of("eof") == []
    right.addWindowBytes(10)
    assert right_conn.of("data") == [("data", right, b"1234"), ("data", right, b"5678")]
    assert right_conn.of("eof") == [("eof", right)]


def test_close_closes_the_peer() -> None:
    left, right, left_conn, right_conn = _pair()
    left.link(right)
    left.closeReceived()
    assert right_conn.of("close") and left_conn.of("close")
    left.closed()
    assert left.peer is None
    left.dataReceived(b"late")  # dropped, not held
    assert right_conn.of("data") == []


class _Transport:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.packets.append((kind, payload))


def test_window_is_withheld_while_the_peer_is_congested() -> None:
    connection = RelayConnection()
    connection.transport = _Transport()  # type: ignore[assignment]
    left, right, _, _ = _pair(window=0)
    left.conn = connection
    connection.channelsToRemoteChannel[left] = 5
    left.link(right)
    left.localWindowLeft = 10
    left.dataReceived(b"x" * (BUFFER_LIMIT + 1))  # right cannot send: its window is 0
    assert right.is_congested()
    connection.adjustWindow(left, 100)
    connection.adjustWindow(left, 300)
    assert connection.transport.packets == []
    assert left.localWindowLeft == 10
    right.addWindowBytes(2 * BUFFER_LIMIT)
    assert not right.is_congested()
    [(_, payload)] = connection.transport.packets
    assert payload[4:] == (300).to_bytes(4, "big")
    assert left.localWindowLeft == 310


def test_window_is_withheld_while_data_waits_for_the_peer_to_open() -> None:
    # A forward held for approval: the client must not fill the gateway's memory meanwhile.
    connection = RelayConnection()
    connection.transport = _Transport()  # type: ignore[assignment]
    left, right, _, right_conn = _pair()
    left.conn = connection
    connection.channelsToRemoteChannel[left] = 5
    left.localWindowLeft = 10
    left.dataReceived(b"waiting")
    connection.adjustWindow(left, 100)
    assert connection.transport.packets == []
    left.link(right)
    assert right_conn.of("data") == [("data", right, b"waiting")]
    [(_, payload)] = connection.transport.packets
    assert payload[4:] == (100).to_bytes(4, "big")
