"""What a plugin is, how it declares its options, and how the gateway loads it.

A plugin is a class registered in the ``hoopgw.plugins`` entry-point group::

    [project.entry-points."hoopgw.plugins"]
    myplugin = "my_package:MyPlugin"

The class declares ``options`` (a tuple of :class:`Option`) and takes a :class:`PluginContext`.
Plugins are loaded only when a connection's ``plugins`` list names them (an allow-list): being
installed is never enough.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
import pluggy

from hoopgw import hookspecs
from hoopgw.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from twisted.logger import Logger

    from hoopgw.approvals.reviews import ReviewService
    from hoopgw.audit.writer import AuditWriter
    from hoopgw.session import ConnectionInfo

PLUGIN_GROUP = "hoopgw.plugins"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)
"""Decorator marking a plugin method as a hook implementation."""

_MISSING: Any = object()


@attrs.frozen(kw_only=True)
class Option:
    """One option a plugin reads from its ``[connections.<plugin>]`` table (a protocol from its
    ``[connections.<protocol>]`` table, a group source from ``[identity.<source>]``)."""

    name: str
    """Key in the plugin's table."""
    type: type | tuple[type, ...]
    """Accepted Python type(s) after TOML parsing (``str``, ``int``, ``bool``, ``list``, ...)."""
    help: str
    """One sentence for ``docs/`` and error messages."""
    default: Any = _MISSING
    """Value when the key is absent; without a default the option is required."""
    check: Callable[[Any], str | None] | None = None
    """Extra validation: returns an error message, or None when the value is fine."""

    @property
    def required(self) -> bool:
        """Whether the config must set this option."""
        return self.default is _MISSING


def validate_options(
    plugin: str,
    options: tuple[Option, ...],
    table: Mapping[str, Any],
    *,
    connection: str,
    kind: str = "plugin",
) -> dict[str, Any]:
    """Check a plugin's config table against its declared options and fill in defaults.

    :param kind: what owns the table, for errors: ``plugin``, ``protocol``, ``group source``.
    :raises ConfigError: naming the connection and the offending key.
    """
    known = {o.name: o for o in options}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"unknown option for {kind} {plugin!r}"
                f" (known: {', '.join(sorted(known)) or 'none'})",
                key=f"{plugin}.{key}",
                connection=connection,
            )
    values: dict[str, Any] = {}
    for option in options:
        key = f"{plugin}.{option.name}"
        if option.name not in table:
            if option.required:
                raise ConfigError(f"required: {option.help}", key=key, connection=connection)
            values[option.name] = option.default
            continue
        value = table[option.name]
        expected = option.type if isinstance(option.type, tuple) else (option.type,)
        # bool is an int in Python; an int option must not silently accept true/false.
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(
                f"expected {names}, got {type(value).__name__}", key=key, connection=connection
            )
        if option.check is not None:
            problem = option.check(value)
            if problem:
                raise ConfigError(problem, key=key, connection=connection)
        values[option.name] = value
    return values


def check_plugin_options(
    plugin: str, cls: Any, options: Mapping[str, Any], *, protocol: str, connection: str
) -> None:
    """Run the checks that span several options or depend on the connection's protocol.

    A plugin class may define ``check_options(options, protocol)`` (a static or class method)
    that returns ``None`` or ``(option name, message)``; it gets the validated options, defaults
    filled in. ``hoopgw config check`` and the gateway's start both run it.

    :raises ConfigError: naming the connection and the offending key.
    """
    check = getattr(cls, "check_options", None)
    if check is None:
        return
    problem = check(options, protocol)
    if problem is not None:
        name, message = problem
        raise ConfigError(message, key=f"{plugin}.{name}", connection=connection)


@attrs.frozen(kw_only=True)
class PluginContext:
    """What the gateway gives a plugin instance when it builds it for one connection."""

    connection: ConnectionInfo
    """The connection this instance serves."""
    options: Mapping[str, Any]
    """The plugin's validated options, defaults filled in."""
    audit: AuditWriter | None
    """The audit writer (the one place that writes audit records), or None in config checks."""
    log: Logger
    """A logger namespaced to the plugin and connection."""
    reactor: Any
    """The reactor, for timers (tests pass a ``Clock``)."""
    approvals: ReviewService | None = None
    """The gateway's review service, for an approval backend; None in config checks."""
    connect_upstream: Callable[..., Any] | None = None
    """Opens a TCP connection to the connection's target as its sessions do -- directly, or
    through the network agent its ``via`` names -- for a side connection of the plugin's own
    (a catalog look-up): ``connect_upstream(host, port, protocol, timeout=...)`` returns a
    Deferred firing with the connected protocol. None: connect directly (config checks)."""


class PluginClass(Protocol):
    """The shape of a plugin class."""

    options: ClassVar[tuple[Option, ...]]

    def __call__(self, context: PluginContext) -> Any: ...


def available_plugins() -> dict[str, Any]:
    """Entry points of every installed plugin, by name (nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def load_plugin_class(name: str) -> PluginClass:
    """Import the plugin class registered under ``name``.

    :raises PluginError: if no such plugin is installed or it fails to import.
    """
    eps = available_plugins()
    if name not in eps:
        installed = ", ".join(sorted(eps)) or "none"
        raise PluginError(f"plugin {name!r} is not installed (installed: {installed})")
    try:
        cls = eps[name].load()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed to import: {exc}") from exc
    if not isinstance(getattr(cls, "options", ()), tuple):
        raise PluginError(f"plugin {name!r}: 'options' must be a tuple of Option")
    return cls
