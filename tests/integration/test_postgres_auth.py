"""Authentication to the real gateway with API keys: cleartext over loopback and SCRAM; every
refusal carries a SQLSTATE and says why."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.store]


def key_id(secret: str) -> str:
    """The public id inside a key secret ``hgw_<id>_<random>``."""
    return secret.split("_")[1]


def refused(login: Any, wire_client: Any, *, user: str, password: str) -> dict[str, str]:
    """Log in with a raw client; return the error's fields after checking the gateway closed."""
    client = wire_client(login.gateway.host, login.gateway.port)
    messages = client.login(user=user, database=login.database, password=password)
    assert [m.type for m in messages if m.type != b"R"] == [b"E"]
    assert client.receive() is None, "the gateway must close the connection after a failed login"
    return client.first_error(messages)


def test_the_key_logs_in_and_the_target_sees_the_stored_user(recorded_gateway: Any) -> None:
    with psycopg.connect(recorded_gateway.conninfo()) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "postgres",
            recorded_gateway.database,
        )
    # The key id works as the user name as well as the identity name.
    with psycopg.connect(recorded_gateway.conninfo(user=key_id(recorded_gateway.key))) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    "wrong",
    ["not-a-key", "hgw_000000000000_" + "A" * 43, "WRONG-BY-ONE-CHARACTER"],
)
def test_wrong_key_is_refused(recorded_gateway: Any, wire_client: Any, wrong: str) -> None:
    if wrong == "WRONG-BY-ONE-CHARACTER":
        key = recorded_gateway.key
        wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    error = refused(recorded_gateway, wire_client, user="agent", password=wrong)
    assert error["C"] == "28P01"
    assert error["V"] == "FATAL"
    assert 'authentication failed for user "agent"' in error["M"]
    assert "invalid API key" in error["M"]
    assert wrong not in error["M"]
    with pytest.raises(psycopg.OperationalError, match="invalid API key"):
        psycopg.connect(recorded_gateway.conninfo(password=wrong))


def test_revoked_key_is_refused(recorded_gateway: Any, wire_client: Any) -> None:
    gateway = recorded_gateway.gateway
    revoked = gateway.cli("keys", "revoke", key_id(recorded_gateway.key))
    assert revoked.returncode == 0, revoked.stderr
    error = refused(recorded_gateway, wire_client, user="agent", password=recorded_gateway.key)
    assert error["C"] == "28P01"
    assert f"API key {key_id(recorded_gateway.key)} has been revoked" in error["M"]


def test_identity_outside_allow_groups_is_refused(recorded_gateway: Any, wire_client: Any) -> None:
    outsider = recorded_gateway.gateway.create_key("outsider", ["interns", "readers"])
    error = refused(recorded_gateway, wire_client, user="outsider", password=outsider)
    assert error["C"] == "28000"
    assert error["M"].startswith(
        'hoopgw refused the login: identity "outsider" may not use connection "pg"'
        " (none of its groups is in allow_groups) [code=HGW-NO-ACCESS]. Ask the gateway's admins"
    )


def test_key_of_another_identity_is_refused(recorded_gateway: Any, wire_client: Any) -> None:
    recorded_gateway.gateway.create_key("someone", ["agents"])
    error = refused(recorded_gateway, wire_client, user="someone", password=recorded_gateway.key)
    assert error["C"] == "28P01"
    assert 'the key belongs to identity "agent", not "someone"' in error["M"]


def test_scram_login_with_the_key(gateway: Any, pg_database: str) -> None:
    running = gateway(connection={"client_tls": "disabled", "client_auth": "scram"})
    key = running.create_key("agent", ["agents"])
    base = (
        f"host={running.host} port={running.port} dbname={pg_database} sslmode=disable "
        "require_auth=scram-sha-256"
    )
    with psycopg.connect(f"{base} user=agent password={key}") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with psycopg.connect(f"{base} user={key_id(key)} password={key}") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    wrong = key[:-2] + "xx"
    with pytest.raises(psycopg.OperationalError, match='authentication failed for user "agent"'):
        psycopg.connect(f"{base} user=agent password={wrong}")
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(f"{base} user=nobody password={key}")
    # A client that insists on a cleartext password gets no such offer.
    with pytest.raises(psycopg.OperationalError, match="server requested SASL authentication"):
        psycopg.connect(
            f"host={running.host} port={running.port} dbname={pg_database} sslmode=disable "
            f"require_auth=password user=agent password={key}"
        )
