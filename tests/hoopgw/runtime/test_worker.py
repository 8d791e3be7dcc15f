"""Tests for :mod:`hoopgw.runtime.worker`: what a worker inherits, and its control link (cancel
requests, the live sessions it publishes, the ends it is asked for); no real socket."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from hoopgw.runtime.registry import SessionRegistry
from hoopgw.runtime.throttle import CancelLimit
from hoopgw.runtime.worker import (
    PUBLISH_INTERVAL,
    WORKER_ENV,
    ControlLink,
    WorkerLink,
    worker_instance,
)
from hoopgw.testing import make_session

SESSION_ID = "aaaaaaaa-0000-4000-8000-000000000001"


class Live:
    def __init__(self) -> None:
        self.session_info = make_session(identity="agent", session_id=SESSION_ID)
        self.identity = self.session_info.identity
        self.runtime: Any = None
        self.ended: list[str] = []
        self.cancelled = 0

    def terminate(self, reason: str) -> None:
        self.ended.append(reason)

    def forward_cancel(self) -> None:
        self.cancelled += 1


def test_the_link_travels_in_the_environment() -> None:
    link = WorkerLink(
        index=2,
        instance="w2",
        listeners={"tcp:5432": 3},
        audit_fd=4,
        control_fd=5,
        serves_admin=False,
    )
    assert WorkerLink.from_env({WORKER_ENV: link.to_env()}) == link
    assert WorkerLink.from_env({}) is None


def test_a_workers_id_names_its_instance() -> None:
    assert worker_instance("", 1) == "w1"
    assert worker_instance("gw-a", 3) == "gw-a/w3"


class Reactor(task.Clock):
    running = True
    stops = 0

    def stop(self) -> None:
        self.stops += 1
        self.running = False


def _connected(
    index: int = 2, reactor: Reactor | None = None
) -> tuple[ControlLink, SessionRegistry, Live, StringTransport]:
    registry = SessionRegistry()
    session = Live()
    registry.add(session)  # type: ignore[arg-type]
    link = ControlLink(registry, index, reactor or Reactor())
    transport = StringTransport()
    link.makeConnection(transport)
    return link, registry, session, transport


def _sent(transport: StringTransport) -> list[Any]:
    return [json.loads(line) for line in transport.value().splitlines()]


def test_a_cancel_request_is_asked_of_the_others_and_answered_for_them() -> None:
    link, registry, session, transport = _connected()
    registry.add_cancel_key(7, b"abcd", session)  # type: ignore[arg-type]
    link.ask_cancel(9, b"\x00\x01", "10.0.0.1:5000")
    assert _sent(transport) == [{"op": "cancel", "pid": 9, "key": "0001", "from": "10.0.0.1:5000"}]
    link.lineReceived(json.dumps({"op": "cancel", "pid": 7, "key": "61626364"}).encode())
    link.lineReceived(json.dumps({"op": "cancel", "pid": 7, "key": "00000000"}).encode())
    assert session.cancelled == 1
    link.cancel_matched("10.0.0.1:5000")
    assert _sent(transport)[-1] == {"op": "cancel_matched", "from": "10.0.0.1:5000"}


def test_a_miss_another_worker_matched_is_given_back() -> None:
    limit = CancelLimit(task.Clock(), burst=1)
    registry = SessionRegistry(cancel_limit=limit)
    link = ControlLink(registry, 2, Reactor())
    link.makeConnection(StringTransport())
    registry.cancel(9, b"zzzz", "10.0.0.1:1")  # a miss here: the address's one token spent
    assert not limit.allows("10.0.0.1:2")
    link.lineReceived(json.dumps({"op": "cancel_matched", "from": "10.0.0.1:1"}).encode())
    assert limit.allows("10.0.0.1:2")


def test_a_session_end_asked_by_the_admin_worker_ends_it() -> None:
    link, _, session, _ = _connected()
    message = {"op": "terminate", "worker": 2, "id": SESSION_ID, "reason": "ended by root"}
    link.lineReceived(json.dumps(message).encode())
    assert session.ended == ["ended by root"]


def test_the_admin_worker_keeps_what_the_others_publish_and_asks_them_to_end() -> None:
    link, _, _, transport = _connected(index=1)
    shown = {"id": "bbbbbbbb", "identity": "agent"}
    link.lineReceived(json.dumps({"op": "sessions", "worker": 2, "sessions": [shown]}).encode())
    assert link.sessions() == [(2, shown)]
    link.terminate(2, "bbbbbbbb", "why")
    assert _sent(transport) == [{"op": "terminate", "worker": 2, "id": "bbbbbbbb", "reason": "why"}]


def test_a_worker_publishes_its_sessions_when_they_change() -> None:
    clock = Reactor()
    link, registry, session, transport = _connected(reactor=clock)
    link.publish_sessions(clock)
    [published] = _sent(transport)
    assert published["op"] == "sessions" and published["worker"] == 2
    assert [s["id"] for s in published["sessions"]] == [SESSION_ID]
    transport.clear()
    clock.advance(PUBLISH_INTERVAL)
    assert transport.value() == b""  # nothing changed
    registry.remove(session)  # type: ignore[arg-type]
    clock.advance(PUBLISH_INTERVAL)
    assert _sent(transport) == [{"op": "sessions", "worker": 2, "sessions": []}]


def test_an_unreadable_message_is_logged_and_ignored() -> None:
    link, _, session, _ = _connected()
    link.lineReceived(b"not json")
    link.lineReceived(json.dumps({"op": "cancel"}).encode())
    assert session.cancelled == 0 and session.ended == []


def test_a_worker_stops_when_the_parent_says_so_or_is_gone() -> None:
    told, orphaned = Reactor(), Reactor()
    link, _, _, _ = _connected(reactor=told)
    link.lineReceived(b'{"op": "stop"}')
    assert told.stops == 1
    link, _, _, _ = _connected(reactor=orphaned)
    link.connectionLost(Failure(error.ConnectionLost()))
    assert orphaned.stops == 1


def test_a_listener_can_be_adopted_again_after_a_reload_let_it_go() -> None:
    """A reload that renames a connection, or removes it and a later one that adds it back,
    adopts the same inherited socket again: it must still be the parent's listener, not a
    closed descriptor whose number another file or connection of the worker took since."""
    import os
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    fd = os.dup(listener.fileno())
    address = listener.getsockname()

    class Reactor:
        adopted: list[Any] = []

        def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
            sock = socket.socket(family, socket.SOCK_STREAM, fileno=os.dup(fd))
            self.adopted.append(sock.getsockname())
            sock.close()
            return object()

    link = WorkerLink(
        index=2,
        instance="w2",
        listeners={"tcp:0": fd},
        audit_fd=-1,
        control_fd=-1,
        serves_admin=False,
    )
    reactor = Reactor()
    try:
        link.adopt_port(reactor, "tcp:0", object())
        reused = os.open(os.devnull, os.O_RDONLY)  # what the worker opens meanwhile
        try:
            link.adopt_port(reactor, "tcp:0", object())
            os.fstat(reused)  # still its own: adopting closed nothing of it
        finally:
            os.close(reused)
        assert reactor.adopted == [address, address]
    finally:
        listener.close()
        try:
            os.close(fd)
        except OSError:
            pass


class AdoptingReactor(Reactor):
    """Records the connections adopted, building each protocol as Twisted would."""

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[Any] = []
        self.blocking: list[bool] = []

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:
        import os

        os.fstat(fd)  # still open while adopted: the reactor takes its own duplicate
        self.blocking.append(os.get_blocking(fd))
        self.adopted.append(factory.buildProtocol(None))


class Served:
    def __init__(self) -> None:
        self.lost: list[Any] = []

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class ServedFactory:
    def buildProtocol(self, addr: Any) -> Served:
        served = Served()
        served.made_by = self  # type: ignore[attr-defined]
        return served


PASSED_LINE = json.dumps({"op": "connection", "listen": "tcp:5432", "local": "''"}).encode()
"""The line of a client of ``tcp:5432`` passed as :func:`_passed_descriptor` (whose
unnamed socket's local address is ``''``)."""


def _passed_descriptor() -> int:
    """A descriptor as the parent passes one (a connected socket's)."""
    import os
    import socket

    mine, theirs = socket.socketpair()
    fd = os.dup(mine.fileno())
    mine.close()
    theirs.close()
    return fd


def test_a_passed_connection_is_served_and_counted_until_it_ends() -> None:
    """The parent spreads connections by each worker's live count: the worker reports a
    connection taken, and again when it ends."""
    reactor = AdoptingReactor()
    link, _, _, transport = _connected(reactor=reactor)
    link.listen("tcp:5432", ServedFactory())
    link.fileDescriptorReceived(_passed_descriptor())
    link.lineReceived(PASSED_LINE)
    [served] = reactor.adopted
    assert reactor.blocking == [False]  # as the reactor requires: a blocking send would stall it
    assert _sent(transport) == [{"op": "load", "taken": 1, "ended": 0, "lost": 0}]
    transport.clear()
    served.connectionLost(Failure(error.ConnectionDone()))
    assert served.lost and _sent(transport) == [{"op": "load", "taken": 1, "ended": 1, "lost": 0}]


def test_a_connection_passed_for_a_listener_let_go_is_closed() -> None:
    """A reload removed the connection: its clients are closed, and counted as ended."""
    import os

    reactor = AdoptingReactor()
    link, _, _, transport = _connected(reactor=reactor)
    listener = link.listen("tcp:5432", ServedFactory())
    listener.stopListening()
    fd = _passed_descriptor()
    link.fileDescriptorReceived(fd)
    link.lineReceived(PASSED_LINE)
    assert reactor.adopted == []
    assert _sent(transport) == [{"op": "load", "taken": 1, "ended": 1, "lost": 0}]
    try:
        os.fstat(fd)
        raise AssertionError("the descriptor is still open")
    except OSError:
        pass


def test_a_reload_the_parent_asks_for_is_answered_with_its_result() -> None:
    from twisted.internet import defer

    from hoopgw.errors import ReloadError

    answers = iter(
        [defer.succeed({"added": ["pg2"]}), defer.fail(ReloadError("[gateway] changed"))]
    )
    asked: list[str] = []

    def reload(by: str) -> Any:
        asked.append(by)
        return next(answers)

    registry = SessionRegistry()
    link = ControlLink(registry, 2, Reactor(), reload=reload, digest=lambda: "sha256:2")
    transport = StringTransport()
    link.makeConnection(transport)
    link.lineReceived(b'{"op": "reload", "id": 4, "by": "SIGHUP"}')
    link.lineReceived(b'{"op": "reload", "id": 5, "by": "SIGHUP"}')
    assert asked == ["SIGHUP", "SIGHUP"]
    assert _sent(transport) == [
        # With the file it applied: the parent keeps every worker on one.
        {"op": "reloaded", "id": 4, "ok": True, "result": {"added": ["pg2"]}, "digest": "sha256:2"},
        {"op": "reloaded", "id": 5, "ok": False, "error": "[gateway] changed"},
    ]


def test_the_admin_worker_reloads_every_worker_through_the_parent() -> None:
    from hoopgw.errors import ReloadError

    link, _, _, transport = _connected(index=1)
    results: list[Any] = []
    link.reload_all("root (admin API)").addCallbacks(results.append, results.append)
    assert _sent(transport) == [{"op": "reload", "by": "root (admin API)"}]
    busy: list[Any] = []
    link.reload_all("root (admin API)").addErrback(busy.append)
    assert busy[0].check(ReloadError)  # one at a time
    link.lineReceived(b'{"op": "reload_result", "ok": true, "result": {"added": []}}')
    assert results == [{"added": []}]
    link.reload_all("root (admin API)").addErrback(results.append)
    link.lineReceived(b'{"op": "reload_result", "ok": false, "error": "invalid"}')
    assert results[1].check(ReloadError) and results[1].getErrorMessage() == "invalid"


def test_a_worker_publishes_its_metrics_when_they_change() -> None:
    from hoopgw.admin.metrics import GatewayMetrics

    clock = Reactor()
    registry = SessionRegistry()
    metrics = GatewayMetrics(sessions=registry)
    link = ControlLink(registry, 2, clock, metrics=metrics)
    transport = StringTransport()
    link.makeConnection(transport)
    link.publish_sessions(clock)
    published = [m for m in _sent(transport) if m["op"] == "metrics"]
    assert published and published[0]["worker"] == 2
    transport.clear()
    clock.advance(PUBLISH_INTERVAL)
    assert transport.value() == b""
    metrics.session_opened("pg", "postgres")
    clock.advance(PUBLISH_INTERVAL)
    [update] = _sent(transport)
    [sessions] = [f for f in update["families"] if f["name"] == "hoopgw_sessions"]
    assert ["hoopgw_sessions_total", {"connection": "pg", "protocol": "postgres"}, 1.0] in (
        sessions["samples"]
    )


def test_a_listener_taken_again_by_a_reload_serves_only_once_the_old_one_goes() -> None:
    """A reload renaming a connection listens on its address before it commits: the old
    listener keeps serving until it is let go, and keeps serving if the reload fails."""
    reactor = AdoptingReactor()
    link, _, _, _ = _connected(reactor=reactor)
    old, new = ServedFactory(), ServedFactory()
    kept = link.listen("tcp:5432", old)
    failed = link.listen("tcp:5432", new)
    failed.stopListening()  # the reload failed: the old one serves on
    taken = link.listen("tcp:5432", new)
    link.fileDescriptorReceived(_passed_descriptor())
    link.lineReceived(PASSED_LINE)
    kept.stopListening()  # the reload committed
    link.fileDescriptorReceived(_passed_descriptor())
    link.lineReceived(PASSED_LINE)
    assert [p.made_by for p in reactor.adopted] == [old, new] and taken.factory is new


class ResetReactor(Reactor):
    """Adopts as Twisted does for a client that reset before it was taken: its peer address
    cannot be read."""

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:
        import errno
        import os

        raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))


