"""How a wire protocol plugs into the gateway, and what the gateway hands it per connection.

A protocol package registers a :class:`ProtocolSpec` in the ``hoopgw.protocols`` entry-point
group. For each configured connection the gateway builds a :class:`ConnectionRuntime` and asks
the protocol for a Twisted factory that serves that connection's listener.

A protocol declares its own config options, as a plugin does: :attr:`ProtocolSpec.options` are
the keys of the connection's ``[connections.<protocol>]`` table, and
:attr:`ProtocolSpec.read_options` turns the validated table into the protocol's own value
(:attr:`~hoopgw.connection.ConnectionConfig.protocol_options`). The config loader runs both, so
``hoopgw config check`` names a bad key of any protocol's table.

A protocol whose results are typed columns says how their values are encoded
(:attr:`ProtocolSpec.value_types`, a :class:`ValueTypes` answering in :class:`ValueKind`), so a
plugin that reads values (masking) asks the protocol, never branches on its name.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from hoopgw.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from hoopgw.config.gateway import GatewayConfig
    from hoopgw.connection import ConnectionConfig, CredentialConfig
    from hoopgw.identity.authn import Authenticator
    from hoopgw.plugin import Option
    from hoopgw.runtime.chain import PluginChain
    from hoopgw.runtime.registry import SessionRegistry
    from hoopgw.session import Column, ConnectionInfo, Identity, SessionInfo, UpstreamOptions
    from hoopgw.transport import UpstreamConnector

PROTOCOL_GROUP = "hoopgw.protocols"


class LiveSession(Protocol):
    """What the gateway needs from a running session to end it."""

    @property
    def identity(self) -> Identity | None:
        """Who is connected (None before authentication)."""

    @property
    def runtime(self) -> ConnectionRuntime:
        """The connection it belongs to."""

    @property
    def session_info(self) -> SessionInfo | None:
        """The session as recorded (None before authentication)."""

    def terminate(self, reason: str) -> None:
        """Say a protocol goodbye to the client (an error where the protocol has one), close
        the upstream, and report the session closed with ``reason``."""


@attrs.frozen(kw_only=True)
class ConnectionRuntime:
    """Everything a protocol needs to serve one configured connection."""

    config: ConnectionConfig
    """The connection's validated config, credential included (never show it to a client)."""
    gateway: GatewayConfig
    """Gateway-wide settings (timeouts, message size limit)."""
    info: ConnectionInfo
    """The plugin-facing view of the connection."""
    chain: PluginChain
    """The connection's enabled plugins."""
    authenticator: Authenticator
    """Checks credentials and admits identities (see :mod:`hoopgw.identity.authn`)."""
    sessions: SessionRegistry
    """Live sessions of the whole gateway."""
    reactor: Any
    """The reactor (tests pass a ``MemoryReactorClock``)."""
    server_tls: Any = None
    """A pyOpenSSL context factory for client-side TLS, or None when not configured."""
    store: Any = None
    """The gateway's :class:`~hoopgw.store.Store` (blocking) for look-ups at login, such as
    SSH public keys; None where no store is open (config checks, some tests)."""
    upstream_failed: Callable[[], None] = lambda: None
    """Call once for each failed attempt to connect or log in to the target (it is counted in
    the gateway's metrics)."""
    upstream: UpstreamConnector | None = None
    """Opens the connection's upstream TCP connections (a network agent's for a connection
    with ``via``); None connects directly. Use :meth:`connect_upstream`."""

    def connect_upstream(
        self, host: str, port: int, proto: Any, *, timeout: float | None = None
    ) -> Any:
        """Connect ``proto`` to the target ``host:port`` -- directly, or through the network
        agent the connection names. Every protocol opens its upstream TCP connections here.

        :param timeout: seconds to give up after (default
            :data:`~hoopgw.transport.CONNECT_TIMEOUT`).
        :return: a Deferred firing with ``proto`` once connected, or failing with the reason
            (:class:`~hoopgw.errors.UpstreamUnavailable` carries one safe to show the client).
        """
        # Imported here: the TLS stack it loads slows every CLI command that reads a config.
        from hoopgw.transport import CONNECT_TIMEOUT, DirectConnector

        connector = self.upstream or DirectConnector(self.reactor)
        return connector.connect(
            host, port, proto, timeout=CONNECT_TIMEOUT if timeout is None else timeout
        )


