"""The ``ldap`` group source: an identity's groups from an LDAP directory (OpenLDAP, Active
Directory, FreeIPA, ...), with ldap3.

For each identity it binds as a service account, finds the one user entry whose
``user_filter`` matches the identity's name, then the groups that name that entry as a member
(``group_filter``) and, with ``nested = true``, the groups that name those groups, and so on.
Every value put into a filter is escaped (RFC 4515), so an identity name such as ``*)(uid=*``
matches nothing rather than everything. Answers are cached for ``cache_ttl`` seconds. When the
directory cannot be asked, the lookup fails and so does the login (fail closed), unless
``serve_stale_cache`` allows an expired cached answer to be used instead, up to ``stale_limit``
seconds after the directory gave it.

ldap3 blocks, so every lookup runs in the reactor's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from twisted.internet import defer, threads
from twisted.logger import Logger

from hoopgw.groups import GroupSourceContext, GroupSourceError
from hoopgw.plugin import Option
from hoopgw.session import Identity
from hoopgw.transport import is_loopback

__all__ = ["LdapGroupSource"]

log = Logger(namespace="hoopgw.groups.ldap")

MAX_NESTING = 10
"""Levels of nested groups followed at most."""
MAX_GROUPS = 1000
"""Groups one identity may be found in at most; more is treated as an error."""


class _UnusableAnswer(GroupSourceError):
    """The directory answered, but not in a way that gives a trustworthy set of groups."""


def _url(value: str) -> str | None:
    if not value.startswith(("ldap://", "ldaps://")):
        return "must be an ldap:// or ldaps:// URL"
    return None


def _template(placeholder: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if placeholder not in value:
            return f"must contain {placeholder}"
        if not (value.startswith("(") and value.endswith(")")):
            return "must be an LDAP filter in parentheses"
        return None

    return check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


class LdapGroupSource:
    """Looks up groups in an LDAP directory; see the module docstring."""

    options: ClassVar[tuple[Option, ...]] = (
        Option(
            name="url",
            type=str,
            help="Directory URL, ldap://HOST:PORT or ldaps://HOST:PORT.",
            check=_url,
        ),
        Option(name="bind_dn", type=str, help="DN of the service account the gateway binds as."),
        Option(
            name="bind_password",
            type=str,
            help="Secret reference (env:NAME or file:PATH) of the service account's password.",
        ),
        Option(name="user_base", type=str, help="Base DN under which user entries are found."),
        Option(
            name="user_filter",
            type=str,
            default="(uid={name})",
            help="Filter finding the identity's entry; {name} is the escaped identity name.",
            check=_template("{name}"),
        ),
        Option(name="group_base", type=str, help="Base DN under which group entries are found."),
        Option(
            name="group_filter",
            type=str,
            default="(|(member={dn})(uniqueMember={dn}))",
            help="Filter finding the groups of a member; {dn} is the escaped member DN.",
            check=_template("{dn}"),
        ),
        Option(
            name="group_name_attribute",
            type=str,
            default="cn",
            help="Attribute of a group entry that is its group name in hoopgw.",
        ),
        Option(name="nested", type=bool, default=False, help="Also find groups of groups."),
        Option(
            name="start_tls",
            type=bool,
            default=False,
            help="Upgrade an ldap:// connection with StartTLS before binding.",
        ),
        Option(
            name="ca_file",
            type=str,
            default="",
            help="PEM CA bundle that verifies the directory's certificate (ldaps or StartTLS); "
            "empty: the system's.",
        ),
        Option(
            name="timeout",
            type=(int, float),
            default=5.0,
            check=_positive,
            help="Seconds a connection or search may take.",
        ),
        Option(
            name="cache_ttl",
            type=(int, float),
            default=300.0,
            check=_positive,
            help="Seconds an identity's groups are reused before the directory is asked again.",
        ),
        Option(
            name="serve_stale_cache",
            type=bool,
            default=False,
            help="When the directory is down, use an expired cached answer instead of refusing.",
        ),
        Option(
            name="stale_limit",
            type=(int, float),
            default=3600.0,
            check=_positive,
            help="With serve_stale_cache: the oldest cached answer (seconds since the directory "
            "gave it) that may still be served.",
        ),
    )
    secret_options: ClassVar[tuple[str, ...]] = ("bind_password",)

    @staticmethod
    def check_options(options: Mapping[str, Any], protocol: str) -> tuple[str, str] | None:
        """Refuse a plain ``ldap://`` URL to another host without StartTLS: the bind would send
        the service account's password in clear over the network."""
        url = options["url"]
        host = urlsplit(url).hostname or ""
        if url.startswith("ldap://") and not options["start_tls"] and not is_loopback(host):
            return (
                "start_tls",
                f"{url} is not on loopback: set start_tls = true or use ldaps://, or the "
                "service password travels in clear",
            )
        return None

    def __init__(
        self,
        context: GroupSourceContext,
        *,
        run_in_thread: Callable[..., defer.Deferred[Any]] | None = None,
    ) -> None:
        """
        :param context: options (``bind_password`` resolved to a Secret), reactor.
        :param run_in_thread: runs a blocking call off the reactor thread; tests may run it
            inline.
        """
        self._options = dict(context.options)
        self._clock = context.reactor
        self._run = run_in_thread or self._defer_to_thread
        self._cache: dict[str, tuple[frozenset[str], float]] = {}

    def _defer_to_thread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self._clock, self._clock.getThreadPool(), f, *args)

    def _build_server(self) -> Any:
        o = self._options
        tls = None
        if o["url"].startswith("ldaps://") or o["start_tls"]:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=o["ca_file"] or None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return ldap3.Server(
            o["url"],
            use_ssl=o["url"].startswith("ldaps://"),
            tls=tls,
            connect_timeout=o["timeout"],
            get_info=ldap3.NONE,
        )

    def groups_of(self, identity: Identity) -> defer.Deferred[Iterable[str]]:
        """The groups of ``identity.name`` in the directory (cached for ``cache_ttl``)."""
        now = self._clock.seconds()
        cached = self._cache.get(identity.name)
        if cached is not None and now - cached[1] < self._options["cache_ttl"]:
            return defer.succeed(cached[0])
        d = self._run(self._lookup, identity.name)

        def found(groups: frozenset[str]) -> frozenset[str]:
            self._cache[identity.name] = (groups, self._clock.seconds())
            return groups

        def failed(failure: Any) -> Any:
            if failure.check(_UnusableAnswer):
                return failure
            why = failure.getErrorMessage()
            if (
                cached is not None
                and self._options["serve_stale_cache"]
                and self._clock.seconds() - cached[1] <= self._options["stale_limit"]
            ):
                log.warn(
                    "directory lookup for {name} failed ({why}); serving cached groups",
                    name=identity.name,
                    why=why,
                )
                return cached[0]
            raise GroupSourceError(
                "the directory cannot be reached; try again later",
                reason=f"ldap lookup of {identity.name!r} failed: {why}",
            )

        return d.addCallbacks(found, failed)

    # -- blocking, in a thread -----------------------------------------------------------------

    def _lookup(self, name: str) -> frozenset[str]:
        o = self._options
        password = o["bind_password"]
        connection = ldap3.Connection(
            # A new Server each time: ldap3 remembers an address that failed and skips it for
            # a while, which would outlast the directory coming back.
            self._build_server(),
            user=o["bind_dn"],
            password=password.reveal() if hasattr(password, "reveal") else password,
            # ldap3 packs it into a socket option that takes whole seconds.
            receive_timeout=max(1, math.ceil(o["timeout"])),
            raise_exceptions=True,
            read_only=True,
        )
        try:
            if o["start_tls"] and not o["url"].startswith("ldaps://"):
                connection.open()
                connection.start_tls()
            connection.bind()
            return self._groups(connection, name)
        except LDAPException as exc:
            raise GroupSourceError(
                "directory error", reason=f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            connection.unbind()

    def _groups(self, connection: Any, name: str) -> frozenset[str]:
        o = self._options
        user_filter = o["user_filter"].replace("{name}", escape_filter_chars(name))
        connection.search(o["user_base"], user_filter, attributes=[], size_limit=2)
        users = [e.entry_dn for e in connection.entries]
        if len(users) > 1:
            raise _UnusableAnswer(
                "group lookup failed", reason=f"more than one directory entry matches {name!r}"
            )
        if not users:
            return frozenset()
        groups: set[str] = set()
        seen: set[str] = set()
        members = [users[0]]
        for _ in range(MAX_NESTING if o["nested"] else 1):
            found: list[str] = []
            for member in members:
                group_filter = o["group_filter"].replace("{dn}", escape_filter_chars(member))
                connection.search(
                    o["group_base"], group_filter, attributes=[o["group_name_attribute"]]
                )
                for entry in connection.entries:
                    if entry.entry_dn in seen:
                        continue
                    seen.add(entry.entry_dn)
                    found.append(entry.entry_dn)
                    values = entry[o["group_name_attribute"]].values
                    groups.update(str(v) for v in values[:1])
            if len(seen) > MAX_GROUPS:
                raise _UnusableAnswer(
                    "group lookup failed", reason=f"{name!r} is in more than {MAX_GROUPS} groups"
                )
            if not found:
                break
            members = found
        return frozenset(groups)

    def close(self) -> None:
        """Forget the cache (connections are opened per lookup)."""
        self._cache.clear()
