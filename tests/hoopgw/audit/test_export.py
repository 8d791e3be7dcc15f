"""Tests for hoopgw.audit.export: the export schema, bounded memory, session facts and search.

The store is an in-memory fake that streams records like :meth:`Store.records`; no I/O.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from hoopgw.audit.chain import GENESIS_HASH, AuditRecord, record_hash, verify_chain
from hoopgw.audit.export import (
    FIELDS,
    SEARCH_FIELDS,
    CommandFilter,
    SessionDirectory,
    export_records,
    iso_time_precise,
    search_commands,
)
from hoopgw.records import AuditEntry
from hoopgw.store import SQLiteStore

T0 = 1_764_090_000.0  # 2025-11-25T17:00:00Z


class FakeStore:
    """Streams records built from ``(kind, session_id, time, data)``, chained like a store's;
    knows the sessions given to it for :meth:`get_session`."""

    def __init__(
        self, entries: list[tuple[str, str, float, dict[str, Any]]], sessions: Any = None
    ) -> None:
        self.records_kept = list(_chained(entries))
        self.sessions: dict[str, dict[str, Any]] = sessions or {}
        self.lookups: list[str] = []

    instance = ""  # a SQLite store's one chain

    def instances(self) -> list[str]:
        return [""]

    def chain(self, instance: str) -> FakeStore:
        assert instance == ""
        return self

    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        return (r for r in self.records_kept if r.seq > after_seq)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        self.lookups.append(session_id)
        return self.sessions.get(session_id)


def _chained(entries: Any, first_seq: int = 1) -> Iterator[AuditRecord]:
    prev = GENESIS_HASH
    for seq, (kind, session_id, time, data) in enumerate(entries, start=first_seq):
        digest = record_hash(
            seq=seq, kind=kind, session_id=session_id, time=time, data=data, prev_hash=prev
        )
        yield AuditRecord(
            seq=seq,
            kind=kind,
            session_id=session_id,
            time=time,
            data=data,
            prev_hash=prev,
            hash=digest,
        )
        prev = digest


def started(session: str, time: float, identity: str = "agent", **extra: Any) -> tuple:
    data = {
        "identity": identity,
        "groups": extra.pop("groups", ["agents"]),
        "connection": extra.pop("connection", "pg"),
        "started_at": time,
    }
    return ("session_started", session, time, data)


def received(session: str, time: float, seq: int, text: str) -> tuple:
    return ("command_received", session, time, {"seq": seq, "kind": "query", "text": text})


def decided(session: str, time: float, seq: int, verdict: str = "allow", **extra: Any) -> tuple:
    data = {"seq": seq, "verdict": verdict, "reason": "", "plugin": "", "rule": "", **extra}
    return ("command_decided", session, time, data)


def completed(session: str, time: float, seq: int, **extra: Any) -> tuple:
    data = {
        "seq": seq,
        "status": "ok",
        "rows": 1,
        "bytes": 10,
        "duration": 0.002,
        "error_code": None,
        "error_message": None,
        **extra,
    }
    return ("command_completed", session, time, data)


def closed(session: str, time: float) -> tuple:
    return ("session_closed", session, time, {"reason": "client closed"})


def one_session() -> list[tuple]:
    return [
        started("s1", T0),
        received("s1", T0 + 0.25, 1, "SELECT 1"),
        decided("s1", T0 + 0.25, 1),
        completed("s1", T0 + 0.5, 1, sample=[["1"]]),
        closed("s1", T0 + 1),
    ]


def export(store: Any, fmt: str = "jsonl", **kwargs: Any) -> str:
    stream = io.StringIO()
    export_records(store, stream, format=fmt, **kwargs)
    return stream.getvalue()


# -- the export schema -------------------------------------------------------------------------


def test_iso_time_precise_is_utc_with_microseconds():
    assert iso_time_precise(T0 + 0.25) == "2025-11-25T17:00:00.250000Z"


def test_jsonl_has_one_object_per_record_with_the_documented_fields():
    text = export(FakeStore(one_session()))

    lines = text.splitlines()
    assert len(lines) == 5 and text.endswith("\n")
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert tuple(first) == FIELDS
    assert first["schema"] == 2
    assert first["instance"] == ""  # a SQLite store's one chain
    assert first["record_format"] == 1  # FakeStore chains the way of format 1
    assert (first["seq"], first["kind"], first["session_id"]) == (1, "session_started", "s1")
    assert first["time"] == "2025-11-25T17:00:00.000000Z"
    assert first["posix_time"] == T0
    assert (second["identity"], second["connection"]) == ("agent", "pg")
    assert second["data"] == {"seq": 1, "kind": "query", "text": "SELECT 1"}
    assert second["prev_hash"] == first["hash"]


def test_an_export_can_be_verified_without_the_store():
    store = FakeStore(one_session())

    exported = [json.loads(line) for line in export(store).splitlines()]

    rebuilt = [
        AuditRecord(
            seq=d["seq"],
            kind=d["kind"],
            session_id=d["session_id"],
            time=d["posix_time"],
            data=d["data"],
            prev_hash=d["prev_hash"],
            hash=d["hash"],
        )
        for d in exported
    ]
    assert verify_chain(rebuilt).ok


def test_an_export_of_format_2_records_can_be_verified_from_its_lines(tmp_path):
    """Each line holds the exact data text a format 2 hash covers."""
    store = SQLiteStore(str(tmp_path / "a.db"))
    store.migrate()
    store.append(
        [
            AuditEntry(kind=kind, session_id=session, time=time, data=data)
            for kind, session, time, data in one_session()
        ]
    )
    lines = export(store).splitlines()
    store.close()
    rebuilt = []
    for line in lines:
        d = json.loads(line)
        assert d["record_format"] == 2
        # The data text as the line holds it, between "data": and ,"record_format":
        data_json = line[line.index(',"data":') + 8 : line.rindex(',"record_format":')]
        assert json.loads(data_json) == d["data"]
        rebuilt.append(
            AuditRecord(
                seq=d["seq"],
                kind=d["kind"],
                session_id=d["session_id"],
                time=d["posix_time"],
                data=d["data"],
                prev_hash=d["prev_hash"],
                hash=d["hash"],
                format=d["record_format"],
                data_json=data_json,
            )
        )
    assert verify_chain(rebuilt).ok
    rebuilt[1] = attrs.evolve(rebuilt[1], data_json=rebuilt[1].data_json.replace("1", "2"))
    assert verify_chain(rebuilt).first_bad_seq == 2


def test_csv_has_a_header_and_data_as_canonical_json():
    entries = one_session()
    entries[1] = received("s1", T0 + 0.25, 1, 'SELECT "a,b"\nFROM t')

    text = export(FakeStore(entries), "csv")

    assert text.startswith(",".join(FIELDS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 5
    assert rows[1]["data"] == '{"kind":"query","seq":1,"text":"SELECT \\"a,b\\"\\nFROM t"}'
    assert json.loads(rows[1]["data"])["text"] == 'SELECT "a,b"\nFROM t'
    assert (rows[1]["seq"], rows[1]["identity"], rows[1]["posix_time"]) == (
        "2",
        "agent",
        repr(T0 + 0.25),
    )


def test_since_and_until_keep_a_half_open_range_and_still_know_the_sessions():
    store = FakeStore(one_session())

    text = export(store, since=T0 + 0.25, until=T0 + 1)

    exported = [json.loads(line) for line in text.splitlines()]
    assert [d["seq"] for d in exported] == [2, 3, 4]
    assert {d["identity"] for d in exported} == {"agent"}
    assert store.lookups == []


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        export(FakeStore([]), "xml")


def test_progress_is_called_with_every_count():
    counts: list[int] = []

    export_records(FakeStore(one_session()), io.StringIO(), format="jsonl", progress=counts.append)

    assert counts == [1, 2, 3, 4, 5]


# -- bounded memory ------------------------------------------------------------------------------


class SyntheticStore:
    """Streams ``count`` records of sessions of 20 commands each, made on the fly."""

    def __init__(self, count: int) -> None:
        self.count = count

    instance = ""

    def chain(self, instance: str) -> SyntheticStore:
        return self

    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        per_session = 2 + 3 * 20
        for seq in range(after_seq + 1, self.count + 1):
            session = f"session-{(seq - 1) // per_session}"
            position = (seq - 1) % per_session
            if position == 0:
                kind, data = "session_started", {"identity": "agent", "connection": "pg"}
            elif position == per_session - 1:
                kind, data = "session_closed", {"reason": "client closed"}
            else:
                command, step = divmod(position - 1, 3)
                kind = ("command_received", "command_decided", "command_completed")[step]
                data = {"seq": command + 1, "text": f"SELECT {seq} FROM generate_series(1, 9)"}
            yield AuditRecord(
                seq=seq,
                kind=kind,
                session_id=session,
                time=T0 + seq / 1000,
                data=data,
                prev_hash="0" * 64,
                hash=f"{seq:064x}",
            )

    def get_session(self, session_id: str) -> None:
        raise AssertionError("every session is started in the stream")


class CountingSink(io.TextIOBase):
    """A text stream that keeps only how much was written."""

    def __init__(self) -> None:
        self.characters = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.characters += len(text)
        self.lines += text.count("\n")
        return len(text)


GROWTH_BOUND = 10 * 1024 * 1024
"""Bytes the resident memory of an export may grow by, whatever the number of records."""


def resident_bytes() -> int:
    """The process's resident set size now (not its high-water mark)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemorySampler:
    """A progress callback that samples resident memory every ``every`` records."""

    def __init__(self, *, warm_up: int = 2000, every: int = 2000) -> None:
        self.warm_up = warm_up
        self.every = every
        self.baseline = 0
        self.highest = 0

    def __call__(self, count: int) -> None:
        if count == self.warm_up:
            self.baseline = self.highest = resident_bytes()
        elif count > self.warm_up and count % self.every == 0:
            self.highest = max(self.highest, resident_bytes())

    @property
    def growth(self) -> int:
        return self.highest - self.baseline


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_of_100k_records_stays_within_a_fixed_memory_bound(fmt):
    sink = CountingSink()
    sampler = MemorySampler()

    written = export_records(SyntheticStore(100_000), sink, format=fmt, progress=sampler)

    assert written == 100_000
    assert sink.lines == 100_000 + (fmt == "csv")
    # The output alone is over 25 MB; the process grows by far less.
    assert sink.characters > 25_000_000
    assert sampler.growth < GROWTH_BOUND, f"grew by {sampler.growth} bytes"


