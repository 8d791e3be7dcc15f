"""The request-target as the target server will read it, or a refusal when servers differ.

Rules in ``[connections.guardrails]`` match the path the *server* routes on. Servers and
frameworks disagree about encoded slashes, dot segments, doubled slashes, path parameters and
backslashes, so a path on which they may disagree is refused (fail closed) instead of being
guessed (the bug class of a rule that the server reads differently). What is accepted is read
the one way every server reads it: percent-decoded once, as UTF-8.

Refused (:class:`AmbiguousTarget`):

- anything but origin-form (``/path?query``): absolute-form, authority-form, ``*``;
- a fragment (``#``), a path parameter (``;``), a backslash, or any character outside RFC 3986
  ``pchar``;
- a percent-encoded ``/``, ``\\``, ``%``, ``;``, ``?``, ``#`` or control character (decoded
  once, it would be read differently by a server that decodes before or after splitting, or
  twice);
- a malformed percent escape, or bytes that are not UTF-8 once decoded;
- a ``.`` or ``..`` segment, written plainly or encoded, and an empty segment (``//``) before
  the last one.

The path the gateway forwards is the path the client sent, byte for byte: it is unambiguous,
so the server decodes it to :attr:`Target.path`, the path rules are matched against.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["AmbiguousTarget", "Target", "parse_target"]

# RFC 3986 pchar without ";" (path parameters: Tomcat and Spring strip them before routing).
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_ESCAPE = re.compile(r"%(..)")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_FORBIDDEN_DECODED = frozenset(b"/\\%;?#") | frozenset(range(0x20)) | {0x7F}


class AmbiguousTarget(ValueError):
    """A request-target the gateway refuses, because servers may read it differently; the
    message says what to send instead."""


@attrs.frozen(kw_only=True)
class Target:
    """A request-target that every server reads alike."""

    raw_path: str
    """The path as sent (and forwarded), percent escapes kept."""
    path: str
    """The path decoded once: what the server routes on and path rules match."""
    query: str
    """The query as sent, without its ``?``; empty when there is none."""

    @property
    def raw(self) -> str:
        """The request-target as forwarded."""
        return f"{self.raw_path}?{self.query}" if self.query else self.raw_path


def parse_target(target: bytes) -> Target:
    """Read an origin-form request-target.

    :raises AmbiguousTarget: for every form listed in the module's docstring.
    """
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise AmbiguousTarget("the request-target holds bytes that are not ASCII") from None
    if not text.startswith("/"):
        raise AmbiguousTarget("only origin-form request-targets (/path?query) are accepted")
    raw_path, question, query = text.partition("?")
    if "#" in text:
        raise AmbiguousTarget("a request-target may not hold a fragment (#)")
    if not _PATH.fullmatch(raw_path):
        raise AmbiguousTarget(
            "the path holds a character servers read differently (;, \\, or one to escape)"
        )
    if question and not _QUERY.fullmatch(query):
        raise AmbiguousTarget("the query holds a character that must be percent-encoded")
    path = _decode(raw_path)
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise AmbiguousTarget("the path holds a dot segment (. or ..); send it resolved")
        if not segment and index < len(segments) - 1:
            raise AmbiguousTarget("the path holds an empty segment (//)")
    _check_escapes(query)
    return Target(raw_path=raw_path, path=path, query=query)


def _check_escapes(text: str) -> None:
    for match in _ESCAPE.finditer(text):
        if not _HEX2.fullmatch(match.group(1)):
            raise AmbiguousTarget("a malformed percent escape")
    if text.endswith("%") or text[-2:-1] == "%":
        raise AmbiguousTarget("a malformed percent escape")


def _decode(raw_path: str) -> str:
    _check_escapes(raw_path)
    decoded = bytearray()
    index = 0
    while index < len(raw_path):
        char = raw_path[index]
        if char == "%":
            byte = int(raw_path[index + 1 : index + 3], 16)
            if byte in _FORBIDDEN_DECODED:
                raise AmbiguousTarget(
                    f"the path holds an encoded %{byte:02X}, which servers read differently"
                )
            decoded.append(byte)
            index += 3
        else:
            decoded += char.encode("ascii")
            index += 1
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousTarget("the decoded path is not UTF-8") from None
