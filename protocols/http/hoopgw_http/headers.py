"""Header fields across the gateway: what the caller's request loses and gains on its way to
the target, what the target's response loses on its way back (sans-io).

- The caller's ``Authorization`` is its credential for the gateway: taken off, never
  forwarded. The target's credential is added instead (:class:`UpstreamCredential`).
- Hop-by-hop fields (RFC 9110 section 7.6.1: ``Connection`` and the fields it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
  ``Upgrade``, ``Proxy-Authorization``, ``Proxy-Authenticate``) are not forwarded; the gateway
  frames each message itself (``Content-Length`` or chunked).
- ``Host`` is the target's (RFC 9110 section 7.2); client-chosen ``Forwarded`` and
  ``X-Forwarded-*`` fields are dropped, since the target could trust them.
- A request carrying a field that makes frameworks route it differently from its method or
  path (``X-HTTP-Method-Override``, ``X-Original-URL``, ...) is refused: the rules judged the
  method and path the gateway saw.

Field names are compared with ``_`` read as ``-`` (:func:`canonical_name`): CGI, WSGI and
Rack servers map both to the same variable (``HTTP_X_API_KEY``), so ``X_Api_Key`` from the
caller would otherwise reach the target beside the credential's ``X-Api-Key``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

import attrs

from hoopgw.secrets import Secret

__all__ = [
    "OVERRIDE_FIELDS",
    "SecretScrubber",
    "UpstreamCredential",
    "caller_token",
    "canonical_name",
    "request_fields",
    "response_fields",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
OVERRIDE_FIELDS = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
    }
)
"""Request fields some frameworks route by instead of the method or path: refused."""
_SPOOFABLE = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-client-ip",
        b"x-original-forwarded-for",
        b"x-original-host",
        b"x-scheme",
        b"x-host",
        b"front-end-https",
        b"true-client-ip",
        b"x-cluster-client-ip",
        b"cf-connecting-ip",
    }
)


def canonical_name(name: bytes) -> bytes:
    """A field name as servers that map ``-`` and ``_`` alike read it."""
    return name.replace(b"_", b"-")


class CallerTokenError(ValueError):
    """The request does not carry one bearer token (the message says what is wrong)."""


def caller_token(fields: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's bearer token from its single ``Authorization: Bearer`` field.

    :raises CallerTokenError: when there is none, several, or another scheme.
    """
    values = [value for name, value in fields if name == b"authorization"]
    if not values:
        raise CallerTokenError("authenticate with Authorization: Bearer <API key or token>")
    if len(values) > 1:
        raise CallerTokenError("more than one Authorization field")
    scheme, _, token = values[0].partition(b" ")
    token = token.strip(b" ")
    if scheme.lower() != b"bearer" or not token or b" " in token:
        raise CallerTokenError("the Authorization field is not Bearer <API key or token>")
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        raise CallerTokenError("the bearer token is not ASCII") from None


@attrs.frozen(kw_only=True)
class UpstreamCredential:
    """How the gateway presents the target's credential in each request."""

    kind: str
    """``none``, ``bearer``, ``basic`` or ``header``."""
    user: str = ""
    """User name (``basic``)."""
    secret: Secret | None = None
    """The password, token or header value."""
    header: str = ""
    """Field name (``header``)."""

    def field(self) -> tuple[bytes, bytes] | None:
        """The header field to add, or None for ``none``."""
        if self.kind == "none" or self.secret is None:
            return None
        value = self.secret.reveal().encode("utf-8")
        if self.kind == "bearer":
            return b"authorization", b"Bearer " + value
        if self.kind == "basic":
            token = base64.b64encode(self.user.encode("utf-8") + b":" + value)
            return b"authorization", b"Basic " + token
        return self.header.lower().encode("ascii"), value

    def secrets(self) -> list[bytes]:
        """Every form of the secret that could be echoed back (never shown to the caller)."""
        field = self.field()
        if field is None or self.secret is None:
            return []
        forms = {self.secret.reveal().encode("utf-8"), field[1]}
        if self.kind == "basic":
            forms.add(field[1].split(b" ", 1)[1])
        for form in list(forms):
            # As a JSON string (an echo endpoint) or in a URL (a redirect's Location) too.
            text = form.decode("utf-8")
            forms.add(json.dumps(text)[1:-1].encode("ascii"))
            forms.add(json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8"))
            forms.add(quote(text, safe="").encode("ascii"))
            forms.add(quote_plus(text, safe="").encode("ascii"))
        return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def request_fields(
    fields: Iterable[tuple[bytes, bytes]],
    *,
    host: str,
    credential: UpstreamCredential,
    identity_encoding: bool,
) -> list[tuple[bytes, bytes]]:
    """The fields of the request as forwarded (framing fields are the caller's to add).

    :param identity_encoding: ask for an unencoded response (bodies are inspected).
    """
    fields = list(fields)
    named = _connection_options(fields)
    dropped = HOP_BY_HOP | FRAMING | _SPOOFABLE | named | {b"host", b"authorization", b"expect"}
    if identity_encoding:
        dropped |= {b"accept-encoding"}
    credential_field = credential.field()
    if credential_field is not None:
        dropped |= {canonical_name(credential_field[0])}
    forwarded = [(b"host", host.encode("ascii"))]
    forwarded += [
        (name, value)
        for name, value in fields
        if canonical_name(name) not in dropped
        and not canonical_name(name).startswith(b"x-forwarded-")  # every one a proxy may set
    ]
    if credential_field is not None:
        forwarded.append(credential_field)
    if identity_encoding:
        forwarded.append((b"accept-encoding", b"identity"))
    return forwarded


def response_fields(fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields of the response as relayed (framing fields are the caller's to add)."""
    fields = list(fields)
    dropped = HOP_BY_HOP | FRAMING | _connection_options(fields)
    return [(name, value) for name, value in fields if name not in dropped]


def _connection_options(fields: list[tuple[bytes, bytes]]) -> set[bytes]:
    """The fields a ``Connection`` field names (hop-by-hop too, RFC 9110 section 7.6.1)."""
    return {
        option.strip().lower()
        for name, value in fields
        if name == b"connection"
        for option in value.split(b",")
        if option.strip()
    }


class SecretScrubber:
    """Overwrites every occurrence of the target's secret in a byte stream with ``*``, so that
    a target that echoes its credential (a debug endpoint, an error page) does not hand it to
    the caller. Length-preserving (``Content-Length`` stays true); it holds back the last few
    bytes of each piece until the next, so a secret split across pieces is caught too."""

    def __init__(self, secrets: list[bytes]) -> None:
        self._secrets = secrets
        self._hold = max((len(s) for s in secrets), default=1) - 1
        self._tail = b""

    def scrub(self, data: bytes) -> bytes:
        """The scrubbed bytes that can be sent now (perhaps fewer than given)."""
        if not self._secrets:
            return data
        buffer = self._scrub_all(self._tail + data)
        cut = max(len(buffer) - self._hold, 0)
        self._tail = buffer[cut:]
        return buffer[:cut]

    def flush(self) -> bytes:
        """What is held back, at the end of the stream."""
        tail, self._tail = self._tail, b""
        return tail

    def _scrub_all(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"*" * len(secret))
        return data

    def scrub_whole(self, data: bytes) -> bytes:
        """``data`` scrubbed at once (a head's field values, a buffered body)."""
        return self._scrub_all(data) if self._secrets else data
