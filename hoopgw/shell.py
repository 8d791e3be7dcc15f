"""Shell command lines, read only as far as the gateway fully understands them.

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

Used by the guardrails plugin (judging commands) and the SSH protocol (where a typed line
ends, :func:`needs_more`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

__all__ = [
    "ANY",
    "Group",
    "IncompleteCommand",
    "OpaqueCommand",
    "ParsedScript",
    "UnparseableCommand",
    "Word",
    "needs_more",
    "parse",
]

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


@attrs.frozen
class Group:
    """A sub-shell, ``{ }`` group, block or function body: pipelines run together."""

    pipelines: tuple[tuple[Stage, ...], ...]


Stage = tuple[Word, ...] | Group
"""One stage of a pipeline: a simple command's words (redirections removed) or a group."""


@attrs.frozen
class ParsedScript:
    """A command line: its pipelines and the functions it defines."""

    pipelines: tuple[tuple[Stage, ...], ...]
    functions: dict[str, Group]


# -- words -----------------------------------------------------------------------------------

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
_REDIRECTIONS = frozenset({">", ">>", "<", ">&", "<&", "&>", ">|", "<>", "&>>"})
_SEPARATORS = frozenset({";", "&", "&&", "||", "\n"})
_PIPES = frozenset({"|", "|&"})
_CASE_OPERATORS = frozenset({";;", ";&", ";;&"})
_HERE = frozenset({"<<", "<<-", "<<<"})
_ORDINARY = re.compile(r"[A-Za-z0-9_\-./,:=+%@~^!#\]{}\x80-\U0010ffff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\+?=|\[)")
_SPECIAL_PARAMETERS = "@*#?$!-0123456789"
_ARITHMETIC = re.compile(r"[0-9\s+\-*/%<>=!&|^~?:(),]*")
_BRACES = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_AFTER_LITERAL_DOLLAR = frozenset({"", " ", "\t", "\n", "/", ",", "."})
"""What may follow a ``$`` that is just a character (``echo $``, ``grep x$ f``)."""
_WORD_REST = re.compile(r"[^\s;&|<>()]{0,4096}")
"""Where a ``[`` looks for its ``]`` (bounded: a long word of ``[`` must not cost n²)."""


@attrs.frozen
class _Token:
    text: str
    operator: bool
    word: Word | None = None


