"""The console's pages: reviews, access requests, sessions, replay, audit, evidence.

Each handler asks the same services and rules as the admin API — the review rules of
:class:`~hoopgw.approvals.reviews.ReviewService` (``list_reviews``, ``get``, ``decide``,
``request_access``, and ``grants.list_grants`` and ``grants.revoke``),
:func:`~hoopgw.approvals.common.decision_refused`, :class:`~hoopgw.admin.sessions.SessionControl`
for live sessions and their end, and :mod:`hoopgw.admin.authz` for the rest — so a page shows
and does exactly what the API would for the same person.
"""

from __future__ import annotations

import collections
import io
import json
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer

from hoopgw.admin.authz import may_read_audit, may_terminate_sessions, sees_every_session
from hoopgw.approvals.common import decision_refused, roles_of
from hoopgw.approvals.reviews import ReviewService
from hoopgw.audit.asciicast import channel_recording, terminal_channels
from hoopgw.audit.replay import transcript
from hoopgw.console.web import CSP_PLAYER, Console, Context, Refused, Reply, refuse_cross_site
from hoopgw.records import AuditEntry

__all__ = ["install"]

REVIEW_STATUSES = ("pending", "approved", "denied", "withdrawn", "aborted", "expired")
MAX_REASON = 2000
AUDIT_SEARCH_LIMIT = 500
"""Records shown by an audit search (the newest that match)."""
AUDIT_EXPORT_LIMIT = 100_000
"""Records in one audit export (the newest that match)."""
EVIDENCE_KIND = "console_evidence_pack"
AUDIT_EXPORT_KIND = "console_audit_export"


def _time(posix: float | None) -> str:
    if posix is None:
        return ""
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_day(value: str, key: str) -> float | None:
    if not value:
        return None
    try:
        when = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(400, f"{key} must be a date (YYYY-MM-DD)") from None
    return when.timestamp()


def _reason(form: dict[str, str], *, required: bool) -> str:
    reason = form.get("reason", "")
    if len(reason) > MAX_REASON:
        raise Refused(400, f"the reason is longer than {MAX_REASON} characters")
    if required and not reason.strip():
        raise Refused(400, "a reason is required")
    return reason


