"""The protocol-neutral view of SQL statements: what a statement does, not how it is spelled.

A protocol that carries SQL registers a :class:`Dialect` as its ``ProtocolSpec.dialect``. The
dialect parses a command's text with the database's own grammar and describes every statement
in it as :class:`StatementFacts`. Plugins (guardrails, approval, recording) judge those facts and
never the raw text, so comments, quoting and spacing change nothing.

A dialect is shared by every session of the process and keeps nothing between calls: a plugin
that analyses keeps its own :class:`AnalysisCache`, whose every entry belongs to one principal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any, Protocol

import attrs

from hoopgw.session import Identity

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
    """A database's statement analyser, as a protocol registers it.

    One dialect serves every session of the process, so it caches nothing across calls: a
    cache there would answer one user's probe fast when *another* user had sent that text, a
    timing side channel. Plugins cache analyses per principal with :class:`AnalysisCache`."""

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
# :attr:`Analysis.reads_literals` (:meth:`AnalysisCache.analyze_shape` does).
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


def _principal(identity: Identity) -> tuple[str, str]:
    # Who a cache entry belongs to: the identity's name as proven by its method.
    return (identity.method, identity.name)


def _lexing(details: Mapping[str, Any]) -> tuple[bool, Hashable]:
    """Whether a command's lexing settings can be part of a key, and that part."""
    settings = details.get("lexing")
    if settings is None:
        return True, None
    if isinstance(settings, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
    ):
        return True, tuple(sorted(settings.items()))
    return False, None  # settings it cannot compare: no key rather than a wrong one


class AnalysisCache:
    """One plugin instance's statement analyses, each kept for one principal only.

    A hit only ever answers a text (or a shape of text) that the same principal -- the
    :class:`~hoopgw.session.Identity` a session runs as, by method and name -- sent before, so
    the time an analysis takes tells a user nothing about what others sent. Memory is bounded
    in total, whatever the number of principals: at most ``size`` entries with keys of at
    most ``key_length`` characters, the least recently used leaving first, whoever's it is.
    What one principal can tell from another's use is how many new statements pass (its own
    entries leave sooner), never which.

    Two kinds of entries, each keyed by principal, lexing settings
    (``Command.details["lexing"]``) and:

    - the text (:meth:`analyze`): the dialect's whole analysis of exactly that text;
    - the shape (:meth:`analyze_shape`), for a dialect that offers ``shape`` and
      ``analyze_shape`` (see :class:`Dialect`): one analysis, without the statements'
      ``text``, for every text of the shape. PostgreSQL's shape is the parse tree without
      its constants' values and positions, a few microseconds where a whole analysis costs a
      hundred or more. It is reused for another text only when the dialect gives both the
      same exact key (never a hash) in the same settings, the text parsed, and no fact turned
      on the value of a constant (:attr:`Analysis.reads_literals`); otherwise it is computed
      again (fail closed). Nothing that depends on the target's catalog or the session is
      kept.
    """

    def __init__(self, dialect: Dialect, *, size: int = 2048, key_length: int = 16384) -> None:
        """
        :param dialect: the connection's dialect.
        :param size: the most entries kept, for all principals together.
        :param key_length: the longest text or shape kept, in characters: memory stays under
            ``size`` times this (and the analyses).
        """
        self._dialect = dialect
        # The dialect's shape and analyze_shape, looked up at the first use (a dialect is
        # loaded lazily).
        self._methods: tuple[Callable[..., Any], Callable[..., Analysis]] | None = None
        self._looked_up = False
        self._size = size
        self._key_length = key_length
        self._analyses: OrderedDict[Hashable, Analysis] = OrderedDict()

    def __len__(self) -> int:
        return len(self._analyses)

    def analyze(self, identity: Identity, text: str, details: Mapping[str, Any]) -> Analysis:
        """:func:`analyze_command`'s analysis of a command's ``text`` sent by ``identity``,
        from the cache when ``identity`` sent that text before in the same settings."""
        comparable, lexing = _lexing(details)
        if not comparable or len(text) > self._key_length:
            return analyze_command(self._dialect, text, details)
        key = ("text", _principal(identity), lexing, text)
        cached = self._analyses.get(key)
        if cached is not None:
            self._analyses.move_to_end(key)
            return cached
        analysis = analyze_command(self._dialect, text, details)
        self._keep(key, analysis)
        return analysis

    def analyze_shape(self, identity: Identity, text: str, details: Mapping[str, Any]) -> Analysis:
        """As :meth:`analyze`, but the statements' ``text`` is empty when the dialect has
        shapes, and the analysis comes from the cache when ``identity`` sent a text of the
        same shape before (see the class docstring); by text otherwise."""
        key = self.shape_key(identity, text, details)
        if key is None:
            return self.analyze(identity, text, details)
        cached = self._analyses.get(key)
        if cached is not None:
            self._analyses.move_to_end(key)
            return cached
        assert self._methods is not None
        settings = details.get("lexing")
        analysis = self._methods[1](text, *(() if settings is None else (settings,)))
        if analysis.parseable and not analysis.reads_literals:
            self._keep(key, analysis)
        return analysis

    def shape_key(
        self, identity: Identity, text: str, details: Mapping[str, Any]
    ) -> Hashable | None:
        """What :meth:`analyze_shape` keeps ``text``'s analysis under: the principal, the
        session's lexing settings and the dialect's shape of the text; None when the dialect
        has no shapes or the text is not to be cached by shape."""
        if not self._looked_up:
            shape = getattr(self._dialect, "shape", None)
            analyze = getattr(self._dialect, "analyze_shape", None)
            if callable(shape) and callable(analyze):
                self._methods = (shape, analyze)
            self._looked_up = True
        if self._methods is None:
            return None
        comparable, lexing = _lexing(details)
        if not comparable:
            return None
        settings = details.get("lexing")
        key = self._methods[0](text, *(() if settings is None else (settings,)))
        if key is None or len(key) > self._key_length:
            return None
        return ("shape", _principal(identity), lexing, key)

    def _keep(self, key: Hashable, analysis: Analysis) -> None:
        self._analyses[key] = analysis
        if len(self._analyses) > self._size:
            self._analyses.popitem(last=False)


MAX_ANALYSED_BYTES = 1 << 20
"""The longest statement text a plugin should analyse by default, in bytes (UTF-8). Analysis
runs on the reactor and a parse tree is tens of times its text: a 4 MB statement took over a
minute and gigabytes, stalling every session. Bulk data belongs in COPY or in several
statements."""


def oversized(text: str, limit: int = MAX_ANALYSED_BYTES) -> int | None:
    """The size of ``text`` in bytes when it is over ``limit``, else None. Cheap for short
    texts: a character is at most four bytes, so only a text near the limit is encoded."""
    if len(text) * 4 <= limit:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None