def test_a_client_gone_before_it_is_taken_is_closed_and_the_worker_serves_on() -> None:
    """The error stays in this line: out of it, it would close the control link (the worker
    would end with every session it serves) and the parent would pass the same client on."""
    import os

    reactor = ResetReactor()
    link, _, _, transport = _connected(reactor=reactor)
    link.listen("tcp:5432", ServedFactory())
    fd = _passed_descriptor()
    link.fileDescriptorReceived(fd)
    with capturedLogs() as logged:
        link.dataReceived(PASSED_LINE + b"\n")
    assert _sent(transport) == [{"op": "load", "taken": 1, "ended": 1, "lost": 0}]
    assert reactor.stops == 0 and not transport.disconnecting
    try:
        os.fstat(fd)
        raise AssertionError("the descriptor is still open")
    except OSError:
        pass
    assert [e["log_format"] for e in logged] == ["cannot serve a client passed for {listen}"]


def _bound_descriptor(path: str) -> int:
    """A descriptor as the parent passes one, whose local address is ``path`` (a UNIX
    socket's, as a client of a listener on ``unix:PATH`` has)."""
    import os
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    fd = os.dup(sock.fileno())
    sock.close()
    return fd


def _passed(description: str, fd: int) -> bytes:
    import socket

    with socket.socket(fileno=os.dup(fd)) as sock:
        local = repr(sock.getsockname())
    return json.dumps({"op": "connection", "listen": description, "local": local}).encode()


