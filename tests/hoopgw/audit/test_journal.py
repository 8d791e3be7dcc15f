"""Tests for the audit journal: numbering, durability, recovery after a crash, locking, reset."""

from __future__ import annotations

import os
import stat

import pytest

from hoopgw.audit.chain import EncodedEntry, encoded_entry
from hoopgw.audit.journal import AuditJournal, JournalBacklog, JournalError, backlog
from hoopgw.audit.writer import encode_entry
from hoopgw.records import AuditEntry


def entry(n: int) -> EncodedEntry:
    return encoded_entry(
        AuditEntry(kind="command_received", session_id="s", time=float(n), data={"seq": n})
    )


def lines(*numbers: int) -> list[bytes]:
    return [encode_entry(entry(n)) for n in numbers]


class Syncs:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.failing:
            raise OSError(5, "Input/output error")
        os.fdatasync(fd)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store.db.audit-journal")


def opened(path, **kwargs) -> AuditJournal:
    journal = AuditJournal(path, **kwargs)
    journal.unapplied(0)
    return journal


def test_entries_are_numbered_from_1_and_synced_once_per_append(path):
    syncs = Syncs()
    journal = opened(path, sync=syncs)
    assert journal.append(lines(1, 2)) == 2
    assert journal.append(lines(3)) == 3
    assert syncs.calls == 2
    journal.close()
    with open(path, "rb") as f:
        assert [line.split(b" ", 1)[0] for line in f.read().splitlines()] == [b"1", b"2", b"3"]


def test_a_new_file_is_private(path):
    opened(path).close()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_after_a_crash_the_entries_beyond_the_stores_mark_come_back_in_order(path):
    journal = opened(path)
    journal.append(lines(1, 2, 3))
    journal.close()  # the process died before the store had entries 2 and 3
    again = AuditJournal(path)
    assert again.unapplied(1) == [(2, entry(2)), (3, entry(3))]
    assert again.append(lines(4)) == 4


def test_numbering_goes_on_after_the_stores_mark_when_the_file_was_emptied(path):
    journal = opened(path)
    journal.append(lines(1, 2))
    assert journal.reset(applied=2)
    journal.close()
    again = AuditJournal(path)
    assert again.unapplied(2) == []
    assert again.append(lines(3)) == 3


def test_a_torn_last_line_is_cut_off_and_later_entries_follow_the_last_whole_one(path):
    journal = opened(path)
    journal.append(lines(1))
    journal.close()
    with open(path, "ab") as f:
        f.write(b'2 ["command_rec')  # the process died mid-write: never answered
    again = AuditJournal(path)
    assert again.unapplied(0) == [(1, entry(1))]
    assert again.append(lines(2)) == 2
    again.close()
    assert [n for n, _ in AuditJournal(path).unapplied(0)] == [1, 2]


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"1 not json\n", "at byte 0"),
        (b"x " + encode_entry(entry(1)), "at byte 0"),
        (b"1 " + encode_entry(entry(1)) + b"1 " + encode_entry(entry(2)), "does not follow"),
    ],
)
def test_a_damaged_journal_is_refused_with_where_it_is_damaged(path, content, where):
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(JournalError, match=where):
        AuditJournal(path).unapplied(0)


def test_a_second_writer_cannot_open_a_journal_in_use(path):
    first = opened(path)
    with pytest.raises(JournalError, match="in use by another audit writer"):
        AuditJournal(path)
    first.close()
    AuditJournal(path).close()


def test_a_journal_that_cannot_be_opened_says_why(tmp_path):
    with pytest.raises(JournalError, match="cannot open the audit journal"):
        AuditJournal(str(tmp_path / "missing" / "journal"))


def test_reset_waits_until_the_store_holds_everything(path):
    journal = opened(path, reset_size=10)
    journal.append(lines(1, 2))
    assert journal.wants_reset()
    assert not journal.reset(applied=1)
    assert os.path.getsize(path) > 0
    assert journal.reset(applied=2)
    assert os.path.getsize(path) == 0 and not journal.wants_reset()
    assert journal.append(lines(3)) == 3


