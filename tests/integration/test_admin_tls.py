"""The admin API over TLS (``admin_tls = true``) with the real gateway and the real CLI: the CLI
verifies the gateway's certificate against ``HOOPGW_CA_FILE`` and refuses one it cannot verify,
before the token is sent; it never follows a redirect with the token."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration


# Loaded by tests/conftest.py (tests are no package).
helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_admin(gateway: Any, tls_files: Any) -> tuple[str, str, Any]:
    admin_port = helpers.free_port()
    running = gateway(
        plugins=["recording"],
        gateway_options={
            "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
            "admin_tls": True,
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    helpers.wait_for(lambda: _listening(admin_port), what="the admin API")
    key = running.create_key("alice", ["dba"])
    return f"https://localhost:{admin_port}", key, tls_files


def _cli(url: str, token: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOOPGW_")}
    environment.update(HOOPGW_URL=url, HOOPGW_TOKEN=token, **env)
    # An empty bundle stands for "the system's CAs", which do not include the test CA.
    environment.setdefault("SSL_CERT_FILE", os.devnull)
    return subprocess.run(
        [*helpers.HOOPGW, *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_talks_to_the_api_over_verified_tls(tls_admin: tuple[str, str, Any]) -> None:
    url, key, tls = tls_admin
    done = _cli(url, key, "reviews", "list", "--json", HOOPGW_CA_FILE=str(tls.ca_cert))
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "[]", "")
    ip_url = url.replace("localhost", "127.0.0.1")  # the certificate names the address too
    assert _cli(ip_url, key, "access", "list", HOOPGW_CA_FILE=str(tls.ca_cert)).returncode == 0


def test_the_cli_refuses_a_certificate_it_cannot_verify(tls_admin: tuple[str, str, Any]) -> None:
    url, key, _ = tls_admin
    done = _cli(url, key, "reviews", "list")
    assert done.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert key not in done.stderr + done.stdout


def test_plain_http_to_the_tls_port_gets_no_answer(tls_admin: tuple[str, str, Any]) -> None:
    url, key, _ = tls_admin
    done = _cli(url.replace("https://", "http://"), key, "reviews", "list")
    assert done.returncode == 1 and key not in done.stderr + done.stdout


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []
    location = ""

    def do_GET(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization"))
        if _Recorder.location:
            self.send_response(307)
            self.send_header("Location", _Recorder.location)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"reviews": []}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[str | None]]]:
    other = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    first = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    _Recorder.location = f"http://127.0.0.1:{other.server_port}/api/reviews"
    for server in (first, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{first.server_port}", _Recorder.seen
    finally:
        for server in (first, other):
            server.shutdown()
            server.server_close()


def test_the_cli_does_not_follow_a_redirect_with_the_token(
    redirecting: tuple[str, list[str | None]],
) -> None:
    url, seen = redirecting
    done = _cli(url, "hgw_secret_token", "reviews", "list")
    assert done.returncode == 1 and "307" in done.stderr
    assert seen == ["Bearer hgw_secret_token"]  # the first server only
