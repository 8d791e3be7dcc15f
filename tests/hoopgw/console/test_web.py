"""The console's HTTP side without a network: requests rendered in memory, a Clock for time.

Sign-in is done through :meth:`Console.signed_in` (what every sign-in method ends with); the
OIDC and SAML steps before it have their own tests.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import defer, task
from twisted.web.test.requesthelper import DummyRequest

from hoopgw.admin.sessions import SessionControl
from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.connection import ConnectionConfig, CredentialConfig
from hoopgw.console import pages
from hoopgw.console.settings import ConsoleConfig
from hoopgw.console.web import (
    CSP,
    SESSION_COOKIE,
    SIGN_IN_FAILED_KIND,
    SIGNED_IN_KIND,
    SIGNED_OUT_KIND,
    Console,
)
from hoopgw.reviews import ReviewPolicy
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.session import Identity, Parameter
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.testing import FakeAuditWriter, make_command, make_session
from hoopgw.verdicts import Hold

ORIGIN = "https://gw.example.com"
ALICE = Identity(name="alice", groups=frozenset({"dba"}), method="oidc")
BOB = Identity(name="bob", groups=frozenset({"devs"}), method="oidc")
AUDITOR = Identity(name="carol", groups=frozenset({"audit"}), method="oidc")
ADMIN = Identity(name="dave", groups=frozenset({"ops", "dba"}), method="oidc")


class NoGroups:
    def resolve(self, identity: Identity) -> defer.Deferred[Identity]:
        return defer.succeed(identity)


class Site:
    """One console over an in-memory store, with a browser's cookie jar."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = SQLiteStore(":memory:")
        self.store.migrate()
        self.audit = FakeAuditWriter()
        roles = {"approver": ("dba",), "auditor": ("audit",), "admin": ("ops",)}
        jit = ConnectionConfig(
            name="jit",
            protocol="postgres",
            listen="tcp:0",
            target="127.0.0.1:5432",
            credential=CredentialConfig(user="postgres"),
            allow_groups=("devs",),
            access="jit",
            jit_approvers=("dba",),
        )
        sessions = SessionRegistry()
        grants = GrantService(
            store=self.store,
            audit=self.audit,  # type: ignore[arg-type]
            reactor=self.clock,
            connections={"jit": jit},
            roles=roles,
            sessions=sessions,
        )
        self.service = ReviewService(
            store=self.store,
            audit=self.audit,  # type: ignore[arg-type]
            reactor=self.clock,
            grants=grants,
            roles=roles,
            sessions=sessions,
            approval_timeout=300,
        )
        self.console = Console(
            ConsoleConfig(public_url=ORIGIN, idle_timeout=900, absolute_timeout=3600),
            roles=roles,
            audit=self.audit,
            clock=self.clock,
            groups=NoGroups(),
            base_dir=Path("."),
            reserved_prefixes=("corp:",),
        )
        control = SessionControl(
            sessions=SessionRegistry(), audit=self.audit, roles=roles, clock=self.clock
        )
        pages.install(
            self.console,
            pages.Pages(
                self.console,
                service=self.service,
                sessions=control,
                store=self.store,
                audit=self.audit,
                # The gateway runs this in a thread with a store of its own.
                background=lambda work: defer.maybeDeferred(work, self.store),
                evidence=None,
                clock=self.clock,
            ),
        )
        self.cookie: str | None = None

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        origin: str | None = ORIGIN,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> DummyRequest:
        bare, _, query = path.partition("?")
        request = DummyRequest(bare.strip("/").split("/"))
        request.method = method.encode()
        request.path = bare.encode()  # type: ignore[attr-defined]
        request.uri = path.encode()
        for pair in filter(None, query.split("&")):
            name, _, value = pair.partition("=")
            request.addArg(name.encode(), value.encode())
        body = b""
        if form is not None:
            from urllib.parse import urlencode

            body = urlencode(form).encode()
            request.requestHeaders.addRawHeader(
                b"content-type", b"application/x-www-form-urlencoded"
            )
        request.content = io.BytesIO(body)  # type: ignore[attr-defined]
        if origin is not None and method == "POST":
            request.requestHeaders.addRawHeader(b"origin", origin.encode())
        for name, value in (headers or {}).items():
            request.requestHeaders.addRawHeader(name.encode(), value.encode())
        jar = cookie if cookie is not None else self.cookie
        cookies = {SESSION_COOKIE.encode(): jar.encode()} if jar else {}
        request.getCookie = cookies.get  # type: ignore[attr-defined]
        return request

    def call(self, method: str, path: str, form: dict[str, str] | None = None, **kw: Any) -> Any:
        request = self.request(method, path, form, **kw)
        self.console.render(request)
        assert request.finished, "the console did not answer"
        return request

    def sign_in(self, identity: Identity) -> str:
        request = self.request("GET", "/console/callback/test")
        reply = self.console.signed_in(request, identity, "oidc:test")
        answer = _result(reply)
        cookie = next(c for c in answer.cookies if c.startswith(SESSION_COOKIE + "="))
        self.cookie = cookie.split(";")[0].split("=", 1)[1]
        return self.csrf()

    def csrf(self) -> str:
        page = body(self.call("GET", "/console/reviews"))
        marker = 'name="csrf" value="'
        start = page.index(marker) + len(marker)
        return page[start : page.index('"', start)]

    def hold(
        self, text: str = "DELETE FROM t WHERE id = $1", approvers: tuple[str, ...] = ("dba",)
    ) -> tuple[str, Any]:
        session = make_session()
        command = attrs.evolve(make_command(text), parameters=(Parameter(value=b"42", shown="42"),))
        decision = self.service.hold(
            session,
            command,
            Hold(reason="guardrails: rule deletes needs approval"),
            ReviewPolicy(approvers=approvers),
        )
        review = self.store.list_reviews(status="pending", limit=1)[0]
        return review.id, decision