class _Lexer:
    """Splits text into words and operators, refusing what it does not understand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.tokens: list[_Token] = []

    def run(self) -> list[_Token]:
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
                    self.tokens.append(_Token("", False, Word(ANY, known=False)))
                    break
        return self.tokens

    def _operator(self) -> None:
        text, index = self.text, self.index
        if text.startswith("((", index):
            last = self.tokens[-1] if self.tokens else None
            if last is not None and not last.operator and last.text not in _BEFORE_ARITHMETIC:
                raise UnparseableCommand("unexpected ((")  # not where a command starts
            self._arithmetic(index + 2, "))")
            self.tokens.append(_Token("((", True))
            return
        operator = next(o for o in _OPERATORS if text.startswith(o, index))
        if operator in _HERE:
            raise OpaqueCommand("a here-document or here-string (<<) feeds text to a command")
        if operator in _CASE_OPERATORS:
            raise OpaqueCommand("case blocks are not judged")
        if operator in ("<", ">") and text.startswith("(", index + 1):
            raise OpaqueCommand("process substitution <(...) runs a command")
        self.index = index + len(operator)
        self.tokens.append(_Token(operator, True))

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
        self.tokens.append(_Token(value, False, word))

    def _function_or_glob(self, name: str) -> None:
        # NAME() starts a function definition; any other WORD( is an extended glob or array.
        if not (_NAME.fullmatch(name) and re.match(r"\(\s*\)", self.text[self.index :])):
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
            if not (_NAME.fullmatch(body) or (len(body) == 1 and body in _SPECIAL_PARAMETERS)):
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
        elif match := _NAME.match(text, index):
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


# -- structure -------------------------------------------------------------------------------

_BEFORE_ARITHMETIC = frozenset(
    {"for", "if", "then", "elif", "else", "while", "until", "do", "!", "{", "time"}
)
"""Words after which ``((`` starts an arithmetic command."""
_OPENERS = {"{": "}", "if": "fi", "while": "done", "until": "done", "for": "done"}
_INNER = {"then": "fi", "elif": "fi", "else": "fi", "do": "done"}
_NEXT = {
    "if": {"then"},
    "then": {"elif", "else", "fi"},
    "elif": {"then"},
    "else": {"fi"},
    "while": {"do"},
    "until": {"do"},
    "do": {"done"},
    "{": {"}"},
}
"""Which reserved word may follow which in a block."""
_BODY = {"for": "do"}
"""A for loop's header is read before its body: the body follows ``do``."""
_CLOSERS = frozenset({"}", "fi", "done", "esac"})
_OPAQUE_WORDS = {
    "case": "case blocks are not judged",
    "select": "select blocks are not judged",
    "[[": "[[ ]] may evaluate arithmetic over variables",
    "coproc": "coproc is not judged",
}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.functions: dict[str, Group] = {}

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _reserved(self, token: _Token | None) -> str | None:
        if token is not None and token.word is not None and token.word.plain:
            return token.text
        return None

    def parse_list(
        self, closer: str | None, depth: int = 0, opener: str = ""
    ) -> tuple[tuple[Stage, ...], ...]:
        """Pipelines up to ``closer`` (``)``, ``}``, ``fi``, ``done``; None: the end) of the
        block ``opener`` began (``do`` for a ``for`` loop's body)."""
        state = opener
        if depth > 64:
            raise OpaqueCommand("blocks nested too deep")
        pipelines: list[tuple[Stage, ...]] = []
        stages: list[Stage] = []
        words: list[Word] = []
        needs_command = False  # after |, && or ||
        segment_start = 0  # pipelines before the last then/else/do
        redirected = False  # the command being read began with a redirection
        while True:
            token = self._peek()
            if token is None:
                if closer is not None or needs_command:
                    raise IncompleteCommand(f"the shell waits for {closer or 'a command'}")
                break
            # Reserved words only start a command: not after its words or redirections.
            reserved = self._reserved(token) if not words and not redirected else None
            if token.operator and token.text == ")":
                if closer != ")" or needs_command or not (pipelines or stages or words):
                    raise UnparseableCommand("unexpected )")
                self.index += 1
                break
            if reserved is not None and reserved in _CLOSERS:
                if reserved != closer or reserved not in _NEXT.get(state, {reserved}):
                    raise UnparseableCommand(f"unexpected {reserved}")
                if needs_command or not (len(pipelines) > segment_start or stages):
                    raise UnparseableCommand(f"a command is missing before {reserved}")
                self.index += 1
                break
            self.index += 1
            if token.operator:
                was_redirected, redirected = redirected, token.text in _REDIRECTIONS
                if token.text in _REDIRECTIONS:
                    target = self._peek()
                    if target is None or target.operator:
                        # The shell reports a syntax error; it does not wait for more.
                        raise UnparseableCommand("a redirection has no target")
                    self.index += 1
                    needs_command = False  # a redirection alone is a command
                    redirected = True
                elif token.text == "(":
                    if was_redirected:
                        raise UnparseableCommand("unexpected ( after a redirection")
                    if words:
                        stages.append(self._function(words, depth))
                        words = []
                        continue
                    stages.append(Group(self.parse_list(")", depth + 1)))
                    needs_command = False
                elif token.text == "((":
                    stages.append(Group(()))
                    needs_command = False
                elif token.text in _PIPES:
                    if needs_command or (not words and not stages):
                        raise UnparseableCommand(f"a command is missing before {token.text}")
                    if words:
                        stages.append(tuple(words))
                        words = []
                    needs_command = True
                else:  # ; & && || newline
                    if token.text == "\n" and needs_command:
                        continue  # a|, a&&, a|| go on on the next line
                    if words:
                        stages.append(tuple(words))
                        words = []
                    if needs_command or (not stages and token.text != "\n"):
                        raise UnparseableCommand(f"a command is missing before {token.text!r}")
                    if stages:
                        pipelines.append(tuple(stages))
                        stages = []
                    needs_command = token.text in ("&&", "||")
                continue
            assert token.word is not None
            after_block = not words and stages and isinstance(stages[-1], Group)
            if after_block and not needs_command and reserved not in _INNER:
                raise UnparseableCommand(f"unexpected word {token.text!r} after a block")
            if reserved in _OPAQUE_WORDS:
                raise OpaqueCommand(_OPAQUE_WORDS[reserved])
            if reserved in _OPENERS:
                if reserved == "for":
                    self._for_header()
                body = self.parse_list(_OPENERS[reserved], depth + 1, _BODY.get(reserved, reserved))
                stages.append(Group(body))
                needs_command = False
            elif reserved in _INNER:
                # then/elif/else belong in an if, do in a loop, in order, each after a command.
                if (
                    needs_command
                    or _INNER[reserved] != closer
                    or reserved not in _NEXT.get(state, ())
                    or not (len(pipelines) > segment_start or stages)
                ):
                    raise UnparseableCommand(f"unexpected {reserved}")
                state = reserved
                if stages:
                    pipelines.append(tuple(stages))
                    stages = []
                segment_start = len(pipelines)
            elif reserved == "in":
                raise UnparseableCommand("unexpected in")
            elif reserved == "!":
                if stages:
                    raise UnparseableCommand("unexpected ! after |")
            elif reserved == "function":
                name = self._peek()
                if name is None or name.word is None or not name.word.known:
                    raise UnparseableCommand("function needs a name")
                self.index += 1
                if self._peek() is not None and self._peek_is("("):
                    self.index += 1
                    if not self._peek_is(")"):
                        raise UnparseableCommand("function NAME( needs )")
                    self.index += 1
                stages.append(self._function_body(name.text, depth))
                needs_command = False
            else:
                words.append(token.word)
                needs_command = False
        if words:
            stages.append(tuple(words))
        if stages:
            pipelines.append(tuple(stages))
        return tuple(pipelines)

    def _peek_is(self, operator: str) -> bool:
        token = self._peek()
        return token is not None and token.operator and token.text == operator

    def _function(self, words: list[Word], depth: int) -> Group:
        if len(words) != 1 or not words[0].known or not self._peek_is(")"):
            raise OpaqueCommand("an array or extended glob ( ) is not judged")
        self.index += 1
        return self._function_body(words[0].text, depth)

    def _function_body(self, name: str, depth: int) -> Group:
        """Read a function's body; it is judged where it is defined, and where it is called
        (:attr:`ParsedScript.functions`)."""
        while self._peek_is("\n"):
            self.index += 1
        token = self._peek()
        if token is None:
            raise IncompleteCommand("a function needs a body")
        self.index += 1
        if token.operator and token.text == "(":
            body = Group(self.parse_list(")", depth + 1))
        elif self._reserved(token) in _OPENERS:
            opener = token.text
            if opener == "for":
                self._for_header()
            body = Group(self.parse_list(_OPENERS[opener], depth + 1, _BODY.get(opener, opener)))
        else:
            raise OpaqueCommand("a function body that is not a block is not judged")
        if name in self.functions:
            raise OpaqueCommand(f"the function {name!r} is defined twice")
        self.functions[name] = body
        return body

    def _for_header(self) -> None:
        # for NAME [in WORDS...] ; do: the words are data; the body follows `do`.
        if self._peek_is("(("):
            raise OpaqueCommand("for (( )) loops are not judged")
        name = self._peek()
        if (
            name is None
            or name.word is None
            or not name.word.plain
            or not _NAME.fullmatch(name.text)
        ):
            raise UnparseableCommand("for needs a name")
        self.index += 1
        after = self._peek()
        if not (
            after is None
            or (after.operator and after.text in (";", "\n"))
            or self._reserved(after) in ("in", "do")
        ):
            raise UnparseableCommand("for NAME needs in, ; or do")
        if self._reserved(after) == "in":
            self.index += 1
            # The words are data, reserved-looking ones too, up to ; or a newline.
            while (token := self._peek()) is not None and not token.operator:
                self.index += 1
            if token is not None and token.text not in (";", "\n"):
                raise UnparseableCommand(f"unexpected {token.text!r} in a for loop")
        if self._peek_is(";") or self._peek_is("\n"):
            self.index += 1
        while self._peek_is("\n"):
            self.index += 1
        if self._peek() is None:
            raise IncompleteCommand("the shell waits for do")
        if self._reserved(self._peek()) != "do":
            raise UnparseableCommand("for needs do")
        self.index += 1


def parse(text: str) -> ParsedScript:
    """Parse ``text`` as far as the gateway understands the shell.

    :raises OpaqueCommand: for syntax whose effect cannot be known from the text.
    :raises IncompleteCommand: if the shell would wait for more lines.
    :raises UnparseableCommand: for a syntax error.
    """
    if "\x00" in text:
        raise OpaqueCommand("a NUL character is not judged")
    for char in text:
        if (ord(char) < 0x20 and char not in "\t\n") or char == "\x7f":
            raise OpaqueCommand(f"the control character {char!r} is not judged")
    lexer = _Lexer(_join_lines(text))
    parser = _Parser(lexer.run())
    try:
        pipelines = parser.parse_list(None)
    except IncompleteCommand as exc:
        raise (lexer.incomplete or exc) from None
    if lexer.incomplete is not None:
        # Text before the open quote parsed: the shell waits for the rest. (A syntax error
        # before it makes the shell give up the line instead: raised above.)
        raise lexer.incomplete
    return ParsedScript(pipelines=pipelines, functions=parser.functions)


def _join_lines(text: str) -> str:
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


def needs_more(text: str) -> bool:
    """Whether a shell reading ``text`` would wait for more lines before running any of it
    (an open quote or block, a trailing ``\\``, ``|``, ``&&`` or ``||``)."""
    try:
        parse(text)
    except IncompleteCommand:
        return True
    except UnparseableCommand:
        return False
    return False


def simple_words(stage: Stage) -> Iterator[tuple[Word, ...]]:
    """Every simple command of a stage, in groups too."""
    if isinstance(stage, Group):
        for pipeline in stage.pipelines:
            for inner in pipeline:
                yield from simple_words(inner)
    else:
        yield stage
