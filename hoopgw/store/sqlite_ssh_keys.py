"""The SQLite implementation of :class:`~hoopgw.records.SshKeyStore`."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hoopgw.audit.chain import canonical_json
from hoopgw.errors import StoreError
from hoopgw.records import SshKeyRecord, SshKeyStore

_COLUMNS = (
    "fingerprint, identity, groups, public_key, comment, created_at, revoked_at, last_used_at"
)


def _record(row: tuple[Any, ...]) -> SshKeyRecord:
    fingerprint, identity, groups, public_key, comment, created_at, revoked_at, used = row
    return SshKeyRecord(
        fingerprint=fingerprint,
        identity=identity,
        groups=tuple(json.loads(groups)),
        public_key=public_key,
        comment=comment,
        created_at=created_at,
        revoked_at=revoked_at,
        last_used_at=used,
    )


class SQLiteSshKeyStore(SshKeyStore):
    """Mixed into :class:`~hoopgw.store.sqlite.SQLiteStore`; uses its ``_conn``."""

    _conn: sqlite3.Connection

    def add_ssh_key(self, key: SshKeyRecord) -> None:
        """See :meth:`SshKeyStore.add_ssh_key`."""
        try:
            self._conn.execute(
                f"INSERT INTO ssh_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    key.fingerprint,
                    key.identity,
                    canonical_json(list(key.groups)),
                    key.public_key,
                    key.comment,
                    key.created_at,
                    key.revoked_at,
                    key.last_used_at,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"the SSH key {key.fingerprint} is registered already") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add an SSH key: {exc}") from exc

    def get_ssh_key(self, fingerprint: str) -> SshKeyRecord | None:
        """See :meth:`SshKeyStore.get_ssh_key`."""
        try:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM ssh_keys WHERE fingerprint = ?",  # noqa: S608
                (fingerprint,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read an SSH key: {exc}") from exc
        return None if row is None else _record(row)

    def list_ssh_keys(self) -> list[SshKeyRecord]:
        """See :meth:`SshKeyStore.list_ssh_keys`."""
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM ssh_keys ORDER BY created_at, fingerprint"  # noqa: S608
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list SSH keys: {exc}") from exc
        return [_record(row) for row in rows]

    def revoke_ssh_key(self, fingerprint: str, *, when: float) -> bool:
        """See :meth:`SshKeyStore.revoke_ssh_key`."""
        try:
            cursor = self._conn.execute(
                "UPDATE ssh_keys SET revoked_at = ? WHERE fingerprint = ? AND revoked_at IS NULL",
                (when, fingerprint),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot revoke an SSH key: {exc}") from exc
        return cursor.rowcount == 1

    def touch_ssh_key(self, fingerprint: str, when: float) -> None:
        """See :meth:`SshKeyStore.touch_ssh_key`."""
        try:
            self._conn.execute(
                "UPDATE ssh_keys SET last_used_at = ? WHERE fingerprint = ?", (when, fingerprint)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record the use of an SSH key: {exc}") from exc