@attrs.frozen(kw_only=True)
class ProtocolTable:
    """A connection's ``[connections.<protocol>]`` table as :attr:`ProtocolSpec.read_options`
    gets it: validated against :attr:`ProtocolSpec.options`, with the connection around it."""

    protocol: str
    """The protocol's name, which is also the table's name (``ssh``)."""
    connection: str
    """Name of the connection, for errors."""
    values: Mapping[str, Any]
    """Every declared option, defaults filled in."""
    credential: CredentialConfig
    """The connection's resolved ``[connections.credential]`` table."""
    base_dir: Path
    """Folder of the config file: relative paths in the table start here."""

    def error(self, message: str, key: str) -> ConfigError:
        """A config error naming ``key`` of this table (``ssh.known_hosts``) and the connection."""
        return ConfigError(message, key=f"{self.protocol}.{key}", connection=self.connection)

    def path(self, value: str) -> str:
        """``value`` as an absolute path (``~`` expanded, relative to :attr:`base_dir`)."""
        return str((self.base_dir / Path(value).expanduser()).resolve())

    def readable_file(self, key: str) -> str | None:
        """The absolute path of the file option ``key`` names, once it is known to be
        readable; None when the option is unset (None).

        :raises ConfigError: naming the key when the file cannot be read.
        """
        value = self.values[key]
        if value is None:
            return None
        path = self.path(value)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise self.error(f"cannot read {path!r}: {exc.strerror}", key) from None
        return path


ColumnSource = tuple[int, int, str, str, str]
"""One table column of a database's catalog: ``(table id, column number, schema, table,
column)``, the numbers as :class:`~hoopgw.session.Column` carries them in ``table_oid`` and
``column_number``."""


@attrs.frozen(kw_only=True)
class CatalogLogin:
    """How a plugin's side connection logs in to read a database's catalog."""

    target: str
    """``HOST:PORT`` of the target."""
    user: str
    """User on the target that may read the catalog."""
    password: str | None
    """Its password; None when the target asks none."""
    sslmode: str = "prefer"
    """``disable``, ``prefer`` or ``require``: TLS to the target."""
    application_name: str = "hoopgw"
    """How the side connection names itself to the target, where the protocol can."""
    timeout: float = 10.0
    """Seconds the whole read may take."""
    connect: Callable[..., Any] | None = None
    """Opens the side connection's TCP connection as the connection's sessions do (the
    plugin's :attr:`~hoopgw.plugin.PluginContext.connect_upstream`: through the network agent
    of ``via``); None connects directly."""


class ValueKind(enum.StrEnum):
    """How the values of a result column (or of a type inside one) are encoded: what a plugin
    that reads values must decode, and whether they can carry text at all."""

    SKIP = "skip"
    """Cannot carry text, nor a number as long as a card number: booleans, small integers,
    dates and times, UUIDs, geometry, ... (PostgreSQL ``int4``, MySQL ``LONG``)."""
    TEXT = "text"
    """Text (UTF-8) in every format; also the kind of a type the protocol cannot tell."""
    JSON = "json"
    """JSON text in every format."""
    JSONB = "jsonb"
    """JSON text; in binary format behind a version byte ``1`` (PostgreSQL ``jsonb``)."""
    JSONPATH = "jsonpath"
    """Text; in binary format behind a version byte ``1`` (PostgreSQL ``jsonpath``)."""
    NUMERIC = "numeric"
    """A decimal number: digits in text format, PostgreSQL's ``numeric`` layout in binary."""
    INT8 = "int8"
    """A 64-bit integer: digits in text format, eight big-endian bytes in binary."""
    FLOAT8 = "float8"
    """A double: digits in text format, eight big-endian bytes (IEEE 754) in binary."""
    MONEY = "money"
    """PostgreSQL ``money``: formatted digits in text, a big-endian ``int8`` in binary."""
    BITS = "bits"
    """A bit string (an integer in base 2): ``0``/``1`` in text, length and bytes in binary."""
    DIGITS = "digits"
    """A number written in ASCII in every format (MySQL text rows, ``DECIMAL``)."""
    INT8_LE = "int8le"
    """A 64-bit integer as eight little-endian bytes (MySQL's binary ``LONGLONG``)."""
    DOUBLE_LE = "doublele"
    """A double as eight little-endian bytes (MySQL's binary ``DOUBLE``)."""
    ADDRESS = "address"
    """An IP address or network (PostgreSQL ``inet``, ``cidr``)."""
    ARRAY = "array"
    """PostgreSQL's array: a ``{...}`` literal in text, the array layout in binary (its
    elements' type: :meth:`ValueTypes.element_type`)."""
    BYTEA = "bytea"
    """Bytes: hex or escape format in text, raw in binary."""
    RECORD = "record"
    """A record: its literal in text, PostgreSQL's record layout (field types inline) in
    binary."""
    RANGE = "range"
    """A range of numbers: its literal in text, PostgreSQL's range layout in binary (its
    bounds' type: :meth:`ValueTypes.element_type`)."""
    MULTIRANGE = "multirange"
    """Ranges of numbers, PostgreSQL's multirange layout in binary."""
    OTHER = "other"
    """A type the protocol does not know: may carry text; text in text format, unknown bytes
    in binary."""


