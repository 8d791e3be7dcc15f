"""OIDC tokens through the real gateway: a test issuer serves discovery and JWKS over HTTPS on
loopback, the gateway fetches them (trusting the test CA), and psql/psycopg log in to the real
PostgreSQL with a token as the password. Every rejection is its own test and leaves an audit
record; repeated failures slow down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.store]


helper: Any = sys.modules["hoopgw_tests_oidcissuer"]  # registered by tests/conftest.py


def start(gateway: Any, issuer: Any, tls_files: Any, **identity: Any) -> Any:
    trusted = {
        "issuer": issuer.issuer,
        "audience": helper.AUDIENCE,
        "ca_file": str(tls_files.ca_cert),
        "refetch_interval": 0.5,
        **identity.pop("oidc", {}),
    }
    return gateway(allow_groups=["agents"], identity={"oidc": [trusted], **identity})


def conninfo(running: Any, database: str, *, user: str, password: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=running.host,
        port=running.port,
        user=user,
        password=password,
        dbname=database,
        sslmode="disable",
        connect_timeout=20,
    )


def audit_records(running: Any, kind: str, *, count: int = 1) -> list[dict[str, Any]]:
    """The data of ``kind`` records in the gateway's store, waiting for ``count`` of them
    (failure records are written without waiting for the commit)."""
    deadline = time.monotonic() + 10
    while True:
        rows = running.store_query(
            "SELECT data FROM audit_records WHERE kind = ? ORDER BY seq", (kind,)
        )
        if len(rows) >= count or time.monotonic() > deadline:
            return [json.loads(row[0]) for row in rows]
        time.sleep(0.05)


def test_psql_logs_in_with_a_token(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = start(gateway, oidc_issuer, tls_files)
    env = {
        **os.environ,
        "PGHOST": running.host,
        "PGPORT": str(running.port),
        "PGUSER": "svc-reporting",
        "PGPASSWORD": oidc_issuer.token(),
        "PGDATABASE": pg_database,
        "PGSSLMODE": "disable",
    }
    result = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 40 + 2, current_user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42|postgres"
    assert "/.well-known/openid-configuration" in oidc_issuer.requests


def test_a_rotated_key_is_accepted(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = start(gateway, oidc_issuer, tls_files)
    with psycopg.connect(
        conninfo(running, pg_database, user="svc-reporting", password=oidc_issuer.token())
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    oidc_issuer.rotate()
    time.sleep(0.6)  # past refetch_interval
    with psycopg.connect(
        conninfo(running, pg_database, user="svc-reporting", password=oidc_issuer.token())
    ) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert oidc_issuer.requests.count("/jwks") == 2


def _tampered(issuer: Any) -> str:
    header, _, signature = issuer.token().split(".")
    return f"{header}.{helper.b64json(issuer.claims(sub='admin'))}.{signature}"


REJECTED = {
    "expired": (lambda i: i.token(now=time.time() - 3600), "the token has expired", "expired"),
    "not-yet-valid": (
        lambda i: i.token(nbf=int(time.time()) + 3600, exp=int(time.time()) + 7200),
        "the token is not valid yet",
        "not yet valid",
    ),
    "wrong-aud": (lambda i: i.token(aud="another-service"), "audience", "wrong audience"),
    "wrong-iss": (lambda i: i.token(iss="https://evil.test"), "invalid token", "untrusted"),
    "alg-none": (lambda i: i.unsigned_token(), "invalid token", "'none' is not allowed"),
    "hs256-public-key": (
        lambda i: i.hs256_with_public_key(),
        "invalid token",
        "'HS256' is not allowed",
    ),
    "jku-header": (
        lambda i: i.token(headers={"jku": "https://evil.test/jwks"}),
        "invalid token",
        "jku",
    ),
    "jwk-header": (
        lambda i: i.token(headers={"jwk": i.current.jwk()}),
        "invalid token",
        "jwk",
    ),
    "unknown-kid": (
        lambda i: i.token(key=helper.SigningKey("made-up")),
        "invalid token",
        "unknown key id",
    ),
    "tampered-payload": (_tampered, "invalid token", "bad signature"),
    "missing-group-claim": (lambda i: i.token(groups=None), '"groups" claim', "groups claim"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str, case: str
) -> None:
    make, shown, reason = REJECTED[case]
    running = start(gateway, oidc_issuer, tls_files)
    token = make(oidc_issuer)
    user = "admin" if case == "tampered-payload" else "svc-reporting"
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(conninfo(running, pg_database, user=user, password=token))
    message = str(raised.value)
    assert f'authentication failed for user "{user}"' in message
    assert shown in message
    assert token not in message
    [record] = audit_records(running, "authentication_failed")
    assert record["method"] == "oidc"
    assert reason in record["reason"]
    assert record["connection"] == "pg"
    assert record["client_address"].startswith("127.0.0.1:")
    assert token not in json.dumps(record)


def test_a_token_outside_the_allowed_groups_is_denied(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = start(gateway, oidc_issuer, tls_files)
    token = oidc_issuer.token(groups=["interns"])
    with pytest.raises(psycopg.OperationalError, match="allow_groups"):
        psycopg.connect(conninfo(running, pg_database, user="svc-reporting", password=token))
    [record] = audit_records(running, "access_denied")
    assert record["identity"] == "svc-reporting"
    assert record["groups"] == ["interns"]


def test_the_user_name_must_be_the_tokens_identity(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = start(gateway, oidc_issuer, tls_files)
    with pytest.raises(psycopg.OperationalError, match='belongs to identity "svc-reporting"'):
        psycopg.connect(
            conninfo(running, pg_database, user="postgres", password=oidc_issuer.token())
        )
    [record] = audit_records(running, "authentication_failed")
    assert "does not match" in record["reason"]


def test_repeated_failures_slow_down(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = start(
        gateway,
        oidc_issuer,
        tls_files,
        backoff={"free_failures": 1, "base_delay": 1.0, "max_delay": 2.0},
    )
    bad = oidc_issuer.token(aud="another-service")

    def attempt() -> float:
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(conninfo(running, pg_database, user="svc-reporting", password=bad))
        return time.monotonic() - began

    assert attempt() < 1.0
    assert attempt() >= 1.0
    assert attempt() >= 2.0
    assert len(audit_records(running, "authentication_failed", count=3)) == 3


def test_a_revoked_key_ends_its_live_session(gateway: Any, pg_database: str) -> None:
    running = gateway(identity={"key_check_interval": 0.2})
    secret = running.create_key("agent", ["agents"])
    key_id = secret.split("_")[1]
    conn = psycopg.connect(conninfo(running, pg_database, user="agent", password=secret))
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        revoked = running.cli("keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 10
        with pytest.raises(psycopg.OperationalError, match=f"API key {key_id} has been revoked"):
            while time.monotonic() < deadline:
                conn.execute("SELECT 1")
                time.sleep(0.1)
    finally:
        conn.close()
    with pytest.raises(psycopg.OperationalError, match="has been revoked"):
        psycopg.connect(conninfo(running, pg_database, user="agent", password=secret))


def test_an_expired_token_ends_its_live_session(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    running = gateway(
        plugins=["recording"],
        allow_groups=["agents"],
        identity={
            "key_check_interval": 0.2,
            "oidc": [
                {
                    "issuer": oidc_issuer.issuer,
                    "audience": helper.AUDIENCE,
                    "ca_file": str(tls_files.ca_cert),
                    "leeway": 0,
                }
            ],
        },
    )
    expires = int(time.time()) + 4
    token = oidc_issuer.token(exp=expires)
    conn = psycopg.connect(conninfo(running, pg_database, user="svc-reporting", password=token))
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(
            psycopg.OperationalError, match="terminating connection: access token has expired"
        ):
            while time.time() < expires + 10:
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert time.time() >= expires
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while True:
        listed = json.loads(running.cli("sessions", "list", "--json").stdout)
        if (listed and listed[0]["ended_at"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [session] = listed
    shown = running.cli("sessions", "show", session["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["end_reason"] == "access token has expired"


def test_config_check_refuses_hmac(tmp_path: Path) -> None:
    config = tmp_path / "hoopgw.toml"
    config.write_text(
        '[gateway]\nstore = "sqlite:///./h.db"\n'
        '[[identity.oidc]]\nissuer = "https://issuer.test"\naudience = "x"\n'
        'algorithms = ["HS256"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "hoopgw", "config", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "identity.oidc[0].algorithms" in result.stderr
    assert "'HS256' is not allowed" in result.stderr


def test_an_issuer_whose_certificate_does_not_verify_is_not_trusted(
    gateway: Any, oidc_issuer: Any, tls_files: Any, pg_database: str
) -> None:
    # No ca_file: the test CA is not among the system's, so discovery is never believed.
    running = gateway(
        allow_groups=["agents"],
        identity={"oidc": [{"issuer": oidc_issuer.issuer, "audience": helper.AUDIENCE}]},
    )
    with pytest.raises(psycopg.OperationalError, match="the token cannot be checked now"):
        psycopg.connect(
            conninfo(running, pg_database, user="svc-reporting", password=oidc_issuer.token())
        )
    assert oidc_issuer.requests == []
    [record] = audit_records(running, "authentication_failed")
    assert "no signing keys" in record["reason"]


def test_a_local_jwks_file_works_offline(
    gateway: Any, tls_files: Any, pg_database: str, tmp_path: Path
) -> None:
    offline = helper.TestIssuer(issuer="urn:example:ci")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(offline.jwks()))
    running = gateway(
        allow_groups=["agents"],
        identity={
            "oidc": [
                {"issuer": offline.issuer, "audience": helper.AUDIENCE, "jwks_file": str(jwks)}
            ]
        },
    )
    with psycopg.connect(
        conninfo(running, pg_database, user="svc-reporting", password=offline.token())
    ) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_a_wrong_scram_proof_is_audited(gateway: Any, pg_database: str) -> None:
    running = gateway(connection={"client_auth": "scram"})
    secret = running.create_key("agent", ["agents"])
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(psycopg.OperationalError, match="invalid API key"):
        psycopg.connect(conninfo(running, pg_database, user="agent", password=wrong))
    [record] = audit_records(running, "authentication_failed")
    assert record["method"] == "scram"
    assert wrong not in json.dumps(record) and secret not in json.dumps(record)
