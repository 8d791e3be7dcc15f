"""The options an ``http`` connection reads from its ``[connections.http]`` table
(:data:`OPTIONS`, made into :class:`HttpOptions` by :func:`read_options` when the config is
loaded), and :class:`HttpSettings`: those options checked against the rest of the connection
(its upstream TLS, its target).

Kept free of Twisted imports: the config loader imports it for every HTTP connection.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import attrs

from hoopgw.connection import ConnectionConfig
from hoopgw.errors import ConfigError
from hoopgw.plugin import Option
from hoopgw.protocol import ProtocolTable

__all__ = ["AUTH_KINDS", "OPTIONS", "HttpOptions", "HttpSettings", "read_options"]

AUTH_KINDS = ("none", "bearer", "basic", "header")
"""How the gateway presents the target's credential (besides a TLS client certificate)."""
DEFAULT_INSPECT_TYPES = [
    "application/json",
    "application/*+json",
    "application/x-ndjson",
    "application/xml",
    "application/*+xml",
    "application/x-www-form-urlencoded",
    "application/javascript",
    "text/*",
]
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


def _one_of(*choices: str) -> Any:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _positive(value: int | float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _header_name(value: str) -> str | None:
    if value and not _HEADER_NAME.fullmatch(value):
        return f"{value!r} is not a header field name"
    if value.lower() in _RESERVED_HEADERS:
        return f"{value!r} is a header the gateway sets itself"
    return None


def _media_types(value: list[Any]) -> str | None:
    if not all(isinstance(v, str) and "/" in v for v in value):
        return "must be a list of media types such as application/json or text/*"
    return None


OPTIONS = (
    Option(
        name="auth",
        type=str,
        default="none",
        help="how the gateway presents the target's credential: none, bearer (the credential's"
        " password as a bearer token), basic (user and password) or header (the password as"
        " the value of auth_header)",
        check=_one_of(*AUTH_KINDS),
    ),
    Option(
        name="auth_header",
        type=str,
        default="",
        help="the header field that carries the credential's password with auth = header",
        check=_header_name,
    ),
    Option(
        name="client_cert",
        type=str,
        default="",
        help="PEM certificate (chain) the gateway presents to the target for mutual TLS",
    ),
    Option(
        name="client_key",
        type=str,
        default="",
        help="PEM private key of client_cert",
    ),
    Option(
        name="host_header",
        type=str,
        default="",
        help="Host header sent to the target (default: the target's host and port)",
    ),
    Option(
        name="max_inspected_body",
        type=int,
        default=1024 * 1024,
        help="largest request or response body, in bytes, that is read whole to be judged,"
        " masked and recorded",
        check=_positive,
    ),
    Option(
        name="oversize_bodies",
        type=str,
        default="refuse",
        help="a body of an inspected type larger than max_inspected_body: refuse (413 or 502)"
        " or pass (streamed, neither masked nor recorded)",
        check=_one_of("refuse", "pass"),
    ),
    Option(
        name="inspect_types",
        type=list,
        default=DEFAULT_INSPECT_TYPES,
        help="media types (globs) of bodies that are inspected; other bodies stream through"
        " unmasked and unrecorded",
        check=_media_types,
    ),
    Option(
        name="record_body_chars",
        type=int,
        default=64 * 1024,
        help="characters of an inspected request body kept in the command text (what is"
        " recorded and what a reviewer sees)",
        check=_positive,
    ),
    Option(
        name="idle_timeout",
        type=(int, float),
        default=300.0,
        help="seconds a client connection may wait between requests before it is closed",
        check=_positive,
    ),
    Option(
        name="websocket",
        type=bool,
        default=False,
        help="pass WebSocket upgrades on (judged as method WEBSOCKET; messages are relayed"
        " undecoded: neither masked nor recorded)",
    ),
    Option(
        name="response_timeout",
        type=(int, float),
        default=60.0,
        help="seconds the target has to connect and start its response",
        check=_positive,
    ),
)
"""What the protocol reads from ``[connections.http]``."""


@attrs.frozen(kw_only=True)
class HttpOptions:
    """A validated ``[connections.http]`` table (what the connection carries as
    :attr:`~hoopgw.connection.ConnectionConfig.protocol_options`)."""

    auth: str = "none"
    auth_header: str = ""
    client_cert: str | None = None
    """Absolute path, known to be readable; None without mutual TLS."""
    client_key: str | None = None
    host_header: str = ""
    max_inspected_body: int = 1024 * 1024
    oversize_bodies: str = "refuse"
    inspect_types: tuple[str, ...] = tuple(DEFAULT_INSPECT_TYPES)
    record_body_chars: int = 64 * 1024
    idle_timeout: float = 300.0
    websocket: bool = False
    response_timeout: float = 60.0


def read_options(table: ProtocolTable) -> HttpOptions:
    """The :class:`HttpOptions` of a validated ``[connections.http]`` table.

    :raises ConfigError: naming the key, when options do not go together or the credential
        lacks what ``auth`` presents.
    """
    values = table.values
    auth = values["auth"]
    if auth == "header" and not values["auth_header"]:
        raise table.error('required with auth = "header": the header field to set', "auth_header")
    if auth != "header" and values["auth_header"]:
        raise table.error('only with auth = "header"', "auth_header")
    if bool(values["client_cert"]) != bool(values["client_key"]):
        raise table.error("client_cert and client_key are set together", "client_key")
    credential = table.credential
    if auth != "none" and credential.password is None:
        raise ConfigError(
            f"auth = {auth!r} needs the target's secret in credential.password",
            key="credential.password",
            connection=table.connection,
        )
    if auth == "basic" and (":" in credential.user or not credential.user):
        raise ConfigError(
            "basic authentication needs a user name without ':'",
            key="credential.user",
            connection=table.connection,
        )
    return HttpOptions(
        auth=auth,
        auth_header=values["auth_header"],
        client_cert=table.readable_file("client_cert") if values["client_cert"] else None,
        client_key=table.readable_file("client_key") if values["client_key"] else None,
        host_header=values["host_header"],
        max_inspected_body=values["max_inspected_body"],
        oversize_bodies=values["oversize_bodies"],
        inspect_types=tuple(t.lower() for t in values["inspect_types"]),
        record_body_chars=values["record_body_chars"],
        idle_timeout=float(values["idle_timeout"]),
        websocket=values["websocket"],
        response_timeout=float(values["response_timeout"]),
    )


@attrs.frozen(kw_only=True)
class HttpSettings:
    """An HTTP connection's options with what the rest of its config adds."""

    options: HttpOptions
    """The ``[connections.http]`` table."""
    host_header: str
    """``Host`` sent to the target: :attr:`HttpOptions.host_header` or the target's."""
    tls: bool
    """Whether the target speaks HTTPS (``upstream_tls.sslmode = "verify-full"``)."""

    @classmethod
    def of(cls, connection: ConnectionConfig) -> HttpSettings:
        """The settings of ``connection``.

        :raises ConfigError: naming the key, when the options do not fit the connection.
        """
        options = connection.protocol_options
        if not isinstance(options, HttpOptions):
            raise TypeError("not an HTTP connection: its protocol_options are not HttpOptions")
        sslmode = connection.upstream_tls.sslmode
        if sslmode not in ("disable", "verify-full"):
            raise ConfigError(
                'an http target is reached over "disable" (http://) or "verify-full" (https://,'
                f" its certificate verified against ca_file), not {sslmode!r}",
                key="upstream_tls.sslmode",
                connection=connection.name,
            )
        if options.client_cert and sslmode != "verify-full":
            raise ConfigError(
                'a client certificate needs upstream_tls.sslmode = "verify-full"',
                key="http.client_cert",
                connection=connection.name,
            )
        host = connection.target_host
        default_host = f"[{host}]" if ":" in host else host
        default_port = 443 if sslmode == "verify-full" else 80
        if connection.target_port != default_port:
            default_host += f":{connection.target_port}"
        return cls(
            options=options,
            host_header=options.host_header or default_host,
            tls=sslmode == "verify-full",
        )

    def inspected(self, content_type: bytes | None) -> bool:
        """Whether a body of this ``Content-Type`` is inspected. A body without one is (the
        client may read it as text)."""
        if content_type is None:
            return True
        media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
        return any(fnmatchcase(media, pattern) for pattern in self.options.inspect_types)