def test_the_memory_sampler_sees_a_leak():
    leaked: list[bytes] = []
    sampler = MemorySampler()

    # 8 KiB of written (so resident) bytes per record, about 140 MiB after the warm-up: memory
    # that earlier tests freed but the process still holds cannot hide it (1 KiB could).
    for count in range(1, 20_001):
        leaked.append(b"x" * 8192)
        sampler(count)

    assert sampler.growth > 15 * 1024 * 1024


# -- session facts -------------------------------------------------------------------------------


def test_session_directory_looks_up_a_session_it_did_not_see_start_once():
    session = {"identity": "old", "groups": ["g"], "connection": "pg-old"}
    store = FakeStore([], sessions={"s0": session})
    directory = SessionDirectory(store)
    command = next(_chained([received("s0", T0, 1, "SELECT 1")]))

    first = directory.observe(command)
    again = directory.observe(command)

    assert (first.identity, first.groups, first.connection) == ("old", ("g",), "pg-old")
    assert again == first
    assert store.lookups == ["s0"]


def test_session_directory_remembers_an_unknown_session_as_unknown():
    store = FakeStore([])
    directory = SessionDirectory(store)
    command = next(_chained([received("gone", T0, 1, "SELECT 1")]))

    for _ in range(3):
        assert directory.observe(command).identity is None
    assert store.lookups == ["gone"]


