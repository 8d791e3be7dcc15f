"""The web console's HTTP side: routing, sign-in and sign-out, cookies, CSRF and headers.

Served under ``/console`` on the admin listener (:func:`hoopgw.admin.api.build_site`). Every
answer carries a strict Content-Security-Policy (scripts and styles only from the console's
own files, no inline script, no framing), ``X-Frame-Options: DENY``, ``no-store`` caching and
``Referrer-Policy: same-origin`` (no console URL leaves for another site; a stricter
``no-referrer`` would make browsers send ``Origin: null`` on the console's own forms).

A request is either public (the sign-in pages, the static files) or needs a live console
session (:mod:`hoopgw.console.websessions`): without one a page redirects to sign-in and
anything else is refused with 401. Every POST must also carry the session's CSRF token and an
``Origin`` (or, lacking one, ``Referer``) of the console's own ``public_url``; a browser's
``Sec-Fetch-Site`` other than ``same-origin`` is refused too. What a signed-in person may see
or do follows the same rules as the admin API (:mod:`hoopgw.admin.authz` and the review rules
of :class:`~hoopgw.approvals.reviews.ReviewService`), called from :mod:`hoopgw.console.pages`.

Sign-in, sign-in failure and sign-out are audit records (``console_signed_in``,
``console_sign_in_failed``, ``console_signed_out``; a session that times out ends without
one); a session is created only once its sign-in record is durable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import jinja2
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from hoopgw.approvals.common import ApprovalError, roles_of
from hoopgw.console.settings import ConsoleConfig
from hoopgw.console.websessions import LOGIN_TTL, LoginAttempts, WebSession, WebSessions
from hoopgw.errors import AuthenticationError
from hoopgw.records import AuditEntry
from hoopgw.session import Identity
from hoopgw.signin import LoginAttempt

__all__ = ["SESSION_COOKIE", "Console", "Context", "Reply", "refuse_cross_site"]

log = Logger(namespace="hoopgw.console")

SESSION_COOKIE = "__Host-hoopgw-console"
"""The session cookie; the ``__Host-`` prefix makes browsers require Secure, Path=/ and no
Domain."""
LOGIN_COOKIE = "__Host-hoopgw-signin"
"""Binds a sign-in under way to the browser that started it."""

SIGNED_IN_KIND = "console_signed_in"
SIGN_IN_FAILED_KIND = "console_sign_in_failed"
SIGNED_OUT_KIND = "console_signed_out"

MAX_FORM = 64 * 1024
"""Largest form body read, in bytes (the admin listener refuses larger bodies anyway)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""The Content-Security-Policy of every answer: the console's own script and style files only."""
CSP_PLAYER = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
"""The replay page's: the terminal player compiles its WebAssembly terminal emulator (which
allows WebAssembly only, not JavaScript ``eval``)."""
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_ENDED = {
    b"idle": "Your session ended after a time without activity. Sign in again.",
    b"expired": "Your session reached its longest lifetime. Sign in again.",
}
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}")


