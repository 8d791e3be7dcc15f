"""The protocol-neutral view of SQL statements: what a statement does, not how it is spelled.

A protocol that carries SQL registers a :class:`Dialect` as its ``ProtocolSpec.dialect``. The
dialect parses a command's text with the database's own grammar and describes every statement
in it as :class:`StatementFacts`. Plugins (guardrails, approval, recording) judge those facts and
never the raw text, so comments, quoting and spacing change nothing. A dialect caches its answers
by text, so several plugins asking about the same command cost one parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

DENY_CLASSES: tuple[str, ...] = (
    "ddl",
    "drop",
    "truncate",
    "write",
    "unbounded-write",
    "privilege",
    "file-access",
    "opaque-code",
    "admin",
    "unparseable",
)
"""Every statement class a dialect may report (``unparseable`` is the class of a text that
does not parse; no statement carries it)."""


@attrs.frozen(kw_only=True)
class StatementFacts:
    """What one top-level statement does, nested statements and function calls included."""

    kind: str
    """The dialect's name for the statement, e.g. ``DeleteStmt`` (a parse-tree node name)."""
    command: str
    """The statement as a person names it, e.g. ``DELETE``, ``ALTER SYSTEM``."""
    kinds: frozenset[str]
    """``kind`` and the kinds of every statement nested in it (CTEs, rule actions, ...)."""
    causes: Mapping[str, str] = attrs.field(factory=dict)
    """Each class from :data:`DENY_CLASSES` the statement falls in, mapped to what put it there
    (``DELETE``, ``pg_read_file()``, ``COPY ... PROGRAM``)."""
    tables: frozenset[str] = frozenset()
    """Relations named anywhere, lower-cased as the server folds them: ``schema.name`` when the
    text qualifies them, the bare ``name`` when it does not."""
    functions: frozenset[str] = frozenset()
    """Functions called anywhere, as written (``pg_catalog.set_config`` or ``set_config``)."""
    columns: frozenset[str] = frozenset()
    """Column names referenced or assigned anywhere (``*`` for a star)."""
    has_where: bool = False
    """For UPDATE and DELETE: whether the statement has a WHERE clause."""
    where_constant_true: bool = False
    """For UPDATE and DELETE: whether the WHERE clause selects every row or none (it reads no
    column of the row)."""
    prepares: str = ""
    """For ``PREPARE name AS ...``: the name it defines (``causes`` are those of its body)."""
    executes: tuple[str, ...] = ()
    """Names of prepared statements this statement runs (``EXECUTE name``)."""
    deallocates: tuple[str, ...] = ()
    """Prepared statement names this statement forgets; ``*`` for all of them."""
    text: str = ""
    """The statement in a normalised spelling (no comments, canonical case and spacing)."""

    @property
    def classes(self) -> frozenset[str]:
        """The classes the statement falls in."""
        return frozenset(self.causes)


@attrs.frozen(kw_only=True)
class Analysis:
    """A command's text, analysed: its statements in order, or why it could not be parsed."""

    statements: tuple[StatementFacts, ...] = ()
    """Every statement of the text, in order (empty for an empty text)."""
    error: str = ""
    """The parser's message when the text does not parse; empty otherwise."""

    @property
    def parseable(self) -> bool:
        """Whether the text parsed (an unparseable text has no statements to judge)."""
        return not self.error


class Dialect(Protocol):
    """A database's statement analyser, as a protocol registers it."""

    name: str
    """The dialect's name, e.g. ``postgresql``."""

    def analyze(self, text: str) -> Analysis:
        """Analyse ``text`` (one or several statements). Never raises: a text that cannot be
        understood is returned with :attr:`Analysis.error` set.

        A dialect whose reading of text depends on session settings (MySQL's ``sql_mode`` and
        client character set) also takes them, ``analyze(text, settings)``, as its protocol
        hands them to plugins in ``Command.details["lexing"]``: use :func:`analyze_command`."""
        ...


def analyze_command(dialect: Dialect, text: str, details: Mapping[str, Any]) -> Analysis:
    """``dialect``'s analysis of a command's ``text``, read in the session's lexing settings
    when its protocol reports them (``details["lexing"]``, see :meth:`Dialect.analyze`)."""
    settings = details.get("lexing")
    if settings is None:
        return dialect.analyze(text)
    return dialect.analyze(text, settings)  # type: ignore[call-arg]
