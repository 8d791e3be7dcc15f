"""Response bodies through the hooks: JSON values one by one, Secret data decoded, text and
watch events in whole lines whatever the chunking."""

from __future__ import annotations

import base64
import json

import pytest
from hoopgw_kubernetes.bodies import LineStream, WatchStream, mask_json, readable_secret


def _mask(fields: dict[str, str]) -> dict[str, str]:
    return {k: v.replace("alice@example.com", "<email>") for k, v in fields.items()}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_json_string_values_are_masked_and_the_document_stays_json() -> None:
    body = json.dumps(
        {"kind": "Pod", "metadata": {"annotations": {"owner": "alice@example.com"}}, "n": [1, "x"]}
    ).encode()
    masked = json.loads(mask_json(body, _mask))
    assert masked["metadata"]["annotations"]["owner"] == "<email>"
    assert masked["n"] == [1, "x"]


def test_unchanged_bodies_pass_as_they_are() -> None:
    body = b'{"kind": "Pod",   "a": "b"}'
    assert mask_json(body, _mask) is body


@pytest.mark.parametrize("listed", [False, True])
def test_secret_data_is_decoded_masked_and_encoded_again(listed: bool) -> None:
    secret = {"data": {"owner": _b64("alice@example.com"), "bin": _b64("x") + "!"}}
    document = {"kind": "SecretList", "items": [secret]} if listed else {"kind": "Secret", **secret}
    masked = json.loads(mask_json(json.dumps(document).encode(), _mask))
    data = masked["items"][0]["data"] if listed else masked["data"]
    assert base64.b64decode(data["owner"]).decode() == "<email>"
    assert data["bin"] == secret["data"]["bin"]  # not base64: passed to the hooks as it is


def test_a_config_map_data_is_not_decoded() -> None:
    document = {"kind": "ConfigMap", "data": {"k": _b64("alice@example.com")}}
    assert json.loads(mask_json(json.dumps(document).encode(), _mask)) == document


def test_not_json_raises() -> None:
    with pytest.raises(ValueError):
        mask_json(b"{not json", _mask)


def _feed_in_pieces(stream: LineStream, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        stream.feed(data[start : start + size])
    stream.end()


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_log_lines_are_masked_whatever_the_chunking(size: int) -> None:
    out: list[bytes] = []
    data = b"start\nuser alice@example.com in\nlast alice@example.com"
    _feed_in_pieces(LineStream(_mask, out.append, 1 << 16), data, size)
    assert b"".join(out) == b"start\nuser <email> in\nlast <email>"


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_watch_events_are_masked_one_by_one(size: int) -> None:
    events = [
        {"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "alice@example.com"}}},
        {"type": "DELETED", "object": {"kind": "Secret", "data": {"a": _b64("alice@example.com")}}},
    ]
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    out: list[bytes] = []
    _feed_in_pieces(WatchStream(_mask, out.append, 1 << 16), data, size)
    lines = [json.loads(line) for line in b"".join(out).splitlines()]
    assert lines[0]["object"]["metadata"]["name"] == "<email>"
    assert base64.b64decode(lines[1]["object"]["data"]["a"]) == b"<email>"


def test_a_watch_event_that_is_not_json_raises() -> None:
    stream = WatchStream(_mask, lambda _: None, 1 << 16)
    with pytest.raises(ValueError):
        stream.feed(b"garbage\n")


@pytest.mark.parametrize("listed", [False, True])
def test_a_secret_s_last_applied_configuration_is_masked(listed: bool) -> None:
    # kubectl apply keeps the Secret it applied, data and stringData, in an annotation.
    applied = {
        "apiVersion": "v1",
        "kind": "Secret",
        "data": {"owner": _b64("alice@example.com")},
        "stringData": {"contact": "alice@example.com"},
    }
    secret = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)}
        },
        "data": {"owner": _b64("alice@example.com")},
    }
    document = {"kind": "SecretList", "items": [secret]} if listed else {"kind": "Secret", **secret}
    masked = json.loads(mask_json(json.dumps(document).encode(), _mask))
    item = masked["items"][0] if listed else masked
    text = item["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    again = json.loads(text)
    assert base64.b64decode(again["data"]["owner"]) == b"<email>"
    assert again["stringData"]["contact"] == "<email>"
    assert "alice" not in text


def test_a_secret_request_body_is_readable_for_the_record() -> None:
    body = json.dumps(
        {"kind": "Secret", "data": {"a": _b64("alice@example.com"), "bin": "/w=="}}
    ).encode()
    readable = json.loads(readable_secret(body))
    assert readable["stringData"] == {"a": "alice@example.com"}
    assert readable["data"] == {"bin": "/w=="}  # not text: kept as it is
    assert readable_secret(b"not json") == b"not json"
    assert readable_secret(b'{"kind": "Secret"}') == b'{"kind": "Secret"}'
