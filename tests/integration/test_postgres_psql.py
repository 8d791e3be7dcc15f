"""psql through the real gateway: its output equals the output of a direct connection."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(8,2));"
    "CREATE INDEX items_name ON items (name);"
    "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 20) g;"
)


def psql(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run psql without reading ~/.psqlrc; output is captured as text."""
    return subprocess.run(
        ["psql", "-X", "-v", "VERBOSITY=default", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def direct_env(pg_server: Any, database: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": pg_server.host,
        "PGPORT": str(pg_server.port),
        "PGUSER": "postgres",
        "PGDATABASE": database,
        "PGSSLMODE": "disable",
    }


@pytest.fixture
def items(recorded_gateway: Any, pg_server: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The environments of psql through the gateway and direct, with table ``items`` made."""
    direct = direct_env(pg_server, recorded_gateway.database)
    made = psql(direct, "-v", "ON_ERROR_STOP=1", "-c", SETUP)
    assert made.returncode == 0, made.stderr
    return recorded_gateway.env(), direct


def test_several_statements_in_one_command_line(items: Any) -> None:
    proxied, direct = items
    command = (
        "UPDATE items SET price = price + 1 WHERE id <= 3;"
        "SELECT id, name, price FROM items WHERE id <= 5 ORDER BY id;"
        "SELECT count(*), sum(price) FROM items"
    )
    through = psql(proxied, "-v", "ON_ERROR_STOP=1", "-c", command)
    assert through.returncode == 0, through.stderr
    # The UPDATE ran once (through the gateway); the direct read must see the same data.
    reread = psql(direct, "-c", command.split(";", 1)[1])
    assert through.stdout.endswith(reread.stdout)
    assert " 1 | item 1 |  2.50" in through.stdout
    assert "20 | 318.00" in through.stdout


@pytest.mark.parametrize("meta", [r"\dt", r"\d items", r"\di", r"\l items"])
def test_meta_commands_equal_direct(items: Any, meta: str) -> None:
    proxied, direct = items
    through = psql(proxied, "-c", meta)
    assert through.returncode == 0, through.stderr
    expected = psql(direct, "-c", meta)
    assert through.stdout == expected.stdout
    assert through.stderr == expected.stderr


def test_copy_to_and_from_a_file(items: Any, tmp_path: Path) -> None:
    proxied, direct = items
    exported = tmp_path / "items.csv"
    out = psql(proxied, "-v", "ON_ERROR_STOP=1", "-c", rf"\copy items TO '{exported}' CSV HEADER")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "COPY 20"
    lines = exported.read_text().splitlines()
    assert lines[0] == "id,name,price"
    assert lines[1:3] == ["1,item 1,1.50", "2,item 2,3.00"]
    assert len(lines) == 21

    script = "CREATE TABLE copied (LIKE items);" + rf"\copy copied FROM '{exported}' CSV HEADER"
    loaded = psql(proxied, "-v", "ON_ERROR_STOP=1", stdin=script.replace(";", ";\n"))
    assert loaded.returncode == 0, loaded.stderr
    assert "COPY 20" in loaded.stdout
    compare = "SELECT count(*) FROM (TABLE items EXCEPT TABLE copied) d"
    assert psql(direct, "-At", "-c", compare).stdout.strip() == "0"
    assert psql(direct, "-At", "-c", "SELECT count(*) FROM copied").stdout.strip() == "20"


def test_error_inside_a_transaction_aborts_it_and_rollback_recovers(items: Any) -> None:
    proxied, direct = items
    script = "\n".join(
        [
            "BEGIN;",
            "DELETE FROM items;",
            "SELECT no_such_column FROM items;",
            "SELECT 1;",
            "ROLLBACK;",
            "SELECT count(*) AS remaining FROM items;",
        ]
    )
    through = psql(proxied, stdin=script)
    expected = psql(direct, stdin=script)
    assert 'column "no_such_column" does not exist' in through.stderr
    assert "current transaction is aborted" in through.stderr
    assert "ROLLBACK" in through.stdout
    assert "remaining \n-----------\n        20" in through.stdout
    assert through.stdout == expected.stdout
    assert through.stderr.replace("<stdin>", "") == expected.stderr.replace("<stdin>", "")
