"""Tests for hoopgw.authn: the credential check and admission every protocol shares."""

from __future__ import annotations

import time

import pytest

from hoopgw.authn import Authenticator
from hoopgw.config import ConnectionConfig, CredentialConfig
from hoopgw.errors import AccessDenied, AuthenticationError
from hoopgw.identity import KeyService
from hoopgw.store import SQLiteStore


@pytest.fixture
def keys(tmp_path):
    store = SQLiteStore(str(tmp_path / "keys.db"))
    store.migrate()
    yield KeyService(store)
    store.close()


def _connection(allow_groups: tuple[str, ...]) -> ConnectionConfig:
    return ConnectionConfig(
        name="pg",
        protocol="postgres",
        listen="tcp:0",
        target="127.0.0.1:5432",
        credential=CredentialConfig(user="postgres", password=None),
        allow_groups=allow_groups,
    )


def _result(d):
    results = []
    d.addBoth(results.append)
    assert results, "the check must answer at once for API keys"
    return results[0]


def test_a_valid_key_gives_its_identity(keys):
    secret, record = keys.create("agent-1", ["agents"], now=time.time())
    identity = _result(Authenticator(keys).authenticate(secret, client_address="127.0.0.1:5"))
    assert identity.name == "agent-1"
    assert identity.credential_id == record.key_id


def test_a_wrong_secret_fails_with_a_safe_message(keys):
    secret, _ = keys.create("agent-1", ["agents"], now=time.time())
    wrong = secret[:-4] + "AAAA"
    failure = _result(Authenticator(keys).authenticate(wrong, client_address="127.0.0.1:5"))
    assert failure.check(AuthenticationError)
    assert wrong not in str(failure.value)


def test_admission_needs_a_shared_group(keys):
    secret, _ = keys.create("agent-1", ["agents"], now=time.time())
    authn = Authenticator(keys)
    identity = _result(authn.authenticate(secret, client_address="127.0.0.1:5"))
    assert _result(authn.admit(identity, _connection(("agents", "dba")))) is None
    refused = _result(authn.admit(identity, _connection(("dba",))))
    assert refused.check(AccessDenied)
    assert "allow_groups" in str(refused.value)
