"""hoopgw.shell against the real bash: for random command lines the judge accepts, every
program bash runs, with its arguments, is one the judge saw (issue 14, class 12)."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from hoopgw import shell

pytestmark = pytest.mark.integration

BASH = shutil.which("bash") or "/bin/bash"
PROGRAMS = ("p0", "p1", "p2")
WORDS = [
    "a",
    "-r",
    "-rf",
    "--force",
    "'q u'",
    '"d q"',
    "\\;",
    "a\\ b",
    '"$V"',
    "$V",
    "${V}",
    "'$V'",
    '"a$V"',
    "x\\\ny",
    "$'\\x41'",
    "~",
    "a=b",
    "{a,-r}",
    "'|'",
    '"&&"',
    "\\#",
    "2>/dev/null",
    ">/dev/null",
    "$((1+2))",
    '"$@"',
]
OPERATORS = [";", "&&", "||", "|", "|&", "\n", "&"]


def _command(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth < 2 and roll < 0.1:
        return f"( {_line(rng, depth + 1)} )"
    if depth < 2 and roll < 0.2:
        return f"{{ {_line(rng, depth + 1)}; }}"
    if depth < 2 and roll < 0.25:
        return f"if {_command(rng, depth + 1)}; then {_line(rng, depth + 1)}; fi"
    prefix = "X=1 " if rng.random() < 0.1 else ""
    words = [rng.choice(WORDS) for _ in range(rng.randrange(4))]
    return prefix + " ".join([rng.choice(PROGRAMS), *words])


def _line(rng: random.Random, depth: int = 0) -> str:
    parts = [_command(rng, depth)]
    for _ in range(rng.randrange(3)):
        parts += [rng.choice(OPERATORS), _command(rng, depth)]
    return " ".join(parts)


def _matches(seen: tuple[str, ...], ran: list[str]) -> bool:
    """Whether the words the judge saw can expand to the words bash passed."""
    if not seen:
        return not ran
    head, rest = seen[0], seen[1:]
    if head == shell.ANY:
        return any(_matches(rest, ran[i:]) for i in range(len(ran) + 1))
    if not ran:
        return False
    word = "/h" + head[1:] if head.startswith("~") else head  # HOME is /h
    return (head == shell.ONE or word == ran[0]) and _matches(rest, ran[1:])


def _seen(script: shell.ParsedScript) -> list[tuple[str, ...]]:
    commands = []
    for pipeline in script.pipelines:
        for stage in pipeline:
            for words in shell.simple_words(stage):
                start = 0
                while start < len(words) and words[start].assignment is not None:
                    start += 1  # leading assignments: not words of the command
                commands.append(tuple(w.text for w in words[start:]))
    return commands


def test_what_bash_runs_is_what_the_judge_saw(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in PROGRAMS:
        shim = bin_dir / program
        # One write per record: stages of a pipeline run at once.
        shim.write_text(
            '#!/bin/sh\nus=$(printf "\\037"); out=""\n'
            'for a in "${0##*/}" "$@"; do out="$out$a$us"; done\n'
            'printf "%s\\036" "$out" >> "$LOG"\n'
        )
        shim.chmod(0o755)
    rng = random.Random(14)
    checked = 0
    for index in range(300):
        line = _line(rng)
        log = tmp_path / f"log{index}"  # a background job of an earlier line may still write
        try:
            script = shell.parse(line)
        except shell.UnparseableCommand:
            continue  # refused by the judge: whatever bash would do
        log.write_bytes(b"")
        subprocess.run(
            [BASH, "-c", line + "\nwait"],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "V": "-r  z", "HOME": "/h"},
            cwd=tmp_path,
            capture_output=True,
            timeout=10,
            check=False,
        )
        seen = _seen(script)
        for record in log.read_text().split("\x1e")[:-1]:
            ran = record.split("\x1f")[:-1]
            assert any(_matches(s, ran) for s in seen), (line, ran, seen)
        checked += 1
    assert checked > 100


PIECES = [
    *"ab -;&|<>(){}'\"\\\n$",
    *("if ", "then ", "fi", "do ", "done", "for x in a", "for ", "while ", "function "),
    *("$((", "${", "$'", "|&", "&&", "||", "f()", " ls", "else ", "{ ", "( ", "((", "2>"),
    *("x=1 ", "}", ")", "; ", "in "),
]


def test_the_judge_waits_for_more_only_where_bash_does() -> None:
    # A line the judge holds as continued while bash gives it up (a syntax error) would let
    # the next line run alone but be judged inside the held text (in an open quote, say).
    rng = random.Random(12)
    held = 0
    for _ in range(2500):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 16)))
        if text.lstrip().startswith(("-", "+")) or text.rstrip(" ").endswith("\\"):
            continue  # bash's own options; a trailing backslash continues only when typed
        if not shell.needs_more(text):
            continue
        held += 1
        checked = subprocess.run(
            [BASH, "-n", "-c", text + "\n"], capture_output=True, text=True, check=False
        )
        waits = ("unexpected end of file", "unexpected EOF")
        assert any(w in checked.stderr for w in waits), (text, checked.stderr)
    assert held > 100