def test_session_directory_keeps_at_most_its_capacity():
    entries = [started(f"s{i}", T0 + i) for i in range(10)]
    store = FakeStore(entries)
    directory = SessionDirectory(store, capacity=3)

    for record in store.records():
        directory.observe(record)

    assert directory.lookup("s9").identity == "agent"
    assert store.lookups == []
    directory.lookup("s0")
    assert store.lookups == ["s0"]


def test_records_without_a_session_have_no_identity():
    store = FakeStore([("pruned", "", T0, {"removed": 10})])

    [exported] = [json.loads(line) for line in export(store).splitlines()]

    assert (exported["identity"], exported["connection"]) == (None, None)
    assert store.lookups == []


# -- search --------------------------------------------------------------------------------------


def two_sessions() -> list[tuple]:
    return [
        started("s1", T0, "alice", groups=["dba"], connection="pg"),
        started("s2", T0 + 1, "bot", groups=["agents"], connection="pg-ro"),
        received("s1", T0 + 2, 1, "SELECT * FROM users"),
        received("s2", T0 + 3, 1, "DROP TABLE users"),
        decided("s2", T0 + 3, 1, "block", reason="no DROP", plugin="guardrails", rule="no-drop"),
        completed("s2", T0 + 3, 1, status="blocked", rows=None, error_code="42501"),
        decided("s1", T0 + 4, 1),
        completed("s1", T0 + 5, 1, rows=7),
        received("s1", T0 + 6, 2, "select count(*) from USERS"),
        closed("s1", T0 + 7),
        received("s2", T0 + 8, 2, "SELECT 2"),
    ]


