"""The MySQL dialect: what a MySQL or MariaDB statement does, for guardrails and the recorder.

Two layers, because no permissively licensed parser knows every MySQL and MariaDB statement:

1. **The lexer is MySQL's own rules, written here** (:func:`tokens`). It decides what the server
   would see: quoted strings and identifiers, ``#``, ``-- `` and ``/* */`` comments, and the
   *executable* comments ``/*! ... */``, ``/*!50001 ... */`` and MariaDB's ``/*M! ... */``,
   whose contents the server runs. Whether it runs a versioned one depends on the server's
   kind and version, and a skipped one ends at its first ``*/`` (quotes or not), so the text is
   read once for every choice of versioned markers run or skipped and every distinct reading
   is judged. Statements are split at top-level semicolons, so a multi-statement text is
   judged statement by statement.
2. **The statement** is classified by its leading keywords (the table at the bottom of this
   module), and DML and queries are parsed with sqlglot's MySQL grammar (MIT licensed, the most
   complete MySQL grammar available in Python) for their tables, functions, columns and WHERE
   clause. A DML statement sqlglot cannot parse is refused as unparseable; a statement whose
   leading keywords are not in the table falls in ``opaque-code``.

What cannot be analysed is refused (:attr:`~hoopgw.sql.Analysis.error`): ``PREPARE ... FROM
@variable`` (the text is only known when it runs), an unterminated string or comment, and a
session whose lexing settings cannot be read (:class:`LexingState`: ``sql_mode=ORACLE``, a
client character set outside :data:`CLIENT_CHARSETS`). Text is read in the session's
``sql_mode`` (``ANSI_QUOTES``, ``NO_BACKSLASH_ESCAPES``) and client character set as the server
reported them (``analyze(text, settings)``); :func:`lexing_effect` says what a text may do to
those settings, which the protocol uses to keep its view in lock-step with the server's.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from hoopgw.sql import Analysis, StatementFacts

__all__ = [
    "KEEPS_LEXING",
    "LexingEffect",
    "LexingState",
    "MySQLDialect",
    "Token",
    "lexing_effect",
    "tokens",
]


class _LexError(ValueError):
    pass


@attrs.frozen
class Token:
    """One lexical token: ``kind`` is ``word``, ``string``, ``quoted`` (a backquoted
    identifier, or a double-quoted one under ``ANSI_QUOTES``), ``number``, ``variable``
    (``@name``, ``@@name``), ``punct`` or ``semicolon``."""

    kind: str
    text: str
    escapes: bool = True
    """For a string: whether a backslash escapes the next character in it (not under
    ``NO_BACKSLASH_ESCAPES``)."""

    @property
    def upper(self) -> str:
        """The text upper-cased (keywords compare by this)."""
        return self.text.upper()


# The server reads every byte from 0x80 up as part of a name, and only ASCII as white space.
_WORD = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]+")
_VARIABLE_NAME = re.compile(r"@@?[A-Za-z0-9_$.\u0080-\U0010ffff]*")
_SPACE = " \t\n\r\x0b\x0c"
_EXECUTABLE = re.compile(r"/\*M?!\d{0,6}")
MAX_VERSIONED_MARKERS = 5
"""Distinct versioned executable-comment markers one text may hold (each doubles the readings
that are analysed, see :meth:`MySQLDialect.analyze`)."""
MAX_READINGS = 256
"""Readings one analysis may go through, a text's and those of the texts it prepares or runs
(``PREPARE ... FROM '...'``, nested): each level of nesting could otherwise multiply them."""
CLIENT_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii", "binary", "latin1"})
"""The client character sets (``character_set_client``) the lexer reads exactly as the server
does: no multi-byte character holds an ASCII byte, and the only white space above 0x7F is
latin1's 0xA0 (measured on the server: ``SELECT 1\xa0+1`` and ``--\xa0`` in latin1)."""
UNSAFE_CHARSETS = frozenset({"big5", "cp932", "gbk", "sjis", "gb18030"})
"""Client character sets whose multi-byte characters can end in the byte of a backslash, a
quote or a backquote (0x5C, 0x27, 0x22, 0x60): text in them cannot be read without the
server's own tables, so they are refused by every route."""
UNSUPPORTED_SQL_MODES = {"ORACLE": "it switches MariaDB to another grammar"}
"""``sql_mode`` flags the analysis does not follow (``ANSI_QUOTES`` and
``NO_BACKSLASH_ESCAPES`` it does; the others do not change how text is split)."""
TRACKED_VARIABLES = ("sql_mode", "character_set_client", "session_track_system_variables")
"""The session variables that decide how the server reads text, as the server reports them
(session-state tracking); the last keeps the others reported."""


@attrs.frozen
class LexingState:
    """The session settings that change how the server reads a statement's text, as the
    server last reported them."""

    sql_mode: frozenset[str] = frozenset()
    """The ``sql_mode`` flags, upper-cased (combination modes expanded, as the server
    reports them)."""
    charset: str = "utf8mb4"
    """``character_set_client``, lower-cased (``utf8`` read as ``utf8mb3``)."""

    @classmethod
    def of(cls, settings: Mapping[str, str] | None) -> LexingState:
        """The state that ``settings`` (variable name to value) describe; defaults for the
        variables it does not name."""
        settings = settings or {}
        modes = settings.get("sql_mode", "")
        charset = settings.get("character_set_client", "utf8mb4").strip().lower()
        return cls(
            sql_mode=frozenset(m.strip().upper() for m in modes.split(",") if m.strip()),
            charset="utf8mb3" if charset == "utf8" else charset,
        )

    @property
    def settings(self) -> dict[str, str]:
        """The state as variable name to value (what :meth:`of` reads)."""
        return {"sql_mode": ",".join(sorted(self.sql_mode)), "character_set_client": self.charset}

    @property
    def ansi_quotes(self) -> bool:
        """Whether ``"`` quotes identifiers (``ANSI_QUOTES``) rather than strings."""
        return "ANSI_QUOTES" in self.sql_mode

    @property
    def backslash_escapes(self) -> bool:
        """Whether a backslash escapes in strings (not under ``NO_BACKSLASH_ESCAPES``)."""
        return "NO_BACKSLASH_ESCAPES" not in self.sql_mode

    @property
    def spaces(self) -> str:
        """The characters the server reads as white space."""
        return _SPACE + ("\xa0" if self.charset == "latin1" else "")

    def refusal(self) -> str:
        """Why text cannot be read safely in this state; empty when it can."""
        if self.charset not in CLIENT_CHARSETS:
            return charset_refusal(self.charset)
        for mode in sorted(self.sql_mode & UNSUPPORTED_SQL_MODES.keys()):
            return f"sql_mode {mode}: {UNSUPPORTED_SQL_MODES[mode]}, which hoopgw does not read"
        return ""


