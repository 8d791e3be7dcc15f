"""Tests for the recording plugin, with a fake AuditWriter and with a real one on SQLite."""

from __future__ import annotations

import pytest
from hoopgw_recording import DECISION_WAIT, REFUSED, SAMPLE_VALUE_CHARS, RecordingPlugin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher

from hoopgw.audit.chain import AuditRecord, verify_chain
from hoopgw.audit.writer import AuditWriter
from hoopgw.errors import ConfigError, StoreError
from hoopgw.plugin import PluginContext, hookimpl, validate_options
from hoopgw.runtime.chain import WITHDRAWN, PluginChain
from hoopgw.session import (
    Column,
    Command,
    CommandOutcome,
    ConnectionInfo,
    Identity,
    Output,
    SessionInfo,
)
from hoopgw.store import SQLiteStore
from hoopgw.testing import InlineWriterProcess
from hoopgw.verdicts import Allow, Block, Hold

CONNECTION = ConnectionInfo(name="pg", protocol="postgres", target="db:5432")
SESSION = SessionInfo(
    id="sess-1",
    connection=CONNECTION,
    identity=Identity(
        name="agent", groups=frozenset({"ci", "agents"}), credential_id="0123456789ab"
    ),
    client_address="127.0.0.1:5000",
    client_tls=True,
    upstream_tls=False,
    started_at=50.0,
    attributes={"database": "app", "application_name": "psql"},
)
SELECT = Command(session_id="sess-1", seq=1, text="SELECT name FROM users", kind="query")
PARSE = Command(
    session_id="sess-1",
    seq=2,
    text="SELECT $1",
    kind="parse",
    parameter_count=1,
    statement_name="s1",
)


class FakeWriter:
    """Collects writes; the test decides when each becomes durable or fails."""

    def __init__(self):
        self.writes = []
        self.urgent = []

    def write(self, entry, *, urgent=True):
        d = defer.Deferred()
        self.writes.append((entry, d))
        self.urgent.append(urgent)
        return d

    def submit(self, entry, then, *, urgent=True):
        self.write(entry, urgent=urgent).addCallbacks(
            lambda _: then(None), lambda failure: then(failure.value)
        )

    @property
    def kinds(self):
        return [entry.kind for entry, _ in self.writes]

    def make_durable(self):
        for n, (entry, d) in enumerate(self.writes, start=1):
            if not d.called:
                d.callback(
                    AuditRecord(
                        seq=n,
                        kind=entry.kind,
                        session_id=entry.session_id,
                        time=entry.time,
                        data=entry.data,
                        prev_hash="p",
                        hash="h",
                    )
                )

    def fail(self):
        for _, d in self.writes:
            if not d.called:
                d.errback(StoreError("database or disk is full"))


def make_plugin(audit, *, sample_rows=0, clock=None):
    options = validate_options(
        "recording", RecordingPlugin.options, {"sample_rows": sample_rows}, connection="pg"
    )
    context = PluginContext(
        connection=CONNECTION,
        options=options,
        audit=audit,
        log=Logger(namespace="test.recording"),
        reactor=clock or Clock(),
    )
    return RecordingPlugin(context)


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def writer():
    return FakeWriter()


# -- options ---------------------------------------------------------------------------------------


def test_sample_rows_defaults_to_none():
    assert validate_options("recording", RecordingPlugin.options, {}, connection="pg") == {
        "sample_rows": 0,
        "http_body_chars": 65536,
    }


@pytest.mark.parametrize("value", [-1, 1001, True, "5"])
def test_bad_sample_rows_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"recording\.sample_rows"):
        validate_options(
            "recording", RecordingPlugin.options, {"sample_rows": value}, connection="pg"
        )


# -- write-ahead decisions -------------------------------------------------------------------------


def test_session_started_answers_once_durable(writer):
    plugin = make_plugin(writer, clock=Clock())
    answer = fired(plugin.session_started(SESSION))
    assert answer == []
    [(entry, _)] = writer.writes
    assert entry.kind == "session_started"
    assert entry.session_id == "sess-1"
    assert entry.data == {
        "identity": "agent",
        "groups": ["agents", "ci"],
        "method": "api-key",
        "credential_id": "0123456789ab",
        "client_address": "127.0.0.1:5000",
        "connection": "pg",
        "protocol": "postgres",
        "target": "db:5432",
        "client_tls": True,
        "upstream_tls": False,
        "started_at": 50.0,
        "attributes": {"database": "app", "application_name": "psql"},
    }
    writer.make_durable()
    assert answer == [None]