def test_a_postponed_reset_is_asked_for_again_after_as_much_growth(path):
    batch = lines(*range(1, 11))
    assert sum(len(line) for line in batch) > 300
    journal = opened(path, reset_size=300)
    journal.append(batch)
    assert journal.wants_reset()
    journal.postpone_reset()  # the store is behind: do not ask at every append
    assert not journal.wants_reset()
    journal.append(batch)
    assert journal.wants_reset()
    assert journal.reset(applied=journal.last_number)
    journal.append(lines(1))
    assert not journal.wants_reset()


def test_a_failed_append_leaves_nothing_behind_and_numbers_stay_in_step(path):
    syncs = Syncs()
    journal = opened(path, sync=syncs)
    journal.append(lines(1))
    syncs.failing = True
    with pytest.raises(JournalError, match="cannot write the audit journal"):
        journal.append(lines(2))
    syncs.failing = False
    assert journal.append(lines(3)) == 2
    journal.close()
    assert AuditJournal(path).unapplied(0) == [(1, entry(1)), (2, entry(3))]


def test_appending_before_reading_the_journal_is_a_programming_error(path):
    journal = AuditJournal(path)
    with pytest.raises(RuntimeError):
        journal.append(lines(1))
    journal.unapplied(0)
    with pytest.raises(RuntimeError):
        journal.unapplied(0)


def test_opening_flushes_the_folder_so_a_new_journal_survives_a_power_loss(path, monkeypatch):
    synced_folders = []
    fsync = os.fsync

    def recording_fsync(fd):
        synced_folders.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    opened(path).close()
    # fdatasync of the file alone does not make its new name in the folder durable.
    assert True in synced_folders


def test_a_journal_that_starts_beyond_the_stores_mark_is_refused(path):
    journal = opened(path)
    journal.append(lines(1, 2))
    assert journal.reset(applied=2)
    journal.append(lines(3, 4))
    journal.close()
    # The store was replaced by an older copy that holds entries up to 1 only: entry 2 is in
    # neither, and appending 3 and 4 after 1 would hide that.
    again = AuditJournal(path)
    with pytest.raises(JournalError, match="older than the journal"):
        again.unapplied(1)
    again.close()
    assert [n for n, _ in AuditJournal(path).unapplied(2)] == [3, 4]


def test_a_gap_inside_the_journal_is_damage(path):
    with open(path, "wb") as f:
        f.write(b"1 " + encode_entry(entry(1)) + b"3 " + encode_entry(entry(3)))
    with pytest.raises(JournalError, match="does not follow"):
        AuditJournal(path).unapplied(0)


def test_an_entry_line_with_a_carriage_return_reads_back(path):
    line = b'["command_received",\r"s",1.0,{"seq":1}]'  # JSON allows CR as whitespace
    journal = opened(path)
    journal.append([line])
    journal.close()
    assert AuditJournal(path).unapplied(0) == [(1, entry(1))]


def test_a_reset_whose_sync_fails_keeps_later_appends_in_step(path, monkeypatch):
    syncs = Syncs()
    journal = opened(path, sync=syncs)
    journal.append(lines(1, 2))
    fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(JournalError, match="cannot empty"):
        journal.reset(applied=2)  # the file was cut, but the cut may not be durable
    monkeypatch.setattr(os, "fsync", fsync)
    journal.append(lines(3))
    syncs.failing = True
    with pytest.raises(JournalError):
        journal.append(lines(4))  # taken back: cut to where the file really ended
    syncs.failing = False
    journal.append(lines(5))
    journal.close()
    assert AuditJournal(path).unapplied(2) == [(3, entry(3)), (4, entry(5))]


def test_backlog_counts_what_the_store_lacks_and_sees_a_writer(tmp_path):
    path = str(tmp_path / "store.db.audit-journal")
    assert backlog(path, 0) is None
    assert backlog(None, 0) is None
    journal = opened(path)
    journal.append(lines(1, 2, 3))
    assert backlog(path, 1) == JournalBacklog(path=path, entries=2, in_use=True)
    journal.close()
    assert backlog(path, 1) == JournalBacklog(path=path, entries=2, in_use=False)
    assert backlog(path, 3) == JournalBacklog(path=path, entries=0, in_use=False)
    AuditJournal(path).close()  # the look took no lock away


def test_backlog_of_a_damaged_journal_says_so(tmp_path):
    with open(tmp_path / "store.db.audit-journal", "wb") as f:
        f.write(b"x " + encode_entry(entry(1)))
    with pytest.raises(JournalError, match="damaged"):
        backlog(str(tmp_path / "store.db.audit-journal"), 0)
