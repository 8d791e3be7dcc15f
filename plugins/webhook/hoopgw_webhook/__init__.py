"""The ``webhook`` plugin: tell approvers about reviews with a signed HTTP POST.

For every change of a review on its connection (the ``review_updated`` hook) it POSTs a JSON
payload that Slack incoming webhooks accept (``text``), with the review itself under
``hoopgw``. With a ``secret``, each request is signed::

    X-Hoopgw-Timestamp: 1764102667
    X-Hoopgw-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

Sending never blocks the gateway: requests go out asynchronously, failures (a connection error,
a timeout, an answer other than 2xx) are retried with exponential back-off, and after the last
attempt the failure is logged. ``docs/approvals.md`` documents the options.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.reviews import ReviewRecord
from hoopgw.secrets import resolve_secret

__all__ = ["EVENTS", "WebhookPlugin", "payload", "sign"]

EVENTS = (
    "requested",
    "voted",
    "approved",
    "denied",
    "timed_out",
    "withdrawn",
    "aborted",
    "expired",
)
"""The review events a webhook may send (see the ``review_updated`` hook)."""

MAX_BACKOFF = 300.0
"""Longest wait between two attempts, in seconds."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Hoopgw-Signature`` value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def payload(review: ReviewRecord, event: str, *, include_statement: bool) -> dict[str, Any]:
    """The JSON document sent for ``event``: Slack's ``text`` plus the review under ``hoopgw``."""
    if review.kind == "access":
        what = f"access to {review.connection} for {int(review.duration or 0)}s"
    else:
        what = f"a statement on {review.connection}"
        if include_statement:
            what += f": `{review.statement[:500]}`"
            if review.parameters:
                values = ", ".join(
                    "NULL" if v is None else repr(v[:100]) for v in review.parameters[:20]
                )
                what += f" with parameters {values}"
    text = f"[hoopgw] review {review.id} {event.replace('_', ' ')}: {review.requester} asks {what}"
    text += f" ({review.reason})"
    if event == "requested":
        text += (
            f"\nApprovers ({', '.join(review.approvers)}): `hoopgw reviews approve {review.id}`"
            f" or `hoopgw reviews deny {review.id} --reason ...`"
        )
    elif review.decided_by or review.decision_reason:
        text += f"\nBy {review.decided_by or '-'}: {review.decision_reason or '-'}"
    details = {
        "event": event,
        "review": review.id,
        "kind": review.kind,
        "status": review.status,
        "requester": review.requester,
        "connection": review.connection,
        "reason": review.reason,
        "approvers": list(review.approvers),
        "required": review.required,
        "created_at": review.created_at,
        "session_id": review.session_id,
        "duration": review.duration,
        "decided_by": review.decided_by,
        "decision_reason": review.decision_reason,
    }
    if include_statement:
        details["statement"] = review.statement
        details["parameters"] = list(review.parameters)
    return {"text": text, "hoopgw": details}


@implementer(IBodyProducer)
class _Body:
    """A request body held in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is written at once."""

    def stopProducing(self) -> None:
        """Nothing to stop: the body is written at once."""


MAX_ANSWER = 64 * 1024
"""Bytes of a receiver's answer read at most; the rest is not waited for."""


class _Discard(protocol.Protocol):
    """Reads an answer body without keeping it, and stops after :data:`MAX_ANSWER` bytes: a
    receiver that answers without end must not fill memory or hold the request open."""

    def __init__(self, done: defer.Deferred[None]) -> None:
        self._done = done
        self._read = 0

    def dataReceived(self, data: bytes) -> None:
        self._read += len(data)
        if self._read > MAX_ANSWER and not self._done.called:
            self._done.callback(None)
            self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self._done.called:
            self._done.callback(None)


def _drain(response: Any) -> defer.Deferred[None]:
    done: defer.Deferred[None] = defer.Deferred()
    response.deliverBody(_Discard(done))
    return done