def _result(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def body(request: DummyRequest) -> str:
    return b"".join(request.written).decode()


def header(request: DummyRequest, name: str) -> str | None:
    value = request.responseHeaders.getRawHeaders(name.encode())
    return None if value is None else value[0].decode()


@pytest.fixture
def site() -> Site:
    return Site()


def test_unauthenticated_page_redirects_to_sign_in(site: Site) -> None:
    request = site.call("GET", "/console/reviews")
    assert request.responseCode == 303
    assert header(request, "location") == "/console/login"


def test_unauthenticated_fragment_and_post_are_refused(site: Site) -> None:
    fragment = site.call(
        "GET", "/console/reviews?fragment=1", headers={"X-Requested-With": "hoopgw-console"}
    )
    assert fragment.responseCode == 401
    post = site.call("POST", "/console/reviews/0123456789ab/decide", {"decision": "approve"})
    assert post.responseCode == 401


def test_unknown_cookie_is_refused(site: Site) -> None:
    request = site.call("GET", "/console/reviews", cookie="made-up")
    assert request.responseCode == 303
    assert header(request, "location") == "/console/login"


def test_every_answer_has_the_security_headers(site: Site) -> None:
    for request in (site.call("GET", "/console/login"), site.call("GET", "/console/nothing")):
        assert header(request, "content-security-policy") == CSP
        assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        assert header(request, "x-frame-options") == "DENY"
        assert header(request, "cache-control") == "no-store"
        assert header(request, "referrer-policy") == "same-origin"
        assert header(request, "strict-transport-security")


def test_sign_in_sets_a_host_only_secure_cookie_and_is_audited(site: Site) -> None:
    request = site.request("GET", "/console/callback/test")
    reply = _result(site.console.signed_in(request, ALICE, "oidc:test"))
    assert reply.status == 303 and reply.headers["Location"] == "/console/reviews"
    cookie = next(c for c in reply.cookies if c.startswith(SESSION_COOKIE))
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookie.split("; ")
    assert "Domain" not in cookie
    records = [e for e in site.audit.records if e.kind == SIGNED_IN_KIND]
    assert records and records[0].data["identity"] == "alice"
    assert records[0].data["roles"] == ["approver"]


def test_a_name_in_an_oidc_issuers_prefix_comes_only_from_that_issuer(site: Site) -> None:
    # "corp:" names belong to the issuer with that identity_prefix: a SAML IdP (or any other
    # sign-in method) naming "corp:alice" must not become her.
    request = site.request("GET", "/console/saml/acs")
    mallory = Identity(name="corp:alice", groups=frozenset({"dba"}), method="saml")
    reply = _result(site.console.signed_in(request, mallory, "saml"))
    assert reply.status == 403
    assert len(site.console.sessions) == 0
    assert not [e for e in site.audit.records if e.kind == SIGNED_IN_KIND]
    failed = [e for e in site.audit.records if e.kind == SIGN_IN_FAILED_KIND]
    assert failed and "corp:" in failed[0].data["reason"]
    corp = Identity(name="corp:alice", groups=frozenset({"dba"}), method="oidc")
    assert _result(site.console.signed_in(request, corp, "oidc:corp")).status == 303


def test_no_session_starts_when_the_sign_in_cannot_be_recorded(site: Site) -> None:
    site.audit.failing = True
    request = site.request("GET", "/console/callback/test")
    d = site.console.signed_in(request, ALICE, "oidc:test")
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures
    assert len(site.console.sessions) == 0


def test_reviewer_sees_the_statement_its_parameters_and_rule(site: Site) -> None:
    review_id, _ = site.hold()
    site.sign_in(ALICE)
    page = body(site.call("GET", "/console/reviews"))
    assert "DELETE FROM t WHERE id = $1" in page
    assert "42" in page
    assert "guardrails: rule deletes needs approval" in page
    assert f"/console/reviews/{review_id}/decide" in page


def test_approving_through_the_form_releases_the_statement(site: Site) -> None:
    review_id, decision = site.hold()
    csrf = site.sign_in(ALICE)
    request = site.call(
        "POST",
        f"/console/reviews/{review_id}/decide",
        {"csrf": csrf, "decision": "approve", "reason": "ok"},
    )
    assert request.responseCode == 303
    assert type(_result(decision)).__name__ == "Allow"
    assert site.store.get_review(review_id).status == "approved"


def test_a_cross_site_post_is_refused(site: Site) -> None:
    review_id, decision = site.hold()
    csrf = site.sign_in(ALICE)
    form = {"csrf": csrf, "decision": "approve"}
    for kwargs in (
        {"origin": "https://evil.example"},
        {"origin": None},
        {"origin": "null"},  # a sandboxed frame, a data: URL, a redirect chain
        {"origin": ORIGIN + ".evil.example"},
        {"origin": ORIGIN.replace("https:", "http:")},
        {"origin": None, "headers": {"Referer": "https://evil.example/console/reviews"}},
        {"origin": None, "headers": {"Referer": ORIGIN + "@evil.example/"}},
        {"headers": {"Sec-Fetch-Site": "cross-site"}},
        {"headers": {"Sec-Fetch-Site": "same-site"}},
    ):
        request = site.call("POST", f"/console/reviews/{review_id}/decide", form, **kwargs)
        assert request.responseCode == 403, kwargs
    assert not decision.called
    assert site.store.get_review(review_id).status == "pending"


def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    review_id, decision = site.hold()
    site.sign_in(ALICE)
    for token in ("", "wrong"):
        request = site.call(
            "POST", f"/console/reviews/{review_id}/decide", {"csrf": token, "decision": "approve"}
        )
        assert request.responseCode == 403
    assert not decision.called


def test_a_reviewer_outside_the_approver_groups_cannot_approve(site: Site) -> None:
    review_id, decision = site.hold()
    csrf = site.sign_in(AUDITOR)  # sees every review, approves none
    page = body(site.call("GET", "/console/reviews"))
    assert "DELETE FROM t" in page
    assert "/decide" not in page
    request = site.call(
        "POST", f"/console/reviews/{review_id}/decide", {"csrf": csrf, "decision": "approve"}
    )
    assert request.responseCode == 403
    assert not decision.called


def test_someone_else_does_not_see_the_review(site: Site) -> None:
    site.hold()
    site.sign_in(BOB)
    page = body(site.call("GET", "/console/reviews"))
    assert "DELETE FROM t" not in page


def test_deny_needs_a_reason(site: Site) -> None:
    review_id, decision = site.hold()
    csrf = site.sign_in(ALICE)
    request = site.call(
        "POST", f"/console/reviews/{review_id}/decide", {"csrf": csrf, "decision": "deny"}
    )
    assert request.responseCode == 400
    assert not decision.called


def test_idle_timeout_ends_the_session(site: Site) -> None:
    site.sign_in(ALICE)
    site.clock.advance(899)
    assert site.call("GET", "/console/reviews").responseCode == 200
    site.clock.advance(900)
    request = site.call("GET", "/console/reviews")
    assert request.responseCode == 303
    assert header(request, "location") == "/console/login?ended=idle"
    assert "without activity" in body(site.call("GET", "/console/login?ended=idle"))


def test_the_reviews_page_refreshing_itself_is_not_activity(site: Site) -> None:
    # An open reviews tab asks for its table every 3 seconds; an unattended browser must
    # still be signed out after idle_timeout.
    site.sign_in(ALICE)
    refresh = {"x-requested-with": "hoopgw-console"}
    for _ in range(10):
        site.clock.advance(60)
        assert site.call("GET", "/console/reviews?fragment=1", headers=refresh).responseCode == 200
    site.clock.advance(300)
    assert site.call("GET", "/console/reviews?fragment=1", headers=refresh).responseCode == 401
    assert header(site.call("GET", "/console/reviews"), "location") == "/console/login"


def test_absolute_timeout_ends_a_busy_session(site: Site) -> None:
    site.sign_in(ALICE)
    for _ in range(7):
        site.clock.advance(500)
        assert site.call("GET", "/console/reviews").responseCode == 200
    site.clock.advance(500)
    request = site.call("GET", "/console/reviews")
    assert header(request, "location") == "/console/login?ended=expired"


def test_sign_out_ends_the_session_and_is_audited(site: Site) -> None:
    csrf = site.sign_in(ALICE)
    request = site.call("POST", "/console/logout", {"csrf": csrf})
    assert request.responseCode == 303
    assert header(request, "location") == "/console/login"
    assert site.call("GET", "/console/reviews").responseCode == 303
    assert [e.data["identity"] for e in site.audit.records if e.kind == SIGNED_OUT_KIND] == [
        "alice"
    ]


def test_sign_out_needs_the_csrf_token(site: Site) -> None:
    site.sign_in(ALICE)
    request = site.call("POST", "/console/logout", {"csrf": "nope"})
    assert request.responseCode == 403
    assert site.call("GET", "/console/reviews").responseCode == 200


def test_audit_pages_need_the_auditor_or_admin_role(site: Site) -> None:
    site.sign_in(ALICE)
    assert site.call("GET", "/console/audit").responseCode == 403
    assert site.call("GET", "/console/evidence").responseCode == 403
    site.sign_in(AUDITOR)
    assert site.call("GET", "/console/audit").responseCode == 200


def test_terminate_needs_the_admin_role(site: Site) -> None:
    csrf = site.sign_in(AUDITOR)
    request = site.call(
        "POST", "/console/sessions/0123456789abcdef/terminate", {"csrf": csrf, "reason": "x"}
    )
    assert request.responseCode == 403


def test_values_are_escaped(site: Site) -> None:
    site.hold(text="SELECT '<script>alert(1)</script>'")
    site.sign_in(ALICE)
    page = body(site.call("GET", "/console/reviews"))
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


def test_static_files_are_served_and_paths_are_checked(site: Site) -> None:
    script = site.call("GET", "/console/static/console.js")
    assert script.responseCode == 200
    assert header(script, "content-type") == "text/javascript; charset=utf-8"
    assert site.call("GET", "/console/static/../web.py").responseCode == 404
    assert (
        site.call("GET", "/console/static/vendor/asciinema-player/LICENSE.txt").responseCode == 200
    )


SESSION_ID = "0b8e3d3c-1f5a-4c53-9d2b-6a1f0e7c9a11"


def _record_session(site: Site, identity: str = "agent") -> None:
    from hoopgw.records import AuditEntry

    started = {
        "identity": identity,
        "groups": ["agents"],
        "method": "api-key",
        "credential_id": "0123456789ab",
        "client_address": "127.0.0.1:5000",
        "connection": "jit",
        "protocol": "postgres",
        "target": "db:5432",
        "client_tls": False,
        "upstream_tls": False,
        "started_at": 100.0,
        "attributes": {},
    }
    received = {
        "seq": 1,
        "kind": "query",
        "text": "SELECT '<b>secret</b>'",
        "parameter_count": 0,
        "statement_name": "",
    }
    site.store.append(
        [
            AuditEntry(kind="session_started", session_id=SESSION_ID, time=100.0, data=started),
            AuditEntry(kind="command_received", session_id=SESSION_ID, time=101.0, data=received),
        ]
    )


def test_a_recorded_session_is_replayed_for_an_auditor_only(site: Site) -> None:
    _record_session(site)
    site.sign_in(ALICE)  # neither its identity nor an auditor
    assert site.call("GET", f"/console/sessions/{SESSION_ID}").responseCode == 404
    assert "0b8e3d3c" not in body(site.call("GET", "/console/sessions"))
    site.sign_in(AUDITOR)
    page = body(site.call("GET", f"/console/sessions/{SESSION_ID}"))
    assert "SELECT &#39;&lt;b&gt;secret&lt;/b&gt;&#39;" in page
    assert "0b8e3d3c" in body(site.call("GET", "/console/sessions"))
    # No terminal channel: no player, and no cast to fetch.
    assert "asciinema" not in page
    assert site.call("GET", f"/console/sessions/{SESSION_ID}/cast/1").responseCode == 404


def test_the_owner_sees_their_own_session_but_not_by_asking_for_another(site: Site) -> None:
    _record_session(site, identity="bob")
    site.sign_in(BOB)
    assert site.call("GET", f"/console/sessions/{SESSION_ID}").responseCode == 200
    # The identity filter is an auditor's: for others it stays their own name.
    assert "0b8e3d3c" in body(site.call("GET", "/console/sessions?identity=alice"))


def test_the_audit_export_is_json_lines_and_is_itself_audited(site: Site) -> None:
    import json

    _record_session(site)
    site.sign_in(AUDITOR)
    request = site.call("GET", "/console/audit/export?kind=command_received")
    assert request.responseCode == 200
    assert "attachment" in header(request, "content-disposition")
    lines = [json.loads(line) for line in body(request).splitlines()]
    assert [line["kind"] for line in lines] == ["command_received"]
    exports = [r for r in site.audit.records if r.kind == pages.AUDIT_EXPORT_KIND]
    assert exports and exports[0].data["by"] == "carol" and exports[0].data["records"] == 1


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site"])
def test_an_audit_export_another_site_starts_is_refused(site: Site, fetch_site: str) -> None:
    # A GET that writes an audit record in the auditor's name: a link on another site
    # (SameSite=Lax sends the cookie on a top-level navigation) must not make one.
    _record_session(site)
    site.sign_in(AUDITOR)
    headers = {"sec-fetch-site": fetch_site}
    request = site.call("GET", "/console/audit/export?kind=command_received", headers=headers)
    assert request.responseCode == 403
    assert not [r for r in site.audit.records if r.kind == pages.AUDIT_EXPORT_KIND]
    headers = {"sec-fetch-site": "same-origin"}
    request = site.call("GET", "/console/audit/export?kind=command_received", headers=headers)
    assert request.responseCode == 200


def test_access_is_requested_and_decided_through_the_forms(site: Site) -> None:
    csrf = site.sign_in(BOB)
    request = site.call(
        "POST",
        "/console/access/request",
        {"csrf": csrf, "connection": "jit", "minutes": "30", "reason": "incident 7"},
    )
    assert request.responseCode == 303
    [review] = site.store.list_reviews(status="pending", limit=5)
    assert review.kind == "access" and review.requester == "bob"
    assert "/decide" not in body(site.call("GET", "/console/access"))  # not their own
    csrf = site.sign_in(ALICE)  # in the connection's jit_approvers
    page = body(site.call("GET", "/console/access"))
    assert "incident 7" in page and f"/console/reviews/{review.id}/decide" in page
    request = site.call(
        "POST",
        f"/console/reviews/{review.id}/decide",
        {"csrf": csrf, "decision": "approve", "back": "access"},
    )
    assert header(request, "location") == "/console/access"
    assert site.store.get_review(review.id).status == "approved"


def test_a_terminal_channel_is_served_as_an_asciicast_for_the_player(site: Site) -> None:
    import json

    from hoopgw.records import AuditEntry

    _record_session(site)
    shell = {"seq": 2, "kind": "shell", "text": "", "parameter_count": 0, "statement_name": ""}
    site.store.append(
        [
            AuditEntry(kind="command_received", session_id=SESSION_ID, time=102.0, data=shell),
            AuditEntry(
                kind="terminal_output",
                session_id=SESSION_ID,
                time=102.5,
                data={"seq": 2, "data": "$ uptime\r\n"},
            ),
        ]
    )
    site.sign_in(AUDITOR)
    page = site.call("GET", f"/console/sessions/{SESSION_ID}")
    assert f'data-cast="/console/sessions/{SESSION_ID}/cast/2"' in body(page)
    assert "'wasm-unsafe-eval'" in header(page, "content-security-policy")
    assert "unsafe-inline" not in header(page, "content-security-policy")
    cast = site.call("GET", f"/console/sessions/{SESSION_ID}/cast/2")
    lines = body(cast).splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert json.loads(lines[1])[1:] == ["o", "$ uptime\r\n"]


def test_pages_read_the_store_through_the_store_calls_after_sign_in(site: Site) -> None:
    # With a PostgreSQL store the reads run on the store's threads (hoopgw.store.calls): a
    # page answers when the store does, and a caller not signed in causes no store work.
    from hoopgw.store.calls import StoreCalls

    review_id, _ = site.hold()
    queued: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []

    class Slow(StoreCalls):
        def call(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            queued.append((d, fn, args, kwargs))
            return d

    site.service.calls = Slow(None)
    assert site.call("GET", "/console/reviews", cookie="made-up").responseCode != 200
    assert queued == []
    site.service.calls = StoreCalls.inline()
    site.sign_in(ALICE)
    site.service.calls = Slow(None)
    for path in ("/console/reviews", "/console/access", "/console/sessions"):
        request = site.request("GET", path)
        site.console.render(request)
        assert not request.finished and len(queued) == 1, path
        d, fn, args, kwargs = queued.pop()
        d.callback(fn(*args, **kwargs))
        assert request.finished and (request.responseCode or 200) == 200, path
        if path == "/console/reviews":
            assert f"/console/reviews/{review_id}/decide" in body(request)
