"""Tests for the ``ssh`` protocol entry: its ``[connections.ssh]`` table (declared by
hoopgw_ssh.options) and what ``hoopgw config check`` shows about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hoopgw_ssh.hostkeys import fingerprint, load_or_create_host_key

from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError
from hoopgw.protocol import load_protocol

FINGERPRINT = "SHA256:" + "A" * 43


def _config(tmp_path: Path, ssh: str = "", credential: str = "", extra: str = "") -> Any:
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id_key").write_text("not checked here")
    text = f"""
[[connections]]
name = "box"
protocol = "ssh"
listen = "tcp:2222:interface=127.0.0.1"
target = "10.0.0.5:22"
allow_groups = ["agents"]
{extra}
[connections.credential]
user = "deploy"
{credential or 'private_key = "file:id_key"'}

[connections.ssh]
{ssh or 'known_hosts = "known_hosts"'}
"""
    return parse_config(text, base_dir=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    [connection] = _config(tmp_path).connections
    ssh = connection.protocol_options
    assert ssh.host_key == str(tmp_path / "box.ssh_host_ed25519_key")
    assert ssh.known_hosts == str(tmp_path / "known_hosts")
    assert ssh.env_allow == ()
    assert not (ssh.allow_sftp or ssh.allow_port_forwarding or ssh.allow_agent_forwarding)
    assert not (ssh.allow_x11_forwarding or ssh.judge_shell_lines)
    assert connection.credential.private_key.reveal() == "not checked here"


def test_everything_set(tmp_path: Path) -> None:
    ssh = (
        _config(
            tmp_path,
            ssh=f"""host_key = "keys/gw"
host_key_fingerprints = ["{FINGERPRINT}="]
env_allow = ["LANG", "LC_*"]
allow_sftp = true
allow_port_forwarding = true
judge_shell_lines = true""",
        )
        .connections[0]
        .protocol_options
    )
    assert ssh.host_key == str(tmp_path / "keys" / "gw")
    assert ssh.host_key_fingerprints == (FINGERPRINT,)
    assert ssh.env_allow == ("LANG", "LC_*")
    assert ssh.allow_sftp and ssh.allow_port_forwarding and ssh.judge_shell_lines


@pytest.mark.parametrize(
    ("ssh", "credential", "key"),
    [
        ("host_key_fingerprints = []", "", "ssh.known_hosts"),
        ('host_key_fingerprints = ["MD5:00"]', "", "ssh.host_key_fingerprints"),
        ('known_hosts = "missing"', "", "ssh.known_hosts"),
        ('known_hosts = "known_hosts"\nenv_allow = ["A B"]', "", "ssh.env_allow"),
        ('known_hosts = "known_hosts"\nallow_sftp = "yes"', "", "ssh.allow_sftp"),
        ('known_hosts = "known_hosts"\nshell = true', "", "ssh.shell"),
        (
            'known_hosts = "known_hosts"',
            'password = "env:HOOPGW_SURELY_UNSET_1"',
            "credential.password",
        ),
        ('known_hosts = "known_hosts"', "# none", "credential"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, ssh: str, credential: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, ssh=ssh, credential=credential)
    assert caught.value.key == key
    assert caught.value.connection == "box"


def test_ssh_table_and_private_key_only_for_ssh(tmp_path: Path) -> None:
    text = """
[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:5433:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
credential = {{ user = "postgres"{extra} }}
{table}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            text.format(extra="", table="[connections.ssh]\nallow_sftp = true"), base_dir=tmp_path
        )
    assert caught.value.key == "ssh"
    (tmp_path / "k").write_text("x")
    with pytest.raises(ConfigError) as caught:
        parse_config(text.format(extra=', private_key = "file:k"', table=""), base_dir=tmp_path)
    assert caught.value.key == "credential.private_key"


def test_describe_shows_the_host_key_fingerprint(tmp_path: Path) -> None:
    [connection] = _config(tmp_path).connections
    describe = load_protocol("ssh").describe
    assert describe is not None
    assert describe(connection)["host key"].startswith("not created yet")
    key, _ = load_or_create_host_key(connection.protocol_options.host_key)
    assert describe(connection)["host key"].startswith(fingerprint(key))


def test_config_check_shows_the_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from hoopgw.cli.main import main

    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id_key").write_text("x")
    config = tmp_path / "hoopgw.toml"
    config.write_text(
        """
[[connections]]
name = "box"
protocol = "ssh"
listen = "tcp:2222:interface=127.0.0.1"
target = "10.0.0.5:22"
allow_groups = ["agents"]
credential = { user = "deploy", private_key = "file:id_key" }
ssh = { known_hosts = "known_hosts" }
"""
    )
    key, _ = load_or_create_host_key(str(tmp_path / "box.ssh_host_ed25519_key"))
    assert main(["config", "check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ok: 1 connection (box)"
    assert f"  box: host key: {fingerprint(key)}" in out
    assert main(["config", "check", "-c", str(config), "--json"]) == 0
    [described] = json.loads(capsys.readouterr().out)["connections"]
    assert described["facts"]["host key"].startswith(fingerprint(key))
