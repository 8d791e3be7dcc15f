"""Tests for hoopgw.cli.audit: verify, prune and keygen against a real SQLite store in tmp_path.

Each kind of tampering is done with a raw SQLite connection to the store file, as an attacker
with write access to the file would.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from hoopgw.audit.chain import Durability, durability_entry, record_hash_v2
from hoopgw.audit.checkpoints import (
    KEY_NAME,
    Checkpoint,
    checkpoint_file_name,
    generate_signing_key,
    private_key_pem,
    sign_checkpoint,
    verifier_key,
    write_checkpoint_file,
)
from hoopgw.audit.journal import AuditJournal
from hoopgw.audit.writer import encode_entry
from hoopgw.cli.main import main
from hoopgw.records import AuditEntry
from hoopgw.runtime import logs
from hoopgw.store import SQLiteStore

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"
"""
SIGNED = CONFIG + 'signing_key = "file:signing.pem"\n'
DAY = 86400.0


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", ())


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def session(session_id, start):
    return [
        AuditEntry(kind="session_started", session_id=session_id, time=start, data={}),
        AuditEntry(
            kind="command_received",
            session_id=session_id,
            time=start + 1,
            data={"seq": 1, "kind": "query", "text": "SELECT 1"},
        ),
        AuditEntry(
            kind="session_closed", session_id=session_id, time=start + 2, data={"reason": "x"}
        ),
    ]


@pytest.fixture
def setup(tmp_path):
    """A config with a signing key, and a store with 6 records: 3 old, 3 recent."""
    key = generate_signing_key()
    (tmp_path / "signing.pem").write_bytes(private_key_pem(key))
    config = tmp_path / "hoopgw.toml"
    config.write_text(SIGNED)
    store = SQLiteStore(str(tmp_path / "audit.db"))
    store.migrate()
    now = time.time()
    store.append(session("old", now - 100 * DAY))
    store.append(session("new", now - 1 * DAY))
    store.close()
    raw = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    yield config, key, raw, tmp_path
    raw.close()


def checkpoint_now(folder: Path, raw, key, seq=None):
    """Sign the record at ``seq`` (default: the head) into ``folder``."""
    query = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
    if seq is not None:
        query = f"SELECT seq, hash FROM audit_records WHERE seq = {seq}"
    at, digest = raw.execute(query).fetchone()
    signed = Checkpoint(origin=KEY_NAME, seq=at, hash=digest, time=int(time.time()))
    return write_checkpoint_file(folder, at, sign_checkpoint(signed, key))


# -- verify ----------------------------------------------------------------------------------


def test_verify_an_intact_store(setup, capsys):
    config, *_ = setup
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 0
    assert out.startswith("ok: 6 records intact (seq 1 to 6), head ")
    assert "checkpoint: none found" in out


def test_verify_json(setup, capsys):
    config, key, raw, tmp_path = setup
    path = checkpoint_now(tmp_path / "checkpoints", raw, key)
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["ok"] is True
    assert set(report) == {
        "ok", "records_checked", "first_seq", "last_seq", "last_hash", "first_bad_seq",
        "problem", "pruned", "durability", "checkpoint", "journal",
    }  # fmt: skip
    assert (report["records_checked"], report["first_seq"], report["last_seq"]) == (6, 1, 6)
    assert report["checkpoint"]["file"] == str(path)
    assert report["checkpoint"]["ok"] is True and report["checkpoint"]["seq"] == 6


def test_verify_says_which_durability_mode_was_in_force_for_which_records(setup, capsys):
    config, _, _, tmp_path = setup
    store = SQLiteStore(str(tmp_path / "audit.db"))
    os_mode = Durability(mode="os", sync_interval=0.02)
    store.append([durability_entry(os_mode, now=1e9), *session("later", 1e9 + 1)])
    store.close()
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("durability: ")]
    assert len(lines) == 2
    assert lines[0].startswith("durability: records 1 to 6 (")
    assert "mode not recorded" in lines[0]
    assert lines[1].startswith(
        "durability: records 7 to 10 (2001-09-09T01:46:40Z to 2001-09-09T01:46:43Z): os: each"
    )
    assert "on disk within 0.02 s (a crash of the host could lose" in lines[1]
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    assert json.loads(out)["durability"][1] == {
        "mode": "os",
        "sync_interval": 0.02,
        "first_seq": 7,
        "last_seq": 10,
        "since": "2001-09-09T01:46:40Z",
        "until": "2001-09-09T01:46:43Z",
    }


