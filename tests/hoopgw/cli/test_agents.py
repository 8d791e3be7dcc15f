"""Tests for hoopgw.cli.agents: registering agents, listing their state, revoking them, and
checking an agent's config -- against a real SQLite store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hoopgw.agent.tokens import AgentTokens
from hoopgw.cli.agents import ONLINE_WITHIN, agent_status
from hoopgw.cli.main import main
from hoopgw.store import SQLiteStore

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "agents", "create", "-c", config_file, "dc1")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("hga_") and "shown once" in err
    store = SQLiteStore(str(tmp_path / "audit.db"))
    assert AgentTokens(store).authenticate(token).name == "dc1"
    store.agent_seen("dc1", when=time.time(), online=True, address="10.0.0.2:4000")
    store.close()

    code, _, err = run(capsys, "agents", "create", "-c", config_file, "dc1")
    assert code == 1 and "exists already" in err
    code, _, err = run(capsys, "agents", "create", "-c", config_file, "Bad Name")
    assert code == 2 and "must match" in err

    code, out, _ = run(capsys, "agents", "list", "-c", config_file, "--json")
    [listed] = json.loads(out)
    assert listed["name"] == "dc1" and listed["status"] == "online"
    assert listed["address"] == "10.0.0.2:4000"
    assert token not in out and "sha256" not in out
    code, out, _ = run(capsys, "agents", "list", "-c", config_file)
    assert "dc1" in out and "STATUS" in out and "online" in out

    assert run(capsys, "agents", "revoke", "-c", config_file, "dc1")[0] == 0
    code, _, err = run(capsys, "agents", "revoke", "-c", config_file, "dc1")
    assert code == 1 and "no active agent" in err
    code, out, _ = run(capsys, "agents", "list", "-c", config_file, "--json")
    assert json.loads(out)[0]["status"] == "revoked"


def test_status_goes_stale_when_no_gateway_records_the_agent() -> None:
    assert agent_status(True, 100.0, now=100.0 + ONLINE_WITHIN) == "online"
    assert agent_status(True, 100.0, now=100.0 + ONLINE_WITHIN + 1) == "offline"
    assert agent_status(False, 100.0, now=100.0) == "offline"
    assert agent_status(True, None, now=100.0) == "offline"


def test_agent_check_prints_the_allow_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("hga_0123456789ab_" + "x" * 43)
    agent = tmp_path / "agent.toml"
    agent.write_text(
        '[agent]\ngateway = "gw:8444"\ntoken = "file:token"\npin = "sha256:' + "ab" * 32 + '"\n'
        'allow = ["db.internal:5432", "10.0.1.0/24:3306"]\n'
    )
    code, out, err = run(capsys, "agent", "-c", agent, "--check")
    assert code == 0, err
    assert out.splitlines() == [
        "gateway gw:8444",
        "allow db.internal:5432",
        "allow 10.0.1.0/24:3306",
    ]
    agent.write_text(agent.read_text().replace("db.internal:5432", "*:5432"))
    code, _, err = run(capsys, "agent", "-c", agent, "--check")
    assert code == 2 and "key 'agent.allow'" in err and "open proxy" not in err
    assert "a host of * would let the gateway reach any host" in err
