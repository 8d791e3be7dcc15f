"""The connections an MCP caller may name, and the calls that go through the gateway for it.

The connections file (``hoopgw mcp -c FILE``) is the caller's view of the gateway: one
``[[connections]]`` table per connection with the keys the gateway's own config uses (``name``,
``protocol``, ``listen``, ``access``, ``allow_groups``) plus the client-side ones below. Other
keys are ignored, so the gateway's config file itself can serve -- but it never needs to hold,
and this module never reads, a target credential.

- ``address``: ``host:port`` of the gateway's listener (default: from ``listen``, loopback
  when it binds every interface);
- ``database``: the database a ``query`` uses when the call names none;
- ``sslmode``, ``sslrootcert``: PostgreSQL client TLS to the gateway (libpq's meaning);
- ``ssl_ca``: MySQL: the CA file; TLS to the gateway is required when set;
- ``known_hosts``: SSH: a known_hosts file holding the *gateway's* host key (required: a
  connection without one is refused, fail closed).

Every call logs in as the caller: the user name is the identity, the password is the token
(what ``docs/identity.md`` asks of a database client); over SSH the token answers the password
prompt, or ``HOOPGW_SSH_KEY`` names the caller's registered private key. What the gateway
refuses comes back as :class:`Refused` with the gateway's own words.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from hoopgw.config.listeners import parse_listen
from hoopgw.config.tables import Table
from hoopgw.errors import ConfigError, HoopgwError

SQL_PROTOCOLS = ("postgres", "mysql")
"""Protocols reached with the ``query`` tool."""
SHELL_PROTOCOLS = ("ssh",)
"""Protocols reached with the ``exec`` tool."""
MAX_ROWS = 1000
"""Rows a ``query`` returns at most; the answer says when it cut the rest."""
CONNECT_TIMEOUT = 10
"""Seconds to reach and log in to the gateway."""
CALL_TIMEOUT = 3600.0
"""Seconds an ``exec`` may take in all, a wait for approval included (the gateway's own
``approval_timeout`` ends a wait sooner)."""
SSH = "ssh"
"""OpenSSH's client, found on ``PATH``."""
SSH_REFUSED = 126
"""Exit status of an ``exec`` the gateway refused (``docs/protocols/ssh.md``)."""
SSH_FAILED = 255
"""Exit status of ``ssh`` when the connection or login failed."""


class Refused(HoopgwError):
    """The gateway refused the call, or could not be reached; the message says why, in the
    gateway's words where it gave any."""


@attrs.frozen(kw_only=True)
class Target:
    """One connection of the gateway, as a client sees it."""

    name: str
    """The connection's name in the gateway's config."""
    protocol: str
    """``postgres``, ``mysql`` or ``ssh``."""
    host: str
    """The gateway's listener address."""
    port: int
    """The gateway's listener port."""
    access: str = "groups"
    """``groups``, or ``jit`` when a session needs a live just-in-time grant."""
    allow_groups: tuple[str, ...] = ()
    """Groups the gateway admits (informative: the gateway decides)."""
    database: str = ""
    """Default database of a ``query``."""
    options: Mapping[str, str] = attrs.field(factory=dict)
    """Client-side TLS and host key settings (``sslmode``, ``sslrootcert``, ``ssl_ca``,
    ``known_hosts``)."""

    @property
    def tool(self) -> str:
        """The MCP tool that reaches this connection."""
        return "query" if self.protocol in SQL_PROTOCOLS else "exec"