def journal_with(tmp_path, *numbers_and_sessions):
    """An audit journal beside audit.db whose entries hold the given sessions' records."""
    journal = AuditJournal(str(tmp_path / "audit.db.audit-journal"))
    journal.unapplied(0)
    for entries in numbers_and_sessions:
        journal.append([encode_entry(e) for e in entries])
    return journal


def test_verify_fails_while_a_stopped_gateways_journal_holds_records(setup, capsys):
    config, _, _, tmp_path = setup
    journal_with(tmp_path, session("crashed", time.time())).close()
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert out.startswith("ok: 6 records intact")
    assert "INCOMPLETE: the audit journal" in out and "holds 3 record(s)" in out
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["journal"]["waiting"] == 3 and report["journal"]["gateway_running"] is False


def test_verify_notes_records_on_their_way_while_the_gateway_runs(setup, capsys):
    config, _, _, tmp_path = setup
    journal = journal_with(tmp_path, session("live", time.time()))  # held open, as a writer does
    try:
        code, out, _ = run(capsys, "audit", "verify", "-c", config)
    finally:
        journal.close()
    assert code == 0
    assert "journal: 3 record(s) on their way to the store (the gateway runs)" in out


def test_verify_ignores_journal_records_the_store_holds(setup, capsys):
    config, _, raw, tmp_path = setup
    journal_with(tmp_path, session("old", 1.0)).close()
    raw.execute("INSERT INTO audit_journal_marks (instance, applied) VALUES ('', 3)")
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 0 and "journal" not in out


def test_verify_an_empty_store(tmp_path, capsys):
    (tmp_path / "hoopgw.toml").write_text(CONFIG)
    code, out, _ = run(capsys, "audit", "verify", "-c", tmp_path / "hoopgw.toml")
    assert code == 0 and out.startswith("ok: the audit log is empty")


def test_changing_one_byte_of_one_record_is_detected(setup, capsys):
    config, _, raw, _ = setup
    raw.execute(
        "UPDATE audit_records SET data = replace(data, 'SELECT 1', 'SELECT 2') WHERE seq = 5"
    )
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "FAILED: record 5 was changed (its content does not match its hash)" in out
    assert "intact up to record 4" in out


def test_deleting_one_record_is_detected(setup, capsys):
    config, _, raw, _ = setup
    raw.execute("DELETE FROM audit_records WHERE seq = 3")
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert (report["first_bad_seq"], report["problem"]) == (3, "record 3 is missing")


def test_inserting_one_record_is_detected(setup, capsys):
    config, _, raw, _ = setup
    prev = raw.execute("SELECT hash FROM audit_records WHERE seq = 4").fetchone()[0]
    digest = record_hash_v2(
        seq=5, kind="k", session_id="new", time=1.0, prev_hash=prev, data_json="{}"
    )
    raw.execute("UPDATE audit_records SET seq = seq + 10 WHERE seq >= 5")
    raw.execute("UPDATE audit_records SET seq = seq - 9 WHERE seq >= 15")
    raw.execute(
        "INSERT INTO audit_records VALUES (5, 'k', 'new', 1.0, '{}', ?, ?, '', 2)", (prev, digest)
    )
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "FAILED: record 6 does not follow record 5" in out


def test_swapping_two_records_is_detected(setup, capsys):
    config, _, raw, _ = setup
    raw.execute("UPDATE audit_records SET seq = -1 WHERE seq = 2")
    raw.execute("UPDATE audit_records SET seq = 2 WHERE seq = 4")
    raw.execute("UPDATE audit_records SET seq = 4 WHERE seq = -1")
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "(first bad record: 2)" in out


