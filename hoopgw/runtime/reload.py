"""Config reload without dropping sessions (``SIGHUP``, ``hoopgw reload``, ``POST /api/reload``).

A reload reads the config file again, validates it whole (the errors of a start), and applies
what changed in ``[[connections]]``, all or nothing:

1. *plan* -- compare the two configs by connection name: added, removed, changed. Any other
   table (``[gateway]``, ``[roles]``, ``[identity]``, ``[console]``) that differs refuses the
   reload: those need a restart.
2. *build* -- a new plugin chain and protocol factory for each added or changed connection.
   An instance whose plugin name and options did not change, on a connection whose name,
   protocol, target and ``via`` did not change, is kept (the same object serves the new chain);
   the others are new. A plugin that rejects its options, or asks for what the protocol cannot
   enforce, refuses the reload.
3. *bind* -- a listener on each new address (added connections, and changed connections whose
   ``listen`` changed), while the old ones keep serving. A bind that fails closes those just
   opened and refuses the reload: an address the old config still holds (a port that moves
   between two connections, or the same port on another interface) cannot be taken over by a
   reload; do it in two reloads or restart.
4. *record* -- the ``config_reloaded`` audit record (who, the file's SHA-256, what changed, the
   sessions it ends) is durable before anything changes; a store that cannot write refuses the
   reload.
5. *apply* -- nothing here can fail: new clients of a changed connection reach the new
   factory at once (the listener's :class:`ListenerSwitch`), live sessions take the new chain
   at their next command (:class:`~hoopgw.ledger.CommandLedger`), removed connections stop
   listening, moved listeners close their old address, and live sessions whose connection was
   removed or whose identity lost access are ended with the reason (their protocol's error)
   and a ``session_terminated`` record.

Reloads are per process and one at a time: a second one while one runs is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from hoopgw.admin.sessions import SESSION_TERMINATED_KIND
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import HoopgwError, ReloadError
from hoopgw.records import AuditEntry
from hoopgw.runtime.switch import ListenerSwitch

if TYPE_CHECKING:
    from hoopgw.config.load import Config
    from hoopgw.protocol import ConnectionRuntime, LiveSession
    from hoopgw.runtime.chain import PluginChain

__all__ = [
    "CONFIG_RELOADED_KIND",
    "CONFIG_RELOAD_REFUSED_KIND",
    "Served",
    "access_lost",
    "plan_reload",
    "reusable_plugins",
]

log = Logger(namespace="hoopgw.reload")

CONFIG_RELOADED_KIND = "config_reloaded"
"""Audit record kind of an applied config reload."""

CONFIG_RELOAD_REFUSED_KIND = "config_reload_refused"
"""Audit record kind of a refused config reload (who asked, the file's digest, the errors)."""

RESTART_TABLES = ("gateway", "roles", "identity", "console")
"""Config tables a reload does not apply: a change there refuses it."""


@attrs.define(kw_only=True)
class Served:
    """One configured connection as the gateway serves it."""

    config: ConnectionConfig
    """Its config."""
    runtime: ConnectionRuntime
    """What its protocol serves it with (the chain is :attr:`runtime`'s)."""
    port: Any
    """The listening port."""
    switch: ListenerSwitch
    """The listener's factory."""


@attrs.frozen(kw_only=True)
class ReloadPlan:
    """What a reload changes, by connection."""

    added: tuple[ConnectionConfig, ...]
    removed: tuple[ConnectionConfig, ...]
    changed: tuple[tuple[ConnectionConfig, ConnectionConfig], ...]
    """``(old, new)`` pairs."""

    def summary(self) -> dict[str, Any]:
        """The plan as the audit record, the log and the API show it."""
        return {
            "added": [c.name for c in self.added],
            "removed": [c.name for c in self.removed],
            "changed": {new.name: _differences(old, new) for old, new in self.changed},
        }


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two validated configs.

    :raises ReloadError: a table other than ``[[connections]]`` changed (that needs a restart).
    """
    differing = [t for t in RESTART_TABLES if getattr(old, t) != getattr(new, t)]
    if differing:
        tables = ", ".join(f"[{t}]" for t in differing)
        raise ReloadError(
            f"{tables} changed: a reload applies [[connections]] only; restart the gateway to"
            " apply the rest (the running config stays)"
        )
    before = {c.name: c for c in old.connections}
    after = {c.name: c for c in new.connections}
    added = [c for name, c in after.items() if name not in before]
    removed = [c for name, c in before.items() if name not in after]
    changed = []
    for name, config in after.items():
        previous = before.get(name)
        if previous is not None and previous != config:
            changed.append((previous, config))
    return ReloadPlan(added=tuple(added), removed=tuple(removed), changed=tuple(changed))


def _differences(old: ConnectionConfig, new: ConnectionConfig) -> list[str]:
    """The keys of a connection that differ (``credential`` named, never shown)."""
    fields = [f.name for f in attrs.fields(ConnectionConfig)]
    differing = [f for f in fields if f != "plugin_options" and getattr(old, f) != getattr(new, f)]
    for name in sorted(set(old.plugin_options) | set(new.plugin_options)):
        if old.plugin_options.get(name) != new.plugin_options.get(name):
            differing.append(name)
    return differing


def reusable_plugins(old: ConnectionConfig, new: ConnectionConfig) -> set[str]:
    """Names of the plugins whose instance the new config of a connection keeps: the same
    options, on a connection with the same name, protocol, target and ``via``."""
    if (old.name, old.protocol, old.target, old.via) != (
        new.name,
        new.protocol,
        new.target,
        new.via,
    ):
        return set()
    return {
        name
        for name in new.plugins
        if name in old.plugins and old.plugin_options.get(name) == new.plugin_options.get(name)
    }


def access_lost(
    session: LiveSession, config: ConnectionConfig, granted: set[tuple[str, str]]
) -> str | None:
    """Why the identity of ``session`` may no longer use the connection under ``config``, or
    None while it may (the rules of :meth:`~hoopgw.identity.authn.Authenticator.admit`);
    ``granted`` holds the (identity, connection) pairs with a live just-in-time grant (a
    session that came while they were read holds none here: it ends, fail closed)."""
    identity = session.identity
    if identity is None:
        return None
    if not set(config.allow_groups) & identity.groups:
        return (
            f'identity "{identity.name}" may no longer use connection "{config.name}"'
            " (none of its groups is in allow_groups)"
        )
    if config.access == "jit" and (identity.name, config.name) not in granted:
        return (
            f'connection "{config.name}" now needs a just-in-time grant and identity'
            f' "{identity.name}" has none'
        )
    return None


def _read_only(chain: PluginChain, config: ConnectionConfig) -> bool:
    from hoopgw.runtime.connections import connection_info

    return chain.upstream_options(connection_info(config)).read_only


_CARRIED_KEYS = frozenset(
    {
        "plugins",
        "plugin_options",
        "allow_groups",
        "access",
        "jit_approvers",
        "jit_max_duration",
        "jit_request_ttl",
        "listen",
    }
)
"""Connection keys a session started on the old runtime still honours after a reload: the
chain hand-over carries the plugins, the admission check reads the access keys from the
newest config, and ``listen`` only concerns new clients."""


def _retired(old: ConnectionConfig, new: ConnectionConfig, read_only: bool) -> str | None:
    """Why no session may start on the old runtime of a changed connection any more (see
    :attr:`~hoopgw.runtime.chain.PluginChain.retired`), or None while one may."""
    if read_only:
        return f'connection "{new.name}" now requires read-only sessions on the target'
    differing = [k for k in _differences(old, new) if k in _FIELDS and k not in _CARRIED_KEYS]
    if differing:
        return f'connection "{new.name}" changed ({", ".join(differing)})'
    return None


_FIELDS = frozenset(f.name for f in attrs.fields(ConnectionConfig))

_UPSTREAM_KEYS = frozenset(
    {"target", "via", "credential", "upstream_tls", "protocol_options", "local_infile"}
)
"""Connection keys that decide what a live session is logged in to upstream, and with what
powers: a change ends the live sessions (a rotated credential or a lower-privileged login must
not leave sessions of the old one running)."""


def _instances(chain: PluginChain) -> list[int]:
    return [id(instance) for _, instance in chain.plugins]


def _ids(ending: list[tuple[LiveSession, str]]) -> list[str]:
    """The ids of the sessions in ``ending`` that started (the others were logging in)."""
    return [s.session_info.id for s, _ in ending if s.session_info is not None]


class Reloader:
    """Applies reloads to one :class:`~hoopgw.runtime.gateway.Gateway` (see the module)."""

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway
        self._running = False

    @defer.inlineCallbacks
    def reload_file(self, *, by: str) -> Any:
        """Read the gateway's config file again and apply it (see :meth:`apply`). A refusal is
        recorded (``config_reload_refused``) before it is reported."""
        from hoopgw.config.load import config_digest

        source = self._gateway.config.source_file
        digest = ""
        try:
            if source is None:
                raise ReloadError("the gateway was not started from a file; nothing to reload")
            data = self._read(source)
            digest = config_digest(data)
            config = attrs.evolve(
                self._parse(data, source), source_file=source, source_digest=digest
            )
            result = yield self.apply(config, by=by, digest=digest)
        except ReloadError as exc:
            refused = exc
        else:
            return result
        yield self.refuse(refused, by=by, file=str(source or ""), digest=digest)  # fails with it

    @staticmethod
    def _read(source: Any) -> bytes:
        from hoopgw.secrets import read_trusted_file

        try:
            return read_trusted_file(source, what="config file")
        except OSError as exc:
            raise ReloadError(f"cannot read config file {str(source)!r}: {exc.strerror}") from None
        except HoopgwError as exc:
            raise ReloadError(str(exc)) from None

    @staticmethod
    def _parse(data: bytes, source: Any) -> Config:
        from hoopgw.config.load import parse_config

        try:
            return parse_config(data.decode("utf-8"), base_dir=source.parent)
        except UnicodeDecodeError:
            raise ReloadError(f"cannot read config file {str(source)!r}: not UTF-8 text") from None
        except HoopgwError as exc:
            raise ReloadError(str(exc)) from None

    def refuse(
        self, error: ReloadError, *, by: str, file: str = "", digest: str = ""
    ) -> defer.Deferred[Any]:
        """Refuse a reload with ``error``: fails with it once the ``config_reload_refused``
        record is written (a failure to write it is logged; the refusal stands either way).

        :param by: who asked; ``file``, ``digest``: the config file read, if any.
        """
        gw = self._gateway
        if gw.audit is None:  # not started: nothing can be recorded yet
            return defer.fail(error)
        entry = AuditEntry(
            kind=CONFIG_RELOAD_REFUSED_KIND,
            session_id="",
            time=gw.reactor.seconds(),
            data={"by": by, "file": file, "digest": digest, "errors": [str(error)]},
        )
        written = gw.audit.write(entry).addErrback(
            lambda f: log.error(
                "cannot record the refused reload (by {by}): {why}", by=by, why=f.value
            )
        )
        return written.addCallback(lambda _: defer.fail(error))

    @defer.inlineCallbacks
    def apply(self, config: Config, *, by: str, digest: str = "") -> Any:
        """Apply the validated ``config``; fires with the plan's summary (what changed, the
        sessions ended), or fails with :class:`~hoopgw.errors.ReloadError` having changed
        nothing.

        :param by: who asked (``SIGHUP``, an identity of the admin API), for the record.
        :param digest: the config file's digest, for the record.
        """
        if self._running:
            raise ReloadError("another reload is being applied; try again")
        if not self._gateway.serving:
            raise ReloadError("the gateway is not serving (starting or stopping); nothing reloaded")
        self._running = True
        try:
            result = yield self._apply(config, by=by, digest=digest)
        finally:
            self._running = False
        return result

    @defer.inlineCallbacks
    def _apply(self, config: Config, *, by: str, digest: str) -> Any:
        gw = self._gateway
        plan = plan_reload(gw.config, config)
        try:
            granted = yield self._granted(config)
        except Exception as exc:
            raise ReloadError(
                f"cannot read the just-in-time grants ({exc}); the running config stays"
            ) from None
        served: dict[str, Served] = gw.served
        built: dict[str, tuple[ConnectionRuntime, Any]] = {}
        try:
            for connection in plan.added:
                built[connection.name] = gw.build_connection(connection)
            for old, new in plan.changed:
                keep = reusable_plugins(old, new)
                instances = {
                    name: instance
                    for name, instance in served[old.name].runtime.chain.plugins
                    if name in keep
                }
                built[new.name] = gw.build_connection(new, keep=instances)
        except HoopgwError as exc:
            raise ReloadError(str(exc)) from None
        binding = [c for c in plan.added] + [
            new for old, new in plan.changed if old.listen != new.listen
        ]
        ports: dict[str, tuple[Any, ListenerSwitch]] = {}
        try:
            for connection in binding:
                switch = ListenerSwitch(built[connection.name][1])
                port = yield gw.listen(connection.listen, switch, f"connection {connection.name!r}")
                ports[connection.name] = (port, switch)
        except Exception as exc:
            yield self._close(port for port, _ in ports.values())
            if isinstance(exc, HoopgwError):
                raise ReloadError(f"{exc} (the running config stays)") from None
            raise
        read_only = {
            new.name
            for old, new in plan.changed
            if _read_only(built[new.name][0].chain, new)
            and not _read_only(served[old.name].runtime.chain, old)
        }
        # Start the factories an unmoved listener will switch to (SSH loads its host keys): a
        # failure refuses the reload here, before anything changed.
        starting = [built[new.name][1] for old, new in plan.changed if new.name not in ports]
        started: list[Any] = []
        try:
            for factory in starting:
                factory.doStart()
                started.append(factory)
        except Exception as exc:
            for factory in started:
                factory.doStop()
            yield self._close(port for port, _ in ports.values())
            raise ReloadError(
                f"cannot start a connection: {exc} (the running config stays)"
            ) from None
        summary = {
            **plan.summary(),
            "ended_sessions": _ids(self._sessions_to_end(plan, config, read_only, granted)),
        }
        entry = AuditEntry(
            kind=CONFIG_RELOADED_KIND,
            session_id="",
            time=gw.reactor.seconds(),
            data={
                "by": by,
                "file": str(config.source_file or ""),
                "digest": digest,
                **summary,
            },
        )
        try:
            yield gw.audit.write(entry)
            if not gw.serving:  # stopped meanwhile: its stop closed only the ports it knew
                raise ReloadError("the gateway is stopping")
        except Exception as exc:
            for factory in started:
                factory.doStop()
            yield self._close(port for port, _ in ports.values())
            if isinstance(exc, ReloadError):
                raise ReloadError(f"{exc}; nothing reloaded") from None
            raise ReloadError(
                f"cannot record the reload ({exc}); the running config stays"
            ) from None
        # Judged again now, with nothing left to wait for: a client admitted under the old
        # config while the record was written must not escape the new one.
        ending = self._sessions_to_end(plan, config, read_only, granted)
        self._commit(plan, config, built, ports, ending, read_only, by=by)
        return {**summary, "ended_sessions": _ids(ending)}

    def _granted(self, config: Config) -> defer.Deferred[set[tuple[str, str]]]:
        """The (identity, connection) pairs of the live sessions on the new config's ``jit``
        connections that hold a live grant, read through the grants' store calls (off the
        reactor thread with a PostgreSQL store)."""
        jit = {c.name for c in config.connections if c.access == "jit"}
        pairs = sorted(
            {
                (session.identity.name, session.runtime.config.name)
                for session in self._gateway.sessions
                if session.identity is not None and session.runtime.config.name in jit
            }
        )
        grants = getattr(self._gateway.approvals, "grants", None)
        if not pairs or grants is None:
            return defer.succeed(set())
        return grants.calls.call(grants.granted, pairs, now=self._gateway.reactor.seconds())

    def _sessions_to_end(
        self,
        plan: ReloadPlan,
        config: Config,
        read_only: set[str],
        granted: set[tuple[str, str]],
    ) -> list[tuple[LiveSession, str]]:
        """The live sessions the new config no longer allows, each with why. ``read_only``
        names the connections whose new plugins require read-only sessions on the target
        where the old ones did not: their live sessions were not set up so, and end.
        ``granted`` holds the (identity, connection) pairs with a live grant."""
        removed = {c.name for c in plan.removed}
        current = {c.name: c for c in config.connections}
        ending = []
        for session in self._gateway.sessions:
            if session.identity is None:
                # Not admitted yet: the authenticator judges it by the new config.
                continue
            name = session.runtime.config.name
            if name in removed:
                ending.append(
                    (session, f'connection "{name}" was removed from the gateway\'s config')
                )
                continue
            if current[name].protocol != session.runtime.config.protocol:
                ending.append((session, f'connection "{name}" changed its protocol'))
                continue
            upstream = [
                key
                for key in _differences(session.runtime.config, current[name])
                if key in _UPSTREAM_KEYS
            ]
            if upstream:
                ending.append(
                    (
                        session,
                        f'connection "{name}" changed how the gateway reaches the target'
                        f" ({', '.join(upstream)}); reconnect",
                    )
                )
                continue
            if name in read_only:
                ending.append(
                    (
                        session,
                        f'connection "{name}" now requires read-only sessions on the target,'
                        " which this session was not started as; reconnect",
                    )
                )
                continue
            lost = access_lost(session, current[name], granted)
            if lost is not None:
                ending.append((session, lost))
        return ending

    def _commit(
        self,
        plan: ReloadPlan,
        config: Config,
        built: Mapping[str, tuple[ConnectionRuntime, Any]],
        ports: Mapping[str, tuple[Any, ListenerSwitch]],
        ending: list[tuple[LiveSession, str]],
        read_only: set[str],
        *,
        by: str,
    ) -> None:
        gw = self._gateway
        served: dict[str, Served] = gw.served
        closing = []
        for old, new in plan.changed:
            runtime, factory = built[new.name]
            entry = served[new.name]
            previous: PluginChain = entry.runtime.chain
            if old.protocol == new.protocol:  # else its sessions end (_sessions_to_end)
                previous.successor = runtime.chain
            previous.retired = _retired(old, new, new.name in read_only)
            if new.name in ports:
                closing.append(entry.port)
                entry.port, entry.switch = ports[new.name]
            else:
                entry.switch.switch(factory)
            entry.config, entry.runtime = new, runtime
            gw.watch_reviews(new.name, runtime.chain)
            if _instances(previous) != _instances(runtime.chain):
                self._withdraw_reviews(new.name)
        for connection in plan.added:
            runtime, _ = built[connection.name]
            port, switch = ports[connection.name]
            served[connection.name] = Served(
                config=connection, runtime=runtime, port=port, switch=switch
            )
            gw.watch_reviews(connection.name, runtime.chain)
        for connection in plan.removed:
            gone = served.pop(connection.name)
            closing.append(gone.port)
            gone.runtime.chain.retired = f'connection "{connection.name}" was removed'
        gw.config_applied(config)
        self._close(closing)
        for session, reason in ending:
            self._end(session, reason, by=by)
        for connection in [*plan.added, *(new for _, new in plan.changed)]:
            try:
                gw.check_target(connection)
            except Exception:  # a warning only: the reload is applied already
                log.failure("cannot check the target of connection {name}", name=connection.name)
        log.info(
            "config reloaded (by {by}): added {added}, changed {changed}, removed {removed};"
            " {ended} session(s) ended",
            by=by,
            added=[c.name for c in plan.added] or "none",
            changed=[new.name for _, new in plan.changed] or "none",
            removed=[c.name for c in plan.removed] or "none",
            ended=len(ending),
        )

    def _end(self, session: LiveSession, reason: str, *, by: str) -> None:
        """End ``session`` with ``reason`` and its ``session_terminated`` record."""
        info = session.session_info
        session_id = "" if info is None else info.id  # None: still logging in to the target
        gw = self._gateway
        entry = AuditEntry(
            kind=SESSION_TERMINATED_KIND,
            session_id=session_id,
            time=gw.reactor.seconds(),
            data={
                "by": f"config reload ({by})",
                "reason": reason,
                "connection": session.runtime.config.name,
                "identity": None if session.identity is None else session.identity.name,
            },
        )
        gw.audit.write(entry).addErrback(
            lambda f: log.error(
                "cannot record the end of session {id}: {why}", id=session_id, why=f.value
            )
        )
        # Ended whether or not the record could be written: access is gone either way.
        session.terminate(f"{reason} (config reloaded)")

    def _withdraw_reviews(self, connection: str) -> None:
        """Abort the statements held for review on ``connection`` under its replaced chain:
        their approvers and rules were the old config's (the client sends them again)."""
        approvals = self._gateway.approvals
        if approvals is None:
            return
        why = "the connection's config was reloaded; send the statement again"
        approvals.abort_pending(why, connection).addErrback(
            lambda f: log.error(
                "cannot record the reviews withdrawn on {name}: {why}", name=connection, why=f.value
            )
        )

    @staticmethod
    def _close(ports: Any) -> defer.Deferred[Any]:
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
