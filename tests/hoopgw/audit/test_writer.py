"""Tests for hoopgw.audit.writer: the hash chain, verify_chain and the AuditWriter.

The writer process is replaced by a fake that records the lines sent to it; the test answers
for it, and a task.Clock drives the lazy timer, so every step is deterministic. The process
itself is tested in test_audit_process.py.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3

import attrs
import pytest
from twisted.internet import error as net_error
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from hoopgw.audit.chain import (
    GENESIS_HASH,
    AuditRecord,
    Durability,
    DurabilityPeriod,
    PrunedRange,
    canonical_json,
    durability_entry,
    encode_data,
    exact_bytes,
    pruned_entry,
    record_hash,
    shown_text,
    verify_chain,
)
from hoopgw.audit.writer import (
    SIGNING_KEY_ENV,
    WRITER_INFO_PREFIX,
    AuditWriter,
    CheckpointSettings,
    decode_entry,
    encode_entry,
    spawn_writer_process,
)
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.secrets import Secret
from hoopgw.store import SQLiteStore


def entry(n=1, session_id="s1", **data):
    return AuditEntry(
        kind="command_received", session_id=session_id, time=float(n), data={"seq": n, **data}
    )


def results(d):
    out = []
    d.addBoth(out.append)
    return out


# -- the hash ----------------------------------------------------------------------------------


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})
    with pytest.raises(TypeError):
        canonical_json({"x": b"bytes"})


# -- texts that are not UTF-8 ------------------------------------------------------------------

LATIN1 = b"SELECT 'caf\xe9' -- \xff\\x41"
"""Statement bytes that are not UTF-8, as protocols hold them (``surrogateescape``)."""


def test_a_text_that_is_not_utf8_is_carried_as_its_exact_bytes():
    text = LATIN1.decode("utf-8", "surrogateescape")
    line = encode_entry(entry(1, text=text, details={"params": ["ok", text]}))
    line.decode("utf-8")  # the line itself is valid UTF-8
    data = decode_entry(line).data
    assert exact_bytes(data["text"]) == LATIN1
    assert exact_bytes(data["details"]["params"][1]) == LATIN1
    assert data["details"]["params"][0] == "ok"
    # People read it with the bytes that are not UTF-8 escaped.
    assert shown_text(data["text"]) == "SELECT 'caf\\xe9' -- \\xff\\x41"
    assert shown_text("plain") == "plain" and shown_text(None) == ""


def test_exact_bytes_are_in_the_hash_chain(tmp_path):
    """Stored, they verify; a changed byte breaks the chain."""
    store = SQLiteStore(str(tmp_path / "a.db"))
    store.migrate()
    text = LATIN1.decode("utf-8", "surrogateescape")
    store.append([decode_entry(encode_entry(entry(n, text=text))) for n in (1, 2)])
    records = list(store.records())
    assert [exact_bytes(r.data["text"]) for r in records] == [LATIN1, LATIN1]
    assert verify_chain(records).ok
    changed = base64.b64encode(LATIN1.replace(b"\xe9", b"\xe8")).decode()
    data = {**records[0].data, "text": {"$bytes": changed}}
    tampered = [attrs.evolve(records[0], data=data, data_json=encode_data(data))]
    assert not verify_chain([*tampered, records[1]]).ok
    store.close()


def test_a_writer_takes_a_text_that_is_not_utf8(running):
    written = results(
        running.writer.write(entry(1, text=LATIN1.decode("utf-8", "surrogateescape")))
    )
    running.answer("ok 1")
    assert written == [None]
    assert exact_bytes(decode_entry(running.process.lines[0]).data["text"]) == LATIN1


def test_record_hash_covers_every_field():
    fields = dict(seq=1, kind="k", session_id="s", time=1.5, data={"a": 1}, prev_hash=GENESIS_HASH)
    base = record_hash(**fields)
    assert len(base) == 64
    assert base == record_hash(**dict(fields))
    for name, other in [
        ("seq", 2),
        ("kind", "x"),
        ("session_id", "t"),
        ("time", 1.25),
        ("data", {"a": 2}),
        ("prev_hash", "1" * 64),
    ]:
        assert record_hash(**{**fields, name: other}) != base, name


# -- verify_chain on records -------------------------------------------------------------------


def chain(n):
    records, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        digest = record_hash(
            seq=seq, kind="k", session_id="s", time=float(seq), data={"n": seq}, prev_hash=prev
        )
        records.append(
            AuditRecord(
                seq=seq,
                kind="k",
                session_id="s",
                time=float(seq),
                data={"n": seq},
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    return records


def test_verify_intact_and_empty_chains():
    intact = verify_chain(chain(5))
    assert intact.ok and intact.checked == 5 and intact.first_bad_seq is None
    result = verify_chain([])
    assert result.ok and result.checked == 0 and result.first_bad_seq is None


def test_verify_reports_several_missing_records():
    records = chain(6)
    result = verify_chain(records[:1] + records[4:])
    assert not result.ok
    assert result.first_bad_seq == 2
    assert result.problem == "records 2 to 4 are missing"


def test_verify_reports_a_repeated_seq():
    records = chain(3)
    result = verify_chain([records[0], records[1], records[1]])
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "appears after record 2" in result.problem


# -- verify_chain after pruning ------------------------------------------------------------------


def extended(records, entry_):
    """``records`` plus ``entry_`` chained after them."""
    last = records[-1]
    seq = last.seq + 1
    digest = record_hash(
        seq=seq,
        kind=entry_.kind,
        session_id=entry_.session_id,
        time=entry_.time,
        data=entry_.data,
        prev_hash=last.hash,
    )
    record = AuditRecord(
        seq=seq,
        kind=entry_.kind,
        session_id=entry_.session_id,
        time=entry_.time,
        data=entry_.data,
        prev_hash=last.hash,
        hash=digest,
    )
    return [*records, record]


def pruning(records, last_seq, *, first_seq=1, now=99.0):
    return pruned_entry(
        first_seq=first_seq,
        last_seq=last_seq,
        last_hash=records[last_seq - 1].hash,
        older_than=float(last_seq) + 0.5,
        sessions_removed=2,
        now=now,
    )


def test_a_chain_whose_head_was_pruned_verifies_when_a_pruned_record_vouches():
    records = chain(6)
    records = extended(records, pruning(records, 3))
    result = verify_chain(records[3:])
    assert result.ok, result.problem
    assert (result.first_seq, result.last_seq, result.checked) == (4, 7, 4)
    assert result.last_hash == records[-1].hash
    assert result.pruned == (
        PrunedRange(
            first_seq=1,
            last_seq=3,
            last_hash=records[2].hash,
            older_than=3.5,
            sessions_removed=2,
            pruned_at=99.0,
            record_seq=7,
        ),
    )


def test_pruning_everything_leaves_the_pruned_record_alone_and_valid():
    records = chain(4)
    records = extended(records, pruning(records, 4))
    result = verify_chain(records[4:])
    assert result.ok and result.first_seq == result.last_seq == 5


def test_a_missing_head_without_a_pruned_record_is_detected():
    result = verify_chain(chain(6)[2:])
    assert not result.ok
    assert result.first_bad_seq == 1
    assert result.problem == "records 1 to 2 are missing and no pruned record accounts for them"


def test_a_pruned_record_vouches_only_for_exactly_its_range():
    records = chain(6)
    records = extended(records, pruning(records, 3))
    # Record 4 was deleted too, by hand: the pruned record speaks of 1 to 3 only.
    result = verify_chain(records[4:])
    assert not result.ok and result.first_bad_seq == 1
    assert "records 1 to 4 are missing" in result.problem


def test_a_pruned_record_naming_another_hash_does_not_vouch():
    records = chain(6)
    forged = pruned_entry(
        first_seq=1, last_seq=3, last_hash="f" * 64, older_than=1.0, sessions_removed=0, now=9.0
    )
    result = verify_chain(extended(records, forged)[3:])
    assert not result.ok and result.first_bad_seq == 1


def test_malformed_pruned_data_is_no_range():
    record = chain(1)[0]
    for data in ({}, {"first_seq": 1, "last_seq": "3"}, {"first_seq": 2, "last_seq": 1}):
        odd = attrs.evolve(record, kind="pruned", data=data)
        assert PrunedRange.from_record(odd) is None
    assert PrunedRange.from_record(record) is None


def periods(result):
    return [
        (p.durability and p.durability.mode, p.first_seq, p.last_seq, p.since, p.until)
        for p in result.durability
    ]


def test_verify_reports_which_durability_mode_covered_which_records():
    fsync, os_mode = Durability(), Durability(mode="os", sync_interval=0.02)
    records = chain(2)  # written before modes were recorded
    records = extended(records, durability_entry(fsync, now=3.0))
    records = extended(records, entry(4))
    records = extended(records, durability_entry(fsync, now=5.0))  # a restart, same mode
    records = extended(records, durability_entry(os_mode, now=6.0))
    records = extended(records, entry(7))
    result = verify_chain(records)
    assert result.ok
    assert periods(result) == [
        (None, 1, 2, 1.0, 2.0),
        ("fsync", 3, 5, 3.0, 5.0),
        ("os", 6, 7, 6.0, 7.0),
    ]
    assert result.durability[2].durability == os_mode


def test_a_chain_that_starts_with_its_mode_has_one_period(tmp_path):
    store = SQLiteStore(str(tmp_path / "a.db"))
    store.migrate()
    store.append([durability_entry(Durability(), now=1.0), entry(2), entry(3)])
    assert periods(verify_chain(store.records())) == [("fsync", 1, 3, 1.0, 3.0)]
    store.close()
    assert verify_chain([]).durability == ()


def test_a_pruned_record_carries_the_mode_of_the_first_remaining_records():
    os_mode = Durability(mode="os", sync_interval=0.02)
    records = extended(chain(4), durability_entry(os_mode, now=5.0))  # seq 5
    records = extended(records, entry(6))

    def pruned(durability):
        carried = pruned_entry(
            first_seq=1,
            last_seq=2,
            last_hash=records[1].hash,
            older_than=2.5,
            sessions_removed=0,
            now=7.0,
            durability=durability,
        )
        return verify_chain(extended(records, carried)[2:])

    result = pruned(os_mode)
    assert result.ok, result.problem
    assert result.pruned[0].durability == os_mode
    # Records 3 and 4 ran under the carried mode, like those after the mode record: one period.
    assert periods(result) == [("os", 3, 7, 3.0, 7.0)]
    # Without it they are "not recorded".
    assert periods(pruned(None)) == [(None, 3, 4, 3.0, 4.0), ("os", 5, 7, 5.0, 7.0)]
    # Carried "fsync" differs from the os period that follows: two periods.
    assert periods(pruned(Durability())) == [("fsync", 3, 4, 3.0, 4.0), ("os", 5, 7, 5.0, 7.0)]


@pytest.mark.parametrize(
    "data",
    [
        {"mode": "none", "sync_interval": 0.01},
        {"mode": "os"},
        {"mode": "os", "sync_interval": True},
    ],
)
def test_a_malformed_mode_record_announces_nothing(data):
    [record] = chain(1)
    assert (
        DurabilityPeriod.recorded(attrs.evolve(record, kind="audit_durability", data=data)) is None
    )


def test_a_broken_chain_reports_the_durability_up_to_the_last_intact_record():
    records = extended(chain(2), durability_entry(Durability(mode="os"), now=3.0))
    records = extended(records, entry(4))
    records[3] = attrs.evolve(records[3], data={"changed": True})
    assert periods(verify_chain(records)) == [(None, 1, 2, 1.0, 2.0), ("os", 3, 3, 3.0, 3.0)]


def test_a_broken_chain_reports_the_last_intact_record():
    records = chain(5)
    records[3] = attrs.evolve(records[3], data={"n": 0})
    result = verify_chain(records)
    assert (result.first_bad_seq, result.last_seq) == (4, 3)
    assert result.last_hash == records[2].hash


# -- verify_chain on a tampered SQLite file ------------------------------------------------------


@pytest.fixture
def tampered(tmp_path):
    """A store holding 6 records, and a raw connection to tamper with its file."""
    path = str(tmp_path / "audit.db")
    store = SQLiteStore(path)
    store.migrate()
    store.append([entry(n) for n in range(1, 7)])
    raw = sqlite3.connect(path, isolation_level=None)
    yield store, raw
    raw.close()
    store.close()


def test_verify_intact_store(tampered):
    store, _ = tampered
    result = verify_chain(store.records())
    assert result.ok
    assert result.checked == 6
    assert result.problem == ""


def test_verify_detects_a_changed_record(tampered):
    store, raw = tampered
    raw.execute("""UPDATE audit_records SET data = '{"seq":3,"text":"harmless"}' WHERE seq = 3""")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "changed" in result.problem


def test_verify_detects_a_changed_time(tampered):
    store, raw = tampered
    raw.execute("UPDATE audit_records SET time = time + 1 WHERE seq = 5")
    assert verify_chain(store.records()).first_bad_seq == 5


def test_verify_detects_a_removed_record(tampered):
    store, raw = tampered
    raw.execute("DELETE FROM audit_records WHERE seq = 4")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem == "record 4 is missing"


def test_verify_detects_a_removed_and_renumbered_record(tampered):
    store, raw = tampered
    raw.execute("DELETE FROM audit_records WHERE seq = 4")
    raw.execute("UPDATE audit_records SET seq = seq - 1 WHERE seq > 4")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4


def test_verify_detects_an_inserted_record(tampered):
    store, raw = tampered
    # A forger who knows the hash function makes a valid-looking record 3 and shifts the rest.
    prev = raw.execute("SELECT hash FROM audit_records WHERE seq = 2").fetchone()[0]
    data = {"seq": 99, "text": "forged"}
    digest = record_hash(
        seq=3, kind="command_received", session_id="s1", time=2.5, data=data, prev_hash=prev
    )
    for seq in range(6, 2, -1):
        raw.execute("UPDATE audit_records SET seq = seq + 1 WHERE seq = ?", (seq,))
    raw.execute(
        "INSERT INTO audit_records VALUES (3, 'command_received', 's1', 2.5, ?, ?, ?, '', 1)",
        (canonical_json(data), prev, digest),
    )
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.checked == 4


def test_verify_detects_reordered_records(tampered):
    store, raw = tampered
    raw.execute("UPDATE audit_records SET seq = -1 WHERE seq = 2")
    raw.execute("UPDATE audit_records SET seq = 2 WHERE seq = 3")
    raw.execute("UPDATE audit_records SET seq = 3 WHERE seq = -1")
    result = verify_chain(store.records())
    assert not result.ok
    assert result.first_bad_seq == 2


# -- AuditWriter ---------------------------------------------------------------------------------


class FakeProcess:
    """Stands in for the writer process's transport."""

    def __init__(self):
        self.lines = []
        self.stdin_closed = False

    def writeSequence(self, lines):
        assert not self.stdin_closed, "written after closeStdin"
        self.lines.extend(lines)

    def closeStdin(self):
        self.stdin_closed = True


