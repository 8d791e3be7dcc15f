"""Protocol-neutral value objects that protocols hand to plugins.

A protocol state machine turns bytes into these: who is connected (:class:`SessionInfo`),
what they asked for (:class:`Command`), how it ended (:class:`CommandOutcome`). Immutable values
are frozen attrs classes; the few objects that data hooks rewrite in place (:class:`Column`,
:class:`Output`) are plain mutable classes and say so.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Identity:
    """An authenticated caller."""

    name: str
    """Stable identity name (the API key's identity, or an OIDC claim)."""
    groups: frozenset[str] = frozenset()
    """Groups the identity belongs to; ``allow_groups`` is checked against these."""
    method: str = "api-key"
    """How the identity was proven: ``api-key``, ``oidc``, ..."""
    credential_id: str = ""
    """Identifier of the credential used (an API key id), never the secret."""
    expires_at: float | None = None
    """POSIX time from which the credential no longer admits the identity (an OIDC token's
    ``exp`` plus the issuer's ``leeway``); the gateway ends the identity's live sessions then.
    None for a credential whose end the store decides (API keys, SSH keys)."""


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """A configured connection as plugins see it (never its credential)."""

    name: str
    """The connection's ``name`` in the config."""
    protocol: str
    """Wire protocol, e.g. ``postgres``."""
    target: str
    """``HOST:PORT`` of the upstream."""


@attrs.frozen(kw_only=True)
class SessionInfo:
    """One client session on one connection, from authentication to close."""

    id: str
    """Unique session id (a UUID4 string)."""
    connection: ConnectionInfo
    """The connection the client reached."""
    identity: Identity
    """Who is connected."""
    client_address: str
    """``HOST:PORT`` of the client as seen by the gateway."""
    client_tls: bool
    """Whether the client side is TLS-protected."""
    upstream_tls: bool
    """Whether the gateway-to-target side is TLS-protected."""
    started_at: float
    """POSIX time the session started."""
    attributes: dict[str, str] = attrs.field(factory=dict)
    """Protocol details worth recording (database, application_name, user, ...)."""
    recorded_attributes: dict[str, str] | None = None
    """:attr:`attributes` as the audit store keeps them, when a plugin rewrote them for the
    record (:func:`~hoopgw.hookspecs.audit_text` with kind ``attributes``; masking replaces
    sensitive values); ``None`` means :attr:`attributes` themselves. Set by the chain on the
    session that ``session_started`` implementations receive."""


@attrs.frozen(kw_only=True)
class UpstreamOptions:
    """How a protocol must set up its session on the target, as plugins require it (see
    :func:`~hoopgw.hookspecs.upstream_options`)."""

    read_only: bool = False
    """Every transaction of the session runs read-only on the target: the server itself
    refuses writes and DDL (PostgreSQL SQLSTATE 25006, MySQL error 1792)."""
    reasons: tuple[str, ...] = ()
    """Why, one phrase per plugin that asked (``guardrails: write is denied``), for log lines
    and error messages."""

    @classmethod
    def combine(cls, answers: list[UpstreamOptions]) -> UpstreamOptions:
        """The strictest of several answers: each requirement holds if any answer sets it."""
        return cls(
            read_only=any(a.read_only for a in answers),
            reasons=tuple(r for a in answers for r in a.reasons),
        )


@attrs.frozen(kw_only=True)
class Parameter:
    """One bind parameter value that a command runs with (PostgreSQL Bind, MySQL
    COM_STMT_EXECUTE). What an approval of the command covers, with its text."""

    value: bytes | None
    """The value exactly as the client sent it; ``None`` is SQL NULL."""
    format: int = 0
    """How the value is encoded: 0 text, 1 binary (PostgreSQL's format codes; MySQL's
    prepared statements send binary values)."""
    type: str = ""
    """The type the client gave the value, in the protocol's terms (a PostgreSQL type OID from
    Parse, ``0`` for unspecified; a MySQL type name such as ``LONGLONG`` or ``LONGLONG
    UNSIGNED``); empty when the protocol has none."""
    shown: str | None = None
    """The value as a person reads it (the text of a text value, a number decoded from its
    binary form, a description such as its size for other binary data: never its bytes in hex,
    which masking could not read); ``None`` for NULL. Raw, like
    :attr:`value`: what the audit store or a reviewer sees passes ``audit_text`` first
    (:attr:`Command.recorded_parameters`)."""


@attrs.frozen(kw_only=True)
class Command:
    """One unit of work that the client asked the target to run."""

    session_id: str
    """The :attr:`SessionInfo.id` it belongs to."""
    seq: int
    """Position within the session, from 1, in arrival order."""
    text: str
    """The command text as the target will see it (SQL, shell line, ...)."""
    kind: str
    """The protocol message that carried it (``query``, ``parse``, ``copy``, ...)."""
    parameter_count: int = 0
    """How many bind parameters accompany it."""
    parameters: tuple[Parameter, ...] = ()
    """The bind parameter values it runs with, when the protocol message carries them (a
    PostgreSQL Bind, a MySQL COM_STMT_EXECUTE); empty for a command that runs no values yet
    (a Parse, a COM_STMT_PREPARE) or has none. Not recorded as they are; the approval of a
    held command covers its text and these values (types and formats included)."""
    statement_name: str = ""
    """Prepared-statement name for protocols that have them."""
    prepared_only: bool = False
    """Whether the command only prepares its statement (a PostgreSQL Parse that its Bind does
    not follow, a MySQL COM_STMT_PREPARE): the target runs nothing now, and each later
    execution is a command of its own, decided with its parameter values. Judged like any
    command; a hold of it needs no review, since its executions are held with their values."""
    statement: bool = True
    """Whether :attr:`text` is a statement in the protocol's dialect. ``False`` for a protocol
    command that runs no statement (MySQL's ``COM_RESET_CONNECTION``, ``COM_STMT_CLOSE``, ...):
    it is recorded and decided like any command, but its text only names it, so plugins that
    analyse statements (guardrails, approval) have nothing to parse in it."""
    details: dict[str, Any] = attrs.field(factory=dict)
    """Protocol-specific extras that plugins may read; never credentials. Recorded as they are
    (``audit_text`` does not see them): nothing masking could need to hide either (an address,
    a path, a value: those belong in :attr:`text`)."""
    recorded_text: str | None = None
    """The text as the audit store keeps it, when a plugin rewrote it for the record
    (:func:`~hoopgw.hookspecs.audit_text`; masking replaces sensitive values); ``None`` means
    :attr:`text` itself. The target always receives :attr:`text`."""
    recorded_parameters: tuple[str | None, ...] | None = None
    """:attr:`parameters` as a reviewer may see them (each :attr:`Parameter.shown` passed
    through :func:`~hoopgw.hookspecs.audit_text`, kind ``parameter``: masked when masking is
    on); set by the chain before a held command reaches the approval backend, ``None``
    otherwise."""
    annotations: dict[str, Any] = attrs.field(factory=dict)
    """Facts that plugins add while the command runs, recorded with its completion (the
    recording plugin writes them into the ``command_completed`` record). Mutable on purpose;
    never raw values: masking adds ``masked``, a count of masked values per entity."""


@attrs.frozen(kw_only=True)
class CommandOutcome:
    """How a command ended."""

    status: str
    """``ok``, ``error``, ``blocked``, ``cancelled`` or ``aborted`` (session ended first)."""
    rows: int = 0
    """Rows returned or affected."""
    bytes: int = 0
    """Result bytes sent to the client."""
    duration: float = 0.0
    """Seconds from forwarding to completion."""
    error_code: str = ""
    """Protocol error code (an SQLSTATE for databases), if any."""
    error_message: str = ""
    """Error text as the client saw it, if any."""


class Column:
    """Description of one result column; data hooks may rewrite ``type_name`` notes in place.

    Mutable on purpose: ``result_columns`` implementations annotate or adjust it.
    """

    __slots__ = ("column_number", "format", "name", "table", "table_oid", "type_name", "type_oid")

    def __init__(
        self,
        name: str,
        *,
        type_oid: int = 0,
        type_name: str = "",
        table: str = "",
        format: int = 0,
        table_oid: int = 0,
        column_number: int = 0,
    ) -> None:
        self.name = name
        self.type_oid = type_oid
        self.type_name = type_name
        self.table = table
        self.format = format
        self.table_oid = table_oid
        """Source table's identifier where the protocol gives one (PostgreSQL: its OID), else 0.
        ``name`` may be an alias; this and :attr:`column_number` name the source column."""
        self.column_number = column_number
        """The source column's number within that table (PostgreSQL: attnum), else 0."""

    def __repr__(self) -> str:
        return f"Column({self.name!r}, type_oid={self.type_oid}, format={self.format})"


class Output:
    """Text that flows outside result rows (errors, notices, notifications, terminal output).

    Mutable on purpose: ``server_output`` and ``client_input`` implementations rewrite
    ``fields`` in place. ``kind`` says where the text came from (``error``, ``notice``,
    ``notification``, ``parameter``, ``copy``, ``stdout``, ``stderr``, ``stdin``, ``file``
    for SFTP file data, ``http-json`` for the values of a JSON response body, one field each,
    and ``http-response`` for a whole inspected HTTP response body); ``fields`` maps a field
    name (``message``, ``detail``, ``payload``, ``data``, ``body``, ...) to its text.
    """

    __slots__ = ("fields", "kind")

    def __init__(self, kind: str, fields: dict[str, str]) -> None:
        self.kind = kind
        self.fields = fields

    def __repr__(self) -> str:
        return f"Output({self.kind!r}, {sorted(self.fields)})"
