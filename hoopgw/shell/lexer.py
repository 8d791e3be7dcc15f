"""The shell lexer: words and operators, as far as the gateway fully understands them.

Splits a command line into :class:`Token` s (words after quote removal, and operators),
raising :class:`OpaqueCommand` for text whose effect cannot be known and
:class:`IncompleteCommand` where the shell would wait for more. :mod:`hoopgw.shell.parser`
reads the tokens.
"""

from __future__ import annotations

import re

import attrs

ANY = "\x00any"
"""The text of a word the gateway cannot know: it may expand to any words, flags included."""
ONE = "\x00one"
"""The text of a quoted expansion (``"$x"``): exactly one word, which may be anything."""

DANGEROUS_VARIABLES = frozenset(
    {
        "PROMPT_COMMAND",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "BASH_LOADABLES_PATH",
        "GLOBIGNORE",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "MAILPATH",
        "EXECIGNORE",
        "BASH_XTRACEFD",
        "FPATH",
    }
)
"""Variables whose value the shell (or the dynamic loader) runs, splits words by, or looks
programs up with: setting one makes the command opaque."""


class UnparseableCommand(ValueError):
    """The command line cannot be judged; the message says why."""


class OpaqueCommand(UnparseableCommand):
    """What the shell would run cannot be known from the text (rule ``opaque``)."""


class IncompleteCommand(UnparseableCommand):
    """The shell would read more lines before running anything."""


@attrs.frozen
class Word:
    """One word of a command, after quote removal."""

    text: str
    """What the shell passes: the literal text, a glob, or :data:`ANY`."""
    known: bool
    """No expansion and no glob: the shell passes exactly :attr:`text`."""
    plain: bool = False
    """Only unquoted ordinary characters (so it may be a reserved word)."""
    assignment: str | None = None
    """``NAME`` when the word is ``NAME=value``; ``NAME+`` for ``NAME+=value`` or
    ``NAME[...]=value``, which may evaluate their value as arithmetic."""


# -- tokens ----------------------------------------------------------------------------------

