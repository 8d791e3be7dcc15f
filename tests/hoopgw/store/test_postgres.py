"""Tests for hoopgw.store.postgres: what a store shared by several gateway instances adds to
the contract (conftest.py runs the contract itself on both back ends), on a real database."""

from __future__ import annotations

import socket
import threading

import pytest

from hoopgw.audit.chain import GENESIS_HASH, chain_genesis, verify_chain
from hoopgw.errors import StoreError
from hoopgw.records import AuditEntry
from hoopgw.store import open_store
from hoopgw.store.migrations import LATEST_VERSION, POSTGRESQL, current_version
from hoopgw.store.postgres import PostgresStore, _query, redacted

postgresql = pytest.mark.parametrize("backend", ["postgresql"])
"""The fixtures of conftest.py, on the PostgreSQL back end only."""


def note(session_id: str, n: int) -> AuditEntry:
    return AuditEntry(kind="note", session_id=session_id, time=float(n), data={"n": n})


@postgresql
def test_each_instance_appends_its_own_chain(open_test_store) -> None:
    a, b = open_test_store("gw-a"), open_test_store("gw-b")
    a.append([note("s1", 1), note("s1", 2)], journal_mark=5)
    b.append([note("s2", 3)], journal_mark=9)
    a.append([note("s1", 4)])
    assert [(r.seq, r.instance) for r in a.records()] == [(1, "gw-a"), (2, "gw-a"), (3, "gw-a")]
    assert [(r.seq, r.instance) for r in b.records()] == [(1, "gw-b")]
    assert verify_chain(a.records(), instance="gw-a").ok
    assert verify_chain(b.records(), instance="gw-b").ok
    assert (a.journal_mark(), b.journal_mark()) == (5, 9)
    assert a.instances() == ["gw-a", "gw-b"]
    assert a.chain("gw-b").last_record() == b.last_record()


@postgresql
def test_a_chain_does_not_verify_as_another_instances(open_test_store) -> None:
    a = open_test_store("gw-a")
    [first] = a.append([note("s1", 1)])
    assert first.prev_hash == chain_genesis("gw-a") != GENESIS_HASH
    result = verify_chain(a.records(), instance="gw-b")
    assert not result.ok
    assert "prev_hash" in result.problem


@postgresql
def test_two_writers_of_one_chain_never_take_the_same_seq(open_test_store) -> None:
    # Two processes with one instance id would be a misconfiguration; the chain stays whole.
    writers = [open_test_store("gw-a") for _ in range(2)]
    errors: list[BaseException] = []

    def write(store, session_id: str) -> None:
        try:
            for n in range(25):
                store.append([note(session_id, n), note(session_id, n)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(store, f"s{i}")) for i, store in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    result = verify_chain(writers[0].records(), instance="gw-a")
    assert result.ok
    assert result.checked == 100


@postgresql
def test_pruning_one_chain_leaves_the_others(open_test_store) -> None:
    a, b = open_test_store("gw-a"), open_test_store("gw-b")
    a.append([note("s1", 1), note("s1", 2)])
    b.append([note("s2", 1)])
    pruned = a.prune(older_than=10.0, now=20.0)
    assert pruned is not None and pruned.instance == "gw-a"
    assert verify_chain(a.records(), instance="gw-a").ok
    assert [r.seq for r in b.records()] == [1]
    assert verify_chain(b.records(), instance="gw-b").ok


@postgresql
def test_instances_migrating_at_once_end_at_the_latest_version(store_url) -> None:
    stores = [open_store(store_url, instance=f"gw-{i}") for i in range(3)]
    errors: list[BaseException] = []

    def migrate(store) -> None:
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert current_version(stores[0]._conn, POSTGRESQL) == LATEST_VERSION
    finally:
        for store in stores:
            store.close()


@postgresql
def test_session_prefixes_compare_by_code_point(any_store) -> None:
    started = [
        AuditEntry(kind="session_started", session_id=sid, time=1.0, data={})
        for sid in ("ab1", "aB2", "ab3", "b")
    ]
    any_store.append(started)
    assert any_store.session_ids_starting("ab", limit=5) == ["ab1", "ab3"]


@postgresql
def test_the_store_is_writable_and_answers_after_a_lost_connection(any_store, pg_server) -> None:
    assert any_store.writable()
    any_store.append([note("s1", 1)])
    import psycopg

    # End every other connection to the database (as a server restart would).
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", autocommit=True
    ) as admin:
        database = any_store.path.rsplit("/", 1)[1]
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    # The pool checks a connection before lending it: the next call gets a new one.
    assert any_store.append([note("s1", 2)])[0].seq == 2


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://gw:s3cret@127.0.0.1:{port}/audit", instance="gw-a")
    assert f"postgresql://gw@127.0.0.1:{port}/audit" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_redacted_drops_the_password_and_query() -> None:
    assert (
        redacted("postgresql://gw:s3cret@db.example:5433/audit?sslmode=verify-full")
        == "postgresql://gw@db.example:5433/audit"
    )
    assert redacted("postgresql://[::1]/audit") == "postgresql://[::1]/audit"


def test_placeholders_become_psycopgs_and_percent_signs_stay_literal() -> None:
    assert _query("SELECT '%' WHERE a = ? AND b = ?") == "SELECT '%%' WHERE a = %s AND b = %s"


def test_a_sqlite_store_refuses_an_instance(tmp_path) -> None:
    from hoopgw.errors import ConfigError

    with pytest.raises(ConfigError, match="instance"):
        open_store(f"sqlite:///{tmp_path / 'h.db'}", instance="gw-a")


@postgresql
def test_a_failing_query_is_a_store_error_naming_the_store(any_store) -> None:
    assert isinstance(any_store, PostgresStore)
    any_store._conn.execute("DROP TABLE ssh_keys")
    any_store._conn.execute("DROP TABLE api_keys")
    with pytest.raises(StoreError, match="ssh_keys"):
        any_store.list_ssh_keys()
    with pytest.raises(StoreError, match=r"in the PostgreSQL store postgresql://postgres@"):
        any_store.get_key("x")


@postgresql
def test_threads_share_one_store_each_in_its_own_transaction(open_test_store) -> None:
    # The gateway's store calls run on several threads (hoopgw.store.calls): one thread's
    # transaction must neither block nor take in another thread's statements.
    store = open_test_store("gw-a")
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(n: int) -> None:
        try:
            start.wait(10)
            for i in range(10):
                store.append([note(f"s{n}", i), note(f"s{n}", i)])
                assert store.get_key("000000000000") is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [r.seq for r in store.records()] == list(range(1, 81))
    assert verify_chain(store.records(), instance="gw-a").ok
