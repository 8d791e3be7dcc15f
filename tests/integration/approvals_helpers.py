"""Helpers for the approval and JIT integration tests: the admin API through the real CLI, and
every API answer checked against the gateway's own OpenAPI document."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import jsonschema

HOOPGW = (sys.executable, "-m", "hoopgw")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_REVIEW = {"$ref": "#/components/schemas/Review"}
_CLI_SCHEMAS: dict[tuple[str, ...], Any] = {
    ("reviews", "list"): {"type": "array", "items": _REVIEW},
    ("reviews", "show"): _REVIEW,
    ("reviews", "approve"): _REVIEW,
    ("reviews", "deny"): _REVIEW,
    ("access", "request"): _REVIEW,
    ("access", "list"): {"type": "array", "items": {"$ref": "#/components/schemas/Grant"}},
    ("access", "revoke"): {"$ref": "#/components/schemas/Grant"},
}
"""What each ``--json`` command prints: the API's answer, as the OpenAPI document says."""


class Admin:
    """The admin API of one running gateway, spoken to as one identity."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``hoopgw ARGS`` with ``HOOPGW_URL`` and ``HOOPGW_TOKEN`` set to this identity."""
        env = {**os.environ, "HOOPGW_URL": self.url, "HOOPGW_TOKEN": self.token}
        return subprocess.run(
            [*HOOPGW, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def cli_json(self, *args: str) -> Any:
        """Run a CLI command with ``--json``; fail unless it succeeds, and unless what it printed
        (the API's answer) fits the OpenAPI document."""
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        schema = _CLI_SCHEMAS.get(args[:2])
        if schema is not None:
            document = self.openapi()
            jsonschema.validate(
                printed,
                {**schema, "components": document["components"]},
                cls=jsonschema.Draft202012Validator,
            )
        return printed

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        """One raw API request; returns ``(status, decoded JSON)`` after checking the answer
        against the OpenAPI document."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is None:
            token = self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, json.loads(exc.read())
        check_against_openapi(self.openapi(), method, path, status, payload)
        return status, payload

    _document: Any = None

    def openapi(self) -> Any:
        """The gateway's OpenAPI document (fetched once)."""
        if Admin._document is None:
            with urllib.request.urlopen(self.url + "/api/openapi.json", timeout=30) as response:
                Admin._document = json.loads(response.read())
        return Admin._document


def check_against_openapi(document: Any, method: str, path: str, status: int, body: Any) -> None:
    """Fail unless ``body`` fits the schema of the operation's ``status`` response."""
    bare = path.split("?", 1)[0]
    for template, operations in document["paths"].items():
        if _fits(template, bare) and method.lower() in operations:
            responses = operations[method.lower()]["responses"]
            assert str(status) in responses, f"{method} {template}: {status} is not documented"
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            jsonschema.validate(
                body,
                {**schema, "components": document["components"]},
                cls=jsonschema.Draft202012Validator,
            )
            return
    raise AssertionError(f"{method} {bare} is not in the OpenAPI document")


def _fits(template: str, path: str) -> bool:
    wanted, given = template.split("/"), path.split("/")
    return len(wanted) == len(given) and all(
        w == g or (w.startswith("{") and w.endswith("}") and g)
        for w, g in zip(wanted, given, strict=True)
    )


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``work`` on a daemon thread (a client call that blocks, such as a held statement);
    the box gets its ``result`` or the ``error`` it raised."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def wait_for(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
