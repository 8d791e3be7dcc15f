"""Tests for hoopgw.audit.checkpoints: the signed note, keys, files, the Checkpointer,
verify_log."""

from __future__ import annotations

import base64
import sqlite3
import stat
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from hoopgw.audit.chain import record_hash_v2
from hoopgw.audit.checkpoints import (
    KEY_NAME,
    Checkpoint,
    Checkpointer,
    CheckpointError,
    checkpoint_file_name,
    generate_signing_key,
    key_id,
    latest_checkpoint_file,
    load_signing_key,
    parse_verifier_key,
    private_key_pem,
    read_checkpoint_file,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
    verify_log,
    write_checkpoint_file,
)
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.store import SQLiteStore

KEY = generate_signing_key()
PUBLIC = KEY.public_key()
CHECKPOINT = Checkpoint(origin=KEY_NAME, seq=1234, hash="ab" * 32, time=1795626000.0)


# -- the note --------------------------------------------------------------------------------


def test_a_signed_checkpoint_verifies_and_reads_back():
    note = sign_checkpoint(CHECKPOINT, KEY)
    body, signature = note.split("\n\n")
    assert body == f"hoopgw-audit\n1234\n{'ab' * 32}\n2026-11-25T17:00:00Z"
    assert signature.startswith(f"\u2014 {KEY_NAME} ")
    blob = base64.b64decode(signature.split()[2])
    assert blob[:4] == key_id(PUBLIC) and len(blob) == 4 + 64
    assert verify_checkpoint(note, PUBLIC) == CHECKPOINT


def test_the_signature_is_ed25519_over_the_body_as_signed_note_specifies():
    note = sign_checkpoint(CHECKPOINT, KEY)
    body = note.split("\n\n")[0] + "\n"
    blob = base64.b64decode(note.split("\n\n")[1].split()[2])
    PUBLIC.verify(blob[4:], body.encode())  # raises if not


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n1234\n", "\n1235\n"), ("ab" * 32, "ac" + "ab" * 31), ("17:00:00", "17:00:01")],
)
def test_a_changed_checkpoint_fails(old, new):
    forged = sign_checkpoint(CHECKPOINT, KEY).replace(old, new)
    with pytest.raises(CheckpointError, match="changed or forged"):
        verify_checkpoint(forged, PUBLIC)


def test_a_checkpoint_signed_by_another_key_fails():
    forged = sign_checkpoint(CHECKPOINT, generate_signing_key())
    with pytest.raises(CheckpointError, match="no signature by this key"):
        verify_checkpoint(forged, PUBLIC)


def test_a_forged_signature_under_the_right_key_id_fails():
    note = sign_checkpoint(CHECKPOINT, KEY)
    other = generate_signing_key().sign(b"anything")
    line = f"\u2014 {KEY_NAME} {base64.b64encode(key_id(PUBLIC) + other).decode()}\n"
    forged = note.split("\n\n")[0] + "\n\n" + line
    with pytest.raises(CheckpointError, match="changed or forged"):
        verify_checkpoint(forged, PUBLIC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hoopgw-audit\n1\n",
        "hoopgw-audit\n1\n" + "ab" * 32 + "\nnow\n\nnot a signature line\n",
        "hoopgw-audit\n1\n\n\u2014 hoopgw-audit !!!\n",
    ],
)
def test_malformed_notes_fail(text):
    with pytest.raises(CheckpointError):
        verify_checkpoint(text, PUBLIC)


def test_a_well_signed_note_that_is_no_checkpoint_fails():
    note = sign_checkpoint(CHECKPOINT, KEY)
    body = "other-log\n1\n" + "ab" * 32 + "\n2026-11-25T17:00:00Z\n"
    signature = base64.b64encode(key_id(PUBLIC) + KEY.sign(body.encode())).decode()
    assert note  # same key, another body
    with pytest.raises(CheckpointError, match="not a hoopgw-audit checkpoint"):
        verify_checkpoint(f"{body}\n\u2014 {KEY_NAME} {signature}\n", PUBLIC)


# -- keys ------------------------------------------------------------------------------------


def test_private_key_pem_round_trips():
    pem = private_key_pem(KEY).decode()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert verifier_key(load_signing_key(pem).public_key()) == verifier_key(PUBLIC)