def test_truncating_the_tail_is_detected_against_the_latest_checkpoint(setup, capsys):
    config, key, raw, tmp_path = setup
    checkpoint_now(tmp_path / "checkpoints", raw, key, seq=3)
    checkpoint_now(tmp_path / "checkpoints", raw, key)  # the latest: record 6
    raw.execute("DELETE FROM audit_records WHERE seq > 4")
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert out.startswith("ok: 4 records intact")  # the chain alone looks fine
    assert (
        "checkpoint-00000000000000000006.txt: the log was truncated: the checkpoint covers"
        " record 6, the log ends at record 4" in out
    )


def test_an_explicit_older_checkpoint_is_used_instead_of_the_latest(setup, capsys):
    config, key, raw, tmp_path = setup
    older = checkpoint_now(tmp_path / "elsewhere", raw, key, seq=3)
    checkpoint_now(tmp_path / "checkpoints", raw, key)
    raw.execute("DELETE FROM audit_records WHERE seq > 4")
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--checkpoint", older)
    assert code == 0
    assert "(record 3, signed " in out and "the log holds that record unchanged" in out


def test_a_forged_checkpoint_fails(setup, capsys):
    config, key, raw, tmp_path = setup
    path = checkpoint_now(tmp_path / "checkpoints", raw, key)
    path.write_text(path.read_text().replace("\n6\n", "\n5\n"))
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["problem"] == ""  # the chain itself is intact
    assert "changed or forged" in report["checkpoint"]["problem"]


def test_a_checkpoint_signed_by_another_key_fails(setup, capsys):
    config, _, raw, tmp_path = setup
    path = checkpoint_now(tmp_path / "mine", raw, generate_signing_key())
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--checkpoint", path)
    assert code == 1
    assert "holds no signature by this key" in out


def test_the_public_key_can_be_given_as_a_verifier_key_or_a_file(setup, capsys):
    config, key, raw, tmp_path = setup
    path = checkpoint_now(tmp_path / "cp", raw, key)
    (tmp_path / "hoopgw.toml").write_text(CONFIG)  # no private key on the verifying side
    public = verifier_key(key.public_key())
    (tmp_path / "public.txt").write_text(public + "\n")
    for given in (public, tmp_path / "public.txt"):
        code, out, _ = run(
            capsys, "audit", "verify", "-c", config, "--checkpoint", path, "--public-key", given
        )
        assert code == 0, out
    other = verifier_key(generate_signing_key().public_key())
    code, _, _ = run(
        capsys, "audit", "verify", "-c", config, "--checkpoint", path, "--public-key", other
    )
    assert code == 1


def test_a_checkpoint_without_any_public_key_is_a_usage_error(setup, capsys):
    config, key, raw, tmp_path = setup
    path = checkpoint_now(tmp_path / "cp", raw, key)
    config.write_text(CONFIG)
    code, _, err = run(capsys, "audit", "verify", "-c", config, "--checkpoint", path)
    assert code == 2
    assert "gateway.signing_key" in err and "--public-key" in err


def test_verify_shows_progress_on_stderr(setup, capsys, monkeypatch):
    from hoopgw.cli import common

    monkeypatch.setattr(common, "PROGRESS_INTERVAL", 0)
    config, *_ = setup
    _, _, err = run(capsys, "audit", "verify", "-c", config)
    lines = [line.split(" in ")[0] for line in err.splitlines()]
    assert lines == [f"hoopgw: read {n} records" for n in range(1, 7)] + [
        "hoopgw: verified 6 records"
    ]


# -- prune -----------------------------------------------------------------------------------


def test_prune_then_verify_passes_and_shows_the_pruned_range(setup, capsys):
    config, _, _, tmp_path = setup
    code, out, _ = run(capsys, "audit", "prune", "-c", config, "--older-than", "90d")
    assert code == 0
    assert out.startswith("pruned records 1 to 3 (3 records, 1 session(s)) older than ")
    assert "recorded as record 7" in out
    assert f"checkpoint: {tmp_path / 'checkpoints' / checkpoint_file_name(7)}" in out

    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 0, out
    assert out.startswith("ok: 4 records intact (seq 4 to 7)")
    assert "pruned: records 1 to 3 (older than " in out
    assert "recorded as record 7" in out
    assert "(record 7, signed " in out  # the checkpoint prune wrote

    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    [pruned] = json.loads(out)["pruned"]
    assert (pruned["first_seq"], pruned["last_seq"], pruned["record_seq"]) == (1, 3, 7)
    assert pruned["sessions_removed"] == 1
    code, out, _ = run(capsys, "sessions", "list", "-c", config, "--json")
    assert [s["id"] for s in json.loads(out)] == ["new"]