class Parts:
    def __init__(self):
        self.clock = Clock()
        self.process = FakeProcess()
        self.protocol = None
        self.spawned_with = None
        self.writer = AuditWriter(
            "sqlite:///audit.db", self.clock, spawn=self.spawn, lazy_delay=0.5
        )

    def spawn(self, process_protocol, url, reactor):
        self.protocol, self.spawned_with = process_protocol, (url, reactor)
        return self.process

    def answer(self, *lines):
        for line in lines:
            self.protocol.outReceived(line.encode() + b"\n")

    def sent(self):
        return [decode_entry(line).data["seq"] for line in self.process.lines]

    def end(self, reason=None):
        self.protocol.processEnded(Failure(reason or net_error.ProcessDone(0)))


@pytest.fixture
def parts():
    return Parts()


@pytest.fixture
def running(parts):
    started = results(parts.writer.start())
    parts.answer("ready")
    assert started == [None]
    return parts


def test_start_spawns_the_writer_process_with_the_store_url(parts):
    started = results(parts.writer.start())
    assert parts.spawned_with == ("sqlite:///audit.db", parts.clock)
    assert started == []
    parts.answer("ready")
    assert started == [None]


def test_the_processs_information_is_logged_as_such_and_its_faults_as_errors(running):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        running.protocol.errReceived(
            f"{WRITER_INFO_PREFIX}appended 3 audit entries left in the journal\nchecksum".encode()
        )
        running.protocol.errReceived(b" failed\n")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [(e["log_level"], e["line"]) for e in logged if "line" in e] == [
        (LogLevel.info, "appended 3 audit entries left in the journal"),
        (LogLevel.error, "checksum failed"),
    ]


