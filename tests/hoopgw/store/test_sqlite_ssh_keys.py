"""Tests for hoopgw.store.sqlite_ssh_keys: SSH public keys in the store (SQLite and
PostgreSQL, which shares its queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hoopgw.errors import StoreError
from hoopgw.records import SshKeyRecord
from hoopgw.store import open_store


def _record(fingerprint: str = "SHA256:" + "a" * 43, **changes: Any) -> SshKeyRecord:
    values: dict[str, Any] = {
        "fingerprint": fingerprint,
        "identity": "robot",
        "groups": ("agents", "ops"),
        "public_key": "ssh-ed25519 AAAA",
        "comment": "robot@ci",
        "created_at": 10.0,
        **changes,
    }
    return SshKeyRecord(**values)


@pytest.fixture
def store(any_store: Any) -> Any:
    # Each back end (conftest.py).
    return any_store


def test_round_trip_list_touch_revoke(store: Any) -> None:
    first, second = _record(), _record("SHA256:" + "b" * 43, created_at=5.0)
    store.add_ssh_key(first)
    store.add_ssh_key(second)
    assert store.get_ssh_key(first.fingerprint) == first
    assert store.get_ssh_key("SHA256:none") is None
    assert store.list_ssh_keys() == [second, first]
    store.touch_ssh_key(first.fingerprint, 20.0)
    assert store.get_ssh_key(first.fingerprint).last_used_at == 20.0
    assert store.revoke_ssh_key(first.fingerprint, when=30.0)
    assert not store.revoke_ssh_key(first.fingerprint, when=31.0)
    assert not store.revoke_ssh_key("SHA256:none", when=31.0)
    assert store.get_ssh_key(first.fingerprint).revoked_at == 30.0


def test_a_fingerprint_is_registered_once(store: Any) -> None:
    store.add_ssh_key(_record())
    with pytest.raises(StoreError, match="registered already"):
        store.add_ssh_key(_record(identity="other"))


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    opened = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    opened.migrate()
    opened.close()
    for call in (
        lambda: opened.add_ssh_key(_record()),
        lambda: opened.get_ssh_key("x"),
        opened.list_ssh_keys,
        lambda: opened.revoke_ssh_key("x", when=1.0),
        lambda: opened.touch_ssh_key("x", 1.0),
    ):
        with pytest.raises(StoreError):
            call()


def test_session_records_by_kind(store: Any) -> None:
    from hoopgw.records import AuditEntry

    store.append(
        [
            AuditEntry(kind="terminal_output", session_id="s1", time=1.0, data={"seq": 1}),
            AuditEntry(kind="terminal_output", session_id="s2", time=2.0, data={"seq": 1}),
            AuditEntry(kind="command_decided", session_id="s1", time=3.0, data={"seq": 1}),
            AuditEntry(kind="terminal_output", session_id="s1", time=4.0, data={"seq": 2}),
        ]
    )
    found = list(store.session_records("s1", "terminal_output"))
    assert [(r.time, r.data["seq"]) for r in found] == [(1.0, 1), (4.0, 2)]
