"""Tests for hoopgw.cli.export: ``audit search``, ``audit export`` and ``replay`` against a real
SQLite store in tmp_path."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from hoopgw.audit import export
from hoopgw.audit.export import FIELDS
from hoopgw.cli import export as cli_export
from hoopgw.cli import main as cli
from hoopgw.cli.export import since_date, until_date
from hoopgw.cli.main import main
from hoopgw.records import AuditEntry
from hoopgw.store import open_store

T0 = 1_764_090_000.0  # 2025-11-25T17:00:00Z

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"
"""


def entries() -> list[AuditEntry]:
    def entry(record_kind: str, session: str, time: float, **data: Any) -> AuditEntry:
        return AuditEntry(kind=record_kind, session_id=session, time=time, data=data)

    def started(session: str, time: float, identity: str, groups: list[str]) -> AuditEntry:
        return entry(
            "session_started",
            session,
            time,
            identity=identity,
            groups=groups,
            method="api-key",
            credential_id="0123456789ab",
            client_address="127.0.0.1:50000",
            connection="pg",
            protocol="postgres",
            target="db:5432",
            client_tls=False,
            upstream_tls=False,
            started_at=time,
            attributes={"database": "app"},
        )

    def command(session: str, time: float, seq: int, text: str, verdict: str, **outcome: Any):
        decided = {"reason": "", "plugin": "", "rule": ""}
        if verdict == "block":
            decided = {"reason": "DROP is not allowed", "plugin": "guardrails", "rule": "no-drop"}
        completed = {
            "status": "blocked" if verdict == "block" else "ok",
            "rows": None if verdict == "block" else 2,
            "bytes": 0,
            "duration": 0.004,
            "error_code": "42501" if verdict == "block" else None,
            "error_message": decided["reason"] or None,
            **outcome,
        }
        return [
            entry("command_received", session, time, seq=seq, kind="query", text=text),
            entry("command_decided", session, time, seq=seq, verdict=verdict, **decided),
            entry("command_completed", session, time + 0.004, seq=seq, **completed),
        ]

    return [
        started("s1", T0, "alice", ["dba"]),
        *command("s1", T0 + 1, 1, "SELECT name FROM users", "allow", sample=[["ann"], ["bo"]]),
        *command("s1", T0 + 3, 2, "DROP TABLE users", "block"),
        entry("session_closed", "s1", T0 + 4, reason="client closed"),
        started("s2", T0 + 86400, "bot", ["agents"]),
        *command("s2", T0 + 86401, 1, "SELECT 1", "allow"),
        entry("session_closed", "s2", T0 + 86402, reason="client closed"),
    ]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        store.migrate()
        store.append(entries())
    finally:
        store.close()
    return path


def run(capsys: Any, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("2025-11-25", T0 - 17 * 3600, T0 + 7 * 3600),
        ("2025-11-25T17:00:00", T0, T0),
        ("2025-11-25T17:00:00Z", T0, T0),
        ("2025-11-25T17:00:00.5+00:00", T0 + 0.5, T0 + 0.5),
        ("2025-11-25T19:00:00+02:00", T0, T0),
        ("2025-11-25 17:00", T0, T0),
    ],
)
def test_dates_are_iso_8601_utc_unless_offset_and_until_a_day_means_its_end(text, since, until):
    assert since_date(text) == since
    assert until_date(text) == until


@pytest.mark.parametrize("text", ["", "yesterday", "25/11/2025", "2025-13-01", "1764090000"])
def test_other_dates_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="invalid date"):
        since_date(text)


def test_a_bad_date_is_a_usage_error(capsys, config_file):
    code, _, err = run(
        capsys, "audit", "export", "-c", config_file, "--format", "csv", "--since", "soon"
    )

    assert code == 2
    assert "invalid date 'soon'" in err


# -- audit search --------------------------------------------------------------------------------


