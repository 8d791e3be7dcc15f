"""What a request must be before it is judged."""

from __future__ import annotations

import pytest
from hoopgw_http.checks import Refusal, check_request, has_body, overrides_method

from hoopgw.http1 import Head


def head(method: str = "GET", target: bytes = b"/a", *fields: tuple[bytes, bytes]) -> Head:
    return Head(version="HTTP/1.1", method=method, target=target, fields=((b"host", b"x"), *fields))


def status(request: Head, *, websocket: bool = False) -> int:
    with pytest.raises(Refusal) as refused:
        check_request(request, websocket=websocket)
    return refused.value.status


def test_a_plain_request_passes() -> None:
    assert check_request(head(), websocket=False).path == "/a"


def test_refusals_and_their_statuses() -> None:
    assert status(head("get")) == 400
    assert status(head("CONNECT")) == 405
    assert status(head("GET", b"/a/../b")) == 400
    assert status(head("POST", b"/a", (b"x-http-method-override", b"DELETE"))) == 400
    assert status(head("POST", b"/a", (b"x_original_url", b"/admin"))) == 400
    assert status(head("GET", b"/a", (b"expect", b"magic"))) == 417
    assert status(Head(version="HTTP/1.1", method="GET", target=b"/", fields=())) == 400
    upgrade = head("GET", b"/ws", (b"upgrade", b"websocket"), (b"connection", b"Upgrade"))
    assert status(upgrade) == 501
    assert check_request(upgrade, websocket=True).path == "/ws"
    assert status(head("POST", b"/ws", *upgrade.fields[1:]), websocket=True) == 400


def test_has_body() -> None:
    assert not has_body(head()) and not has_body(head("POST", b"/", (b"content-length", b"0")))
    assert has_body(head("POST", b"/", (b"content-length", b"3")))
    assert has_body(head("POST", b"/", (b"transfer-encoding", b"chunked")))


def test_a_method_override_parameter_is_refused() -> None:
    # Symfony and Laravel route POST /users/1?_method=DELETE as a DELETE the rules never saw.
    assert status(head("POST", b"/users/1?_method=DELETE")) == 400
    assert status(head("POST", b"/users/1?a=1&%5Fmethod=DELETE")) == 400
    assert status(head("POST", b"/users/1?_METHOD=DELETE")) == 400
    assert check_request(head("POST", b"/users/1?my_method=x"), websocket=False).path == "/users/1"
    assert overrides_method(b"name=a&_method=DELETE")
    assert not overrides_method(b"name=_method")
    assert overrides_method(b"a=1&.method=DELETE") and overrides_method(b"[method=DELETE")
    assert overrides_method(b'{"name": "a", "_method": "DELETE"}', "application/json")
    assert not overrides_method(b'{"a": {"_method": 1}}', "application/json")
    assert not overrides_method(b"_method=DELETE", "text/plain")


def test_a_second_content_type_is_refused() -> None:
    form = (b"content-type", b"application/x-www-form-urlencoded")
    assert status(head("POST", b"/a", (b"content-type", b"application/octet-stream"), form)) == 400
    assert status(head("POST", b"/a", form, (b"content_type", b"text/plain"))) == 400
    assert check_request(head("POST", b"/a", form), websocket=False).path == "/a"
