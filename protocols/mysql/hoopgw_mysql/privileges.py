"""What the gateway's upstream login may do beyond what a connection needs.

A read-only connection relies on the server's read-only mode (``SET SESSION TRANSACTION READ
ONLY``, which the gateway sends after login) as its last safeguard. A login that can change
global variables (``SET GLOBAL``), or holds every privilege, can undo it for good or work
around it. ``hoopgw config check --online`` and the gateway's start call :func:`inspect_login`
and warn about a login with ``ALL PRIVILEGES``, ``SUPER``, ``SYSTEM_VARIABLES_ADMIN`` (MySQL)
or ``READ_ONLY ADMIN`` (MariaDB) on ``*.*``, granted directly or through a role, and about
``FILE`` (``SELECT ... INTO OUTFILE`` writes server files in a read-only transaction too).
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from hoopgw.connection import ConnectionConfig
from hoopgw.session import UpstreamOptions

__all__ = ["RISKY_PRIVILEGES", "inspect_login", "risky_privileges"]

RISKY_PRIVILEGES = (
    "ALL PRIVILEGES",
    "SUPER",
    "SYSTEM_VARIABLES_ADMIN",
    "READ_ONLY ADMIN",
    "FILE",
)
"""Global privileges that can change global variables, bypass read-only modes or write server
files."""

REMEDY = (
    "log in as a least-privileged user instead (docs/security.md, 'A least-privileged"
    " upstream login')"
)

_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)
_ROLE_GRANT = re.compile(r"^GRANT ((?:`[^`]+`(?:@`[^`]*`)?(?:, )?)+) TO ", re.IGNORECASE)
_MAX_ROLES = 32
_CR_SSL_CONNECTION_ERROR = 2026


def risky_privileges(grants: list[str]) -> set[str]:
    """The :data:`RISKY_PRIVILEGES` among ``SHOW GRANTS`` lines."""
    found = set()
    for line in grants:
        match = _GLOBAL_GRANT.match(line)
        if match:
            held = {p.strip().upper() for p in match.group(1).split(",")}
            found |= held & set(RISKY_PRIVILEGES)
    return found


def inspect_login(connection: ConnectionConfig, options: UpstreamOptions) -> list[str]:
    """Log in with the connection's stored credential; warnings about that login.

    Blocking. :raises Exception: the login failed (PyMySQL's error says why).
    """
    user, grants = _grants(connection)
    if not options.read_only:
        return []
    risky = risky_privileges(grants)
    if not risky:
        return []
    return [
        f"it logs in upstream as {user!r}, which holds {', '.join(sorted(risky))} on *.*, on a"
        " connection whose policy denies writes: it can change global variables (undoing the"
        f" server's read-only mode) or write server files; {REMEDY}"
    ]


def _grants(connection: ConnectionConfig) -> tuple[str, list[str]]:
    import pymysql  # only the checks need a client library

    credential = connection.credential
    tls = connection.upstream_tls
    context = None
    if tls.sslmode != "disable":
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.sslmode != "verify-full":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    params: dict[str, Any] = {
        "host": connection.target_host,
        "port": connection.target_port,
        "user": credential.user,
        "password": credential.password.reveal() if credential.password else "",
        "connect_timeout": 10,
    }
    try:
        conn = pymysql.connect(**params, ssl=context)
    except pymysql.err.OperationalError as exc:
        # sslmode=prefer: TLS when the target offers it, as the gateway's own login does.
        if tls.sslmode != "prefer" or exc.args[0] != _CR_SSL_CONNECTION_ERROR:
            raise
        conn = pymysql.connect(**params)
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        user = str(_first(cursor.fetchone()))
        cursor.execute("SHOW GRANTS")
        lines = [str(_first(row)) for row in cursor.fetchall()]
        # Roles granted to the login (MariaDB and MySQL 8): their global privileges count too.
        seen: set[str] = set()
        queue = _roles(lines)
        while queue and len(seen) < _MAX_ROLES:
            role = queue.pop()
            if role in seen:
                continue
            seen.add(role)
            cursor.execute(f"SHOW GRANTS FOR {role}")
            granted = [str(_first(row)) for row in cursor.fetchall()]
            lines.extend(granted)
            queue.extend(_roles(granted))
    return user, lines


def _roles(lines: list[str]) -> list[str]:
    roles: list[str] = []
    for line in lines:
        if " ON " in line.upper():
            continue
        match = _ROLE_GRANT.match(line)
        if match:
            roles.extend(r.strip() for r in match.group(1).split(", ") if r.strip())
    return roles


def _first(row: Any) -> Any:
    return row[0] if row else ""
