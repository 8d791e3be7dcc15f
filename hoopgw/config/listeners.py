"""Listen addresses: Twisted server endpoint descriptions parsed without importing Twisted's
endpoint module, and the check that no two listeners of a config bind the same address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from hoopgw.config.tables import Table
from hoopgw.errors import ConfigError

if TYPE_CHECKING:
    from hoopgw.config.gateway import GatewayConfig
    from hoopgw.connection import ConnectionConfig

__all__ = ["Listener", "check_listeners_distinct", "parse_listen"]


@attrs.frozen
class Listener:
    """Where a server endpoint binds, normalised for comparison."""

    kind: str
    """``tcp`` or ``unix``."""
    interface: str
    """Normalised IP address, ``*`` for every interface, or the socket path."""
    port: int


def parse_listen(table: Table, key: str, description: str) -> Listener:
    """Where the endpoint ``description`` (the value of ``key`` in ``table``) binds.

    :raises ConfigError: for a description Twisted would refuse, or an endpoint type the
        gateway does not listen on.
    """
    try:
        kind, where, port = _server_endpoint(description)
    except Exception as exc:
        raise table.error(f"not a valid Twisted server endpoint: {exc}", key) from None
    if kind == "unix":
        return Listener(kind="unix", interface=str(Path(where).resolve()), port=0)
    if kind != "tcp":
        # TLS is negotiated inside the database protocol, with [gateway] tls_cert, not by the
        # endpoint; other endpoint types bind in ways the duplicate check cannot see.
        raise table.error("must be a tcp:, tcp6: or unix: endpoint", key)
    if not 0 <= port <= 65535:
        raise table.error("port must be from 0 to 65535", key)
    interface = where
    if interface in ("", "0.0.0.0", "::"):  # noqa: S104 - normalising, not binding
        interface = "*"
    else:
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            raise table.error(f"interface {interface!r} is not an IP address", key) from None
    return Listener(kind="tcp", interface=interface, port=port)


# -- server endpoint descriptions ------------------------------------------------------------
#
# The endpoint types the gateway listens on (tcp, tcp6, unix) are parsed here exactly as
# Twisted's serverFromString parses them (twisted.internet.endpoints: _tokenize, _parse,
# _parseTCP, _parseUNIX, _TCP6ServerParser), same values and same errors, because importing
# twisted.internet.endpoints loads the TLS stack (pyOpenSSL, cryptography): most of the start-up
# time of a command that reads the config. Any other description goes to Twisted itself.
# tests/hoopgw/config/test_listeners.py compares both on a corpus of descriptions.


def _server_endpoint(description: str) -> tuple[str, str, int]:
    """What the server endpoint ``description`` binds: ``("tcp", interface, port)``,
    ``("unix", path, 0)``, or ``("other", "", 0)`` for a type the gateway does not listen on.

    :raises Exception: whatever Twisted's ``serverFromString`` raises for it.
    """
    args, kw = _strports(description)
    if args[0] == "tcp":
        (port, _), options = _parseTCP(None, *args[1:], **kw)
        return "tcp", options["interface"], port
    if args[0] == "tcp6":
        port, interface = _TCP6ServerParser().parseStreamServer(None, *args[1:], **kw)
        return "tcp", interface, port
    if args[0] == "unix":
        (address, _), _ = _parseUNIX(None, *args[1:], **kw)
        return "unix", address, 0
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    endpoint = endpoints.serverFromString(MemoryReactor(), description)
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return "unix", endpoint._address, 0
    if isinstance(endpoint, endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint):
        return "tcp", endpoint._interface, endpoint._port
    return "other", "", 0


def _strports_tokens(description: str) -> Iterator[tuple[bool, str]]:
    """Twisted's ``_tokenize``: ``(is_operator, text)`` pairs; ``\\`` escapes a character."""
    current = ""
    ops = ":="
    chars = iter(description)
    for char in chars:
        if char in ops:
            yield False, current
            yield True, char
            current = ""
            ops = ":=" if char == ":" else ":"
        elif char == "\\":
            # At the end of the text this raises StopIteration: "generator raised
            # StopIteration", as in Twisted.
            current += next(chars)
        else:
            current += char
    yield False, current


