"""The agent's config file: every error names the key, as the gateway's do."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoopgw.agent.config import load_agent_config, parse_agent_config
from hoopgw.errors import ConfigError

PIN = "sha256:" + ":".join(["AB"] * 32)


def document(**keys: str) -> str:
    base = {
        "gateway": '"gw.example.com:8444"',
        "token": '"file:token"',
        "pin": f'"{PIN}"',
        "allow": '["db.internal:5432"]',
    }
    base.update(keys)
    return "[agent]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("hga_0123456789ab_" + "x" * 43 + "\n")
    (tmp_path / "ca.pem").write_text("placeholder")
    return tmp_path


def test_a_valid_config(folder: Path) -> None:
    config = parse_agent_config(document(), base_dir=folder)
    assert (config.gateway_host, config.gateway_port) == ("gw.example.com", 8444)
    assert config.token.reveal() == "hga_0123456789ab_" + "x" * 43
    assert config.pin == bytes([0xAB] * 32)
    assert config.server_name == "gw.example.com"
    assert config.allow.permits("db.internal", 5432)
    assert "hga_" not in repr(config)


def test_a_ca_file_instead_of_a_pin(folder: Path) -> None:
    config = parse_agent_config(
        document(pin="", ca_file='"ca.pem"', server_name='"gateway.internal"'), base_dir=folder
    )
    assert config.ca_file == str(folder / "ca.pem")
    assert config.pin is None and config.server_name == "gateway.internal"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"gateway": ""}, "key 'agent.gateway': required"),
        (
            {"gateway": '"gw.example.com"'},
            "key 'agent.gateway': 'gw.example.com' must be HOST:PORT",
        ),
        ({"token": '"env:HOOPGW_NO_SUCH_VARIABLE"'}, "key 'agent.token': environment variable"),
        ({"allow": "[]"}, "key 'agent.allow': must name at least one target"),
        ({"allow": '["*:5432"]'}, "key 'agent.allow': entry 1 ('*:5432'): a host of *"),
        ({"allow": '["0.0.0.0/0:*"]'}, "matches every address"),
        ({"allow": "[5432]"}, "key 'agent.allow': expected a list of HOST:PORT strings"),
        ({"pin": ""}, "key 'agent.ca_file': set exactly one of ca_file"),
        ({"ca_file": '"ca.pem"'}, "key 'agent.ca_file': set exactly one of ca_file"),
        ({"pin": '"sha256:abcd"'}, "key 'agent.pin': must be sha256:"),
        ({"pin": "", "ca_file": '"missing.pem"'}, "key 'agent.ca_file': "),
        (
            {"silence_limit": "0"},
            "key 'agent.silence_limit': must be a finite number greater than 0",
        ),
        ({"log_level": '"loud"'}, "key 'agent.log_level': must be one of"),
        ({"listen": '"tcp:1"'}, "key 'agent.listen': unknown key"),
    ],
)
def test_errors_name_the_key(folder: Path, keys: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_agent_config(document(**keys), base_dir=folder)
    assert message in str(raised.value)


def test_the_agent_table_is_required_and_alone(folder: Path) -> None:
    with pytest.raises(ConfigError, match="the \\[agent\\] table"):
        parse_agent_config("", base_dir=folder)
    with pytest.raises(ConfigError, match="unknown table"):
        parse_agent_config(document() + "[gateway]\n", base_dir=folder)
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_agent_config("[agent", base_dir=folder)


def test_load_reads_relative_paths_from_the_files_folder(folder: Path) -> None:
    path = folder / "agent.toml"
    path.write_text(document())
    assert load_agent_config(path).token.reveal().startswith("hga_")
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(folder / "missing.toml")
