"""How a wire protocol plugs into the gateway, and what the gateway hands it per connection.

A protocol package registers a :class:`ProtocolSpec` in the ``hoopgw.protocols`` entry-point
group. For each configured connection the gateway builds a :class:`ConnectionRuntime` and asks
the protocol for a Twisted factory that serves that connection's listener.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from hoopgw.errors import PluginError
from hoopgw.plugin import Option

if TYPE_CHECKING:
    from hoopgw.authn import Authenticator
    from hoopgw.chain import PluginChain
    from hoopgw.config import ConnectionConfig, GatewayConfig
    from hoopgw.session import ConnectionInfo, Identity, SessionInfo, UpstreamOptions

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


class SessionRegistry:
    """Every live session of the gateway, for shutdown and for cancel requests."""

    def __init__(self, *, on_added: Callable[[LiveSession], None] | None = None) -> None:
        """
        :param on_added: called with each session :meth:`add` tracks (the gateway counts them).
        """
        self._sessions: set[LiveSession] = set()
        self._cancel_keys: dict[Any, LiveSession] = {}
        self._on_added = on_added

    def add(self, session: LiveSession) -> None:
        """Track ``session`` until :meth:`remove`."""
        if session not in self._sessions and self._on_added is not None:
            self._on_added(session)
        self._sessions.add(session)

    def remove(self, session: LiveSession) -> None:
        """Forget ``session`` and its cancel key; removing twice is harmless."""
        self._sessions.discard(session)
        for key in [k for k, s in self._cancel_keys.items() if s is session]:
            del self._cancel_keys[key]

    def add_cancel_key(self, key: Any, session: LiveSession) -> bool:
        """Bind a protocol cancel key to ``session``; False if the key is already taken."""
        if key in self._cancel_keys:
            return False
        self._cancel_keys[key] = session
        return True

    def by_cancel_key(self, key: Any) -> LiveSession | None:
        """The session that owns ``key``, if it is still live."""
        return self._cancel_keys.get(key)

    def sessions_of(self, identity: str, connection: str) -> list[LiveSession]:
        """The live sessions of ``identity`` on the connection named ``connection`` (those a
        just-in-time grant admitted, when it ends)."""
        return [
            s
            for s in self._sessions
            if s.identity is not None
            and s.identity.name == identity
            and s.runtime.config.name == connection
        ]

    def find(self, prefix: str) -> list[LiveSession]:
        """The live, authenticated sessions whose id starts with ``prefix``."""
        return [
            s
            for s in self._sessions
            if s.session_info is not None and s.session_info.id.startswith(prefix)
        ]

    def __iter__(self) -> Any:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)


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
    """Checks credentials and admits identities (see :mod:`hoopgw.authn`)."""
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
    """What the protocol reads from the connection's table named after it
    (``[connections.kubernetes]``), validated like a plugin's options; the values, defaults
    filled in, are :attr:`~hoopgw.config.ConnectionConfig.protocol_options`. Empty for a
    protocol without such a table."""


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
