"""The SQLite implementation of :class:`~hoopgw.reviews.ReviewStore`.

Columns are named after the record fields; tuples are stored as JSON arrays and booleans as
integers, so a record reads back equal to what was written.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import attrs

from hoopgw.audit.chain import canonical_json
from hoopgw.errors import StoreError
from hoopgw.reviews import GrantRecord, ReviewRecord, ReviewStore, ReviewVote

_R = TypeVar("_R")

_TABLES: dict[type, str] = {
    ReviewRecord: "reviews",
    ReviewVote: "review_votes",
    GrantRecord: "grants",
}


def _columns(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls))


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return canonical_json(list(value))
    if isinstance(value, bool):
        return int(value)
    return value


def _row(record: Any) -> tuple[Any, ...]:
    return tuple(_encode(getattr(record, name)) for name in _columns(type(record)))


def _record(cls: type[_R], row: tuple[Any, ...]) -> _R:
    values: dict[str, Any] = {}
    for field, value in zip(attrs.fields(cast(Any, cls)), row, strict=True):
        if field.type in ("tuple[str, ...]", "tuple[str | None, ...]", tuple[str, ...]):
            value = tuple(json.loads(value))
        elif field.type in ("bool", bool):
            value = bool(value)
        values[field.name] = value
    return cls(**values)


class SQLiteReviewStore(ReviewStore):
    """Mixed into :class:`~hoopgw.store.sqlite.SQLiteStore`; uses its ``_conn`` and ``path``."""

    _conn: sqlite3.Connection
    path: str

    _APPROVER_MATCH = (
        "EXISTS (SELECT 1 FROM json_each(reviews.approvers) WHERE json_each.value IN ({marks}))"
    )
    """Whether one of a review's approver groups is among ``{marks}`` (the dialect's JSON)."""

    @contextlib.contextmanager
    def _review_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot {action}: it exists already ({exc})") from exc
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise StoreError(f"cannot {action} in the store {self.path}: {exc}") from exc

    def _insert(self, record: Any, action: str) -> None:
        names = _columns(type(record))
        table = _TABLES[type(record)]
        with self._review_errors(action):
            self._conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 -- fixed names
                f"VALUES ({', '.join('?' for _ in names)})",
                _row(record),
            )

    def _select(self, cls: type[_R], where: str, params: tuple[Any, ...], action: str) -> list[_R]:
        names = _columns(cls)
        with self._review_errors(action):
            rows = self._conn.execute(
                f"SELECT {', '.join(names)} FROM {_TABLES[cls]} {where}",  # noqa: S608
                params,
            ).fetchall()
        return [_record(cls, row) for row in rows]

    def add_review(self, review: ReviewRecord) -> None:
        """See :meth:`ReviewStore.add_review`."""
        self._insert(review, f"add review {review.id}")

    def get_review(self, review_id: str) -> ReviewRecord | None:
        """See :meth:`ReviewStore.get_review`."""
        found = self._select(ReviewRecord, "WHERE id = ?", (review_id,), "read a review")
        return found[0] if found else None

    def list_reviews(
        self,
        *,
        status: str | None = None,
        requester: str | None = None,
        visible_to: tuple[str, frozenset[str]] | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        """See :meth:`ReviewStore.list_reviews`."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if requester is not None:
            where.append("requester = ?")
            params.append(requester)
        if visible_to is not None:
            name, groups = visible_to
            marks = ", ".join("?" for _ in groups) or "NULL"
            match = self._APPROVER_MATCH.format(marks=marks)  # placeholders only
            where.append(f"(requester = ? OR {match})")
            params.extend([name, *sorted(groups)])
        return self._select(
            ReviewRecord,
            f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, max(limit, 0)),
            "list reviews",
        )

    def replace_review(self, review: ReviewRecord, *, expected_status: str) -> bool:
        """See :meth:`ReviewStore.replace_review`."""
        names = [n for n in _columns(ReviewRecord) if n != "id"]
        values = [_encode(getattr(review, n)) for n in names]
        with self._review_errors(f"update review {review.id}"):
            cursor = self._conn.execute(
                f"UPDATE reviews SET {', '.join(f'{n} = ?' for n in names)}"  # noqa: S608
                " WHERE id = ? AND status = ?",
                (*values, review.id, expected_status),
            )
        return cursor.rowcount == 1

    def find_rerun_approvals(
        self,
        *,
        requester: str,
        connection: str,
        statement: str,
        parameters: tuple[str | None, ...] = (),
        now: float,
    ) -> list[ReviewRecord]:
        """See :meth:`ReviewStore.find_rerun_approvals`."""
        return self._select(
            ReviewRecord,
            "WHERE kind = 'statement' AND status = 'approved' AND used_at IS NULL"
            " AND valid_until IS NOT NULL AND valid_until > ? AND requester = ?"
            " AND connection = ? AND statement = ? AND parameters = ?"
            " ORDER BY created_at, rowid",
            (now, requester, connection, statement, _encode(parameters)),
            "find an approval",
        )

    def add_vote(self, vote: ReviewVote) -> None:
        """See :meth:`ReviewStore.add_vote`."""
        self._insert(vote, f"record {vote.identity}'s answer to review {vote.review_id}")

    def list_votes(self, review_id: str) -> list[ReviewVote]:
        """See :meth:`ReviewStore.list_votes`."""
        return self._select(
            ReviewVote, "WHERE review_id = ? ORDER BY rowid", (review_id,), "read answers"
        )

    def add_grant(self, grant: GrantRecord) -> None:
        """See :meth:`ReviewStore.add_grant`."""
        self._insert(grant, f"add grant {grant.id}")

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        """See :meth:`ReviewStore.get_grant`."""
        found = self._select(GrantRecord, "WHERE id = ?", (grant_id,), "read a grant")
        return found[0] if found else None

    def list_grants(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        active_at: float | None = None,
        visible_to: tuple[str, frozenset[str]] | None = None,
        limit: int = 100,
    ) -> list[GrantRecord]:
        """See :meth:`ReviewStore.list_grants`."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if identity is not None:
            where.append("identity = ?")
            params.append(identity)
        if connection is not None:
            where.append("connection = ?")
            params.append(connection)
        if active_at is not None:
            where.append("revoked_at IS NULL AND expires_at > ?")
            params.append(active_at)
        if visible_to is not None:
            name, connections = visible_to
            marks = ", ".join("?" for _ in connections) or "NULL"
            where.append(f"(identity = ? OR connection IN ({marks}))")
            params.extend([name, *sorted(connections)])
        return self._select(
            GrantRecord,
            f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, max(limit, 0)),
            "list grants",
        )

    def replace_grant(self, grant: GrantRecord) -> None:
        """See :meth:`ReviewStore.replace_grant`."""
        names = [n for n in _columns(GrantRecord) if n != "id"]
        with self._review_errors(f"update grant {grant.id}"):
            self._conn.execute(
                f"UPDATE grants SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",  # noqa: S608
                (*[_encode(getattr(grant, n)) for n in names], grant.id),
            )
