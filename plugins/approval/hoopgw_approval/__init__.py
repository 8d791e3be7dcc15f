"""The ``approval`` plugin: risky statements wait for a human, inside the live session.

It does two things on a connection that enables it:

- it holds every statement of a class listed in ``review`` (the statement classes of
  :mod:`hoopgw.sql`, the same ones guardrails denies), as its protocol's dialect classifies it;
- it is the connection's approval backend: every held command (its own holds, and guardrails
  rules with ``action = "review"``) becomes a review in the gateway's
  :class:`~hoopgw.approvals.reviews.ReviewService`, decided through the admin API
  (``hoopgw reviews approve|deny``).

Enable it on a connection::

    [[connections]]
    name = "pg"
    plugins = ["recording", "guardrails", "approval"]

    [connections.approval]
    review = ["drop", "truncate", "unbounded-write", "write"]
    approvers = ["dba"]
    approvals = 1
    timeout = 300
    valid_for = 600

See ``docs/approvals.md``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from hoopgw.errors import ConfigError, PluginError
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.protocol import load_protocol
from hoopgw.reviews import ReviewPolicy
from hoopgw.session import Command, SessionInfo
from hoopgw.sql import DENY_CLASSES, MAX_ANALYSED_BYTES, AnalysisCache, Dialect, oversized
from hoopgw.verdicts import Block, Hold, Verdict

__all__ = ["ApprovalPlugin"]

PLUGIN = "approval"


def _check_classes(value: list[Any]) -> str | None:
    for item in value:
        if item not in DENY_CLASSES:
            return f"unknown class {item!r} (known: {', '.join(DENY_CLASSES)})"
    return None


def _check_groups(value: list[Any]) -> str | None:
    if not all(isinstance(g, str) and g for g in value):
        return "must be a list of non-empty group names"
    return None


def _check_approvals(value: int) -> str | None:
    return None if 1 <= value <= 10 else "must be from 1 to 10"


def _check_seconds(value: float) -> str | None:
    return None if 0 <= value <= 7 * 86400 else "must be seconds from 0 to 604800"


def _check_valid_for(value: float) -> str | None:
    return None if 0 < value <= 7 * 86400 else "must be seconds from 1 to 604800"


class ApprovalPlugin:
    """Holds statements of the ``review`` classes and hands every hold to the review service."""

    options = (
        Option(
            name="review",
            type=list,
            default=[],
            help="statement classes that need a human's approval (ddl, drop, truncate, write, "
            "unbounded-write, privilege, file-access, opaque-code, admin)",
            check=_check_classes,
        ),
        Option(
            name="approvers",
            type=list,
            default=[],
            help="groups whose members may approve (default: the [roles] approver groups)",
            check=_check_groups,
        ),
        Option(
            name="approvals",
            type=int,
            default=1,
            help="distinct approvals a review needs",
            check=_check_approvals,
        ),
        Option(
            name="timeout",
            type=(int, float),
            default=0,
            help="seconds a held statement waits (0: [gateway] approval_timeout, the maximum)",
            check=_check_seconds,
        ),
        Option(
            name="valid_for",
            type=(int, float),
            default=600,
            help="seconds an approval given after the hold timed out allows one re-run",
            check=_check_valid_for,
        ),
    )
    """What the plugin reads from its ``[connections.approval]`` table."""

    def __init__(self, context: PluginContext) -> None:
        """Find the connection's dialect (when ``review`` names classes) and the service.

        :raises ConfigError: ``review`` on a protocol without a statement dialect.
        """
        options = context.options
        self._review = frozenset(options["review"])
        self._policy = ReviewPolicy(
            approvers=tuple(options["approvers"]),
            required=options["approvals"],
            timeout=float(options["timeout"]),
            valid_for=float(options["valid_for"]),
        )
        self._service = context.approvals
        self._analyses: AnalysisCache | None = None
        if self._review:
            connection = context.connection
            try:
                dialect: Dialect | None = load_protocol(connection.protocol).dialect
            except PluginError as exc:
                raise ConfigError(str(exc), key="protocol", connection=connection.name) from None
            if dialect is None:
                raise ConfigError(
                    f"{PLUGIN}.review needs a protocol that parses statements;"
                    f" {connection.protocol!r} has no dialect",
                    key=f"{PLUGIN}.review",
                    connection=connection.name,
                )
            # Per principal: a cache shared by identities would tell one, by timing, what
            # another sent. By shape: only the statements' classes are read, not their text.
            self._analyses = AnalysisCache(dialect)

    @hookimpl
    def client_command(self, session: SessionInfo, command: Command) -> Block | Hold | None:
        """Hold the command when one of its statements falls in a ``review`` class.

        Fails closed: a text that does not parse is refused, and an ``EXECUTE`` of a
        prepared statement (whose body this plugin does not track) is held.
        """
        if self._analyses is None or not command.statement:
            return None  # no statements to review (a protocol command runs none)
        if not command.text.strip():
            if command.kind == "execute":
                return Hold(
                    reason="EXECUTE of a statement prepared with SQL PREPARE needs approval",
                    approvers=self._policy.approvers,
                    rule="execute",
                )
            return None
        size = oversized(command.text)
        if size is not None:
            return Block(
                reason=f"the statement is {size} bytes, longer than approval analyses"
                f" ({MAX_ANALYSED_BYTES}); split it or use COPY for bulk data",
                rule="too-large",
            )
        analysis = self._analyses.analyze_shape(session.identity, command.text, command.details)
        if not analysis.parseable:
            return Block(
                reason=f"unparseable: the command could not be parsed ({analysis.error});"
                " approval cannot tell whether it needs review",
                rule="unparseable",
            )
        for facts in analysis.statements:
            if facts.executes:
                return Hold(
                    reason=f"EXECUTE of prepared statement {facts.executes[0]!r} needs approval",
                    approvers=self._policy.approvers,
                    rule="execute",
                )
            for cls in DENY_CLASSES:
                if cls in self._review and cls in facts.causes:
                    return Hold(
                        reason=f"{cls}: {facts.causes[cls]} needs approval (approval review {cls})",
                        approvers=self._policy.approvers,
                        rule=cls,
                    )
        return None

    @hookimpl
    def approval_requested(
        self, session: SessionInfo, command: Command, hold: Hold
    ) -> defer.Deferred[Verdict]:
        """Open a review and wait for its decision (the core adds its timeout and cancels)."""
        if self._service is None:
            return defer.succeed(Block(reason="no review service is running; refused"))
        return self._service.hold(session, command, hold, self._policy)