def test_start_twice_is_a_programming_error(running):
    with pytest.raises(RuntimeError):
        running.writer.start()


def test_start_fails_when_the_process_ends_before_ready(parts):
    started = results(parts.writer.start())
    parts.end(net_error.ProcessTerminated(1))
    assert started[0].check(StoreError)
    assert results(parts.writer.write(entry(1)))[0].check(StoreError)


def test_urgent_write_is_sent_at_once_and_fires_once_durable(running):
    done = results(running.writer.write(entry(1)))
    assert running.sent() == [1]
    assert done == []
    running.answer("ok 1")
    assert done == [None]


def test_one_answer_acknowledges_several_records_in_order(running):
    done = [results(running.writer.write(entry(n))) for n in (1, 2, 3)]
    running.answer("ok 2")
    assert done == [[None], [None], []]
    running.answer("ok 1")
    assert done[2] == [None]


def test_each_answer_reports_how_long_its_oldest_record_waited(running):
    waited = []
    running.writer.on_committed = waited.append
    running.writer.write(entry(1))
    running.clock.advance(0.004)
    running.writer.write(entry(2))
    running.clock.advance(0.001)
    running.answer("ok 1")
    running.clock.advance(0.002)
    running.answer("ok 1")
    assert waited == pytest.approx([0.005, 0.003])


