"""Tests for hoopgw.identity.keys: API keys against a real SQLite store in tmp_path."""

from __future__ import annotations

import hashlib
import re

import pytest

from hoopgw.errors import AuthenticationError
from hoopgw.identity.keys import (
    KeyService,
    end_sessions_of_expired_identities,
    end_sessions_of_inactive_keys,
    inactive_keys,
    sessions_by_key,
)
from hoopgw.secrets import make_verifier
from hoopgw.session import Identity
from hoopgw.store import SQLiteStore

NOW = 1_000_000.0


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "keys.db"))
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def keys(store):
    return KeyService(store)


def test_create_returns_a_secret_and_stores_only_checks(keys, store):
    secret, record = keys.create("agent-1", ["agents", "ci", "agents"], now=NOW)
    assert re.fullmatch(r"hgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret)
    assert secret.split("_", 2)[1] == record.key_id
    assert record.identity == "agent-1"
    assert record.groups == ("agents", "ci")
    assert record.created_at == NOW
    assert record.expires_at is None
    assert record.revoked_at is None and record.last_used_at is None
    assert record.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert len(record.scram.salt) == 16
    assert record.scram == make_verifier(secret, record.scram.salt, record.scram.iterations)
    assert store.get_key(record.key_id) == record
    dump = b"".join(line.encode() for line in store._conn.iterdump())
    assert secret.encode() not in dump


def test_every_key_is_different(keys):
    (a, ra), (b, rb) = keys.create("x", [], now=NOW), keys.create("x", [], now=NOW)
    assert a != b and ra.key_id != rb.key_id and ra.scram.salt != rb.scram.salt


def test_create_with_expiry(keys):
    _, record = keys.create("agent", ["g"], expires_in=3600, now=NOW)
    assert record.expires_at == NOW + 3600


@pytest.mark.parametrize(
    ("identity", "groups"),
    [
        ("", ["g"]),
        ("two words", ["g"]),
        ("a,b", ["g"]),
        ("tab\tname", []),
        ("bell\x07", []),
        ("ok", [""]),
        ("ok", ["g h"]),
        ("ok", ["g,h"]),
        ("ok", ["line\n"]),
    ],
)
def test_create_refuses_bad_names(keys, identity, groups):
    with pytest.raises(ValueError):
        keys.create(identity, groups, now=NOW)
    assert keys.list() == []


def test_create_refuses_non_positive_lifetime(keys):
    with pytest.raises(ValueError):
        keys.create("agent", [], expires_in=0, now=NOW)


def test_authenticate(keys, store):
    secret, record = keys.create("agent", ["agents"], now=NOW)
    identity = keys.authenticate(secret, now=NOW + 5)
    assert identity == Identity(
        name="agent", groups=frozenset({"agents"}), method="api-key", credential_id=record.key_id
    )
    assert store.get_key(record.key_id).last_used_at == NOW + 5


def test_wrong_secret_and_unknown_key_look_the_same(keys, store):
    secret, record = keys.create("agent", [], now=NOW)
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown = "hgw_ffffffffffff_" + secret.split("_", 2)[2]
    messages = set()
    for attempt in (wrong, unknown, "hgw_short", "", "password", secret + "x"):
        with pytest.raises(AuthenticationError) as caught:
            keys.authenticate(attempt, now=NOW)
        messages.add(str(caught.value))
        if attempt:
            assert attempt not in str(caught.value)
    assert messages == {"invalid API key"}
    assert store.get_key(record.key_id).last_used_at is None


def test_expired_key_is_refused(keys):
    secret, _ = keys.create("agent", [], expires_in=60, now=NOW)
    keys.authenticate(secret, now=NOW + 59)
    with pytest.raises(AuthenticationError, match="expired"):
        keys.authenticate(secret, now=NOW + 60)


def test_revoked_key_is_refused(keys):
    secret, record = keys.create("agent", [], now=NOW)
    assert keys.revoke(record.key_id, now=NOW + 1) is True
    assert keys.revoke(record.key_id, now=NOW + 2) is False
    assert keys.revoke("ffffffffffff") is False
    with pytest.raises(AuthenticationError, match="revoked") as caught:
        keys.authenticate(secret, now=NOW + 3)
    assert secret not in str(caught.value)


def test_revoke_defaults_to_the_current_time(keys):
    _, record = keys.create("agent", [], now=NOW)
    assert keys.revoke(record.key_id)
    [listed] = keys.list()
    assert listed.revoked_at is not None and listed.revoked_at > NOW


def test_check_active(keys):
    _, record = keys.create("agent", [], expires_in=60, now=NOW)
    assert keys.check_active(record.key_id, now=NOW)
    assert not keys.check_active(record.key_id, now=NOW + 60)
    assert not keys.check_active("ffffffffffff", now=NOW)
    keys.revoke(record.key_id, now=NOW + 1)
    assert not keys.check_active(record.key_id, now=NOW + 2)


def test_scram_verifier_by_key_id(keys):
    secret, record = keys.create("agent", ["g"], now=NOW)
    verifier, identity = keys.scram_verifier(record.key_id, now=NOW)
    assert verifier == make_verifier(secret, verifier.salt, verifier.iterations)
    assert identity.credential_id == record.key_id
    assert identity.groups == frozenset({"g"})


def test_scram_verifier_by_identity_prefers_the_newest_active_key(keys):
    _, old = keys.create("agent", ["old"], now=NOW)
    _, new = keys.create("agent", ["new"], now=NOW + 10)
    _, newest = keys.create("agent", ["newest"], now=NOW + 20)
    keys.revoke(newest.key_id, now=NOW + 21)
    verifier, identity = keys.scram_verifier("agent", now=NOW + 30)
    assert identity.credential_id == new.key_id
    assert verifier == new.scram
    # a client holding the older key logs in with its key id
    assert keys.scram_verifier(old.key_id, now=NOW + 30)[1].credential_id == old.key_id


def test_scram_verifier_none_when_nothing_active(keys):
    _, record = keys.create("agent", [], expires_in=5, now=NOW)
    assert keys.scram_verifier("agent", now=NOW + 10) is None
    assert keys.scram_verifier(record.key_id, now=NOW + 10) is None
    assert keys.scram_verifier("nobody", now=NOW) is None


def test_record_use(keys, store):
    _, record = keys.create("agent", [], now=NOW)
    keys.record_use(record.key_id, now=NOW + 7)
    assert store.get_key(record.key_id).last_used_at == NOW + 7


def test_list_oldest_first(keys):
    _, a = keys.create("a", [], now=NOW + 1)
    _, b = keys.create("b", [], now=NOW)
    assert [k.key_id for k in keys.list()] == [b.key_id, a.key_id]


class _LiveSession:
    def __init__(self, identity):
        self.identity = identity
        self.ended: list[str] = []

    def terminate(self, reason):
        self.ended.append(reason)


def test_why_inactive(keys):
    _, record = keys.create("agent-1", ["agents"], expires_in=100, now=NOW)
    assert keys.why_inactive(record.key_id, now=NOW) is None
    assert keys.why_inactive(record.key_id, now=NOW + 100) == "expired"
    keys.revoke(record.key_id, now=NOW + 1)
    assert keys.why_inactive(record.key_id, now=NOW + 2) == "revoked"
    assert keys.why_inactive("0123456789ab", now=NOW) == "revoked"


def _end_inactive(keys, sessions, *, now):
    # What the gateway's periodic check does, the store read in the middle off the reactor.
    owned = sessions_by_key(sessions)
    return end_sessions_of_inactive_keys(owned, inactive_keys(keys, list(owned), now=now))


def test_sessions_of_a_revoked_or_expired_key_are_ended(keys, store):
    _, revoked = keys.create("agent-1", ["agents"], now=NOW)
    _, expiring = keys.create("agent-2", ["agents"], expires_in=50, now=NOW)
    _, fine = keys.create("agent-3", ["agents"], now=NOW)

    def identity(record):
        return Identity(name=record.identity, credential_id=record.key_id, method="api-key")

    sessions = [
        _LiveSession(identity(revoked)),
        _LiveSession(identity(revoked)),
        _LiveSession(identity(expiring)),
        _LiveSession(identity(fine)),
        _LiveSession(None),  # still logging in
        _LiveSession(Identity(name="svc", method="oidc", credential_id="https://i#x")),
    ]
    # Revoked by another process: the gateway only sees the store.
    other = SQLiteStore(store.path)
    KeyService(other).revoke(revoked.key_id, now=NOW + 1)
    other.close()

    assert _end_inactive(keys, sessions, now=NOW + 10) == 2
    assert [s.ended for s in sessions[:2]] == [[f"API key {revoked.key_id} has been revoked"]] * 2
    assert sessions[2].ended == []
    assert _end_inactive(keys, sessions[2:], now=NOW + 60) == 1
    assert sessions[2].ended == [f"API key {expiring.key_id} has expired"]
    assert all(s.ended == [] for s in sessions[3:])


def test_sessions_of_a_revoked_ssh_key_are_ended(keys, store):
    from hoopgw.records import SshKeyRecord

    for fingerprint in ("SHA256:revoked", "SHA256:fine"):
        store.add_ssh_key(
            SshKeyRecord(
                fingerprint=fingerprint,
                identity="bot",
                groups=("agents",),
                public_key="ssh-ed25519 AAAA",
                comment="",
                created_at=NOW,
            )
        )
    sessions = [
        _LiveSession(Identity(name="bot", method="ssh-key", credential_id="SHA256:revoked")),
        _LiveSession(Identity(name="bot", method="ssh-key", credential_id="SHA256:fine")),
    ]
    assert _end_inactive(keys, sessions, now=NOW) == 0
    # Revoked by another process (hoopgw keys revoke-ssh): the gateway only sees the store.
    other = SQLiteStore(store.path)
    other.revoke_ssh_key("SHA256:revoked", when=NOW + 1)
    other.close()
    assert _end_inactive(keys, sessions, now=NOW + 10) == 1
    assert sessions[0].ended == ["SSH key SHA256:revoked has been revoked"]
    assert sessions[1].ended == []


def test_sessions_of_an_expired_token_are_ended():
    token = Identity(name="svc", method="oidc", credential_id="https://i#x", expires_at=NOW + 60)
    sessions = [
        _LiveSession(token),
        _LiveSession(token),
        _LiveSession(Identity(name="svc", method="oidc", expires_at=NOW + 600)),
        _LiveSession(Identity(name="agent", credential_id="0123456789ab")),  # no expiry
        _LiveSession(None),  # still logging in
    ]
    assert end_sessions_of_expired_identities(sessions, now=NOW + 59.9) == 0
    assert end_sessions_of_expired_identities(sessions, now=NOW + 60) == 2
    assert [s.ended for s in sessions] == [["access token has expired"]] * 2 + [[]] * 3
