"""The webhook plugin with a fake HTTP agent and a Clock: payload, signature, retries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hoopgw_webhook import MAX_ANSWER, WebhookPlugin, payload, sign
from twisted.internet import defer, task
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from hoopgw.errors import ConfigError
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.reviews import ReviewRecord
from hoopgw.testing import make_connection

REVIEW = ReviewRecord(
    id="3f9a2c1b4d5e",
    kind="statement",
    status="pending",
    requester="agent",
    requester_groups=("agents",),
    connection="pg",
    reason="write: DELETE needs approval",
    approvers=("dba",),
    required=1,
    created_at=1_700_000_000.0,
    statement="DELETE FROM orders WHERE id = 42",
)


class FakeBodyConsumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class FakeResponse:
    def __init__(self, code: int) -> None:
        self.code = code
        self.phrase = b"OK" if code == 200 else b"Error"
        self.length = 0

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(b"ok")
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any, bytes, defer.Deferred[Any]]] = []

    def request(self, method: bytes, url: bytes, headers: Any, body: Any) -> defer.Deferred[Any]:
        consumer = FakeBodyConsumer()
        body.startProducing(consumer)
        d: defer.Deferred[Any] = defer.Deferred()
        self.requests.append((method, url, headers, consumer.data, d))
        return d


def plugin(
    monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[WebhookPlugin, task.Clock, FakeAgent]:
    monkeypatch.setenv("HGW_TEST_WEBHOOK_SECRET", "s3cret")
    clock = task.Clock()
    clock.advance(1_700_000_100)
    values = validate_options(
        "webhook",
        WebhookPlugin.options,
        {"url": "https://hooks.example/x", "secret": "env:HGW_TEST_WEBHOOK_SECRET", **options},
        connection="pg",
    )
    instance = WebhookPlugin(
        PluginContext(
            connection=make_connection("pg"),
            options=values,
            audit=None,
            log=Logger(),
            reactor=clock,
        )
    )
    agent = FakeAgent()
    instance.agent = agent
    return instance, clock, agent


def test_a_review_is_posted_signed_and_slack_compatible(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, clock, agent = plugin(monkeypatch)
    instance.review_updated(REVIEW, "requested")
    [(method, url, headers, body, d)] = agent.requests
    assert (method, url) == (b"POST", b"https://hooks.example/x")
    [timestamp] = headers.getRawHeaders(b"x-hoopgw-timestamp")
    [signature] = headers.getRawHeaders(b"x-hoopgw-signature")
    assert timestamp == b"1700000100"
    assert signature.decode() == sign(b"s3cret", "1700000100", body)
    document = json.loads(body)
    assert document["text"].startswith("[hoopgw] review 3f9a2c1b4d5e requested: agent asks")
    assert "hoopgw reviews approve 3f9a2c1b4d5e" in document["text"]
    assert document["hoopgw"]["statement"] == REVIEW.statement
    d.callback(FakeResponse(200))
    clock.advance(1000)
    assert len(agent.requests) == 1  # no retry after a success


def test_failures_are_retried_with_backoff_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, clock, agent = plugin(monkeypatch, retries=2, timeout=5)
    instance.review_updated(REVIEW, "approved")
    agent.requests[0][4].callback(FakeResponse(500))
    assert len(agent.requests) == 1
    clock.advance(1)
    assert len(agent.requests) == 2
    clock.advance(5)  # the second attempt times out
    clock.advance(2)
    assert len(agent.requests) == 3
    agent.requests[2][4].errback(ConnectionRefusedError())
    clock.advance(3600)
    assert len(agent.requests) == 3  # two retries, then logged


def test_events_filter_and_statement_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, _, agent = plugin(monkeypatch, events=["denied"], include_statement=False)
    instance.review_updated(REVIEW, "requested")
    assert agent.requests == []
    instance.review_updated(REVIEW, "denied")
    body = json.loads(agent.requests[0][3])
    assert "statement" not in body["hoopgw"] and "id = 42" not in body["text"]


def test_a_failing_agent_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, _, agent = plugin(monkeypatch, retries=0)

    def broken(*args: Any) -> Any:
        raise ValueError("bad URL")

    agent.request = broken  # type: ignore[method-assign]
    instance.review_updated(REVIEW, "requested")  # logged, not raised


def test_access_payload() -> None:
    import attrs

    review = attrs.evolve(REVIEW, kind="access", statement="", duration=1800.0)
    text = payload(review, "requested", include_statement=True)["text"]
    assert "asks access to pg for 1800s" in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://x/y"}, "http:// or https://"),
        ({"url": "https://hooks.example/x", "secret": "plain"}, "secret reference"),
        ({"url": "https://hooks.example/x", "events": ["sent"]}, "unknown event"),
        ({"url": "https://hooks.example/x", "retries": 11}, "from 0 to 10"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_options("webhook", WebhookPlugin.options, options, connection="pg")


def test_the_log_never_shows_the_url_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Slack incoming-webhook URL's path is the credential to post to the channel.
    events: list[dict[str, Any]] = []
    instance, _, agent = plugin(
        monkeypatch, retries=0, url="https://hooks.slack.com/services/T0/B0/s3cretpath"
    )
    instance._log = Logger(observer=events.append)  # type: ignore[arg-type]
    instance.review_updated(REVIEW, "requested")
    agent.requests[0][4].errback(ConnectionRefusedError())
    [event] = events
    shown = formatEvent(event)
    assert "hooks.slack.com" in shown and "s3cretpath" not in shown


class EndlessResponse:
    """A 200 whose body never ends (until the reader stops it)."""

    def __init__(self) -> None:
        self.code = 200
        self.stopped = False
        self.sent = 0

    def deliverBody(self, protocol: Any) -> None:
        response = self

        class Transport:
            def stopProducing(self) -> None:
                response.stopped = True

        protocol.makeConnection(Transport())
        while not self.stopped and self.sent < 100 * 1024 * 1024:
            protocol.dataReceived(b"x" * 4096)
            self.sent += 4096


def test_an_endless_answer_is_read_only_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, clock, agent = plugin(monkeypatch)
    instance.review_updated(REVIEW, "requested")
    endless = EndlessResponse()
    agent.requests[0][4].callback(endless)
    assert endless.stopped and endless.sent <= MAX_ANSWER + 4096
    clock.advance(1000)
    assert len(agent.requests) == 1  # a 2xx: delivered, no retry


def test_an_expired_access_request_can_be_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, _, agent = plugin(monkeypatch, events=["expired"])
    instance.review_updated(REVIEW, "expired")
    body = json.loads(agent.requests[0][3])
    assert body["hoopgw"]["event"] == "expired"


def test_a_statement_payload_carries_its_parameter_values_as_reviews_keep_them() -> None:
    import attrs

    review = attrs.evolve(
        REVIEW, statement="DELETE FROM t WHERE id = $1 AND n = $2", parameters=("1", None)
    )
    sent = payload(review, "requested", include_statement=True)
    assert sent["hoopgw"]["parameters"] == ["1", None]
    assert "with parameters '1', NULL" in sent["text"]
    hidden = payload(review, "requested", include_statement=False)
    assert "parameters" not in hidden["hoopgw"] and "'1'" not in hidden["text"]
