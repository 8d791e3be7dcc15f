"""Shell commands judged by what they run, not by their text (SSH ``exec`` and shell lines).

A command line is split the way a POSIX shell splits it (quotes, backslashes, line
continuations, unquoted operators even when glued together such as ``;(``): into pipelines
(``|``) of simple commands, separated by ``;``, ``&&``, ``||``, ``&``, newlines and
parentheses. Each simple command is a program and its arguments, after leading ``VAR=value``
assignments and reserved words (``then``, ``do``, ``!``, ...). Wrappers (``sudo``, ``env``,
``nohup``, ``timeout``, ``xargs``, ``busybox``, ``find -exec``, ...) are looked through, and the
string given to ``sh -c`` (``-lc`` too) / ``eval`` / ``watch`` / ``env -S`` / ``alias`` is
judged as a command line of its own.

A pattern such as ``rm -rf /`` is written the same way and matches a simple command when

- its program is the command's program (by base name: ``/bin/rm`` is ``rm``);
- each short flag of the pattern is set, in any grouping and order (``-rf``, ``-fr``,
  ``-r -f``, ``-Rf``; ``rm``'s long ``--recursive``/``--force`` count as ``-r``/``-f``);
- each long option of the pattern is given (``--force``, or ``--force=...``);
- each other word of the pattern is one of the arguments (a glob such as ``/dev/sd*`` is
  allowed; paths are normalised, so ``//`` and ``/.`` are ``/``). An argument the gateway
  cannot know (it holds ``$``, or is a glob) matches any word, so ``rm -rf $DIR`` is caught
  by ``rm -rf /``: fail closed;
- ``...`` stands for anything and may be written for readability.

A pattern with ``|`` (``curl ... | sh``) matches a pipeline in which a command matching the
left part feeds one matching the right part.

What cannot be judged is refused (rule ``unparseable``): unbalanced quotes, command or
process substitution (``$(...)``, backticks, ``<(...)``), here-documents, a program name that
is a variable. These checks do not know quoting: ``echo '$(x)'`` is refused too.
"""

from __future__ import annotations

import fnmatch
import itertools
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from hoopgw.verdicts import Block, Hold

__all__ = [
    "COMMAND_PRESETS",
    "CommandPolicy",
    "UnparseableCommand",
    "check_command_patterns",
    "check_command_presets",
    "simple_commands",
]

COMMAND_PRESETS: Mapping[str, tuple[str, ...]] = {
    "wipe-filesystem": (
        "rm -rf /",
        "rm -rf ~",
        "rm -rf --no-preserve-root",
        "mkfs",
        "mkfs.*",
        "dd of=/dev/*",
        "shred /dev/*",
        "wipefs",
    ),
    "power": (
        "shutdown",
        "reboot",
        "halt",
        "poweroff",
        "init 0",
        "init 6",
        "telinit 0",
        "telinit 6",
        "systemctl poweroff",
        "systemctl reboot",
        "systemctl halt",
        "systemctl kexec",
    ),
    "pipe-to-shell": tuple(
        f"{fetch} ... | {shell}"
        for fetch in ("curl", "wget")
        for shell in ("sh", "bash", "zsh", "dash", "ksh", "python", "python3", "perl")
    ),
}
"""Named pattern sets (``command_presets``); docs/guardrails.md lists them."""

WRAPPERS = frozenset(
    {
        "sudo",
        "doas",
        "env",
        "nice",
        "ionice",
        "nohup",
        "time",
        "timeout",
        "stdbuf",
        "xargs",
        "command",
        "builtin",
        "exec",
        "setsid",
        "chrt",
        "taskset",
        "unbuffer",
        "watch",
        "busybox",
        "toybox",
        "coproc",
        "chroot",
        "flock",
        "nsenter",
        "unshare",
        "runuser",
        "strace",
        "ltrace",
        "systemd-run",
    }
)
"""Programs that run another program given as a later argument."""
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "busybox", "su"})
"""Programs whose ``-c`` argument is itself a command line."""

