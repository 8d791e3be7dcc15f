"""What the upstream login may do: the role attributes that undo read-only, and the remedy."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_postgres import privileges
from hoopgw_postgres.privileges import inspect_login

from hoopgw.session import UpstreamOptions

READ_ONLY = UpstreamOptions(read_only=True)


@pytest.mark.parametrize(
    ("row", "phrases"),
    [
        (("postgres", True, True, True, []), ["a superuser"]),
        (("maker", False, True, False, []), ["CREATEROLE"]),
        (("tuner", False, False, True, []), ["ALTER SYSTEM SET default_transaction_read_only"]),
        (("copier", False, False, False, ["pg_execute_server_program"]), ["run programs"]),
        (("reader", False, False, False, []), []),
    ],
)
def test_logins_that_can_undo_read_only_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, row: tuple[Any, ...], phrases: list[str]
) -> None:
    monkeypatch.setattr(privileges, "_query", lambda connection: row)
    warnings = inspect_login(None, READ_ONLY)  # type: ignore[arg-type]
    assert len(warnings) == len(phrases)
    for warning, phrase in zip(warnings, phrases, strict=True):
        assert phrase in warning and repr(row[0]) in warning and "least-privileged" in warning
    # A connection that may write needs no read-only mode: nothing to warn about.
    assert inspect_login(None, UpstreamOptions()) == []  # type: ignore[arg-type]
