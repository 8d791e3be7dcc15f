"""The ``guardrails`` plugin: disallowed SQL never reaches the target.

Every statement of a command is judged by what the server would execute, as the connection's
protocol dialect (:mod:`hoopgw.sql`) describes it: its statement classes, nested statements,
tables, functions and columns. A command is refused as a whole when any of its statements is
denied. Enable it on a connection::

    [[connections]]
    name = "pg"
    plugins = ["recording", "guardrails"]

    [connections.guardrails]
    preset = "agent-safe-write"
    deny = ["write"]

    [[connections.guardrails.rules]]
    tables = ["hr.*"]
    message = "the HR schema is off limits"

What fails closed: a text that does not parse, a statement kind the dialect does not know, and
an ``EXECUTE`` of a prepared statement this session has not been seen to prepare. See
``docs/guardrails.md``.

On a protocol without statements (SSH), the plugin judges shell command lines instead
(``exec`` requests and, when the connection asks, lines typed at a shell) with
``deny_commands``, ``command_presets`` and ``review_commands``
(:mod:`hoopgw_guardrails.commands`). On HTTP connections it judges each request by method and
path with ``http_rules`` and ``http_default`` (:mod:`hoopgw_guardrails.http_rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from hoopgw.errors import ConfigError, PluginError
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.protocol import load_protocol
from hoopgw.secrets import resolve_secret
from hoopgw.session import Command, ConnectionInfo, SessionInfo, UpstreamOptions
from hoopgw.sql import (
    MAX_ANALYSED_BYTES,
    Analysis,
    AnalysisCache,
    Dialect,
    FunctionCatalog,
    StatementFacts,
    oversized,
)
from hoopgw.verdicts import Allow, Block, Hold, Verdict
from hoopgw_guardrails.commands import (
    CommandPolicy,
    check_command_patterns,
    check_command_presets,
    check_opaque_commands,
)
from hoopgw_guardrails.http_rules import (
    HTTP_KIND,
    HttpPolicy,
    check_http_default,
    check_http_rules,
)
from hoopgw_guardrails.kubernetes import KubernetesPolicy, check_kubernetes_rules
from hoopgw_guardrails.policy import Policy, check_classes, check_preset, check_rules, combined
from hoopgw_guardrails.startup import UnreadableParameter, set_statement, settings_of

__all__ = ["GuardrailsPlugin"]

PLUGIN = "guardrails"
COMMAND_KINDS = ("exec", "shell-line")
"""Command kinds judged as shell command lines on protocols without statements."""
KUBERNETES_KINDS = ("api", "exec", "attach")
"""Command kinds of the ``kubernetes`` protocol judged by ``kubernetes_rules``."""
_SQL_OPTIONS = ("deny", "preset", "rules", "catalog_user", "allow_functions")
# Statements that may create, replace, rename or move a function: the side connection that
# reads the catalog cannot see such a change until its transaction commits.
_CHANGES_FUNCTIONS = frozenset(
    {
        "CreateFunctionStmt",
        "AlterFunctionStmt",
        "DefineStmt",
        "RenameStmt",
        "AlterObjectSchemaStmt",
        "CreateExtensionStmt",
        "AlterExtensionStmt",
        "AlterExtensionContentsStmt",
        "DoStmt",
        "CallStmt",
    }
)
_COMMAND_OPTIONS = (
    "deny_commands",
    "command_presets",
    "review_commands",
    "allow_opaque_commands",
)


def _check_globs(value: list[Any]) -> str | None:
    if not all(isinstance(v, str) and v.strip() for v in value):
        return "must be a list of non-empty schema.name globs"
    return None


def _check_sslmode(value: str) -> str | None:
    if value not in ("disable", "prefer", "require"):
        return f"must be one of disable, prefer, require, not {value!r}"
    return None


def _check_max_statement_bytes(value: int) -> str | None:
    if value < 1024:
        return "must be a number of bytes, at least 1024"
    return None


def _too_large(size: int, limit: int) -> Block:
    return Block(
        reason=(
            f"the statement is {size} bytes, longer than guardrails analyses"
            f" (max_statement_bytes = {limit}); split it, use COPY for bulk data, or raise"
            " the limit (guardrails too-large)"
        ),
        rule="too-large",
    )


def _unknown_prepared(name: str) -> Block:
    return Block(
        reason=(
            f"unknown-prepared: EXECUTE of {name!r}, a prepared statement guardrails has not"
            " judged in this session (guardrails deny unknown-prepared)"
        ),
        rule="unknown-prepared",
    )


class GuardrailsPlugin:
    """Refuses (or holds for review) statements that the connection's policy denies."""

    options = (
        Option(
            name="deny",
            type=list,
            default=[],
            help="statement classes to refuse (ddl, drop, truncate, write, unbounded-write, "
            "privilege, file-access, opaque-code, admin, unparseable)",
            check=check_classes,
        ),
        Option(
            name="preset",
            type=str,
            default="",
            help="a named set of denied classes: agent-readonly or agent-safe-write",
            check=check_preset,
        ),
        Option(
            name="rules",
            type=list,
            default=[],
            help="custom rules matching kind, tables, functions, columns or regex, "
            "with action deny or review and a message",
            check=check_rules,
        ),
        Option(
            name="allow_functions",
            type=list,
            default=[],
            help="globs on schema.name of VOLATILE user functions known to be safe to call "
            "(others are opaque-code)",
            check=_check_globs,
        ),
        Option(
            name="catalog_user",
            type=str,
            default="",
            help="target user that reads pg_proc to resolve called functions' volatility "
            "(without it, every function outside the built-in lists is opaque-code)",
        ),
        Option(
            name="catalog_password",
            type=str,
            default="",
            help="secret reference of catalog_user's password",
        ),
        Option(
            name="catalog_sslmode",
            type=str,
            default="prefer",
            help="TLS to the target for the catalog connection: disable, prefer or require",
            check=_check_sslmode,
        ),
        Option(
            name="deny_commands",
            type=list,
            default=[],
            help="shell command patterns to refuse, argument-aware (SSH), e.g. 'rm -rf /'",
            check=check_command_patterns,
        ),
        Option(
            name="command_presets",
            type=list,
            default=[],
            help="named sets of denied shell commands: wipe-filesystem, power, pipe-to-shell",
            check=check_command_presets,
        ),
        Option(
            name="review_commands",
            type=list,
            default=[],
            help="shell command patterns held for approval (SSH)",
            check=check_command_patterns,
        ),
        Option(
            name="allow_opaque_commands",
            type=list,
            default=[],
            help="exact shell command lines allowed although guardrails cannot judge them"
            " (rule opaque, SSH)",
            check=check_opaque_commands,
        ),
        Option(
            name="max_statement_bytes",
            type=int,
            default=MAX_ANALYSED_BYTES,
            help="the longest statement text guardrails analyses, in bytes (UTF-8); a longer"
            " one is refused (rule too-large): analysing it would stall the gateway",
            check=_check_max_statement_bytes,
        ),
        Option(
            name="http_rules",
            type=list,
            default=[],
            help="rules on HTTP requests: methods, path globs, action allow, deny or review,"
            " and a message (HTTP)",
            check=check_http_rules,
        ),
        Option(
            name="http_default",
            type=str,
            default="deny",
            help="what an HTTP request no rule matches gets: allow, deny or review (HTTP)",
            check=check_http_default,
        ),
        Option(
            name="kubernetes_rules",
            type=list,
            default=[],
            help="ordered rules on Kubernetes API requests: verbs, resources, namespaces and"
            " names globs, action allow, deny or review, message (the first match decides;"
            " then portforward, proxy and secrets are denied by default)",
            check=check_kubernetes_rules,
        ),
    )
    """What the plugin reads from its ``[connections.guardrails]`` table."""

    def __init__(self, context: PluginContext) -> None:
        """Build the policy for one connection and find its protocol's dialect.

        :raises ConfigError: when the connection's protocol has no statement dialect.
        """
        self._policy = Policy.from_options(context.options)
        self._commands = CommandPolicy.from_options(context.options)
        self._max_statement_bytes: int = context.options.get(
            "max_statement_bytes", MAX_ANALYSED_BYTES
        )
        self._kubernetes: KubernetesPolicy | None = None
        if context.connection.protocol == "kubernetes":
            self._kubernetes = KubernetesPolicy.from_options(context.options)
        elif context.options.get("kubernetes_rules"):
            raise ConfigError(
                'kubernetes_rules are for connections with protocol = "kubernetes"',
                key=f"{PLUGIN}.kubernetes_rules",
                connection=context.connection.name,
            )
        # Per-session state, made here for every protocol: the observers run for every session
        # (SSH too), whatever the dialect.
        # Prepared statements each session defined, by name: what an EXECUTE of it runs.
        self._prepared: dict[str, dict[str, StatementFacts]] = {}
        # Definitions (name -> facts, None to forget; "*" forgets all) of commands being decided.
        self._pending: dict[tuple[str, int], list[tuple[str, StatementFacts | None]]] = {}
        # What the catalog said about each (kind, name) a session's statements call.
        self._volatile: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}
        # Sessions that changed functions: why their catalog answers can no longer be trusted.
        self._unsettled: dict[str, str] = {}
        # Commands being decided that may change functions, and why.
        self._changing: dict[tuple[str, int], str] = {}
        connection = context.connection
        self._http: HttpPolicy | None = None
        if connection.protocol == "http":
            if _any_set(context.options, _SQL_OPTIONS + _COMMAND_OPTIONS):
                raise ConfigError(
                    "HTTP requests are judged with http_rules and http_default",
                    key=f"{PLUGIN}.deny",
                    connection=connection.name,
                )
            self._http = HttpPolicy.from_options(context.options)
            self._dialect: Dialect | None = None
            return
        if (
            context.options.get("http_rules")
            or context.options.get("http_default", "deny") != "deny"
        ):
            raise ConfigError(
                "http_rules and http_default are for HTTP connections,"
                f" not {connection.protocol!r}",
                key=f"{PLUGIN}.http_rules",
                connection=connection.name,
            )
        try:
            dialect = load_protocol(connection.protocol).dialect
        except PluginError as exc:
            raise ConfigError(str(exc), key="protocol", connection=connection.name) from None
        if dialect is None and not _any_set(context.options, _SQL_OPTIONS):
            self._dialect = None
            return
        if dialect is not None and _any_set(context.options, _COMMAND_OPTIONS):
            raise ConfigError(
                f"shell command patterns need a protocol without statements (SSH);"
                f" {connection.protocol!r} statements are judged with deny, preset and rules",
                key=f"{PLUGIN}.deny_commands",
                connection=connection.name,
            )
        if dialect is None:
            raise ConfigError(
                f"plugin {PLUGIN!r} needs a protocol that parses statements;"
                f" {connection.protocol!r} has no dialect",
                key="plugins",
                connection=connection.name,
            )
        self._dialect = dialect
        # Analyses per principal (see AnalysisCache); by shape unless regex rules read each
        # statement's own text, which an analysis by shape does not hold.
        self._analyses = AnalysisCache(dialect)
        self._by_shape = not any(rule.regex is not None for rule in self._policy.rules)
        self._log = context.log
        self._allow_functions = tuple(p.casefold() for p in context.options["allow_functions"])
        self._functions = _function_catalog(context, dialect)

    @hookimpl
    def upstream_options(self, connection: ConnectionInfo) -> UpstreamOptions | None:
        """Sessions of a connection that denies writes run read-only on the target too, so a
        write that the analysis misses still fails on the server."""
        if self._dialect is None or not self._policy.read_only:
            return None
        return UpstreamOptions(read_only=True, reasons=("guardrails: write is denied",))

    @hookimpl
    def session_started(self, session: SessionInfo) -> Block | None:
        """Judge the session's startup parameters as the SET statements they amount to."""
        if self._dialect is None:
            return None
        try:
            settings = list(settings_of(session.attributes))
        except UnreadableParameter as exc:
            return Block(reason=f"unparseable: {exc} (guardrails)", rule="unparseable")
        for name, value in settings:
            verdict = self._judge_text(session, set_statement(name, value))
            if verdict is not None:
                # A session cannot be held for review: a startup parameter is refused outright.
                return Block(
                    reason=f"startup parameter {name}: {verdict.reason}", rule=verdict.rule
                )
        return None

    def _judge_text(self, session: SessionInfo, text: str) -> Block | Hold | None:
        analysis = self._analyses.analyze(session.identity, text, {})
        if not analysis.parseable:
            return Block(reason=f"unparseable: {analysis.error}", rule="unparseable")
        return combined([v for v in map(self._policy.judge, analysis.statements) if v is not None])

    @hookimpl
    def client_command(
        self, session: SessionInfo, command: Command
    ) -> Block | Hold | defer.Deferred[Block | Hold | None] | None:
        """Judge every statement of the command; abstain when none is denied.

        A Deferred when the functions it calls must first be resolved in the target's catalog
        (``catalog_user``); the answer is cached for the session."""
        if self._http is not None:
            return self._judge_http(command)
        if self._dialect is None:
            verdicts: list[Block | Hold | None] = []
            if self._kubernetes is not None and command.kind in KUBERNETES_KINDS:
                verdicts.append(self._kubernetes.judge(command.details))
            if command.kind in COMMAND_KINDS and self._commands.active:
                verdicts.append(self._commands.judge(command.text))
            return combined(verdicts)
        if not command.statement:
            return None  # a protocol command: it runs no statement (docs/guardrails.md)
        prepared = dict(self._prepared.get(session.id, {}))
        if command.kind == "execute" and not command.text.strip():
            # A Bind of a statement prepared with SQL PREPARE: the frontend has no text for it.
            facts = prepared.get(command.statement_name)
            if facts is None:
                return _unknown_prepared(command.statement_name)
            return self._judge(session, command, [facts])
        size = oversized(command.text, self._max_statement_bytes)
        if size is not None:
            return _too_large(size, self._max_statement_bytes)
        analysis = self._analyze(session, command)
        if not analysis.parseable:
            return Block(
                reason=(
                    f"unparseable: the command could not be parsed ({analysis.error})"
                    " (guardrails deny unparseable)"
                ),
                rule="unparseable",
            )
        judged: list[StatementFacts] = []
        definitions: list[tuple[str, StatementFacts | None]] = []
        for facts in analysis.statements:
            judged.append(facts)
            for name in facts.executes:
                target = prepared.get(name)
                if target is None:
                    return _unknown_prepared(name)
                judged.append(target)
            # Later statements of the same message may run what earlier ones prepared.
            for name in facts.deallocates:
                if name == "*":
                    prepared.clear()
                else:
                    prepared.pop(name, None)
                definitions.append((name, None))
            if facts.prepares:
                prepared[facts.prepares] = facts
                definitions.append((facts.prepares, facts))
        if command.kind == "parse" and command.statement_name and analysis.statements:
            # Protocol-level and SQL-level prepared statements share one namespace.
            definitions.append((command.statement_name, analysis.statements[0]))
        if definitions:
            self._pending[(session.id, command.seq)] = definitions
        return self._judge(session, command, judged)

    def _analyze(self, session: SessionInfo, command: Command) -> Analysis:
        identity = session.identity
        if not self._by_shape:
            return self._analyses.analyze(identity, command.text, command.details)
        analysis = self._analyses.analyze_shape(identity, command.text, command.details)
        if any(s.prepares for s in analysis.statements) or (
            command.kind == "parse" and command.statement_name
        ):
            # What a prepared statement runs is kept for the session, and a config reload
            # may hand it to an instance with regex rules: keep it with its own text.
            return self._analyses.analyze(identity, command.text, command.details)
        return analysis

    def _judge_http(self, command: Command) -> Block | Hold | None:
        assert self._http is not None
        method, path = command.details.get("method"), command.details.get("path")
        if command.kind != HTTP_KIND or not isinstance(method, str) or not isinstance(path, str):
            return Block(reason="an HTTP command without its method and path", rule="http-deny")
        return self._http.judge(method, path)

    # -- functions: what the target's catalog says they may run ------------------------------

    def _judge(
        self, session: SessionInfo, command: Command, judged: list[StatementFacts]
    ) -> Block | Hold | defer.Deferred[Block | Hold | None] | None:
        """Judge the statements once what they call is resolved (now, from the session's
        cache, or when the catalog answers)."""
        # The catalog only matters to a policy that refuses opaque-code.
        if (
            self._functions is None
            or "opaque-code" not in self._policy.deny
            or session.id in self._unsettled
        ):
            return self._verdict(session, command, judged)
        cache = self._volatile.setdefault(session.id, {})
        missing: dict[str, set[str]] = {
            k: set() for k in ("function", "relation", "field", "operator", "type")
        }
        for key in {k for facts in judged for k in _asked(facts)} - set(cache):
            missing[key[0]].add(key[1])
        if not any(missing.values()):
            return self._verdict(session, command, judged)
        reading = self._functions.opaque(
            session.attributes.get("database", ""),
            functions=missing["function"],
            relations=missing["relation"],
            fields=missing["field"],
            operators=missing["operator"],
            types=missing["type"],
        )

        def answered(answer: Mapping[tuple[str, str], tuple[str, ...]]) -> Block | Hold | None:
            if session.id in self._volatile:  # the session may have ended meanwhile
                self._volatile[session.id].update(answer)
            return self._verdict(session, command, judged, answer)

        def failed(failure: Failure) -> Block:
            self._log.error(
                "guardrails: cannot read the target's catalog of functions: {why}",
                why=failure.getErrorMessage(),
            )
            asked = sorted(n for names in missing.values() for n in names)
            return Block(
                reason=(
                    "opaque-code: the target's catalog could not be read to resolve what the"
                    f" command calls ({', '.join(asked)}); see guardrails.catalog_user"
                ),
                rule="opaque-code",
            )

        return reading.addCallbacks(answered, failed)

    def _verdict(
        self,
        session: SessionInfo,
        command: Command,
        judged: list[StatementFacts],
        answer: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
    ) -> Block | Hold | None:
        cache = {**self._volatile.get(session.id, {}), **(answer or {})}
        unsettled = self._unsettled.get(session.id, "")
        verdicts: list[Block | Hold] = []
        for facts in judged:
            resolved, changes = self._resolve(facts, cache, unsettled)
            verdict = self._policy.judge(resolved)
            if verdict is not None:
                verdicts.append(verdict)
            if changes and not unsettled:
                # Statements after this one see a catalog the side connection cannot.
                unsettled = changes
                self._changing[(session.id, command.seq)] = changes
        return combined(verdicts)

    def _resolve(
        self,
        facts: StatementFacts,
        cache: Mapping[tuple[str, str], tuple[str, ...]],
        unsettled: str,
    ) -> tuple[StatementFacts, str]:
        """``facts`` with what they call resolved, and why they may change functions (empty if
        they cannot)."""
        changes = ""
        kinds = sorted(facts.kinds & _CHANGES_FUNCTIONS)
        if kinds:
            changes = f"this session ran {kinds[0]}"
        if self._functions is None:
            # No catalog: only names the operator allowed are cleared, matched as written.
            opaque = {
                n: f"{n}() (not resolved: guardrails has no catalog_user to read the target's"
                " catalog)"
                for n in facts.unlisted_functions
                if not self._allowed(n)
            }
            return facts.resolved(opaque), changes
        opaque = {}
        for kind, name in sorted(_asked(facts)):
            label = {
                "function": f"{name}()",
                "operator": f"operator {name}",
                "type": f"type {name}",
            }.get(kind, name)
            if unsettled:
                opaque[name] = (
                    f"{label} (not resolved: {unsettled}, which the catalog read over the"
                    " gateway's own connection may not see yet; reconnect)"
                )
                continue
            # A function allowed by name is trusted, also not to change functions.
            default = (name,) if kind in ("function", "operator") else ()
            left = [c for c in cache.get((kind, name), default) if not self._allowed(c)]
            if left:
                what = {
                    "function": "VOLATILE, calling what cannot be judged, or not in the catalog",
                    "relation": "its rules or policies call functions that cannot be judged",
                    "field": "may call a function on the row that cannot be judged",
                    "operator": "runs a function that cannot be judged",
                    "type": "a cast to it or its constraints call functions that cannot be judged",
                }[kind]
                opaque[name] = f"{label} ({what}: {', '.join(left)})"
        resolved = facts.resolved(opaque)
        if "opaque-code" in resolved.causes:
            # Code the gateway cannot judge may create or replace functions too.
            changes = changes or f"this session ran {resolved.causes['opaque-code']}"
        return resolved, changes

    def _allowed(self, function: str) -> bool:
        return any(fnmatchcase(function.casefold(), p) for p in self._allow_functions)

    @hookimpl
    def command_decided(self, session: SessionInfo, command: Command, verdict: Verdict) -> None:
        """Remember what an allowed command prepared or forgot; a refused one did nothing."""
        definitions = self._pending.pop((session.id, command.seq), [])
        changes = self._changing.pop((session.id, command.seq), "")
        if not isinstance(verdict, Allow):
            return
        if changes and session.id not in self._unsettled:
            self._unsettled[session.id] = changes
            self._volatile.pop(session.id, None)
        prepared = self._prepared.setdefault(session.id, {})
        for name, facts in definitions:
            if facts is not None:
                prepared[name] = facts
            elif name == "*":
                prepared.clear()
            else:
                prepared.pop(name, None)

    @hookimpl
    def session_adopted(self, session: SessionInfo, previous: object | None) -> None:
        """A config reload hands a live session to this instance: take over the prepared
        statements it defined and what the catalog said from the instance it replaces. New to
        the connection, this instance knows none of them: an ``EXECUTE`` of a statement
        prepared before is refused as unknown, and the session's calls count as unresolved
        for ``opaque-code`` (it may have changed functions or its search path unseen)."""
        if isinstance(previous, GuardrailsPlugin):
            if session.id in previous._prepared:
                self._prepared[session.id] = dict(previous._prepared[session.id])
            if session.id in previous._volatile:
                self._volatile[session.id] = dict(previous._volatile[session.id])
            if session.id in previous._unsettled:
                self._unsettled[session.id] = previous._unsettled[session.id]
            return
        self._unsettled[session.id] = (
            "guardrails was enabled by a config reload after this session started, so what the"
            " session ran before is unknown"
        )

    @hookimpl
    def session_closed(self, session: SessionInfo) -> None:
        """Forget the session's prepared statements and what the catalog said."""
        self._prepared.pop(session.id, None)
        self._volatile.pop(session.id, None)
        self._unsettled.pop(session.id, None)
        for key in [k for k in self._pending if k[0] == session.id]:
            del self._pending[key]
        for key in [k for k in self._changing if k[0] == session.id]:
            del self._changing[key]


