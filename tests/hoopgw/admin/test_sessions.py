"""Live sessions listed and ended through the admin API's session control, without a network:
who may see and end what, prefixes, and the audit record written before the session ends."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task

from hoopgw.admin.sessions import SESSION_TERMINATED_KIND, SessionControl
from hoopgw.approvals.common import ApprovalError
from hoopgw.errors import HeldStatement
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity
from hoopgw.testing import FakeAuditWriter, make_session

ROLES = {"admin": ("platform",), "auditor": ("security",)}
ADMIN = Identity(name="root", groups=frozenset({"platform"}))
AUDITOR = Identity(name="ann", groups=frozenset({"security"}))
AGENT = Identity(name="agent", groups=frozenset({"agents"}))


class _Live:
    def __init__(self, session_id: str, identity: str) -> None:
        self.session_info = make_session(identity=identity, session_id=session_id)
        self.identity = self.session_info.identity
        self.runtime: Any = None
        self.ended: list[str] = []

    def terminate(self, reason: str) -> None:
        self.ended.append(reason)


@pytest.fixture
def live() -> tuple[SessionControl, FakeAuditWriter, list[_Live]]:
    registry = SessionRegistry()
    sessions = [
        _Live("aaaaaaaa-0000-4000-8000-000000000001", "agent"),
        _Live("aaaaaaaa-1111-4000-8000-000000000002", "other"),
        _Live("bbbbbbbb-0000-4000-8000-000000000003", "agent"),
    ]
    for session in sessions:
        registry.add(session)  # type: ignore[arg-type]
    audit = FakeAuditWriter()
    clock = task.Clock()
    clock.advance(1_700_000_000)
    control = SessionControl(sessions=registry, audit=audit, roles=ROLES, clock=clock)
    return control, audit, sessions


def test_admins_and_auditors_see_every_session_others_their_own(live: Any) -> None:
    control, _, _ = live
    assert len(control.visible(ADMIN)) == 3
    assert len(control.visible(AUDITOR)) == 3
    mine = control.visible(AGENT)
    assert {s["identity"] for s in mine} == {"agent"}
    assert len(mine) == 2


def test_each_session_shows_the_review_its_statement_waits_for() -> None:
    registry = SessionRegistry()
    waiting, idle = (
        _Live("cccccccc-0000-4000-8000-000000000004", "agent"),
        _Live("cccccccc-1111-4000-8000-000000000005", "agent"),
    )
    registry.add(waiting)  # type: ignore[arg-type]
    registry.add(idle)  # type: ignore[arg-type]
    control = SessionControl(sessions=registry, audit=FakeAuditWriter(), roles=ROLES, clock=None)
    statement = HeldStatement(
        review_id="abc123def456", command_seq=4, approvers=("dba",), hold_until=99.0, reason="r"
    )
    registry.statement_held(waiting.session_info.id, statement)
    shown = {s["id"]: s["pending_review"] for s in control.visible(AGENT)}
    assert shown == {
        waiting.session_info.id: {
            "id": "abc123def456",
            "approvers": ["dba"],
            "hold_until": 99.0,
            "reason": "r",
        },
        idle.session_info.id: None,
    }
    registry.statement_released(waiting.session_info.id, "abc123def456")
    assert all(s["pending_review"] is None for s in control.visible(AGENT))


def test_an_admin_ends_a_session_by_unique_prefix_after_the_record(live: Any) -> None:
    control, audit, sessions = live
    audit.manual = True
    ended = control.terminate(ADMIN, "bbbbbbbb", "incident 42")
    assert sessions[2].ended == []  # not before the record is durable
    audit.flush()
    assert sessions[2].ended == ["ended by root: incident 42"]
    assert ended.result["id"] == sessions[2].session_info.id
    record = audit.records[-1]
    assert record.kind == SESSION_TERMINATED_KIND
    assert record.session_id == sessions[2].session_info.id
    assert record.data["by"] == "root"
    assert record.data["reason"] == "incident 42"


def test_a_store_that_cannot_write_leaves_the_session_running(live: Any) -> None:
    control, audit, sessions = live
    audit.failing = True
    ended = control.terminate(ADMIN, "bbbbbbbb", "")
    failure = ended.result
    ended.addErrback(lambda _: None)
    assert isinstance(failure.value, ApprovalError)
    assert failure.value.code == "internal"
    assert sessions[2].ended == []


@pytest.mark.parametrize(
    ("who", "prefix", "code"),
    [
        (AUDITOR, "bbbbbbbb", "forbidden"),
        (AGENT, "bbbbbbbb", "forbidden"),
        (ADMIN, "aaaaaaaa", "invalid"),  # two sessions start with it
        (ADMIN, "bbbb", "invalid"),  # too short to name a session
        (ADMIN, "cccccccc", "not_found"),
    ],
)
def test_refusals(live: Any, who: Identity, prefix: str, code: str) -> None:
    control, audit, sessions = live
    with pytest.raises(ApprovalError) as refused:
        control.terminate(who, prefix, "")
    assert refused.value.code == code
    assert all(s.ended == [] for s in sessions)
    assert audit.records == []


class _Peers:
    """Another worker's sessions, as its control link would report them."""

    def __init__(self, listed: list[tuple[int, dict[str, Any]]]) -> None:
        self.listed = listed
        self.ended: list[tuple[int, str, str]] = []

    def sessions(self) -> list[tuple[int, dict[str, Any]]]:
        return self.listed

    def terminate(self, worker: int, session_id: str, reason: str) -> None:
        self.ended.append((worker, session_id, reason))


