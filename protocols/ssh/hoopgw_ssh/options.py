"""The ``[connections.ssh]`` table of an SSH connection (``docs/protocols/ssh.md``): the keys
the SSH protocol declares, and the :class:`SshConfig` the config loader makes of them."""

from __future__ import annotations

import re
from typing import Any

import attrs

from hoopgw.errors import ConfigError
from hoopgw.plugin import Option
from hoopgw.protocol import ProtocolTable

__all__ = ["OPTIONS", "SshConfig", "read_options", "ssh_config"]

_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_ENV_NAME = re.compile(r"[A-Za-z_*?][A-Za-z0-9_*?]*")


@attrs.frozen(kw_only=True)
class SshConfig:
    """The ``[connections.ssh]`` table of an SSH connection."""

    host_key: str
    """Absolute path of the gateway's own host key for this connection; created (Ed25519) on
    the first start when missing."""
    known_hosts: str | None = None
    """Absolute path of an OpenSSH ``known_hosts`` file that must hold the target's host key."""
    host_key_fingerprints: tuple[str, ...] = ()
    """Accepted target host key fingerprints, ``SHA256:...`` as ``ssh-keygen -lf`` prints them."""
    env_allow: tuple[str, ...] = ()
    """Names (``fnmatch`` globs such as ``LC_*``) of environment variables a client may set."""
    allow_sftp: bool = False
    """Serve the ``sftp`` subsystem (its file operations become commands)."""
    allow_port_forwarding: bool = False
    """Open ``direct-tcpip`` channels (``ssh -L``) to the target's side."""
    allow_agent_forwarding: bool = False
    """Pass ``auth-agent-req@openssh.com`` requests on (the agent stays on the client)."""
    allow_x11_forwarding: bool = False
    """Pass ``x11-req`` requests on."""
    judge_shell_lines: bool = False
    """Decide each line typed at an interactive shell as a command (see the docs' limits)."""


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _each(check: Any) -> Any:
    """An :attr:`Option.check` for a list whose every item is a non-empty string that
    ``check`` accepts."""

    def checked(values: list[Any]) -> str | None:
        for item in values:
            if not isinstance(item, str) or not item:
                got = type(item).__name__ if not isinstance(item, str) else "empty string"
                return f"expected list of non-empty str, got an item of {got}"
            problem = check(item)
            if problem:
                return str(problem)
        return None

    return checked


def _fingerprint(value: str) -> str | None:
    if _FINGERPRINT.fullmatch(value.rstrip("=")):
        return None
    return f"{value.rstrip('=')!r} is not a SHA256:... fingerprint (see ssh-keygen -lf)"


def _env_name(value: str) -> str | None:
    return None if _ENV_NAME.fullmatch(value) else f"{value!r} is not a variable name or glob"


_FLAGS = (
    ("allow_sftp", "serve the sftp subsystem"),
    ("allow_port_forwarding", "open direct-tcpip channels (ssh -L) to the target's side"),
    ("allow_agent_forwarding", "pass agent forwarding requests on"),
    ("allow_x11_forwarding", "pass x11-req requests on"),
    ("judge_shell_lines", "decide each line typed at an interactive shell as a command"),
)

OPTIONS: tuple[Option, ...] = (
    Option(
        name="host_key",
        type=str,
        default=None,
        help="the gateway's own host key (created on the first start when missing)",
        check=_non_empty,
    ),
    Option(
        name="known_hosts",
        type=str,
        default=None,
        help="an OpenSSH known_hosts file that must hold the target's host key",
        check=_non_empty,
    ),
    Option(
        name="host_key_fingerprints",
        type=list,
        default=[],
        help="accepted target host key fingerprints (SHA256:...)",
        check=_each(_fingerprint),
    ),
    Option(
        name="env_allow",
        type=list,
        default=[],
        help="environment variables (names or globs) a client may set",
        check=_each(_env_name),
    ),
    *(Option(name=flag, type=bool, default=False, help=text) for flag, text in _FLAGS),
)
"""The keys of ``[connections.ssh]``."""


def read_options(table: ProtocolTable) -> SshConfig:
    """The :class:`SshConfig` of a validated ``[connections.ssh]`` table.

    :raises ConfigError: naming the key when the target's host key cannot be checked or the
        credential has neither a password nor a private key.
    """
    credential = table.credential
    if credential.password is None and credential.private_key is None:
        raise ConfigError(
            "an SSH target needs password or private_key",
            key="credential",
            connection=table.connection,
        )
    values = table.values
    known_hosts = table.readable_file("known_hosts")
    fingerprints = tuple(f.rstrip("=") for f in values["host_key_fingerprints"])
    if known_hosts is None and not fingerprints:
        raise table.error(
            "required (or host_key_fingerprints): the target's host key must be known",
            "known_hosts",
        )
    return SshConfig(
        host_key=table.path(values["host_key"] or f"{table.connection}.ssh_host_ed25519_key"),
        known_hosts=known_hosts,
        host_key_fingerprints=fingerprints,
        env_allow=tuple(values["env_allow"]),
        **{flag: values[flag] for flag, _ in _FLAGS},
    )


def ssh_config(options: Any) -> SshConfig:
    """A connection's :attr:`~hoopgw.connection.ConnectionConfig.protocol_options` as the
    :class:`SshConfig` the loader made of them."""
    if not isinstance(options, SshConfig):
        raise TypeError("not an SSH connection: its protocol_options are not an SshConfig")
    return options
