"""Group sources: where an identity's groups come from besides its credential.

An API key carries its groups, and a token may carry them in a claim. An enterprise often keeps
group membership in its directory instead; a *group source* looks the identity up there. A group
source is a class registered in the ``hoopgw.group_sources`` entry-point group::

    [project.entry-points."hoopgw.group_sources"]
    ldap = "hoopgw_ldap:LdapGroupSource"

It declares ``options`` (a tuple of :class:`~hoopgw.plugin.Option`, read from the
``[identity.<name>]`` table) and ``secret_options`` (names of options that hold secret
references, resolved by the config loader into :class:`~hoopgw.secrets.Secret`), takes a
:class:`GroupSourceContext`, and implements :meth:`GroupSource.groups_of`. Like plugins, a group
source is used only when ``[identity] group_sources`` names it, never just because it is
installed, and serves the whole gateway.

The groups of every source are added to those of the token. A source that fails makes the
authentication fail (fail closed): a lookup that cannot be made must not leave an identity with
fewer groups than it should have, nor more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
from twisted.internet import defer

from hoopgw.errors import AuthenticationError, PluginError
from hoopgw.plugin import Option
from hoopgw.session import Identity

__all__ = [
    "GROUP_SOURCE_GROUP",
    "GroupSource",
    "GroupSourceContext",
    "GroupSourceError",
    "load_group_source",
]

GROUP_SOURCE_GROUP = "hoopgw.group_sources"


class GroupSourceError(AuthenticationError):
    """A group source could not answer; the message is safe to show, :attr:`reason` is for
    the audit record and the log."""

    def __init__(self, shown: str, *, reason: str) -> None:
        super().__init__(shown)
        self.reason = reason


@attrs.frozen(kw_only=True)
class GroupSourceContext:
    """What the gateway gives a group source when it builds it."""

    name: str
    """The source's name in ``[identity] group_sources``."""
    options: Mapping[str, Any]
    """Validated options, defaults filled in, secret references resolved."""
    reactor: Any
    """The reactor (timers, ``deferToThread``); tests pass a ``Clock`` or a fake."""
    base_dir: Path
    """Folder of the config file, for relative paths in options."""


class GroupSource(Protocol):
    """The shape of a group source instance."""

    def groups_of(self, identity: Identity) -> defer.Deferred[Iterable[str]]:
        """The groups ``identity`` belongs to according to this source.

        Runs on the reactor thread: blocking work (a directory query) must go to a thread.

        :return: a Deferred firing with the group names (none: an empty iterable), or failing
            with :class:`GroupSourceError` when the source cannot answer.
        """
        ...

    def close(self) -> None:
        """Release connections; called once when the gateway stops."""
        ...


class GroupSourceClass(Protocol):
    """The shape of a group source class."""

    options: ClassVar[tuple[Option, ...]]
    secret_options: ClassVar[tuple[str, ...]]

    def __call__(self, context: GroupSourceContext) -> GroupSource: ...


def load_group_source(name: str) -> GroupSourceClass:
    """Import the group source registered under ``name``.

    :raises PluginError: if it is not installed or fails to import.
    """
    found = {ep.name: ep for ep in entry_points(group=GROUP_SOURCE_GROUP)}
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        raise PluginError(f"group source {name!r} is not installed (installed: {installed})")
    try:
        cls = found[name].load()
    except Exception as exc:
        raise PluginError(f"group source {name!r} failed to import: {exc}") from exc
    if not isinstance(getattr(cls, "options", None), tuple):
        raise PluginError(f"group source {name!r}: 'options' must be a tuple of Option")
    return cls