def test_search_prints_a_table_newest_first(capsys, config_file):
    code, out, err = run(capsys, "audit", "search", "-c", config_file)

    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == [
        "TIME", "SESSION", "#", "IDENTITY", "CONNECTION", "VERDICT", "STATUS", "ROWS", "TEXT"
    ]  # fmt: skip
    assert [row.split()[1:7] for row in rows] == [
        ["s2", "1", "bot", "pg", "allow", "ok"],
        ["s1", "2", "alice", "pg", "block", "blocked"],
        ["s1", "1", "alice", "pg", "allow", "ok"],
    ]
    assert rows[0].startswith("2025-11-26T17:00:01Z")
    assert rows[1].endswith("DROP TABLE users")


def test_search_json_with_filters(capsys, config_file):
    code, out, _ = run(
        capsys, "audit", "search", "-c", config_file, "--json", "--group", "dba",
        "--verdict", "block", "--rule", "no-drop", "--text", "drop",
        "--since", "2025-11-25", "--until", "2025-11-25",
    )  # fmt: skip

    assert code == 0
    [found] = json.loads(out)
    assert found["time"] == "2025-11-25T17:00:03.000000Z"
    assert (found["session_id"], found["command"], found["identity"]) == ("s1", 2, "alice")
    assert (found["verdict"], found["reason"], found["error_code"]) == (
        "block",
        "DROP is not allowed",
        "42501",
    )


def test_search_limit_and_empty_result(capsys, config_file):
    _, out, _ = run(capsys, "audit", "search", "-c", config_file, "--json", "--limit", "1")
    assert [c["session_id"] for c in json.loads(out)] == ["s2"]

    code, out, _ = run(capsys, "audit", "search", "-c", config_file, "--identity", "nobody")
    assert code == 0
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("argv", [["--verdict", "hold"], ["--limit", "0"]])
def test_search_refuses_bad_options(capsys, config_file, argv):
    code, _, _ = run(capsys, "audit", "search", "-c", config_file, *argv)

    assert code == 2


# -- audit export --------------------------------------------------------------------------------


def test_export_jsonl_to_stdout_without_progress_when_stderr_is_no_terminal(capsys, config_file):
    code, out, err = run(capsys, "audit", "export", "-c", config_file, "--format", "jsonl")

    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 14))
    assert all(tuple(r) == FIELDS for r in records)
    assert records[1]["identity"] == "alice"


def test_export_csv_to_a_file_with_a_range_and_progress(capsys, config_file, tmp_path):
    target = tmp_path / "out" / "audit.csv"
    target.parent.mkdir()

    code, out, err = run(
        capsys, "audit", "export", "-c", config_file, "--format", "csv", "--out", target,
        "--since", "2025-11-26", "--progress",
    )  # fmt: skip

    assert code == 0 and out == ""
    assert err.startswith("hoopgw: exported 5 records in ")
    assert sorted(p.name for p in target.parent.iterdir()) == ["audit.csv"]
    rows = list(csv.DictReader(io.StringIO(target.read_text(), newline="")))
    assert [(r["seq"], r["kind"], r["identity"]) for r in rows] == [
        ("9", "session_started", "bot"),
        ("10", "command_received", "bot"),
        ("11", "command_decided", "bot"),
        ("12", "command_completed", "bot"),
        ("13", "session_closed", "bot"),
    ]


def test_export_to_an_unwritable_place_fails(capsys, config_file, tmp_path):
    code, _, err = run(
        capsys, "audit", "export", "-c", config_file, "--format", "jsonl",
        "--out", tmp_path / "missing" / "audit.jsonl",
    )  # fmt: skip

    assert code == 1
    assert "cannot write" in err


def test_a_failed_export_leaves_no_file(capsys, config_file, tmp_path, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> int:
        args[1].write("half")
        raise cli_export.HoopgwError("store went away")

    monkeypatch.setattr(export, "export_records", broken)
    target = tmp_path / "audit.jsonl"

    code, _, err = run(
        capsys, "audit", "export", "-c", config_file, "--format", "jsonl", "--out", target
    )

    assert code == 1
    assert "store went away" in err
    assert not target.exists()
    assert not (tmp_path / "audit.jsonl.partial").exists()


def test_export_into_a_named_pipe_writes_through_it_and_leaves_it_a_pipe(
    capsys, config_file, tmp_path
):
    # Replacing the target once written, as for a file, would put a regular file where a
    # device such as /dev/null or a pipe was.
    pipe = tmp_path / "audit.fifo"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        code, _, err = run(
            capsys, "audit", "export", "-c", config_file, "--format", "jsonl", "--out", pipe
        )
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)

    assert code == 0, err
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert len(received.splitlines()) == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.db", "audit.fifo", "hoopgw.toml"]


