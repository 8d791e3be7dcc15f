"""``hoopgw reviews``: requests it sends and what it prints, with a fake admin API."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from hoopgw.cli import api as cli_reviews
from hoopgw.cli.main import main

REVIEW = {
    "id": "3f9a2c1b4d5e",
    "kind": "statement",
    "status": "pending",
    "requester": "agent",
    "requester_groups": ["agents"],
    "connection": "pg",
    "reason": "write: DELETE needs approval",
    "approvers": ["dba"],
    "required": 1,
    "approvals": 0,
    "votes": [],
    "created_at": 1764102667.0,
    "session_id": "s1",
    "command_seq": 3,
    "statement": "DELETE FROM orders WHERE id = 42",
    "decided_at": None,
    "valid_until": None,
}


class FakeApi:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[str, str, dict[str, str], Any]] = []
        self.answers: list[tuple[int, Any]] = []
        monkeypatch.setenv("HOOPGW_URL", "http://127.0.0.1:8080/")
        monkeypatch.setenv("HOOPGW_TOKEN", "hgw_key")
        monkeypatch.setattr(cli_reviews, "_open", self.urlopen)

    def urlopen(self, request: urllib.request.Request, timeout: float) -> Any:
        body = json.loads(request.data) if request.data else None
        self.sent.append((request.get_method(), request.full_url, dict(request.headers), body))
        status, answer = self.answers.pop(0)
        data = json.dumps(answer).encode()
        if status >= 400:
            raise urllib.error.HTTPError(request.full_url, status, "x", {}, io.BytesIO(data))  # type: ignore[arg-type]
        return io.BytesIO(data)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return FakeApi(monkeypatch)


def test_list_pending_as_a_table_and_as_json(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answers = [(200, {"reviews": [REVIEW]}), (200, {"reviews": [REVIEW]})]
    assert main(["reviews", "list", "--pending"]) == 0
    method, url, headers, _ = api.sent[0]
    assert (method, url) == ("GET", "http://127.0.0.1:8080/api/reviews?limit=100&status=pending")
    assert headers["Authorization"] == "Bearer hgw_key"
    table = capsys.readouterr().out
    assert "3f9a2c1b4d5e" in table and "DELETE FROM orders WHERE id = 42" in table
    assert main(["reviews", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [REVIEW]


def test_show(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    voted = {
        **REVIEW,
        "votes": [{"identity": "bob", "approve": True, "reason": "ok", "decided_at": 1764102670.0}],
    }
    api.answers = [(200, voted)]
    assert main(["reviews", "show", "3f9a2c1b4d5e"]) == 0
    text = capsys.readouterr().out
    assert "statement   DELETE FROM orders WHERE id = 42" in text
    assert "vote        bob approved at 2025-11-25T20:31:10Z: ok" in text


def test_show_lists_the_parameter_values_the_approval_covers(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    bound = {**REVIEW, "statement": "DELETE FROM orders WHERE id = $1", "parameters": ["42", None]}
    api.answers = [(200, bound)]
    assert main(["reviews", "show", "3f9a2c1b4d5e"]) == 0
    assert "parameters  [1] '42', [2] NULL" in capsys.readouterr().out


def test_approve_and_deny_send_the_reason(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.answers = [(200, {**REVIEW, "status": "approved"}), (200, {**REVIEW, "status": "denied"})]
    assert main(["reviews", "approve", "3f9a2c1b4d5e", "--reason", "ok"]) == 0
    assert main(["reviews", "deny", "3f9a2c1b4d5e", "--reason", "no"]) == 0
    assert [(m, u.rsplit("/", 1)[1], b) for m, u, _, b in api.sent] == [
        ("POST", "approve", {"reason": "ok"}),
        ("POST", "deny", {"reason": "no"}),
    ]
    assert "review 3f9a2c1b4d5e denied" in capsys.readouterr().err


def test_deny_needs_a_reason(api: FakeApi) -> None:
    assert main(["reviews", "deny", "3f9a2c1b4d5e"]) == 2
    assert api.sent == []


def test_api_errors_are_shown_with_exit_1(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.answers = [
        (403, {"error": {"code": "forbidden", "message": "nobody may decide their own request"}})
    ]
    assert main(["reviews", "approve", "3f9a2c1b4d5e"]) == 1
    assert capsys.readouterr().err == "hoopgw: nobody may decide their own request\n"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOOPGW_URL": ""}, "set HOOPGW_URL"),
        ({"HOOPGW_URL": "ftp://x"}, "must start with http://"),
        ({"HOOPGW_TOKEN": ""}, "set HOOPGW_TOKEN"),
    ],
)
def test_environment_is_required(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(cli_reviews.ApiError, match=message):
        cli_reviews.api_request("GET", "/api/whoami")


def test_an_unreachable_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOPGW_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOOPGW_TOKEN", "t")

    def refuse(request: Any, timeout: float) -> Any:
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(cli_reviews, "_open", refuse)
    with pytest.raises(cli_reviews.ApiError, match="cannot reach the admin API"):
        cli_reviews.api_request("GET", "/api/whoami")


def test_a_token_with_a_line_break_is_refused_without_showing_it(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The HTTP client's own error would repeat the header value, token included.
    monkeypatch.setenv("HOOPGW_TOKEN", "hgw_s3cret\nX-Injected: 1")
    with pytest.raises(cli_reviews.ApiError) as refused:
        cli_reviews.api_request("GET", "/api/whoami")
    assert "s3cret" not in str(refused.value) and api.sent == []


def test_an_unreadable_ca_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("HOOPGW_URL", "https://127.0.0.1:9")
    monkeypatch.setenv("HOOPGW_TOKEN", "t")
    monkeypatch.setenv("HOOPGW_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(cli_reviews.ApiError, match="cannot use HOOPGW_CA_FILE"):
        cli_reviews.api_request("GET", "/api/whoami")
