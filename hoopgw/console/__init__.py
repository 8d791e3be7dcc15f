"""The web console: pages for the people who decide and audit, with single sign-on.

Served on the admin listener under ``/console`` when the config has a ``[console]`` table
(``docs/console.md``). :func:`build_console` puts it together: :mod:`.web` (HTTP, sign-in,
sessions, CSRF, headers), :mod:`.pages` (what each page shows, through the admin API's own
rules), :mod:`.oidc_signin` (OpenID Connect) and, when ``[console.saml]`` is set, the SAML
plugin found through the ``hoopgw.signin`` entry-point group (:mod:`hoopgw.signin`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads

from hoopgw.config.load import Config
from hoopgw.console import oidc_signin, pages
from hoopgw.console.web import Console
from hoopgw.errors import ConfigError
from hoopgw.identity.fetch import JsonFetcher
from hoopgw.store import open_store

__all__ = ["build_console"]


def build_console(
    config: Config,
    *,
    service: Any,
    sessions: Any,
    store: Any,
    audit: Any,
    groups: Any,
    reactor: Any,
) -> Console:
    """The ``/console`` resource for ``config`` (which must have a ``[console]`` table).

    :param service: the gateway's :class:`~hoopgw.approvals.reviews.ReviewService`.
    :param sessions: the gateway's :class:`~hoopgw.admin.sessions.SessionControl`.
    :param store: the gateway's store.
    :param audit: the gateway's audit writer.
    :param groups: the gateway's :class:`~hoopgw.identity.groups.GroupResolver` (people get
        their directory groups at sign-in too).
    """
    settings = config.console
    if settings is None:
        raise ConfigError("no [console] table", key="console")
    console = Console(
        settings,
        roles=config.roles,
        audit=audit,
        clock=reactor,
        groups=groups,
        base_dir=config.base_dir,
        reserved_prefixes=tuple(i.identity_prefix for i in config.identity.oidc),
    )
    issuers = {i.issuer: i for i in config.identity.oidc}
    for login in settings.oidc:
        issuer = issuers[login.issuer]  # checked by the config
        fetcher = JsonFetcher(reactor, ca_file=issuer.ca_file, timeout=issuer.fetch_timeout)
        sign_in = oidc_signin.OidcSignIn(login, issuer, fetcher=fetcher, clock=reactor)
        oidc_signin.install(console, sign_in)
    if settings.saml is not None:
        from hoopgw.signin import load_sign_in

        load_sign_in("saml")(console, settings.saml)

    def background(work: Callable[[Any], Any]) -> defer.Deferred[Any]:
        def run() -> Any:
            # A store belongs to its thread: this work gets one of its own.
            reader = open_store(config.store_url, instance=config.gateway.instance)
            try:
                return work(reader)
            finally:
                reader.close()

        return threads.deferToThread(run)

    def evidence(reader: Any, folder: Path, since: float, until: float | None) -> Any:
        from hoopgw.evidence.model import TimeRange, latest_checkpoint
        from hoopgw.evidence.pack import build_pack

        if config.source_file is None:
            raise ConfigError("the gateway does not know its config file", key="console")
        return build_pack(
            reader,
            config,
            config_file=config.source_file,
            time_range=TimeRange(since=since, until=until),
            folder=folder,
            now=reactor.seconds(),
            latest=latest_checkpoint(config),
            checkpoints=lambda instance: latest_checkpoint(config, instance),
        )

    pages.install(
        console,
        pages.Pages(
            console,
            service=service,
            sessions=sessions,
            store=store,
            audit=audit,
            background=background,
            evidence=evidence,
            clock=reactor,
        ),
    )
    return console
