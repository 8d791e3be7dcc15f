"""Tests for hoopgw.identity.authn: the credential check and admission every protocol shares."""

from __future__ import annotations

import base64
import sys
import time

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from hoopgw.connection import ConnectionConfig, CredentialConfig
from hoopgw.errors import STORE_UNAVAILABLE, AccessDenied, AuthenticationError, StoreError
from hoopgw.identity.authn import Authenticator
from hoopgw.identity.groups import GroupResolver
from hoopgw.identity.keys import KeyService
from hoopgw.identity.oidc import IssuerKeys, IssuerSettings, TokenVerifier
from hoopgw.runtime.throttle import BackoffSettings, FailureThrottle
from hoopgw.session import Identity
from hoopgw.store import SQLiteStore
from hoopgw.store.calls import StoreCalls
from hoopgw.testing import FakeAuditWriter


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


# -- tokens, group sources, audit and back-off ----------------------------------------------

NOW = 1_800_000_000


class _StaticSource:
    def __init__(self, groups=(), error=None):
        self.groups = groups
        self.error = error
        self.asked = []

    def groups_of(self, identity):
        self.asked.append(identity.name)
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(self.groups)

    def close(self):
        pass


@pytest.fixture
def clock():
    c = Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def issuer():
    return sys.modules["hoopgw_tests_oidcissuer"].TestIssuer()  # registered by tests/conftest.py


def _tokens(issuer, clock, **settings):
    def fetch(url):
        if url.endswith("/openid-configuration"):
            return defer.succeed(issuer.discovery())
        return defer.succeed(issuer.jwks())

    values = {"issuer": issuer.issuer, "audience": ("hoopgw-test",), **settings}
    return TokenVerifier(
        [IssuerKeys(IssuerSettings(**values), fetch_json=fetch, clock=clock)], clock=clock
    )


def _authn(keys, clock, issuer=None, sources=(), **kwargs):
    audit = FakeAuditWriter()
    authn = Authenticator(
        keys,
        tokens=None if issuer is None else _tokens(issuer, clock),
        groups=GroupResolver(list(sources)),
        throttle=FailureThrottle(clock, BackoffSettings(free_failures=1, base_delay=2.0)),
        audit=audit,
        clock=clock,
        **kwargs,
    )
    return authn, audit


def test_a_token_is_accepted_with_the_groups_of_its_sources(keys, clock, issuer):
    ldap = _StaticSource(["dba"])
    authn, _ = _authn(keys, clock, issuer, sources=[("ldap", ldap)])
    identity = _result(authn.authenticate(issuer.token(now=NOW), client_address="10.0.0.1:5"))
    assert identity.method == "oidc"
    assert identity.groups == frozenset({"agents", "dba"})
    assert ldap.asked == ["svc-reporting"]


def test_api_keys_keep_their_own_groups(keys, clock, issuer):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    ldap = _StaticSource(["dba"])
    authn, _ = _authn(keys, clock, issuer, sources=[("ldap", ldap)])
    identity = _result(authn.authenticate(secret, client_address="10.0.0.1:5"))
    assert identity.groups == frozenset({"agents"})
    assert ldap.asked == []


def test_a_failing_group_source_fails_closed_and_is_audited(keys, clock, issuer):
    down = _StaticSource(error=OSError("directory unreachable"))
    authn, audit = _authn(keys, clock, issuer, sources=[("ldap", down)])
    failure = _result(authn.authenticate(issuer.token(now=NOW), client_address="10.0.0.1:5"))
    assert failure.check(AuthenticationError)
    assert "directory unreachable" not in str(failure.value)
    [record] = audit.records
    assert record.kind == "authentication_failed"
    assert "directory unreachable" in record.data["reason"]


def test_a_token_without_trusted_issuers_is_refused(keys, clock, issuer):
    authn, audit = _authn(keys, clock)
    failure = _result(authn.authenticate(issuer.token(now=NOW), client_address="10.0.0.1:5"))
    assert str(failure.value) == "invalid token"
    assert audit.records[0].data["method"] == "oidc"


def test_every_failure_is_audited_without_the_secret(keys, clock, issuer):
    authn, audit = _authn(keys, clock, issuer)
    token = issuer.token(now=NOW, aud="elsewhere")
    failure = _result(authn.authenticate(token, client_address="10.0.0.1:5", connection="pg"))
    assert "audience" in str(failure.value)
    [record] = audit.records
    assert record.session_id == ""
    assert record.data == {
        "method": "oidc",
        "reason": "wrong audience (aud)",
        "client_address": "10.0.0.1:5",
        "connection": "pg",
    }
    assert token not in str(record.data)


@pytest.mark.parametrize("part", ["header", "payload"])
def test_a_malformed_token_that_crashes_json_is_audited(keys, clock, issuer, part):
    # JSON nested thousands deep makes json.loads raise RecursionError: still a failure that
    # is audited and counted, not an exception out of authenticate().
    authn, audit = _authn(keys, clock, issuer)
    nested = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    good = base64.urlsafe_b64encode(b'{"alg":"RS256"}').decode().rstrip("=")
    secret = f"{nested}.e30.c2ln" if part == "header" else f"{good}.{nested}.c2ln"
    failure = _result(authn.authenticate(secret, client_address="10.0.0.1:5"))
    assert failure.check(AuthenticationError)
    assert len(audit.records) == 1