KEYWORDS = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{", "}"})
"""Shell reserved words that may come before a command's program."""

_PIPE = "|"
_SEPARATORS = frozenset({";", "&&", "||", "&", "\n", "(", ")", ";;", ";&", ";;&", "|&"})
_REDIRECTIONS = frozenset({">", ">>", "<", ">&", "<&", "&>", ">|", "<>", "&>>"})
_OPERATORS = sorted(_SEPARATORS | _REDIRECTIONS | {_PIPE}, key=len, reverse=True)
_OPERATOR_CHARS = frozenset("();<>|&\n")
_UNKNOWN = "${unknown}"
"""An argument the gateway cannot know (what ``xargs`` adds, ``find``'s ``{}``): it holds
``$``, so it matches any word of a pattern."""
_COMMAND_VARIABLES = frozenset({"PROMPT_COMMAND"})
_BRACES = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
# $( but not $(( (arithmetic); a $( inside arithmetic is still found on its own.
_OPAQUE = re.compile(r"\$\((?!\()|`|<\(|>\(|<<")
_GLOB = re.compile(r"[*?\[]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_FLAG_ALIASES: Mapping[str, Mapping[str, str]] = {
    "rm": {"R": "r", "--recursive": "r", "--force": "f"},
}
_MAX_DEPTH = 16
MAX_READINGS = 10_000
"""Readings (simple commands and pipeline pairs) one command line may have; more is refused
as too complex (rule ``unparseable``)."""


class UnparseableCommand(ValueError):
    """The command line cannot be judged; the message says why."""


@attrs.frozen
class SimpleCommand:
    """One program with its arguments."""

    program: str
    """Base name of the program."""
    args: tuple[str, ...]


@attrs.frozen
class _Pattern:
    """One pattern: a pipeline of simple-command patterns."""

    text: str
    stages: tuple[SimpleCommand, ...]


