"""The gateway's own login to the target over real TLS: a private cluster with ``ssl=on``, a
certificate from a throwaway CA, ``hostssl`` SCRAM and MD5 roles, and plaintext refused by hba.

The machine's usual test server runs with ``ssl=off``, so these tests start their own cluster
(one per module) and point the ``gateway`` fixture at it by overriding ``pg_server``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.integration

SCRAM_ROLE = "hgw_scram"
MD5_ROLE = "hgw_md5"
PASSWORD_VARIABLE = "HOOPGW_TEST_UPSTREAM_PASSWORD"
SSL_WAIT = 10.0


def _load_helper(name: str, file_name: str) -> ModuleType:
    # The names tests/conftest.py registers these helpers under (tests are no package).
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


pgserver = _load_helper("hoopgw_tests_pgserver", "pgserver.py")
certs = _load_helper("hoopgw_tests_certs", "certs.py")


@attrs.frozen(kw_only=True)
class TlsTarget:
    """The private TLS-only cluster and what logging in to it takes."""

    address: Any
    """Its :class:`PgAddress` (loopback)."""
    tls: Any
    """The :class:`TlsFiles` its certificate came from (``ca_cert`` is the trust root)."""
    scram_password: str
    """Password of :data:`SCRAM_ROLE` (stored as a SCRAM-SHA-256 verifier)."""
    md5_password: str
    """Password of :data:`MD5_ROLE` (stored as an MD5 hash)."""


def _install_server_files(tls: Any, data_dir: Path) -> None:
    """Copy the certificate and key into the data directory, owned by the cluster's OS user
    (the server refuses a key that others can read)."""
    stat = data_dir.stat()
    for source, target_name in ((tls.server_cert, "server.crt"), (tls.server_key, "server.key")):
        target = data_dir / target_name
        shutil.copyfile(source, target)
        os.chown(target, stat.st_uid, stat.st_gid)
        target.chmod(0o600)


HBA = f"""\
# Written by test_postgres_upstream_tls.py: TLS or nothing.
hostssl   all  postgres      127.0.0.1/32  trust
hostssl   all  {SCRAM_ROLE}  127.0.0.1/32  scram-sha-256
hostssl   all  {MD5_ROLE}    127.0.0.1/32  md5
hostnossl all  all           127.0.0.1/32  reject
"""


def _admin(address: Any, sslmode: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=address.host,
        port=address.port,
        user="postgres",
        dbname="postgres",
        sslmode=sslmode,
        autocommit=True,
        connect_timeout=5,
    )


def _wait_for_ssl(address: Any) -> None:
    """``pg_reload_conf`` only signals the postmaster: wait until it offers TLS."""
    deadline = time.monotonic() + SSL_WAIT
    while True:
        try:
            with _admin(address, "require"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsTarget]:
    """Start one cluster that only takes TLS logins; stop it at the end of the module."""
    base = tmp_path_factory.mktemp("upstream-tls")
    tls_folder = base / "tls"
    tls_folder.mkdir()
    tls = certs.write_tls_files(tls_folder)
    try:
        address, data_dir = pgserver.start_cluster(
            base, host="127.0.0.1", preferred_port=pgserver.free_port()
        )
    except pgserver.PgServerError as error:
        pytest.skip(f"cannot start a private PostgreSQL cluster: {error}")
    try:
        scram_password = f"Scram-{secrets.token_hex(12)}"
        md5_password = f"Md5-{secrets.token_hex(12)}"
        with _admin(address, "disable") as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(SCRAM_ROLE), sql.Literal(scram_password)
                )
            )
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(MD5_ROLE), sql.Literal(md5_password)
                )
            )
            _install_server_files(tls, data_dir)
            (data_dir / "pg_hba.conf").write_text(HBA)
            conn.execute("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
            conn.execute("ALTER SYSTEM SET ssl_key_file = 'server.key'")
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        _wait_for_ssl(address)
        with _admin(address, "require") as conn:
            assert conn.execute("SHOW ssl").fetchone() == ("on",)
            stored = dict(
                conn.execute(
                    "SELECT rolname, left(rolpassword, 6) FROM pg_authid WHERE rolname = ANY(%s)",
                    ([SCRAM_ROLE, MD5_ROLE],),
                ).fetchall()
            )
        assert stored[SCRAM_ROLE] == "SCRAM-"
        assert stored[MD5_ROLE].startswith("md5")
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            _admin(address, "disable")
        yield TlsTarget(
            address=address,
            tls=tls,
            scram_password=scram_password,
            md5_password=md5_password,
        )
    finally:
        pgserver.stop_cluster(data_dir)


@pytest.fixture(scope="module")
def pg_server(tls_target: TlsTarget) -> Any:
    """The ``gateway`` fixture's default target: here, the private TLS cluster."""
    return tls_target.address


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A second, unrelated CA certificate (with its own server certificate nobody uses)."""
    folder = tmp_path / "other-ca"
    folder.mkdir()
    return Path(certs.write_tls_files(folder).ca_cert)


def start_gateway(
    gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    user: str,
    password: str,
    upstream_tls: dict[str, str],
) -> tuple[Any, str]:
    """A gateway (recording on, no client TLS) logging in as ``user`` with ``password`` from
    the environment; return it and an API key for ``agent``."""
    monkeypatch.setenv(PASSWORD_VARIABLE, password)
    running = gateway(
        plugins=["recording"],
        connection={
            "client_tls": "disabled",
            "credential": {"user": user, "password": f"env:{PASSWORD_VARIABLE}"},
            "upstream_tls": upstream_tls,
        },
    )
    return running, running.create_key("agent", ["agents"])


def conninfo(running: Any, key: str) -> str:
    return (
        f"host={running.host} port={running.port} user=agent password={key} "
        "dbname=postgres sslmode=disable connect_timeout=10"
    )


def backend_tls_and_user(conn: psycopg.Connection[Any]) -> tuple[bool, str, str]:
    row = conn.execute(
        "SELECT s.ssl, s.version, current_user FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return bool(row[0]), str(row[1]), str(row[2])


def recorded_sessions(running: Any) -> list[dict[str, Any]]:
    """The sessions the recording plugin stored, once all of them have ended."""
    deadline = time.monotonic() + 10
    while True:
        listed = running.cli("sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found = list(json.loads(listed.stdout))
        if (found and all(s["ended_at"] for s in found)) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def login_error(wire_client: Any, running: Any, key: str) -> dict[str, str]:
    """Log in with the raw client; return the fields of the error, checking the gateway then
    closes the connection."""
    client = wire_client(running.host, running.port)
    messages = client.login(user="agent", database="postgres", password=key)
    error = client.first_error(messages)
    assert client.receive() is None
    return error


def test_verify_full_with_the_right_ca_logs_in_over_tls_with_scram(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget
) -> None:
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={"sslmode": "verify-full", "ca_file": str(tls_target.tls.ca_cert)},
    )
    with psycopg.connect(conninfo(running, key)) as conn:
        tls, version, user = backend_tls_and_user(conn)
        assert (tls, user) == (True, SCRAM_ROLE)
        assert version.startswith("TLSv1.")
        assert conn.execute("SELECT count(*) FROM generate_series(1, 50000)").fetchone() == (50000,)
    [session] = recorded_sessions(running)
    shown = running.cli("sessions", "show", session["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["upstream_tls"] is True
    assert detail["client_tls"] is False
    assert tls_target.scram_password not in shown.stdout


def test_verify_full_with_the_certificates_dns_name(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget
) -> None:
    """Target by IP, certificate checked for the DNS name ``server_name`` says (and sent as SNI)."""
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={
            "sslmode": "verify-full",
            "ca_file": str(tls_target.tls.ca_cert),
            "server_name": "localhost",
        },
    )
    with psycopg.connect(conninfo(running, key)) as conn:
        assert backend_tls_and_user(conn)[::2] == (True, SCRAM_ROLE)


def test_verify_full_with_another_ca_fails_clearly_and_keeps_serving(
    gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
    tls_target: TlsTarget,
    other_ca: Path,
    wire_client: Any,
) -> None:
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={"sslmode": "verify-full", "ca_file": str(other_ca)},
    )
    error = login_error(wire_client, running, key)
    assert error["C"] == "08006"
    # The other CA has the same subject name, so OpenSSL also reports the bad signature.
    assert error["M"].startswith("TLS handshake with the target failed: "), error["M"]
    assert error["M"].endswith("certificate verify failed"), error["M"]
    # The next client gets the same answer: the gateway is still serving.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(conninfo(running, key))
    assert running.process.poll() is None


def test_verify_full_with_a_name_not_in_the_certificate_fails(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget, wire_client: Any
) -> None:
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={
            "sslmode": "verify-full",
            "ca_file": str(tls_target.tls.ca_cert),
            "server_name": "db.elsewhere.example",
        },
    )
    error = login_error(wire_client, running, key)
    assert error["C"] == "08006"
    assert error["M"] == (
        "the target's certificate is not valid for db.elsewhere.example (sslmode=verify-full)"
    )
    assert running.process.poll() is None


def test_require_logs_in_without_checking_the_certificate(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget
) -> None:
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={"sslmode": "require"},
    )
    with psycopg.connect(conninfo(running, key)) as conn:
        assert backend_tls_and_user(conn)[::2] == (True, SCRAM_ROLE)


def test_disable_is_refused_by_the_targets_hba(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget, wire_client: Any
) -> None:
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=tls_target.scram_password,
        upstream_tls={"sslmode": "disable"},
    )
    client = wire_client(running.host, running.port)
    error = client.first_error(client.login(user="agent", database="postgres", password=key))
    assert error["C"] == "28000"
    assert error["M"].startswith("login to the target failed: ")
    assert "no encryption" in error["M"]
    assert tls_target.scram_password.encode() not in client.received
    with pytest.raises(psycopg.OperationalError, match="login to the target failed"):
        psycopg.connect(conninfo(running, key))


def test_wrong_stored_password_is_a_login_failure_that_never_shows_the_password(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget, wire_client: Any
) -> None:
    wrong = f"Wrong-{secrets.token_hex(12)}"
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=SCRAM_ROLE,
        password=wrong,
        upstream_tls={"sslmode": "verify-full", "ca_file": str(tls_target.tls.ca_cert)},
    )
    client = wire_client(running.host, running.port)
    error = client.first_error(client.login(user="agent", database="postgres", password=key))
    assert client.receive() is None
    assert error["C"] == "28P01"
    assert error["M"] == (
        f'login to the target failed: password authentication failed for user "{SCRAM_ROLE}"'
    )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as caught:
        psycopg.connect(conninfo(running, key))
    running.stop()
    for secret in (wrong, tls_target.scram_password):
        assert secret.encode() not in client.received
        assert secret not in str(caught.value)
        assert secret not in running.stderr_text()


@pytest.mark.parametrize("sslmode", ["verify-full", "require"])
def test_md5_role_logs_in(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, tls_target: TlsTarget, sslmode: str
) -> None:
    upstream_tls = {"sslmode": sslmode}
    if sslmode == "verify-full":
        upstream_tls["ca_file"] = str(tls_target.tls.ca_cert)
    running, key = start_gateway(
        gateway,
        monkeypatch,
        user=MD5_ROLE,
        password=tls_target.md5_password,
        upstream_tls=upstream_tls,
    )
    with psycopg.connect(conninfo(running, key)) as conn:
        assert backend_tls_and_user(conn)[::2] == (True, MD5_ROLE)
