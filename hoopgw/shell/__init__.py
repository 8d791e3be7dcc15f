"""Shell command lines, read only as far as the gateway fully understands them (public).

A whitelist of grammar: :func:`parse` accepts words (plain characters, quotes, backslashes,
``$NAME``/``${NAME}`` and plain-number arithmetic), ``;``, ``&``, ``&&``, ``||``, ``|``,
``|&``, newlines, redirections, sub-shells ``( )``, groups ``{ }``, ``if``/``while``/
``until``/``for`` blocks and function definitions. Anything else raises
:class:`OpaqueCommand` (what the shell would run cannot be known from the text: command
substitution, a comment, ``${x@P}``, ``$'...'`` as a program, arithmetic over variables,
array subscripts, extended globs, here-documents, ``case``, ``[[``, control characters, ...);
text the shell would wait for more of (an open quote, a trailing ``|`` or ``\\``, an
unclosed block) raises :class:`IncompleteCommand`.

Each word says whether the shell passes it exactly as written (:attr:`Word.known`); one
holding an expansion may become any number of words, flags included (:attr:`Word.text` is
then :data:`ANY`); one with unquoted glob characters keeps its text as a glob.

:class:`LineJudge` decides the lines typed at a shell (``judge_shell_lines``) one by one,
through a :class:`LineChannel` a relay implements.

Used by the guardrails plugin (judging commands), and the SSH and Kubernetes protocols (where
a typed line ends, :func:`needs_more`; judging typed lines, :class:`LineJudge`).

This package is public: import its names from ``hoopgw.shell``. Its modules are its own
machinery: ``lexer`` (words and operators), ``parser`` (pipelines, blocks, functions) and
``lines`` (typed lines and terminal keys).
"""

from hoopgw.shell.lexer import (
    ANY,
    DANGEROUS_VARIABLES,
    ONE,
    IncompleteCommand,
    OpaqueCommand,
    UnparseableCommand,
    Word,
)
from hoopgw.shell.lines import (
    BACKLOG_LIMIT,
    CONTINUED_LINES_LIMIT,
    LINE_LIMIT,
    UNFOLLOWED,
    LineChannel,
    LineJudge,
    LineSession,
    TerminalKeys,
    parse_modes,
    unfollowable_modes,
)
from hoopgw.shell.parser import Group, ParsedScript, Stage, needs_more, parse, simple_words

__all__ = [
    "ANY",
    "BACKLOG_LIMIT",
    "CONTINUED_LINES_LIMIT",
    "DANGEROUS_VARIABLES",
    "LINE_LIMIT",
    "ONE",
    "UNFOLLOWED",
    "Group",
    "IncompleteCommand",
    "LineChannel",
    "LineJudge",
    "LineSession",
    "OpaqueCommand",
    "ParsedScript",
    "Stage",
    "TerminalKeys",
    "UnparseableCommand",
    "Word",
    "needs_more",
    "parse",
    "parse_modes",
    "simple_words",
    "unfollowable_modes",
]
