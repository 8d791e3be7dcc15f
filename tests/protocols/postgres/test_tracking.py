"""Tests for :mod:`hoopgw_postgres.tracking`: attributing server messages to requests."""

from __future__ import annotations

from hoopgw_postgres.tracking import CommandProgress, Request, ResponseTracker


def progress(barrier: int, name: str = "c") -> CommandProgress:
    return CommandProgress(command=name, forwarded_at=0.0, barrier=barrier)


def kinds(tracker: ResponseTracker, types: bytes) -> list[str | None]:
    """Attribute each message type; return the kind of request each one answered."""
    out = []
    for t in types:
        request = tracker.attribute(t).request
        out.append(None if request is None else request.kind)
    return out


def test_simple_query_ends_at_ready_for_query() -> None:
    tracker = ResponseTracker()
    command = progress(tracker.next_barrier)
    tracker.expect(Request(kind="query", progress=command))
    tracker.track(command)
    assert not tracker.idle
    for t in b"TDDC":
        attribution = tracker.attribute(t)
        assert attribution.request is not None and attribution.request.progress is command
        assert attribution.completed == ()
    assert tracker.attribute(ord("Z")).completed == [command]
    assert tracker.idle


def test_multi_statement_query_stays_on_one_request_until_z() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="query"))
    # Two result sets, then an error in the third statement: all one request.
    assert kinds(tracker, b"TDCTDCEZ") == ["query"] * 8
    assert tracker.idle


def test_extended_pipeline_parse_bind_describe_execute_sync() -> None:
    tracker = ResponseTracker()
    command = progress(tracker.next_barrier)
    tracker.track(command)
    for kind in ("parse", "bind", "describe", "execute", "sync"):
        tracker.expect(Request(kind=kind, progress=None if kind == "sync" else command))
    assert kinds(tracker, b"12TDDC") == [
        "parse",
        "bind",
        "describe",
        "execute",
        "execute",
        "execute",
    ]
    attribution = tracker.attribute(ord("Z"))
    assert attribution.request is not None and attribution.request.kind == "sync"
    assert attribution.completed == [command]
    assert tracker.idle


def test_describe_statement_answers_with_parameter_description_then_row_description() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="describe"))
    tracker.expect(Request(kind="sync"))
    # 't' belongs to the describe; 'T' (or 'n') completes it.
    assert kinds(tracker, b"tTZ") == ["describe", "describe", "sync"]


def test_error_in_a_pipeline_skips_to_sync() -> None:
    tracker = ResponseTracker()
    first = progress(tracker.next_barrier, "first")
    tracker.track(first)
    for kind in ("parse", "bind", "execute"):
        tracker.expect(Request(kind=kind, progress=first))
    tracker.expect(Request(kind="parse"))
    tracker.expect(Request(kind="sync"))
    second = progress(tracker.next_barrier, "second")
    tracker.track(second)
    tracker.expect(Request(kind="query", progress=second))
    assert kinds(tracker, b"1") == ["parse"]
    error = tracker.attribute(ord("E"))
    assert error.request is not None and error.request.kind == "bind"
    # The server skipped execute and the second parse; the next answer belongs to Sync.
    sync = tracker.attribute(ord("Z"))
    assert sync.request is not None and sync.request.kind == "sync"
    assert sync.completed == [first]
    assert kinds(tracker, b"C") == ["query"]
    assert tracker.attribute(ord("Z")).completed == [second]
    assert tracker.idle


def test_error_in_simple_query_does_not_skip() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="query"))
    tracker.expect(Request(kind="query"))
    assert kinds(tracker, b"EZ") == ["query", "query"]
    assert kinds(tracker, b"CZ") == ["query", "query"]
    assert tracker.idle


def test_error_at_sync_itself_keeps_the_sync() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="sync"))
    assert kinds(tracker, b"EZ") == ["sync", "sync"]
    assert tracker.idle


def test_copy_in_belongs_to_the_query() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="query"))
    # CopyInResponse, then (after the client's CopyData/CopyDone) CommandComplete and Z.
    assert kinds(tracker, b"GCZ") == ["query"] * 3
    assert tracker.idle


def test_copy_out_belongs_to_the_query() -> None:
    tracker = ResponseTracker()
    command = progress(tracker.next_barrier)
    tracker.track(command)
    tracker.expect(Request(kind="query", progress=command))
    assert kinds(tracker, b"Hddc") == ["query"] * 4
    assert tracker.attribute(ord("C")).request is not None
    assert tracker.attribute(ord("Z")).completed == [command]


def test_copy_out_through_extended_execute() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="execute"))
    tracker.expect(Request(kind="sync"))
    assert kinds(tracker, b"HddcCZ") == ["execute"] * 5 + ["sync"]


def test_async_messages_answer_no_request() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="query"))
    for t in b"NAS":
        assert tracker.attribute(t).request is None
    assert not tracker.idle
    assert kinds(tracker, b"Z") == ["query"]


def test_messages_when_idle_answer_no_request() -> None:
    tracker = ResponseTracker()
    attribution = tracker.attribute(ord("Z"))
    assert attribution.request is None and attribution.completed == ()