def test_answers_split_anywhere_are_read_whole(running):
    done = [results(running.writer.write(entry(n))) for n in (1, 2)]
    for byte in b"ok 2\n":
        running.protocol.outReceived(bytes([byte]))
    assert done == [[None], [None]]


def test_store_error_fails_exactly_the_records_it_names(running):
    first = results(running.writer.write(entry(1)))
    second = results(running.writer.write(entry(2)))
    running.answer("error 1 disk I/O error")
    assert first[0].check(StoreError) and "disk I/O error" in first[0].getErrorMessage()
    assert second == []
    running.answer("ok 1")
    assert second == [None]


def test_lazy_write_waits_for_the_next_urgent_one(running):
    lazy = results(running.writer.write(entry(1), urgent=False))
    assert running.sent() == []
    urgent = results(running.writer.write(entry(2)))
    assert running.sent() == [1, 2]  # in order, in one send
    running.answer("ok 2")
    assert lazy == [None] and urgent == [None]
    # The lazy timer is left to run (armed once per lazy_delay, not once per record): it then
    # finds nothing to send.
    running.clock.advance(0.5)
    assert running.sent() == [1, 2]
    assert running.clock.getDelayedCalls() == []


def test_lazy_writes_arm_one_timer_per_lazy_delay(running):
    results(running.writer.write(entry(1), urgent=False))
    results(running.writer.write(entry(2)))
    running.clock.advance(0.3)
    results(running.writer.write(entry(3), urgent=False))  # the first timer is still running
    assert len(running.clock.getDelayedCalls()) == 1
    running.clock.advance(0.2)
    assert running.sent() == [1, 2, 3]  # sent when the first timer ran, 0.2 s after it was held


