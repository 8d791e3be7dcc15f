"""One exception type per kind of failure the gateway reports, and what a client is told when
the gateway refuses or holds its work (one wording for every protocol: :class:`Refusal`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs

from hoopgw.verdicts import Block


class HoopgwError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(HoopgwError):
    """The configuration is invalid; the message names the key and the connection."""

    def __init__(self, message: str, *, key: str = "", connection: str = "") -> None:
        where = []
        if connection:
            where.append(f"connection {connection!r}")
        if key:
            where.append(f"key {key!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.key = key
        self.connection = connection


class SecretError(ConfigError):
    """A secret reference cannot be resolved. The message never holds the secret itself."""


class StartupError(HoopgwError):
    """The gateway cannot start: a listener cannot bind, the store cannot open. The message
    names the part that failed (the connection, the admin listener) and why."""


class ReloadError(HoopgwError):
    """A config reload was refused (an invalid config, a listener that cannot bind, a change
    that needs a restart, an audit record that cannot be written); the running config stays
    whole. The message says why, as a start-up error would."""


class PluginError(HoopgwError):
    """A plugin cannot be loaded or rejected its options."""


class StoreError(HoopgwError):
    """The audit store cannot read or write; commands that need it are refused."""


STORE_UNAVAILABLE = (
    "the gateway's store is unavailable, so no login can be checked; try again later"
)
"""What a client is told when its login cannot be checked because the store fails (a refusal
of the gateway's own, which counts toward no login back-off)."""


class AuthenticationError(HoopgwError):
    """A caller's credential was not accepted. The message is safe to show to the caller."""


class AccessDenied(HoopgwError):
    """An authenticated identity may not use this connection."""


class UpstreamUnavailable(HoopgwError):
    """The gateway cannot open the upstream connection of a connection that reaches its target
    through a network agent (the agent is offline, refused the target, or could not reach
    it). The message names the agent and the target and is safe to show to the client."""


# -- what a client is told: refusals and holds -----------------------------------------------
#
# A Refusal holds the facts (a stable Code, what happened, the rule and plugin that answered,
# what to do next); each protocol only maps its texts onto its own error fields (PostgreSQL
# message, detail and hint; MySQL message; SSH stderr). The MCP server passes them on, so a
# program -- or a language model -- reads the same thing whichever way it came. The codes are
# documented in docs/errors.md; they never change meaning.


HELD_NOTICE_INTERVAL = 30.0
"""Seconds between two notices telling a client that its statement still waits (where the
protocol can send one unasked: PostgreSQL)."""


class Code(enum.StrEnum):
    """Stable error codes of the gateway (docs/errors.md has the table)."""

    DENIED = "HGW-DENIED"
    """A policy rule refuses the statement; retrying the same statement fails the same way."""
    REFUSED = "HGW-REFUSED"
    """The gateway refused it without a rule: a review denied, timed out or withdrawn, or a
    part of the gateway failed closed."""
    TIMED_OUT = "HGW-TIMED-OUT"
    """The statement's review was not decided in time; if it is approved later, the identical
    statement may be run once."""
    HELD = "HGW-HELD"
    """The statement waits for a review (a notice, not an error)."""
    NO_ACCESS = "HGW-NO-ACCESS"
    """The identity may not use the connection (no group, or no live just-in-time grant)."""
    UNREADABLE = "HGW-UNREADABLE"
    """The gateway cannot read the command as the target would, so it does not forward it."""


@attrs.frozen(kw_only=True)
class Refusal:
    """The facts of one refusal (or hold) as a client is shown them."""

    code: Code
    message: str
    """One line: what happened."""
    rule: str = ""
    """The rule that fired (for a class denied by guardrails, the class)."""
    plugin: str = ""
    """The plugin that answered."""
    next_step: str = ""
    """What the caller can do next, as a sentence (may name a command to run)."""

    @property
    def detail(self) -> str:
        """The facts behind the message, in ``key=value`` form: ``code``, ``rule``, ``plugin``."""
        parts = [f"code={self.code.value}"]
        if self.rule:
            parts.append(f"rule={self.rule}")
        if self.plugin:
            parts.append(f"plugin={self.plugin}")
        return " ".join(parts)

    def text(self) -> str:
        """Everything in one line of text, for a protocol with a single message field (MySQL,
        SSH stderr, an MCP tool error): ``hoopgw <message> [<detail>]. <next step>``."""
        line = f"hoopgw {self.message} [{self.detail}]"
        return f"{line}. {self.next_step}" if self.next_step else line


REVIEW_TIMEOUT_RULE = "review-timeout"
"""The ``rule`` of the ``Block`` a review that was not decided in time gives."""


def refused(block: Block, *, connection: str = "") -> Refusal:
    """The refusal a ``Block`` verdict gives on the connection named ``connection`` (when the
    caller knows it)."""
    where = f"connection {connection}" if connection else "this connection"
    if block.rule == REVIEW_TIMEOUT_RULE:
        return Refusal(
            code=Code.TIMED_OUT,
            message=f"refused the command: {block.reason}",
            rule=block.rule,
            plugin=block.plugin,
            next_step=(
                "Ask an approver to decide the review (hoopgw reviews list --pending), then"
                " send the identical statement again."
            ),
        )
    if block.rule:
        return Refusal(
            code=Code.DENIED,
            message=f"refused the command: {block.reason}",
            rule=block.rule,
            plugin=block.plugin,
            next_step=(
                f"Rule {block.rule} does not allow this on {where}; do not retry"
                " it unchanged. Use another statement, or ask the connection's owners to change"
                " the rule."
            ),
        )
    return Refusal(
        code=Code.REFUSED,
        message=f"refused the command: {block.reason}",
        plugin=block.plugin,
        next_step="Retrying the same statement starts a new review, if it needs one.",
    )


def unreadable(reason: str) -> Refusal:
    """The refusal of a command the gateway cannot read as the target would."""
    return Refusal(
        code=Code.UNREADABLE,
        message=f"refused the command: {reason}",
        next_step="Send it in a form the gateway reads (docs/errors.md).",
    )


def access_needed(message: str, *, connection: str, jit: bool) -> Refusal:
    """The refusal of a login whose identity may not use ``connection``.

    :param jit: the connection grants access just in time, so the caller can ask for it.
    """
    if jit:
        step = (
            f"Ask for access with: hoopgw access request --connection {connection}"
            ' --duration 30m --reason "..."; connect again once it is approved.'
        )
    else:
        step = "Ask the gateway's admins to add one of your groups to the connection."
    return Refusal(code=Code.NO_ACCESS, message=f"refused the login: {message}", next_step=step)


@attrs.frozen(kw_only=True)
class HeldStatement:
    """A statement of a live session waiting for its review (what the client is told)."""

    review_id: str
    command_seq: int
    """The held command's number in its session."""
    approvers: tuple[str, ...]
    """Groups whose members may approve."""
    hold_until: float
    """POSIX time the hold times out."""
    reason: str = ""
    """Why it is held (the rule's words)."""
    rule: str = ""
    plugin: str = ""


def held(statement: HeldStatement, *, now: float) -> Refusal:
    """The notice of a statement still waiting at ``now`` (sent at once, then at intervals)."""
    groups = _groups(statement.approvers)
    left = max(0, math.ceil(statement.hold_until - now))
    return Refusal(
        code=Code.HELD,
        message=(
            f"held for review {statement.review_id} by {groups}, waiting up to {left} s"
            + (f": {statement.reason}" if statement.reason else "")
        ),
        rule=statement.rule,
        plugin=statement.plugin,
        next_step=(
            f"This statement needs approval by {groups}; review {statement.review_id}. An"
            f" approver runs: hoopgw reviews approve {statement.review_id}. Keep the"
            " connection open: the statement runs once approved."
        ),
    )


def _groups(names: Sequence[str]) -> str:
    if not names:
        return "an approver"
    if len(names) == 1:
        return f"group {names[0]}"
    return "groups " + " or ".join(names)