@attrs.frozen
class Reply:
    """One answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    cookies: tuple[str, ...] = ()
    """Whole ``Set-Cookie`` values."""


@attrs.define
class Context:
    """What a page handler gets: the request, the signed-in session, the form."""

    request: Any
    session: WebSession
    form: dict[str, str]
    query: dict[str, str]

    @property
    def identity(self) -> Identity:
        """Who is asking."""
        return self.session.identity


Handler = Callable[..., Any]


class Refused(Exception):
    """A request refused with an HTTP status and a message that is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _cookie(name: str, value: str, *, max_age: int | None, same_site: str = "Lax") -> str:
    parts = [f"{name}={value}", "Path=/", "Secure", "HttpOnly", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


class Console(resource.Resource):
    """The ``/console`` tree.

    :param config: the ``[console]`` table.
    :param roles: the ``[roles]`` table.
    :param audit: the gateway's audit writer.
    :param clock: ``seconds()``; the reactor.
    :param groups: the gateway's :class:`~hoopgw.identity.groups.GroupResolver`: a person signing in
        gets the groups of the configured group sources too.
    :param base_dir: the config file's folder.
    :param reserved_prefixes: the ``identity_prefix`` of each ``[[identity.oidc]]`` issuer: a
        name starting with one belongs to that issuer's tokens, so a sign-in method other than
        OIDC (SAML) may not name it.

    It is the :class:`~hoopgw.signin.SignInHost` of every sign-in method.
    """

    isLeaf = True

    def __init__(
        self,
        config: ConsoleConfig,
        *,
        roles: Mapping[str, tuple[str, ...]],
        audit: Any,
        clock: Any,
        groups: Any,
        base_dir: Path,
        reserved_prefixes: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.config = config
        self.roles = roles
        self._audit = audit
        self.clock = clock
        self._groups = groups
        self.base_dir = base_dir
        self._reserved = tuple(p for p in reserved_prefixes if p)
        self.sessions = WebSessions(
            clock, idle_timeout=config.idle_timeout, absolute_timeout=config.absolute_timeout
        )
        self.attempts = LoginAttempts(clock)
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("hoopgw.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self.sign_in_methods: dict[str, tuple[str, str]] = {}
        """Provider name -> (button label, URL path that starts the sign-in)."""

    # -- the route table -----------------------------------------------------------------------

    def page_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` on ``/console`` + ``pattern`` (a regular expression matched in
        full; its groups are passed on) to signed-in people: ``handler(context, *groups)``
        returns a :class:`Reply` or a Deferred of one. A POST is checked for its origin and
        CSRF token first."""
        self._routes.append((method, re.compile(pattern), handler, True))

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve a public route (a sign-in step): ``handler(request, *groups)``. No session,
        origin or CSRF check: a sign-in step proves its request itself (state bound to the
        browser, a signed answer of the provider)."""
        self._routes.append((method, re.compile(pattern), handler, False))

    def add_sign_in(self, provider: str, label: str, path: str) -> None:
        """List a sign-in method on the sign-in page."""
        self.sign_in_methods[provider] = (label, path)

    # -- rendering -----------------------------------------------------------------------------

    def page(self, name: str, context: Context | None, *, csp: str = CSP, **values: Any) -> Reply:
        """Render template ``name`` (``reviews.html``) for the signed-in ``context``."""
        if context is not None:
            values.update(
                me=context.identity,
                roles=sorted(roles_of(context.identity, self.roles)),
                csrf=context.session.csrf,
            )
        body = self._templates.get_template(name).render(**values).encode()
        return Reply(body=body, headers={"Content-Security-Policy": csp})

    def answer(self, body: bytes, content_type: str) -> Reply:
        """A plain 200 answer of ``body``."""
        return Reply(body=body, content_type=content_type)

    def redirect(self, path: str, *, cookies: tuple[str, ...] = ()) -> Reply:
        """A 303 to ``path`` (absolute, or under the console's own origin)."""
        return Reply(status=303, headers={"Location": path}, cookies=cookies)

    @property
    def base_url(self) -> str:
        """``public_url`` + ``/console``: where the identity providers send people back."""
        return self.config.origin + "/console"

    # -- sign-in and sign-out (for the sign-in methods) ----------------------------------------

    def begin_sign_in(self, attempt: LoginAttempt, url: str, *, cross_site_post: bool) -> Reply:
        """Send the browser to ``url`` at the provider, binding ``attempt`` to it."""
        binding = self.attempts.start(attempt)
        # Lax is sent when the provider sends the browser back with a top-level GET; a
        # provider that POSTs back (SAML) needs None. The cookie binds, it does not sign in.
        same_site = "None" if cross_site_post else "Lax"
        cookie = _cookie(LOGIN_COOKIE, binding, max_age=int(LOGIN_TTL), same_site=same_site)
        return self.redirect(url, cookies=(cookie,))

    def take_attempt(self, request: Any, state: str) -> LoginAttempt | None:
        """The sign-in under way ``state`` names, if this browser started it (once)."""
        binding = _cookie_value(request, LOGIN_COOKIE)
        return self.attempts.take(state, binding)

    def sign_in_failed(self, request: Any, provider: str, reason: str) -> defer.Deferred[Reply]:
        """Record a refused sign-in and answer with the sign-in page and a safe message."""
        log.info("console sign-in failed ({provider}): {reason}", provider=provider, reason=reason)
        entry = self._entry(
            SIGN_IN_FAILED_KIND,
            {"provider": provider, "reason": reason, "client_address": _peer(request)},
        )
        written = self._audit.write(entry, urgent=False)
        written.addErrback(lambda f: log.error("cannot record a failed sign-in: {f}", f=f.value))
        reply = self._login_page("Sign-in failed. Try again, or ask your administrator.", 403)
        return defer.succeed(attrs.evolve(reply, cookies=(_expired(LOGIN_COOKIE),)))

    def signed_in(self, request: Any, identity: Identity, provider: str) -> defer.Deferred[Reply]:
        """Add the group sources' groups, record the sign-in, then start the session and send
        the browser to the reviews."""

        def resolved(identity: Identity) -> defer.Deferred[Reply]:
            return self._record_sign_in(request, identity, provider)

        def unresolved(failure: Failure) -> defer.Deferred[Reply]:
            failure.trap(AuthenticationError)
            return self.sign_in_failed(request, provider, f"group sources: {failure.value}")

        if not provider.startswith("oidc:"):
            # An OIDC identity carries its issuer's prefix (distinct per issuer, checked by
            # the config); another method must not take a name reserved for one of them.
            taken = [p for p in self._reserved if identity.name.startswith(p)]
            if taken:
                reason = f"{identity.name!r} starts with the OIDC identity prefix {taken[0]!r}"
                return self.sign_in_failed(request, provider, reason)
        return self._groups.resolve(identity).addCallbacks(resolved, unresolved)

    def _record_sign_in(
        self, request: Any, identity: Identity, provider: str
    ) -> defer.Deferred[Reply]:
        entry = self._entry(
            SIGNED_IN_KIND,
            {
                "identity": identity.name,
                "groups": sorted(identity.groups),
                "roles": sorted(roles_of(identity, self.roles)),
                "provider": provider,
                "credential_id": identity.credential_id,
                "client_address": _peer(request),
            },
        )

        def durable(_: Any) -> Reply:
            cookie, _session = self.sessions.create(identity, via=provider)
            log.info(
                "{identity} signed in to the console ({provider})",
                identity=identity.name,
                provider=provider,
            )
            return self.redirect(
                "/console/reviews",
                cookies=(
                    _cookie(SESSION_COOKIE, cookie, max_age=int(self.config.absolute_timeout)),
                    _expired(LOGIN_COOKIE),
                ),
            )

        return self._audit.write(entry).addCallback(durable)

    def _entry(self, kind: str, data: dict[str, Any]) -> AuditEntry:
        return AuditEntry(kind=kind, session_id="", time=self.clock.seconds(), data=data)

    def _login_page(self, message: str = "", status: int = 200) -> Reply:
        methods = sorted(self.sign_in_methods.values())
        reply = self.page("login.html", None, methods=methods, message=message, me=None)
        return attrs.evolve(reply, status=status)

    def _logout(self, context: Context) -> defer.Deferred[Reply]:
        self.sessions.end(context.session)
        entry = self._entry(
            SIGNED_OUT_KIND,
            {
                "identity": context.identity.name,
                "provider": context.session.via,
                "client_address": _peer(context.request),
            },
        )
        reply = self.redirect("/console/login", cookies=(_expired(SESSION_COOKIE),))
        # Signed out at once; the record follows (a store outage must not keep a session).
        written = self._audit.write(entry, urgent=False)
        written.addErrback(lambda f: log.error("cannot record a sign-out: {f}", f=f.value))
        return defer.succeed(reply)

    # -- HTTP ----------------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        """Answer one request."""
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = defer.maybeDeferred(self._dispatch, request)
        d.addErrback(self._error, request)

        def respond(reply: Reply) -> None:
            if not finished:
                self._send(request, reply)

        d.addCallback(respond)
        return server.NOT_DONE_YET

    def _send(self, request: Any, reply: Reply) -> None:
        request.setResponseCode(reply.status)
        headers = {
            "Content-Type": reply.content_type,
            "Content-Security-Policy": CSP,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
            "Cross-Origin-Opener-Policy": "same-origin",
            **reply.headers,
        }
        if self.config.secure:
            headers["Strict-Transport-Security"] = "max-age=31536000"
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode("utf-8"))
        for cookie in reply.cookies:
            request.responseHeaders.addRawHeader(b"set-cookie", cookie.encode("ascii"))
        request.write(reply.body)
        request.finish()

    def _error(self, failure: Failure, request: Any) -> Reply:
        error: Any = failure.value
        if failure.check(Refused):
            status, message = error.status, str(error)
        elif failure.check(ApprovalError):
            code = error.code
            status = {"not_found": 404, "forbidden": 403, "conflict": 409, "invalid": 400}.get(
                code, 500
            )
            message = str(error)
        else:
            log.failure("console request failed", failure)
            status, message = 500, "internal error; see the gateway's log"
        body = self._templates.get_template("error.html").render(status=status, message=message)
        return Reply(status=status, body=body.encode())

    @defer.inlineCallbacks
    def _dispatch(self, request: Any) -> Any:
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        sub = path.removeprefix("/console")
        if sub in ("", "/"):
            return self.redirect("/console/reviews")
        if method == "GET" and sub == "/login":
            ended = request.args.get(b"ended", [b""])[0]
            return self._login_page(_ENDED.get(ended, ""))
        if method == "GET" and sub.startswith("/static/"):
            return _static(sub.removeprefix("/static/"))
        allowed = []
        for route_method, pattern, handler, signed_in in self._routes:
            match = pattern.fullmatch(sub)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if not signed_in:
                return (yield defer.maybeDeferred(handler, request, *match.groups()))
            context = self._context(request, method)
            if isinstance(context, Reply):
                return context
            return (yield defer.maybeDeferred(handler, context, *match.groups()))
        if method == "POST" and sub == "/logout":
            context = self._context(request, method)
            if isinstance(context, Reply):
                return context
            return (yield self._logout(context))
        if allowed:
            raise Refused(405, f"{method} is not allowed here")
        raise Refused(404, "no such page")

    def _check_origin(self, request: Any) -> None:
        """Refuse a POST another site's page made (CSRF), before anything else looks at it."""
        refuse_cross_site(request)
        origin = request.getHeader(b"origin")
        if origin is None:
            referer = request.getHeader(b"referer")
            if referer is None:
                raise Refused(403, "a form post without Origin or Referer is refused")
            parts = urlsplit(referer.decode("latin-1"))
            origin_text = f"{parts.scheme}://{parts.netloc}"
        else:
            origin_text = origin.decode("latin-1")
        if origin_text != self.config.origin:
            raise Refused(403, "a form from another site is refused")

    def _context(self, request: Any, method: str) -> Context | Reply:
        if method == "POST":
            self._check_origin(request)
        # The reviews table refreshing itself must not keep an unattended browser signed in.
        session, why = self.sessions.find(
            _cookie_value(request, SESSION_COOKIE), touch=not _wants_fragment(request)
        )
        if session is None:
            if method == "GET" and not _wants_fragment(request):
                suffix = "?ended=" + why if why in ("idle", "expired") else ""
                cookies = (_expired(SESSION_COOKIE),) if why != "none" else ()
                return self.redirect("/console/login" + suffix, cookies=cookies)
            raise Refused(401, "sign in first")
        form: dict[str, str] = {}
        if method == "POST":
            form = _form(request)
            if not session.csrf_matches(form.get("csrf", "")):
                raise Refused(403, "the form's CSRF token is missing or wrong; reload the page")
        query = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        return Context(request=request, session=session, form=form, query=query)


def refuse_cross_site(request: Any) -> None:
    """Refuse a request a browser says another site's page started (``Sec-Fetch-Site``): every
    POST, and a GET that does something (an audit export is an audit record)."""
    fetch_site = request.getHeader(b"sec-fetch-site")
    if fetch_site is not None and fetch_site not in (b"same-origin", b"none"):
        raise Refused(403, "a request from another site is refused")


def _wants_fragment(request: Any) -> bool:
    return request.getHeader(b"x-requested-with") == b"hoopgw-console"


def _form(request: Any) -> dict[str, str]:
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
    if content_type != b"application/x-www-form-urlencoded":
        raise Refused(415, "forms are sent as application/x-www-form-urlencoded")
    raw = request.content.read(MAX_FORM + 1) if request.content is not None else b""
    if len(raw) > MAX_FORM:
        raise Refused(413, "the form is too large")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8") from None
    return {k: v[0] for k, v in parsed.items()}


def _cookie_value(request: Any, name: str) -> str | None:
    value = request.getCookie(name.encode())
    return None if value is None else value.decode("latin-1")


def _expired(name: str) -> str:
    return _cookie(name, "", max_age=0)


def _peer(request: Any) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"


def _static(name: str) -> Reply:
    if not _STATIC_NAME.fullmatch(name) or ".." in name:
        raise Refused(404, "no such file")
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = _STATIC_TYPES.get(suffix)
    if content_type is None:
        raise Refused(404, "no such file")
    try:
        body = resources.files("hoopgw.console").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Refused(404, "no such file") from None
    return Reply(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})
