"""Tests for the PostgreSQL helper of the integration tests and the fixtures built on it."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest


def _load_pgserver() -> Any:
    name = "hoopgw_tests_pgserver"  # the name tests/conftest.py registers it under
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("pgserver.py"))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


pgserver = _load_pgserver()


def test_address_from_env_defaults_to_local_5432() -> None:
    assert pgserver.address_from_env({}) == pgserver.PgAddress(host="127.0.0.1", port=5432)


def test_address_from_env_reads_host_and_port() -> None:
    environ = {"HOOPGW_TEST_PGHOST": "db.example", "HOOPGW_TEST_PGPORT": "6543"}
    assert pgserver.address_from_env(environ) == pgserver.PgAddress(host="db.example", port=6543)


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_address_from_env_rejects_a_bad_port(port: str) -> None:
    with pytest.raises(ValueError, match="HOOPGW_TEST_PGPORT"):
        pgserver.address_from_env({"HOOPGW_TEST_PGPORT": port})


def test_cli_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        pgserver.main([])


@pytest.mark.integration
def test_server_answers_for_the_test_server(pg_server: Any) -> None:
    assert pgserver.server_answers(pg_server)


@pytest.mark.integration
def test_server_answers_is_false_for_a_port_nobody_listens_on() -> None:
    address = pgserver.PgAddress(host="127.0.0.1", port=pgserver.free_port())
    assert not pgserver.server_answers(address, timeout=1.0)


@pytest.mark.integration
def test_server_answers_is_false_for_a_server_that_is_not_postgres() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = pgserver.PgAddress(host="127.0.0.1", port=listener.getsockname()[1])
        # Accepted by the backlog, never answered: the probe times out.
        assert not pgserver.server_answers(address, timeout=0.5)


@pytest.mark.integration
def test_port_is_free_is_false_while_something_listens() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not pgserver.port_is_free("127.0.0.1", listener.getsockname()[1])


@pytest.mark.integration
def test_pg_database_is_a_fresh_database_we_can_use(pg_server: Any, pg_database: str) -> None:
    assert pg_database.startswith("hgw_test_")
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)


@pytest.mark.integration
def test_throwaway_cluster_starts_on_another_port_when_the_preferred_one_is_taken(
    pg_server: Any, tmp_path: Path
) -> None:
    address, data_dir = pgserver.start_cluster(
        tmp_path, host="127.0.0.1", preferred_port=pg_server.port
    )
    try:
        assert address.port != pg_server.port
        with psycopg.connect(
            host=address.host, port=address.port, user="postgres", dbname="postgres"
        ) as connection:
            assert connection.execute("SHOW fsync").fetchone() == ("off",)
    finally:
        pgserver.stop_cluster(data_dir)
    assert not data_dir.exists()
    assert not pgserver.server_answers(address, timeout=1.0)
