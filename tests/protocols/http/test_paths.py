"""Request-targets: read the way the server reads them, refused where servers differ."""

from __future__ import annotations

import pytest
from hoopgw_http.paths import AmbiguousTarget, parse_target


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        (b"/", "/", ""),
        (b"/api/items?limit=10&x=%2F", "/api/items", "limit=10&x=%2F"),
        (b"/api/items/", "/api/items/", ""),
        (b"/caf%C3%A9/%41", "/café/A", ""),
        (b"/a/%2e%2e%2e", "/a/...", ""),  # three dots: a name, not a dot segment
        (b"/a/.well-known", "/a/.well-known", ""),
        (b"/a:b@c!$&'()*+,=-~_", "/a:b@c!$&'()*+,=-~_", ""),
    ],
)
def test_unambiguous_targets(raw: bytes, path: str, query: str) -> None:
    target = parse_target(raw)
    assert target.path == path
    assert target.query == query
    assert target.raw == raw.decode()  # forwarded as sent


@pytest.mark.parametrize(
    "raw",
    [
        b"http://other/api",  # absolute-form
        b"other:443",  # authority-form
        b"*",
        b"/a#frag",
        b"/admin;jsessionid=1",  # path parameter (Tomcat, Spring strip it)
        b"/a\\b",
        b"/a/../admin",
        b"/a/./admin",
        b"/a/..",
        b"/a/%2e%2e/admin",  # encoded dot segment
        b"/a/.%2E/admin",
        b"/a/%2e",
        b"/a%2fb",  # encoded slash
        b"/a%2Fb",
        b"/a%5cb",  # encoded backslash
        b"/a%252e%252e/b",  # double encoding
        b"/a%00b",
        b"/a%3bb",  # encoded ;
        b"/a%3Fb",
        b"/a%zz",
        b"/a%2",
        b"/a%",
        b"//admin",  # empty segment
        b"/a//b",
        b"/%ff",  # not UTF-8
        b"/a b",
        b"/a?b#c",
        b"/a?b=%zz",
        b"/a?b=<x>",
        b"/caf\xc3\xa9",  # raw non-ASCII
    ],
)
def test_ambiguous_targets_are_refused(raw: bytes) -> None:
    with pytest.raises(AmbiguousTarget):
        parse_target(raw)


def test_the_refusal_says_what_is_wrong() -> None:
    with pytest.raises(AmbiguousTarget, match="dot segment"):
        parse_target(b"/a/%2e%2e/b")
    with pytest.raises(AmbiguousTarget, match="%2F"):
        parse_target(b"/a%2fb")