def test_a_descriptor_lost_on_the_way_leaves_no_client_on_another_listener(tmp_path: Any) -> None:
    """A worker out of descriptors loses one passed to it (the kernel drops it, MSG_CTRUNC).
    The next arrives with the end of the line of the lost one (Twisted hands descriptors over
    before the bytes they came with): served for that line, a client of listener B would be
    served with listener A's connection. It is closed instead, both clients count as taken
    and ended, so the parent closes its copies."""
    reactor = AdoptingReactor()
    link, _, _, transport = _connected(reactor=reactor)
    link.listen("unix:/run/a.sock", ServedFactory())
    link.listen("unix:/run/b.sock", ServedFactory())
    lost = _bound_descriptor(str(tmp_path / "a.sock"))
    second = _bound_descriptor(str(tmp_path / "b.sock"))
    line_a, line_b = _passed("unix:/run/a.sock", lost), _passed("unix:/run/b.sock", second)
    os.close(lost)
    link.dataReceived(line_a[:1])  # its descriptor was dropped
    link.fileDescriptorReceived(second)
    with capturedLogs():
        link.dataReceived(line_a[1:] + b"\n" + line_b[:1])
        link.dataReceived(line_b[1:] + b"\n")
    assert reactor.adopted == []
    assert _sent(transport)[-1] == {"op": "load", "taken": 2, "ended": 2, "lost": 2}
    try:
        os.fstat(second)
        raise AssertionError("the descriptor is still open")
    except OSError:
        pass
