"""Tests for :mod:`hoopgw.config.connections`: a protocol's own table, validated by the options
the protocol declares (:attr:`hoopgw.protocol.ProtocolSpec.options`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from hoopgw.config import connections
from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError
from hoopgw.plugin import Option
from hoopgw.protocol import ProtocolSpec, ProtocolTable, load_protocol

CONNECTION = """
[[connections]]
name = "db"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
credential = {{ user = "app"{credential} }}
{table}
"""


@attrs.frozen
class Settings:
    depth: int
    where: str


def _read(table: ProtocolTable) -> Settings:
    if table.values["depth"] > 3 and table.credential.password is None:
        raise table.error("more than 3 needs a password", "depth")
    return Settings(depth=table.values["depth"], where=table.path("data"))


@pytest.fixture
def declared(monkeypatch: pytest.MonkeyPatch) -> list[ProtocolTable]:
    """PostgreSQL, as if it declared a ``depth`` option and a reader of its table."""
    seen: list[ProtocolTable] = []

    def read(table: ProtocolTable) -> Settings:
        seen.append(table)
        return _read(table)

    spec = attrs.evolve(
        load_protocol("postgres"),
        options=(Option(name="depth", type=int, default=1, help="how deep"),),
        read_options=read,
    )
    monkeypatch.setattr(connections, "load_protocol", lambda name: spec)
    return seen


def _parse(tmp_path: Path, table: str = "", credential: str = "") -> Any:
    text = CONNECTION.format(table=table, credential=credential)
    return parse_config(text, base_dir=tmp_path).connections[0]


def test_the_protocol_reads_its_validated_table(
    tmp_path: Path, declared: list[ProtocolTable]
) -> None:
    connection = _parse(tmp_path, "[connections.postgres]\ndepth = 2")
    assert connection.protocol_options == Settings(depth=2, where=str(tmp_path / "data"))
    [table] = declared
    assert (table.protocol, table.connection, table.base_dir) == ("postgres", "db", tmp_path)
    assert table.credential.user == "app"


def test_the_reader_runs_without_a_table_with_defaults_filled_in(
    tmp_path: Path, declared: list[ProtocolTable]
) -> None:
    assert _parse(tmp_path).protocol_options.depth == 1


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ("[connections.postgres]\ndeep = 2", "postgres.deep", "unknown option for protocol"),
        ('[connections.postgres]\ndepth = "2"', "postgres.depth", "expected int"),
        ("[connections.postgres]\ndepth = 4", "postgres.depth", "needs a password"),
        ("[connections.ssh]\nallow_sftp = true", "ssh", 'protocol = "ssh"'),
    ],
)
def test_errors_name_the_key_of_the_protocol_table(
    tmp_path: Path, declared: list[ProtocolTable], table: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _parse(tmp_path, table)
    assert (caught.value.key, caught.value.connection) == (key, "db")


def test_a_protocol_without_options_has_no_table(tmp_path: Path) -> None:
    assert _parse(tmp_path).protocol_options is None
    with pytest.raises(ConfigError) as caught:
        _parse(tmp_path, "[connections.postgres]\ndepth = 2")
    assert caught.value.key == "postgres.depth"


def test_a_credential_the_protocol_does_not_log_in_with_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("x")
    with pytest.raises(ConfigError, match="does not log in with a private_key") as caught:
        _parse(tmp_path, credential=', private_key = "file:key"')
    assert caught.value.key == "credential.private_key"


def test_a_protocol_that_is_not_installed_is_named(tmp_path: Path) -> None:
    text = CONNECTION.format(table="", credential="").replace('"postgres"', '"mongodb"')
    with pytest.raises(ConfigError, match="'mongodb' is not installed") as caught:
        parse_config(text, base_dir=tmp_path)
    assert caught.value.key == "protocol"


def test_the_spec_defaults_declare_nothing() -> None:
    spec = ProtocolSpec(name="x", build_factory=lambda runtime: None)
    assert spec.options == () and spec.read_options is None and spec.read_columns is None
    assert spec.credentials == frozenset({"password"})
