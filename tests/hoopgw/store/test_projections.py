"""Tests for the projections: a batch projects exactly as its records one by one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopgw.records import AuditEntry
from hoopgw.store import SQLiteStore

SESSIONS = st.sampled_from(["s1", "s2"])
SEQS = st.sampled_from([1, 2])
VERDICT = {"verdict": "allow", "reason": "", "plugin": "", "rule": ""}


def _started(session_id: str) -> AuditEntry:
    data = {"identity": "agent", "groups": ["g"], "connection": "pg", "started_at": 1.0}
    return AuditEntry(kind="session_started", session_id=session_id, time=1.0, data=data)


def _command(record_kind: str, session_id: str, seq: int, **data: object) -> AuditEntry:
    return AuditEntry(kind=record_kind, session_id=session_id, time=2.0, data={"seq": seq, **data})


RECORDS = st.one_of(
    st.builds(
        lambda sid, seq, text: _command("command_received", sid, seq, kind="query", text=text),
        SESSIONS,
        SEQS,
        st.sampled_from(["SELECT 1", "SELECT 2"]),
    ),
    st.builds(
        lambda sid, seq, verdict: _command(
            "command_decided", sid, seq, verdict=verdict, reason="r", plugin="p", rule="x"
        ),
        SESSIONS,
        SEQS,
        st.sampled_from(["block", "hold", "allow"]),
    ),
    st.builds(
        lambda sid, seq, status, with_verdict, rows: _command(
            "command_completed",
            sid,
            seq,
            **(VERDICT if with_verdict else {}),
            status=status,
            rows=rows,
            duration=0.5,
        ),
        SESSIONS,
        SEQS,
        st.sampled_from(["ok", "error"]),
        st.booleans(),
        st.integers(0, 3),
    ),
    SESSIONS.map(
        lambda sid: AuditEntry(
            kind="session_closed", session_id=sid, time=3.0, data={"reason": "client"}
        )
    ),
)


def _projections(store: SQLiteStore) -> tuple[list[tuple[object, ...]], ...]:
    conn = store._conn
    return (
        conn.execute("SELECT * FROM commands ORDER BY session_id, seq").fetchall(),
        conn.execute("SELECT * FROM sessions ORDER BY id").fetchall(),
    )


def _in_order(records: list[AuditEntry], received: set[tuple[str, object]]) -> list[AuditEntry]:
    """``records`` without the verdicts and completions of commands not received before them
    (the gateway sends a command's records in that order; a batch projects kind by kind)."""
    kept = []
    for record in records:
        key = (record.session_id, record.data.get("seq"))
        if record.kind == "command_received":
            received.add(key)
        elif record.kind != "session_closed" and key not in received:
            continue
        kept.append(record)
    return kept


@settings(max_examples=300, deadline=None)
@given(before=st.lists(RECORDS, max_size=4), batch=st.lists(RECORDS, max_size=12))
def test_a_batch_projects_exactly_as_its_records_one_by_one(before, batch):
    # Batches insert a command received and completed in the same batch whole, and apply a
    # completion's verdict with its outcome: what the tables hold must not change. (Sessions
    # start first: a batch counts the commands of a session started after them.)
    received: set[tuple[str, object]] = set()
    before, batch = _in_order(before, received), _in_order(batch, received)
    one_by_one, batched = SQLiteStore(":memory:"), SQLiteStore(":memory:")
    for store in (one_by_one, batched):
        store.migrate()
        store.append([_started("s1"), _started("s2")])
        for entry in before:
            store.append([entry])
    for entry in batch:
        one_by_one.append([entry])
    batched.append(batch)
    assert _projections(batched) == _projections(one_by_one)
