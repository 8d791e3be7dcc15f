"""The protocol-neutral view of SQL statements: what a statement does, not how it is spelled.

A protocol that carries SQL registers a :class:`Dialect` as its ``ProtocolSpec.dialect``. The
dialect parses a command's text with the database's own grammar and describes every statement
in it as :class:`StatementFacts`. Plugins (guardrails, approval, recording) judge those facts and
never the raw text, so comments, quoting and spacing change nothing. A dialect caches its answers
by text, so several plugins asking about the same command cost one parse.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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
    resolvable_functions: frozenset[str] = frozenset()
    """Functions called whose meaning depends on the target's catalog (a name that any schema
    may hold, or one in a schema other than the built-in one), as written."""
    unlisted_functions: frozenset[str] = frozenset()
    """The functions called that the dialect's reviewed built-in lists do not cover: user and
    extension functions, or built-ins newer than the lists. :attr:`causes` counts them as
    ``opaque-code`` until :meth:`resolved` is told which of them may run code it cannot judge."""
    other_opaque_cause: str = ""
    """The ``opaque-code`` cause that :attr:`unlisted_functions` do not account for, if any."""
    field_names: frozenset[str] = frozenset()
    """Names after a dot in column references (``t.name``, ``(t).name``): where the row has no
    such column, PostgreSQL calls a one-argument function of that name on it."""
    operators: frozenset[str] = frozenset()
    """Operators written in expressions (``=``, ``OPERATOR(app.===)`` as ``app.===``): each
    runs the function behind it."""
    cast_types: frozenset[str] = frozenset()
    """Types named in casts (``x::app.money``): a cast may run a function, and a cast to a
    domain runs the domain's constraints."""
    columns: frozenset[str] = frozenset()
    """Column names referenced or assigned anywhere (``*`` for a star)."""
    has_where: bool = False
    """For UPDATE and DELETE: whether the statement has a WHERE clause."""
    where_constant_true: bool = False
    """For UPDATE and DELETE: whether the WHERE clause fails to restrict the target's own rows
    (it reads no column of the target, or only in a trivially true way)."""
    prepares: str = ""
    """For ``PREPARE name AS ...``: the name it defines (``causes`` are those of its body)."""
    executes: tuple[str, ...] = ()
    """Names of prepared statements this statement runs (``EXECUTE name``)."""
    deallocates: tuple[str, ...] = ()
    """Prepared statement names this statement forgets; ``*`` for all of them."""
    read_write: str = ""
    """What in the statement would let the session write again once the server runs it
    read-only (``SET TRANSACTION READ WRITE``, ``set_config('transaction_read_only')``,
    ``ALTER SYSTEM``), for this transaction, the session or for good; empty when nothing does.
    A connection that denies ``write`` refuses it whatever its other rules say."""
    text: str = ""
    """The statement in a normalised spelling (no comments, canonical case and spacing)."""

    @property
    def classes(self) -> frozenset[str]:
        """The classes the statement falls in."""
        return frozenset(self.causes)

    def resolved(self, opaque: Mapping[str, str]) -> StatementFacts:
        """These facts once the target's catalog has resolved what they call.

        :param opaque: each function, relation or field name (as written) that may run code
            the gateway cannot judge (a VOLATILE function, or one that calls one), mapped to
            the ``opaque-code`` cause to report. Everything else the statement calls is known
            to be harmless, so :attr:`unlisted_functions` no longer count.
        """
        if not (
            opaque
            or self.unlisted_functions
            or self.other_opaque_cause
            or "opaque-code" in self.causes
        ):
            return self  # nothing to resolve: the same facts
        causes = {c: why for c, why in self.causes.items() if c != "opaque-code"}
        # Only the cause that unlisted functions explain can be cleared by the catalog: an
        # analysis that lists none (a dialect without a catalog) keeps its opaque-code cause.
        other = self.other_opaque_cause
        if not other and not self.unlisted_functions:
            other = self.causes.get("opaque-code", "")
        if other:
            causes["opaque-code"] = other
        elif opaque:
            causes["opaque-code"] = opaque[min(opaque)]
        return attrs.evolve(self, causes=causes, unlisted_functions=frozenset())


