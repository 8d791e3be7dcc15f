"""The approval services' test world, shared by test_reviews.py and test_grants.py: identities,
connections, a fake live session, and both services on a Clock, an in-memory store and the
fake audit writer.

Loaded by tests/conftest.py as ``hoopgw_tests_approvals_world`` (tests are no package).
"""

from __future__ import annotations

from typing import Any

import attrs
from hoopgw_tests_slow_pool import ImmediateReactor, SlowPool
from twisted.internet import defer, task
from twisted.python.failure import Failure

from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.connection import ConnectionConfig, CredentialConfig
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity
from hoopgw.store.calls import StoreCalls
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeAuditWriter

ALICE = Identity(name="alice", groups=frozenset({"dba"}))
BOB = Identity(name="bob", groups=frozenset({"dba"}))
EVE = Identity(name="eve", groups=frozenset({"agents"}))
AUDITOR = Identity(name="dave", groups=frozenset({"audit"}))
AGENT = Identity(name="agent", groups=frozenset({"agents"}))


def connection(name: str = "test", **overrides: Any) -> ConnectionConfig:
    """A PostgreSQL connection for the agents group."""
    return ConnectionConfig(
        name=name,
        protocol="postgres",
        listen="tcp:0",
        target="127.0.0.1:5432",
        credential=CredentialConfig(user="postgres"),
        allow_groups=("agents",),
        **overrides,
    )


@attrs.define(eq=False)
class FakeLive:
    """A live session: who, on which connection, and why it was ended."""

    identity: Identity | None
    runtime: Any
    session: Any = None
    ended: list[str] = attrs.Factory(list)

    def terminate(self, reason: str) -> None:
        self.ended.append(reason)


@attrs.define
class World:
    """The services and what they act on."""

    clock: task.Clock
    store: SQLiteStore
    audit: FakeAuditWriter
    sessions: SessionRegistry
    service: ReviewService
    grants: GrantService
    events: list[tuple[str, str]]

    def result(self, d: defer.Deferred[Any]) -> Any:
        """What ``d`` has fired with, or None while it waits."""
        box: list[Any] = []

        def keep(result: Any) -> Any:
            box.append(result)
            return result

        d.addBoth(keep)
        return box[0] if box else None

    def sync(self, d: defer.Deferred[Any]) -> Any:
        """What ``d`` has fired with; what it failed with is raised (it must have fired)."""
        result = self.result(d)
        assert d.called
        if isinstance(result, Failure):
            d.addErrback(lambda _: None)
            result.raiseException()
        return result


def slow_calls() -> tuple[StoreCalls, SlowPool]:
    """Store calls on a :class:`SlowPool` (as with a PostgreSQL store)."""
    pool = SlowPool()
    calls = StoreCalls(ImmediateReactor(), pool=pool)  # type: ignore[arg-type]
    calls.start()
    return calls, pool


def make_world(calls: StoreCalls | None = None) -> World:
    """A review service and a grant service on one in-memory store, a Clock and the fake
    audit writer; connection ``test`` (groups) and ``jit`` (just-in-time, approved by leads);
    ``calls`` runs their store calls (at once when None)."""
    clock = task.Clock()
    clock.advance(1_000_000)
    store = SQLiteStore(":memory:")
    store.migrate()
    audit = FakeAuditWriter()
    sessions = SessionRegistry()
    jit = connection("jit", access="jit", jit_approvers=("leads",), jit_max_duration=3600.0)
    roles = {"approver": ("dba",), "auditor": ("audit",), "admin": ("ops",)}
    grants = GrantService(
        store=store,
        audit=audit,  # type: ignore[arg-type]
        reactor=clock,
        connections={"test": connection(), "jit": jit},
        roles=roles,
        sessions=sessions,
        calls=calls,
    )
    service = ReviewService(
        store=store,
        audit=audit,  # type: ignore[arg-type]
        reactor=clock,
        grants=grants,
        roles=roles,
        sessions=sessions,
        approval_timeout=300,
    )
    events: list[tuple[str, str]] = []
    service.add_notifier("test", lambda review, event: events.append((review.id, event)))
    return World(clock, store, audit, sessions, service, grants, events)


def runtime(name: str) -> Any:
    """What a live session's ``runtime`` gives the services: the connection's config."""

    @attrs.define
    class Runtime:
        config: Any

    return Runtime(config=connection(name))
