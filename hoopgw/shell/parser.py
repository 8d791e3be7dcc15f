"""The shell parser: pipelines, lists, blocks and function definitions, over the lexer's tokens.

:func:`parse` reads a command line into a :class:`ParsedScript` (its pipelines and the
functions it defines), refusing, as the lexer does, anything it does not fully understand.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from hoopgw.shell.lexer import (
    NAME,
    IncompleteCommand,
    Lexer,
    OpaqueCommand,
    Token,
    UnparseableCommand,
    Word,
    join_lines,
)


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


_REDIRECTIONS = frozenset({">", ">>", "<", ">&", "<&", "&>", ">|", "<>", "&>>"})
_PIPES = frozenset({"|", "|&"})
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
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.functions: dict[str, Group] = {}

    def _peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _reserved(self, token: Token | None) -> str | None:
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
            or not NAME.fullmatch(name.text)
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
    lexer = Lexer(join_lines(text))
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