def _peer_session(session_id: str, identity: str) -> dict[str, Any]:
    return {
        "pending_review": None,
        "id": session_id,
        "identity": identity,
        "connection": "pg",
        "protocol": "postgres",
        "client_address": "127.0.0.1:5000",
        "started_at": 1.0,
    }


def test_other_workers_sessions_are_listed_and_ended_through_them() -> None:
    registry = SessionRegistry()
    local = _Live("aaaaaaaa-0000-4000-8000-000000000001", "agent")
    registry.add(local)  # type: ignore[arg-type]
    remote_id = "dddddddd-0000-4000-8000-000000000009"
    peers = _Peers([(2, _peer_session(remote_id, "agent")), (2, _peer_session("e" * 8, "x"))])
    audit = FakeAuditWriter()
    audit.manual = True
    control = SessionControl(
        sessions=registry, audit=audit, roles=ROLES, clock=task.Clock(), peers=peers
    )
    assert {s["id"] for s in control.visible(AGENT)} == {remote_id, local.session_info.id}
    assert len(control.visible(ADMIN)) == 3
    shown = control.terminate(ADMIN, remote_id[:8], "incident 7")
    # Write-ahead: nothing is sent before the record is durable.
    assert peers.ended == []
    audit.flush()
    assert audit.kinds() == [SESSION_TERMINATED_KIND]
    assert audit.records[0].data["connection"] == "pg"
    assert peers.ended == [(2, remote_id, "ended by root: incident 7")]
    assert shown.result["id"] == remote_id  # type: ignore[attr-defined]
    assert local.ended == []


def test_a_prefix_naming_a_local_and_a_remote_session_is_ambiguous() -> None:
    registry = SessionRegistry()
    registry.add(_Live("aaaaaaaa-0000-4000-8000-000000000001", "agent"))  # type: ignore[arg-type]
    peers = _Peers([(2, _peer_session("aaaaaaaa-1111-4000-8000-000000000002", "agent"))])
    control = SessionControl(
        sessions=registry, audit=FakeAuditWriter(), roles=ROLES, clock=task.Clock(), peers=peers
    )
    with pytest.raises(ApprovalError, match="names 2 live sessions"):
        control.terminate(ADMIN, "aaaaaaaa", "")
