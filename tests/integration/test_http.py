"""The ``http`` protocol end to end: real clients (``curl``, ``httpx``) through ``hoopgw run``
to a real HTTP API (Twisted Web in a process of its own, ``httpserver.py``)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

TARGET_TOKEN = "target-secret-token-0123456789"  # tests/conftest.py HTTP_TARGET_TOKEN


def _load(name: str, file_name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


helpers = _load("hoopgw_tests_approvals_helpers", "approvals_helpers.py")
httpserver = _load("hoopgw_tests_httpserver", "httpserver.py")
certs = _load("hoopgw_tests_certs", "certs.py")

RULES = {
    "http_default": "deny",
    "http_rules": [
        {"methods": ["GET"], "paths": ["/echo/**", "/people", "/text", "/big"], "action": "allow"},
        {"methods": ["POST", "PUT"], "paths": ["/upload", "/echo/**"], "action": "allow"},
        {"methods": ["DELETE"], "paths": ["/items/*"], "action": "deny", "message": "no deletes"},
        {"methods": ["POST"], "paths": ["/held/**"], "action": "review"},
    ],
}


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``curl`` (``-s``, no retries) and return what it did."""
    assert shutil.which("curl"), "curl is installed by ./dev setup"
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60, check=False)


def url(gateway: Any, path: str) -> str:
    return f"http://{gateway.host}:{gateway.port}{path}"