def test_submit_tells_its_callback_without_a_deferred(running):
    told = []
    running.writer.submit(entry(1), told.append)
    running.writer.submit(entry(2), told.append, urgent=False)
    running.clock.advance(0.5)
    running.answer("ok 1")
    assert told == [None]
    running.answer("error 1 disk I/O error")
    assert told[1].__class__ is StoreError and "disk I/O error" in str(told[1])


def test_a_callback_that_raises_does_not_stop_the_others(running):
    told = []

    def raises(error):
        raise RuntimeError("a careless caller")

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        running.writer.submit(entry(1), raises)
        running.writer.submit(entry(2), told.append)
        running.answer("ok 2")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert told == [None]
    [failure] = [e["log_failure"] for e in logged if "log_failure" in e]
    assert failure.check(RuntimeError)


def test_lazy_write_is_sent_after_lazy_delay(running):
    results(running.writer.write(entry(1), urgent=False))
    running.clock.advance(0.4)
    assert running.sent() == []
    running.clock.advance(0.1)
    assert running.sent() == [1]


def test_unserialisable_entry_fails_at_once(running):
    bad = AuditEntry(kind="x", session_id="s", time=1.0, data={"v": object()})
    [failure] = results(running.writer.write(bad))
    assert failure.check(StoreError)
    assert running.sent() == []


def test_write_before_start_fails(parts):
    assert results(parts.writer.write(entry(1)))[0].check(StoreError)


def test_stop_sends_what_is_held_then_closes_and_waits_for_the_process(running):
    lazy = results(running.writer.write(entry(1), urgent=False))
    stopped = results(running.writer.stop())
    assert running.sent() == [1] and running.process.stdin_closed
    assert stopped == []
    running.answer("ok 1")
    running.end()
    assert lazy == [None] and stopped == [None]
    assert results(running.writer.write(entry(2)))[0].check(StoreError)
    assert running.clock.getDelayedCalls() == []


def test_stop_before_start_does_nothing(parts):
    assert results(parts.writer.stop()) == [None]


def test_a_dying_process_fails_everything_pending_and_later(running):
    pending = results(running.writer.write(entry(1)))
    running.end(net_error.ProcessTerminated(9, signal=9))
    assert pending[0].check(StoreError)
    assert results(running.writer.write(entry(2)))[0].check(StoreError)


