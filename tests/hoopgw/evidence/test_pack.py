"""Tests for hoopgw.evidence.pack and hoopgw.cli.evidence, on a synthetic SQLite store in
tmp_path."""

import argparse
import csv
import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import attrs
import pytest

from hoopgw.audit.chain import Durability, durability_entry
from hoopgw.audit.checkpoints import (
    KEY_NAME,
    Checkpoint,
    generate_signing_key,
    private_key_pem,
    sign_checkpoint,
    write_checkpoint_file,
)
from hoopgw.audit.journal import AuditJournal
from hoopgw.audit.writer import encode_entry
from hoopgw.cli.common import parse_time
from hoopgw.cli.main import main
from hoopgw.config.load import load_config
from hoopgw.evidence import pack as evidence
from hoopgw.evidence.model import NOT_RECORDED, TimeRange, latest_checkpoint
from hoopgw.evidence.pack import build_pack
from hoopgw.records import AuditEntry
from hoopgw.secrets import Secret
from hoopgw.store import open_store

PASSWORD = "evidence-test-password-2718"

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"

[[connections]]
name = "pg-a"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
client_tls = "disabled"
plugins = ["recording", "guardrails"]
credential = { user = "postgres", password = "env:HOOPGW_EVIDENCE_TEST_PW" }

[connections.guardrails]
preset = "agent-readonly"

[[connections]]
name = "pg-b"
protocol = "postgres"
listen = "tcp:15433:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = []
credential = { user = "postgres" }
"""

# 2026-11-25T17:00:00Z
NOON = 1795626000.0
HOSTILE = "SELECT '<script>alert(1)</script>' | **x** [a](javascript:x)"


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("HOOPGW_EVIDENCE_TEST_PW", PASSWORD)


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def store(config_file):
    opened = open_store(f"sqlite:///{config_file.parent}/audit.db")
    opened.migrate()
    yield opened
    opened.close()


def session_entries(session_id, *, start, identity="ci", blocked_text=HOSTILE, end=True):
    """A session with an allowed command, a blocked one, and (optionally) its end."""

    def entry(record_kind, time, **data):
        return AuditEntry(kind=record_kind, session_id=session_id, time=time, data=data)

    entries = [
        entry(
            "session_started", start, identity=identity, groups=["agents"],
            method="api-key", credential_id="0123456789ab", client_address="127.0.0.1:5000",
            connection="pg-a", protocol="postgres", target="127.0.0.1:5432",
            client_tls=False, upstream_tls=True, started_at=start,
            attributes={"application_name": "=HYPERLINK(1)"},
        ),
        entry("command_received", start + 1, seq=1, kind="query", text="SELECT 1",
              parameter_count=0, statement_name=""),
        entry("command_decided", start + 1, seq=1, verdict="allow", reason="", plugin="",
              rule=""),
        entry("command_completed", start + 2, seq=1, status="ok", rows=1, bytes=12,
              duration=0.5, error_code="", error_message=""),
        entry("command_received", start + 3, seq=2, kind="query", text=blocked_text,
              parameter_count=0, statement_name=""),
        entry("command_decided", start + 3, seq=2, verdict="block", reason="read only",
              plugin="guardrails", rule="write"),
        entry("command_completed", start + 3, seq=2, status="blocked", rows=0, bytes=0,
              duration=0.0, error_code="42501", error_message="read only"),
    ]  # fmt: skip
    if end:
        entries.append(entry("session_closed", start + 4, reason="client closed"))
    return entries


def make_pack(store, config_file, folder, *, since=NOON - 60, until=None, **kwargs):
    return build_pack(
        store,
        load_config(config_file),
        config_file=config_file,
        time_range=TimeRange(since=since, until=until),
        folder=folder,
        now=NOON + 3600,
        **kwargs,
    )


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


def assert_manifest_valid(folder):
    lines = (folder / "manifest.sha256").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        "manifest.sha256"
    }
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    if shutil.which("sha256sum"):
        checked = subprocess.run(
            ["sha256sum", "--strict", "-c", "manifest.sha256"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the pack --------------------------------------------------------------------------------


def test_pack_counts_sessions_and_commands_by_verdict(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    store.append(session_entries("s2", start=NOON + 10, identity="ops", end=False))

    result = make_pack(store, config_file, tmp_path / "pack")

    assert result.verified
    assert (result.sessions, result.commands) == (2, 4)
    doc = summary(tmp_path / "pack")
    assert doc["format"] == "hoopgw-evidence/1"
    assert doc["sessions"] == {
        "count": 2,
        "ended": 1,
        "identities": ["ci", "ops"],
        "by_connection": {"pg-a": 2},
        "client_tls": 0,
        "upstream_tls": 2,
        "by_protocol": {"postgres": {"sessions": 2, "client_tls": 0, "upstream_tls": 2}},
    }
    assert doc["commands"]["by_verdict"] == {"allow": 2, "block": 2, "hold": 0, "undecided": 0}
    assert doc["commands"]["by_status"] == {"blocked": 2, "ok": 2}
    assert doc["commands"]["blocked_by_rule"] == {"write": 2}
    assert doc["records"]["in_range"] == 15
    assert doc["records"]["by_kind"]["session_started"] == 2
    assert [c["id"] for c in doc["controls"]] == [
        "AU-2", "AU-3", "AU-9", "AU-12", "AC-2", "AC-3", "AC-6", "SC-7", "SC-8", "SI-4", "IR-4"
    ]  # fmt: skip


def test_pack_reads_a_verdict_that_joined_the_completion(store, config_file, tmp_path):
    """The recording plugin records an allowed command's verdict in its completion record."""
    entries = session_entries("s1", start=NOON)
    del entries[2]  # the allowed command's command_decided record
    entries[2] = attrs.evolve(
        entries[2],
        data={"seq": 1, "verdict": "allow", "reason": "", "plugin": "", "rule": "",
              **entries[2].data},
    )  # fmt: skip
    store.append(entries)

    make_pack(store, config_file, tmp_path / "pack")

    doc = summary(tmp_path / "pack")
    assert doc["commands"]["by_verdict"] == {"allow": 1, "block": 1, "hold": 0, "undecided": 0}
    assert doc["commands"]["by_status"] == {"blocked": 1, "ok": 1}


