"""The running gateway: opens the store, builds each connection's plugin chain and listener,
and stops cleanly (sessions get a protocol goodbye, queued audit records are committed)."""

from __future__ import annotations

import functools
import signal
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, protocol, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from hoopgw.admin.api import build_site
from hoopgw.admin.metrics import GatewayMetrics
from hoopgw.admin.sessions import SessionControl
from hoopgw.agent.hub import AgentHub
from hoopgw.agent.tokens import AgentTokens
from hoopgw.approvals.grants import GrantService
from hoopgw.approvals.reviews import ReviewService
from hoopgw.audit.writer import AuditWriter, CheckpointSettings, spawn_writer_process
from hoopgw.config.gateway import resolve_store_url
from hoopgw.config.load import Config
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import HoopgwError, ReloadError, StartupError
from hoopgw.identity.authn import Authenticator, build_authenticator
from hoopgw.protocol import ConnectionRuntime, ProtocolSpec, load_protocol
from hoopgw.runtime.chain import PluginChain
from hoopgw.runtime.connections import (
    build_chain,
    connection_info,
    login_warnings,
    upstream_options,
)
from hoopgw.runtime.registry import SessionRegistry
from hoopgw.runtime.reload import Reloader, Served
from hoopgw.runtime.switch import ListenerSwitch
from hoopgw.runtime.throttle import CancelLimit
from hoopgw.runtime.tls import server_tls_options
from hoopgw.runtime.worker import ControlLink, WorkerLink
from hoopgw.session import UpstreamOptions
from hoopgw.store import POSTGRESQL_SCHEMES, Store, open_store
from hoopgw.store.calls import StoreCalls, StoreReadiness
from hoopgw.store.notices import ChangeListener

log = Logger(namespace="hoopgw.gateway")

TARGET_PROBE_TIMEOUT = 5.0

REVIEW_POLL_INTERVAL = 1.0
"""Seconds between looks at the reviews this instance holds, with a store other instances
decide reviews in (the fallback for a missed change notice)."""
"""Seconds the start-up check of each target waits for a TCP connection."""