def test_export_format_is_required(capsys, config_file):
    code, _, err = run(capsys, "audit", "export", "-c", config_file)

    assert code == 2
    assert "--format" in err


# -- replay --------------------------------------------------------------------------------------


def test_replay_prints_the_transcript(capsys, config_file):
    code, out, _ = run(capsys, "replay", "s1", "-c", config_file)

    assert code == 0
    assert out.splitlines() == [
        "session s1",
        "  alice via pg (postgres db:5432) from 127.0.0.1:50000",
        "  started 2025-11-25T17:00:00.000000Z, ended 2025-11-25T17:00:04.000000Z"
        " (client closed), 2 statements",
        "",
        "+1.000s  #1 query",
        "    SELECT name FROM users",
        "    -> allow; ok, 2 rows, 4.0 ms",
        "    sample (2 rows):",
        "      | ann |",
        "      | bo  |",
        "",
        "+3.000s  #2 query",
        "    DROP TABLE users",
        "    -> block: DROP is not allowed (guardrails, rule no-drop); blocked, 4.0 ms",
        "    error 42501: DROP is not allowed",
    ]


def test_replay_in_real_time_waits_scaled_by_speed(capsys, config_file, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(cli_export.time, "sleep", waits.append)

    code, _, _ = run(capsys, "replay", "s1", "-c", config_file, "--real-time", "--speed", "2")

    assert code == 0
    assert waits == [0.5, 1.0]


def test_replay_json(capsys, config_file):
    code, out, _ = run(capsys, "replay", "s1", "-c", config_file, "--json")

    assert code == 0
    document = json.loads(out)
    assert document["session"]["started_at"] == "2025-11-25T17:00:00Z"
    assert "commands" not in document["session"]
    assert [s["text"] for s in document["steps"]] == ["SELECT name FROM users", "DROP TABLE users"]
    assert document["steps"][0]["offset"] == 1.0
    assert document["steps"][0]["sample"] == [["ann"], ["bo"]]


def test_replay_takes_options_after_the_id_and_a_start_of_it(capsys, config_file):
    code, out, _ = run(capsys, "replay", "-c", config_file, "--json", "s2")
    assert code == 0
    assert json.loads(out)["session"]["id"] == "s2"

    code, out, err = run(capsys, "replay", "-c", config_file, "s")
    assert (code, out) == (1, "")
    assert "'s' is the start of several sessions (s1, s2)" in err


def test_replay_channel_needs_a_terminal_option(capsys, config_file):
    code, _, err = run(capsys, "replay", "s1", "-c", config_file, "--channel", "1")

    assert code == 2
    assert "--channel" in err


def test_a_reader_that_goes_away_ends_replay_quietly(capsys, config_file, monkeypatch):
    class GoneReader(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return 1

    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)
    monkeypatch.setattr(sys, "stdout", GoneReader())

    code = main(["replay", "s1", "-c", str(config_file)])

    assert code == 141
    assert capsys.readouterr().err == ""


def test_replay_of_an_unknown_session_fails(capsys, config_file):
    code, out, err = run(capsys, "replay", "nope", "-c", config_file)

    assert (code, out) == (1, "")
    assert "no session with id 'nope'" in err


@pytest.mark.parametrize(
    "argv", [["--json", "--real-time"], ["--speed", "0"], ["--speed", "fast"], ["--speed", "inf"]]
)
def test_replay_refuses_bad_options(capsys, config_file, argv):
    code, _, _ = run(capsys, "replay", "s1", "-c", config_file, *argv)

    assert code == 2