def test_pack_files_and_manifest(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))

    result = make_pack(store, config_file, tmp_path / "pack")

    assert set(result.files) == {
        "accounts.csv",
        "approvals.csv",
        "commands.jsonl",
        "index.html",
        "index.md",
        "manifest.sha256",
        "policies/pg-a.json",
        "policies/pg-b.json",
        "sessions.csv",
        "sessions.json",
        "summary.json",
        "verification.json",
    }
    assert result.files[-1] == "manifest.sha256"
    assert_manifest_valid(tmp_path / "pack")


def test_sessions_and_commands_files(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    with (folder / "sessions.csv").open(newline="") as file:
        [row] = list(csv.DictReader(file))
    assert row["id"] == "s1"
    assert row["started_at"] == "2026-11-25T17:00:00Z"
    assert row["ended_at"] == "2026-11-25T17:00:04Z"
    assert row["end_reason"] == "client closed"
    assert row["command_count"] == "2"
    assert row["upstream_tls"] == "true"
    [session] = json.loads((folder / "sessions.json").read_text())
    assert session["attributes"] == {"application_name": "=HYPERLINK(1)"}
    commands = [json.loads(line) for line in (folder / "commands.jsonl").read_text().splitlines()]
    assert [(c["seq"], c["verdict"], c["status"]) for c in commands] == [
        (1, "allow", "ok"),
        (2, "block", "blocked"),
    ]
    assert commands[1]["text"] == HOSTILE
    assert commands[1]["rule"] == "write"


def test_csv_cells_cannot_become_spreadsheet_formulas(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON, identity="=cmd|' /C calc'!A0"))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    with (folder / "sessions.csv").open(newline="") as file:
        [row] = list(csv.DictReader(file))
    assert row["identity"] == "'=cmd|' /C calc'!A0"