def test_client_command_answers_once_durable(writer):
    clock = Clock()
    clock.advance(123)
    plugin = make_plugin(writer, clock=clock)
    answer = fired(plugin.client_command(SESSION, PARSE))
    assert answer == []
    [(entry, _)] = writer.writes
    assert entry.kind == "command_received"
    assert entry.time == 123
    assert entry.data == {
        "seq": 2,
        "kind": "parse",
        "text": "SELECT $1",
        "parameter_count": 1,
        "statement_name": "s1",
    }
    writer.make_durable()
    assert answer == [None]


@pytest.mark.parametrize("hook", ["session_started", "client_command"])
def test_store_failure_blocks(writer, hook):
    plugin = make_plugin(writer)
    args = (SESSION,) if hook == "session_started" else (SESSION, SELECT)
    answer = fired(getattr(plugin, hook)(*args))
    writer.fail()
    assert answer == [Block(reason=REFUSED)]


def test_writer_refusing_at_once_blocks():
    class StoppedWriter:
        def submit(self, entry, then, *, urgent=True):
            then(StoreError("audit writer is stopped"))

    plugin = make_plugin(StoppedWriter())
    assert fired(plugin.client_command(SESSION, SELECT)) == [Block(reason=REFUSED)]


def test_without_an_audit_writer_everything_is_refused():
    plugin = make_plugin(None)
    assert fired(plugin.session_started(SESSION)) == [Block(reason=REFUSED)]
    assert fired(plugin.client_command(SESSION, SELECT)) == [Block(reason=REFUSED)]
    plugin.session_closed(SESSION, "client closed")  # observers do not raise


# -- through the chain -----------------------------------------------------------------------------


def chain_of(*plugins, clock=None):
    return PluginChain(list(plugins), reactor=clock or Clock())


def test_command_is_not_decided_before_its_record_is_durable(writer):
    chain = chain_of(("recording", make_plugin(writer)))
    verdict = fired(chain.decide_command(SESSION, SELECT))
    assert writer.kinds == ["command_received"]
    assert verdict == []
    writer.make_durable()
    assert verdict == [Allow()]
    # An allowed command's verdict waits for its completion record.
    assert writer.kinds == ["command_received"]


def test_a_refusal_reaches_the_client_only_once_its_decision_is_recorded(writer):
    class Refuses:
        @hookimpl
        def client_command(self, command):
            return Block(reason="no", rule="r1")

    chain = chain_of(("recording", make_plugin(writer)), ("guard", Refuses()))
    verdict = fired(chain.decide_command(SESSION, SELECT))
    writer.writes[0][1].callback(None)  # command_received in the journal
    assert writer.kinds == ["command_received", "command_decided"]
    assert verdict == []  # the decision's record is not in the journal yet
    writer.make_durable()
    assert [v.reason for v in verdict] == ["no"]


def test_chain_blocks_when_the_store_fails(writer):
    chain = chain_of(("recording", make_plugin(writer)))
    verdict = fired(chain.decide_command(SESSION, SELECT))
    writer.fail()
    assert verdict == [Block(reason=REFUSED, plugin="recording")]
    decided = writer.writes[-1][0]
    assert decided.kind == "command_decided"
    assert decided.data["verdict"] == "block"
    assert decided.data["plugin"] == "recording"


def test_a_command_cancelled_while_its_record_is_written_is_withdrawn_quietly(writer):
    """The client cancels (or leaves) while the command waits for its record: the verdict is
    the chain's "withdrawn", the record still becomes durable, and nothing is logged as a
    failure of the store."""
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        chain = chain_of(("recording", make_plugin(writer)))
        decision = chain.decide_command(SESSION, SELECT)
        outcome = fired(decision)
        decision.cancel()
        writer.make_durable()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert outcome[0].check(defer.CancelledError)
    decided = writer.writes[-1][0]
    assert decided.kind == "command_decided"
    assert (decided.data["verdict"], decided.data["reason"]) == ("block", WITHDRAWN)
    assert [e for e in logged if e.get("log_level") in (LogLevel.error, LogLevel.critical)] == []


