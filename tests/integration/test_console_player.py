"""The vendored asciinema player runs in chromium under the replay page's Content-Security-
Policy (no inline script or style; WebAssembly allowed): the page, the console's script, the
player's files and a cast are served with the console's own headers by a small loopback
server, and the player must draw the recorded output without a CSP violation."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hoopgw.console.web import CSP_PLAYER

pytestmark = pytest.mark.integration


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


browser_helper = _load("hoopgw_tests_browser", Path(__file__).with_name("browser.py"))

CAST = "\n".join(
    [
        json.dumps({"version": 2, "width": 80, "height": 24, "timestamp": 1}),
        json.dumps([0.1, "o", "$ uptime\r\n"]),
        json.dumps([0.2, "o", "hoopgw-player-check up 3 days\r\n"]),
    ]
)
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/console/static/vendor/asciinema-player/asciinema-player.css">
<script src="/console/static/vendor/asciinema-player/asciinema-player.min.js" defer></script>
<script src="/console/static/console.js" defer></script></head>
<body><div class="player" data-cast="/cast"></div></body></html>"""


@pytest.fixture
def site() -> Iterator[str]:
    static = resources.files("hoopgw.console").joinpath("static")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                body, kind = PAGE.encode(), "text/html; charset=utf-8"
            elif self.path == "/cast":
                body, kind = CAST.encode(), "application/x-asciicast"
            elif self.path.startswith("/console/static/"):
                name = self.path.removeprefix("/console/static/")
                body = static.joinpath(name).read_bytes()
                kind = "text/css" if name.endswith(".css") else "text/javascript"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Security-Policy", CSP_PLAYER)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_player_draws_a_cast_under_the_replay_pages_policy(site: str, tmp_path: Path) -> None:
    why = browser_helper.missing()
    if why:
        pytest.skip(why)
    browser = browser_helper.Browser(tmp_path / "browser")
    try:
        browser.get(site)
        browser.wait_for(lambda: browser.find_all(".ap-player"), what="the player")
        browser.find(".ap-player").click()  # play
        browser.wait_for_text("hoopgw-player-check", timeout=20)
        violations = [
            entry["message"]
            for entry in browser.console_log()
            if "Content Security Policy" in entry["message"]
        ]
        assert not violations, violations
    finally:
        browser.close()
