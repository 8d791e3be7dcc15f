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
(:mod:`hoopgw_guardrails.commands`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hoopgw.errors import ConfigError, PluginError
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.protocol import load_protocol
from hoopgw.session import Command, SessionInfo
from hoopgw.sql import Dialect, StatementFacts, analyze_command
from hoopgw.verdicts import Allow, Block, Hold, Verdict
from hoopgw_guardrails.commands import (
    CommandPolicy,
    check_command_patterns,
    check_command_presets,
)
from hoopgw_guardrails.policy import Policy, check_classes, check_preset, check_rules
from hoopgw_guardrails.startup import UnreadableParameter, set_statement, settings_of

__all__ = ["GuardrailsPlugin"]

PLUGIN = "guardrails"
COMMAND_KINDS = ("exec", "shell-line")
"""Command kinds judged as shell command lines on protocols without statements."""
_SQL_OPTIONS = ("deny", "preset", "rules")
_COMMAND_OPTIONS = ("deny_commands", "command_presets", "review_commands")


def _unknown_prepared(name: str) -> Block:
    return Block(
        reason=(
            f"unknown-prepared: EXECUTE of {name!r}, a prepared statement guardrails has not"
            " judged in this session (guardrails deny unknown-prepared)"
        ),
        rule="unknown-prepared",
    )


def _strongest(verdicts: list[Block | Hold]) -> Block | Hold | None:
    for verdict in verdicts:
        if isinstance(verdict, Block):
            return verdict
    return verdicts[0] if verdicts else None


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
    )
    """What the plugin reads from its ``[connections.guardrails]`` table."""

    def __init__(self, context: PluginContext) -> None:
        """Build the policy for one connection and find its protocol's dialect.

        :raises ConfigError: when the connection's protocol has no statement dialect.
        """
        self._policy = Policy.from_options(context.options)
        self._commands = CommandPolicy.from_options(context.options)
        connection = context.connection
        try:
            dialect = load_protocol(connection.protocol).dialect
        except PluginError as exc:
            raise ConfigError(str(exc), key="protocol", connection=connection.name) from None
        if dialect is None and not _any_set(context.options, _SQL_OPTIONS):
            self._dialect: Dialect | None = None
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
        # Prepared statements each session defined, by name: what an EXECUTE of it runs.
        self._prepared: dict[str, dict[str, StatementFacts]] = {}
        # Definitions (name -> facts, None to forget; "*" forgets all) of commands being decided.
        self._pending: dict[tuple[str, int], list[tuple[str, StatementFacts | None]]] = {}

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
            verdict = self._judge_text(set_statement(name, value))
            if verdict is not None:
                # A session cannot be held for review: a startup parameter is refused outright.
                return Block(
                    reason=f"startup parameter {name}: {verdict.reason}", rule=verdict.rule
                )
        return None

    def _judge_text(self, text: str) -> Block | Hold | None:
        assert self._dialect is not None
        analysis = self._dialect.analyze(text)
        if not analysis.parseable:
            return Block(reason=f"unparseable: {analysis.error}", rule="unparseable")
        return _strongest(
            [v for v in map(self._policy.judge, analysis.statements) if v is not None]
        )

    @hookimpl
    def client_command(self, session: SessionInfo, command: Command) -> Block | Hold | None:
        """Judge every statement of the command; abstain when none is denied."""
        if self._dialect is None:
            if command.kind in COMMAND_KINDS and self._commands.active:
                return self._commands.judge(command.text)
            return None
        if not command.statement:
            return None  # a protocol command: it runs no statement (docs/guardrails.md)
        prepared = dict(self._prepared.get(session.id, {}))
        if command.kind == "execute" and not command.text.strip():
            # A Bind of a statement prepared with SQL PREPARE: the frontend has no text for it.
            facts = prepared.get(command.statement_name)
            if facts is None:
                return _unknown_prepared(command.statement_name)
            return self._policy.judge(facts)
        analysis = analyze_command(self._dialect, command.text, command.details)
        if not analysis.parseable:
            return Block(
                reason=(
                    f"unparseable: the command could not be parsed ({analysis.error})"
                    " (guardrails deny unparseable)"
                ),
                rule="unparseable",
            )
        verdicts: list[Block | Hold] = []
        definitions: list[tuple[str, StatementFacts | None]] = []
        for facts in analysis.statements:
            judged = [facts]
            for name in facts.executes:
                target = prepared.get(name)
                if target is None:
                    return _unknown_prepared(name)
                judged.append(target)
            verdicts.extend(v for v in map(self._policy.judge, judged) if v is not None)
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
        return _strongest(verdicts)

    @hookimpl
    def command_decided(self, session: SessionInfo, command: Command, verdict: Verdict) -> None:
        """Remember what an allowed command prepared or forgot; a refused one did nothing."""
        definitions = self._pending.pop((session.id, command.seq), [])
        if not isinstance(verdict, Allow):
            return
        prepared = self._prepared.setdefault(session.id, {})
        for name, facts in definitions:
            if facts is not None:
                prepared[name] = facts
            elif name == "*":
                prepared.clear()
            else:
                prepared.pop(name, None)

    @hookimpl
    def session_closed(self, session: SessionInfo) -> None:
        """Forget the session's prepared statements."""
        self._prepared.pop(session.id, None)
        for key in [k for k in self._pending if k[0] == session.id]:
            del self._pending[key]


def _any_set(options: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    return any(options.get(name) for name in names)