def test_a_garbled_answer_fails_closed(running):
    pending = results(running.writer.write(entry(1)))
    running.answer("hello")
    assert pending[0].check(StoreError)
    assert results(running.writer.write(entry(2)))[0].check(StoreError)


def test_entry_lines_round_trip():
    original = AuditEntry(kind="k", session_id="s", time=1.5, data={"t": "a\nb\tc", "n": [1]})
    line = encode_entry(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.count(b"\t") == 1
    decoded = decode_entry(line)
    assert (decoded.kind, decoded.session_id, decoded.time, decoded.data) == (
        "k",
        "s",
        1.5,
        original.data,
    )
    # The data text travels as it was serialised once, keys in their order: it is what the
    # store keeps and hashes.
    assert decoded.data_json == '{"t":"a\\nb\\tc","n":[1]}'
    assert line == b'["k","s",1.5]\t' + decoded.data_json.encode() + b"\n"


def test_a_line_of_an_older_gateway_still_decodes():
    """A journal left by a gateway before record format 2 holds JSON arrays."""
    old = b'["k","s",1.5,{"t":"x","n":[1]}]\n'
    decoded = decode_entry(old)
    assert (decoded.kind, decoded.session_id, decoded.time, decoded.data) == (
        "k",
        "s",
        1.5,
        {"t": "x", "n": [1]},
    )
    assert decoded.data_json == '{"t":"x","n":[1]}'


def test_a_session_id_that_is_not_utf8_is_refused_by_the_writer(running):
    bad = AuditEntry(kind="k", session_id="s\udcff", time=1.0, data={})
    assert results(running.writer.write(bad))[0].check(StoreError)


def test_record_hash_with_prepared_json_equals_the_canonical_document():
    data = {"text": "SELECT 'ü'", "seq": 3, "nested": {"b": 1, "a": [1.5, None]}}
    fields = dict(seq=7, kind="command_received", session_id="s", time=12.25, prev_hash="ab" * 32)
    document = canonical_json({**fields, "data": data})
    expected = hashlib.sha256(document.encode("utf-8")).hexdigest()
    assert record_hash(**fields, data=data) == expected
    assert record_hash(**fields, data=data, data_json=canonical_json(data)) == expected


# -- spawning the writer process -------------------------------------------------------------------


class SpawningReactor:
    def spawnProcess(self, protocol, executable, args, env, childFDs):
        self.args, self.env = args, env
        return "process"


def test_spawn_without_checkpoints_passes_no_key(monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, "stale")
    reactor = SpawningReactor()
    spawn_writer_process(None, "sqlite:///a.db", reactor)
    assert reactor.args[1:] == [
        "-m",
        "hoopgw.audit.process",
        "sqlite:///a.db",
        "--durability",
        "fsync",
        "--sync-interval",
        "0.01",
    ]
    assert SIGNING_KEY_ENV not in reactor.env


def test_spawn_passes_the_durability_mode():
    reactor = SpawningReactor()
    durability = Durability(mode="os", sync_interval=0.25)
    spawn_writer_process(None, "sqlite:///a.db", reactor, durability=durability)
    assert reactor.args[4:8] == ["--durability", "os", "--sync-interval", "0.25"]


def test_spawn_with_checkpoints_passes_the_key_in_the_environment_only():
    reactor = SpawningReactor()
    settings = CheckpointSettings(
        directory="/var/lib/cp",
        every=10,
        interval=2.5,
        signing_key=Secret(reference="file:k.pem", value="PEM-TEXT"),
    )
    spawn_writer_process(None, "sqlite:///a.db", reactor, checkpoints=settings)
    assert reactor.args[8:] == [
        "--checkpoint-dir",
        "/var/lib/cp",
        "--checkpoint-every",
        "10",
        "--checkpoint-interval",
        "2.5",
    ]
    assert "PEM-TEXT" not in " ".join(reactor.args)
    assert reactor.env[SIGNING_KEY_ENV] == "PEM-TEXT"


@pytest.mark.parametrize("answer", ["ok 2", "ok five", "ok 1 5", "error 3 disk full", "ok 0"])
def test_an_answer_that_does_not_fit_what_was_sent_fails_closed(running, answer):
    pending = results(running.writer.write(entry(1)))
    running.answer(answer)
    assert pending[0].check(StoreError)
    assert results(running.writer.write(entry(2)))[0].check(StoreError)
