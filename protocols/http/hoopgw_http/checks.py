"""What a request must be before it is judged: the checks that refuse, with the status to
answer, what servers and frameworks could read differently from the gateway (sans-io)."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from hoopgw.http1 import Head
from hoopgw_http.headers import OVERRIDE_FIELDS, canonical_name
from hoopgw_http.paths import AmbiguousTarget, Target, parse_target

__all__ = ["Refusal", "check_request", "has_body", "overrides_method"]

_METHOD = re.compile(r"[A-Z]+")


class Refusal(Exception):
    """A request the gateway answers itself with ``status`` and the message."""

    def __init__(self, status: int, message: str, *, auth_error: str = "") -> None:
        """
        :param auth_error: for a ``401`` whose token was presented and refused, the
            ``error`` of its ``WWW-Authenticate`` challenge (RFC 6750 section 3.1).
        """
        super().__init__(message)
        self.status = status
        self.auth_error = auth_error


def overrides_method(form: bytes, media: str = "application/x-www-form-urlencoded") -> bool:
    """Whether a query, an ``application/x-www-form-urlencoded`` body or a JSON object names
    ``_method``: Symfony, Laravel (JSON bodies too), Rails and Express's method-override route
    a POST carrying it as the method it names, not the one the rules judged."""
    if media == "application/json" or media.endswith("+json"):
        try:
            document = json.loads(form)
        except ValueError:
            return False
        return isinstance(document, dict) and any(
            key.strip().lower() == "_method" for key in document
        )
    if media != "application/x-www-form-urlencoded":
        return False
    for pair in re.split(rb"[&;]", form):
        name = unquote_to_bytes(pair.partition(b"=")[0].replace(b"+", b" ")).strip()
        # PHP reads ".", " " and an unclosed "[" in a parameter name as "_".
        if re.sub(rb"[. \[]", b"_", name).lower() == b"_method":
            return True
    return False


def has_body(head: Head) -> bool:
    """Whether the request has a body (chunked, or a ``Content-Length`` above 0)."""
    lengths = head.get(b"content-length")
    return bool(head.get(b"transfer-encoding")) or (bool(lengths) and int(lengths[0]) > 0)


def check_request(head: Head, *, websocket: bool) -> Target:
    """The request's target, once nothing about the request is ambiguous.

    :param websocket: whether WebSocket upgrades are passed on (``http.websocket``).
    :raises Refusal: with the status and the reason otherwise.
    """
    if not _METHOD.fullmatch(head.method) or head.method == "CONNECT":
        raise Refusal(405 if head.method == "CONNECT" else 400, "method not served")
    if head.get(b"upgrade"):
        if not websocket:
            raise Refusal(501, "protocol upgrades (WebSocket) are not served on this connection")
        if (
            head.tokens(b"upgrade") != {b"websocket"}
            or b"upgrade" not in head.tokens(b"connection")
            or head.method != "GET"
            or head.version != "HTTP/1.1"
            or has_body(head)
        ):
            raise Refusal(400, "only a WebSocket upgrade (GET, Connection: Upgrade) is served")
    for name, _ in head.fields:
        if canonical_name(name) in OVERRIDE_FIELDS:
            raise Refusal(
                400, f"the {name.decode()} field is refused: send the method and path themselves"
            )
    if sum(canonical_name(name) == b"content-type" for name, _ in head.fields) > 1:
        # The gateway inspects the body by the first; a server may read it by the last.
        raise Refusal(400, "more than one Content-Type field")
    if head.tokens(b"expect") - {b"100-continue"}:
        raise Refusal(417, "only Expect: 100-continue is understood")
    if head.version == "HTTP/1.1" and len(head.get(b"host")) != 1:
        raise Refusal(400, "an HTTP/1.1 request needs exactly one Host field")
    try:
        target = parse_target(head.target)
    except AmbiguousTarget as exc:
        raise Refusal(400, str(exc)) from None
    if overrides_method(target.query.encode("ascii")):
        raise Refusal(400, _OVERRIDE)
    return target


_OVERRIDE = "a _method parameter is refused: send the method itself"