def test_deleting_old_records_without_prune_is_detected(setup, capsys):
    config, _, raw, _ = setup
    raw.execute("DELETE FROM audit_records WHERE seq <= 3")
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "records 1 to 3 are missing and no pruned record accounts for them" in out


def test_prune_with_nothing_old_enough(setup, capsys):
    config, *_ = setup
    code, out, _ = run(capsys, "audit", "prune", "-c", config, "--older-than", "200d", "--json")
    report = json.loads(out)
    assert code == 0 and report["pruned"] is None and report["checkpoint"] is None


def test_prune_json(setup, capsys):
    config, *_ = setup
    code, out, _ = run(capsys, "audit", "prune", "-c", config, "--older-than", "30d", "--json")
    report = json.loads(out)
    assert code == 0
    assert set(report) == {"pruned", "older_than", "checkpoint"}
    assert report["pruned"]["last_seq"] == 3


def test_prune_refuses_a_broken_chain(setup, capsys):
    config, _, raw, _ = setup
    raw.execute("UPDATE audit_records SET time = time + 1 WHERE seq = 2")
    code, _, err = run(capsys, "audit", "prune", "-c", config, "--older-than", "90d")
    assert code == 1
    assert "refusing to prune a broken chain: record 2 was changed" in err
    assert raw.execute("SELECT count(*) FROM audit_records").fetchone()[0] == 6


def test_prune_needs_a_valid_duration(setup, capsys):
    config, *_ = setup
    code, _, err = run(capsys, "audit", "prune", "-c", config, "--older-than", "90")
    assert code == 2 and "invalid duration" in err


# -- keygen ----------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_readable_only_by_its_owner(tmp_path, capsys):
    out_file = tmp_path / "signing.pem"
    code, out, err = run(capsys, "audit", "keygen", "--out", out_file)
    assert code == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert out.startswith(f"{KEY_NAME}+") and out.count("\n") == 1
    assert f'signing_key = "file:{out_file}"' in err
    # The config accepts it, and verify derives the same public key from it.
    (tmp_path / "hoopgw.toml").write_text(SIGNED)
    code, _, _ = run(capsys, "config", "check", "-c", tmp_path / "hoopgw.toml")
    assert code == 0


def test_keygen_never_overwrites_a_key(tmp_path, capsys):
    out_file = tmp_path / "signing.pem"
    out_file.write_text("the old key")
    code, out, err = run(capsys, "audit", "keygen", "--out", out_file)
    assert code == 1 and out == ""
    assert "cannot create" in err
    assert out_file.read_text() == "the old key"


# -- a PostgreSQL store shared by several gateway instances -----------------------------------


@pytest.fixture
def shared(tmp_path, pg_server, pg_database):
    """A config of instance gw-a on a PostgreSQL store that gw-a and gw-b have written to,
    and a signing key whose checkpoints each instance writes into its own folder."""
    url = f"postgresql://postgres@{pg_server.host}:{pg_server.port}/{pg_database}"
    key = generate_signing_key()
    (tmp_path / "signing.pem").write_bytes(private_key_pem(key))
    config = tmp_path / "hoopgw.toml"
    config.write_text(
        f'[gateway]\nstore = "{url}"\ninstance = "gw-a"\nsigning_key = "file:signing.pem"\n'
    )
    now = time.time()
    from hoopgw.store import open_store

    for name, offset in (("gw-a", 0), ("gw-b", 10)):
        store = open_store(url, instance=name)
        store.migrate()
        store.append(session(f"{name}-old", now - 100 * DAY + offset))
        store.append(session(f"{name}-new", now - DAY + offset))
        head = store.last_record()
        signed = Checkpoint(origin=KEY_NAME, seq=head.seq, hash=head.hash, time=int(now))
        write_checkpoint_file(
            tmp_path / "checkpoints" / name, head.seq, sign_checkpoint(signed, key)
        )
        store.close()
    return config, url


