"""Tests for hoopgw.cli.common's listing and revoke output, shared by ``keys``, ``keys
list-ssh`` and ``agents`` (their commands are tested in test_main.py, test_ssh_keys.py and
test_agents.py)."""

from __future__ import annotations

import json

import attrs
import pytest

from hoopgw.cli.common import EXIT_FAILED, EXIT_OK, out_listing, out_revoked


@attrs.frozen
class _Record:
    name: str
    groups: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    secret_hash: str


RECORDS = [_Record("ann", ("agents", "ops"), 0.0, None, "h4sh")]
COLUMNS = [("NAME", "name"), ("GROUPS", "groups"), ("CREATED", "created_at")]


def test_a_listing_shows_named_fields_only(capsys: pytest.CaptureFixture[str]) -> None:
    out_listing(RECORDS, COLUMNS, as_json=False)
    table = capsys.readouterr().out
    assert table.splitlines() == [
        "NAME  GROUPS      CREATED",
        "ann   agents,ops  1970-01-01T00:00:00Z",
    ]
    out_listing(RECORDS, COLUMNS, as_json=True, also=("revoked_at",))
    assert json.loads(capsys.readouterr().out) == [
        {
            "name": "ann",
            "groups": ["agents", "ops"],
            "created_at": "1970-01-01T00:00:00Z",
            "revoked_at": None,
        }
    ]


def test_a_listing_reads_mappings_too(capsys: pytest.CaptureFixture[str]) -> None:
    out_listing([{"name": "edge", "groups": [], "created_at": None}], COLUMNS, as_json=False)
    assert capsys.readouterr().out.splitlines()[1] == "edge  -       -"


def test_revoke_output_says_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    assert out_revoked(True, missing="no active key 'k'", done="revoked key k") == EXIT_OK
    assert capsys.readouterr().err == "hoopgw: revoked key k\n"
    assert out_revoked(False, missing="no active key 'k'", done="revoked key k") == EXIT_FAILED
    assert capsys.readouterr().err == "hoopgw: no active key 'k'\n"
