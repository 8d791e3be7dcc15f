"""TLS through the real gateway: towards clients with a generated certificate, and towards the
target as its ``sslmode`` says."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


@pytest.fixture
def tls_gateway(gateway: Any, tls_files: Any) -> Any:
    """A gateway that insists on client TLS, and a key for ``agent``."""
    running = gateway(
        connection={"client_tls": "required"},
        gateway_options={
            "tls_cert": str(tls_files.server_cert),
            "tls_key": str(tls_files.server_key),
        },
    )
    return running, running.create_key("agent", ["agents"])


def conninfo(running: Any, key: str, database: str, **extra: str) -> str:
    base = f"host={running.host} port={running.port} user=agent password={key} dbname={database}"
    return " ".join([base, *(f"{k}={v}" for k, v in extra.items())])


def test_client_tls_required_accepts_psql_over_tls(
    tls_gateway: Any, pg_database: str, tls_files: Any
) -> None:
    running, key = tls_gateway
    env = {
        **os.environ,
        "PGPASSWORD": key,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(tls_files.ca_cert),
    }
    query = "SELECT count(*) FROM generate_series(1, 20000)"
    out = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-h",
            running.host,
            "-p",
            str(running.port),
            "-U",
            "agent",
            "-d",
            pg_database,
            "-c",
            query,
            "-c",
            "\\conninfo",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("20000\n")
    assert "SSL connection (protocol: TLSv1." in out.stdout


def test_client_tls_required_accepts_psycopg_over_tls(
    tls_gateway: Any, pg_database: str, tls_files: Any
) -> None:
    running, key = tls_gateway
    with psycopg.connect(conninfo(running, key, pg_database, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'over tls'").fetchone() == ("over tls",)
    verified = conninfo(
        running, key, pg_database, sslmode="verify-full", sslrootcert=str(tls_files.ca_cert)
    )
    with psycopg.connect(verified) as conn:
        rows = conn.execute("SELECT g FROM generate_series(1, 20000) g").fetchall()
        assert len(rows) == 20000


def test_client_tls_required_refuses_plain(
    tls_gateway: Any, pg_database: str, wire_client: Any
) -> None:
    running, key = tls_gateway
    with pytest.raises(psycopg.OperationalError, match="this connection requires TLS"):
        psycopg.connect(conninfo(running, key, pg_database, sslmode="disable"))
    client = wire_client(running.host, running.port)
    messages = client.login(user="agent", database=pg_database, password=key)
    # Refused at the startup message: no password was asked for, so none was sent in clear.
    assert [m.type for m in messages] == [b"E"]
    assert client.first_error(messages)["C"] == "28000"


def test_data_pipelined_after_ssl_request_is_refused(tls_gateway: Any, wire_client: Any) -> None:
    """CVE-2021-23214: bytes sent before the TLS handshake must not be read as if inside it."""
    running, _ = tls_gateway
    client = wire_client(running.host, running.port)
    client.send(SSL_REQUEST + b"Q\x00\x00\x00\x0dSELECT 1;\x00")
    messages = client.receive_until(b"E")
    assert client.first_error(messages)["C"] == "08P01"
    assert client.receive() is None


def target_ssl(pg_server: Any) -> bool:
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname="postgres"
    ) as conn:
        row = conn.execute("SHOW ssl").fetchone()
    return row is not None and row[0] == "on"


def backend_ssl(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return bool(row[0])


def test_upstream_prefer_uses_what_the_target_offers(
    gateway: Any, pg_server: Any, pg_database: str
) -> None:
    running = gateway(connection={"client_tls": "disabled", "upstream_tls": {"sslmode": "prefer"}})
    key = running.create_key("agent", ["agents"])
    with psycopg.connect(conninfo(running, key, pg_database, sslmode="disable")) as conn:
        assert backend_ssl(conn) is target_ssl(pg_server)


def test_upstream_require(gateway: Any, pg_server: Any, pg_database: str, wire_client: Any) -> None:
    running = gateway(connection={"client_tls": "disabled", "upstream_tls": {"sslmode": "require"}})
    key = running.create_key("agent", ["agents"])
    if target_ssl(pg_server):
        with psycopg.connect(conninfo(running, key, pg_database, sslmode="disable")) as conn:
            assert backend_ssl(conn)
        return
    client = wire_client(running.host, running.port)
    error = client.first_error(client.login(user="agent", database=pg_database, password=key))
    assert error["C"] == "08001"
    assert error["M"] == "the target does not support TLS (sslmode=require)"
    assert client.receive() is None
    # The next client gets the same clear answer; the gateway is still serving.
    with pytest.raises(psycopg.OperationalError, match="does not support TLS"):
        psycopg.connect(conninfo(running, key, pg_database, sslmode="disable"))


def test_upstream_disable_never_asks(gateway: Any, pg_database: str) -> None:
    running = gateway(connection={"client_tls": "disabled", "upstream_tls": {"sslmode": "disable"}})
    key = running.create_key("agent", ["agents"])
    with psycopg.connect(conninfo(running, key, pg_database, sslmode="disable")) as conn:
        assert not backend_ssl(conn)