# -- parsing ---------------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Split ``text`` as a POSIX shell does: each token with whether it is an operator (an
    unquoted ``;``, ``&&``, ``(``, ``>``, ...), so that a quoted ``";"`` stays a word."""
    if _OPAQUE.search(text):
        raise UnparseableCommand(
            "command substitution, process substitution or a here-document cannot be judged"
        )
    tokens: list[tuple[str, bool]] = []
    word: list[str] = []
    in_word = False  # a word has begun (it may be empty: "")
    index, end = 0, len(text)
    while index < end:
        char = text[index]
        if char in " \t\r" or char in _OPERATOR_CHARS:
            if in_word:
                tokens.append(("".join(word), False))
                word, in_word = [], False
            if char in _OPERATOR_CHARS:
                operator = next(o for o in _OPERATORS if text.startswith(o, index))
                tokens.append((operator, True))
                index += len(operator)
            else:
                index += 1
            continue
        in_word = True
        if char == "\\":
            if index + 1 == end:
                raise UnparseableCommand("cannot split the command line (No escaped character)")
            if text[index + 1] == "\n":  # a line continuation: the shell joins the lines
                in_word = bool(word)
            else:
                word.append(text[index + 1])
            index += 2
        elif char == "'":
            close = text.find("'", index + 1)
            if close < 0:
                raise UnparseableCommand("cannot split the command line (No closing quotation)")
            word.append(text[index + 1 : close])
            index = close + 1
        elif char == '"':
            quoted, index = _double_quoted(text, index + 1)
            word.append(quoted)
        else:
            word.append(char)
            index += 1
    if in_word:
        tokens.append(("".join(word), False))
    return tokens


def _double_quoted(text: str, index: int) -> tuple[str, int]:
    """The text of a double-quoted string starting at ``index``, and the index after it."""
    out: list[str] = []
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(out), index + 1
        if char == "\\" and index + 1 < len(text) and text[index + 1] in '$`"\\\n':
            if text[index + 1] != "\n":
                out.append(text[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    raise UnparseableCommand("cannot split the command line (No closing quotation)")


def _pipelines(tokens: Sequence[tuple[str, bool]]) -> Iterator[list[list[str]]]:
    pipeline: list[list[str]] = []
    words: list[str] = []
    skip_next = False
    for token, operator in tokens:
        if skip_next:
            skip_next = False
            continue
        if operator and token in _REDIRECTIONS:
            skip_next = True
            continue
        if operator:
            if words:
                pipeline.append(words)
            words = []
            if token != _PIPE and pipeline:
                yield pipeline
                pipeline = []
            continue
        words.append(token)
    if words:
        pipeline.append(words)
    if pipeline:
        yield pipeline


class _Budget:
    """How many readings judging one command line may make: wrappers of wrappers
    (``nice nice nice ...``) and long pipelines must not keep the gateway busy."""

    def __init__(self, readings: int) -> None:
        self._left = readings

    def spend(self, readings: int = 1) -> None:
        self._left -= readings
        if self._left < 0:
            raise UnparseableCommand("the command line is too complex to judge")


def _simple(
    words: Sequence[str], depth: int, budget: _Budget
) -> Iterator[tuple[SimpleCommand, ...]]:
    """The ways ``words`` can be read as a program run: itself, what a wrapper runs, and the
    commands of a ``-c`` string; each a pipeline of one or more simple commands."""
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    index = 0
    while index < len(words):
        if _ASSIGNMENT.match(words[index]) or words[index] in KEYWORDS:
            name, _, value = words[index].partition("=")
            if name in _COMMAND_VARIABLES:  # bash runs it before each prompt
                yield from _commands_of(value, depth + 1, budget)
            index += 1
        elif words[index] == "function":
            index += 2  # function NAME { ...; }: the body's commands follow
        else:
            break
    if index >= len(words):
        return
    program_word = words[index]
    if "$" in program_word:
        raise UnparseableCommand(f"the program {program_word!r} is a variable")
    if _BRACES.search(program_word):
        raise UnparseableCommand(f"the program {program_word!r} is a brace expansion")
    program = posixpath.basename(program_word)
    args = tuple(words[index + 1 :])
    budget.spend()
    yield (SimpleCommand(program, args),)
    if program in WRAPPERS:
        # xargs adds arguments the gateway cannot know.
        added = (_UNKNOWN,) if program == "xargs" else ()
        for start in range(len(args)):
            if not args[start].startswith("-"):
                yield from _simple(args[start:] + added, depth + 1, budget)
    for script in _scripts(program, args):
        yield from _commands_of(script, depth + 1, budget)
    if program == "find":
        yield from _find_exec(args, depth, budget)


def _scripts(program: str, args: Sequence[str]) -> Iterator[str]:
    """The command lines ``program`` hands to a shell: ``sh -c S`` (``-c`` in any option group,
    options after it skipped), ``eval``, ``watch``, ``env -S``, ``alias x=S``,
    ``trap S EXIT``, ``export PROMPT_COMMAND=S``."""
    if program in SHELLS:
        flag = next(
            (i for i, a in enumerate(args) if a == "--command" or _short_option(a, "c")), None
        )
        if flag is not None:
            script = _first_operand(args[flag + 1 :])
            if script is not None:
                yield script
        yield from (a.split("=", 1)[1] for a in args if a.startswith("--command="))
    if program == "eval" and args:
        yield " ".join(args)
    if program == "watch":  # runs its arguments with sh -c
        yield from (" ".join(args[i:]) for i in range(len(args)) if not args[i].startswith("-"))
    if program == "env":
        for i, arg in enumerate(args):
            if arg in ("-S", "--split-string") and i + 1 < len(args):
                yield args[i + 1]
            elif arg.startswith("--split-string="):
                yield arg.split("=", 1)[1]
            elif _short_option(arg, "S"):
                yield arg[arg.index("S") + 1 :]
    if program in ("alias", "export", "declare", "typeset", "readonly", "local"):
        yield from (
            a.split("=", 1)[1]
            for a in args
            if "=" in a and (program == "alias" or a.split("=", 1)[0] in _COMMAND_VARIABLES)
        )
    if program == "trap":  # trap 'CMD' SIGNAL...: CMD runs when a signal (or EXIT) comes
        yield from (a for a in args[:1] if not a.startswith("-"))


def _first_operand(args: Sequence[str]) -> str | None:
    """The first word of ``args`` that is not a shell option nor an option's argument (the
    shell runs it as its script: ``bash -c -o pipefail 'CMD'`` runs ``CMD``)."""
    words = iter(args)
    for word in words:
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            next(words, None)
        elif word == "--":
            return next(words, None)
        elif not word.startswith(("-", "+")):
            return word
    return None


def _short_option(arg: str, letter: str) -> bool:
    return arg.startswith("-") and not arg.startswith("--") and letter in arg[1:]


def _find_exec(
    args: Sequence[str], depth: int, budget: _Budget
) -> Iterator[tuple[SimpleCommand, ...]]:
    """What ``find ... -exec CMD {} ;`` runs (also ``-execdir``, ``-ok``, ``-okdir``)."""
    for index, arg in enumerate(args):
        if arg in ("-exec", "-execdir", "-ok", "-okdir"):
            run: list[str] = []
            for word in args[index + 1 :]:
                if word in (";", "+"):
                    break
                run.append(_UNKNOWN if "{}" in word else word)
            yield from _simple(run, depth + 1, budget)


def _commands_of(text: str, depth: int, budget: _Budget) -> Iterator[tuple[SimpleCommand, ...]]:
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    for pipeline in _pipelines(_tokens(text)):
        readings = [list(_simple(words, depth, budget)) for words in pipeline]
        # Every reading of each stage, and each pair of stages where the left one feeds the
        # right one, directly or through the stages between (curl | tee f | sh).
        for reading in readings:
            yield from reading
        for left, right in itertools.combinations(readings, 2):
            budget.spend(len(left) * len(right))
            for a in left:
                for b in right:
                    yield (a[-1], b[0])


def simple_commands(text: str) -> list[tuple[SimpleCommand, ...]]:
    """Every simple command and neighbouring pipeline pair ``text`` runs.

    :raises UnparseableCommand: if it cannot be judged.
    """
    return list(_commands_of(text, 0, _Budget(MAX_READINGS)))


def _pattern(text: str) -> _Pattern:
    stages = []
    for part in text.split("|"):
        words = [w for w, _ in _tokens(part) if w != "..."]
        if not words:
            raise ValueError(f"pattern {text!r} has an empty part")
        stages.append(SimpleCommand(words[0], tuple(words[1:])))
    return _Pattern(text=text, stages=tuple(stages))


# -- matching --------------------------------------------------------------------------------


def _normal(word: str) -> str:
    if word.startswith("/"):
        normal = posixpath.normpath(word)
        return "/" + normal.lstrip("/")
    if word == "~" or word.startswith("~/"):
        return posixpath.normpath(word)
    return word


def _flags(program: str, args: Iterable[str]) -> tuple[set[str], set[str], list[str]]:
    aliases = _FLAG_ALIASES.get(program, {})
    short: set[str] = set()
    long: set[str] = set()
    plain: list[str] = []
    options_done = False
    for arg in args:
        if options_done or arg == "-" or not arg.startswith("-"):
            plain.append(arg)
        elif arg == "--":
            options_done = True
        elif arg.startswith("--"):
            name = arg.split("=", 1)[0]
            long.add(name)
            # GNU tools take any unambiguous abbreviation: --rec is --recursive.
            short.update(
                letter
                for option, letter in aliases.items()
                if option.startswith("--") and len(name) > 2 and option.startswith(name)
            )
        else:
            short.update(aliases.get(letter, letter) for letter in arg[1:])
    return short, long, plain


def _word_matches(pattern: str, arg: str) -> bool:
    if "$" in arg:
        return True
    arg = _BRACES.sub("*", arg)  # {a,b} may expand to anything: a glob, fail closed
    pattern, arg = _normal(pattern), _normal(arg)
    if fnmatch.fnmatchcase(arg, pattern):
        return True
    return bool(_GLOB.search(arg)) and fnmatch.fnmatchcase(pattern, arg)


def _stage_matches(pattern: SimpleCommand, command: SimpleCommand) -> bool:
    if not fnmatch.fnmatchcase(command.program, pattern.program) and not (
        _GLOB.search(command.program) and fnmatch.fnmatchcase(pattern.program, command.program)
    ):
        return False
    want_short, want_long, want_plain = _flags(pattern.program, pattern.args)
    short, long, plain = _flags(command.program, command.args)
    if not want_short <= short:
        return False
    # A long option may be abbreviated (--no-preserve is --no-preserve-root).
    if not all(any(w.startswith(o) and len(o) > 2 for o in long) for w in want_long):
        return False
    return all(any(_word_matches(w, a) for a in plain) for w in want_plain)


def _matches(pattern: _Pattern, pipeline: tuple[SimpleCommand, ...]) -> bool:
    if len(pattern.stages) != len(pipeline):
        return False
    return all(_stage_matches(p, c) for p, c in zip(pattern.stages, pipeline, strict=True))


# -- options and policy ----------------------------------------------------------------------


def check_command_patterns(value: list[Any]) -> str | None:
    """Option check: a list of patterns that parse."""
    for item in value:
        if not isinstance(item, str) or not item.strip():
            return "expected a list of non-empty strings"
        try:
            _pattern(item)
        except ValueError as exc:
            return f"pattern {item!r}: {exc}"
    return None


def check_command_presets(value: list[Any]) -> str | None:
    """Option check: names of :data:`COMMAND_PRESETS`."""
    for item in value:
        if item not in COMMAND_PRESETS:
            return f"unknown preset {item!r} (known: {', '.join(COMMAND_PRESETS)})"
    return None


@attrs.frozen
class CommandPolicy:
    """Patterns that refuse (``deny_commands``, ``command_presets``) or hold
    (``review_commands``) a command line."""

    deny: tuple[_Pattern, ...]
    review: tuple[_Pattern, ...]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CommandPolicy:
        """Build the policy from the plugin's validated options."""
        deny = [*options.get("deny_commands", [])]
        for preset in options.get("command_presets", []):
            deny.extend(COMMAND_PRESETS[preset])
        return cls(
            deny=tuple(_pattern(p) for p in deny),
            review=tuple(_pattern(p) for p in options.get("review_commands", [])),
        )

    @property
    def active(self) -> bool:
        """Whether any pattern is configured."""
        return bool(self.deny or self.review)

    def judge(self, text: str) -> Block | Hold | None:
        """The verdict on a command line: refused if unparseable or denied, held if a review
        pattern matches, else None."""
        try:
            pipelines = simple_commands(text)
        except UnparseableCommand as exc:
            return Block(reason=f"unparseable: {exc} (guardrails)", rule="unparseable")
        for pattern in self.deny:
            if any(_matches(pattern, p) for p in pipelines):
                return Block(
                    reason=f"command denied by guardrails ({pattern.text!r})",
                    rule=f"deny_commands:{pattern.text}",
                )
        for pattern in self.review:
            if any(_matches(pattern, p) for p in pipelines):
                return Hold(
                    reason=f"command needs approval ({pattern.text!r})",
                    rule=f"review_commands:{pattern.text}",
                )
        return None
