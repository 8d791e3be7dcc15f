"""The analysis cache: one statement analysis for every text of the same shape.

pgbench's simple protocol, like most applications, sends the same statement again and again with
other constants (``... WHERE aid = 17``, ``... WHERE aid = 4711``). The dialect's own cache
answers a text it has seen; this one answers a text of a *shape* it has seen, which a dialect
that offers ``shape`` (:mod:`hoopgw.sql`; PostgreSQL's is its parse tree without constant values
and positions) can say in a few microseconds, where a whole analysis costs a hundred or more.

What the cache gives has no statement :attr:`~hoopgw.sql.StatementFacts.text` (the dialect's
``analyze_shape`` does not deparse): a policy with ``regex`` rules, which read each
statement's own text, does not use the cache. An analysis is reused for another text only
when all of this holds, and is computed again otherwise (fail closed):

- the dialect gives both texts the same exact key (the tree itself, never a hash), read in the
  same session settings (``Command.details["lexing"]``, part of the key here too);
- no fact of the cached analysis turned on the value of a constant
  (:attr:`hoopgw.sql.Analysis.reads_literals`: ``set_config('role', ...)``, ``SET
  transaction_read_only = off``, ``LIKE '%'``, ``x + 1 = x + 1``, ...);
- the text parsed.

What a statement calls is resolved in the target's catalog per session, after this cache
(:mod:`hoopgw_guardrails`): nothing that depends on the catalog, the search path or the session
is kept here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from hoopgw.sql import Analysis, Dialect, analyze_command

__all__ = ["AnalysisCache"]


class AnalysisCache:
    """Analyses by statement shape, for one connection; the least recently used leaves first."""

    def __init__(self, dialect: Dialect, *, size: int = 2048, key_length: int = 65536) -> None:
        """
        :param dialect: the connection's dialect; without ``shape`` and ``analyze_shape``,
            every text is analysed by the dialect itself (``analyze``).
        :param size: the most shapes kept.
        :param key_length: the longest key kept, in characters: memory stays under ``size``
            times this (and the analyses).
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

    def analyze(self, text: str, details: Mapping[str, Any]) -> Analysis:
        """The analysis of a command's ``text``, as :func:`hoopgw.sql.analyze_command` gives
        it but for the statements' ``text``, which is empty when the dialect has shapes."""
        key = self.key(text, details)
        if key is None:
            return analyze_command(self._dialect, text, details)
        cached = self._analyses.get(key)
        if cached is not None:
            self._analyses.move_to_end(key)
            return cached
        assert self._methods is not None
        settings = details.get("lexing")
        analysis = self._methods[1](text, *(() if settings is None else (settings,)))
        if analysis.parseable and not analysis.reads_literals:
            self._analyses[key] = analysis
            if len(self._analyses) > self._size:
                self._analyses.popitem(last=False)
        return analysis

    def key(self, text: str, details: Mapping[str, Any]) -> Hashable | None:
        """What the cache keeps ``text``'s analysis under: the session's lexing settings and
        the dialect's shape of the text; None when it is not to be cached."""
        if not self._looked_up:
            shape = getattr(self._dialect, "shape", None)
            analyze = getattr(self._dialect, "analyze_shape", None)
            if callable(shape) and callable(analyze):
                self._methods = (shape, analyze)
            self._looked_up = True
        if self._methods is None:
            return None
        settings = details.get("lexing")
        if settings is None:
            shape, lexing = self._methods[0](text), None
        elif isinstance(settings, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            shape, lexing = self._methods[0](text, settings), tuple(sorted(settings.items()))
        else:
            return None  # settings it cannot compare: no key rather than a wrong one
        if shape is None or len(shape) > self._key_length:
            return None
        return (lexing, shape)