def test_range_keeps_what_happened_to_its_commands_after_it(store, config_file, tmp_path):
    store.append(session_entries("before", start=NOON - 3600))
    store.append(session_entries("inside", start=NOON))
    store.append(session_entries("after", start=NOON + 3600))
    folder = tmp_path / "pack"

    # The range ends after the first command was received, before it completed and before the
    # session ended: both still describe it.
    result = make_pack(store, config_file, folder, since=NOON, until=NOON + 1.5)

    assert (result.sessions, result.commands) == (1, 1)
    [session] = json.loads((folder / "sessions.json").read_text())
    assert session["id"] == "inside"
    assert session["end_reason"] == "client closed"
    doc = summary(folder)
    assert doc["commands"]["by_status"] == {"ok": 1}
    assert doc["records"]["in_range"] == 3
    assert doc["range"] == {"since": "2026-11-25T17:00:00Z", "until": "2026-11-25T17:00:01Z"}
    assert doc["verification"]["checked"] == 24


def test_unfinished_commands_are_written_too(store, config_file, tmp_path):
    entries = session_entries("s1", start=NOON, end=False)[:5]  # the second command undecided
    store.append(entries)
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    doc = summary(folder)
    assert doc["commands"]["by_verdict"]["undecided"] == 1
    assert doc["commands"]["by_status"] == {"ok": 1, "unfinished": 1}
    assert len((folder / "commands.jsonl").read_text().splitlines()) == 2