def test_session_refused_when_the_store_fails(writer):
    chain = chain_of(("recording", make_plugin(writer)))
    verdict = fired(chain.decide("session_started", session=SESSION))
    writer.fail()
    assert verdict == [Block(reason=REFUSED, plugin="recording")]


# -- observers -------------------------------------------------------------------------------------


def test_each_observer_writes_exactly_one_record_without_waiting(writer):
    chain = chain_of(("recording", make_plugin(writer)))
    chain.notify(
        "command_decided",
        session=SESSION,
        command=SELECT,
        verdict=Block(reason="no", plugin="guardrails", rule="r7"),
    )
    chain.notify(
        "command_completed",
        session=SESSION,
        command=SELECT,
        outcome=CommandOutcome(
            status="error",
            rows=0,
            bytes=10,
            duration=0.25,
            error_code="42501",
            error_message="denied",
        ),
    )
    chain.notify("session_closed", session=SESSION, reason="client closed")
    assert writer.kinds == ["command_decided", "command_completed", "session_closed"]
    decided, completed, closed = (entry.data for entry, _ in writer.writes)
    assert decided == {
        "seq": 1,
        "verdict": "block",
        "reason": "no",
        "plugin": "guardrails",
        "rule": "r7",
    }
    assert completed == {
        "seq": 1,
        "status": "error",
        "rows": 0,
        "bytes": 10,
        "duration": 0.25,
        "error_code": "42501",
        "error_message": "denied",
    }
    assert closed == {"reason": "client closed"}


def test_allow_and_hold_verdict_names(writer):
    plugin = make_plugin(writer)
    plugin.command_decided(SESSION, SELECT, Allow(reason="ok", plugin="p"))
    plugin.command_decided(SESSION, PARSE, Hold(reason="wait", rule="h1"))
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok"))
    assert [(e.kind, e.data["verdict"], e.data["rule"]) for e, _ in writer.writes] == [
        ("command_decided", "hold", "h1"),
        ("command_completed", "allow", ""),
    ]


# -- one compact record per allowed command ----------------------------------------------------


def test_an_allowed_commands_verdict_joins_its_completion(writer):
    plugin = make_plugin(writer)
    plugin.command_decided(SESSION, SELECT, Allow(reason="ok", plugin="p"))
    assert writer.kinds == []
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok", rows=1, bytes=5))
    [(completed, _)] = writer.writes
    assert completed.kind == "command_completed"
    assert completed.data == {
        "seq": 1,
        "verdict": "allow",
        "reason": "ok",
        "plugin": "p",
        "rule": "",
        "status": "ok",
        "rows": 1,
        "bytes": 5,
        "duration": 0.0,
        "error_code": "",
        "error_message": "",
    }
    assert writer.urgent == [False]


def test_a_refusal_is_recorded_at_once_in_its_own_record(writer):
    plugin = make_plugin(writer)
    plugin.command_decided(SESSION, SELECT, Block(reason="no", plugin="g", rule="r1"))
    assert writer.kinds == ["command_decided"]
    assert writer.urgent == [True]  # sent at once, not held for a later commit
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="blocked"))
    assert writer.kinds == ["command_decided", "command_completed"]
    assert "verdict" not in writer.writes[1][0].data


def test_a_command_still_running_gets_its_verdict_recorded_on_its_own():
    clock = Clock()
    writer = FakeWriter()
    plugin = make_plugin(writer, clock=clock)
    clock.advance(10)
    plugin.command_decided(SESSION, SELECT, Allow())
    clock.advance(DECISION_WAIT / 2)
    plugin.command_decided(SESSION, PARSE, Allow())
    clock.advance(DECISION_WAIT / 2)
    # The first is due, the second not yet.
    [(decided, _)] = writer.writes
    assert (decided.kind, decided.time, decided.data["seq"]) == ("command_decided", 10.0, 1)
    assert decided.data["verdict"] == "allow"
    plugin.command_completed(SESSION, PARSE, CommandOutcome(status="ok"))
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok"))
    assert writer.kinds == ["command_decided", "command_completed", "command_completed"]
    assert writer.writes[1][0].data["verdict"] == "allow"  # PARSE: joined
    assert "verdict" not in writer.writes[2][0].data  # SELECT: recorded already
    clock.advance(DECISION_WAIT)
    assert len(writer.writes) == 3
    assert clock.getDelayedCalls() == []