class ValueTypes(Protocol):
    """How a protocol's result columns are typed: :attr:`ProtocolSpec.value_types`.

    Answers are how values are encoded, whatever a plugin's policy (a plugin that does not
    look at numbers skips :attr:`ValueKind.INT8` itself)."""

    def column_kind(self, column: Column) -> ValueKind:
        """How the values of a result column are encoded, from its type and format."""

    def type_kind(self, type_oid: int) -> ValueKind:
        """How values of a type named by number are encoded in binary format, where a value
        names the types inside it (a record's fields, an array's elements, a range's
        bounds); :attr:`ValueKind.OTHER` for a type the protocol does not know."""

    def element_type(self, type_oid: int) -> int | None:
        """The element type of an array type, the bound type of a range or multirange type;
        None for any other type."""


@attrs.frozen(kw_only=True)
class ProtocolSpec:
    """A wire protocol as registered in the ``hoopgw.protocols`` entry-point group."""

    name: str
    """Protocol name used in ``[[connections]] protocol``."""
    build_factory: Callable[[ConnectionRuntime], Any]
    """Makes the server factory for one connection's listener."""
    dialect: Any = None
    """The protocol's statement analyser (see :mod:`hoopgw.sql`), for plugins that judge
    statements by what they do; None for protocols without statements (SSH)."""
    describe: Callable[[ConnectionConfig], dict[str, str]] | None = None
    """Facts about one configured connection that ``hoopgw config check`` shows (the SSH
    protocol gives its host key fingerprint); None for none."""
    enforces: frozenset[str] = frozenset()
    """The :class:`~hoopgw.session.UpstreamOptions` requirements this protocol enforces on the
    target (``read_only``). The gateway refuses to start a connection whose plugins ask for
    one it does not enforce (see :func:`~hoopgw.hookspecs.upstream_options`)."""
    inspect_login: Callable[[ConnectionConfig, UpstreamOptions], list[str]] | None = None
    """Logs in to the target with the connection's stored credential and returns warnings
    about that login given what the connection requires (a superuser on a read-only
    connection); blocking, so the gateway calls it in a thread. Raises an exception that says
    why when the login fails. ``hoopgw config check --online`` and the gateway's start call
    it; None when the protocol has nothing to check."""
    options: tuple[Option, ...] = ()
    """The keys of the connection's ``[connections.<protocol>]`` table, declared as plugins
    declare theirs (:class:`~hoopgw.plugin.Option`): the config loader refuses unknown keys and
    wrong types and fills in defaults. Empty: the protocol has no table."""
    read_options: Callable[[ProtocolTable], Any] | None = None
    """Checks what no single option can (keys that go together, the credential the protocol
    logs in with) and makes the protocol's own value of the validated table, which the
    connection carries as :attr:`~hoopgw.connection.ConnectionConfig.protocol_options`. Raises
    :class:`~hoopgw.errors.ConfigError` (see :meth:`ProtocolTable.error`) naming the key at
    fault. Called once per connection by the config loader, even without a table; None: the
    protocol keeps no options."""
    credentials: frozenset[str] = frozenset({"password"})
    """The secrets of ``[connections.credential]`` besides ``user`` the protocol logs in
    with (``password``, ``private_key``); the loader refuses the others."""
    read_columns: Callable[[Any, CatalogLogin, str], Deferred[list[ColumnSource]]] | None = None
    """``read_columns(reactor, login, database)`` reads every table column of ``database``
    over a side connection to the target, for plugins that resolve a result column's source
    (:attr:`~hoopgw.session.Column.table_oid`, :attr:`~hoopgw.session.Column.column_number`)
    to its name, such as masking's column rules. The Deferred fails with an error that says
    why the catalog cannot be read. None: the protocol names no column sources."""
    value_types: ValueTypes | None = None
    """How result columns' values are encoded, for plugins that read them (masking). None: the
    protocol's results are not typed columns, and a plugin reads every value as text."""


def load_protocol(name: str) -> ProtocolSpec:
    """Import the protocol registered under ``name``.

    :raises PluginError: if it is not installed or is not a :class:`ProtocolSpec`.
    """
    found = {ep.name: ep for ep in entry_points(group=PROTOCOL_GROUP)}
    if name not in found:
        raise PluginError(
            f"protocol {name!r} is not installed (installed: {', '.join(sorted(found)) or 'none'})"
        )
    spec = found[name].load()
    if not isinstance(spec, ProtocolSpec):
        raise PluginError(f"protocol {name!r} entry point is not a ProtocolSpec")
    return spec