def test_html_and_markdown_escape_recorded_text(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    page = (folder / "index.html").read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<style>" in page  # readable without a server: inline CSS, no external files
    assert "http" not in page.replace("http-equiv", "")
    markdown = (folder / "index.md").read_text()
    assert "<script>" not in markdown
    assert "[a](javascript" not in markdown
    assert r"\*\*x\*\*" in markdown


def test_reviews_and_grants_are_not_invented(store, config_file, tmp_path):
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    doc = summary(folder)
    assert doc["reviews"]["count"] == 0 and doc["reviews"]["note"] == NOT_RECORDED
    assert doc["access_grants"]["count"] == 0
    assert doc["access_grants"]["note"] == NOT_RECORDED
    assert NOT_RECORDED in (folder / "index.html").read_text()


def review_entries(start):
    """A statement review approved by two, one denied, a late approval re-run, and an access
    grant approved, one revoked (issue 14, class 11)."""

    def entry(kind, time, session_id="", **data):
        return AuditEntry(kind=kind, session_id=session_id, time=time, data=data)

    common = {"requester": "ci", "connection": "pg-a", "approvers": ["dba"]}
    return [
        entry("review_requested", start, "s1", review="r1", review_kind="statement", seq=2,
              reason="write", statement="DELETE FROM t WHERE id = $1", parameters=["1"],
              **common),
        entry("review_voted", start + 1, "s1", review="r1", review_kind="statement",
              by="alice", approve=True, reason="ok", **common),
        entry("review_decided", start + 2, "s1", review="r1", review_kind="statement",
              status="approved", by="alice,bob", reason="ok", grant="", **common),
        entry("review_requested", start + 3, "s1", review="r2", review_kind="statement",
              reason="write", statement="DELETE FROM t", parameters=[], **common),
        entry("review_timed_out", start + 4, "s1", review="r2", review_kind="statement",
              **common),
        entry("review_decided", start + 5, "s1", review="r2", review_kind="statement",
              status="denied", by="carol", reason="no", grant="", **common),
        entry("review_rerun", start + 6, "s1", review="r1", review_kind="statement",
              session="s1", seq=3, statement="DELETE FROM t WHERE id = $1", parameters=["1"],
              **common),
        entry("review_requested", start + 7, review="r3", review_kind="access",
              reason="INC-7", duration=1800.0, **{**common, "approvers": ["leads"]}),
        entry("review_decided", start + 8, review="r3", review_kind="access",
              status="approved", by="lead", reason="", grant="g1",
              **{**common, "approvers": ["leads"]}),
        entry("grant_created", start + 8, grant="g1", review="r3", identity="ci",
              connection="pg-a", approved_by=["lead"], reason="INC-7",
              expires_at=start + 8 + 1800),
        entry("grant_revoked", start + 9, grant="g1", review="r3", identity="ci",
              connection="pg-a", expires_at=start + 8 + 1800, sessions_ended=[], by="lead",
              reason="done"),
    ]  # fmt: skip


def test_reviews_and_grants_are_read_from_the_verified_records(store, config_file, tmp_path):
    store.append(review_entries(NOON))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    doc = summary(folder)
    assert doc["reviews"] == {
        "count": 3,
        "by_kind": {"access": 1, "statement": 2},
        "decided": {"approved": 2, "denied": 1},
        "decided_by": ["alice", "bob", "carol", "lead"],
        "timed_out": 1,
        "reruns": 1,
        "note": "",
    }
    assert doc["access_grants"] == {
        "count": 1,
        "identities": ["ci"],
        "approved_by": ["lead"],
        "longest_seconds": 1800.0,
        "expired": 0,
        "revoked": 1,
        "active_when_made": 0,
        "note": "",
    }
    controls = {c["id"]: c for c in doc["controls"]}
    assert "decided by: alice, bob, carol, lead" in " ".join(controls["AC-3"]["evidence"])
    for control in ("AC-2", "AC-6"):
        text = " ".join(controls[control]["evidence"])
        assert "Access grants made: 1 (to ci; approved by lead; longest 1800s)" in text
        assert "revoked: 1" in text
        assert "approvals.csv" in controls[control]["files"]
    with (folder / "approvals.csv").open() as rows:
        listed = list(csv.DictReader(rows))
    assert [r["event"] for r in listed][:3] == [
        "review_requested",
        "review_voted",
        "review_decided",
    ]
    assert listed[2]["by"] == "alice,bob" and listed[-1]["event"] == "grant_revoked"
    assert "Access grants made: 1" in (folder / "index.md").read_text()


def test_sc8_is_reported_per_protocol_and_tls_offered_only_with_a_certificate(
    store, config_file, tmp_path
):
    entries = session_entries("s1", start=NOON)
    ssh = attrs.evolve(
        entries[0],
        session_id="s2",
        data={**entries[0].data, "protocol": "ssh", "client_tls": False, "upstream_tls": False},
    )
    tls = attrs.evolve(entries[0], session_id="s3", data={**entries[0].data, "client_tls": True})
    store.append([*entries, ssh, tls])
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    doc = summary(folder)
    assert doc["sessions"]["by_protocol"] == {
        "postgres": {"sessions": 2, "client_tls": 1, "upstream_tls": 2},
        "ssh": {"sessions": 1, "client_tls": 0, "upstream_tls": 0},
    }
    [sc8] = [c for c in doc["controls"] if c["id"] == "SC-8"]
    text = " ".join(sc8["evidence"])
    assert "ssh: 1 session(s), every one encrypted" in text
    assert "postgres: 2 session(s); used TLS from the client: 1; to the target: 2" in text
    # pg-a disables client TLS; pg-b would offer it, but the gateway has no certificate.
    assert "pg-a: from clients no TLS (client_tls disabled)" in text
    assert "pg-b: from clients no TLS offered (no [gateway] tls_cert)" in text
    assert "TLS offered" not in text.replace("no TLS offered", "")


def test_the_banner_says_what_was_verified_and_what_cannot_be_without_a_checkpoint(
    store, config_file, tmp_path
):
    store.append(session_entries("s1", start=NOON))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    banner = (folder / "index.md").read_text()
    assert "each record linked by its hash to the one before" in banner
    assert "removal of the newest records cannot be detected" in banner
    assert "removal of the newest records cannot be detected" in (folder / "index.html").read_text()


def test_policies_leave_out_the_credential_and_carry_their_hash(store, config_file, tmp_path):
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    excerpt_text = (folder / "policies" / "pg-a.json").read_text()
    excerpt = json.loads(excerpt_text)
    assert excerpt["plugins"] == ["recording", "guardrails"]
    assert excerpt["options"]["guardrails"]["preset"] == "agent-readonly"
    assert excerpt["allow_groups"] == ["agents"]
    assert "credential" not in excerpt
    for file in folder.rglob("*"):
        if file.is_file():
            text = file.read_text()
            assert PASSWORD not in text
            assert "HOOPGW_EVIDENCE_TEST_PW" not in text
    [policy] = [p for p in summary(folder)["policies"] if p["connection"] == "pg-a"]
    assert policy["sha256"] == hashlib.sha256(excerpt_text.encode()).hexdigest()
    assert policy["file"] == "policies/pg-a.json"
    assert summary(folder)["config"] == {
        "file": "hoopgw.toml",
        "sha256": hashlib.sha256(config_file.read_bytes()).hexdigest(),
    }


def test_a_secret_in_plugin_options_shows_only_its_reference():
    config = load_config_text()
    connection = attrs.evolve(
        config.connections[0],
        plugin_options={"recording": {"key": Secret(reference="env:K", value="hunter2")}},
        plugins=("recording",),
    )

    excerpt = evidence.policy_excerpt(connection)

    text = json.dumps(excerpt, default=evidence._json_value)
    assert "hunter2" not in text
    assert '"secret_reference": "env:K"' in text


def load_config_text():
    from hoopgw.config.load import parse_config

    return parse_config(CONFIG, base_dir=Path("/"))


def test_accounts_never_show_secrets(store, config_file, tmp_path, capsys):
    assert main(["keys", "create", "-c", str(config_file), "--identity", "ci",
                 "--group", "agents"]) == 0  # fmt: skip
    secret = capsys.readouterr().out.strip()
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    accounts = (folder / "accounts.csv").read_text()
    assert accounts.splitlines()[0] == (
        "key_id,identity,groups,created_at,expires_at,revoked_at,last_used_at"
    )
    assert ",ci,agents," in accounts
    assert secret not in accounts
    [key] = store.list_keys()
    assert key.secret_sha256 not in accounts


# -- verification ----------------------------------------------------------------------------


def tamper(config_file, seq):
    with sqlite3.connect(config_file.parent / "audit.db") as db:
        db.execute(
            "UPDATE audit_records SET data = replace(data, 'SELECT 1', 'SELECT 2') WHERE seq = ?",
            (seq,),
        )


def test_a_broken_chain_still_writes_the_pack_marked_failed(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    store.append(session_entries("s2", start=NOON + 10))
    tamper(config_file, 2)
    folder = tmp_path / "pack"

    result = make_pack(store, config_file, folder)

    assert not result.verified
    assert result.verification.first_bad_seq == 2
    # Every record is still summarised, also those after the break.
    assert (result.sessions, result.commands) == (2, 4)
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["ok"] is False
    assert verification["first_bad_seq"] == 2
    assert "changed" in verification["problem"]
    assert verification["records_read"] == 16
    assert "FAILED VERIFICATION" in (folder / "index.html").read_text()
    assert "FAILED VERIFICATION" in (folder / "index.md").read_text()
    assert_manifest_valid(folder)


def test_intact_chain_reports_head_and_no_checkpoint(store, config_file, tmp_path):
    [*_, last] = store.append(session_entries("s1", start=NOON))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    verification = json.loads((folder / "verification.json").read_text())
    assert verification["ok"] is True
    assert (verification["head_seq"], verification["head_hash"]) == (last.seq, last.hash)
    assert verification["checkpoint"] is None
    assert verification["checkpoint_note"] == "no checkpoint configured"
    assert "VERIFIED" in (folder / "index.html").read_text()


def test_the_pack_says_which_durability_mode_covered_the_records(store, config_file, tmp_path):
    store.append(session_entries("old", start=NOON - 7200))  # before the range, mode unknown
    store.append([durability_entry(Durability(), now=NOON - 3600)])
    store.append(session_entries("s1", start=NOON))
    os_mode = Durability(mode="os", sync_interval=0.05)
    store.append([durability_entry(os_mode, now=NOON + 100)])
    store.append(session_entries("s2", start=NOON + 200))
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    verification = json.loads((folder / "verification.json").read_text())
    assert [
        (p["mode"], p["sync_interval"], p["first_seq"], p["last_seq"])
        for p in verification["durability"]
    ] == [(None, None, 1, 8), ("fsync", None, 9, 17), ("os", 0.05, 18, 26)]
    assert verification["durability"][2]["since"] == "2026-11-25T17:01:40Z"
    [au12] = [c for c in summary(folder)["controls"] if c["id"] == "AU-12"]
    text = au12["evidence"][-1]
    assert text.startswith("Audit durability in force: records 10 to 17: fsync: each command")
    assert "; records 18 to 26: os: each command's record was in the operating system" in text
    assert "on disk within 0.05 s" in text
    assert "Audit durability in force: records 10 to 17" in (folder / "index.html").read_text()


def test_records_a_stopped_gateway_left_in_its_journal_mark_the_pack_incomplete(
    store, config_file, tmp_path
):
    store.append(session_entries("s1", start=NOON))
    journal = AuditJournal(f"{config_file.parent}/audit.db.audit-journal")
    journal.unapplied(0)
    journal.append([encode_entry(entry) for entry in session_entries("s2", start=NOON + 10)])
    journal.close()
    folder = tmp_path / "pack"

    result = make_pack(store, config_file, folder)

    assert not result.verified
    assert "holds 8 record(s) the store does not have yet" in result.journal_problem
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["ok"] is False and verification["chain_ok"] is True
    assert verification["journal_problem"] == result.journal_problem
    assert "INCOMPLETE" in (folder / "index.md").read_text()
    assert "INCOMPLETE" in (folder / "index.html").read_text()


@pytest.fixture
def signed_config(config_file):
    """The config with a signing key; returns a function writing a checkpoint of (seq, hash)."""
    key = generate_signing_key()
    (config_file.parent / "signing.pem").write_bytes(private_key_pem(key))
    config_file.write_text(
        CONFIG.replace("[gateway]\n", '[gateway]\nsigning_key = "file:signing.pem"\n')
    )

    def write(seq, digest):
        note = sign_checkpoint(
            Checkpoint(origin=KEY_NAME, seq=seq, hash=digest, time=NOON + 10), key
        )
        write_checkpoint_file(load_config(config_file).checkpoint_path, seq, note)

    return write


def test_latest_checkpoint(store, config_file, signed_config):
    unsigned = config_file.parent / "unsigned.toml"
    unsigned.write_text(CONFIG)
    assert latest_checkpoint(load_config(unsigned)) is None
    empty = latest_checkpoint(load_config(config_file))
    assert empty is not None and empty.checkpoint is None and not empty.problem
    signed_config(3, "ab" * 32)
    signed_config(7, "cd" * 32)

    found = latest_checkpoint(load_config(config_file))

    assert found is not None and found.checkpoint is not None
    assert (found.checkpoint.seq, found.checkpoint.hash) == (7, "cd" * 32)
    assert found.source.endswith("checkpoint-00000000000000000007.txt")


def test_a_log_matching_its_checkpoint_verifies(store, config_file, tmp_path, signed_config):
    [*_, last] = store.append(session_entries("s1", start=NOON))
    signed_config(last.seq, last.hash)
    config = load_config(config_file)
    folder = tmp_path / "pack"

    result = make_pack(store, config_file, folder, latest=latest_checkpoint(config))

    assert result.verified
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["checkpoint"]["seq"] == last.seq
    assert verification["checkpoint_problem"] == ""
    assert "the log matches it" in (folder / "index.html").read_text()


def test_a_log_shorter_than_its_checkpoint_fails(store, config_file, tmp_path, signed_config):
    [*_, last] = store.append(session_entries("s1", start=NOON))
    signed_config(last.seq + 5, "ab" * 32)
    config = load_config(config_file)
    folder = tmp_path / "pack"

    result = make_pack(store, config_file, folder, latest=latest_checkpoint(config))

    assert result.verification.ok
    assert not result.verified
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["ok"] is False
    assert verification["chain_ok"] is True
    assert "truncated" in verification["problem"]
    assert verification["checkpoint"]["seq"] == last.seq + 5
    assert "does not match its latest checkpoint" in (folder / "index.html").read_text()


def test_a_checkpoint_with_a_bad_signature_fails(store, config_file, tmp_path, signed_config):
    [*_, last] = store.append(session_entries("s1", start=NOON))
    signed_config(last.seq, last.hash)
    config = load_config(config_file)
    [file] = config.checkpoint_path.iterdir()
    file.write_text(file.read_text().replace(last.hash, "00" * 32))
    folder = tmp_path / "pack"

    result = make_pack(store, config_file, folder, latest=latest_checkpoint(config))

    assert not result.verified
    assert result.checkpoint_problem
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["ok"] is False
    assert verification["checkpoint"] is None


def test_progress_is_told_every_record_read(store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    counts = []

    make_pack(store, config_file, tmp_path / "pack", progress=counts.append)

    assert counts == list(range(1, 9))


def test_refuses_a_folder_that_is_not_empty(store, config_file, tmp_path):
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "old.txt").write_text("x")

    with pytest.raises(FileExistsError):
        make_pack(store, config_file, folder)


# -- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25", 1795564800.0),
        ("2026-11-25T17:00:00Z", NOON),
        ("2026-11-25T17:00:00", NOON),
        ("2026-11-25T18:00:00+01:00", NOON),
        ("30d", NOON - 30 * 86400),
        ("12h", NOON - 12 * 3600),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, now=NOON) == expected


def test_a_bare_until_date_means_the_end_of_that_day():
    assert parse_time("2026-11-25", now=NOON, end_of_day=True) == 1795564800.0 + 86400


@pytest.mark.parametrize("text", ["", "yesterday", "0d", "2026-13-01", "1.5h"])
def test_parse_time_refuses_anything_else(text):
    with pytest.raises(argparse.ArgumentTypeError, match="invalid date"):
        parse_time(text, now=NOON)


# -- the command -----------------------------------------------------------------------------


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_command_writes_the_pack(capsys, store, config_file, tmp_path):
    store.append(session_entries("s1", start=NOON))
    folder = tmp_path / "pack"

    code, out, err = run(
        capsys, "evidence", "-c", config_file, "--since", "2026-11-25", "--out", folder
    )

    assert code == 0, err
    assert out == (
        f"evidence pack written to {folder} (sessions: 1, commands: 2, files: 12; chain verified)\n"
    )
    assert "hoopgw: read 8 records in " in err
    assert summary(folder)["sessions"]["count"] == 1
    assert_manifest_valid(folder)


def test_command_exits_1_on_a_broken_chain_but_writes_the_pack(
    capsys, store, config_file, tmp_path
):
    store.append(session_entries("s1", start=NOON))
    tamper(config_file, 2)
    folder = tmp_path / "pack"

    code, out, err = run(
        capsys, "evidence", "-c", config_file, "--since", "2026-11-25", "--out", folder
    )

    assert code == 1
    assert out == ""
    assert "does NOT verify: record 2 was changed" in err
    assert "marked FAILED" in err
    assert (folder / "index.html").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "someday"], "invalid date"),
        (["--since", "2026-11-25", "--until", "2026-11-24"], "--until must be later"),
    ],
)
def test_command_usage_errors(capsys, config_file, tmp_path, argv, message):
    code, _, err = run(capsys, "evidence", "-c", config_file, "--out", tmp_path / "p", *argv)

    assert code == 2
    assert message in err
    assert not (tmp_path / "p").exists()