DEFAULT_STATE = LexingState()


def charset_refusal(charset: str) -> str:
    """Why the client character set ``charset`` is refused."""
    why = (
        "its multi-byte characters can end in the byte of a backslash or quote, so the server"
        " would read quotes where hoopgw reads none"
        if charset in UNSAFE_CHARSETS
        else "hoopgw reads only"
    )
    return (
        f"character_set_client {charset}: {why} (use utf8mb4; accepted:"
        f" {', '.join(sorted(CLIENT_CHARSETS))})"
    )


def _string_end(text: str, start: int, quote: str, backslash: bool) -> int:
    """Index after the closing quote of a string or identifier opened at ``start``;
    ``backslash``: whether a backslash escapes the next character."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise _LexError(f"unterminated {quote}-quoted text")


def _skipped_comment_end(text: str, i: int, nested: int) -> int:
    """Index after a comment whose body starts at ``i``, read as the server skips it: to the
    first ``*/``, quotes meaning nothing, with ``nested`` levels of ``/* */`` inside."""
    while i < len(text):
        if nested and text.startswith("/*", i):
            i = _skipped_comment_end(text, i + 2, nested - 1)
        elif text.startswith("*/", i):
            return i + 2
        else:
            i += 1
    raise _LexError("unterminated comment")


def versioned_markers(text: str) -> list[str]:
    """The distinct executable-comment markers in ``text`` that a server may skip
    (``!50001``, ``M!``, ``M!100100``; not the plain ``!`` that every server runs)."""
    return sorted({m.group()[2:] for m in _EXECUTABLE.finditer(text)} - {"!"})


def tokens(
    text: str, skipped: frozenset[str] = frozenset(), state: LexingState = DEFAULT_STATE
) -> list[Token]:
    """The tokens the server reads in ``text``, comments dropped and executable comments
    opened (their contents kept as if the markers were not there), except those whose marker
    (see :func:`versioned_markers`) is in ``skipped``: those are read as a server that does not
    run them reads them, as a comment. ``state`` is the session's lexing settings (quotes,
    backslashes, white space).

    :raises ValueError: an unterminated string, identifier or comment.
    """
    out: list[Token] = []
    i = 0
    n = len(text)
    in_executable = False
    spaces = state.spaces
    escapes = state.backslash_escapes
    string_quotes = "'" if state.ansi_quotes else "'\""
    while i < n:
        c = text[i]
        if c in spaces:
            i += 1
        elif in_executable and text.startswith("*/", i):
            in_executable = False
            i += 2
        elif text.startswith("/*", i):
            marker = _EXECUTABLE.match(text, i)
            if marker and not in_executable:
                if marker.group()[2:] in skipped:
                    i = _skipped_comment_end(text, marker.end(), 1)
                    continue
                in_executable = True
                i = marker.end()
                continue
            end = text.find("*/", i + 2)
            if end < 0:
                raise _LexError("unterminated comment")
            i = end + 2
        elif c == "#" or (
            # "-- " starts a comment when an ASCII space or control byte follows (or nothing).
            text.startswith("--", i)
            and (i + 2 == n or ord(text[i + 2]) <= 0x20 or text[i + 2] in "\x7f" + spaces)
        ):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in string_quotes:
            end = _string_end(text, i, c, escapes)
            out.append(Token("string", text[i:end], escapes))
            i = end
        elif c in '`"':
            end = _string_end(text, i, c, False)
            out.append(Token("quoted", text[i:end]))
            i = end
        elif c == "@":
            match = _VARIABLE_NAME.match(text, i)
            assert match is not None
            end = match.end()
            if end < n and text[end] in "'\"`" and not text[i + 1 : end].strip("@"):
                # @'name': the server reads the quoted part as it reads any quoted text.
                quote = text[end]
                end = _string_end(text, end, quote, escapes and quote in string_quotes)
            out.append(Token("variable", text[i:end]))
            i = end
        elif c == ";":
            out.append(Token("semicolon", ";"))
            i += 1
        else:
            match = _WORD.match(text, i)
            if (
                match
                and match.group() in ("x", "X", "b", "B", "n", "N")
                and (text.startswith("'", match.end()))
            ):
                # X'ff', B'01', N'text': one literal (PyMySQL sends bytes as X'...'), which
                # a space would split.
                end = _string_end(text, match.end(), "'", escapes and match.group() in "nN")
                kind = "string" if match.group() in "nN" else "number"
                out.append(Token(kind, text[i:end], escapes))
                i = end
            elif match:
                word = match.group()
                out.append(Token("number" if word[0].isdigit() else "word", word))
                i = match.end()
            else:
                out.append(Token("punct", c))
                i += 1
    if in_executable:
        raise _LexError("unterminated executable comment")
    return out


def _join(statement: list[Token]) -> str:
    """The statement in the server's default lexing (what sqlglot reads): a string without
    backslash escapes re-escaped, a double-quoted identifier backquoted."""
    return " ".join(map(_canonical, statement))


def _canonical(token: Token) -> str:
    if token.kind == "string" and not token.escapes:
        value = _literal(token) or ""
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if token.kind == "quoted" and token.text.startswith('"'):
        return "`" + _name(token).replace("`", "``") + "`"
    return token.text


def _name(token: Token) -> str:
    text = token.text
    if token.kind == "quoted":
        return text[1:-1].replace(text[0] * 2, text[0])
    if token.kind == "string":
        return text[1:-1]
    return text


def _literal(token: Token) -> str | None:
    """The value of a string literal token, escapes applied; None for anything else."""
    if token.kind != "string" or not token.text.startswith(("'", '"')):
        return None
    quote = token.text[0]

    def unescape(match: re.Match[str]) -> str:
        char = match.group(1)
        if char is None:
            return quote  # a doubled quote
        if char in "%_":
            return "\\" + char  # the server keeps the backslash (for LIKE patterns)
        return _ESCAPES.get(char, char)

    if not token.escapes:
        return token.text[1:-1].replace(quote * 2, quote)
    # One pass, left to right, as the server reads it.
    return re.sub(r"\\(.)|" + re.escape(quote * 2), unescape, token.text[1:-1], flags=re.DOTALL)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "Z": "\x1a", "b": "\b"}
"""The server's escape sequences in strings (any other ``\\x`` is ``x``)."""


