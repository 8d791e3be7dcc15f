"""The SQLite implementation of :class:`~hoopgw.store.agents.AgentStore`."""

from __future__ import annotations

import sqlite3
from typing import Any

from hoopgw.errors import StoreError
from hoopgw.store.agents import AgentRecord, AgentStore

_COLUMNS = "name, token_id, token_sha256, created_at, revoked_at, last_seen_at, online, address"


def _record(row: tuple[Any, ...]) -> AgentRecord:
    name, token_id, token_sha256, created_at, revoked_at, last_seen_at, online, address = row
    return AgentRecord(
        name=name,
        token_id=token_id,
        token_sha256=token_sha256,
        created_at=created_at,
        revoked_at=revoked_at,
        last_seen_at=last_seen_at,
        online=bool(online),
        address=address,
    )


class SQLiteAgentStore(AgentStore):
    """Mixed into :class:`~hoopgw.store.sqlite.SQLiteStore`; uses its ``_conn``."""

    _conn: sqlite3.Connection

    def add_agent(self, agent: AgentRecord) -> None:
        """See :meth:`AgentStore.add_agent`."""
        try:
            self._conn.execute(
                f"INSERT INTO agents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    agent.name,
                    agent.token_id,
                    agent.token_sha256,
                    agent.created_at,
                    agent.revoked_at,
                    agent.last_seen_at,
                    int(agent.online),
                    agent.address,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"an agent named {agent.name!r} exists already") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add an agent: {exc}") from exc

    def _one(self, where: str, value: str) -> AgentRecord | None:
        try:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM agents WHERE {where} = ?",  # noqa: S608
                (value,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read an agent: {exc}") from exc
        return None if row is None else _record(row)

    def get_agent(self, name: str) -> AgentRecord | None:
        """See :meth:`AgentStore.get_agent`."""
        return self._one("name", name)

    def get_agent_by_token(self, token_id: str) -> AgentRecord | None:
        """See :meth:`AgentStore.get_agent_by_token`."""
        return self._one("token_id", token_id)

    def list_agents(self) -> list[AgentRecord]:
        """See :meth:`AgentStore.list_agents`."""
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM agents ORDER BY name"  # noqa: S608
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list agents: {exc}") from exc
        return [_record(row) for row in rows]

    def revoke_agent(self, name: str, *, when: float) -> bool:
        """See :meth:`AgentStore.revoke_agent`."""
        try:
            cursor = self._conn.execute(
                "UPDATE agents SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (when, name),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot revoke an agent: {exc}") from exc
        return cursor.rowcount == 1

    def agent_seen(self, name: str, *, when: float, online: bool, address: str | None) -> None:
        """See :meth:`AgentStore.agent_seen`."""
        try:
            self._conn.execute(
                "UPDATE agents SET last_seen_at = ?, online = ?, address = ? WHERE name = ?",
                (when, int(online), address, name),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record an agent's state: {exc}") from exc