def _collect(d):
    answers = []
    d.addBoth(answers.append)
    return answers


def test_repeated_failures_are_answered_later(keys, clock):
    authn, _ = _authn(keys, clock)
    wrong = "hgw_0123456789ab_" + "A" * 43
    assert _collect(authn.authenticate(wrong, client_address="10.0.0.1:5"))
    delayed = _collect(authn.authenticate(wrong, client_address="10.0.0.1:6"))
    assert delayed == []
    clock.advance(1.9)
    assert delayed == []
    clock.advance(0.1)
    assert delayed[0].check(AuthenticationError)
    # Another address is not slowed down.
    assert _collect(authn.authenticate(wrong, client_address="10.0.0.2:5"))


def test_a_saturated_address_is_refused_without_checking(keys, clock):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    authn, audit = _authn(keys, clock)
    authn.throttle = FailureThrottle(
        clock, BackoffSettings(free_failures=0, base_delay=5.0, max_pending=1)
    )
    authn.authenticate("hgw_0123456789ab_" + "A" * 43, client_address="10.0.0.1:5")
    failure = _result(authn.authenticate(secret, client_address="10.0.0.1:6"))
    assert "too many failed authentication attempts" in str(failure.value)
    assert audit.records[-1].data["reason"].startswith("back-off")


def test_a_login_while_the_store_is_unavailable_is_refused_as_that_and_not_counted(
    keys, clock, monkeypatch
):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    authn, audit = _authn(keys, clock)

    def unavailable(key_id):
        raise StoreError("database is locked")

    monkeypatch.setattr(keys._store, "get_key", unavailable)
    for port in range(5):
        failure = _result(authn.authenticate(secret, client_address=f"10.0.0.1:{port}"))
        assert failure.check(StoreError)
        assert str(failure.value) == STORE_UNAVAILABLE
    assert audit.records == []
    # None of them counted: the address's first real failure is answered without delay.
    monkeypatch.undo()
    wrong = "hgw_0123456789ab_" + "A" * 43
    assert _collect(authn.authenticate(wrong, client_address="10.0.0.1:9"))


def test_a_failure_found_by_the_protocol_is_audited_and_slowed(keys, clock):
    authn, audit = _authn(keys, clock)
    answers = [
        _collect(
            authn.failed(
                "invalid API key", reason="SCRAM proof", method="scram", client_address="10.0.0.1:5"
            )
        )
        for _ in range(2)
    ]
    assert answers[0] and answers[1] == []
    clock.advance(2)
    assert str(answers[1][0].value) == "invalid API key"
    assert [r.data["method"] for r in audit.records] == ["scram", "scram"]


def test_a_refused_admission_is_audited(keys, clock):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    authn, audit = _authn(keys, clock)
    identity = _result(authn.authenticate(secret, client_address="10.0.0.1:5"))
    _result(authn.admit(identity, _connection(("dba",)), client_address="10.0.0.1:5"))
    [record] = audit.records
    assert record.kind == "access_denied"
    assert record.data["identity"] == "agent-1"
    assert record.data["connection"] == "pg"


def test_the_key_check_ends_sessions_of_revoked_keys(keys, clock):
    secret, record = keys.create("agent-1", ["agents"], now=NOW)
    authn, _ = _authn(keys, clock)
    identity = _result(authn.authenticate(secret, client_address="10.0.0.1:5"))
    ended = []

    class Session:
        def __init__(self):
            self.identity = identity

        def terminate(self, reason):
            ended.append(reason)

    authn.start([Session()], key_check_interval=5.0)
    clock.advance(5)
    assert ended == []
    keys.revoke(record.key_id, now=NOW + 6)
    clock.advance(5)
    assert ended == [f"API key {record.key_id} has been revoked"]
    authn.stop()


def test_the_key_check_ends_sessions_of_expired_tokens(keys, clock, issuer):
    authn, _ = _authn(keys, clock, issuer)
    token = issuer.token(now=NOW, exp=NOW + 60)
    identity = _result(authn.authenticate(token, client_address="10.0.0.1:5"))
    ended = []

    class Session:
        def __init__(self):
            self.identity = identity

        def terminate(self, reason):
            ended.append(reason)

    authn.start([Session()], key_check_interval=5.0)
    # Accepted up to exp plus the issuer's leeway (30 s by default), and so is the session.
    clock.advance(85)
    assert ended == []
    clock.advance(5)
    assert ended == ["access token has expired"]
    authn.stop()


# -- just-in-time access ------------------------------------------------------------------------


class _Grants:
    def __init__(self, live: set[tuple[str, str]]) -> None:
        self.live = live

    def active_grant(self, identity: str, connection: str, *, now: float) -> object | None:
        return object() if (identity, connection) in self.live else None


