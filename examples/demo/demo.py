"""``./dev demo``: a gateway that shows what it is for, in front of a sample database.

Seeds a ``hoopgw_demo`` database on the local PostgreSQL (customers with made-up personal
data, and a least-privileged role the gateway logs in as), writes a config under
``.hoopgw-demo/`` (nothing is written inside ``examples/``) with recording, guardrails
(``agent-safe-write``), masking and approval of deletes, creates one key for an agent and one for
an approver, prints three things to try with psql, and runs the gateway in the foreground.
The listening ports are the first free ones from 15432 (PostgreSQL) and 18080 (admin API).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Tests give each run its own names.
DATABASE = os.environ.get("HOOPGW_DEMO_DATABASE", "hoopgw_demo")
ROLE = os.environ.get("HOOPGW_DEMO_ROLE", "hoopgw_demo_app")


def free_port(start: int) -> int:
    """The first port from ``start`` that nothing on 127.0.0.1 listens on."""
    for port in range(start, start + 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"demo: no free port in {start}..{start + 99}")


def seed(host: str, port: int) -> None:
    """Create the demo database, its least-privileged role and the sample rows (again), with
    psql as the local superuser ``postgres``.

    :raises subprocess.CalledProcessError: psql failed (its message went to stderr).
    """

    def psql(database: str, script: str) -> None:
        subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                host,
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                database,
            ],
            input=script,
            text=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    psql(
        "postgres",
        f"""
SELECT 'CREATE ROLE {ROLE} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')
\\gexec
SELECT 'CREATE DATABASE {DATABASE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')
\\gexec
""",
    )
    psql(
        DATABASE,
        (HERE / "seed.sql").read_text()
        + f"GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO {ROLE};\n",
    )


def config(folder: Path, *, listen: int, admin: int, target: str) -> str:
    """The demo's gateway config."""
    return f"""# Written by ./dev demo; see examples/demo/demo.py and docs/configuration.md.
[gateway]
store = "sqlite:///{folder / "hoopgw.db"}"
admin_listen = "tcp:{admin}:interface=127.0.0.1"
approval_timeout = 300

[roles]
approver = ["dba"]

[[connections]]
name = "demo"
protocol = "postgres"
listen = "tcp:{listen}:interface=127.0.0.1"
target = "{target}"
allow_groups = ["agents"]
plugins = ["recording", "guardrails", "masking", "approval"]

[connections.credential]
user = "{ROLE}"    # may read and change customers, nothing else

[connections.guardrails]
preset = "agent-safe-write"    # DDL, DROP, TRUNCATE, privileges... are refused

[[connections.guardrails.rules]]
name = "deletes-need-a-human"
kind = ["DeleteStmt"]
action = "review"

[connections.masking]
entities = ["email", "phone", "credit_card"]
phone_regions = ["US", "GB", "NL"]
styles = {{ credit_card = "partial" }}

[connections.approval]
approvers = ["dba"]
timeout = 300
"""


def key(hoopgw: str, config_path: Path, folder: Path, identity: str, group: str) -> str:
    """The saved key of ``identity``, created once."""
    path = folder / f"{identity}.key"
    if path.exists():
        listed = subprocess.run(
            [hoopgw, "keys", "list", "--json", "-c", str(config_path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key_id = path.read_text().split("_")[1]
        if f'"key_id": "{key_id}"' in listed:
            return path.read_text().strip()
    created = subprocess.run(
        [
            hoopgw,
            "keys",
            "create",
            "--identity",
            identity,
            "--group",
            group,
            "-c",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(created + "\n")
    return created


def main() -> int:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path.cwd()
    host = os.environ.get("HOOPGW_DEMO_PGHOST", "127.0.0.1")
    port = int(os.environ.get("HOOPGW_DEMO_PGPORT", "5432"))
    folder = root / ".hoopgw-demo"
    folder.mkdir(mode=0o700, exist_ok=True)
    hoopgw = str(Path(sys.executable).with_name("hoopgw"))
    try:
        seed(host, port)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"demo: cannot prepare the sample database on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    listen, admin = free_port(15432), free_port(18080)
    config_path = folder / "hoopgw.toml"
    config_path.write_text(config(folder, listen=listen, admin=admin, target=f"{host}:{port}"))
    key(hoopgw, config_path, folder, "demo-agent", "agents")
    key(hoopgw, config_path, folder, "demo-approver", "dba")
    rel = os.path.relpath(folder, Path.cwd())
    print(
        f"""
hoopgw demo: connection "demo" on 127.0.0.1:{listen} in front of {host}:{port}/{DATABASE}
(recording, guardrails agent-safe-write, masking, approval of deletes). In another terminal:

  export PGPASSWORD="$(cat {rel}/demo-agent.key)"
  psql "host=127.0.0.1 port={listen} dbname={DATABASE} user=demo-agent"

Three things to try:
  1. SELECT * FROM customers LIMIT 3;      -- e-mails, phones and cards come back masked
  2. DROP TABLE customers;                 -- refused: agent-safe-write allows no DDL
  3. DELETE FROM customers WHERE id = 8;   -- held for a human; approve it from a third terminal:
       export HOOPGW_URL=http://127.0.0.1:{admin} HOOPGW_TOKEN="$(cat {rel}/demo-approver.key)"
       {os.path.relpath(hoopgw)} reviews list --pending
       {os.path.relpath(hoopgw)} reviews approve ID

Afterwards: {os.path.relpath(hoopgw)} sessions list -c {rel}/hoopgw.toml
""",
        flush=True,
    )
    os.execv(hoopgw, [hoopgw, "run", "-c", str(config_path)])


if __name__ == "__main__":
    sys.exit(main())