@attrs.frozen(kw_only=True)
class Analysis:
    """A command's text, analysed: its statements in order, or why it could not be parsed."""

    statements: tuple[StatementFacts, ...] = ()
    """Every statement of the text, in order (empty for an empty text)."""
    error: str = ""
    """The parser's message when the text does not parse; empty otherwise."""
    reads_literals: bool = False
    """Whether a fact turned on the value of a constant (``set_config('role', ...)``,
    ``SET transaction_read_only = off``, ``LIKE '%'``, ``x + 1 = x + 1``): the analysis then
    holds for this exact text only, never for another text of the same shape (see
    ``Dialect.shape``)."""

    @property
    def parseable(self) -> bool:
        """Whether the text parsed (an unparseable text has no statements to judge)."""
        return not self.error


class FunctionCatalog(Protocol):
    """What a target's catalog says about the code a statement may run."""

    def opaque(
        self,
        database: str,
        *,
        functions: Collection[str],
        relations: Collection[str],
        fields: Collection[str],
        operators: Collection[str],
        types: Collection[str] = (),
    ) -> Any:
        """A Deferred of a mapping ``(kind, name) -> schema-qualified objects`` for every
        name asked (``kind``: ``function``, ``relation``, ``field``, ``operator`` or
        ``type``), naming the candidates that may run code the gateway cannot judge; empty
        when none may. A function or operator name the catalog does not hold maps to itself;
        relation, field and type names it does not hold map to nothing (a CTE, a column).
        Fails when the catalog cannot be read.

        :param functions: names of :attr:`StatementFacts.resolvable_functions`.
        :param relations: names of :attr:`StatementFacts.tables`: a view's rules and a table's
            row-level security policies run functions too.
        :param fields: names of :attr:`StatementFacts.field_names`.
        :param operators: names of :attr:`StatementFacts.operators`.
        :param types: names of :attr:`StatementFacts.cast_types` (a type the catalog does not
            hold maps to nothing: the server refuses the cast).
        """
        ...


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


# A dialect may also offer ``shape(text, *settings) -> str | None``: a key that two texts
# share only when their analyses are the same but for the values of their constants and the
# ``text`` of their statements (in the same settings: the key covers everything the analysis
# depends on), or None when it cannot say; the key must be exact, never a hash. It then also
# offers ``analyze_shape(text, *settings) -> Analysis``, the analysis with every statement's
# ``text`` left empty. A plugin may reuse that analysis for every text of its shape, unless
# :attr:`Analysis.reads_literals`.
#
# A dialect may also offer ``function_catalog(reactor, *, target, user, password, sslmode,
# connect=None)``, returning a :class:`FunctionCatalog` read over a side connection with that
# credential (opened with ``connect``, the plugin context's ``connect_upstream``, when given);
# the guardrails plugin uses it to resolve what statements call (:meth:`StatementFacts.resolved`).


class LazyDialect:
    """A :class:`Dialect` imported at its first use.

    The config loader imports every configured protocol to validate its options, and a
    statement parser is slow to load (libpg_query, sqlglot): a protocol registers its dialect
    through this proxy so that commands that only read the config stay quick."""

    def __init__(self, name: str, load: Callable[[], Dialect]) -> None:
        """
        :param name: the dialect's :attr:`Dialect.name`.
        :param load: imports and makes the dialect; called once, at the first use.
        """
        self.name = name
        self._load = load
        self._dialect: Dialect | None = None

    @property
    def dialect(self) -> Dialect:
        """The dialect itself, loaded now if it was not yet."""
        if self._dialect is None:
            self._dialect = self._load()
        return self._dialect

    def analyze(self, text: str, *settings: Any) -> Analysis:
        """The dialect's :meth:`Dialect.analyze`."""
        return self.dialect.analyze(text, *settings)

    def __getattr__(self, name: str) -> Any:
        # Optional methods of a dialect, such as ``function_catalog``.
        return getattr(self.dialect, name)


def analyze_command(dialect: Dialect, text: str, details: Mapping[str, Any]) -> Analysis:
    """``dialect``'s analysis of a command's ``text``, read in the session's lexing settings
    when its protocol reports them (``details["lexing"]``, see :meth:`Dialect.analyze`)."""
    settings = details.get("lexing")
    if settings is None:
        return dialect.analyze(text)
    return dialect.analyze(text, settings)  # type: ignore[call-arg]
