"""The agent's allow-list: the only targets it opens TCP streams to.

The list lives in the agent's own config, so a gateway (even a compromised one) cannot make the
agent reach anything else. Each entry is ``HOST:PORT``:

- ``HOST`` is a DNS name (``db.internal``, matched without regard to case), a wildcard name
  (``*.db.internal``: any name ending in ``.db.internal``), an IP address (``10.0.0.5``,
  ``[fd00::5]``) or an IP network (``10.0.0.0/24``, ``[fd00::/64]``). A name entry matches only a
  requested name and an address entry only a requested address: the agent never resolves a
  name to judge it, so what it allows is exactly what is written. An unspecified address
  (``0.0.0.0``, ``::``, which reach the agent's own host) or an IPv4-mapped one
  (``::ffff:10.0.0.5``) is never allowed.
- ``PORT`` is a number, a range (``5432-5439``) or ``*``.

An entry that would match every host (``*``, ``0.0.0.0/0``, ``::/0``) is refused: the agent
must never become an open proxy.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import attrs

__all__ = ["AllowList", "AllowRule", "parse_rule"]

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_MAX_NAME = 253

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen(kw_only=True)
class AllowRule:
    """One allow-list entry, parsed."""

    text: str
    """The entry as written (for logs and errors)."""
    name: str | None = None
    """A DNS name, lower case; with :attr:`wildcard`, the suffix after ``*.``."""
    wildcard: bool = False
    """Whether :attr:`name` is a suffix (``*.name``)."""
    network: IPNetwork | None = None
    """An address (as a /32 or /128 network) or a network."""
    ports: tuple[int, int] = (1, 65535)
    """The first and last port allowed."""

    def permits(self, host: str, port: int) -> bool:
        """Whether this entry allows a stream to ``host:port`` (``host`` normalised as by
        :func:`normalise_host`)."""
        if not self.ports[0] <= port <= self.ports[1]:
            return False
        address = _address(host)
        if address is not None:
            return self.network is not None and address in self.network
        if self.name is None:
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def normalise_host(host: str) -> str:
    """``host`` as the allow-list compares it: lower case, without a final dot or brackets.

    :raises ValueError: if it is neither an IP address nor a valid DNS name.
    """
    host = host.strip("[]") if host.startswith("[") else host
    host = host.lower().removesuffix(".")
    if "%" in host:
        # fe80::1%eth0: the scope picks an interface the entry does not name.
        raise ValueError(f"{host!r} has a scope (an interface); scoped addresses are not allowed")
    address = _address(host)
    if address is not None:
        if address.is_unspecified or getattr(address, "ipv4_mapped", None) is not None:
            # 0.0.0.0 and :: reach this host; ::ffff:10.0.0.5 reaches 10.0.0.5: neither is
            # where an IPv6 entry that happens to cover it (::/80, say) says.
            raise ValueError(f"{host!r} is an unspecified or IPv4-mapped address")
        return str(address)
    if len(host) > _MAX_NAME or not _NAME.fullmatch(host):
        raise ValueError(f"{host!r} is neither an IP address nor a DNS name")
    if _legacy_address(host):
        # 127.1, 0x7f.0.0.1, 2130706433, 010.0.0.1: the resolver reads these as addresses
        # (inet_aton) although they are not written as one; a name rule must never match them.
        raise ValueError(f"{host!r} is an address in a legacy form: write it as {_dotted(host)}")
    return host


def _legacy_address(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _dotted(host: str) -> str:
    return socket.inet_ntoa(socket.inet_aton(host))


def _split(entry: str) -> tuple[str, str]:
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("an IPv6 entry must look like [fd00::5]:5432 or [fd00::/64]:5432")
        return host, rest[1:]
    host, colon, port = entry.rpartition(":")
    if not colon or not host:
        raise ValueError("expected HOST:PORT, such as db.internal:5432 or 10.0.0.0/24:3306")
    if ":" in host:
        raise ValueError("an IPv6 address must be written in brackets, e.g. [fd00::5]:5432")
    return host, port


def _ports(text: str) -> tuple[int, int]:
    if text == "*":
        return (1, 65535)
    first, dash, last = text.partition("-")
    bounds = (first, last) if dash else (first, first)
    if not all(b.isascii() and b.isdigit() for b in bounds):
        raise ValueError(f"port {text!r} must be a number, a range such as 5432-5439, or *")
    low, high = int(bounds[0]), int(bounds[1])
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port {text!r} must be within 1-65535, the first not above the last")
    return (low, high)


def parse_rule(entry: str) -> AllowRule:
    """Parse one ``HOST:PORT`` entry.

    :raises ValueError: saying what is wrong with it (an entry matching every host included).
    """
    host, port_text = _split(entry.strip())
    ports = _ports(port_text)
    if host == "*" or (host.startswith("*") and not host.startswith("*.")):
        raise ValueError(
            "a host of * would let the gateway reach any host through the agent: name the"
            " targets (db.internal, *.db.internal, 10.0.0.0/24)"
        )
    if "/" in host:
        try:
            network: IPNetwork = ipaddress.ip_network(host, strict=True)
        except ValueError as exc:
            raise ValueError(f"{host!r} is not an IP network: {exc}") from None
        if network.prefixlen == 0:
            raise ValueError(
                f"{host} matches every address: the agent must not be an open proxy; name the"
                " targets' networks"
            )
        return AllowRule(text=entry, network=network, ports=ports)
    address = _address(host)
    if address is not None:
        return AllowRule(text=entry, network=ipaddress.ip_network(address), ports=ports)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    try:
        name = normalise_host(name)
    except ValueError:
        raise ValueError(f"{host!r} is not a DNS name, address or network") from None
    return AllowRule(text=entry, name=name, wildcard=wildcard, ports=ports)


@attrs.frozen
class AllowList:
    """The agent's allow-list; empty allows nothing."""

    rules: tuple[AllowRule, ...]

    @classmethod
    def parse(cls, entries: list[str] | tuple[str, ...]) -> AllowList:
        """Parse every entry.

        :raises ValueError: naming the first bad entry (by position and text) and why.
        """
        rules = []
        for index, entry in enumerate(entries):
            try:
                rules.append(parse_rule(entry))
            except ValueError as exc:
                raise ValueError(f"entry {index + 1} ({entry!r}): {exc}") from None
        return cls(tuple(rules))

    def permits(self, host: str, port: int) -> bool:
        """Whether some entry allows ``host:port``; a malformed host is never allowed."""
        try:
            host = normalise_host(host)
        except ValueError:
            return False
        return any(rule.permits(host, port) for rule in self.rules)
