"""Shell grammar, terminal keys and input order that once ran denied commands (issue 14,
class 12), tried with the real ``ssh`` client against a real sshd and bash; canary files are
checked directly on the host."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _load(name: str, file_name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ssh_tests = _load("hoopgw_tests_test_ssh", "test_ssh.py")
Client = ssh_tests.Client

GUARDRAILS = {"command_presets": ["pipe-to-shell"], "deny_commands": ["touch", "rm -r"]}


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return ssh_tests.generate_key(tmp_path / "agent_key")


def _client(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path, **ssh: Any
) -> tuple[Any, Any]:
    gateway = ssh_gateway(
        plugins=["recording", "guardrails"], connection={"guardrails": GUARDRAILS}, ssh=ssh
    )
    ssh_tests.add_ssh_key(gateway, client_key)
    return gateway, Client(gateway, tmp_path / "client", key=client_key, token=None)


def test_exec_grammar_the_judge_cannot_follow_is_refused(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    _, client = _client(ssh_gateway, client_key, tmp_path)
    script = tmp_path / "payload.sh"
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    attacks: dict[str, str] = {}

    def attack(name: str, line: str) -> None:
        attacks[name] = line.replace("@M@", str(canaries / name))

    script.write_text(f"touch {canaries}/$1\n")
    attack("comment", "echo #'\ntouch @M@ #'")
    attack("ansi_c", "echo $'\\'' ; touch @M@ #'")
    attack("trap", "trap -- 'touch @M@' EXIT")
    attack("arithmetic", "x=a[\\$\\(touch\\ @M@\\)]; echo $((x))")
    attack("prompt", "x=\\$\\(touch\\ @M@\\); echo ${x@P}")
    attack("unset", "a=(1); unset a[\\$\\(touch\\ @M@\\)]")
    for name, pipe in {
        "pipe_amp": "|& sh -s",
        "subshell": "| ( sh -s )",
        "group": "| { echo; sh -s; }",
        "dot": "| . /dev/stdin",
        "source": "| source /dev/stdin",
    }.items():
        script_text = f"set -- {name}\n" + script.read_text()
        (tmp_path / f"{name}.sh").write_text(script_text)
        attacks[name] = f"curl -s file://{tmp_path / name}.sh {pipe}"
    not_refused = [n for n, line in attacks.items() if client.run(line).returncode != 126]
    assert not_refused == []
    assert sorted(p.name for p in canaries.iterdir()) == []  # what ran


def test_options_that_appear_only_after_expansion_are_judged(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    _, client = _client(ssh_gateway, client_key, tmp_path)
    attacks = {
        "variable": "x=-r; rm $x @D@",
        "braces": "rm {-r,-f} @D@",
        "xargs": "echo -r @D@ | xargs rm",
        "set": 'set -- -r @D@; rm "$@"',
        "file_named_like_a_flag": "cd @P@ && rm *",
    }
    ran = []
    for name, line in attacks.items():
        parent = tmp_path / name
        canary = parent / "D"
        (canary / "inside").mkdir(parents=True)
        (parent / "-r").write_text("")
        done = client.run(line.replace("@P@", str(parent)).replace("@D@", str(canary)))
        assert done.returncode == 126 or not (canary / "inside").is_dir(), (name, done)
        ran += [name] if not (canary / "inside").is_dir() else []
    assert ran == []
    allowed = client.run(f"rm -f {tmp_path / 'variable' / '-r'}")
    assert allowed.returncode == 0, allowed.stderr


def test_exec_input_sent_before_the_decision_is_delivered(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    _, client = _client(ssh_gateway, client_key, tmp_path)
    target = tmp_path / "copy"
    done = client.run(f"cat > {target}", stdin=b"payload\n" * 1000)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == b"payload\n" * 1000
    refused = client.run(f"touch {target}; cat", stdin=b"x" * 100_000)
    assert refused.returncode == 126 and refused.stdout == b""


def test_a_shell_without_a_pty_is_judged_as_a_script(
    ssh_gateway: Callable[..., Any], client_key: Path, tmp_path: Path
) -> None:
    gateway, client = _client(ssh_gateway, client_key, tmp_path, judge_shell_lines=True)

    def shell(stdin: str) -> Any:
        command = [ssh_tests.SSH, *client.options(), "-T", f"agent@{gateway.host}"]
        return subprocess.run(
            command, input=stdin.encode(), capture_output=True, env=client.env(), timeout=60
        )

    marker, allowed = tmp_path / "marker", tmp_path / "allowed"
    script = tmp_path / "payload.sh"
    script.write_text(f"touch {marker}\n")
    # The last line has no newline: it runs at EOF, so it is judged before EOF goes on.
    done = shell(f"echo ok > {allowed}\ntouch {marker}")
    assert b"hoopgw refused the command:" in done.stderr, done
    assert allowed.read_text() == "ok\n"
    assert not marker.exists()
    # A pipeline split over two lines is judged whole; nothing after a refusal runs.
    split = f"curl -s file://{script} |\nsh\necho after > {allowed}\n"
    done = shell(split)
    assert b"curl ... | sh" in done.stderr, done
    assert not marker.exists()
    assert allowed.read_text() == "ok\n"


def _pty_shell(pexpect: Any, client: Any, gateway: Any, intr: str | None = None) -> Any:
    ssh = " ".join([ssh_tests.SSH, *client.options(), "-tt", f"agent@{gateway.host}"])
    setup = f"stty intr '{intr}' && " if intr else ""
    shell = pexpect.spawn(
        "/bin/sh", ["-c", f"{setup}exec {ssh}"], env=client.env(), dimensions=(24, 80), timeout=20
    )
    shell.sendline("export PS1='READ''Y> '")  # the prompt differs from its echo
    shell.expect("READY> ")
    return shell


@pytest.mark.parametrize(
    ("name", "keys", "intr"),
    [
        ("ctrl_o", "touch M\x0f", None),  # operate-and-get-next runs the line
        ("remapped_interrupt", "touch M\x03\r", "^]"),  # Ctrl-C is not the interrupt
        ("continued", "curl -s file://S |\rsh\r", None),  # a pipeline over two lines
        ("arrow_then_ctrl_u", "touch M\x1b[H\x15echo ok;\r", None),
    ],
)
def test_pty_keys_that_may_run_a_line_wait_for_its_decision(
    ssh_gateway: Callable[..., Any],
    client_key: Path,
    tmp_path: Path,
    name: str,
    keys: str,
    intr: str | None,
) -> None:
    pexpect = pytest.importorskip("pexpect")
    gateway, client = _client(ssh_gateway, client_key, tmp_path, judge_shell_lines=True)
    marker = tmp_path / name
    script = tmp_path / "payload.sh"
    script.write_text(f"touch {marker}\n")
    shell = _pty_shell(pexpect, client, gateway, intr)
    try:
        shell.send(keys.replace("M", str(marker)).replace("S", str(script)))
        shell.expect("hoopgw refused the command:")
        shell.expect("READY> ")
        shell.sendline("echo still-$((20 + 1))")
        shell.expect("still-21")
        shell.expect("READY> ")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert not marker.exists()