_OPERATORS = sorted(
    [
        ";;&",
        ";;",
        ";&",
        "&&",
        "||",
        "|&",
        "&>>",
        "&>",
        ">>",
        ">|",
        ">&",
        "<&",
        "<>",
        "<<<",
        "<<-",
        "<<",
        ";",
        "&",
        "|",
        "<",
        ">",
        "(",
        ")",
        "\n",
    ],
    key=len,
    reverse=True,
)
_OPERATOR_CHARS = frozenset(";&|<>()\n")
_SEPARATORS = frozenset({";", "&", "&&", "||", "\n"})
_CASE_OPERATORS = frozenset({";;", ";&", ";;&"})
_HERE = frozenset({"<<", "<<-", "<<<"})
_ORDINARY = re.compile(r"[A-Za-z0-9_\-./,:=+%@~^!#\]{}\x80-\U0010ffff]")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A variable or function name."""
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\+?=|\[)")
_SPECIAL_PARAMETERS = "@*#?$!-0123456789"
_ARITHMETIC = re.compile(r"[0-9\s+\-*/%<>=!&|^~?:(),]*")
_BRACES = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_AFTER_LITERAL_DOLLAR = frozenset({"", " ", "\t", "\n", "/", ",", "."})
"""What may follow a ``$`` that is just a character (``echo $``, ``grep x$ f``)."""
_WORD_REST = re.compile(r"[^\s;&|<>()]{0,4096}")
"""Where a ``[`` looks for its ``]`` (bounded: a long word of ``[`` must not cost n²)."""
_BEFORE_ARITHMETIC = frozenset(
    {"for", "if", "then", "elif", "else", "while", "until", "do", "!", "{", "time"}
)
"""Words after which ``((`` starts an arithmetic command."""


@attrs.frozen
class Token:
    """A word (with what the shell makes of it) or an operator."""

    text: str
    operator: bool
    word: Word | None = None


class Lexer:
    """Splits text into words and operators, refusing what it does not understand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        """The tokens; where the text ends inside a word (an open quote, a trailing ``\\``),
        :attr:`incomplete` says why and an unknown word stands for the rest."""
        text = self.text
        self.incomplete: IncompleteCommand | None = None
        while self.index < len(text):
            char = text[self.index]
            if char in " \t":
                self.index += 1
            elif char == "\\" and text.startswith("\\\n", self.index):
                self.index += 2  # a line continuation between words
            elif char == "#":
                raise OpaqueCommand("a comment (#) hides text from the judge")
            else:
                try:
                    self._operator() if char in _OPERATOR_CHARS else self._word()
                except IncompleteCommand as exc:
                    self.incomplete = exc
                    self.tokens.append(Token("", False, Word(ANY, known=False)))
                    break
        return self.tokens

    def _operator(self) -> None:
        text, index = self.text, self.index
        if text.startswith("((", index):
            last = self.tokens[-1] if self.tokens else None
            if last is not None and not last.operator and last.text not in _BEFORE_ARITHMETIC:
                raise UnparseableCommand("unexpected ((")  # not where a command starts
            self._arithmetic(index + 2, "))")
            self.tokens.append(Token("((", True))
            return
        operator = next(o for o in _OPERATORS if text.startswith(o, index))
        if operator in _HERE:
            raise OpaqueCommand("a here-document or here-string (<<) feeds text to a command")
        if operator in _CASE_OPERATORS:
            raise OpaqueCommand("case blocks are not judged")
        if operator in ("<", ">") and text.startswith("(", index + 1):
            raise OpaqueCommand("process substitution <(...) runs a command")
        self.index = index + len(operator)
        self.tokens.append(Token(operator, True))

    def _arithmetic(self, start: int, close: str) -> int:
        """Skip plain-number arithmetic; over names or anything else, it may run commands
        (``a[$(cmd)]`` in a variable's value)."""
        end = self.text.find(close, start)
        if end < 0:
            # The shell may read it as nested sub-shells instead: do not wait for more.
            raise UnparseableCommand("unclosed arithmetic")
        body = self.text[start:end]
        if not _ARITHMETIC.fullmatch(body) or body.count("(") != body.count(")"):
            raise OpaqueCommand("arithmetic over variables may run commands")
        self.index = end + len(close)
        return self.index

    def _word(self) -> None:
        text = self.text
        parts: list[str] = []
        unquoted: list[str] = []  # the unquoted characters, for brace expansion
        prefix_done = False  # the leading run of unquoted ordinary characters ended
        prefix: list[str] = []
        expansion = False
        split = False
        glob_at: int | None = None  # where the first unquoted glob character is
        plain = True
        while self.index < len(text):
            char = text[self.index]
            if char in " \t" or char in _OPERATOR_CHARS:
                if char == "(" and "".join(parts) and not prefix_done:
                    self._function_or_glob("".join(prefix))
                    break
                if char in "<>" and "".join(parts).isdigit() and plain:
                    return  # an fd number (2>): part of the redirection, not a word
                break
            if char == "\\":
                plain, prefix_done = False, True
                if self.index + 1 == len(text):
                    raise IncompleteCommand("a line ends with a backslash")
                if text[self.index + 1] != "\n":
                    parts.append(text[self.index + 1])
                self.index += 2
            elif char == "'":
                plain, prefix_done = False, True
                close = text.find("'", self.index + 1)
                if close < 0:
                    raise IncompleteCommand("no closing quotation")
                parts.append(text[self.index + 1 : close])
                self.index = close + 1
            elif char == '"':
                plain, prefix_done = False, True
                at = self.index
                quoted, has_expansion = self._double_quoted(self.index + 1)
                parts.append(quoted)
                expansion |= has_expansion
                # "$@" and "${@}" are as many words as there are arguments.
                split |= bool(re.search(r"\$\{?@", text[at : self.index]))
            elif char == "$":
                plain, prefix_done = False, True
                ansi = text[self.index + 1 : self.index + 2] in ("'", '"')
                literal = self._dollar(self.index + 1, quoted=False)
                if literal:
                    parts.append("$")
                else:
                    expansion = True
                    split |= not ansi  # unquoted: split into any number of words
            elif char == "`":
                raise OpaqueCommand("command substitution (`...`) runs a command")
            elif char in "*?" or (
                char == "[" and (glob_at is not None or _closes(_rest_of_word(text, self.index)))
            ):
                if glob_at is None:
                    glob_at = len("".join(parts))
                parts.append(char)
                unquoted.append(char)
                prefix_done = True
                self.index += 1
            elif char == "[" or _ORDINARY.match(char):
                parts.append(char)
                unquoted.append(char)
                if not prefix_done:
                    prefix.append(char)
                self.index += 1
            else:
                raise OpaqueCommand(f"the character {char!r} is not judged")
        value = "".join(parts)
        if re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", value) and text[
            self.index : self.index + 1
        ] in (
            "<",
            ">",
        ):
            raise OpaqueCommand("a named file descriptor {NAME}> sets a variable")
        assignment = None
        if match := _ASSIGNMENT.match("".join(prefix)):
            # NAME+= and NAME[...]= may evaluate their value (integer and array variables).
            assignment = match.group(1) + ("" if match.group(2) == "=" else "+")
        lead = "".join(prefix)
        if lead.startswith("=") or (lead.startswith("~") and not re.match(r"~(/|$)", lead)):
            # ~user, ~+, ~- are paths the judge cannot know; zsh runs =cmd as cmd's path.
            expansion = True
        if _BRACES.search("".join(unquoted)):
            # {a,b} is several words: a glob of them ({-r,-f} may be options).
            glob_at = value.index("{") if glob_at is None else min(glob_at, value.index("{"))
            value = _BRACES.sub("*", value)
        if expansion:
            word = Word(
                ANY if split or glob_at is not None else ONE, known=False, assignment=assignment
            )
        elif glob_at is not None:
            flag_like = glob_at == 0 or value.startswith("-")
            word = Word(ANY if flag_like else value, known=False, assignment=assignment)
        else:
            word = Word(value, known=True, plain=plain, assignment=assignment)
        self.tokens.append(Token(value, False, word))

    def _function_or_glob(self, name: str) -> None:
        # NAME() starts a function definition; any other WORD( is an extended glob or array.
        if not (NAME.fullmatch(name) and re.match(r"\(\s*\)", self.text[self.index :])):
            raise OpaqueCommand("an extended glob or array ( ) in a word is not judged")

    def _double_quoted(self, index: int) -> tuple[str, bool]:
        text = self.text
        out: list[str] = []
        expansion = False
        self.index = index
        while self.index < len(text):
            char = text[self.index]
            if char == '"':
                self.index += 1
                return "".join(out), expansion
            if char == "\\" and self.index + 1 < len(text) and text[self.index + 1] in '$`"\\\n':
                if text[self.index + 1] != "\n":
                    out.append(text[self.index + 1])
                self.index += 2
            elif char == "`":
                raise OpaqueCommand("command substitution (`...`) runs a command")
            elif char == "$":
                if self._dollar(self.index + 1, quoted=True):
                    out.append("$")
                else:
                    expansion = True
            elif char == "\x00":
                raise OpaqueCommand("a NUL character is not judged")
            else:
                out.append(char)
                self.index += 1
        raise IncompleteCommand("no closing quotation")

    def _dollar(self, index: int, *, quoted: bool) -> bool:
        """Read an expansion after ``$``; True if the ``$`` is just a character."""
        text = self.text
        nxt = text[index : index + 1]
        if nxt == "[":
            raise OpaqueCommand("arithmetic $[...] may run commands")
        if text.startswith("((", index):
            self._arithmetic(index + 2, "))")
        elif nxt == "(":
            raise OpaqueCommand("command substitution $(...) runs a command")
        elif nxt == "{":
            close = text.find("}", index)
            if close < 0:
                raise UnparseableCommand("unclosed ${")
            body = text[index + 1 : close]
            if not (NAME.fullmatch(body) or (len(body) == 1 and body in _SPECIAL_PARAMETERS)):
                raise OpaqueCommand(f"the expansion ${{{body}}} is not judged")
            self.index = close + 1
        elif nxt in ("'", '"') and not quoted:
            # $'...' (ANSI-C) and $"..." (translated): judged as unknown words.
            if nxt == '"':
                self._double_quoted(index + 1)
            else:
                end = index + 1
                while end < len(text) and text[end] != "'":
                    end += 2 if text[end] == "\\" else 1
                if end >= len(text):
                    raise IncompleteCommand("no closing quotation")
                self.index = end + 1
        elif match := NAME.match(text, index):
            self.index = match.end()
        elif nxt and nxt in _SPECIAL_PARAMETERS:
            self.index = index + 1
        elif nxt in _AFTER_LITERAL_DOLLAR or (quoted and nxt == '"'):
            self.index = index
            return True
        else:
            # zsh reads $=x, $~x, $+x, $^x as expansions: not judged.
            raise OpaqueCommand(f"the expansion ${nxt} is not judged")
        return False


def _closes(rest: str) -> bool:
    """Whether a ``[`` followed by ``rest`` may be a bracket glob (fail closed when long)."""
    return "]" in rest[1:] or len(rest) >= 4096


def _rest_of_word(text: str, index: int) -> str:
    match = _WORD_REST.match(text, index)
    return match.group() if match else ""


def join_lines(text: str) -> str:
    """Remove backslash-newline pairs outside single quotes, as the shell does before it
    reads words and operators (``$\\<newline>(cmd)`` is ``$(cmd)``)."""
    out: list[str] = []
    index, end = 0, len(text)
    while index < end:
        char = text[index]
        if char == "\\":
            if text.startswith("\n", index + 1):
                index += 2
                continue
            out.append(text[index : index + 2])
            index += 2
        elif char == "'" or (char == "$" and text.startswith("'", index + 1)):
            start = index
            index = text.find("'", index + 1 if char == "'" else index + 2)
            while char == "$" and index > 0 and _escaped(text, index):
                index = text.find("'", index + 1)
            if index < 0:
                out.append(text[start:])
                break
            out.append(text[start : index + 1])
            index += 1
        elif char == '"':
            out.append(char)
            index += 1
            while index < end and text[index] != '"':
                if text[index] == "\\" and text.startswith("\n", index + 1):
                    index += 2
                elif text[index] == "\\":
                    out.append(text[index : index + 2])
                    index += 2
                else:
                    out.append(text[index])
                    index += 1
            out.append(text[index : index + 1])
            index += 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _escaped(text: str, index: int) -> bool:
    """Whether the character at ``index`` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1