class Gateway:
    """All listeners of one config, sharing one audit writer and one session registry."""

    def __init__(self, config: Config, reactor: Any, worker: WorkerLink | None = None) -> None:
        """
        :param worker: what this process inherited as one of ``[gateway] workers`` (listening
            sockets, links to the parent), or None for a gateway of one process.
        """
        self.config = config
        self.reactor = reactor
        self._worker = worker
        self.sessions = SessionRegistry(
            on_added=self._session_added, cancel_limit=CancelLimit(reactor)
        )
        self.agents: AgentHub | None = None
        self.metrics = GatewayMetrics(
            sessions=self.sessions,
            agents_connected=lambda: 0 if self.agents is None else len(self.agents.online),
            audit_pending=lambda: 0 if self.audit is None else self.audit.pending_records,
            login_backoff=self._login_backoff,
        )
        self.sessions.on_cancel = lambda outcome: self.metrics.cancel_requests_total.labels(
            outcome
        ).inc()
        self.metrics.add_ready_check("store", self._store_writable)
        self.metrics.add_ready_check("audit_writer", self._audit_writer_up)
        self.metrics.add_ready_check("listeners", lambda: self._listening)
        self._listening = False
        self._store_url = resolve_store_url(config.gateway.store, base_dir=config.base_dir)
        self._store: Store | None = None
        remote = self._store_url.partition("://")[0] in POSTGRESQL_SCHEMES
        self._shared_store = remote or worker is not None
        """Whether other gateway instances or worker processes use the store."""
        self._notices: ChangeListener | None = None
        # A PostgreSQL store is a network away: its look-ups leave the reactor thread. A SQLite
        # one (shared by workers too) is opened on this thread and may be used on it alone.
        self.store_calls = StoreCalls.threaded(reactor) if remote else StoreCalls.inline()
        self._store_ready = StoreReadiness(self.store_calls, reactor)
        self.audit: AuditWriter | None = None
        self._ports: list[Any] = []
        self.served: dict[str, Served] = {}
        """Each configured connection as it is served, by name (a reload changes them)."""
        self._server_tls: Any = None
        self._reloader = Reloader(self)
        self._control: ControlLink | None = None
        """The link to the parent, in a worker of ``[gateway] workers``."""
        self._stopped = False
        self.authenticator: Authenticator | None = None
        self.approvals: ReviewService | None = None

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Open the store, start the audit writer and listen on every connection.

        Fails (and leaves nothing listening) if any part cannot start.
        """
        self._store = open_store(self._store_url, instance=self.config.gateway.instance)
        self._store.migrate()
        self.store_calls.start()
        self._store_ready.start(self._store)
        self.audit = AuditWriter(self._store_url, self.reactor, spawn=self._writer_spawner())
        self.audit.on_committed = self.metrics.audit_sync_seconds.observe
        yield self.audit.start()
        durability = self.config.gateway.durability
        log.info(
            "audit durability {mode}{detail}",
            mode=durability.mode,
            detail=f", journal synced at most every {durability.sync_interval:g} s"
            if durability.mode == "os"
            else "",
        )
        authenticator = self.authenticator = build_authenticator(
            self.config,
            store=self._store,
            audit=self.audit,
            reactor=self.reactor,
            shared_store=self._shared_store,
            calls=self.store_calls,
        )
        authenticator.failure_observers.append(
            lambda connection, method: self.metrics.login_failures_total.labels(
                connection, method
            ).inc()
        )
        authenticator.start(
            self.sessions, key_check_interval=self.config.identity.key_check_interval
        )
        gw = self.config.gateway
        # Reviews and grants: pending reviews of an earlier run end as aborted here.
        grants = GrantService(
            store=self._store,
            audit=self.audit,
            reactor=self.reactor,
            connections={c.name: c for c in self.config.connections},
            roles=self.config.roles,
            sessions=self.sessions,
            calls=self.store_calls,
        )
        self.approvals = ReviewService(
            store=self._store,
            audit=self.audit,
            reactor=self.reactor,
            grants=grants,
            roles=self.config.roles,
            sessions=self.sessions,
            approval_timeout=gw.approval_timeout,
            instance=gw.instance if self._worker is None else self._worker.instance,
            poll_interval=REVIEW_POLL_INTERVAL if self._shared_store else None,
        )
        authenticator.grants = grants
        yield self.approvals.start()
        if self._store_url.partition("://")[0] in POSTGRESQL_SCHEMES:
            self._notices = ChangeListener(self._store_url, self._store_changed, self.reactor)
            self._notices.start()
        if gw.tls_cert and gw.tls_key:
            self._server_tls = server_tls_options(gw.tls_cert, gw.tls_key)
        if gw.agent_listen is not None:
            self.agents = AgentHub(
                tokens=AgentTokens(self._store),
                store=self._store,
                reactor=self.reactor,
                sessions=self.sessions,
                calls=self.store_calls.call,
            )
        if self._worker is not None:
            self._control = self._worker.connect_control(
                self.reactor,
                self.sessions,
                reload=lambda by: self.reload(by=by),
                metrics=self.metrics,
                digest=lambda: self.config.source_digest,
            )
        try:
            if self.agents is not None and gw.agent_listen is not None:
                assert gw.tls_cert and gw.tls_key  # checked by the config
                agent_tls: Any = server_tls_options(gw.tls_cert, gw.tls_key, alpn=())
                factory = TLSMemoryBIOFactory(agent_tls, False, self.agents.factory())
                self._ports.append((yield self.listen(gw.agent_listen, factory, "agents")))
                self.agents.start()
                log.info("agents connect on {listen} (TLS)", listen=gw.agent_listen)
            for connection in self.config.connections:
                runtime, factory = self.build_connection(connection)
                switch = ListenerSwitch(factory)
                port = yield self.listen(
                    connection.listen, switch, f"connection {connection.name!r}"
                )
                self.served[connection.name] = Served(
                    config=connection, runtime=runtime, port=port, switch=switch
                )
                self.watch_reviews(connection.name, runtime.chain)
                log.info(
                    "connection {connection} ({protocol}) listening on {listen}, target {target}",
                    connection=connection.name,
                    protocol=connection.protocol,
                    listen=connection.listen,
                    target=connection.target,
                )
            if gw.admin_listen is not None and (self._worker is None or self._worker.serves_admin):
                admin_tls = None
                if gw.admin_tls:
                    assert gw.tls_cert and gw.tls_key  # checked by the config
                    admin_tls = server_tls_options(gw.tls_cert, gw.tls_key, alpn=())
                control = SessionControl(
                    sessions=self.sessions,
                    audit=self.audit,
                    roles=self.config.roles,
                    clock=self.reactor,
                    peers=self._control,
                )
                console = None
                if self.config.console is not None:
                    from hoopgw.console import build_console

                    console = build_console(
                        self.config,
                        service=self.approvals,
                        sessions=control,
                        store=self._store,
                        audit=self.audit,
                        groups=authenticator.groups,
                        reactor=self.reactor,
                    )
                site = build_site(
                    self.approvals,
                    authenticator,
                    self.reactor,
                    tls=admin_tls,
                    metrics=self.metrics,
                    metrics_allow=gw.metrics_allow,
                    sessions=control,
                    console=console,
                    reload=lambda by: self.admin_reload(by=by),
                )
                port = yield self.listen(gw.admin_listen, site, "the admin API")
                self._ports.append(port)
                log.info(
                    "admin API listening on {listen} ({scheme})",
                    listen=gw.admin_listen,
                    scheme="https" if gw.admin_tls else "http",
                )
        except BaseException:
            yield self.stop()
            raise
        self._listening = True
        if self._control is not None:
            self._control.started(self.config.source_digest)
        authenticator.connections = {c.name: c for c in self.config.connections}
        for connection in self.config.connections:
            self.check_target(connection)

    def build_connection(
        self, connection: ConnectionConfig, *, keep: Mapping[str, object] | None = None
    ) -> tuple[ConnectionRuntime, Any]:
        """The runtime and protocol factory of one connection (the chain's instances in
        ``keep`` used again). Nothing listens yet and nothing is registered.

        :raises HoopgwError: a plugin refused its options or asks for what the protocol cannot
            enforce (:class:`~hoopgw.errors.ConfigError`), the protocol cannot serve it.
        """
        assert self.authenticator is not None
        runtime = self._runtime(connection, self.authenticator, self._server_tls, keep=keep)
        spec = load_protocol(connection.protocol)
        upstream_options(connection, runtime.chain, spec)
        factory = spec.build_factory(runtime)
        return runtime, factory

    @property
    def serving(self) -> bool:
        """Whether the gateway has started and is not stopping (a reload applies only then)."""
        return self._listening and not self._stopped

    def check_target(self, connection: ConnectionConfig) -> None:
        """Warn (not fatal) when the connection's target or network agent is not there now, or
        when a read-only connection logs in upstream with the privileges to undo read-only."""
        spec = load_protocol(connection.protocol)
        options = upstream_options(connection, self.served[connection.name].runtime.chain, spec)
        if options.read_only and connection.via is None:
            self._check_login(connection, spec, options)
        if connection.via is None:
            self._probe_target(connection)
        elif self.agents is not None:
            self.agents.check_registered(connection.name, connection.via)

    def watch_reviews(self, name: str, chain: PluginChain) -> None:
        """Tell ``chain``'s plugins (``review_updated``) and the metrics of every change of a
        review on the connection ``name`` (a reload hands it to the new chain)."""
        if self.approvals is None:
            return

        def review_changed(review: Any, event: str) -> None:
            self.metrics.review_changed(name, review, event)
            chain.notify("review_updated", review=review, event=event)

        self.approvals.add_notifier(name, review_changed)

    def config_applied(self, config: Config) -> None:
        """A reload applied ``config``: admissions and grants follow it from now on."""
        self.config = config
        connections = {c.name: c for c in config.connections}
        if self.authenticator is not None:
            self.authenticator.connections = connections
        if self.approvals is not None:
            self.approvals.grants.connections = connections

    def reload(self, *, by: str) -> defer.Deferred[dict[str, Any]]:
        """Read the config file again and apply it without dropping the sessions it still
        allows (:mod:`hoopgw.runtime.reload`); per process, so a parent can forward SIGHUP.

        :param by: who asked, for the audit record and the log (``SIGHUP``, an identity).
        :return: fires with what changed, or fails with :class:`~hoopgw.errors.ReloadError`
            (the running config stays whole), whose message is also logged.
        """
        d = defer.maybeDeferred(self._reloader.reload_file, by=by)

        def refused(failure: Failure) -> Failure:
            if failure.check(ReloadError):
                log.error(
                    "config reload (by {by}) refused; the running config stays: {why}",
                    by=by,
                    why=failure.getErrorMessage(),
                )
            else:
                log.failure("config reload (by {by}) failed", failure, by=by)
            return failure

        return d.addErrback(refused)

    def admin_reload(self, *, by: str) -> defer.Deferred[dict[str, Any]]:
        """A reload the admin API asks for: in worker 1, the parent reloads every worker and
        answers with the result (:mod:`hoopgw.runtime.workers`)."""
        if self._control is None:
            return self.reload(by=by)
        return self._control.reload_all(by)

    def _probe_target(self, connection: ConnectionConfig) -> defer.Deferred[None]:
        """Warn (not fatal) when a connection's target does not accept a TCP connection now:
        its sessions will fail until it does."""
        host, port = connection.target_host, connection.target_port
        endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = endpoint_type(self.reactor, host, port, timeout=TARGET_PROBE_TIMEOUT)
        probe: Any = protocol.Factory.forProtocol(protocol.Protocol)
        probe.noisy = False
        connecting = endpoint.connect(probe)

        def reached(connected: Any) -> None:
            connected.transport.loseConnection()

        def unreachable(failure: Failure) -> None:
            log.warn(
                "connection {connection}: its target {target} cannot be reached now ({why});"
                " sessions will fail until it can",
                connection=connection.name,
                target=connection.target,
                why=failure.getErrorMessage(),
            )

        return connecting.addCallbacks(reached, unreachable)

    def listen(self, description: str, factory: Any, what: str) -> defer.Deferred[Any]:
        """Listen on the endpoint ``description``; a failure names ``what`` could not listen."""

        def failed(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, CannotListenError):
                why = error.socketError
                reason = getattr(why, "strerror", None) or str(why)
                raise StartupError(f"{what} cannot listen on {description}: {reason}")
            return failure

        if self._worker is not None:
            assert self._control is not None  # connected before anything listens
            return self._worker.listen(self.reactor, self._control, description, factory, what)
        listening = serverFromString(self.reactor, description).listen(factory)
        return listening.addErrback(failed)

    def _store_changed(self, kind: str, ident: str) -> None:
        """Another instance changed a review, grant or key: act on it now (a notice)."""
        if kind == "review" and self.approvals is not None:
            self.approvals.review_changed(ident)
        elif kind == "grant" and self.approvals is not None:
            self.approvals.grants.grant_changed(ident)
        elif kind in ("key", "ssh_key") and self.authenticator is not None:
            self.authenticator.check_keys_now()

    def _session_added(self, session: Any) -> None:
        config = session.runtime.config
        self.metrics.session_opened(config.name, config.protocol)

    def _login_backoff(self) -> int:
        throttle = None if self.authenticator is None else self.authenticator.throttle
        return 0 if throttle is None else throttle.delayed_hosts()

    def _store_writable(self) -> bool:
        if self.store_calls.threaded_pool:  # a PostgreSQL store: the last look's answer
            return self._store_ready.writable()
        return self._store is not None and self._store.writable()

    def _audit_writer_up(self) -> bool:
        return self.audit is not None and self.audit.running

    def _check_login(
        self, connection: ConnectionConfig, spec: ProtocolSpec, options: UpstreamOptions
    ) -> None:
        """Warn, without delaying the start, when a read-only connection logs in upstream with
        the privileges to undo read-only (a superuser): the server would then be the gateway's
        only safeguard against a statement it misjudged."""
        d = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), login_warnings, connection, spec, options
        )

        def warn(warnings: list[str]) -> None:
            for warning in warnings:
                log.warn("{warning}", warning=warning)

        def failed(failure: Any) -> None:
            log.warn(
                "connection {connection}: could not check the privileges of its upstream login:"
                " {why}",
                connection=connection.name,
                why=failure.getErrorMessage(),
            )

        d.addCallbacks(warn, failed)

    def _writer_spawner(self) -> Any:
        """How to start the writer process: in the configured durability mode, with checkpoint
        signing when a key is configured."""
        if self._worker is not None:
            return self._worker.audit_spawner()  # the parent's one writer process
        gw = self.config.gateway
        settings = None
        if gw.signing_key is not None:
            settings = CheckpointSettings(
                directory=str(self.config.chain_checkpoint_path(gw.instance)),
                every=gw.checkpoint_every,
                interval=gw.checkpoint_interval,
                signing_key=gw.signing_key,
            )
        return functools.partial(
            spawn_writer_process,
            checkpoints=settings,
            durability=gw.durability,
            instance=gw.instance,
            journal=self.config.journal_path,
        )

    def _runtime(
        self,
        connection: ConnectionConfig,
        authenticator: Authenticator,
        server_tls: Any,
        *,
        keep: Mapping[str, object] | None = None,
    ) -> ConnectionRuntime:
        name = connection.name
        info = connection_info(connection)
        upstream = (
            None
            if connection.via is None or self.agents is None
            else self.agents.connector(connection.via)
        )
        chain = build_chain(
            connection,
            reactor=self.reactor,
            approval_timeout=self.config.gateway.approval_timeout,
            audit=self.audit,
            approvals=self.approvals,
            on_decided=self.metrics.verdict_counter(name),
            upstream=upstream,
            keep=keep,
        )
        return ConnectionRuntime(
            config=connection,
            gateway=self.config.gateway,
            info=info,
            chain=chain,
            authenticator=authenticator,
            sessions=self.sessions,
            reactor=self.reactor,
            server_tls=server_tls,
            store=self._store,
            upstream_failed=self.metrics.upstream_errors_total.labels(name).inc,
            upstream=upstream,
        )

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, end every session with a goodbye, then flush and close the store.

        Stopping twice (a failed start, then the reactor's shutdown) does the work once.
        """
        if self._stopped:
            return
        self._stopped = True
        self._listening = False
        ports, self._ports = self._ports, []
        ports += [served.port for served in self.served.values()]
        if self.authenticator is not None:
            self.authenticator.stop()
        if self._notices is not None:
            self._notices.stop()
        yield defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        if self.approvals is not None:
            # Pending reviews end as aborted (their clients get an error) before sessions end.
            yield self.approvals.stop().addErrback(
                lambda f: log.failure("cannot record aborted reviews", f)
            )
        live = list(self.sessions)
        if live:
            log.info("ending {count} session(s)", count=len(live))
        for session in live:
            session.terminate("gateway stopping")
        deadline = self.reactor.seconds() + self.config.gateway.shutdown_grace
        while len(self.sessions) and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        # After the sessions: theirs is the "gateway stopping" goodbye, not the agents' loss.
        if self.agents is not None:
            self.agents.stop()
        if self.audit is not None:
            yield self.audit.stop()
        # The look-ups under way finish (or fail) before their store closes.
        self._store_ready.stop()
        self.store_calls.stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        log.info("gateway stopped")


def run_gateway(config: Config, worker: WorkerLink | None = None) -> int:
    """Run the gateway in the foreground until SIGTERM or SIGINT; return the exit status.

    :param worker: set in a worker process of ``[gateway] workers``.
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    gateway = Gateway(config, reactor, worker)
    status = {"code": 0}

    def failed(failure: Any) -> None:
        if failure.check(HoopgwError):
            # A reason the operator can act on: said plainly, without a traceback.
            log.error("gateway failed to start: {why}", why=failure.getErrorMessage())
        else:
            log.failure("gateway failed to start", failure)
        status["code"] = 1
        reactor.stop()

    def start() -> None:
        d = gateway.start()
        d.addCallback(
            lambda _: log.info(
                "hoopgw ready: {count} connection(s){worker}",
                count=len(config.connections),
                worker="" if worker is None else f" (worker {worker.index})",
            )
        )
        d.addErrback(failed)

    def hang_up(signum: int, frame: Any) -> None:
        # Errors are logged by reload(); the gateway keeps serving either way.
        reactor.callFromThread(lambda: gateway.reload(by="SIGHUP").addErrback(lambda _: None))

    signal.signal(signal.SIGHUP, hang_up)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stop)
    reactor.run()
    return status["code"]