def test_a_verdict_left_at_the_end_of_a_session_is_recorded_before_it_closes(writer):
    plugin = make_plugin(writer)
    plugin.command_decided(SESSION, SELECT, Allow())
    plugin.session_closed(SESSION, "client closed")
    assert writer.kinds == ["command_decided", "session_closed"]


def test_observer_write_failure_is_logged_not_raised(writer):
    plugin = make_plugin(writer)
    plugin.session_closed(SESSION, "client closed")
    writer.fail()  # no unhandled error in the Deferred, no exception


# -- row samples -----------------------------------------------------------------------------------


class Masker:
    @hookimpl
    def server_rows(self, rows):
        for row in rows:
            row[0] = b"***"


COLUMNS = [Column("name"), Column("blob", format=1), Column("note")]


def test_no_row_hook_without_sampling(writer):
    assert not chain_of(("recording", make_plugin(writer))).has_row_hooks
    assert chain_of(("recording", make_plugin(writer, sample_rows=2))).has_row_hooks


def test_sample_keeps_what_the_client_saw(writer):
    recording = make_plugin(writer, sample_rows=3)
    # recording listed first: the wrapper still sees the rows after masking
    chain = chain_of(("recording", recording), ("masking", Masker()))
    batches = [
        [[b"alice", b"\x00\xff", None], [b"bob", b"\x01", b"caf\xc3\xa9"]],
        [[b"carol", b"", b"bad \xff"], [b"dave", b"", b"x"]],
        [[b"erin", b"", b"y"]],
    ]
    for rows in batches:
        chain.hook.server_rows(session=SESSION, command=SELECT, columns=COLUMNS, rows=rows)
    assert batches[0][0][0] == b"***"
    recording.command_completed(SESSION, SELECT, CommandOutcome(status="ok", rows=5))
    [(entry, _)] = writer.writes
    assert entry.data["sample"] == [
        ["***", "00ff", None],
        ["***", "01", "café"],
        ["***", "", "bad \ufffd"],
    ]


def test_sample_values_are_cut(writer):
    plugin = make_plugin(writer, sample_rows=1)
    rows = [[b"x" * 1000, b"y"]]
    chain = chain_of(("recording", plugin))
    chain.hook.server_rows(session=SESSION, command=SELECT, columns=[Column("a")], rows=rows)
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok"))
    [value, beyond_columns] = writer.writes[0][0].data["sample"][0]
    assert len(value) == SAMPLE_VALUE_CHARS and value.endswith("…")
    assert beyond_columns == "y"


def test_sample_is_empty_for_a_command_without_rows(writer):
    plugin = make_plugin(writer, sample_rows=2)
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok"))
    assert writer.writes[0][0].data["sample"] == []


def test_samples_are_per_command_and_dropped_with_the_session(writer):
    plugin = make_plugin(writer, sample_rows=5)
    chain = chain_of(("recording", plugin))
    chain.hook.server_rows(session=SESSION, command=SELECT, columns=COLUMNS[:1], rows=[[b"1"]])
    chain.hook.server_rows(session=SESSION, command=PARSE, columns=COLUMNS[:1], rows=[[b"2"]])
    plugin.command_completed(SESSION, PARSE, CommandOutcome(status="ok"))
    assert writer.writes[0][0].data["sample"] == [["2"]]
    plugin.session_closed(SESSION, "client closed")
    assert plugin._samples == {}


# -- with the real writer and store ----------------------------------------------------------------