def load_targets(path: str | Path) -> dict[str, Target]:
    """Read the connections file at ``path``; return its connections by name.

    :raises ConfigError: unreadable file, or as :func:`parse_targets`.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read connections file {str(path)!r}: {exc}") from None
    return parse_targets(text, base_dir=path.resolve().parent)


def parse_targets(text: str, *, base_dir: Path) -> dict[str, Target]:
    """Parse a connections file's TOML ``text`` (relative paths start at ``base_dir``).

    :raises ConfigError: not TOML, or a connection that lacks a key or has an unusable value
        (the message names the connection and the key).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    tables = document.get("connections", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("must be an array of tables ([[connections]])", key="connections")
    targets: dict[str, Target] = {}
    for table in tables:
        target = _target(table, base_dir)
        if target.name in targets:
            raise ConfigError("duplicate connection name", key="name", connection=target.name)
        targets[target.name] = target
    return targets


def _target(table: Mapping[str, Any], base_dir: Path) -> Target:
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("every connection needs a name", key="name")

    def text(key: str, default: str = "") -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise ConfigError("must be a string", key=key, connection=name)
        return value

    protocol = text("protocol")
    if protocol not in (*SQL_PROTOCOLS, *SHELL_PROTOCOLS):
        allowed = ", ".join((*SQL_PROTOCOLS, *SHELL_PROTOCOLS))
        raise ConfigError(
            f"unknown protocol {protocol!r}: use {allowed}", key="protocol", connection=name
        )
    host, port = _address(text("address"), text("listen"), name)
    options = {
        k: text(k) for k in ("sslmode", "sslrootcert", "ssl_ca", "known_hosts") if k in table
    }
    for key in ("sslrootcert", "ssl_ca", "known_hosts"):
        if key in options:
            options[key] = str(base_dir / options[key])
    if protocol == "ssh" and "known_hosts" not in options:
        raise ConfigError(
            "an ssh connection needs known_hosts: a file with the gateway's host key"
            " (hoopgw config check shows it)",
            key="known_hosts",
            connection=name,
        )
    groups = table.get("allow_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ConfigError("must be a list of strings", key="allow_groups", connection=name)
    return Target(
        name=name,
        protocol=protocol,
        host=host,
        port=port,
        access=text("access", "groups"),
        allow_groups=tuple(groups),
        database=text("database"),
        options=options,
    )


def _address(address: str, listen: str, name: str) -> tuple[str, int]:
    if address:
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            return host.strip("[]"), int(port)
        raise ConfigError(f"{address!r} is not host:port", key="address", connection=name)
    if not listen:
        raise ConfigError(
            "give address = 'host:port' or the gateway's listen", key="address", connection=name
        )
    # The gateway's own reading of an endpoint string (Twisted's syntax, escapes and all).
    listener = parse_listen(Table({}, "", name), "listen", listen)
    if listener.kind != "tcp":
        raise ConfigError(
            "give address = 'host:port' (listen is not a tcp: endpoint)",
            key="address",
            connection=name,
        )
    # A listener on every interface is reached on loopback.
    return ("127.0.0.1" if listener.interface == "*" else listener.interface), listener.port


@attrs.frozen(kw_only=True)
class Caller:
    """Who a call runs as: the identity and the token it logs in with."""

    identity: str
    """The token's identity (the user name database logins must give)."""
    token: str = attrs.field(repr=False)
    """The caller's API key or OIDC token; never logged, never in a tool argument."""


def run_query(
    target: Target,
    caller: Caller,
    sql: str,
    database: str = "",
    on_notice: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``sql`` on ``target`` through the gateway as ``caller``; return what the gateway
    returned (masked where masking is on): ``columns``, ``rows`` (at most :data:`MAX_ROWS`),
    ``truncated``, ``row_count``, ``status`` and, for PostgreSQL, any ``notices``.

    Blocks while the gateway holds the statement for approval; ``on_notice`` is called with
    each PostgreSQL notice as it arrives (the gateway's "held for review ..." among them).

    :raises Refused: the gateway refused the login or the statement, or the target failed it.
    """
    database = database or target.database
    if target.protocol == "postgres":
        return _postgres(target, caller, sql, database, on_notice)
    if target.protocol == "mysql":
        return _mysql(target, caller, sql, database)
    raise Refused(f"connection {target.name!r} is {target.protocol}: use the exec tool")


def _postgres(
    target: Target,
    caller: Caller,
    sql: str,
    database: str,
    on_notice: Callable[[str], None] | None,
) -> dict[str, Any]:
    import psycopg

    params: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "user": caller.identity,
        "password": caller.token,
        "dbname": database or caller.identity,
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "hoopgw-mcp",
        **target.options,
    }
    params.pop("known_hosts", None)
    params.pop("ssl_ca", None)
    notices: list[str] = []
    try:
        with psycopg.connect(autocommit=True, **params) as conn, conn.cursor() as cursor:
            # The gateway's notices (a hold's "waiting for review ...", say) and the target's.
            def noticed(diag: Any) -> None:
                notices.append(str(diag.message_primary))
                if on_notice is not None:
                    on_notice(notices[-1])

            conn.add_notice_handler(noticed)
            cursor.execute(sql.encode())
            columns = [c.name for c in cursor.description or ()]
            rows = cursor.fetchmany(MAX_ROWS + 1) if cursor.description else []
            answer = _answer(columns, rows, cursor.rowcount, cursor.statusmessage or "")
            return {**answer, **({"notices": notices} if notices else {})}
    except psycopg.Error as exc:
        raise Refused(_postgres_error(exc)) from None


def _postgres_error(exc: Any) -> str:
    diag = exc.diag
    if diag.sqlstate is None:  # no ErrorResponse: the connection failed
        return f"cannot reach or log in to the gateway: {str(exc).strip()}"
    lines = [f"{diag.severity or 'ERROR'} {diag.sqlstate}: {diag.message_primary}"]
    lines += [f"DETAIL: {diag.message_detail}"] if diag.message_detail else []
    lines += [f"HINT: {diag.message_hint}"] if diag.message_hint else []
    return "\n".join(lines)


def _mysql(target: Target, caller: Caller, sql: str, database: str) -> dict[str, Any]:
    import pymysql

    ssl = {"ca": target.options["ssl_ca"]} if "ssl_ca" in target.options else None
    try:
        with (
            pymysql.connect(
                host=target.host,
                port=target.port,
                user=caller.identity,
                password=caller.token,
                database=database or None,
                connect_timeout=CONNECT_TIMEOUT,
                autocommit=True,
                ssl=ssl,
                ssl_verify_cert=ssl is not None,
                ssl_verify_identity=ssl is not None,
            ) as conn,
            conn.cursor() as cursor,
        ):
            count = cursor.execute(sql)
            columns = [c[0] for c in cursor.description or ()]
            rows = list(cursor.fetchmany(MAX_ROWS + 1)) if cursor.description else []
            return _answer(columns, rows, count, "")
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else 0
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        if code in (2003, 2013):  # CR_CONN_HOST_ERROR, CR_SERVER_LOST: no answer to show
            raise Refused(f"cannot reach or log in to the gateway: {message}") from None
        raise Refused(f"ERROR {code}: {message}") from None


def _answer(columns: list[str], rows: list[Any], count: int, status: str) -> dict[str, Any]:
    return {
        "columns": columns,
        "rows": [[_json_value(v) for v in row] for row in rows[:MAX_ROWS]],
        "truncated": len(rows) > MAX_ROWS,
        "row_count": count,
        "status": status,
    }


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def run_exec(target: Target, caller: Caller, command: str) -> dict[str, Any]:
    """Run ``command`` on ``target``'s host through the gateway as ``caller`` with OpenSSH's
    ``ssh``; return ``exit_status``, ``stdout`` and ``stderr`` (masked where masking is on).

    The gateway's host key is checked against the connection's ``known_hosts``. The caller
    logs in with ``HOOPGW_SSH_KEY`` (a registered private key file) when set, else with the
    token at the password prompt. Blocks while the gateway holds the command for approval.

    :raises Refused: the gateway refused the login or the command (exit status 126 and its
        ``hoopgw refused the command: ...`` line on stderr), or ``ssh`` failed to connect.
    """
    if target.protocol not in SHELL_PROTOCOLS:
        raise Refused(f"connection {target.name!r} is {target.protocol}: use the query tool")
    options = [
        "-F",
        "/dev/null",
        "-p",
        str(target.port),
        "-o",
        f"UserKnownHostsFile={target.options['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o",
        "LogLevel=ERROR",
    ]
    key = os.environ.get("HOOPGW_SSH_KEY", "")
    env = {k: v for k, v in os.environ.items() if k not in ("HOOPGW_TOKEN", "SSH_AUTH_SOCK")}
    with tempfile.TemporaryDirectory(prefix="hoopgw-mcp-") as folder:
        if key:
            options += ["-i", key, "-o", "PreferredAuthentications=publickey"]
            options += ["-o", "BatchMode=yes"]
        else:
            # The token reaches ssh's prompt through an askpass program that reads it from its
            # own environment, so it is on no command line and in no file.
            askpass = Path(folder) / "askpass"
            askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$HOOPGW_MCP_SSH_TOKEN"\n')
            askpass.chmod(0o700)
            env.update(
                SSH_ASKPASS=str(askpass),
                SSH_ASKPASS_REQUIRE="force",
                DISPLAY=env.get("DISPLAY", ":0"),
                HOOPGW_MCP_SSH_TOKEN=caller.token,
            )
            options += ["-o", "PreferredAuthentications=password,keyboard-interactive"]
            options += ["-o", "NumberOfPasswordPrompts=1"]
        try:
            done = subprocess.run(  # noqa: S603 -- fixed program, the command is one argument
                [SSH, *options, "-l", caller.identity, "--", target.host, command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=CALL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Refused(f"cannot run {SSH}: {exc}") from None
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    # 126 alone could be the host's "cannot execute"; the gateway's refusal names itself.
    if done.returncode == SSH_FAILED or (done.returncode == SSH_REFUSED and "hoopgw" in stderr):
        raise Refused(stderr.strip() or f"ssh exited with status {done.returncode}")
    return {"exit_status": done.returncode, "stdout": stdout, "stderr": stderr}


def describe(targets: Mapping[str, Target], groups: set[str] | None) -> list[dict[str, Any]]:
    """The connections as ``list_connections`` shows them; with the caller's ``groups`` known,
    each says whether the gateway admits the caller by group or needs a grant first."""
    listed = []
    for target in targets.values():
        entry: dict[str, Any] = {
            "name": target.name,
            "protocol": target.protocol,
            "tool": target.tool,
            "access": target.access,
        }
        if target.database:
            entry["database"] = target.database
        if groups is not None and target.allow_groups:
            entry["allowed_by_group"] = bool(groups & set(target.allow_groups))
        if target.access == "jit":
            entry["note"] = "needs a live grant: call request_access, then wait for approval"
        listed.append(entry)
    return listed