def test_a_jit_connection_needs_a_live_grant_and_says_how_to_ask(keys):
    import attrs

    from hoopgw.session import Identity

    jit = attrs.evolve(_connection(("agents",)), access="jit", jit_approvers=("leads",))
    agent = Identity(name="agent", groups=frozenset({"agents"}))
    audit = FakeAuditWriter()
    refused = _result(Authenticator(keys, audit=audit, grants=_Grants(set())).admit(agent, jit))
    assert refused.check(AccessDenied)
    message = str(refused.value)
    assert f'connection "{jit.name}" needs a just-in-time grant' in message
    assert f"hoopgw access request --connection {jit.name} --duration 30m" in message
    assert audit.records[-1].data["reason"] == "no live just-in-time grant"
    # No grant service at all: refused too (fail closed).
    assert _result(Authenticator(keys).admit(agent, jit)).check(AccessDenied)
    granted = Authenticator(keys, grants=_Grants({("agent", jit.name)}))
    assert _result(granted.admit(agent, jit)) is None
    # The grant does not replace allow_groups.
    outsider = Identity(name="agent", groups=frozenset({"other"}))
    assert _result(granted.admit(outsider, jit)).check(AccessDenied)


# -- a slow store (hoopgw.store.calls) ------------------------------------------------------------


class _SlowStoreCalls(StoreCalls):
    """Store calls that wait until the test runs them: a store a network away, and slow."""

    def __init__(self) -> None:
        super().__init__(None)
        self.queued: list[tuple[defer.Deferred, object, tuple, dict]] = []

    def call(self, fn, *args, **kwargs):
        d: defer.Deferred = defer.Deferred()
        self.queued.append((d, fn, args, kwargs))
        return d

    def run(self) -> None:
        queued, self.queued = self.queued, []
        for d, fn, args, kwargs in queued:
            defer.maybeDeferred(fn, *args, **kwargs).chainDeferred(d)


def test_a_login_waits_for_the_store_without_holding_anything_else(keys, clock):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    calls = _SlowStoreCalls()
    authn, _ = _authn(keys, clock, calls=calls)
    first = authn.authenticate(secret, client_address="10.0.0.1:5")
    second = authn.authenticate(secret, client_address="10.0.0.2:5")
    # Both checks are under way on the store's threads; the caller got control back.
    assert not first.called and not second.called and len(calls.queued) == 2
    calls.run()
    assert _result(first).name == _result(second).name == "agent-1"


def test_a_store_error_on_the_store_thread_refuses_the_login_as_unavailable(
    keys, clock, monkeypatch
):
    secret, _ = keys.create("agent-1", ["agents"], now=NOW)
    calls = _SlowStoreCalls()
    authn, audit = _authn(keys, clock, calls=calls)

    def unavailable(key_id):
        raise StoreError("connection refused")

    monkeypatch.setattr(keys._store, "get_key", unavailable)
    answer = authn.authenticate(secret, client_address="10.0.0.1:5")
    calls.run()
    failure = _result(answer)
    assert failure.check(StoreError) and str(failure.value) == STORE_UNAVAILABLE
    assert audit.records == []


def test_the_grant_check_runs_on_the_store_threads(keys):
    import attrs

    from hoopgw.session import Identity

    jit = attrs.evolve(_connection(("agents",)), access="jit", jit_approvers=("leads",))
    agent = Identity(name="agent", groups=frozenset({"agents"}))
    calls = _SlowStoreCalls()
    authn = Authenticator(keys, grants=_Grants({("agent", "pg")}), calls=calls)
    admitted = authn.admit(agent, jit)
    assert not admitted.called
    calls.run()
    assert _result(admitted) is None


def test_the_key_check_reads_the_store_off_the_reactor_then_ends_sessions(keys, clock):
    secret, record = keys.create("agent-1", ["agents"], now=NOW)
    calls = _SlowStoreCalls()
    authn, _ = _authn(keys, clock, calls=calls)
    login = authn.authenticate(secret, client_address="10.0.0.1:5")
    calls.run()
    identity = _result(login)
    ended = []

    class Session:
        def __init__(self):
            self.identity = identity

        def terminate(self, reason):
            ended.append(reason)

    keys.revoke(record.key_id, now=NOW + 1)
    authn.start([Session()], key_check_interval=5.0)
    clock.advance(5)
    assert ended == [] and len(calls.queued) == 1
    # A check still under way is not started twice.
    clock.advance(5)
    assert len(calls.queued) == 1
    calls.run()
    assert ended == [f"API key {record.key_id} has been revoked"]
    authn.stop()


def test_a_key_check_that_cannot_read_the_store_runs_again_at_the_next_turn(
    keys, clock, monkeypatch
):
    authn, _ = _authn(keys, clock)
    identity = Identity(name="agent", method="api-key", credential_id="0123456789ab")
    ended = []

    class Session:
        def __init__(self):
            self.identity = identity

        def terminate(self, reason):
            ended.append(reason)

    def unavailable(key_id):
        raise StoreError("connection refused")

    monkeypatch.setattr(keys._store, "get_key", unavailable)
    authn.start([Session()], key_check_interval=5.0)
    clock.advance(5)
    assert ended == []
    monkeypatch.undo()
    clock.advance(5)
    assert ended == ["API key 0123456789ab has been revoked"]
    authn.stop()