def test_a_whole_session_in_sqlite(tmp_path):
    path = str(tmp_path / "audit.db")

    def open_migrated():
        store = SQLiteStore(path)
        store.migrate()
        return store

    reactor = Clock()
    audit = AuditWriter("sqlite:///unused", reactor, spawn=InlineWriterProcess(open_migrated).spawn)
    audit.start()
    plugin = make_plugin(audit, sample_rows=1, clock=reactor)
    chain = chain_of(("recording", plugin), clock=reactor)

    started = fired(chain.decide("session_started", session=SESSION))
    assert started == [None]

    verdict = fired(chain.decide_command(SESSION, SELECT))
    assert verdict == [Allow()]
    chain.hook.server_rows(
        session=SESSION, command=SELECT, columns=COLUMNS[:1], rows=[[b"alice"], [b"bob"]]
    )
    reactor.advance(2)
    chain.notify(
        "command_completed",
        session=SESSION,
        command=SELECT,
        outcome=CommandOutcome(status="ok", rows=2, bytes=20, duration=0.1),
    )
    chain.notify("session_closed", session=SESSION, reason="client closed")
    stopped = fired(audit.stop())
    assert stopped == [None]

    store = SQLiteStore(path)
    try:
        assert [r.kind for r in store.records()] == [
            "session_started",
            "command_received",
            "command_decided",
            "command_completed",
            "session_closed",
        ]
        assert verify_chain(store.records()).ok
        session = store.get_session("sess-1")
        assert session["identity"] == "agent"
        assert session["end_reason"] == "client closed"
        assert session["ended_at"] == 2.0
        [command] = session["commands"]
        assert command["text"] == "SELECT name FROM users"
        assert command["verdict"] == "allow"
        assert command["status"] == "ok"
        assert command["rows"] == 2
        assert command["sample"] == [["alice"]]
    finally:
        store.close()


def test_only_write_ahead_records_ask_for_their_own_commit(writer):
    plugin = make_plugin(writer)
    plugin.session_started(SESSION)
    plugin.client_command(SESSION, SELECT)
    plugin.command_decided(SESSION, SELECT, Allow())
    plugin.command_completed(SESSION, SELECT, CommandOutcome(status="ok"))
    plugin.session_closed(SESSION, "client closed")
    assert list(zip(writer.kinds, writer.urgent, strict=True)) == [
        ("session_started", True),
        ("command_received", True),
        ("command_completed", False),
        ("session_closed", False),
    ]


class BodyMasker:
    @hookimpl
    def server_output(self, output):
        if "body" in output.fields:
            output.fields["body"] = output.fields["body"].replace("ada@example.com", "[EMAIL]")


def test_http_response_bodies_are_recorded_as_the_client_saw_them_and_cut(writer):
    options = validate_options(
        "recording", RecordingPlugin.options, {"http_body_chars": 20}, connection="api"
    )
    recording = RecordingPlugin(
        PluginContext(
            connection=CONNECTION, options=options, audit=writer, log=Logger(), reactor=Clock()
        )
    )
    chain = chain_of(("recording", recording), ("masking", BodyMasker()))
    request = Command(session_id="sess-1", seq=4, text="GET /people", kind="http-request")
    body = '{"email": "ada@example.com", "more": "' + "x" * 50 + '"}'
    output = Output("http-response", {"body": body + "\udcff", "status": "200"})
    chain.hook.server_output(session=SESSION, command=request, output=output)
    [(entry, _)] = writer.writes
    assert entry.kind == "http_response"
    assert entry.data == {
        "seq": 4,
        "status": "200",
        "body": '{"email": "[EMAIL]",',
        "body_chars": len(output.fields["body"]),
        "truncated": True,
    }
    # Other output kinds are not http_response records.
    chain.hook.server_output(session=SESSION, command=request, output=Output("notice", {}))
    assert len(writer.writes) == 1


def test_a_config_reload_hands_the_session_over_without_an_end_or_a_new_start():
    from hoopgw.hookspecs import HANDED_OVER

    writer = FakeWriter()
    old, new = make_plugin(writer), make_plugin(writer, sample_rows=5)
    new.session_adopted(SESSION, old)
    old.session_closed(SESSION, HANDED_OVER)
    started = fired(new.session_started(SESSION))
    assert started == []  # written ahead: the next command waits for it
    writer.make_durable()
    assert started == [None]
    assert writer.kinds == ["session_handed_over", "session_continued"]
    assert writer.writes[1][0].data["sample_rows"] == 5
    new.session_closed(SESSION, "client closed")
    # A later session of the same instance starts as any other.
    fired(new.session_started(SESSION))
    assert writer.kinds[-2:] == ["session_closed", "session_started"]
