"""One exception type per kind of failure the gateway reports."""


class HoopgwError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(HoopgwError):
    """The configuration is invalid; the message names the key and the connection."""

    def __init__(self, message: str, *, key: str = "", connection: str = "") -> None:
        where = []
        if connection:
            where.append(f"connection {connection!r}")
        if key:
            where.append(f"key {key!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.key = key
        self.connection = connection


class SecretError(ConfigError):
    """A secret reference cannot be resolved. The message never holds the secret itself."""


class StartupError(HoopgwError):
    """The gateway cannot start: a listener cannot bind, the store cannot open. The message
    names the part that failed (the connection, the admin listener) and why."""


class PluginError(HoopgwError):
    """A plugin cannot be loaded or rejected its options."""


class StoreError(HoopgwError):
    """The audit store cannot read or write; commands that need it are refused."""


STORE_UNAVAILABLE = (
    "the gateway's store is unavailable, so no login can be checked; try again later"
)
"""What a client is told when its login cannot be checked because the store fails (a refusal
of the gateway's own, which counts toward no login back-off)."""


class AuthenticationError(HoopgwError):
    """A caller's credential was not accepted. The message is safe to show to the caller."""


class AccessDenied(HoopgwError):
    """An authenticated identity may not use this connection."""


class UpstreamUnavailable(HoopgwError):
    """The gateway cannot open the upstream connection of a connection that reaches its target
    through a network agent (the agent is offline, refused the target, or could not reach
    it). The message names the agent and the target and is safe to show to the client."""
