"""Shell commands judged by what they run, not by their text (SSH ``exec`` and shell lines).

A command line is split the way a POSIX shell splits it (:mod:`shlex`): into pipelines
(``|``) of simple commands, separated by ``;``, ``&&``, ``||``, ``&``, newlines and
parentheses. Each simple command is a program and its arguments, after leading ``VAR=value``
assignments. Wrappers (``sudo``, ``env``, ``nohup``, ``timeout``, ``xargs``, ...) are looked
through, and the string given to ``sh -c`` / ``bash -c`` / ``eval`` is judged as a command line
of its own.

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
import shlex
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
    }
)
"""Programs that run another program given as a later argument."""
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "busybox", "su"})
"""Programs whose ``-c`` argument is itself a command line."""

_PIPE = "|"
_SEPARATORS = frozenset({";", "&&", "||", "&", "\n", "(", ")", ";;", "|&"})
_REDIRECTIONS = frozenset({">", ">>", "<", ">&", "<&", "&>", ">|", "<>", "&>>"})
# $( but not $(( (arithmetic); a $( inside arithmetic is still found on its own.
_OPAQUE = re.compile(r"\$\((?!\()|`|<\(|>\(|<<")
_GLOB = re.compile(r"[*?\[]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_FLAG_ALIASES: Mapping[str, Mapping[str, str]] = {
    "rm": {"R": "r", "--recursive": "r", "--force": "f"},
}
_MAX_DEPTH = 8


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


def _tokens(text: str) -> list[str]:
    if _OPAQUE.search(text):
        raise UnparseableCommand(
            "command substitution, process substitution or a here-document cannot be judged"
        )
    lexer = shlex.shlex(text, posix=True, punctuation_chars="();<>|&\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:
        raise UnparseableCommand(f"cannot split the command line ({exc})") from None


def _pipelines(tokens: Sequence[str]) -> Iterator[list[list[str]]]:
    pipeline: list[list[str]] = []
    words: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in _REDIRECTIONS:
            skip_next = True
            continue
        if token in _SEPARATORS or token == _PIPE:
            if words:
                pipeline.append(words)
            words = []
            if token != _PIPE and pipeline:
                yield pipeline
                pipeline = []
            continue
        if token in ("{", "}", "!"):
            continue
        words.append(token)
    if words:
        pipeline.append(words)
    if pipeline:
        yield pipeline


def _simple(words: Sequence[str], depth: int) -> Iterator[tuple[SimpleCommand, ...]]:
    """The ways ``words`` can be read as a program run: itself, what a wrapper runs, and the
    commands of a ``-c`` string; each a pipeline of one or more simple commands."""
    index = 0
    while index < len(words) and _ASSIGNMENT.match(words[index]):
        index += 1
    if index == len(words):
        return
    program_word = words[index]
    if "$" in program_word:
        raise UnparseableCommand(f"the program {program_word!r} is a variable")
    program = posixpath.basename(program_word)
    args = tuple(words[index + 1 :])
    yield (SimpleCommand(program, args),)
    if program in WRAPPERS:
        for start in range(len(args)):
            if not args[start].startswith("-"):
                yield from _simple(args[start:], depth)
    if program in SHELLS and "-c" in args:
        after = args[args.index("-c") + 1 :]
        script = next((a for a in after if not a.startswith("-")), None)
        if script is not None:
            yield from _commands_of(script, depth + 1)
    if program == "eval" and args:
        yield from _commands_of(" ".join(args), depth + 1)


def _commands_of(text: str, depth: int) -> Iterator[tuple[SimpleCommand, ...]]:
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    for pipeline in _pipelines(_tokens(text)):
        readings = [list(_simple(words, depth)) for words in pipeline]
        # Every reading of each stage, and each pair of neighbouring stages.
        for reading in readings:
            yield from reading
        for left, right in itertools.pairwise(readings):
            for a in left:
                for b in right:
                    yield (a[-1], b[0])


def simple_commands(text: str) -> list[tuple[SimpleCommand, ...]]:
    """Every simple command and neighbouring pipeline pair ``text`` runs.

    :raises UnparseableCommand: if it cannot be judged.
    """
    return list(_commands_of(text, 0))


def _pattern(text: str) -> _Pattern:
    stages = []
    for part in text.split("|"):
        words = [w for w in _tokens(part) if w != "..."]
        if not words:
            raise ValueError(f"pattern {text!r} has an empty part")
        stages.append(SimpleCommand(words[0], tuple(words[1:])))
    return _Pattern(text=text, stages=tuple(stages))


# -- matching --------------------------------------------------------------------------------


def _normal(word: str) -> str:
    if word.startswith("/"):
        normal = posixpath.normpath(word)
        return "/" + normal.lstrip("/")
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
            if name in aliases:
                short.add(aliases[name])
        else:
            short.update(aliases.get(letter, letter) for letter in arg[1:])
    return short, long, plain


def _word_matches(pattern: str, arg: str) -> bool:
    if "$" in arg:
        return True
    pattern, arg = _normal(pattern), _normal(arg)
    if fnmatch.fnmatchcase(arg, pattern):
        return True
    return bool(_GLOB.search(arg)) and fnmatch.fnmatchcase(pattern, arg)


def _stage_matches(pattern: SimpleCommand, command: SimpleCommand) -> bool:
    if not fnmatch.fnmatchcase(command.program, pattern.program):
        return False
    want_short, want_long, want_plain = _flags(pattern.program, pattern.args)
    short, long, plain = _flags(command.program, command.args)
    if not want_short <= short or not want_long <= long:
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
