"""What the gateway's upstream login may do beyond what a connection needs.

A read-only connection relies on the server's read-only mode as its last safeguard. A login
that can turn that mode off for good, or ignore it, leaves only the gateway's analysis in the
way of a write it misjudged. ``hoopgw config check --online`` and the gateway's start call
:func:`inspect_login` and warn.

Who can undo read-only, after PostgreSQL's documentation:

- a **superuser** can do anything (``ALTER SYSTEM``, ``ALTER ROLE ... SET`` for anyone, COPY to
  programs, ...);
- a role with **CREATEROLE** can change other roles' defaults and (before PostgreSQL 16, for any
  non-superuser role) make itself a member of roles with more privileges;
- a role granted **ALTER SYSTEM** on ``default_transaction_read_only`` (PostgreSQL 15 and later)
  can change the server-wide default;
- a member of **pg_write_server_files** or **pg_execute_server_program** writes files or runs
  programs on the server (``COPY ... TO``), which a read-only transaction does not prevent.

Every role may ``ALTER ROLE`` itself ``SET`` a default ("ordinary roles can only set defaults
for themselves"), which is why that is no reason to warn: a role's and a database's defaults
rank below the startup parameter the gateway sends, and ``ALTER ROLE`` fails in a read-only
transaction anyway.
"""

from __future__ import annotations

from typing import Any

from hoopgw.connection import ConnectionConfig
from hoopgw.session import UpstreamOptions

__all__ = ["inspect_login"]

REMEDY = (
    "log in as a least-privileged role instead (docs/security.md, 'A least-privileged"
    " upstream login')"
)

_QUERY = """
SELECT current_user, r.rolsuper, r.rolcreaterole,
       CASE WHEN current_setting('server_version_num')::int >= 150000
            THEN has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM')
            ELSE false END,
       ARRAY(SELECT g FROM unnest(ARRAY['pg_write_server_files', 'pg_execute_server_program']) g
             WHERE pg_has_role(current_user, g, 'USAGE'))
FROM pg_roles r WHERE r.rolname = current_user
"""


def inspect_login(connection: ConnectionConfig, options: UpstreamOptions) -> list[str]:
    """Log in with the connection's stored credential; warnings about that login.

    Blocking. :raises Exception: the login failed (psycopg's error says why).
    """
    row = _query(connection)
    if not options.read_only:
        return []
    user, superuser, createrole, alter_system, server_roles = row
    warnings = []
    if superuser:
        warnings.append(
            f"it logs in upstream as {user!r}, a superuser, on a connection whose policy denies"
            " writes: a superuser can turn the server's read-only mode off for good and"
            f" bypasses every privilege check; {REMEDY}"
        )
    else:
        if createrole:
            warnings.append(
                f"it logs in upstream as {user!r}, which has CREATEROLE, on a connection whose"
                " policy denies writes: it can change other roles' defaults and give itself"
                f" their privileges; {REMEDY}"
            )
        if alter_system:
            warnings.append(
                f"it logs in upstream as {user!r}, which may ALTER SYSTEM SET"
                " default_transaction_read_only, on a connection whose policy denies writes;"
                f" {REMEDY}"
            )
        if server_roles:
            warnings.append(
                f"it logs in upstream as {user!r}, a member of {', '.join(server_roles)}, on a"
                " connection whose policy denies writes: it can write files or run programs on"
                f" the server, which a read-only transaction does not prevent; {REMEDY}"
            )
    return warnings


def _query(connection: ConnectionConfig) -> Any:
    import psycopg  # only the checks need a client library

    credential = connection.credential
    tls = connection.upstream_tls
    params: dict[str, Any] = {
        "host": connection.target_host,
        "port": connection.target_port,
        "user": credential.user,
        # The gateway's default database, as for a client that names none.
        "dbname": credential.user,
        "sslmode": tls.sslmode,
        "connect_timeout": 10,
        "application_name": "hoopgw config check",
    }
    if credential.password is not None:
        params["password"] = credential.password.reveal()
    if tls.sslmode == "verify-full" and tls.ca_file:
        params["sslrootcert"] = tls.ca_file
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
        conn = psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True)
    with conn:
        return conn.execute(_QUERY).fetchone()