def test_command_refuses_a_used_folder(capsys, config_file, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")

    code, _, err = run(
        capsys, "evidence", "-c", config_file, "--since", "1d", "--out", tmp_path / "used"
    )

    assert code == 2
    assert "not an empty folder" in err


# -- several gateway instances on one PostgreSQL store --------------------------------------------


@pytest.fixture
def shared(tmp_path, pg_server, pg_database):
    """A PostgreSQL store with the chains of instances gw-a (the config's) and gw-b."""
    url = f"postgresql://postgres@{pg_server.host}:{pg_server.port}/{pg_database}"
    config_file = tmp_path / "hoopgw.toml"
    config_file.write_text(
        CONFIG.replace('store = "sqlite:///./audit.db"', f'store = "{url}"\ninstance = "gw-a"')
    )
    a = open_store(url, instance="gw-a")
    a.migrate()
    b = a.chain("gw-b")
    a.append(session_entries("s-a", start=NOON, identity="alice"))
    b.append(session_entries("s-b", start=NOON + 10, identity="bob"))
    yield a, b, config_file, url
    a.close()


def test_a_pack_of_a_shared_store_verifies_and_covers_every_instance(shared, tmp_path):
    a, _, config_file, _ = shared
    result = make_pack(a, config_file, tmp_path / "pack")
    assert result.verified and result.instances == ("gw-a", "gw-b")
    verification = json.loads((tmp_path / "pack" / "verification.json").read_text())
    assert verification["ok"] and verification["instance"] == "gw-a"
    assert [(c["instance"], c["ok"], c["checked"]) for c in verification["chains"]] == [
        ("gw-a", True, 8),
        ("gw-b", True, 8),
    ]
    sessions = json.loads((tmp_path / "pack" / "sessions.json").read_text())
    assert sorted(s["identity"] for s in sessions) == ["alice", "bob"]
    assert (
        "Chains of 2 gateway instances verified: gw-a (intact"
        in (tmp_path / "pack" / "index.md").read_text()
    )


def test_a_pack_of_a_shared_store_fails_on_another_instances_broken_chain(shared, tmp_path):
    import psycopg

    a, _, config_file, url = shared
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE audit_records SET data = replace(data, 'SELECT 1', 'SELECT 2')"
            " WHERE instance = 'gw-b' AND kind = 'command_received'"
        )
    result = make_pack(a, config_file, tmp_path / "pack")
    assert not result.verified and result.instance == "gw-b"
    verification = json.loads((tmp_path / "pack" / "verification.json").read_text())
    assert not verification["ok"] and verification["instance"] == "gw-b"
    assert verification["problem"].startswith("instance gw-b: ")
    assert [c["ok"] for c in verification["chains"]] == [True, False]


