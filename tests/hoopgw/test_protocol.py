"""Tests for :mod:`hoopgw.protocol`: protocol loading and a protocol's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hoopgw.connection import CredentialConfig
from hoopgw.errors import ConfigError, PluginError
from hoopgw.protocol import ProtocolSpec, ProtocolTable, load_protocol


def test_load_postgres_protocol() -> None:
    spec = load_protocol("postgres")
    assert isinstance(spec, ProtocolSpec)
    assert spec.name == "postgres"


def test_load_unknown_protocol_names_installed_ones() -> None:
    with pytest.raises(PluginError, match=r"protocol 'gopher' is not installed.*postgres"):
        load_protocol("gopher")


def _table(tmp_path: Path, **values: Any) -> ProtocolTable:
    return ProtocolTable(
        protocol="ssh",
        connection="box",
        values=values,
        credential=CredentialConfig(user="u"),
        base_dir=tmp_path,
    )


def test_a_protocol_table_names_its_keys_and_resolves_paths(tmp_path: Path) -> None:
    table = _table(tmp_path, known_hosts="kh", unset=None)
    error = table.error("bad", "known_hosts")
    assert (error.key, error.connection) == ("ssh.known_hosts", "box")
    assert table.path("keys/gw") == str(tmp_path / "keys" / "gw")
    assert table.readable_file("unset") is None
    with pytest.raises(ConfigError, match="cannot read") as caught:
        table.readable_file("known_hosts")
    assert caught.value.key == "ssh.known_hosts"
    (tmp_path / "kh").write_text("")
    assert table.readable_file("known_hosts") == str(tmp_path / "kh")


def test_connect_upstream_goes_through_the_connections_connector() -> None:
    from twisted.internet import defer
    from twisted.internet.protocol import Protocol
    from twisted.internet.testing import MemoryReactorClock

    from hoopgw.protocol import ConnectionRuntime

    calls: list[tuple[str, int, object, float]] = []

    class Connector:
        def connect(self, host: str, port: int, proto: object, *, timeout: float) -> object:
            calls.append((host, port, proto, timeout))
            return defer.succeed(proto)

    fields = dict.fromkeys(("config", "gateway", "info", "chain", "authenticator", "sessions"))
    reactor = MemoryReactorClock()
    proto = Protocol()
    via = ConnectionRuntime(**fields, reactor=reactor, upstream=Connector())  # type: ignore[arg-type]
    via.connect_upstream("db.internal", 5432, proto, timeout=3)
    assert calls == [("db.internal", 5432, proto, 3)]
    # Without a connector: a direct TCP connection from the gateway.
    direct = ConnectionRuntime(**fields, reactor=reactor)  # type: ignore[arg-type]
    direct.connect_upstream("127.0.0.1", 5432, proto)
    [(host, port, *_)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 5432)