def session_ids(gateway: Any) -> list[str]:
    listed = gateway.cli("sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [s["id"] for s in json.loads(listed.stdout)]


def recorded_commands(gateway: Any) -> list[dict[str, Any]]:
    """Every recorded command of the gateway, oldest session first."""
    commands: list[dict[str, Any]] = []
    for session_id in reversed(session_ids(gateway)):
        shown = gateway.cli("sessions", "show", session_id, "--json")
        assert shown.returncode == 0, shown.stderr
        commands += json.loads(shown.stdout)["commands"]
    return commands


def audit_records(gateway: Any, kind: str) -> list[dict[str, Any]]:
    exported = gateway.cli("audit", "export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    return [r for r in records if r["kind"] == kind]


@pytest.fixture
def api(http_server: Any, http_gateway: Callable[..., Any]) -> Iterator[tuple[Any, Any, str]]:
    """A gateway with recording and guardrails (:data:`RULES`) in front of the test API, and
    an API key of ``agent-1``."""
    gateway = http_gateway(
        http_server, plugins=["recording", "guardrails"], connection={"guardrails": RULES}
    )
    yield gateway, http_server, gateway.create_key("agent-1", ["agents"])


def test_an_allowed_get_passes_with_curl_and_httpx(api: tuple[Any, Any, str]) -> None:
    gateway, server, key = api
    done = curl("-H", f"Authorization: Bearer {key}", url(gateway, "/echo/a?x=1"))
    assert done.returncode == 0, done.stderr
    echoed = json.loads(done.stdout)
    assert echoed["method"] == "GET" and echoed["uri"] == "/echo/a?x=1"
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        # One connection, several requests: one session, each request a command.
        for n in range(3):
            answer = client.get(url(gateway, f"/echo/{n}"))
            assert answer.status_code == 200 and answer.json()["path"] == f"/echo/{n}"
    commands = recorded_commands(gateway)
    assert [c["text"] for c in commands] == [
        "GET /echo/a?x=1",
        "GET /echo/0",
        "GET /echo/1",
        "GET /echo/2",
    ]
    assert all(c["verdict"] == "allow" and c["status"] == "ok" for c in commands)
    assert len(session_ids(gateway)) == 2
    assert len(server.requests()) == 4


def test_the_caller_token_and_the_target_credential_stay_on_their_sides(
    api: tuple[Any, Any, str],
) -> None:
    gateway, server, key = api
    done = curl("-i", "-H", f"Authorization: Bearer {key}", url(gateway, "/echo/whoami"))
    assert done.returncode == 0, done.stderr
    [received] = server.requests()
    # The target got its own credential and the target's Host, never the caller's key.
    assert received["headers"]["authorization"] == f"Bearer {TARGET_TOKEN}"
    assert received["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert key not in json.dumps(received)
    # The target echoed its credential; the caller does not see it.
    assert TARGET_TOKEN.encode() not in done.stdout
    stars = b"*" * len(f"Bearer {TARGET_TOKEN}")
    assert b'"authorization": "' + stars + b'"' in done.stdout


def test_without_a_valid_token_the_answer_is_401(api: tuple[Any, Any, str]) -> None:
    gateway, server, _ = api
    missing = httpx.get(url(gateway, "/echo/a"))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(url(gateway, "/echo/a"), headers={"Authorization": "Bearer hgw_nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="hoopgw", error="invalid_token"'
    assert "error" in wrong.json()
    assert server.requests() == []


def test_a_denied_delete_never_reaches_the_server(api: tuple[Any, Any, str]) -> None:
    gateway, server, key = api
    done = curl(
        "-X",
        "DELETE",
        "-w",
        "%{http_code}",
        "-H",
        f"Authorization: Bearer {key}",
        url(gateway, "/items/7"),
    )
    assert done.stdout.endswith(b"403")
    assert b"no deletes" in done.stdout
    # Another letter case and a trailing slash are refused alike.
    for path in ("/ITEMS/7", "/items/7/"):
        answer = httpx.delete(url(gateway, path), headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 403
    # So is what no rule allows (http_default = deny).
    assert (
        httpx.put(url(gateway, "/other"), headers={"Authorization": f"Bearer {key}"}).status_code
        == 403
    )
    assert server.requests() == []
    refused = recorded_commands(gateway)
    assert {c["status"] for c in refused} == {"blocked"}
    assert refused[0]["verdict_plugin"] == "guardrails"


def test_a_denied_delete_is_not_reached_by_override_or_extension(
    api: tuple[Any, Any, str],
) -> None:
    gateway, server, key = api
    auth = {"Authorization": f"Bearer {key}"}
    # Symfony/Laravel route POST ?_method=DELETE as DELETE; Rails routes /items/7.json as /items/7.
    assert httpx.post(url(gateway, "/echo/x?_method=DELETE"), headers=auth).status_code == 400
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    assert (
        httpx.post(url(gateway, "/echo/x"), headers=form, content=b"_method=DELETE").status_code
        == 400
    )
    assert httpx.delete(url(gateway, "/items/7.json"), headers=auth).status_code == 403
    assert server.requests() == []


@pytest.mark.parametrize(
    "path",
    ["/echo/../items/7", "/echo/%2e%2e/items/7", "/echo%2F..%2Fitems/7", "//items/7", "/items;x/7"],
)
def test_ambiguous_paths_are_refused_before_any_rule(api: tuple[Any, Any, str], path: str) -> None:
    gateway, server, key = api
    done = curl(
        "--path-as-is",
        "-X",
        "DELETE",
        "-w",
        "%{http_code}",
        "-H",
        f"Authorization: Bearer {key}",
        url(gateway, path),
    )
    assert done.stdout.endswith(b"400"), done.stdout
    assert server.requests() == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        # CL.TE: a body that a TE-reading server would split into a second, smuggled request.
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n"
        b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nDELETE /items/7 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nX-A: 1\r\n b\r\n\r\n",
        b"GET /echo/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\rX: y\r\n\r\n",
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n"
        b"X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_smuggling_shapes_are_refused(api: tuple[Any, Any, str], request_bytes: bytes) -> None:
    gateway, server, key = api
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        sock.sendall(request_bytes.replace(b"KEY", key.encode()))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert server.requests() == []


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_held_post_runs_only_after_approval(
    http_server: Any, http_gateway: Callable[..., Any], decision: str
) -> None:
    admin_port = helpers.free_port()
    gateway = http_gateway(
        http_server,
        plugins=["recording", "guardrails", "approval"],
        connection={"guardrails": RULES, "approval": {"approvers": ["dba"], "timeout": 60}},
        gateway_options={"admin_listen": f"tcp:{admin_port}:interface=127.0.0.1"},
        roles={"approver": ["dba"]},
    )
    key = gateway.create_key("agent-1", ["agents"])
    alice = helpers.Admin(f"http://127.0.0.1:{admin_port}", gateway.create_key("alice", ["dba"]))
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(
            httpx.post(
                url(gateway, "/held/run"),
                json={"job": "rotate"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
        )

    worker = threading.Thread(target=post)
    worker.start()
    try:
        [review] = helpers.wait_for(
            lambda: alice.cli_json("reviews", "list", "--pending") or None, what="a review"
        )
        # The reviewer sees the method, the path and the body.
        assert "POST /held/run" in str(review) and "rotate" in str(review)
        assert http_server.requests() == []
        decided = alice.cli("reviews", decision, review["id"], "--reason", "ticket 9")
        assert decided.returncode == 0, decided.stderr
    finally:
        worker.join(60)
    [answer] = results
    if decision == "approve":
        assert answer.status_code == 200
        [received] = http_server.requests()
        assert received["method"] == "POST" and received["path"] == "/held/run"
        assert answer.json()["body"] == '{"job":"rotate"}'
    else:
        assert answer.status_code == 403
        assert "ticket 9" in answer.json()["error"]
        assert http_server.requests() == []


def test_json_and_text_responses_are_masked_and_recorded_masked(
    http_server: Any, http_gateway: Callable[..., Any]
) -> None:
    gateway = http_gateway(
        http_server,
        plugins=["recording", "guardrails", "masking"],
        connection={"guardrails": RULES},
    )
    key = gateway.create_key("agent-1", ["agents"])
    headers = {"Authorization": f"Bearer {key}"}
    people = httpx.get(url(gateway, "/people"), headers=headers)
    assert people.status_code == 200
    document = people.json()  # still JSON
    assert document["count"] == 2 and document["people"][0]["name"] == "Ada"
    text = (
        people.text
        + curl("-H", f"Authorization: Bearer {key}", url(gateway, "/text")).stdout.decode()
    )
    for raw in ("ada.lovelace@example.com", "alan.turing@example.org", "4111", "4012888888881881"):
        assert raw not in text
    assert int(people.headers["content-length"]) == len(people.content)
    recorded = json.dumps(audit_records(gateway, "http_response"))
    assert "[EMAIL]" in recorded
    for raw in ("ada.lovelace@example.com", "4012888888881881"):
        assert raw not in recorded


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


SIZE = 50 * 1024 * 1024


def test_50_mb_stream_both_ways_with_bounded_gateway_memory(
    http_server: Any, http_gateway: Callable[..., Any]
) -> None:
    gateway = http_gateway(
        http_server,
        plugins=["recording", "guardrails", "masking"],
        connection={"guardrails": RULES},
    )
    key = gateway.create_key("agent-1", ["agents"])
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=120) as client:
        client.get(url(gateway, "/echo/warm-up")).raise_for_status()
        before = _peak_rss_kib(gateway.process.pid)
        received = 0
        with client.stream("GET", url(gateway, f"/big?size={SIZE}")) as answer:
            assert answer.status_code == 200
            assert answer.headers["transfer-encoding"] == "chunked"
            for piece in answer.iter_raw():
                received += len(piece)
        assert received == SIZE

        def pieces() -> Iterator[bytes]:
            for _ in range(SIZE // (1024 * 1024)):
                yield b"u" * (1024 * 1024)

        uploaded = client.post(
            url(gateway, "/upload"),
            content=pieces(),  # chunked
            headers={"content-type": "application/octet-stream"},
        )
        assert uploaded.json() == {"bytes": SIZE}
    done = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "-H",
        f"Authorization: Bearer {key}",
        url(gateway, f"/big?size={SIZE}"),
    )
    assert done.stdout == str(SIZE).encode()
    grown_mib = (_peak_rss_kib(gateway.process.pid) - before) / 1024
    # Buffers of a few hundred KiB each way, not the 50 MB bodies.
    assert grown_mib < 24, f"the gateway's peak memory grew by {grown_mib:.1f} MiB"


def test_https_target_verified_with_a_client_certificate(
    tmp_path: Path, tls_files: Any, http_gateway: Callable[..., Any]
) -> None:
    client_files = certs.write_client_tls_files(tmp_path)
    server = httpserver.start(
        tmp_path / "tls-server", tls=tls_files, client_ca=client_files.ca_cert
    )
    try:
        gateway = http_gateway(
            server,
            http={
                "client_cert": str(client_files.client_cert),
                "client_key": str(client_files.client_key),
            },
        )
        key = gateway.create_key("agent-1", ["agents"])
        answer = httpx.get(url(gateway, "/echo/tls"), headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["path"] == "/echo/tls"
        # Without the client certificate the target refuses the handshake: 502, said why.
        plain = http_gateway(server)
        key = plain.create_key("agent-1", ["agents"])
        refused = httpx.get(url(plain, "/echo/tls"), headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 502
    finally:
        server.stop()


def test_an_unverifiable_target_certificate_is_refused(
    tmp_path: Path, tls_files: Any, http_gateway: Callable[..., Any]
) -> None:
    other = certs.write_tls_files(_folder(tmp_path / "other-ca"))
    server = httpserver.start(tmp_path / "tls-server", tls=tls_files)
    try:
        # The gateway trusts another CA than the one that signed the target's certificate.
        server.tls = other
        gateway = http_gateway(server)
        key = gateway.create_key("agent-1", ["agents"])
        answer = httpx.get(url(gateway, "/echo/x"), headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 502
        assert server.requests() == []
    finally:
        server.stop()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_sessions_are_listed(api: tuple[Any, Any, str]) -> None:
    gateway, _, key = api
    httpx.get(url(gateway, "/echo/a"), headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = gateway.cli("sessions", "list")
        if "agent-1" in listed.stdout and "client closed" in listed.stdout:
            break
        time.sleep(0.1)
    assert listed.returncode == 0
    assert "api" in listed.stdout and "agent-1" in listed.stdout


def test_clients_over_https_when_client_tls_is_required(
    http_server: Any, http_gateway: Callable[..., Any], tls_files: Any
) -> None:
    gateway = http_gateway(
        http_server,
        plugins=["recording"],
        connection={"client_tls": "required"},
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    key = gateway.create_key("agent-1", ["agents"])
    https = f"https://localhost:{gateway.port}/echo/tls"
    answer = httpx.get(
        https,
        headers={"Authorization": f"Bearer {key}"},
        verify=ssl.create_default_context(cafile=tls_files.ca_cert),
    )
    assert answer.status_code == 200 and answer.json()["path"] == "/echo/tls"
    done = curl("--cacert", str(tls_files.ca_cert), "-H", f"Authorization: Bearer {key}", https)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == "/echo/tls"
    # Plain HTTP gets nowhere: the gateway speaks TLS from the first byte.
    plain = curl("-H", f"Authorization: Bearer {key}", url(gateway, "/echo/plain"))
    assert plain.returncode != 0
    assert [r["path"] for r in http_server.requests()] == ["/echo/tls", "/echo/tls"]
    sessions = [
        json.loads(gateway.cli("sessions", "show", sid, "--json").stdout)
        for sid in session_ids(gateway)
    ]
    assert all(s["client_tls"] for s in sessions) and len(sessions) == 2


def test_websocket_pass_through_when_enabled(
    http_server: Any, http_gateway: Callable[..., Any]
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    rules = {
        "http_default": "deny",
        "http_rules": [
            {"methods": ["GET"], "paths": ["/**"], "action": "allow"},
            {"methods": ["WEBSOCKET"], "paths": ["/ws"], "action": "allow"},
        ],
    }
    closed = http_gateway(
        http_server, plugins=["recording", "guardrails"], connection={"guardrails": rules}
    )
    key = closed.create_key("agent-1", ["agents"])
    ws_url = f"ws://{closed.host}:{closed.port}/ws"
    bearer = {"Authorization": f"Bearer {key}"}
    # Off by default: the upgrade never reaches the target.
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, additional_headers=bearer, open_timeout=10)
    assert refused.value.response.status_code == 501
    assert http_server.requests() == []

    gateway = http_gateway(
        http_server,
        plugins=["recording", "guardrails"],
        http={"websocket": True},
        connection={"guardrails": rules},
    )
    key = gateway.create_key("agent-1", ["agents"])
    ws_url = f"ws://{gateway.host}:{gateway.port}/ws"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        ws.send(b"\x00\x01" * 1000)
        assert ws.recv(timeout=10) == b"\x00\x01" * 1000
        # The target saw its own credential, and its echo of it does not reach the caller.
        ws.send("token")
        assert ws.recv(timeout=10) == "*" * len(f"Bearer {TARGET_TOKEN}")
    [handshake] = http_server.requests()
    assert handshake["headers"]["authorization"] == f"Bearer {TARGET_TOKEN}"
    assert key not in json.dumps(handshake)
    # A WebSocket is judged as WEBSOCKET: an allowed GET does not open one elsewhere.
    with pytest.raises(InvalidStatus) as denied:
        connect(
            f"ws://{gateway.host}:{gateway.port}/echo/ws",
            additional_headers={"Authorization": f"Bearer {key}"},
        )
    assert denied.value.response.status_code == 403

    def completed() -> list[dict[str, Any]]:
        done = [c for c in recorded_commands(gateway) if c["text"] == "GET /ws [WebSocket]"]
        return done if done and done[0]["status"] else []

    [command] = helpers.wait_for(completed, what="the WebSocket's completion")
    assert command["verdict"] == "allow" and command["status"] == "ok"


def test_an_oidc_token_is_a_bearer_token_too(
    http_server: Any, http_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    oidc = _load("hoopgw_tests_oidcissuer", "oidcissuer.py")
    issuer = oidc.TestIssuer(issuer="urn:example:ci")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    gateway = http_gateway(
        http_server,
        plugins=["recording"],
        identity={
            "oidc": [{"issuer": issuer.issuer, "audience": oidc.AUDIENCE, "jwks_file": str(jwks)}]
        },
    )
    answer = httpx.get(
        url(gateway, "/echo/oidc"), headers={"Authorization": f"Bearer {issuer.token()}"}
    )
    assert answer.status_code == 200
    [received] = http_server.requests()
    assert received["headers"]["authorization"] == f"Bearer {TARGET_TOKEN}"
    shown = gateway.cli("sessions", "show", session_ids(gateway)[0], "--json")
    session = json.loads(shown.stdout)
    assert (session["identity"], session["method"]) == ("svc-reporting", "oidc")
    expired = issuer.token(now=int(time.time()) - 3600)
    refused = httpx.get(url(gateway, "/echo/oidc"), headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401 and "www-authenticate" in refused.headers
    assert len(http_server.requests()) == 1