# -- the control map -------------------------------------------------------------------------

CONTROLS_BEFORE = Path(__file__).with_name("controls_before.json")
"""What the control map wrote when it was code (hoopgw/evidence/controls.py before
controls.toml), for the scenarios below: moving the map to data changed no word of a pack."""


def _scenario(name, store, config_file):
    if name == "sessions":
        entries = session_entries("s1", start=NOON)
        ssh = attrs.evolve(
            entries[0],
            session_id="s2",
            data={**entries[0].data, "protocol": "ssh", "client_tls": False},
        )
        store.append([*entries, ssh])
        store.append(review_entries(NOON + 20))
    elif name == "broken":
        store.append(session_entries("s1", start=NOON))
        tamper(config_file, 2)


@pytest.mark.parametrize("name", ["empty", "sessions", "broken"])
def test_the_control_map_writes_what_it_wrote_as_code(store, config_file, tmp_path, name):
    _scenario(name, store, config_file)
    folder = tmp_path / "pack"

    make_pack(store, config_file, folder)

    before = json.loads(CONTROLS_BEFORE.read_text())[name]
    markdown = (folder / "index.md").read_text()
    assert summary(folder)["controls"] == before["controls"]
    table = markdown[markdown.index("## Controls") : markdown.index("## Chain verification")]
    assert table == before["markdown"]