# -- statement classification --------------------------------------------------------------

_READ = {"SELECT", "WITH", "VALUES", "TABLE", "(", "DO"}
_BENIGN = {
    "SHOW",
    "DESCRIBE",
    "DESC",
    "EXPLAIN",
    "USE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "LOCK",
    "UNLOCK",
    "HELP",
    "CHECKSUM",
    "CHECK",
    "GET",
}
_ADMIN = {
    "KILL",
    "FLUSH",
    "RESET",
    "PURGE",
    "CHANGE",
    "STOP",
    "INSTALL",
    "UNINSTALL",
    "SHUTDOWN",
    "OPTIMIZE",
    "REPAIR",
    "CACHE",
    "LOAD INDEX",
    "BINLOG",
    "XA",
    "BACKUP",
    "RESTART",
    "CLONE",
}
_PRIVILEGE_OBJECTS = {"USER", "ROLE"}
_ROUTINE_OBJECTS = {"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE", "AGGREGATE"}
_FILE_FUNCTIONS = {"LOAD_FILE"}
_SEQUENCE_WRITES = {"NEXTVAL", "SETVAL"}
_SKIP_CREATE = {
    "OR",
    "REPLACE",
    "DEFINER",
    "=",
    "TEMPORARY",
    "SQL",
    "SECURITY",
    "INVOKER",
    "ALGORITHM",
    "UNDEFINED",
    "MERGE",
    "TEMPTABLE",
    "IF",
    "NOT",
    "EXISTS",
    "ONLINE",
    "OFFLINE",
    "IGNORE",
    "UNIQUE",
    "FULLTEXT",
    "SPATIAL",
    "DEFINITION",
}


class _Unanalysable(ValueError):
    """A statement whose effect cannot be known before it runs."""


class _Facts:
    def __init__(self, kind: str, command: str) -> None:
        self.kind = kind
        self.command = command
        self.kinds = {kind}
        self.causes: dict[str, str] = {}
        self.tables: set[str] = set()
        self.functions: set[str] = set()
        self.columns: set[str] = set()
        self.has_where = False
        self.where_constant_true = False
        self.prepares = ""
        self.executes: tuple[str, ...] = ()
        self.deallocates: tuple[str, ...] = ()
        self.read_write = ""

    def add(self, cls: str, cause: str) -> None:
        self.causes.setdefault(cls, cause)

    def merge(self, other: StatementFacts) -> None:
        self.read_write = self.read_write or other.read_write
        self.kinds |= other.kinds
        for cls, cause in other.causes.items():
            self.add(cls, cause)
        self.tables |= other.tables
        self.functions |= other.functions
        self.columns |= other.columns

    def freeze(self, text: str) -> StatementFacts:
        return StatementFacts(
            kind=self.kind,
            command=self.command,
            kinds=frozenset(self.kinds),
            causes=dict(self.causes),
            tables=frozenset(self.tables),
            functions=frozenset(self.functions),
            columns=frozenset(self.columns),
            has_where=self.has_where,
            where_constant_true=self.where_constant_true,
            prepares=self.prepares,
            executes=self.executes,
            deallocates=self.deallocates,
            read_write=self.read_write,
            text=text,
        )


def _split(all_tokens: list[Token]) -> Iterator[list[Token]]:
    current: list[Token] = []
    for token in all_tokens:
        if token.kind == "semicolon":
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def _words(statement: list[Token]) -> list[str]:
    return [t.upper if t.kind == "word" else t.text for t in statement]


def readings(text: str, state: LexingState = DEFAULT_STATE) -> list[list[Token]]:
    """Every distinct token list the server may read in ``text``: one per choice of versioned
    executable comments run or skipped (see :meth:`MySQLDialect.analyze`).

    :raises ValueError: a text that cannot be read (unterminated, too many markers).
    """
    markers = versioned_markers(text)
    if len(markers) > MAX_VERSIONED_MARKERS:
        raise _Unanalysable(f"more than {MAX_VERSIONED_MARKERS} kinds of versioned comments")
    found: list[list[Token]] = []
    for mask in range(1 << len(markers)):
        skipped = frozenset(m for bit, m in enumerate(markers) if mask >> bit & 1)
        reading = tokens(text, skipped, state)
        if reading not in found:
            found.append(reading)
    return found


