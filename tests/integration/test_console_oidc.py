"""The console as a person uses it: a real chromium signs in through a real OpenID provider (npm
``oidc-provider``, authorization code flow with PKCE), sees the statement an agent's psycopg
session is held on, approves it, and the agent's statement completes; an auditor downloads an
evidence pack. The refusals are tested the same way: no session, a wrong ``state``, a form
posted from another site, a reviewer outside the approver groups.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import secrets
import sqlite3
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import psycopg
import pytest

pytestmark = pytest.mark.integration

helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]


def _load_helper(name: str, file_name: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


browser_helper = _load_helper("hoopgw_tests_browser", "browser.py")

CLIENT_ID = "hoopgw-console"
PEOPLE = {"alice": ["dba"], "carol": ["audit"], "bob": ["devs"]}
DELETE = "DELETE FROM orders WHERE id = 7"


@attrs.define
class Console:
    gateway: Any
    provider: Any
    url: str
    database: str
    agent_key: str

    def conninfo(self) -> str:
        return (
            f"host={self.gateway.host} port={self.gateway.port} user=agent"
            f" password={self.agent_key} dbname={self.database} sslmode=disable"
        )


@pytest.fixture
def console(
    gateway_document: Any, pg_server: Any, pg_database: str, tls_files: Any, tmp_path: Path
) -> Iterator[Console]:
    why = browser_helper.missing()
    if why:
        pytest.skip(why)
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        conn.execute(
            "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 10) g"
            " ON CONFLICT DO NOTHING"
        )
    admin_port = helpers.free_port()
    url = f"https://localhost:{admin_port}"
    client_secret = secrets.token_urlsafe(32)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(client_secret)
    provider = browser_helper.OidcProvider(
        tmp_path,
        cert=tls_files.server_cert,
        key=tls_files.server_key,
        redirect_uri=f"{url}/console/callback/oidc/corp",
        client_id=CLIENT_ID,
        client_secret=client_secret,
        people=PEOPLE,
    )

    def document(workdir: Path, port: int) -> dict[str, Any]:
        return {
            "roles": {"approver": ["dba"], "auditor": ["audit"]},
            "gateway": {
                "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
                "admin_tls": True,
                "tls_cert": str(tls_files.server_cert),
                "tls_key": str(tls_files.server_key),
            },
            "identity": {
                "oidc": [
                    {
                        "issuer": provider.issuer,
                        "audience": ["hoopgw-agents"],
                        "ca_file": str(tls_files.ca_cert),
                    }
                ]
            },
            "console": {
                "public_url": url,
                "oidc": [
                    {
                        "name": "corp",
                        "label": "Sign in with Corp SSO",
                        "issuer": provider.issuer,
                        "client_id": CLIENT_ID,
                        "client_secret": f"file:{secret_file}",
                        "scopes": ["openid", "groups"],
                    }
                ],
            },
            "connections": [
                {
                    "name": "orders",
                    "protocol": "postgres",
                    "listen": f"tcp:{port}:interface=127.0.0.1",
                    "target": f"{pg_server.host}:{pg_server.port}",
                    "allow_groups": ["agents"],
                    "plugins": ["recording", "approval"],
                    "credential": {"user": "postgres"},
                    "client_tls": "disabled",
                    "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 120},
                }
            ],
        }

    try:
        running = gateway_document(document)

        def answering() -> bool:
            try:
                _opener().open(f"{url}/console/login").close()
                return True
            except OSError:  # the admin listener starts after the connections
                return False

        helpers.wait_for(answering, what="the console")
        agent_key = running.create_key("agent", ["agents"])
        yield Console(
            gateway=running,
            provider=provider,
            url=url,
            database=pg_database,
            agent_key=agent_key,
        )
    finally:
        provider.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    why = browser_helper.missing()
    if why:
        pytest.skip(why)
    opened = browser_helper.Browser(tmp_path / "browser")
    try:
        yield opened
    finally:
        opened.close()


def sign_in(browser: Any, console: Console, person: str) -> None:
    browser.get(f"{console.url}/console/reviews")
    browser.wait_for(lambda: "/console/login" in browser.url, what="the sign-in page")
    browser.find("ul.providers a").click()
    browser_helper.sign_in_at_provider(browser, person)
    browser.wait_for(lambda: browser.url.startswith(console.url + "/console/"), what="console")
    browser.wait_for_text(person)


Held = browser_helper.Held


def test_an_approver_signs_in_and_approves_a_held_statement(console: Console, browser: Any) -> None:
    held = Held(console.conninfo(), DELETE)
    sign_in(browser, console, "alice")
    browser.wait_for_text(DELETE, timeout=30)  # the page refreshes itself
    browser.screenshot("reviews")
    review = browser.find("article.review")
    assert "approval" in review.text  # the rule that held it
    review.find_element("css selector", "input[name=reason]").send_keys("ticket OPS-1")
    review.find_element("css selector", "button.approve").click()
    held.join()
    assert held.error is None, held.error
    assert held.rowcount == 1
    browser.get(f"{console.url}/console/reviews?status=approved")
    browser.wait_for_text("ticket OPS-1")
    kinds = _audit_kinds(console)
    assert "console_signed_in" in kinds
    assert (
        "review_decided" in kinds or "review_approved" in kinds or any("review" in k for k in kinds)
    )
    # Alice sees only her own sessions: the agent's is not among them.
    browser.get(f"{console.url}/console/sessions")
    assert not browser.find_all("table.list a")
    browser.get(f"{console.url}/console/access")
    browser.screenshot("access")
    # Sign-out ends the session on the server.
    browser.find("#sign-out").click()
    browser.wait_for(lambda: "/console/login" in browser.url, what="the sign-in page")
    browser.screenshot("sign-in")
    browser.get(f"{console.url}/console/reviews")
    browser.wait_for(lambda: "/console/login" in browser.url, what="the sign-in page again")
    assert "console_signed_out" in _audit_kinds(console)


def test_an_auditor_downloads_an_evidence_pack_and_cannot_approve(
    console: Console, browser: Any
) -> None:
    held = Held(console.conninfo(), DELETE)
    sign_in(browser, console, "carol")
    browser.wait_for_text(DELETE, timeout=30)
    # An auditor sees every review but is outside the approver groups: no buttons.
    assert not browser.find_all("button.approve")
    browser.get(f"{console.url}/console/audit?kind=console_signed_in")
    browser.wait_for_text("carol")
    browser.screenshot("audit")
    browser.get(f"{console.url}/console/evidence")
    browser.screenshot("evidence")
    today = datetime.now(UTC).strftime("%m%d%Y")
    browser.find("input[name=since]").send_keys(today)
    browser.find("#evidence-form button[type=submit]").click()
    pack = browser.downloaded(".zip")
    with zipfile.ZipFile(pack) as archive:
        names = archive.namelist()
    assert "evidence/index.html" in names and "evidence/verification.json" in names
    assert "console_evidence_pack" in _audit_kinds(console)
    # An auditor sees every session; the replay shows the held statement as recorded.
    browser.get(f"{console.url}/console/sessions")
    browser.wait_for(lambda: browser.find_all("table.list a"), what="the agent's session")
    browser.screenshot("sessions")
    browser.find("table.list a").click()
    browser.wait_for_text(DELETE)
    browser.screenshot("replay")
    held.conn.cancel()
    held.join()


def test_an_unauthenticated_request_is_sent_to_sign_in_or_refused(console: Console) -> None:
    opener = _opener()
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{console.url}/console/reviews")
    assert refused.value.code == 303
    assert refused.value.headers["Location"] == "/console/login"
    request = urllib.request.Request(
        f"{console.url}/console/reviews/0123456789ab/decide",
        data=b"decision=approve",
        headers={"Origin": console.url, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as post:
        opener.open(request)
    assert post.value.code == 401


def test_a_wrong_state_is_refused(console: Console, browser: Any) -> None:
    browser.get(f"{console.url}/console/login")
    browser.find("ul.providers a").click()
    browser.wait_for(lambda: browser.find_all("input[name=login]"), what="the provider")
    # The browser comes back with a state the console never issued (or issued elsewhere).
    browser.get(f"{console.url}/console/callback/oidc/corp?state=forged&code=stolen")
    browser.wait_for_text("Sign-in failed")
    browser.get(f"{console.url}/console/reviews")
    browser.wait_for(lambda: "/console/login" in browser.url, what="still signed out")
    records = _audit_records(console, "console_sign_in_failed")
    assert any("state" in r["reason"] for r in records)


def test_a_form_posted_from_another_site_is_refused(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    held = Held(console.conninfo(), DELETE)
    sign_in(browser, console, "alice")
    browser.wait_for_text(DELETE, timeout=30)
    review_id = browser.find("article.review").get_attribute("id").removeprefix("review-")
    csrf = browser.find("input[name=csrf]").get_attribute("value")
    # Another site's page, with a form that posts to the console (even with a valid token).
    page = (
        f'<form method="post" action="{console.url}/console/reviews/{review_id}/decide">'
        f'<input name="csrf" value="{csrf}"><input name="decision" value="approve">'
        '<button id="go" type="submit">win a prize</button></form>'
    ).encode()
    with _serve(page) as other_site:
        browser.get(other_site)
        browser.find("#go").click()
        browser.wait_for(lambda: "/console/" in browser.url, what="the console's answer")
    assert "403" in browser.text or "401" in browser.text
    browser.get(f"{console.url}/console/reviews")
    browser.wait_for_text(DELETE)
    assert browser.find_all("button.approve"), "the review is still pending"
    held.conn.cancel()
    held.join()


def test_an_audit_export_linked_from_another_site_is_refused(
    console: Console, browser: Any
) -> None:
    # A GET that writes a record in the auditor's name: the link's navigation carries the
    # Lax cookie, so the console must tell it from its own export button.
    sign_in(browser, console, "carol")
    export = f"{console.url}/console/audit/export?kind=console_signed_in"
    page = f'<a id="go" href="{export}">the quarterly report</a>'.encode()
    with _serve(page) as other_site:
        browser.get(other_site)
        browser.find("#go").click()
        browser.wait_for(lambda: "/console/" in browser.url, what="the console's answer")
        browser.wait_for_text("403")
    assert not _audit_records(console, "console_audit_export")
    # The console's own export button still works.
    browser.get(f"{console.url}/console/audit?kind=console_signed_in")
    browser.find("#audit-export").click()
    browser.downloaded(".jsonl")
    assert _audit_records(console, "console_audit_export")


# -- helpers ---------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the tests' own CA; loopback only
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)


class _serve:
    """A page on another origin (plain HTTP on a loopback port)."""

    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def _audit_records(console: Console, kind: str) -> list[dict[str, Any]]:
    path = console.gateway.config_path.parent / "hoopgw.db"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT data FROM audit_records WHERE kind = ?", (kind,))
        return [json.loads(row[0]) for row in rows]


def _audit_kinds(console: Console) -> list[str]:
    path = console.gateway.config_path.parent / "hoopgw.db"
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT kind FROM audit_records ORDER BY seq")]
