"""The gateway's login to a real MariaDB: MariaDB's ``client_ed25519`` reached by an auth switch,
``mysql_native_password``, and TLS towards the target verified against its CA (a throwaway
``mariadbd`` with a certificate, since the machine's server has TLS off)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _root(server: Any) -> pymysql.Connection[Any]:
    return pymysql.connect(host=server.host, port=server.port, user="root", autocommit=True)


def _query_through(running: Any, database: str, query: str) -> Any:
    key = running.create_key("agent", ["agents"])
    with (
        pymysql.connect(
            host=running.host, port=running.port, user="agent", password=key, database=database
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(query)
        return cur.fetchall()


def test_login_with_client_ed25519_after_an_auth_switch(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    server = mysql_database.server
    user = f"hgw_ed_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    with _root(server) as admin, admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.plugins WHERE plugin_name = 'ed25519'")
        if not cur.fetchone()[0]:
            cur.execute("INSTALL SONAME 'auth_ed25519'")
        cur.execute(
            f"CREATE USER '{user}'@'%%' IDENTIFIED VIA ed25519 USING PASSWORD(%s)", (password,)
        )
        cur.execute(f"GRANT ALL ON `{mysql_database.name}`.* TO '{user}'@'%'")
    secret = Path(tempfile.mkdtemp()) / "password"
    secret.write_text(password)
    try:
        running = mysql_gateway(
            connection={"credential": {"user": user, "password": f"file:{secret}"}}
        )
        assert _query_through(running, mysql_database.name, "SELECT CURRENT_USER()") == (
            (f"{user}@%",),
        )
    finally:
        with _root(server) as admin, admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        shutil.rmtree(secret.parent)


def test_login_with_native_password(mysql_gateway: Callable[..., Any], mysql_database: Any) -> None:
    running = mysql_gateway()
    rows = _query_through(running, mysql_database.name, "SELECT CURRENT_USER(), DATABASE()")
    assert rows == ((f"{mysql_database.user}@%", mysql_database.name),)


def test_a_wrong_stored_credential_is_reported_without_the_password(
    mysql_gateway: Callable[..., Any], mysql_database: Any, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    running = mysql_gateway(
        connection={"credential": {"user": mysql_database.user, "password": f"file:{wrong}"}}
    )
    key = running.create_key("agent", ["agents"])
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql.connect(host=running.host, port=running.port, user="agent", password=key)
    assert "refused the gateway's login" in str(raised.value)
    assert "not-the-password" not in str(raised.value)


@pytest.fixture
def tls_server(tls_files: Any) -> Iterator[Any]:
    """A throwaway mariadbd with ``tls_files``' certificate."""
    from hoopgw_tests_mysqlserver import start_server, stop_server  # loaded by conftest

    base = Path(tempfile.mkdtemp(prefix="hoopgw-test-my-"))
    base.chmod(0o755)
    certs = base / "certs"
    certs.mkdir()
    for source in (tls_files.ca_cert, tls_files.server_cert, tls_files.server_key):
        shutil.copy(source, certs / source.name)
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("mysql")
        except KeyError:
            owner = None
        if owner is not None:
            for path in (certs, *certs.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
    address, data_dir = start_server(
        base,
        preferred_port=0,
        options=[
            f"--ssl-ca={certs / tls_files.ca_cert.name}",
            f"--ssl-cert={certs / tls_files.server_cert.name}",
            f"--ssl-key={certs / tls_files.server_key.name}",
        ],
    )
    try:
        yield address
    finally:
        stop_server(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def test_upstream_tls_verified_against_the_ca(
    gateway: Callable[..., Any], tls_server: Any, tls_files: Any
) -> None:
    with _root(tls_server) as admin, admin.cursor() as cur:
        cur.execute("CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw' REQUIRE SSL")
        cur.execute("GRANT ALL ON *.* TO 'app'@'%'")
    secret = Path(tempfile.mkdtemp()) / "pw"
    secret.write_text("app-pw")
    connection = {
        "name": "my",
        "protocol": "mysql",
        "target": f"127.0.0.1:{tls_server.port}",
        "credential": {"user": "app", "password": f"file:{secret}"},
        "upstream_tls": {
            "sslmode": "verify-full",
            "ca_file": str(tls_files.ca_cert),
            "server_name": "localhost",
        },
    }
    running = gateway(connection=connection)
    rows = _query_through(running, "mysql", "SHOW SESSION STATUS LIKE 'Ssl_version'")
    assert rows[0][1].startswith("TLS")
    # A CA that did not sign the target's certificate: the login is refused.
    other = running.config_path.parent / "other-ca.pem"
    other.write_bytes(tls_files.server_cert.read_bytes())
    wrong_tls = {**connection["upstream_tls"], "ca_file": str(other)}
    wrong = gateway(connection={**connection, "upstream_tls": wrong_tls})
    key = wrong.create_key("agent", ["agents"])
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=wrong.host, port=wrong.port, user="agent", password=key)
    shutil.rmtree(secret.parent)


def test_a_target_that_is_down_is_named_to_the_mysql_client(
    mysql_gateway: Callable[..., Any], mysql_database: Any
) -> None:
    port = free_port()  # nothing listens there
    running = mysql_gateway(connection={"target": f"127.0.0.1:{port}"})
    key = running.create_key("agent", ["agents"])
    for _ in range(2):  # before and after the gateway learned that the target is down
        answer = subprocess.run(
            [
                "mysql",
                "-h",
                running.host,
                "-P",
                str(running.port),
                "-u",
                "agent",
                f"-p{key}",
                "--skip-ssl",
                "-e",
                "SELECT 1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert answer.returncode != 0
        assert f"127.0.0.1:{port}" in answer.stderr, answer.stderr
        assert "malformed packet" not in answer.stderr
    assert f"127.0.0.1:{port}" in running.stderr_text()