def test_verify_checks_every_instances_chain_and_checkpoint(capsys, shared) -> None:
    config, _ = shared
    code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert [c["instance"] for c in report["chains"]] == ["gw-a", "gw-b"]
    for chain in report["chains"]:
        assert (chain["records_checked"], chain["checkpoint"]["ok"]) == (6, True)
        assert f"/checkpoints/{chain['instance']}/" in chain["checkpoint"]["file"]
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert "chain of instance gw-b:\nok: 6 records intact" in out


def test_a_changed_record_of_another_instance_fails_verification(capsys, shared) -> None:
    import psycopg

    config, url = shared
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE audit_records SET data = '{\"x\":1}' WHERE instance = 'gw-b' AND seq = 2"
        )
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "chain of instance gw-b:\nFAILED: record 2 was changed" in out


def test_records_moved_to_another_instances_chain_fail_verification(capsys, shared) -> None:
    import psycopg

    config, url = shared
    with psycopg.connect(url, autocommit=True) as conn:
        # gw-b's chain passed off as a third instance's: its genesis no longer fits.
        conn.execute("UPDATE audit_records SET instance = 'gw-c' WHERE instance = 'gw-b'")
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 1
    assert "chain of instance gw-c:\nFAILED: record 1 does not follow" in out


def test_verify_reports_an_instance_that_stopped_without_draining(capsys, shared) -> None:
    from hoopgw.store import open_store

    config, url = shared
    crashed = open_store(url, instance="gw-b")
    crashed.writer_started("host-b:/var/lib/hoopgw/gw-b.audit-journal", now=time.time())
    running = open_store(url, instance="gw-a")
    running.writer_started("host-a:/var/lib/hoopgw/gw-a.audit-journal", now=time.time())
    try:
        code, out, _ = run(capsys, "audit", "verify", "-c", config)
        assert code == 0, out  # both writers run: their journals drain
        crashed.close()  # as a crash would: the lock goes, the journal stays undrained
        code, out, _ = run(capsys, "audit", "verify", "-c", config)
        assert code == 1
        assert (
            "INCOMPLETE: the audit writer of instance gw-b stopped without draining its journal"
            " host-b:/var/lib/hoopgw/gw-b.audit-journal"
        ) in out
        drained = open_store(url, instance="gw-b")
        drained.writer_started("host-b:/var/lib/hoopgw/gw-b.audit-journal", now=time.time())
        drained.writer_stopped(now=time.time())
        drained.close()
        code, out, _ = run(capsys, "audit", "verify", "-c", config, "--json")
        assert code == 0, out
        writers = {w["instance"]: w for w in json.loads(out)["writers"]}
        assert (writers["gw-a"]["running"], writers["gw-b"]["undrained"]) == (True, False)
    finally:
        running.close()


def test_a_second_writer_of_one_instance_is_refused(shared) -> None:
    from hoopgw.errors import StoreError
    from hoopgw.store import open_store

    _, url = shared
    first, second = open_store(url, instance="gw-a"), open_store(url, instance="gw-a")
    try:
        first.writer_started("host-a:/j", now=1.0)
        with pytest.raises(StoreError, match=r"runs already .*journal host-a:/j"):
            second.writer_started("host-2:/j", now=2.0)
    finally:
        first.close()
        second.close()


def test_prune_prunes_every_instances_chain(capsys, shared, tmp_path) -> None:
    config, _ = shared
    code, out, _ = run(capsys, "audit", "prune", "-c", config, "--older-than", "30d", "--json")
    assert code == 0, out
    chains = json.loads(out)["chains"]
    assert [(c["instance"], c["pruned"]["last_seq"]) for c in chains] == [("gw-a", 3), ("gw-b", 3)]
    assert all(f"/checkpoints/{c['instance']}/" in c["checkpoint"] for c in chains)
    code, out, _ = run(capsys, "audit", "verify", "-c", config)
    assert code == 0, out