def test_load_signing_key_refuses_other_keys_and_garbage():
    ec_pem = (
        generate_private_key(SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(CheckpointError, match="must be an Ed25519 key"):
        load_signing_key(ec_pem)
    with pytest.raises(CheckpointError, match="not an unencrypted PEM private key"):
        load_signing_key("not a key")


def test_verifier_key_round_trips_and_names_its_key_id():
    text = verifier_key(PUBLIC)
    name, id_hex, _ = text.split("+", 2)
    assert name == KEY_NAME and bytes.fromhex(id_hex) == key_id(PUBLIC)
    assert verifier_key(parse_verifier_key(text + "\n")) == text


@pytest.mark.parametrize(
    "text",
    ["", "hoopgw-audit+zz+AAAA", "other+00000000+" + "A" * 44, "hoopgw-audit+00000000+AAAA"],
)
def test_parse_verifier_key_refuses_anything_else(text):
    with pytest.raises(CheckpointError):
        parse_verifier_key(text)


def test_a_verifier_key_with_a_wrong_id_is_refused():
    name, _, encoded = verifier_key(PUBLIC).split("+", 2)
    with pytest.raises(CheckpointError, match="id does not match"):
        parse_verifier_key(f"{name}+00000000+{encoded}")


# -- files -----------------------------------------------------------------------------------


def test_write_checkpoint_file_is_readable_and_public(tmp_path):
    folder = tmp_path / "cp"
    path = write_checkpoint_file(folder, 1234, sign_checkpoint(CHECKPOINT, KEY))
    assert path == folder / checkpoint_file_name(1234)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert read_checkpoint_file(path, PUBLIC) == CHECKPOINT
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left


def test_write_checkpoint_file_failure_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        write_checkpoint_file(blocker / "cp", 1, "x")


def test_latest_checkpoint_file_is_the_highest_seq(tmp_path):
    assert latest_checkpoint_file(tmp_path / "missing") is None
    for seq in (9, 10, 200):
        write_checkpoint_file(tmp_path, seq, "x")
    (tmp_path / "notes.txt").write_text("")
    assert latest_checkpoint_file(tmp_path) == tmp_path / checkpoint_file_name(200)


def test_reading_a_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint_file(tmp_path / "none.txt", PUBLIC)


# -- the Checkpointer ------------------------------------------------------------------------


class Head:
    def __init__(self) -> None:
        self.seq = 0

    def __call__(self):
        if self.seq == 0:
            return None
        return attrs.make_class("R", ["seq", "hash"])(self.seq, f"{self.seq:064x}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checkpointer(tmp_path):
    head, clock = Head(), Clock()
    made = Checkpointer(
        key=KEY, directory=tmp_path, read_head=head, every=10, interval=60.0, clock=clock
    )
    return made, head, clock, tmp_path


def written(folder):
    return sorted(int(p.name[11:31]) for p in folder.glob("checkpoint-*.txt"))


def test_a_checkpoint_is_written_every_n_records(checkpointer):
    made, head, _, folder = checkpointer
    head.seq = 9
    assert made.committed(9) is None
    head.seq = 10
    path = made.committed(10)
    assert read_checkpoint_file(path, PUBLIC).seq == 10
    head.seq = 19
    made.committed(19)
    head.seq = 25
    made.committed(25)
    assert written(folder) == [10, 25]


def test_a_checkpoint_is_written_after_the_interval_if_the_chain_grew(checkpointer):
    made, head, clock, folder = checkpointer
    assert made.seconds_until_due() == 60.0
    clock.now += 60
    assert made.seconds_until_due() == 0
    assert made.write() is None  # nothing to sign yet
    assert made.seconds_until_due() == 60.0
    head.seq = 3
    made.committed(3)
    clock.now += 60
    made.write()
    checkpoint = read_checkpoint_file(folder / checkpoint_file_name(3), PUBLIC)
    assert (checkpoint.seq, checkpoint.hash, checkpoint.time) == (3, f"{3:064x}", 1120.0)
    assert made.write() is None  # the head has not moved since
    assert written(folder) == [3]


def test_the_latest_file_counts_as_the_last_checkpoint(checkpointer):
    _, head, clock, folder = checkpointer
    write_checkpoint_file(folder, 5, "x")
    again = Checkpointer(
        key=KEY, directory=folder, read_head=head, every=10, interval=60.0, clock=clock
    )
    head.seq = 5
    assert again.write() is None
    head.seq = 14
    assert again.committed(14) is None
    head.seq = 15
    assert again.committed(15) is not None


def test_a_failed_write_is_retried_at_the_interval_not_at_every_commit(tmp_path):
    head, clock = Head(), Clock()
    folder = tmp_path / "cp"
    made = Checkpointer(
        key=KEY, directory=folder, read_head=head, every=1, interval=60.0, clock=clock
    )
    folder.write_text("")  # a file where the folder should be
    head.seq = 1
    with pytest.raises(CheckpointError):
        made.committed(1)
    assert made.committed(1) is None
    assert made.seconds_until_due() == 60.0


def test_a_head_that_cannot_be_read_is_retried_at_the_interval_not_at_every_commit(tmp_path):
    # The writer's read_head syncs the store first; once a sync failed every later one fails
    # (SQLiteStore.sync), and asking at every commit would log a line every few milliseconds.
    clock, reads = Clock(), []

    def read_head():
        reads.append(clock.now)
        raise StoreError("cannot sync SQLite store: Input/output error")

    made = Checkpointer(
        key=KEY, directory=tmp_path, read_head=read_head, every=10, interval=60.0, clock=clock
    )
    with pytest.raises(StoreError):
        made.committed(10)
    assert made.committed(11) is None
    assert made.committed(19) is None
    assert reads == [1000.0]
    assert made.seconds_until_due() == 60.0


# -- verify_log: truncation and rewriting against a checkpoint, on a real store ----------------


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "audit.db"))
    store.migrate()
    store.append(
        [AuditEntry(kind="command_received", session_id="s", time=float(n), data={"n": n})
         for n in range(1, 11)]
    )  # fmt: skip
    yield store
    store.close()


def head_checkpoint(store, seq=None):
    record = store.last_record() if seq is None else next(iter(store.records(seq - 1)))
    return Checkpoint(origin=KEY_NAME, seq=record.seq, hash=record.hash, time=0.0)


def test_an_intact_log_matches_its_checkpoint(store):
    checkpoint = head_checkpoint(store, 7)
    result = verify_log(store.records(), checkpoint)
    assert result.ok and result.checkpoint == checkpoint and result.checkpoint_problem == ""


def test_without_a_checkpoint_only_the_chain_is_checked(store):
    result = verify_log(store.records(), None)
    assert result.ok and result.checkpoint is None


def test_truncating_the_tail_is_detected_against_a_checkpoint(store, tmp_path):
    checkpoint = head_checkpoint(store)
    raw = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    raw.execute("DELETE FROM audit_records WHERE seq > 8")
    raw.close()
    result = verify_log(store.records(), checkpoint)
    assert result.chain.ok  # the chain alone cannot see it
    assert not result.ok
    assert result.checkpoint_problem == (
        "the log was truncated: the checkpoint covers record 10, the log ends at record 8"
    )


def test_rewriting_and_rechaining_is_detected_against_a_checkpoint(store, tmp_path):
    checkpoint = head_checkpoint(store, 5)
    raw = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    rows = raw.execute("SELECT seq, kind, session_id, time, data FROM audit_records ORDER BY seq")
    prev = "0" * 64
    for seq, kind, session_id, time, data in rows.fetchall():
        if seq == 3:
            data = '{"n":333}'
        digest = record_hash_v2(
            seq=seq, kind=kind, session_id=session_id, time=time, prev_hash=prev, data_json=data
        )
        raw.execute(
            "UPDATE audit_records SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (data, prev, digest, seq),
        )
        prev = digest
    raw.close()
    result = verify_log(store.records(), checkpoint)
    assert result.chain.ok  # a forger who knows the hash function recomputed the chain
    assert result.checkpoint_problem == (
        "the log was rewritten: record 5 differs from the checkpoint's"
    )


def test_an_empty_log_is_truncated_against_any_checkpoint(tmp_path):
    empty = SQLiteStore(str(tmp_path / "empty.db"))
    empty.migrate()
    result = verify_log(empty.records(), CHECKPOINT)
    assert "the log is empty" in result.checkpoint_problem


def test_a_broken_chain_is_not_compared_with_the_checkpoint(store, tmp_path):
    raw = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    raw.execute("DELETE FROM audit_records WHERE seq = 2")
    raw.close()
    result = verify_log(store.records(), head_checkpoint(store))
    assert not result.ok and result.checkpoint_problem == ""


def test_a_checkpoint_of_the_last_pruned_record_is_checked_through_the_pruned_record(store):
    checkpoint = head_checkpoint(store)  # record 10
    store.prune(older_than=100.0, now=200.0)  # removes 1..10, appends 11
    assert verify_log(store.records(), checkpoint).ok
    forged = attrs.evolve(checkpoint, hash="0" * 64)
    assert "rewritten" in verify_log(store.records(), forged).checkpoint_problem


def test_a_checkpoint_older_than_the_pruning_cannot_be_checked(store):
    checkpoint = head_checkpoint(store, 4)
    store.prune(older_than=6.5, now=200.0)  # removes 1..6
    result = verify_log(store.records(), checkpoint)
    assert result.chain.ok and not result.ok
    assert "record 4 was pruned" in result.checkpoint_problem


def test_the_example_in_the_docs_verifies_with_the_key_shown_there():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "audit.md").read_text()
    note = doc.split("```\nhoopgw-audit\n", 1)[1].split("```", 1)[0]
    public = next(line for line in doc.splitlines() if line.startswith(f"{KEY_NAME}+"))
    checkpoint = verify_checkpoint("hoopgw-audit\n" + note, parse_verifier_key(public))
    assert checkpoint.seq == 1234