class Pages:
    """The page handlers of one console.

    :param service: the gateway's approval service.
    :param sessions: the gateway's :class:`~hoopgw.admin.sessions.SessionControl`.
    :param store: the gateway's store, for short indexed reads, made through the review
        service's store calls (off the reactor thread with a PostgreSQL store).
    :param audit: the gateway's audit writer.
    :param background: ``background(work)`` runs ``work(reader)`` away from the reactor
        thread, with a store of its own, and returns a Deferred of its result: audit searches
        and evidence packs read the whole chain, which must not stall the gateway's sessions.
    :param evidence: ``evidence(reader, folder, since, until)`` builds an evidence pack (in
        the background) and returns the :class:`~hoopgw.evidence.pack.PackResult`.
    :param clock: ``seconds()``.
    """

    def __init__(
        self,
        console: Console,
        *,
        service: ReviewService,
        sessions: Any,
        store: Any,
        audit: Any,
        background: Callable[[Callable[[Any], Any]], defer.Deferred[Any]],
        evidence: Any,
        clock: Any,
    ) -> None:
        self._console = console
        self._service = service
        self._sessions = sessions
        self._store = store
        self._audit = audit
        self._background = background
        self._evidence = evidence
        self._clock = clock
        self._roles = console.roles

    def _calls(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run store reads through the review service's store calls (off the reactor thread
        with a PostgreSQL store)."""
        return self._service.calls.call(fn, *args, **kwargs)

    # -- reviews -------------------------------------------------------------------------------

    def _review_rows(self, context: Context, kind: str, status: str | None) -> list[dict[str, Any]]:
        me = context.identity
        rows = []
        for review in self._service.list_reviews(me, status=status, limit=200):
            if review.kind != kind:
                continue
            votes = self._service.votes(review.id)
            rows.append(
                {
                    "r": review,
                    "created": _time(review.created_at),
                    "decided": _time(review.decided_at),
                    "hold_until": _time(review.hold_until),
                    "votes": votes,
                    "approvals": sum(1 for v in votes if v.approve),
                    # The test decide() applies; it applies it again when a button is pressed.
                    "may_decide": decision_refused(review, me, votes) is None,
                }
            )
        return rows

    def reviews(self, context: Context) -> defer.Deferred[Reply]:
        """Pending statement reviews (and, with ``?status=``, decided ones)."""
        status = context.query.get("status", "pending") or None
        if status is not None and status not in REVIEW_STATUSES:
            raise Refused(400, f"unknown status {status!r}")
        fragment = context.query.get("fragment") == "1"
        template = "reviews_table.html" if fragment else "reviews.html"
        read = self._calls(self._review_rows, context, "statement", status)
        return read.addCallback(
            lambda rows: self._console.page(
                template,
                context,
                rows=rows,
                status=status or "",
                statuses=REVIEW_STATUSES,
                page="reviews",
            )
        )

    def decide(self, context: Context, review_id: str) -> defer.Deferred[Reply]:
        """Approve or deny a review (statement or access)."""
        decision = context.form.get("decision")
        if decision not in ("approve", "deny"):
            raise Refused(400, "decision must be approve or deny")
        approve = decision == "approve"
        reason = _reason(context.form, required=not approve)
        back = "/console/access" if context.form.get("back") == "access" else "/console/reviews"
        decided = self._service.decide(review_id, context.identity, approve=approve, reason=reason)
        return decided.addCallback(lambda _: self._console.redirect(back))

    # -- access requests -----------------------------------------------------------------------

    def access(self, context: Context) -> defer.Deferred[Reply]:
        """Access requests to decide, the person's own requests, and grants."""
        status = context.query.get("status", "pending") or None
        if status is not None and status not in REVIEW_STATUSES:
            raise Refused(400, f"unknown status {status!r}")

        def read() -> tuple[list[dict[str, Any]], list[Any]]:
            rows = self._review_rows(context, "access", status)
            grants = self._service.grants.list_grants(context.identity, active=False, limit=200)
            return rows, grants

        return self._calls(read).addCallback(self._access_page, context, status)

    def _access_page(
        self, read: tuple[list[dict[str, Any]], list[Any]], context: Context, status: str | None
    ) -> Reply:
        rows, found = read
        now = self._clock.seconds()
        grants = [{"g": g, "status": g.status(now), "expires": _time(g.expires_at)} for g in found]
        jit = sorted(
            name
            for name, c in self._service.grants.connections.items()
            if c.access == "jit" and context.identity.groups & set(c.allow_groups)
        )
        return self._console.page(
            "access.html",
            context,
            rows=rows,
            grants=grants,
            jit_connections=jit,
            status=status or "",
            statuses=REVIEW_STATUSES,
            admin="admin" in roles_of(context.identity, self._roles),
            page="access",
        )

    def request_access(self, context: Context) -> defer.Deferred[Reply]:
        """Ask for just-in-time access to a connection."""
        connection = context.form.get("connection", "")
        minutes = context.form.get("minutes", "")
        if not (minutes.isascii() and minutes.isdigit()) or not 1 <= int(minutes) <= 7 * 24 * 60:
            raise Refused(400, "minutes must be a whole number from 1 to 10080")
        reason = _reason(context.form, required=True)
        requested = self._service.request_access(
            context.identity, connection=connection, duration=int(minutes) * 60.0, reason=reason
        )
        return requested.addCallback(lambda _: self._console.redirect("/console/access"))

    def revoke(self, context: Context, grant_id: str) -> defer.Deferred[Reply]:
        """End a grant (its holder, or an admin)."""
        reason = _reason(context.form, required=False)
        revoked = self._service.grants.revoke(grant_id, context.identity, reason)
        return revoked.addCallback(lambda _: self._console.redirect("/console/access"))

    # -- sessions ------------------------------------------------------------------------------

    def sessions(self, context: Context) -> defer.Deferred[Reply]:
        """Live sessions, and recorded ones with filters."""
        me = context.identity
        every = sees_every_session(me, self._roles)
        identity = context.query.get("identity", "") if every else me.name
        connection = context.query.get("connection", "")
        live = [
            dict(s, started=_time(s["started_at"]))
            for s in self._sessions.visible(me)
            if (not connection or s["connection"] == connection)
            and (not identity or s["identity"] == identity)
        ]
        read = self._calls(
            self._store.list_sessions,
            limit=200,
            connection=connection or None,
            identity=identity or None,
        )
        return read.addCallback(
            lambda found: self._sessions_page(context, live, found, every, identity, connection)
        )

    def _sessions_page(
        self,
        context: Context,
        live: list[dict[str, Any]],
        found: list[dict[str, Any]],
        every: bool,
        identity: str,
        connection: str,
    ) -> Reply:
        me = context.identity
        past = [dict(s, started=_time(s["started_at"]), ended=_time(s["ended_at"])) for s in found]
        return self._console.page(
            "sessions.html",
            context,
            live=live,
            past=past,
            every=every,
            identity=identity,
            connection=connection,
            connections=sorted(self._service.grants.connections),
            may_terminate=may_terminate_sessions(me, self._roles),
            page="sessions",
        )

    def terminate(self, context: Context, session_id: str) -> defer.Deferred[Reply]:
        """End a live session (admins)."""
        reason = _reason(context.form, required=False)
        ended = self._sessions.terminate(context.identity, session_id, reason)
        return ended.addCallback(lambda _: self._console.redirect("/console/sessions"))

    def _recorded(self, context: Context, session_id: str) -> dict[str, Any]:
        session = self._store.get_session(session_id)
        me = context.identity
        if session is None or not (
            sees_every_session(me, self._roles) or session["identity"] == me.name
        ):
            raise Refused(404, "no such session")
        return session

    def replay(self, context: Context, session_id: str) -> defer.Deferred[Reply]:
        """A recorded session: its database transcript, or its terminal channels."""
        read = self._calls(self._recorded, context, session_id)
        return read.addCallback(self._replay_page, context)

    def _replay_page(self, session: dict[str, Any], context: Context) -> Reply:
        steps = transcript(session)
        return self._console.page(
            "replay.html",
            context,
            s=session,
            started=_time(session["started_at"]),
            ended=_time(session["ended_at"]),
            steps=steps,
            channels=terminal_channels(session),
            page="sessions",
            csp=CSP_PLAYER,
        )

    def cast(self, context: Context, session_id: str, seq: str) -> defer.Deferred[Reply]:
        """One terminal channel of a session as an asciicast v2 file, for the player."""

        def read() -> Reply:
            session = self._recorded(context, session_id)
            if int(seq) not in terminal_channels(session):
                raise Refused(404, "no such terminal channel")
            out = io.StringIO()
            channel_recording(
                session,
                self._store.session_records(session["id"], "command_received"),
                self._store.session_records(session["id"], "terminal_output"),
                int(seq),
                out,
            )
            return Reply(body=out.getvalue().encode(), content_type="application/x-asciicast")

        return self._calls(read)

    # -- audit ---------------------------------------------------------------------------------

    def _need_audit(self, context: Context) -> None:
        if not may_read_audit(context.identity, self._roles):
            raise Refused(403, "the audit trail needs the auditor or admin role")

    def _search(self, query: dict[str, str], limit: int) -> defer.Deferred[list[Any]]:
        kind = query.get("kind", "")
        session = query.get("session", "")
        text = query.get("text", "")
        since = _parse_day(query.get("since", ""), "since")
        until = _parse_day(query.get("until", ""), "until")
        if until is not None:
            until += 86400  # the whole day
        return self._background(
            lambda reader: _matching(reader, kind, session, text, since, until, limit)
        )

    def audit(self, context: Context) -> defer.Deferred[Reply]:
        """Search the audit trail (newest first)."""
        self._need_audit(context)
        searched = any(context.query.get(k) for k in ("kind", "session", "text", "since", "until"))
        found = self._search(context.query, AUDIT_SEARCH_LIMIT) if searched else defer.succeed([])
        return found.addCallback(self._audit_page, context, searched)

    def _audit_page(self, records: list[Any], context: Context, searched: bool) -> Reply:
        rows = [
            {"r": r, "time": _time(r.time), "data": json.dumps(r.data, ensure_ascii=False)}
            for r in records
        ]
        fields = {
            k: context.query.get(k, "") for k in ("kind", "session", "text", "since", "until")
        }
        return self._console.page(
            "audit.html",
            context,
            rows=rows,
            searched=searched,
            limit=AUDIT_SEARCH_LIMIT,
            q=fields,
            page="audit",
        )

    def audit_export(self, context: Context) -> defer.Deferred[Reply]:
        """The matching records as JSON Lines, oldest first (the export is itself audited)."""
        self._need_audit(context)
        refuse_cross_site(context.request)
        return self._search(context.query, AUDIT_EXPORT_LIMIT).addCallback(self._exported, context)

    def _exported(self, found: list[Any], context: Context) -> defer.Deferred[Reply]:
        records = list(reversed(found))
        lines = [
            json.dumps(
                {
                    "seq": r.seq,
                    "kind": r.kind,
                    "session_id": r.session_id,
                    "time": r.time,
                    "data": r.data,
                    "hash": r.hash,
                    "prev_hash": r.prev_hash,
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for r in records
        ]
        body = ("\n".join(lines) + ("\n" if lines else "")).encode()
        entry = AuditEntry(
            kind=AUDIT_EXPORT_KIND,
            session_id="",
            time=self._clock.seconds(),
            data={"by": context.identity.name, "query": context.query, "records": len(lines)},
        )
        reply = Reply(
            body=body,
            content_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="hoopgw-audit.jsonl"'},
        )
        return self._audit.write(entry).addCallback(lambda _: reply)

    # -- evidence ------------------------------------------------------------------------------

    def evidence_page(self, context: Context) -> Reply:
        """The form that builds an evidence pack."""
        self._need_audit(context)
        return self._console.page("evidence.html", context, page="evidence")

    def evidence(self, context: Context) -> defer.Deferred[Reply]:
        """Build an evidence pack for the dates given and send it as a zip file."""
        self._need_audit(context)
        since = _parse_day(context.form.get("since", ""), "since")
        until = _parse_day(context.form.get("until", ""), "until")
        if since is None:
            raise Refused(400, "since is required")
        if until is not None:
            until += 86400
            if until <= since:
                raise Refused(400, "until must not be before since")
        entry = AuditEntry(
            kind=EVIDENCE_KIND,
            session_id="",
            time=self._clock.seconds(),
            data={"by": context.identity.name, "since": since, "until": until},
        )
        written = self._audit.write(entry)
        return written.addCallback(
            lambda _: self._background(
                lambda reader: _zipped_pack(self._evidence, reader, since, until)
            )
        )


def _matching(
    reader: Any,
    kind: str,
    session: str,
    text: str,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[Any]:
    """The newest ``limit`` records that match, newest first."""
    found: collections.deque[Any] = collections.deque(maxlen=limit)
    for record in reader.records():
        if kind and record.kind != kind:
            continue
        if session and not record.session_id.startswith(session):
            continue
        if since is not None and record.time < since:
            continue
        if until is not None and record.time >= until:
            continue
        if text and text not in json.dumps(record.data, ensure_ascii=False):
            continue
        found.append(record)
    return list(reversed(found))


def _zipped_pack(build: Any, reader: Any, since: float, until: float | None) -> Reply:
    with tempfile.TemporaryDirectory(prefix="hoopgw-evidence-") as temp:
        folder = Path(temp) / "evidence"
        result = build(reader, folder, since, until)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in result.files:
                archive.write(folder / name, f"evidence/{name}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Reply(
        body=out.getvalue(),
        content_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="hoopgw-evidence-{stamp}.zip"',
            "X-Hoopgw-Verified": "yes" if result.verified else "NO",
        },
    )


def install(console: Console, pages: Pages) -> None:
    """Serve ``pages`` on ``console``."""
    review_id = r"([0-9a-f]{12})"
    console.page_route("GET", "/reviews", pages.reviews)
    console.page_route("POST", f"/reviews/{review_id}/decide", pages.decide)
    console.page_route("GET", "/access", pages.access)
    console.page_route("POST", "/access/request", pages.request_access)
    console.page_route("POST", f"/access/grants/{review_id}/revoke", pages.revoke)
    console.page_route("GET", "/sessions", pages.sessions)
    console.page_route("POST", r"/sessions/([0-9a-f-]{8,36})/terminate", pages.terminate)
    console.page_route("GET", r"/sessions/([0-9a-f-]{36})", pages.replay)
    console.page_route("GET", r"/sessions/([0-9a-f-]{36})/cast/([0-9]{1,9})", pages.cast)
    console.page_route("GET", "/audit", pages.audit)
    console.page_route("GET", "/audit/export", pages.audit_export)
    console.page_route("GET", "/evidence", pages.evidence_page)
    console.page_route("POST", "/evidence", pages.evidence)