def _strports(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's ``_parse``: the positional and the ``name=value`` parameters."""
    args: list[str] = []
    kw: dict[str, str] = {}

    def add(sofar: tuple[str, ...]) -> None:
        if len(sofar) == 1:
            args.append(sofar[0])
        else:
            sofar[0].encode("ascii")  # Twisted's nativeString: names are ASCII
            kw[sofar[0]] = sofar[1]

    sofar: tuple[str, ...] = ()
    for is_operator, text in _strports_tokens(description):
        if not is_operator:
            sofar += (text,)
        elif text == ":":
            add(sofar)
            sofar = ()
    add(sofar)
    return args, kw


# The three parsers keep Twisted's names and signatures: a wrong parameter gets Twisted's words.
def _parseTCP(
    factory: None, port: str, interface: str = "", backlog: Any = 50
) -> tuple[tuple[int, None], dict[str, Any]]:
    return (int(port), factory), {"interface": interface, "backlog": int(backlog)}


def _parseUNIX(
    factory: None, address: str, mode: str = "666", backlog: Any = 50, lockfile: Any = True
) -> tuple[tuple[str, None], dict[str, Any]]:
    return (
        (address, factory),
        {"mode": int(mode, 8), "backlog": int(backlog), "wantPID": bool(int(lockfile))},
    )


class _TCP6ServerParser:
    def _parseServer(
        self, reactor: None, port: str, backlog: Any = 50, interface: str = "::"
    ) -> tuple[int, str]:
        number = int(port)
        int(backlog)  # checked as Twisted does, though the duplicate check does not need it
        return number, interface

    def parseStreamServer(self, reactor: None, *args: str, **kwargs: str) -> tuple[int, str]:
        return self._parseServer(reactor, *args, **kwargs)


def _clash(a: Listener, b: Listener) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "unix":
        return a.interface == b.interface
    # Port 0 asks the OS for a free port, which never clashes.
    return a.port == b.port != 0 and (
        a.interface == b.interface or "*" in (a.interface, b.interface)
    )


def check_listeners_distinct(
    gateway: GatewayConfig, connections: tuple[ConnectionConfig, ...]
) -> None:
    """Refuse two listeners (connections, the admin API, the agents') that bind the same
    address."""
    bound: list[tuple[str, Listener]] = []
    if gateway.admin_listen is not None:
        admin = parse_listen(Table({}, "gateway.", ""), "admin_listen", gateway.admin_listen)
        bound.append(("[gateway] admin_listen", admin))
    if gateway.agent_listen is not None:
        agents = parse_listen(Table({}, "gateway.", ""), "agent_listen", gateway.agent_listen)
        for owner, other in bound:
            if _clash(agents, other):
                raise ConfigError(
                    f"listens on the same address as {owner}", key="gateway.agent_listen"
                )
        bound.append(("[gateway] agent_listen", agents))
    # With workers the parent and each worker name a listener by its description: two alike
    # (port 0 never clashes) would be one socket, served with one listener's settings.
    described = {gateway.admin_listen: "[gateway] admin_listen"} if gateway.workers > 1 else {}
    for connection in connections:
        table = Table({}, "", connection.name)
        listener = parse_listen(table, "listen", connection.listen)
        for owner, other in bound:
            if _clash(listener, other):
                raise table.error(f"listens on the same address as {owner}", "listen")
        if connection.listen in described:
            raise table.error(
                f"is the same listen description as {described[connection.listen]}: with"
                " workers each listener needs its own",
                "listen",
            )
        if gateway.workers > 1:
            described[connection.listen] = f"connection {connection.name!r}"
        bound.append((f"connection {connection.name!r}", listener))
