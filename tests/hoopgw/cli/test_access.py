"""``hoopgw access``: requests it sends and what it prints, with a fake admin API."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from hoopgw.cli.main import main


def _fake_api() -> Any:
    name = "hoopgw_tests_cli_reviews"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_reviews.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].FakeApi


GRANT = {
    "id": "5e6f7a8b9c0d",
    "review_id": "8c1d0e2f3a4b",
    "identity": "sam",
    "connection": "prod",
    "reason": "INC-4711",
    "approved_by": ["lead"],
    "created_at": 1764102667.0,
    "expires_at": 1764104467.0,
    "status": "active",
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Any:
    return _fake_api()(monkeypatch)


def test_request_prints_the_review_id(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api.answers = [(201, {"id": "8c1d0e2f3a4b", "approvers": ["leads"]})]
    argv = ["access", "request", "--connection", "prod", "--duration", "30m", "--reason", "INC"]
    assert main(argv) == 0
    assert api.sent[0][3] == {"connection": "prod", "duration": 1800.0, "reason": "INC"}
    captured = capsys.readouterr()
    assert captured.out == "8c1d0e2f3a4b\n"
    assert "hoopgw reviews approve 8c1d0e2f3a4b" in captured.err


def test_list_and_revoke(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api.answers = [(200, {"grants": [GRANT]}), (200, {"grants": []}), (200, GRANT)]
    assert main(["access", "list"]) == 0
    assert "5e6f7a8b9c0d" in capsys.readouterr().out
    assert api.sent[0][1].endswith("/api/access/grants?limit=100&active=1")
    assert main(["access", "list", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["access", "revoke", "5e6f7a8b9c0d", "--reason", "done"]) == 0
    assert api.sent[2][:2] == (
        "POST",
        "http://127.0.0.1:8080/api/access/grants/5e6f7a8b9c0d/revoke",
    )


def test_a_bad_duration_is_a_usage_error(api: Any) -> None:
    argv = ["access", "request", "--connection", "prod", "--duration", "soon", "--reason", "x"]
    assert main(argv) == 2