def search(criteria: CommandFilter | None = None, limit: int = 100) -> list[dict[str, Any]]:
    return search_commands(FakeStore(two_sessions()), criteria or CommandFilter(), limit=limit)


def test_search_joins_each_command_newest_first():
    found = search()

    assert [(c["session_id"], c["command"]) for c in found] == [
        ("s2", 2),
        ("s1", 2),
        ("s2", 1),
        ("s1", 1),
    ]
    assert all(tuple(c) == SEARCH_FIELDS for c in found)
    blocked = found[2]
    assert blocked["record_seq"] == 4
    assert blocked["time"] == T0 + 3
    assert (blocked["identity"], blocked["groups"], blocked["connection"]) == (
        "bot",
        ["agents"],
        "pg-ro",
    )
    assert (blocked["verdict"], blocked["reason"], blocked["plugin"], blocked["rule"]) == (
        "block",
        "no DROP",
        "guardrails",
        "no-drop",
    )
    assert (blocked["status"], blocked["rows"], blocked["error_code"]) == ("blocked", None, "42501")
    assert (found[3]["status"], found[3]["rows"], found[3]["duration"]) == ("ok", 7, 0.002)


def test_search_reads_a_verdict_that_joined_the_completion():
    """An allowed command is recorded in two records: received, then completed with its
    verdict (the recording plugin's compact completion)."""
    store = FakeStore(
        [
            started("s1", T0),
            received("s1", T0 + 1, 1, "SELECT 1"),
            completed("s1", T0 + 2, 1, verdict="allow", reason="ok", plugin="p", rule=""),
            closed("s1", T0 + 3),
        ]
    )
    [found] = search_commands(store, CommandFilter(verdict="allow"), limit=10)
    assert (found["verdict"], found["reason"], found["plugin"], found["status"]) == (
        "allow",
        "ok",
        "p",
        "ok",
    )


def test_search_reports_commands_cut_off_by_the_session_end_or_the_store_end():
    found = {(c["session_id"], c["command"]): c for c in search()}

    assert (found["s1", 2]["verdict"], found["s1", 2]["status"]) == (None, None)
    assert (found["s2", 2]["verdict"], found["s2", 2]["status"]) == (None, None)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (CommandFilter(identity="alice"), [("s1", 2), ("s1", 1)]),
        (CommandFilter(group="agents"), [("s2", 2), ("s2", 1)]),
        (CommandFilter(connection="pg-ro"), [("s2", 2), ("s2", 1)]),
        (CommandFilter(session_id="s1"), [("s1", 2), ("s1", 1)]),
        (CommandFilter(verdict="block"), [("s2", 1)]),
        (CommandFilter(verdict="allow"), [("s1", 1)]),
        (CommandFilter(rule="no-drop"), [("s2", 1)]),
        (CommandFilter(since=T0 + 3, until=T0 + 8), [("s1", 2), ("s2", 1)]),
        (CommandFilter(text="users"), [("s1", 2), ("s2", 1), ("s1", 1)]),
        (CommandFilter(text="FROM USERS", identity="alice"), [("s1", 2), ("s1", 1)]),
        (CommandFilter(identity="nobody"), []),
    ],
)
def test_search_filters(criteria, expected):
    found = search(criteria)

    assert [(c["session_id"], c["command"]) for c in found] == expected


