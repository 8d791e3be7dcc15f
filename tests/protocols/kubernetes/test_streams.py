"""The exec and attach helpers: a request's command, and the exit code a status reports."""

from __future__ import annotations

import json

import pytest
from hoopgw_kubernetes.requests import classify
from hoopgw_kubernetes.streams import exit_code, stream_command


def test_an_exec_is_its_argument_vector_shell_quoted() -> None:
    api = classify(
        "GET",
        "/api/v1/namespaces/d/pods/web/exec?command=sh&command=-c&command=echo+hi%3B+rm+-rf+%2F"
        "&container=main&stdin=true&tty=true",
    )
    text, kind, details = stream_command(api, api.facts())
    assert (text, kind) == ("sh -c 'echo hi; rm -rf /'", "exec")
    assert details["container"] == "main" and details["stdin"] and details["tty"]
    assert details["pty"] == {"term": "xterm", "width": 80, "height": 24}
    assert details["verb"] == "exec" and details["namespace"] == "d"


def test_an_attach_names_its_pod() -> None:
    api = classify("GET", "/api/v1/namespaces/d/pods/web/attach?stdout=true")
    text, kind, details = stream_command(api, api.facts())
    assert (text, kind) == ("attach d/web", "attach")
    assert "pty" not in details and not details["stdin"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"metadata": {}, "status": "Success"}, 0),
        (
            {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
            },
            42,
        ),
        ({"status": "Failure", "message": "container not found"}, None),
        ({"status": "Failure", "details": {"causes": [{"reason": "ExitCode"}]}}, None),
        ([], None),
    ],
)
def test_exit_codes(status: object, code: int | None) -> None:
    assert exit_code(json.dumps(status).encode()) == code


def test_a_status_that_is_not_json_has_no_exit_code() -> None:
    assert exit_code(b"\xff{") is None


def test_the_first_container_parameter_is_the_one_the_api_server_reads() -> None:
    api = classify("GET", "/api/v1/namespaces/ns/pods/p/exec?command=ls&container=a&container=b")
    assert stream_command(api, api.facts())[2]["container"] == "a"