def test_barriers_complete_every_command_up_to_them() -> None:
    tracker = ResponseTracker()
    # One pipeline with two commands (P/B/E twice), then a Sync; then a simple query.
    a, b = progress(tracker.next_barrier, "a"), progress(tracker.next_barrier, "b")
    assert a.barrier == b.barrier == 1
    tracker.track(a)
    tracker.track(b)
    for kind in ("parse", "bind", "execute", "parse", "bind", "execute", "sync"):
        tracker.expect(Request(kind=kind))
    assert tracker.next_barrier == 2
    c = progress(tracker.next_barrier, "c")
    tracker.track(c)
    tracker.expect(Request(kind="query"))
    assert all(not tracker.attribute(t).completed for t in b"12C12C")
    assert tracker.attribute(ord("Z")).completed == [a, b]
    assert tracker.attribute(ord("C")).completed == ()
    assert tracker.attribute(ord("Z")).completed == [c]


def test_open_commands_are_handed_over_once() -> None:
    tracker = ResponseTracker()
    a = progress(1)
    tracker.track(a)
    assert tracker.open_commands() == [a]
    assert tracker.open_commands() == []


def test_flush_and_close_replies() -> None:
    tracker = ResponseTracker()
    tracker.expect(Request(kind="close"))
    tracker.expect(Request(kind="describe"))
    assert kinds(tracker, b"3n") == ["close", "describe"]
    assert tracker.idle


def test_rows_of_a_result_come_from_its_tag_or_its_data_rows():
    from hoopgw_postgres.tracking import CommandProgress

    progress = CommandProgress(command=None, forwarded_at=0.0, barrier=1)
    progress.result_rows = 2
    progress.result_complete(2)  # SELECT 2: the same rows, counted once
    progress.result_complete(5)  # INSERT 0 5: no data rows
    progress.result_rows = 3
    progress.result_complete(0)  # a tag without a count
    assert progress.rows == 10 and progress.result_rows == 0


def test_head_is_the_request_a_data_row_answers():
    from hoopgw_postgres.tracking import Request, ResponseTracker

    tracker = ResponseTracker()
    assert tracker.head is None
    execute, sync = Request(kind="execute"), Request(kind="sync")
    tracker.expect(execute)
    tracker.expect(sync)
    assert tracker.head is execute
    assert tracker.attribute(ord("D")).request is execute  # the same answer, the long way
    tracker.attribute(ord("C"))
    assert tracker.head is sync


def test_a_query_skipped_after_a_pipeline_error_counts_as_a_barrier_passed() -> None:
    # PostgreSQL ignores every message up to Sync after an extended-protocol error, a simple
    # Query too: no ReadyForQuery answers it, yet later barriers keep their numbers.
    tracker = ResponseTracker()
    tracker.expect(Request(kind="parse"))
    skipped = progress(tracker.next_barrier, "skipped")
    tracker.expect(Request(kind="query", progress=skipped))
    tracker.track(skipped)
    after = progress(tracker.next_barrier, "after")
    tracker.expect(Request(kind="execute", progress=after))
    tracker.track(after)
    tracker.expect(Request(kind="sync"))
    assert kinds(tracker, b"E") == ["parse"]
    assert tracker.attribute(ord("Z")).completed == [skipped, after]
    assert tracker.barriers_seen == tracker.next_barrier - 1
    assert tracker.idle


def copy_in_pipeline(tracker: ResponseTracker) -> CommandProgress:
    """Parse, Bind, Execute of a COPY FROM STDIN and a Sync, as libpq sends them at once."""
    command = progress(tracker.next_barrier, "copy")
    for kind in ("parse", "bind", "execute"):
        tracker.expect(Request(kind=kind, progress=command))
    tracker.track(command)
    tracker.expect(Request(kind="sync"))
    return command


def test_syncs_sent_during_copy_in_get_no_answer() -> None:
    # Protocol chapter, "COPY Operations": the backend ignores Sync in copy-in mode; libpq
    # sends another after CopyDone, which the server answers.
    tracker = ResponseTracker()
    command = copy_in_pipeline(tracker)
    assert kinds(tracker, b"12G") == ["parse", "bind", "execute"]
    assert not tracker.settled and not tracker.settling
    tracker.expect(Request(kind="sync"))  # one sent amid the data is ignored as well
    tracker.copy_ended()
    tracker.expect(Request(kind="sync"))
    assert tracker.settling
    assert kinds(tracker, b"C") == ["execute"]
    assert tracker.attribute(ord("Z")).completed == [command]
    assert tracker.idle and tracker.settled


def test_a_copy_ended_before_the_server_said_copy_in_keeps_the_later_sync() -> None:
    tracker = ResponseTracker()
    command = copy_in_pipeline(tracker)
    tracker.copy_ended()
    tracker.expect(Request(kind="sync"))
    after = progress(tracker.next_barrier, "after")
    tracker.expect(Request(kind="query", progress=after))
    tracker.track(after)
    assert kinds(tracker, b"12GCZ") == ["parse", "bind", "execute", "execute", "sync"]
    assert tracker.attribute(ord("Z")).completed == [after]
    assert command.barrier < after.barrier
    assert tracker.idle and tracker.settled


def test_settled_once_the_ready_for_query_after_code_arrived() -> None:
    tracker = ResponseTracker()
    assert tracker.settled
    tracker.expect(Request(kind="parse"))
    assert not tracker.settled and not tracker.settling
    tracker.expect(Request(kind="describe"))
    tracker.expect(Request(kind="sync"))
    assert tracker.settling and not tracker.settled
    kinds(tracker, b"1T")
    assert not tracker.settled
    kinds(tracker, b"Z")
    assert tracker.settled
