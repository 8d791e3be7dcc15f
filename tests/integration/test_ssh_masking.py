"""Masking on SSH: personal data printed by the host reaches neither the client nor the
recording, also when the host writes a value in two pieces."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hoopgw.audit.asciicast import read_asciicast

pytestmark = pytest.mark.integration

EMAIL = "alice.liddell@example.com"
CARD = "4111 1111 1111 1111"


def _ssh_tests() -> Any:
    name = "hoopgw_tests_test_ssh"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_ssh.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ssh_tests = _ssh_tests()


def test_pii_printed_by_the_host_is_masked_for_client_and_recording(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    gateway = ssh_gateway(plugins=["masking", "recording"])
    key = ssh_tests.generate_key(tmp_path / "agent_key")
    ssh_tests.add_ssh_key(gateway, key)
    client = ssh_tests.Client(gateway, tmp_path / "client", key=key, token=None)
    half = len(EMAIL) // 2
    data = tmp_path / "customers.txt"
    data.write_text(f"mail: {EMAIL}\n")
    cards = tmp_path / "cards.txt"
    cards.write_text(f"card: {CARD}\n")
    cut = len("mail: ") + half
    # The e-mail address leaves the host in two writes, 50 ms apart; the card on stderr.
    done = client.run(
        f"head -c {cut} {data}; sleep 0.05; tail -c +{cut + 1} {data}; cat {cards} >&2; echo done"
    )
    assert done.returncode == 0, done.stderr
    assert EMAIL.encode() not in done.stdout
    assert EMAIL[:half].encode() not in done.stdout
    assert done.stdout.startswith(b"mail: ")
    assert done.stdout.endswith(b"done\n")
    assert CARD.encode() not in done.stderr
    assert done.stderr.startswith(b"card: ")

    [session_id] = ssh_tests.session_ids(gateway)
    replayed = gateway.cli("replay", session_id, "--asciicast")
    cast = read_asciicast(io.StringIO(replayed.stdout))
    assert "mail: " in cast.output()
    assert EMAIL[:half] not in cast.output()
    assert CARD not in cast.output()
    store = b"".join(p.read_bytes() for p in gateway.config_path.parent.glob("hoopgw.db*"))
    assert b"terminal_output" in store
    assert EMAIL[:half].encode() not in store
    assert CARD.encode() not in store


def test_the_ssh_user_name_and_the_command_line_are_recorded_masked(
    ssh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    # The user name the client gives (key authentication names the identity) and the exec
    # command line are client-chosen text recorded with the session and the command.
    gateway = ssh_gateway(plugins=["masking", "recording"])
    key = ssh_tests.generate_key(tmp_path / "agent_key")
    ssh_tests.add_ssh_key(gateway, key)
    client = ssh_tests.Client(gateway, tmp_path / "client", key=key, token=None)
    done = subprocess.run(
        [ssh_tests.SSH, *client.options(), f"{EMAIL}@{gateway.host}", f"echo {CARD} >/dev/null"],
        capture_output=True,
        env=client.env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    gateway.stop()
    store = b"".join(p.read_bytes() for p in gateway.config_path.parent.glob("hoopgw.db*"))
    assert b"session_started" in store and b"[EMAIL]" in store
    assert EMAIL.encode() not in store
    assert CARD.encode() not in store