class MySQLDialect:
    """Statement analysis for MySQL and MariaDB (see the module docstring)."""

    name = "mysql"

    def __init__(self) -> None:
        self._state = DEFAULT_STATE  # the lexing state of the analysis under way
        # For the analysis under way only (never kept between calls, see analyze): the
        # analyses of the texts it prepares, and how many more readings it may go through.
        self._bodies: dict[tuple[str, LexingState], Analysis] = {}
        self._readings = _Readings()

    def analyze(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
        """Analyse ``text`` (one or several statements); never raises.

        :param settings: the session's lexing settings as the server reported them
            (``sql_mode``, ``character_set_client``; the protocol hands them to plugins as
            ``Command.details["lexing"]``); the server's defaults when ``None``.

        Whether a server runs a versioned executable comment (``/*!50700 ... */``,
        ``/*M!100100 ... */``) depends on its kind and version, and a skipped one ends at its
        first ``*/`` even inside quotes. So the text is read once for every choice of markers
        skipped, and the statements of every distinct reading are judged.

        A text that a statement prepares or runs (``PREPARE ... FROM '...'``) is analysed
        once per analysis however many readings hold it, and an analysis that would go
        through more than :data:`MAX_READINGS` readings in all is refused.

        Nothing is kept between calls: the dialect serves every session, and plugins cache
        per principal (:class:`hoopgw.sql.AnalysisCache`)."""
        outer = self._bodies, self._readings
        self._bodies, self._readings = {}, _Readings()
        try:
            return self._analysis(text, LexingState.of(settings))
        finally:
            self._bodies, self._readings = outer

    def _analysis(self, text: str, state: LexingState) -> Analysis:
        outer, self._state = self._state, state
        try:
            refusal = state.refusal()
            if refusal:
                raise _Unanalysable(refusal)
            statements: list[StatementFacts] = []
            found = readings(text, state)
            self._readings.spend(len(found))
            for reading in found:
                for facts in map(self._statement, _split(reading)):
                    if facts not in statements:
                        statements.append(facts)
        except (_LexError, _Unanalysable) as exc:
            return Analysis(error=str(exc))
        except SqlglotError as exc:
            return Analysis(error=f"MySQL statement not understood: {str(exc).splitlines()[0]}")
        finally:
            self._state = outer
        return Analysis(statements=tuple(statements))

    # -- one statement -------------------------------------------------------------------------

    def _statement(self, statement: list[Token]) -> StatementFacts:
        statement = _sequence_calls(statement)
        words = _words(statement)
        first = words[0]
        text = _join(statement)
        facts = self._classify(statement, words, first)
        # Calls anywhere (in a SET, a DO, a CALL's arguments): a file read is a file read, a
        # sequence moved is a write (MariaDB: NEXTVAL(), SETVAL(), NEXT VALUE FOR; LASTVAL()
        # and PREVIOUS VALUE FOR read the session's last value and move nothing).
        for i, token in enumerate(statement[:-1]):
            if token.kind == "word" and statement[i + 1].text == "(":
                if token.upper in _FILE_FUNCTIONS:
                    facts.add("file-access", f"{token.upper}()")
                    facts.functions.add(token.text.lower())
                if token.upper in _SEQUENCE_WRITES:
                    facts.add("write", f"{token.upper}()")
                    facts.functions.add(token.text.lower())

        return facts.freeze(text)

    def _classify(self, statement: list[Token], words: list[str], first: str) -> _Facts:
        second = words[1] if len(words) > 1 else ""
        if first in _READ or first in ("INSERT", "REPLACE", "UPDATE", "DELETE"):
            return self._dml(statement, words, first)
        if first == "HANDLER":
            facts = _Facts("Handler", "HANDLER")
            if len(statement) > 1:
                facts.tables.add(_qualified(statement[1:], 1))
            return facts
        if first == "ANALYZE" and second in ("SELECT", "INSERT", "REPLACE", "UPDATE", "DELETE"):
            # MariaDB's ANALYZE runs the statement and reports its execution.
            return self._dml(statement[1:], words[1:], second)
        if first in ("EXPLAIN", "DESCRIBE", "DESC"):
            if second == "ANALYZE":
                # MySQL's EXPLAIN ANALYZE runs the statement.
                for index, word in enumerate(words[2:], 2):
                    if word in _READ or word in ("INSERT", "REPLACE", "UPDATE", "DELETE"):
                        return self._dml(statement[index:], words[index:], word)
                return self._unknown(words)
            return _Facts("Explain", first)
        if first == "START" and second != "TRANSACTION":
            # START SLAVE, START REPLICA, START ALL SLAVES, START GROUP_REPLICATION
            facts = _Facts("Admin", " ".join(words[:2]))
            facts.add("admin", " ".join(words[:2]))
            return facts
        if first in _BENIGN:
            if first == "START" and _reads_write(words):
                facts = _Facts("Start", first)
                facts.read_write = "START TRANSACTION READ WRITE"
                return facts
            if first == "BEGIN" and second == "NOT":
                facts = _Facts("Compound", "BEGIN NOT ATOMIC")
                facts.add("opaque-code", "BEGIN NOT ATOMIC ... END")
                return facts
            if first == "CHECK" and second != "TABLE":
                return self._unknown(words)
            return _Facts(first.title(), first)
        if first == "LOAD" and second in ("DATA", "XML"):
            facts = _Facts("LoadData", f"LOAD {second}")
            facts.add("write", f"LOAD {second}")
            local = "LOCAL" in words[:4]
            facts.add("file-access", f"LOAD {second} {'LOCAL ' if local else ''}INFILE")
            if "TABLE" in words:
                index = words.index("TABLE")
                facts.tables.add(_qualified(statement[index + 1 :], 1))
            return facts
        if first in ("LOAD", *_ADMIN):
            facts = _Facts("Admin", " ".join(words[:2]))
            facts.add("admin", " ".join(words[:2]))
            return facts
        if first in ("GRANT", "REVOKE"):
            facts = _Facts(first.title(), first)
            facts.add("privilege", first)
            return facts
        if first == "TRUNCATE":
            facts = _Facts("Truncate", "TRUNCATE")
            facts.add("truncate", "TRUNCATE")
            rest = statement[2:] if second == "TABLE" else statement[1:]
            facts.tables.add(_qualified(rest, 1))
            return facts
        if first == "RENAME":
            facts = _Facts("Rename", f"RENAME {second}")
            facts.add("privilege" if second == "USER" else "ddl", f"RENAME {second}")
            return facts
        if first in ("CREATE", "ALTER", "DROP"):
            return self._ddl(statement, words, first)
        if first == "SET":
            return self._set(statement, words)
        if first == "PREPARE":
            return self._prepare(statement, words)
        if first == "EXECUTE" and second == "IMMEDIATE":
            return self._execute_immediate(statement)
        if first == "EXECUTE":
            facts = _Facts("Execute", "EXECUTE")
            if len(statement) < 2:
                raise _Unanalysable("EXECUTE without a statement name")
            facts.executes = (_name(statement[1]).lower(),)
            return facts
        if first in ("DEALLOCATE", "DROP") and second == "PREPARE":
            facts = _Facts("Deallocate", "DEALLOCATE PREPARE")
            facts.deallocates = (_name(statement[2]).lower(),) if len(statement) > 2 else ()
            return facts
        if first == "CALL":
            facts = _Facts("Call", "CALL")
            facts.add("opaque-code", "CALL")
            # A procedure's body may turn read-only off (SET tx_read_only = 0) and go on writing.
            facts.read_write = "CALL (its body may turn it off)"
            if len(statement) > 1:
                facts.functions.add(_qualified(statement[1:], 1))
            return facts
        return self._unknown(words)

    def _unknown(self, words: list[str]) -> _Facts:
        facts = _Facts("Unknown", words[0])
        facts.add("opaque-code", f"{words[0]} (a statement kind guardrails does not know)")
        return facts

    def _dml(self, statement: list[Token], words: list[str], first: str) -> _Facts:
        facts = _Facts(first.title(), first)
        text = _join(statement)
        if "INTO" in words:
            at = words.index("INTO")
            following = words[at + 1] if at + 1 < len(words) else ""
            if first not in ("INSERT", "REPLACE") and following in ("OUTFILE", "DUMPFILE"):
                facts.add("file-access", f"SELECT ... INTO {following}")
                # sqlglot does not read INTO OUTFILE; what it reads is the query around it.
                end = at + 3
                while end < len(words) and words[end] not in ("FROM", "FOR", "LOCK", "UNION"):
                    end += 1
                text = _join(statement[:at] + statement[end:])
        if first in ("INSERT", "REPLACE", "UPDATE", "DELETE"):
            facts.add("write", first)
        if first == "REPLACE":
            # Same shape as INSERT for what it names; sqlglot reads REPLACE as an opaque command.
            text = "INSERT" + text[len("REPLACE") :]
        if first == "DO":
            text = "SELECT" + text[2:]
        parsed = sqlglot.parse(text, read="mysql")
        if len(parsed) != 1 or parsed[0] is None or isinstance(parsed[0], exp.Command):
            raise _Unanalysable(f"{first} statement not understood")
        tree = parsed[0]
        self._walk(tree, facts)
        if isinstance(tree, exp.Insert | exp.Update | exp.Delete):
            # Whatever the first word (WITH ... DELETE, EXPLAIN ANALYZE UPDATE).
            facts.add("write", type(tree).__name__.upper())
        if isinstance(tree, exp.Update | exp.Delete):
            where = tree.args.get("where")
            facts.has_where = where is not None
            if where is None:
                facts.add("unbounded-write", f"{first} without WHERE")
            elif not list(where.find_all(exp.Column)) and not list(where.find_all(exp.Subquery)):
                facts.where_constant_true = True
                facts.add("unbounded-write", f"{first} with a constant WHERE")
        for node in tree.find_all(exp.Insert, exp.Update, exp.Delete):
            if node is not tree:
                facts.add("write", type(node).__name__.upper())
        return facts

    def _walk(self, tree: Any, facts: _Facts) -> None:
        for table in tree.find_all(exp.Table):
            if not table.name:
                continue
            parts = [p for p in (table.db, table.name) if p]
            facts.tables.add(".".join(parts).lower())
        for column in tree.find_all(exp.Column):
            facts.columns.add(column.name)
        for _star in tree.find_all(exp.Star):
            facts.columns.add("*")
        for func in tree.find_all(exp.Func):
            name = func.name if isinstance(func, exp.Anonymous) else func.sql_name()
            facts.functions.add(str(name).lower())
            if str(name).upper() in _FILE_FUNCTIONS:
                facts.add("file-access", f"{str(name).upper()}()")

    def _ddl(self, statement: list[Token], words: list[str], first: str) -> _Facts:
        index = 1
        while index < len(words) and words[index] in _SKIP_CREATE:
            index += 1
            if words[index - 1] == "DEFINER" and index < len(words) and words[index] == "=":
                index += 2  # DEFINER = user@host
        obj = words[index] if index < len(words) else ""
        command = f"{first} {obj}".strip()
        facts = _Facts(first.title() + obj.title(), command)
        if obj in _PRIVILEGE_OBJECTS:
            facts.add("privilege", command)
            return facts
        if first == "DROP":
            facts.add("drop", command)
        facts.add("ddl", command)
        if obj in _ROUTINE_OBJECTS or (obj == "VIEW" and "AS" in words):
            if obj in _ROUTINE_OBJECTS:
                facts.add("opaque-code", command)
        if obj == "FUNCTION" and "SONAME" in words:
            facts.add("admin", "CREATE FUNCTION ... SONAME")
        if obj in ("SERVER", "TABLESPACE", "LOGFILE", "INSTANCE", "DATABASE", "SCHEMA"):
            facts.add("admin", command)
        if obj == "TABLE" and index + 1 < len(statement):
            rest = statement[index + 1 :]
            while rest and rest[0].upper in ("IF", "NOT", "EXISTS"):
                rest = rest[1:]
            if rest:
                facts.tables.add(_qualified(rest, 1))
            if first == "CREATE" and ("SELECT" in words or "AS" in words):
                facts.add("write", "CREATE TABLE ... SELECT")
        return facts

    def _set(self, statement: list[Token], words: list[str]) -> _Facts:
        second = words[1] if len(words) > 1 else ""
        if second in ("PASSWORD", "ROLE", "DEFAULT"):
            facts = _Facts("SetPrivilege", f"SET {second}")
            facts.add("privilege", f"SET {second}")
            return facts
        if second == "STATEMENT":
            # MariaDB: SET STATEMENT var = value [, ...] FOR statement
            if "FOR" not in words[:-1]:
                raise _Unanalysable("SET STATEMENT without FOR and a statement")
            at = words.index("FOR")
            _set_effect(statement[2:at], statement_scoped=True)  # what the gateway cannot follow
            facts = self._set_assignments(statement[2:at])
            inner = self._statement(statement[at + 1 :])
            facts.merge(inner)
            facts.has_where = inner.has_where
            facts.where_constant_true = inner.where_constant_true
            return facts
        scopes = list(itertools.takewhile(lambda w: w in _SCOPES, words[1:]))
        if words[1 + len(scopes) : 2 + len(scopes)] == ["TRANSACTION"]:
            # SET [GLOBAL | SESSION] TRANSACTION characteristic [, characteristic]
            facts = _Facts("SetTransaction", "SET TRANSACTION")
            if "GLOBAL" in scopes:
                facts.add("admin", "SET GLOBAL TRANSACTION")
            if _reads_write(words):
                facts.read_write = "SET TRANSACTION READ WRITE"
            return facts
        _set_effect(statement[1:])  # the settings the gateway cannot follow
        return self._set_assignments(statement[1:])

    def _set_assignments(self, assignments: list[Token]) -> _Facts:
        facts = _Facts("Set", "SET")
        for assignment in _comma_split(assignments):
            words = _words(assignment)
            scope = "SESSION"
            while words and words[0] in ("SESSION", "LOCAL", "GLOBAL", "PERSIST", "PERSIST_ONLY"):
                scope = "GLOBAL" if words[0] != "LOCAL" and words[0] != "SESSION" else scope
                assignment, words = assignment[1:], words[1:]
            if not assignment:
                continue
            target = assignment[0]
            if target.kind == "variable" and not target.text.startswith("@@"):
                continue  # a user variable: its value is judged where it is used
            # The name as the server reads it, in any spacing or quoting (`sql_mode`,
            # @@session . sql_mode, @@`sql_mode`): every token up to the assignment.
            at = next((j for j, t in enumerate(assignment) if t.text in ("=", ":")), 1)
            name = "".join(map(_spelled, assignment[:at])).lower()
            assignment = [Token(target.kind, name), *assignment[at:]]
            if name.startswith("@@"):
                name = name[2:]
                if name.startswith(("global.", "persist.", "persist_only.")):
                    scope = "GLOBAL"
                name = name.split(".", 1)[-1]
            if scope == "GLOBAL":
                facts.add("admin", f"SET GLOBAL {name}")
            if name in ("names", "charset", "character"):
                # SET NAMES x [COLLATE y], SET CHARSET x, SET CHARACTER SET x
                self._client_charset(assignment[2:3] if name == "character" else assignment[1:2])
                continue
            if name == "character_set_client":
                self._client_charset(_assigned(assignment))
            if name == "sql_mode":
                self._sql_mode(assignment)
            if name in ("sql_log_bin", "sql_log_off", "general_log", "pseudo_thread_id"):
                facts.add("admin", f"SET {name}")
            if name in _READ_ONLY_VARIABLES and not _is_true(_assigned(assignment)):
                # DEFAULT too: the global default is read-write.
                facts.read_write = facts.read_write or f"SET {name}"
        return facts

    def _client_charset(self, value: list[Token]) -> None:
        _check_charset(value)

    def _sql_mode(self, assignment: list[Token]) -> None:
        _check_sql_mode(_assigned(assignment))

    def _execute_immediate(self, statement: list[Token]) -> _Facts:
        """MariaDB's ``EXECUTE IMMEDIATE 'text' [USING ...]``: judged as the text it runs."""
        literal = _literal(statement[2]) if len(statement) > 2 else None
        if literal is None or (len(statement) > 3 and statement[3].upper != "USING"):
            raise _Unanalysable(
                "EXECUTE IMMEDIATE of a variable or expression: its text is only known when it runs"
            )
        facts = _Facts("ExecuteImmediate", "EXECUTE IMMEDIATE")
        self._merge_text(facts, literal, "EXECUTE IMMEDIATE")
        return facts

    def _merge_text(self, facts: _Facts, body: str, what: str) -> None:
        """Add to ``facts`` what the statement in ``body`` does (in every reading of it; the
        server runs one statement, so several only make the judgement stricter)."""
        inner = self._bodies.get((body, self._state))
        if inner is None:
            inner = self._bodies[(body, self._state)] = self._analysis(body, self._state)
        if not inner.parseable:
            raise _Unanalysable(f"the text of {what}: {inner.error}")
        if not inner.statements:
            raise _Unanalysable(f"the text of {what} is empty")
        for statement in inner.statements:
            facts.merge(statement)

    def _prepare(self, statement: list[Token], words: list[str]) -> _Facts:
        if len(statement) < 4 or words[2] != "FROM":
            raise _Unanalysable("PREPARE without name FROM text")
        body = _literal(statement[3]) if len(statement) == 4 else None
        if body is None:
            raise _Unanalysable(
                "PREPARE ... FROM a variable or expression: its text is only known when it runs"
            )
        facts = _Facts("Prepare", "PREPARE")
        self._merge_text(facts, body, "PREPARE")
        facts.prepares = _name(statement[1]).lower()
        return facts


_SCOPES = frozenset({"GLOBAL", "SESSION", "LOCAL"})
_READ_ONLY_VARIABLES = frozenset({"tx_read_only", "transaction_read_only"})
_TRUE_VALUES = frozenset({"1", "ON", "TRUE"})


def _reads_write(words: list[str]) -> bool:
    """Whether a transaction statement sets the access mode READ WRITE (anywhere: the server
    takes the last mode given, or refuses two)."""
    return any(a == "READ" and b == "WRITE" for a, b in itertools.pairwise(words))


def _is_true(value: list[Token]) -> bool:
    """Whether a variable's assigned value is a constant the server reads as true."""
    if len(value) != 1 or value[0].kind not in ("word", "number", "string"):
        return False
    literal = _literal(value[0]) if value[0].kind == "string" else value[0].text
    return literal is not None and literal.strip().upper() in _TRUE_VALUES


def _sequence_calls(statement: list[Token]) -> list[Token]:
    """``statement`` with MariaDB's ``NEXT VALUE FOR s`` and ``PREVIOUS VALUE FOR s`` spelled
    as the calls they are, ``NEXTVAL(s)`` and ``LASTVAL(s)`` (what sqlglot reads)."""
    out: list[Token] = []
    i = 0
    while i < len(statement):
        words = _words(statement[i : i + 3])
        if words in (["NEXT", "VALUE", "FOR"], ["PREVIOUS", "VALUE", "FOR"]) and (
            statement[i].kind == "word"
        ):
            name = statement[i + 3 : i + 4]
            if _words(statement[i + 4 : i + 5]) == ["."]:
                name = statement[i + 3 : i + 6]
            call = "NEXTVAL" if words[0] == "NEXT" else "LASTVAL"
            out += [Token("word", call), Token("punct", "("), *name, Token("punct", ")")]
            i += 3 + len(name)
            continue
        out.append(statement[i])
        i += 1
    return out


def _comma_split(tokens_: list[Token]) -> Iterator[list[Token]]:
    depth = 0
    current: list[Token] = []
    for token in tokens_:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if token.text == "," and depth == 0 and token.kind == "punct":
            yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def _spelled(token: Token) -> str:
    """A token of a variable's name as the server reads it: ``@@`a``` is ``@@a``."""
    text = token.text
    prefix = text[: len(text) - len(text.lstrip("@"))] if token.kind == "variable" else ""
    body = text[len(prefix) :]
    if len(body) >= 2 and body[0] in "'\"`" and body[-1] == body[0]:
        unquoted = _literal(Token("string", body))
        body = body[1:-1].replace("``", "`") if unquoted is None else unquoted
    return prefix + body


def _assigned(assignment: list[Token]) -> list[Token]:
    """The value tokens of ``name = value`` or ``name := value``."""
    if len(assignment) > 2 and assignment[1].text == ":":
        return assignment[3:]
    if len(assignment) > 1 and assignment[1].text == "=":
        return assignment[2:]
    return []


def _qualified(rest: list[Token], _: int) -> str:
    """``db.name`` or ``name`` from the tokens that start with an object name."""
    if not rest:
        return ""
    parts = [_name(rest[0])]
    if len(rest) >= 3 and rest[1].text == "." and rest[2].kind in ("word", "quoted"):
        parts.append(_name(rest[2]))
    return ".".join(parts).lower()


# -- lexing settings: what a command may change ---------------------------------------------

_LEXING_NAMES = {"names", "charset", "character", "character_set_client", "sql_mode"}
_KEEPS_LEXING = (
    _READ
    | _BENIGN
    | _ADMIN
    | {"INSERT", "REPLACE", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "RENAME"}
    | {"TRUNCATE", "GRANT", "REVOKE", "ANALYZE", "HANDLER", "LOAD", "DEALLOCATE"}
)
"""Statements that cannot change the session's lexing settings: stored routines and triggers
they run get the settings they were created with and give the caller's back (measured on
MariaDB: a procedure's ``SET sql_mode`` or ``SET NAMES`` does not outlive its ``CALL``)."""


@attrs.frozen
class LexingEffect:
    """What a command's text may do to the session's lexing settings (:func:`lexing_effect`)."""

    changes: bool = False
    """Whether its last statement may change them (``SET``, ``CALL``, ``EXECUTE``, a compound
    statement, a statement kind not known): the server's report is followed afterwards."""
    sets: frozenset[str] = frozenset()
    """The settings its last statement sets itself: the server must report each."""
    statements: int = 1
    """How many statements the server runs from it (the most of any reading)."""


KEEPS_LEXING = LexingEffect()
"""The effect of a command that cannot change the lexing settings."""


def lexing_effect(
    text: str, state: LexingState, prepared: dict[str, LexingEffect] | None = None
) -> LexingEffect:
    """What ``text`` may do to the lexing settings, read in ``state``. ``prepared`` maps the
    names of the session's SQL prepared statements to what running them may do; the text's
    ``PREPARE``s are added to it (an ``EXECUTE`` of a name not in it may change anything).

    A statement that may change them must be the last of its text: MySQL reads each statement
    of a multi-statement packet after running the one before, so a statement behind it would
    be read in settings the gateway has not judged it in.

    :raises ValueError: why the text is refused (a statement that may change the settings
        before another, a client character set or ``sql_mode`` that cannot be read, a
        ``PREPARE`` that would set them, ``session_track_system_variables``).
    """
    return _lexing_effect(text, state, {} if prepared is None else prepared, _Readings())


class _Readings:
    """The readings one top-level call may still go through (:data:`MAX_READINGS`), and the
    effects of the texts it prepares, for that call only."""

    def __init__(self) -> None:
        self.left = MAX_READINGS
        self.bodies: dict[tuple[str, frozenset[tuple[str, LexingEffect]]], LexingEffect] = {}

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise _Unanalysable(
                f"more than {MAX_READINGS} readings of the text and the texts it prepares"
            )


def _lexing_effect(
    text: str, state: LexingState, prepared: dict[str, LexingEffect], budget: _Readings
) -> LexingEffect:
    refusal = state.refusal()
    if refusal:
        raise _Unanalysable(refusal)
    changes = False
    sets: set[str] = set()
    count = 1
    found = readings(text, state)
    budget.spend(len(found))
    for reading in found:
        statements = list(_split(reading))
        count = max(count, len(statements))
        for index, statement in enumerate(statements):
            effect = _statement_effect(statement, state, prepared, budget)
            if not effect.changes:
                continue
            if index < len(statements) - 1:
                raise _Unanalysable(
                    f"{_words(statement)[0]} may change how the server reads the statements"
                    " after it in the same packet (sql_mode, character_set_client): send it"
                    " as the last statement of its packet"
                )
            changes = True
            sets |= effect.sets
    return LexingEffect(changes=changes, sets=frozenset(sets), statements=count)


def _statement_effect(
    statement: list[Token],
    state: LexingState,
    prepared: dict[str, LexingEffect],
    budget: _Readings,
) -> LexingEffect:
    words = _words(statement)
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first == "SET":
        if second == "STATEMENT":
            # The variables are the statement's own and restored after it; the statement
            # after FOR may still change the session's settings.
            at = words.index("FOR") if "FOR" in words else len(words)
            _set_effect(statement[2:at], statement_scoped=True)
            inner = statement[at + 1 :]
            return _statement_effect(inner, state, prepared, budget) if inner else LexingEffect()
        if second in ("PASSWORD", "ROLE", "DEFAULT", "TRANSACTION"):
            return LexingEffect()
        sets = _set_effect(statement[1:])
        return LexingEffect(changes=bool(sets), sets=sets)
    if first in ("PREPARE", "EXECUTE") and (first == "PREPARE" or second == "IMMEDIATE"):
        body_at = 3 if first == "PREPARE" else 2
        rest = words[body_at + 1 : body_at + 2]
        literal = len(statement) > body_at and rest in ([], ["USING"])
        body = _literal(statement[body_at]) if literal else None
        if body is None:
            raise _Unanalysable(
                f"{first} of a variable or expression: hoopgw cannot tell whether it changes"
                " sql_mode or character_set_client"
            )
        # Each of the text's readings may hold the same body: read once per call.
        key = (body, frozenset(prepared.items()))
        body_effect = budget.bodies.get(key)
        if body_effect is None:
            body_effect = _lexing_effect(body, state, dict(prepared), budget)
            budget.bodies[key] = body_effect
        if first == "PREPARE" and body_effect.sets:
            raise _Unanalysable(
                f"PREPARE of a statement that sets {', '.join(sorted(body_effect.sets))}: set"
                " it with a plain SET statement"
            )
        if first == "PREPARE":
            prepared[_name(statement[1]).lower()] = body_effect
            return KEEPS_LEXING
        return body_effect
    if first == "EXECUTE" and len(statement) > 1:
        return prepared.get(_name(statement[1]).lower(), LexingEffect(changes=True))
    if first in ("DEALLOCATE", "DROP") and second == "PREPARE" and len(statement) > 2:
        prepared.pop(_name(statement[2]).lower(), None)
        return KEEPS_LEXING
    if first == "BEGIN" and second == "NOT":
        return LexingEffect(changes=True)  # BEGIN NOT ATOMIC ... END runs statements
    if first in _KEEPS_LEXING:
        return LexingEffect()
    return LexingEffect(changes=True)


def _set_effect(assignments: list[Token], *, statement_scoped: bool = False) -> frozenset[str]:
    """The lexing settings a SET's assignments set for the session (checking their values);
    ``statement_scoped``: the assignments of ``SET STATEMENT ... FOR``.

    ``character_set_results`` is no lexing setting, but the server writes its messages in it
    and the gateway reads them in it to mask them: it must change only where the server
    reports it, never for one statement or through the ``@@`` spelling (which MariaDB does not
    report), or a message (``Müller`` in Latin-1, say) would pass unmasked."""
    sets: set[str] = set()
    for assignment in _comma_split(assignments):
        words = _words(assignment)
        scope = "SESSION"
        while words and words[0] in ("SESSION", "LOCAL", "GLOBAL", "PERSIST", "PERSIST_ONLY"):
            scope = words[0]
            assignment, words = assignment[1:], words[1:]
        if not assignment or (
            assignment[0].kind == "variable" and not assignment[0].text.startswith("@@")
        ):
            continue  # a user variable
        at = next((j for j, t in enumerate(assignment) if t.text in ("=", ":")), 1)
        name = "".join(map(_spelled, assignment[:at])).lower()
        unscoped = False
        if name.startswith("@@"):
            scope, _, name = name[2:].rpartition(".")
            unscoped = not scope
        if name == "session_track_system_variables":
            raise _Unanalysable(
                "SET session_track_system_variables: hoopgw follows sql_mode and"
                " character_set_client through it"
            )
        if statement_scoped and name == "character_set_results":
            # The statement's messages come in it, and the server reports no change.
            raise _Unanalysable(
                "SET STATEMENT character_set_results: hoopgw reads the server's messages in"
                " the character set the server reports; set it with a plain SET"
            )
        if name == "character_set_results" and unscoped:
            raise _Unanalysable(
                "SET @@character_set_results: the server does not report this spelling, and"
                " hoopgw reads its messages in the character set it reports; write"
                " SET SESSION character_set_results = ..."
            )
        if scope.upper() not in ("", "SESSION", "LOCAL") or name not in _LEXING_NAMES:
            continue
        if unscoped:
            # MariaDB 10.11 sets the variable but does not report it (measured).
            raise _Unanalysable(
                f"SET @@{name}: the server does not report this spelling; write"
                f" SET SESSION {name} = ..."
            )
        if name in ("names", "charset"):
            _check_charset(assignment[1:2])
        elif name == "character":
            _check_charset(assignment[2:3])
        elif name == "character_set_client":
            _check_charset(_assigned(assignment))
        else:
            _check_sql_mode(_assigned(assignment))
        sets.add("sql_mode" if name == "sql_mode" else "character_set_client")
    return frozenset(sets)


def _check_charset(value: list[Token]) -> None:
    """Refuse a client character set the lexer cannot read (a computed one is judged when the
    server reports it)."""
    if len(value) != 1 or value[0].kind not in ("word", "quoted", "string"):
        return
    charset = (_literal(value[0]) if value[0].kind == "string" else _name(value[0])) or ""
    charset = charset.lower()
    if charset not in CLIENT_CHARSETS | {"default"}:
        raise _Unanalysable(charset_refusal(charset))


def _check_sql_mode(value: list[Token]) -> None:
    """Refuse an ``sql_mode`` the lexer cannot follow (a computed one is judged when the
    server reports it)."""
    literal = _literal(value[0]) if len(value) == 1 else None
    if literal is None:
        return
    for mode in sorted(
        {m.strip().upper() for m in literal.split(",")} & UNSUPPORTED_SQL_MODES.keys()
    ):
        raise _Unanalysable(
            f"sql_mode {mode}: {UNSUPPORTED_SQL_MODES[mode]}, which hoopgw does not read"
        )
