"""Shell commands judged by what they run, not by their text (SSH ``exec`` and shell lines).

A command line is read with :func:`hoopgw.shell.parse`, which accepts only the shell grammar
it fully understands: pipelines (``|``, ``|&``) of simple commands and groups (``( )``,
``{ }``, ``if``/``while``/``for`` blocks, function bodies), separated by ``;``, ``&&``,
``||``, ``&`` and newlines. Each simple command is a program and its arguments, after leading
``VAR=value`` assignments. Wrappers (``sudo``, ``env``, ``nohup``, ``timeout``, ``xargs``,
``busybox``, ``find -exec``, ...) are looked through, the string given to ``sh -c`` (``-lc``
too) / ``eval`` / ``watch`` / ``env -S`` is judged as a command line of its own, ``. FILE`` /
``source FILE`` is read as ``sh FILE`` and a call of a function defined in the line as its body.

A pattern such as ``rm -rf /`` is written the same way and matches a simple command when

- its program is the command's program (by base name: ``/bin/rm`` is ``rm``);
- each short flag of the pattern is set, in any grouping and order (``-rf``, ``-fr``,
  ``-r -f``, ``-Rf``; ``rm``'s long ``--recursive``/``--force`` count as ``-r``/``-f``);
- each long option of the pattern is given (``--force``, or ``--force=...``);
- each other word of the pattern is one of the arguments (a glob such as ``/dev/sd*`` is
  allowed; paths are normalised, so ``//`` and ``/.`` are ``/``); a pattern word that matches
  the empty string (``curl *``) asks for nothing;
- ``...`` stands for anything and may be written for readability.

Arguments the gateway cannot know fail closed: an unquoted expansion (``$x``, ``{-r,-f}``,
what ``xargs`` adds) or a glob that may match a file named like an option (``*``) may be any
options and words, so ``rm $x`` and ``rm *`` match ``rm -rf /``; a quoted expansion
(``"$x"``) is one word that may be anything (one option group, one option or one word).

A pattern with ``|`` (``curl ... | sh``) matches a pipeline in which a command matching the
left part feeds one matching the right part (every command of a group reads the pipe).

What the shell would run that cannot be known from the text is refused as rule ``opaque``
(see :mod:`hoopgw.shell`, and builtins such as ``trap``, ``alias``, ``let``, ``hash``, an
expansion or glob where the program is, an assignment to ``PS1`` or ``PROMPT_COMMAND``),
unless ``allow_opaque_commands`` lists the exact line; text that does not parse is rule
``unparseable``.
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

from hoopgw import shell
from hoopgw.shell import OpaqueCommand, UnparseableCommand
from hoopgw.verdicts import Block, Hold

__all__ = [
    "COMMAND_PRESETS",
    "CommandPolicy",
    "UnparseableCommand",
    "check_command_patterns",
    "check_command_presets",
    "check_opaque_commands",
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
        for shell in (
            "sh",
            "bash",
            "zsh",
            "dash",
            "ksh",
            "ash",
            "mksh",
            "fish",
            "csh",
            "tcsh",
            "python",
            "python3",
            "perl",
            "ruby",
            "node",
            "php",
        )
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
        "ssh",
    }
)
"""Programs that run another program given as a later argument."""
SHELLS = frozenset(
    {"sh", "bash", "zsh", "dash", "ksh", "ash", "busybox", "su", "flock", "script", "runuser"}
)
"""Programs whose ``-c`` argument is itself a command line."""


_UNKNOWN = "${unknown}"
"""An argument the gateway cannot know but that is no option (``find``'s ``{}``): it holds
``$``, so it matches any word of a pattern."""
_GLOB = re.compile(r"[*?\[]")
_FLAG_ALIASES: Mapping[str, Mapping[str, str]] = {
    "rm": {"R": "r", "--recursive": "r", "--force": "f"},
}
_OPAQUE_PROGRAMS: Mapping[str, str] = {
    "trap": "trap runs its text later, when a signal comes",
    "let": "let evaluates arithmetic over variables, which may run commands",
    "alias": "an alias changes what later words run",
    "unalias": "an alias changes what later words run",
    "enable": "enable loads or hides shell builtins",
    "hash": "hash changes which program a name runs",
    "bind": "bind changes what keys run",
    "complete": "complete may run commands",
    "compgen": "compgen may run commands",
    "fc": "fc runs commands from the history",
    "history": "history changes what history expansion runs",
    "mapfile": "mapfile may run a callback",
    "readarray": "readarray may run a callback",
    "shopt": "shopt changes how the shell reads commands",
}
"""Builtins whose effect cannot be judged from their words (rule ``opaque``)."""
_SETTERS = frozenset(
    {"declare", "typeset", "local", "readonly", "export", "read", "getopts", "printf", "unset"}
)
"""Builtins that set variables by name: no options that change how (``-i``, ``-a``...) for
the declare family, no array subscripts, no variable the shell runs."""
_SUBSCRIPTED = frozenset({*_SETTERS, "test", "[", "wait"})
"""Builtins that evaluate an array subscript in an argument (``unset 'a[$(cmd)]'``)."""
_DECLARERS = frozenset({"declare", "typeset", "local", "readonly", "export"})
_PROMPTS = frozenset({"PS0", "PS1", "PS2", "PS3", "PS4"})
_SOURCES = frozenset({".", "source"})
"""Builtins that run a file's text as shell code: read as ``sh FILE`` (``. /dev/stdin``)."""
_MAX_DEPTH = 16
MAX_READINGS = 10_000
"""Readings (simple commands and pipeline pairs) one command line may have; more is refused
as too complex (rule ``unparseable``)."""

Reading = tuple["SimpleCommand", ...]


@attrs.frozen
class SimpleCommand:
    """One program with its arguments (:data:`~hoopgw.shell.ANY` for an argument that may
    expand to any words, options included)."""

    program: str
    """Base name of the program."""
    args: tuple[str, ...]


@attrs.frozen
class _Pattern:
    """One pattern: a pipeline of simple-command patterns."""

    text: str
    stages: tuple[SimpleCommand, ...]


# -- reading what runs -----------------------------------------------------------------------


class _Budget:
    """How many readings judging one command line may make: wrappers of wrappers
    (``nice nice nice ...``) and long pipelines must not keep the gateway busy."""

    def __init__(self, readings: int) -> None:
        self._left = readings

    def spend(self, readings: int = 1) -> None:
        self._left -= readings
        if self._left < 0:
            raise UnparseableCommand("the command line is too complex to judge")


@attrs.define
class _Context:
    functions: Mapping[str, shell.Group]
    budget: _Budget
    calling: set[str] = attrs.field(factory=set)


def _check_assignment(word: shell.Word) -> None:
    name = word.assignment or ""
    if name.endswith("+"):
        raise OpaqueCommand(f"the assignment {name[:-1]}+= or {name[:-1]}[...]= may evaluate")
    if name in shell.DANGEROUS_VARIABLES:
        value = word.text.partition("=")[2]
        if name in _PROMPTS and word.known and not any(c in value for c in "$`\\"):
            return  # a prompt without expansions or escapes: it runs nothing
        raise OpaqueCommand(f"setting {name} changes what the shell runs")


def _check_builtin(program: str, words: Sequence[shell.Word]) -> None:
    if program in _OPAQUE_PROGRAMS:
        raise OpaqueCommand(_OPAQUE_PROGRAMS[program])
    if program == "stty" and any(w.text not in ("-a", "-g", "--all", "size") for w in words):
        raise OpaqueCommand("stty changes how typed lines are edited and end")
    if program in _SUBSCRIPTED and any("[" in w.text for w in words):
        raise OpaqueCommand(f"{program} evaluates array subscripts, which may run commands")
    if program in _SETTERS:
        for word in words:
            if word.assignment is not None:
                _check_assignment(word)
            elif word.text.split("=", 1)[0] in shell.DANGEROUS_VARIABLES:
                raise OpaqueCommand(f"setting {word.text} changes what the shell runs")
            unknown_name = word.assignment is None and not word.known  # export $x
            if program in _DECLARERS and (word.text.startswith(("-", "+")) or unknown_name):
                raise OpaqueCommand(f"{program} with options or expansions is not judged")


def _shown(text: str) -> str:
    return text.replace(shell.ANY, "$...").replace(shell.ONE, "$...")


def _simple(words: Sequence[shell.Word], depth: int, context: _Context) -> Iterator[Reading]:
    """The ways ``words`` can be read as a program run: itself, what a wrapper runs, and the
    commands of a ``-c`` string; each a pipeline of one or more simple commands."""
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    if any(w.text.startswith("BASH_FUNC_") for w in words):
        raise OpaqueCommand("a BASH_FUNC_ variable defines a function for the next bash")
    index = 0
    while index < len(words) and words[index].assignment is not None:
        _check_assignment(words[index])
        index += 1
    if index >= len(words):
        return
    program_word = words[index]
    if not program_word.known:
        raise OpaqueCommand(
            f"the program {_shown(program_word.text)!r} is an expansion"
            " or a glob: it may run any program"
        )
    program = posixpath.basename(program_word.text)
    rest = words[index + 1 :]
    args = tuple(w.text for w in rest)
    _check_builtin(program, rest)
    context.budget.spend()
    yield (SimpleCommand(program, args),)
    if program in _SOURCES or program == "su" or _runs_a_shell(program, args):
        # Runs shell code from a file or from its input: judged as sh as well.
        yield (SimpleCommand("sh", args),)
    if program in context.functions and program not in context.calling:
        context.calling.add(program)
        yield from _group(context.functions[program], depth + 1, context)
        context.calling.discard(program)
    if program in WRAPPERS:
        # xargs adds arguments the gateway cannot know, options included.
        added = (shell.Word(shell.ANY, known=False),) if program == "xargs" else ()
        for start in range(len(rest)):
            if not rest[start].text.startswith("-"):
                yield from _simple((*rest[start:], *added), depth + 1, context)
    for script in _scripts(program, rest):
        yield from _commands_of(script, depth + 1, context.budget)
    if program == "find":
        yield from _find_exec(rest, depth, context)


def _runs_a_shell(program: str, args: Sequence[str]) -> bool:
    """``sudo -s``, ``sudo -i``, ``doas -s``: a shell that reads its input."""
    if program not in ("sudo", "doas"):
        return False
    options = itertools.takewhile(lambda a: a.startswith("-") and a != "--", args)
    return any(
        _short_option(a, "s") or _short_option(a, "i") or a in ("--shell", "--login")
        for a in options
    )


def _scripts(program: str, words: Sequence[shell.Word]) -> Iterator[str]:
    """The command lines ``program`` hands to a shell: ``sh -c S`` (``-c`` in any option group,
    options after it skipped), ``eval``, ``watch``, ``env -S``; a script that is not known
    text is opaque."""
    args = [w.text for w in words]
    scripts: list[int | tuple[int, str]] = []  # an argument's index, or its tail after a flag
    if program in SHELLS:
        flag = next(
            (i for i, a in enumerate(args) if a == "--command" or _short_option(a, "c")), None
        )
        if flag is not None:
            operand = _first_operand(args, flag + 1)
            if operand is not None:
                scripts.append(operand)
        scripts.extend((i, "--command=") for i, a in enumerate(args) if a.startswith("--command="))
    if program == "eval" and args:
        if not all(w.known for w in words):
            raise OpaqueCommand("eval of an expansion may run anything")
        yield " ".join(args)
    if program == "watch":  # runs its arguments with sh -c
        for i in range(len(args)):
            if not args[i].startswith("-"):
                if not all(w.known for w in words[i:]):
                    raise OpaqueCommand("watch of an expansion may run anything")
                yield " ".join(args[i:])
    if program == "ssh":
        # The remote command is the words after the host, run by the remote shell; which
        # word is the host is not known, so every run of words is a command line. Options
        # that run a local command are command lines too.
        for i in range(len(args)):
            if not args[i].startswith("-"):
                if not all(w.known for w in words[i:]):
                    raise OpaqueCommand("ssh with an expansion may run anything")
                yield " ".join(args[i:])
            option = args[i - 1 : i] == ["-o"] and args[i].partition("=")[0].lower()
            if option in ("proxycommand", "localcommand", "knownhostscommand"):
                yield args[i].partition("=")[2]
    if program == "env":
        for i, arg in enumerate(args):
            if arg in ("-S", "--split-string") and i + 1 < len(args):
                scripts.append(i + 1)
            elif arg.startswith("--split-string="):
                scripts.append((i, "--split-string="))
            elif _short_option(arg, "S"):
                scripts.append((i, arg[: arg.index("S") + 1]))
    for item in scripts:
        index, cut = (item, "") if isinstance(item, int) else item
        if not words[index].known:
            raise OpaqueCommand(f"the script given to {program} is an expansion")
        yield args[index][len(cut) :]


def _first_operand(args: Sequence[str], start: int) -> int | None:
    """Index of the first word from ``start`` that is not a shell option nor an option's
    argument (the shell runs it as its script: ``bash -c -o pipefail 'CMD'`` runs ``CMD``)."""
    index = start
    while index < len(args):
        word = args[index]
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            index += 2
            continue
        if word == "--":
            return index + 1 if index + 1 < len(args) else None
        if word == shell.ANY or not word.startswith(("-", "+")):
            return index
        index += 1
    return None


def _short_option(arg: str, letter: str) -> bool:
    return arg.startswith("-") and not arg.startswith("--") and letter in arg[1:]


def _find_exec(args: Sequence[shell.Word], depth: int, context: _Context) -> Iterator[Reading]:
    """What ``find ... -exec CMD {} ;`` runs (also ``-execdir``, ``-ok``, ``-okdir``)."""
    for index, arg in enumerate(args):
        if arg.text in ("-exec", "-execdir", "-ok", "-okdir"):
            run: list[shell.Word] = []
            for word in args[index + 1 :]:
                if word.text in (";", "+"):
                    break
                run.append(shell.Word(_UNKNOWN, known=False) if "{}" in word.text else word)
            yield from _simple(run, depth + 1, context)


def _stage(stage: shell.Stage, depth: int, context: _Context) -> list[Reading]:
    if isinstance(stage, shell.Group):
        return list(_group(stage, depth, context))
    return list(_simple(stage, depth, context))


def _group(group: shell.Group, depth: int, context: _Context) -> Iterator[Reading]:
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    for pipeline in group.pipelines:
        readings = [_stage(stage, depth + 1, context) for stage in pipeline]
        # Every reading of each stage, and each pair of stages where the left one feeds the
        # right one, directly or through the stages between (curl | tee f | sh). A group's
        # commands all read the pipe: curl x | { echo; sh; }.
        for reading in readings:
            yield from reading
        for left, right in itertools.combinations(readings, 2):
            context.budget.spend(len(left) * len(right))
            for a in left:
                for b in right:
                    yield (a[-1], b[0])


def _commands_of(text: str, depth: int, budget: _Budget) -> Iterator[Reading]:
    if depth > _MAX_DEPTH:
        raise UnparseableCommand("commands nested too deep")
    script = shell.parse(text)
    context = _Context(functions=script.functions, budget=budget)
    yield from _group(shell.Group(script.pipelines), depth, context)


def simple_commands(text: str) -> list[Reading]:
    """Every simple command and neighbouring pipeline pair ``text`` runs.

    :raises OpaqueCommand: if what runs cannot be known from the text.
    :raises UnparseableCommand: if it cannot be judged otherwise.
    """
    return list(_commands_of(text, 0, _Budget(MAX_READINGS)))


def _pattern(text: str) -> _Pattern:
    stages = []
    for part in text.split("|"):
        try:
            words = [w for w in shlex.split(part) if w != "..."]
        except ValueError as exc:
            raise ValueError(f"cannot split it ({exc})") from None
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
    pattern, arg = _normal(pattern), _normal(arg)
    if fnmatch.fnmatchcase(arg, pattern):
        return True
    return bool(_GLOB.search(arg)) and _glob_matches(arg, pattern)


# Outside a bracket expression: any one character (``?``) and any run of them (``*``).
_ONE, _RUN = object(), object()


def _glob_matches(glob: str, word: str) -> bool:
    """Whether the shell may expand the command line's word ``glob`` to ``word``, as
    ``fnmatch.fnmatchcase(word, glob)`` reads it, but walked here rather than compiled:
    fnmatch and re keep every pattern they compile in caches the whole process shares, where
    one user's globs would be found by another's timing and could take memory without bound.
    A bracket expression counts as any one character (a match where fnmatch may see none:
    errs on the side of refusing)."""
    tokens: list[object] = []
    index, end = 0, len(glob)
    while index < end:
        char = glob[index]
        index += 1
        if char == "*":
            if not tokens or tokens[-1] is not _RUN:
                tokens.append(_RUN)
        elif char == "?":
            tokens.append(_ONE)
        elif char == "[":
            # fnmatch.translate: an optional ``!``, then a ``]`` that is a member, up to ``]``.
            close = index + (index < end and glob[index] == "!")
            close += close < end and glob[close] == "]"
            close = glob.find("]", close)
            if close < 0:
                tokens.append("[")  # no closing bracket: a plain character
            else:
                tokens.append(_ONE)
                index = close + 1
        else:
            tokens.append(char)
    # The positions in ``word`` that the tokens read so far may have reached.
    reached = {0}
    for token in tokens:
        if token is _RUN:
            reached = set(range(min(reached), len(word) + 1))
        elif token is _ONE:
            reached = {at + 1 for at in reached if at < len(word)}
        else:
            reached = {at + 1 for at in reached if at < len(word) and word[at] == token}
        if not reached:
            return False
    return len(word) in reached


def _stage_matches(pattern: SimpleCommand, command: SimpleCommand) -> bool:
    if not fnmatch.fnmatchcase(command.program, pattern.program):
        return False
    if shell.ANY in command.args:
        return True  # an expansion may be any options and words: fail closed
    # A pattern word that matches nothing at all (`curl *`) asks for no argument: `curl` and
    # `curl -o f` match it too.
    wanted = [a for a in pattern.args if not fnmatch.fnmatchcase("", a)]
    if any(_GLOB.search(a) and a.startswith("-") for a in wanted):
        # An option glob (`curl -*`): any argument it matches.
        if not all(
            any(fnmatch.fnmatchcase(c, a) for c in command.args)
            for a in wanted
            if _GLOB.search(a) and a.startswith("-")
        ):
            return False
        wanted = [a for a in wanted if not (_GLOB.search(a) and a.startswith("-"))]
    want_short, want_long, want_plain = _flags(pattern.program, wanted)
    known = [a for a in command.args if a != shell.ONE]
    short, long, plain = _flags(command.program, known)
    # A long option may be abbreviated (--no-preserve is --no-preserve-root).
    missing = [w for w in want_long if not any(w.startswith(o) and len(o) > 2 for o in long)]
    missing += [w for w in want_plain if not any(_word_matches(w, a) for a in plain)]
    # Each quoted expansion ("$x") is one word that may be anything: one group of short
    # options (-rf), one long option or one other word. Fail closed: count it so.
    unknown = len(command.args) - len(known)
    return len(missing) + (1 if want_short - short else 0) <= unknown


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


def check_opaque_commands(value: list[Any]) -> str | None:
    """Option check: a list of non-empty command lines."""
    if not all(isinstance(item, str) and item.strip() for item in value):
        return "expected a list of non-empty command lines"
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
    allow_opaque: frozenset[str] = frozenset()
    """Exact command lines allowed although opaque (``allow_opaque_commands``); deny and
    review patterns cannot judge them."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CommandPolicy:
        """Build the policy from the plugin's validated options."""
        deny = [*options.get("deny_commands", [])]
        for preset in options.get("command_presets", []):
            deny.extend(COMMAND_PRESETS[preset])
        return cls(
            deny=tuple(_pattern(p) for p in deny),
            review=tuple(_pattern(p) for p in options.get("review_commands", [])),
            allow_opaque=frozenset(t.strip() for t in options.get("allow_opaque_commands", [])),
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
        except OpaqueCommand as exc:
            if text.strip() in self.allow_opaque:
                return None
            return Block(
                reason=f"opaque: {exc}; what the shell would run cannot be judged (guardrails;"
                " allow the exact line with allow_opaque_commands)",
                rule="opaque",
            )
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