def test_search_limit_keeps_the_newest():
    found = search(limit=2)

    assert [(c["session_id"], c["command"]) for c in found] == [("s2", 2), ("s1", 2)]


# -- several gateway instances on one store -----------------------------------------------------


class SharedStore:
    """A PostgreSQL store's shape: one chain per instance, read through :meth:`chain`."""

    def __init__(self, chains: dict[str, list[tuple]], instance: str = "gw-a") -> None:
        self._chains = {
            name: [attrs.evolve(r, instance=name) for r in _chained(entries)]
            for name, entries in chains.items()
        }
        self.instance = instance

    def instances(self) -> list[str]:
        return sorted(self._chains)

    def chain(self, instance: str) -> SharedStore:
        other = SharedStore({}, instance)
        other._chains = self._chains
        return other

    def records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        return (r for r in self._chains.get(self.instance, []) if r.seq > after_seq)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        return None


def _two_instances() -> SharedStore:
    return SharedStore(
        {
            "gw-b": [
                started("b1", T0 + 1, identity="bob"),
                received("b1", T0 + 2, 1, "SELECT 'b'"),
                decided("b1", T0 + 2, 1),
                completed("b1", T0 + 3, 1),
            ],
            "gw-a": [
                started("a1", T0, identity="alice"),
                received("a1", T0 + 1.5, 1, "SELECT 'a'"),
                decided("a1", T0 + 1.5, 1),
                completed("a1", T0 + 1.6, 1),
                received("a1", T0 + 4, 2, "SELECT 'a2'"),
            ],
        }
    )


def test_an_export_of_a_shared_store_holds_every_chain_one_after_the_other():
    exported = [json.loads(line) for line in export(_two_instances()).splitlines()]
    assert [(d["instance"], d["seq"]) for d in exported] == [
        *(("gw-a", n) for n in range(1, 6)),
        *(("gw-b", n) for n in range(1, 5)),
    ]
    assert {d["identity"] for d in exported if d["instance"] == "gw-b"} == {"bob"}


def test_an_export_of_one_instance_holds_its_chain_only():
    exported = [json.loads(line) for line in export(_two_instances(), instance="gw-b").splitlines()]
    assert {d["instance"] for d in exported} == {"gw-b"} and len(exported) == 4


def test_an_export_of_an_unknown_instance_is_refused():
    from hoopgw.errors import HoopgwError

    with pytest.raises(HoopgwError, match=r"no audit chain of instance 'gw-c'.*'gw-a', 'gw-b'"):
        export(_two_instances(), instance="gw-c")


def test_search_of_a_shared_store_reads_every_chain_newest_first():
    found = search_commands(_two_instances(), CommandFilter(), limit=10)
    assert [(c["instance"], c["text"]) for c in found] == [
        ("gw-a", "SELECT 'a2'"),
        ("gw-b", "SELECT 'b'"),
        ("gw-a", "SELECT 'a'"),
    ]
    assert [c["identity"] for c in found] == ["alice", "bob", "alice"]
    only_b = search_commands(_two_instances(), CommandFilter(), limit=10, instance="gw-b")
    assert [c["text"] for c in only_b] == ["SELECT 'b'"]
    newest = search_commands(_two_instances(), CommandFilter(), limit=2)
    assert [c["text"] for c in newest] == ["SELECT 'a2'", "SELECT 'b'"]
