"""The agent's own config file (``hoopgw agent -c agent.toml``): where the gateway is, how to
check its certificate, the agent's token, and the allow-list.

::

    [agent]
    gateway = "gateway.example.com:8443"   # the gateway's agent_listen
    token = "env:HOOPGW_AGENT_TOKEN"       # or file:agent.token (from hoopgw agents create)
    ca_file = "gateway-ca.pem"             # the CA that signed the gateway's certificate...
    # pin = "sha256:4F:2A:..."             # ...or the SHA-256 of the certificate itself
    allow = ["db.internal:5432", "10.0.1.0/24:3306"]

Errors name the key, as the gateway's config errors do.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from hoopgw.agent.allowlist import AllowList
from hoopgw.errors import ConfigError
from hoopgw.runtime.logs import FORMATS, LEVELS
from hoopgw.secrets import Secret, resolve_secret

__all__ = ["AgentConfig", "load_agent_config", "parse_agent_config"]

_PIN = re.compile(r"(?i)sha256:((?:[0-9a-f]{2}:?){31}[0-9a-f]{2})")


@attrs.frozen(kw_only=True)
class AgentConfig:
    """The validated ``[agent]`` table."""

    gateway_host: str
    """Host name or address of the gateway's agent listener."""
    gateway_port: int
    """Its port."""
    token: Secret
    """The agent's token (``hoopgw agents create``)."""
    allow: AllowList
    """Targets the agent opens streams to; nothing else."""
    ca_file: str | None = None
    """Absolute path of the PEM CA certificate the gateway's certificate must chain to."""
    pin: bytes | None = None
    """SHA-256 of the gateway's certificate (DER), when pinned instead of a CA."""
    server_name: str
    """The name the gateway's certificate must carry (with :attr:`ca_file`)."""
    connect_timeout: float = 10.0
    """Seconds a TCP connection (to the gateway or a target) may take."""
    silence_limit: float = 30.0
    """Seconds without a byte from the gateway (it pings every 10 s) before the agent drops
    the connection and dials again."""
    backoff_max: float = 30.0
    """Longest wait, in seconds, between two attempts to reach the gateway."""
    log_format: str = "text"
    """``text`` or ``json``."""
    log_level: str = "info"
    """``debug``, ``info``, ``warn`` or ``error``."""


_KEYS = {
    "gateway",
    "token",
    "allow",
    "ca_file",
    "pin",
    "server_name",
    "connect_timeout",
    "silence_limit",
    "backoff_max",
    "log_format",
    "log_level",
}


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate the agent config at ``path`` (relative paths start at its folder).

    :raises ConfigError: naming the key and what is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return parse_agent_config(text, base_dir=path.resolve().parent)


def _error(message: str, key: str) -> ConfigError:
    return ConfigError(message, key=f"agent.{key}")


def _get(table: dict[str, Any], key: str, types: tuple[type, ...], default: Any) -> Any:
    if key not in table:
        if default is ConfigError:
            raise _error("required", key)
        return default
    value = table[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise _error(f"expected {names}, got {type(value).__name__}", key)
    return value


def _seconds(table: dict[str, Any], key: str, default: float) -> float:
    value = float(_get(table, key, (int, float), default))
    if not 0 < value < math.inf:
        raise _error("must be a finite number greater than 0", key)
    return value


def parse_agent_config(text: str, *, base_dir: Path) -> AgentConfig:
    """Validate TOML ``text`` as an agent config.

    :raises ConfigError: naming the key and what is wrong.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    for key in document:
        if key != "agent":
            raise ConfigError("unknown table (known: agent)", key=key)
    table = document.get("agent")
    if not isinstance(table, dict):
        raise ConfigError("required: the [agent] table", key="agent")
    for key in table:
        if key not in _KEYS:
            raise _error(f"unknown key (known: {', '.join(sorted(_KEYS))})", key)
    gateway = _get(table, "gateway", (str,), ConfigError)
    host, _, port = gateway.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _error(f"{gateway!r} must be HOST:PORT, such as gateway.example.com:8443", "gateway")
    token = resolve_secret(
        _get(table, "token", (str,), ConfigError), key="agent.token", base_dir=base_dir
    )
    raw_allow = _get(table, "allow", (list,), ConfigError)
    if not raw_allow:
        raise _error(
            "must name at least one target (HOST:PORT): an empty allow-list allows nothing", "allow"
        )
    if not all(isinstance(entry, str) for entry in raw_allow):
        raise _error("expected a list of HOST:PORT strings", "allow")
    try:
        allow = AllowList.parse(raw_allow)
    except ValueError as exc:
        raise _error(str(exc), "allow") from None
    ca_file = _get(table, "ca_file", (str,), None)
    pin_text = _get(table, "pin", (str,), None)
    if (ca_file is None) == (pin_text is None):
        raise _error(
            "set exactly one of ca_file (the CA of the gateway's certificate) and pin (its"
            " SHA-256): the agent sends its token only to a gateway it has verified",
            "ca_file",
        )
    pin = None
    if pin_text is not None:
        match = _PIN.fullmatch(pin_text.strip())
        if match is None:
            raise _error(
                "must be sha256: and 32 bytes in hex, as `openssl x509 -noout -fingerprint"
                " -sha256` prints them",
                "pin",
            )
        pin = bytes.fromhex(match.group(1).replace(":", ""))
    if ca_file is not None:
        resolved = base_dir / Path(ca_file).expanduser()
        if not resolved.is_file():
            raise _error(f"{str(resolved)!r} is not a readable file", "ca_file")
        ca_file = str(resolved.resolve())
    server_name = _get(table, "server_name", (str,), host)
    return AgentConfig(
        gateway_host=host,
        gateway_port=int(port),
        token=token,
        allow=allow,
        ca_file=ca_file,
        pin=pin,
        server_name=server_name,
        connect_timeout=_seconds(table, "connect_timeout", 10.0),
        silence_limit=_seconds(table, "silence_limit", 30.0),
        backoff_max=_seconds(table, "backoff_max", 30.0),
        log_format=_choice(table, "log_format", FORMATS, "text"),
        log_level=_choice(table, "log_level", LEVELS, "info"),
    )


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value: str = _get(table, key, (str,), default)
    if value not in choices:
        raise _error(f"must be one of {', '.join(choices)}", key)
    return value