def _where(url: str) -> str:
    """The URL without its path and query, for logs: a Slack incoming-webhook URL's path is
    itself the secret that lets anyone post to the channel."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/..."


def _check_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        return "must be an http:// or https:// URL"
    return None


def _check_events(value: list[Any]) -> str | None:
    for item in value:
        if item not in EVENTS:
            return f"unknown event {item!r} (known: {', '.join(EVENTS)})"
    return None


def _check_secret(value: str) -> str | None:
    if value and not value.startswith(("env:", "file:")):
        return "must be a secret reference, env:NAME or file:PATH (never the secret itself)"
    return None


class WebhookPlugin:
    """Posts review notifications to one URL."""

    options = (
        Option(name="url", type=str, help="URL the notifications are POSTed to", check=_check_url),
        Option(
            name="secret",
            type=str,
            default="",
            help="HMAC-SHA256 signing key, as env:NAME or file:PATH (absolute)",
            check=_check_secret,
        ),
        Option(
            name="events",
            type=list,
            default=list(EVENTS),
            help="review events to send",
            check=_check_events,
        ),
        Option(
            name="timeout",
            type=(int, float),
            default=10,
            help="seconds per attempt",
            check=lambda v: None if 0 < v <= 300 else "must be from 0 to 300 seconds",
        ),
        Option(
            name="retries",
            type=int,
            default=5,
            help="further attempts after a failure, with exponential back-off",
            check=lambda v: None if 0 <= v <= 10 else "must be from 0 to 10",
        ),
        Option(
            name="include_statement",
            type=bool,
            default=True,
            help="send the held statement's text and its parameter values (masked as recorded)",
        ),
    )
    """What the plugin reads from its ``[connections.webhook]`` table."""

    def __init__(self, context: PluginContext) -> None:
        options = context.options
        self._url: str = options["url"]
        self._events = frozenset(options["events"])
        self._timeout = float(options["timeout"])
        self._retries: int = options["retries"]
        self._include_statement: bool = options["include_statement"]
        self._reactor = context.reactor
        self._log = context.log
        self._secret = b""
        if options["secret"]:
            # Plugins do not know the config's folder: a file: reference must be absolute.
            secret = resolve_secret(
                options["secret"],
                key="webhook.secret",
                connection=context.connection.name,
                base_dir=Path("/"),
            )
            self._secret = secret.reveal().encode()
        self.agent: Any = Agent(context.reactor)
        """The HTTP client (tests replace it)."""

    @hookimpl
    def review_updated(self, review: ReviewRecord, event: str) -> None:
        """Send the notification in the background; never raises, never waits."""
        if event not in self._events:
            return
        body = json.dumps(
            payload(review, event, include_statement=self._include_statement),
            ensure_ascii=False,
        ).encode()
        self._attempt(body, event, 0)

    def _attempt(self, body: bytes, event: str, attempt: int) -> None:
        timestamp = str(int(self._reactor.seconds()))
        headers = {
            b"content-type": [b"application/json"],
            b"user-agent": [b"hoopgw-webhook"],
            b"x-hoopgw-event": [event.encode()],
            b"x-hoopgw-timestamp": [timestamp.encode()],
        }
        if self._secret:
            headers[b"x-hoopgw-signature"] = [sign(self._secret, timestamp, body).encode()]
        try:
            d = self.agent.request(b"POST", self._url.encode(), Headers(headers), _Body(body))
        except Exception as exc:  # a malformed URL fails at once
            d = defer.fail(exc)
        d.addTimeout(self._timeout, self._reactor)
        d.addCallback(self._answered)
        d.addErrback(self._failed, body, event, attempt)

    def _answered(self, response: Any) -> defer.Deferred[None]:
        drained = _drain(response)
        if not 200 <= response.code < 300:
            code = response.code

            def refused(_: Any) -> None:
                raise RuntimeError(f"answered {code}")

            return drained.addBoth(refused)
        return drained.addCallback(lambda _: None)

    def _failed(self, failure: Any, body: bytes, event: str, attempt: int) -> None:
        if attempt < self._retries:
            delay = min(2.0**attempt, MAX_BACKOFF)
            self._reactor.callLater(delay, self._attempt, body, event, attempt + 1)
            return
        self._log.error(
            "webhook {url} failed after {attempts} attempt(s): {why}",
            url=_where(self._url),
            attempts=attempt + 1,
            why=failure.getErrorMessage(),
        )