def _any_set(options: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    return any(options.get(name) for name in names)


def _asked(facts: StatementFacts) -> set[tuple[str, str]]:
    """What the catalog must say about a statement: its functions, relations, fields and
    operators, as ``(kind, name)``."""
    return {
        *(("function", n) for n in facts.resolvable_functions),
        *(("relation", n) for n in facts.tables),
        *(("field", n) for n in facts.field_names),
        *(("operator", n) for n in facts.operators),
        *(("type", n) for n in facts.cast_types),
    }


def _function_catalog(context: PluginContext, dialect: Dialect) -> FunctionCatalog | None:
    """The catalog that resolves called functions, when ``catalog_user`` is set.

    :raises ConfigError: when the protocol's dialect cannot read a catalog of functions.
    """
    options, connection = context.options, context.connection
    if not options["catalog_user"]:
        return None
    factory = getattr(dialect, "function_catalog", None)
    if factory is None:
        raise ConfigError(
            f"guardrails resolves functions from PostgreSQL's catalog; {connection.protocol!r}"
            " has none it can read",
            key=f"{PLUGIN}.catalog_user",
            connection=connection.name,
        )
    password = None
    if options["catalog_password"]:
        # The plugin's table is not resolved by the config loader: relative file: paths start
        # in the working directory (as masking's catalog_password).
        password = resolve_secret(
            options["catalog_password"],
            key=f"{PLUGIN}.catalog_password",
            connection=connection.name,
            base_dir=Path.cwd(),
        ).reveal()
    catalog: FunctionCatalog = factory(
        context.reactor,
        target=connection.target,
        user=options["catalog_user"],
        password=password,
        sslmode=options["catalog_sslmode"],
        connect=context.connect_upstream,
    )
    return catalog
