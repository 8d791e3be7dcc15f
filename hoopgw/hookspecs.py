"""The plugin contract: every hook a hoopgw plugin may implement.

This module is the reference for plugin authors (``docs/hooks.md`` is generated from the same
text and a test keeps the two in step). A plugin is a class, found through the ``hoopgw.plugins``
entry-point group and enabled per connection in the config; the gateway builds one instance per
connection that names it and registers it with that connection's hook relay. Implement a hook by
defining a method of the same name decorated with :data:`hoopgw.plugin.hookimpl`. A hook method
may accept any subset of the documented parameters, by name.

There are five kinds of hooks.

**Decisions** -- :func:`client_connected`, :func:`session_started`, :func:`client_command`.
Each returns a verdict (:class:`~hoopgw.verdicts.Allow`, :class:`~hoopgw.verdicts.Block`,
:class:`~hoopgw.verdicts.Hold`), ``None`` to abstain, or a :class:`~twisted.internet.defer.Deferred`
that fires with one of those. *Every* implementation is called, in no promised order, and the
answers are combined by :func:`hoopgw.verdicts.combine` (``Block > Hold > Allow > abstain``). An
exception, a failed Deferred, or a return value of any other type counts as ``Block``: the gateway
fails closed. When every plugin abstains, the command is allowed.

**Upstream requirements** -- :func:`upstream_options`. Every implementation is called and the
answers are combined (the strictest wins): how the protocol must set up its session on the
target, such as read-only. A protocol enforces what it declares
(:attr:`~hoopgw.protocol.ProtocolSpec.enforces`); the gateway refuses to start a connection whose
plugins ask for something its protocol cannot enforce, and a protocol refuses a session whose
requirement the target did not accept. An exception refuses the session (fail closed).

**Approval backend** -- :func:`approval_requested`. The first implementation that returns
non-``None`` turns a ``Hold`` into a pending decision. The core adds the timeout and cancels the
Deferred when the client goes away. With no backend, a ``Hold`` is refused.

**Data hooks** -- :func:`result_columns`, :func:`server_rows`, :func:`server_row_messages`,
:func:`server_output`, :func:`client_input`, :func:`audit_text`. Synchronous; they rewrite their
arguments in place and return ``None`` (:func:`server_row_messages` only reads, and answers
which rows :func:`server_rows` needs). They run in the order of the connection's ``plugins``
list, so masking order is explicit. A plugin that must see the final data (the recorder)
declares its implementation with ``hookimpl(wrapper=True)`` and inspects the data after
``yield``, so it stores what the client saw whatever its place in the list. An exception in a
data hook ends the session with an error: nothing unprocessed reaches the client.

**Observers** -- :func:`command_decided`, :func:`command_completed`, :func:`session_closed`. Called
exactly once per command or session *and plugin instance*, for their side effects; the return
value is ignored (except a Deferred from :func:`command_decided` for a refusal, which the
refusal waits for) and an exception is logged (the command has already been decided).
:func:`review_updated` is the notification hook: called for every change of a review on the
connection.

**Config reload** -- :func:`session_adopted`. ``SIGHUP``, ``hoopgw reload`` or
``POST /api/reload`` make a new chain for each changed connection. An instance whose plugin name and
options did not change (and whose connection kept its name, protocol, target and ``via``) is
*kept*: the same object serves the new chain, its state intact, and sees nothing of the reload.
The others are *replaced* (or removed, or new). A live session keeps its chain until its next
command boundary (:meth:`~hoopgw.ledger.CommandLedger.next_seq`, when the protocol numbers its
next command), then takes the connection's newest chain:

1. each new instance gets :func:`session_adopted` (with the replaced instance of the same
   plugin name, if any), then is introduced to the session through :func:`session_started`,
   which it judges afresh: a ``Block`` ends the session (its pending command is refused with the
   reason) -- the new policy re-judges the session before its next command;
2. each replaced or removed instance gets :func:`session_closed` (reason :data:`HANDED_OVER`)
   once the commands it decided are completed -- exactly once per instance, as for any session;
3. the next command and everything after it, data hooks included, go through the new chain.
   Commands decided before the swap get :func:`command_completed` from the chain that decided
   them; their output still arriving after the swap (a pipelined result, another SSH
   channel's stream) passes the new chain's data hooks.

A session whose connection a reload removed, or whose identity the new config no longer allows,
is ended instead (every instance gets :func:`session_closed` with the reason).

Hooks run on the reactor thread and must not block; return a Deferred for slow work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from hoopgw.reviews import ReviewRecord
    from hoopgw.session import (
        Column,
        Command,
        CommandOutcome,
        ConnectionInfo,
        Output,
        SessionInfo,
        UpstreamOptions,
    )
    from hoopgw.verdicts import Hold, Verdict

    Decision = Verdict | None | Deferred[Verdict | None]

PROJECT = "hoopgw"

hookspec = pluggy.HookspecMarker(PROJECT)


# -- decisions -------------------------------------------------------------------------------


@hookspec
def client_connected(connection: ConnectionInfo, client_address: str) -> Decision:
    """A client opened a network connection, before it authenticated.

    Called exactly once per accepted client connection.

    :param connection: the configured connection the client reached.
    :param client_address: ``HOST:PORT`` of the client.
    :return: a verdict, ``None`` to abstain, or a Deferred of either. ``Block`` closes the
        connection with a protocol error carrying the reason; ``Hold`` is treated as ``Block``
        (there is no identity yet to approve for).
    """


@hookspec
def session_started(session: SessionInfo) -> Decision:
    """A client authenticated and may start a session; no upstream connection exists yet.

    Called exactly once per authenticated client, after ``allow_groups`` was checked. The
    recording plugin writes the session's first record here, durably, before answering.

    :param session: the new session (identity, client address, TLS on each side).
    :return: a verdict, ``None`` to abstain, or a Deferred of either. ``Block`` ends the session
        with a protocol error; ``Hold`` is treated as ``Block``.
    """


@hookspec
def client_command(session: SessionInfo, command: Command) -> Decision:
    """The client sent a command; nothing of it has reached the target yet.

    Called exactly once per command, in session order. While the combined decision is pending
    the session reads no further client input (other sessions carry on). Write-ahead audit
    happens here: the recording plugin answers only once the command's record is durable, and
    answers ``Block`` if it cannot write.

    :param session: the session that sent it.
    :param command: what it asked for.
    :return: a verdict, ``None`` to abstain, or a Deferred of either.
    """


# -- upstream requirements -------------------------------------------------------------------


@hookspec
def upstream_options(connection: ConnectionInfo) -> UpstreamOptions | None:
    """How the target must run this connection's sessions, whatever the client asks.

    Called once per session, before the protocol logs in to the target, and once per
    connection when the gateway starts and when ``hoopgw config check --online`` runs (to
    check that the protocol can enforce it, and to warn about a login with the privileges
    to undo it). Answer from configuration only: the same connection must get the same answer.
    Every implementation is called; the answers are combined by
    :meth:`~hoopgw.session.UpstreamOptions.combine` (``read_only`` if any asks for it).

    With ``read_only``, the protocol starts the target's session read-only (PostgreSQL: the
    startup parameter ``default_transaction_read_only=on``; MySQL/MariaDB: ``SET SESSION
    TRANSACTION READ ONLY`` after login and after every reset of the session) and ends the
    session if the target does not confirm it, so a write the plugins missed still fails on
    the server. Refusing the statements that would turn it off is the plugin's part (the
    guardrails plugin does it for every connection where it denies ``write``).

    :param connection: the connection whose sessions are set up.
    :return: the options this plugin needs, or ``None`` for none. An exception, or a return
        value of any other type, refuses the session.
    """


# -- approval backend ------------------------------------------------------------------------


@hookspec(firstresult=True)
def approval_requested(
    session: SessionInfo, command: Command, hold: Hold
) -> Deferred[Verdict] | None:
    """A command was held; ask a human.

    Called at most once per held command. The first implementation that returns a Deferred
    owns the review. The Deferred fires with ``Allow`` (approved) or ``Block`` (denied, with the
    approver's reason). The core cancels it when the hold times out or the client goes away;
    the backend should then mark the review withdrawn.

    :param session: the session whose command is held.
    :param command: the held command; its
        :attr:`~hoopgw.session.Command.recorded_parameters` are set when it carries parameter
        values. An approval covers its text and its parameter values: the same text with other
        values is other work.
    :param hold: the combined ``Hold`` verdict (reason, approver groups).
    :return: a cancellable Deferred of a verdict, or ``None`` if this plugin does not handle it.
    """


# -- data hooks ------------------------------------------------------------------------------


@hookspec
def result_columns(session: SessionInfo, command: Command, columns: list[Column]) -> bool | None:
    """A result set is about to start; ``columns`` describes it.

    Called once per result set (a command may return several), before any of its rows.

    :param session: the session receiving the result.
    :param command: the command producing it.
    :param columns: column descriptions, in order; may be annotated in place.
    :return: ``False`` when this plugin has nothing to do with this result's rows (masking,
        for a result without text-bearing columns); ``None`` otherwise. When every plugin that
        implements :func:`server_rows` answered ``False``, the protocol streams the rows
        undecoded and :func:`server_rows` is not called for them.
    """


@hookspec
def server_rows(
    session: SessionInfo, command: Command, columns: list[Column], rows: list[list[bytes | None]]
) -> None:
    """A batch of result rows is about to be sent to the client.

    Called zero or more times per result set, with rows in order. Each row is a list of raw
    column values in the column's wire format (``columns[i].format``: 0 text, 1 binary), ``None``
    for SQL NULL. Replace values in place (``rows[r][c] = b"..."``); the protocol re-frames the
    messages with their new lengths. Only called when at least one plugin implements it, so a
    connection without row-level plugins streams rows untouched.

    :param session: the session receiving the rows.
    :param command: the command producing them.
    :param columns: the result's column descriptions.
    :param rows: the rows of this batch, mutable.
    """


@hookspec
def server_row_messages(
    session: SessionInfo,
    command: Command,
    columns: list[Column],
    data: bytes,
    starts: list[int],
    encoding: str,
) -> list[int] | None:
    """A batch of result rows arrived, seen as the target's bytes: which of them does this
    plugin need in :func:`server_rows`?

    An opt-in for plugins that scan whole batches with native code (masking's Hyperscan
    prefilter). Called once per batch of a result whose rows some plugin wants (see
    :func:`result_columns`), before :func:`server_rows`, by the PostgreSQL and MySQL
    protocols, and only when *every* plugin of the connection that implements
    :func:`server_rows` implements this hook too: a plugin with :func:`server_rows` alone needs
    every row (the recorder's row sampling, a wrapper, is one: while it samples, every row is
    decoded, and it stores each as the client gets it). Synchronous; it reads and returns, and
    changes nothing: ``data`` is immutable, and rows change, if at all, in
    :func:`server_rows`. An exception ends the session, as in every data hook.

    The protocol decodes only the rows some plugin named and calls :func:`server_rows` with
    those, in order (not at all when there are none); every other row is forwarded as the
    target sent it, byte for byte, and counted in the command's rows and bytes.

    :param session: the session receiving the rows.
    :param command: the command producing them.
    :param columns: the result's column descriptions (as for :func:`server_rows`).
    :param data: the batch's row messages back to back, exactly as the target sent them
        (PostgreSQL: ``DataRow`` messages with their type byte and length; MySQL: the row
        packets' payloads, without packet headers).
    :param starts: where each row's message starts in ``data``, ascending; the first is 0.
    :param encoding: the character encoding of the text values in ``data``, by the
        protocol's name for it (PostgreSQL's ``client_encoding``, such as ``UTF8``; MySQL's
        character set of the result's columns, such as ``utf8mb4``), or ``""`` when the
        protocol does not know it. A plugin whose byte patterns do not cover it
        answers ``None`` (fail closed).
    :return: the indices (into ``starts``) of the rows this plugin needs, ascending; ``None``
        for every row.
    """


@hookspec
def server_output(session: SessionInfo, command: Command | None, output: Output) -> None:
    """Text from the target outside result rows is about to reach the client.

    Errors, notices, asynchronous notifications, parameter reports, COPY-out data and terminal
    output all pass here. Rewrite ``output.fields`` in place.

    :param session: the session receiving it.
    :param command: the command in progress, or ``None`` for asynchronous output.
    :param output: kind and text fields, mutable.
    """


@hookspec
def client_input(session: SessionInfo, output: Output) -> None:
    """Data from the client that is not a command (COPY-in data, terminal keystrokes).

    Rewrite ``output.fields`` in place; the protocol forwards what remains.

    :param session: the session sending it.
    :param output: kind and text fields, mutable.
    """


@hookspec
def audit_text(session: SessionInfo, command: Command | None, output: Output) -> None:
    """Text about a command is about to be kept in the audit store; the target gets the original.

    Called only when at least one plugin implements it, in four places:

    - ``output.kind == "attributes"``: once per session, before :func:`session_started`;
      ``command`` is ``None`` and ``output.fields`` starts as a copy of the session's
      :attr:`~hoopgw.session.SessionInfo.attributes` (startup parameters, database, user
      names: client-chosen text). ``session_started`` implementations then receive a session
      whose :attr:`~hoopgw.session.SessionInfo.recorded_attributes` is the result, which is
      what the recording plugin stores; :attr:`~hoopgw.session.SessionInfo.attributes` keep
      the originals. Keys may be rewritten too. An exception refuses the session.

    - ``output.kind == "command"``: once per command, before :func:`client_command`;
      ``output.fields["text"]`` starts as ``command.text``. The protocol then hands plugins a
      command whose :attr:`~hoopgw.session.Command.recorded_text` is the result, which is what
      the recording plugin stores; the target still receives
      :attr:`~hoopgw.session.Command.text`. An exception ends the session (fail closed).
    - ``output.kind == "reason"``: once per decided command whose verdict has a reason (a
      parser's error may quote the statement), before :func:`command_decided`; the rewritten
      reason is what is recorded and what the client is told. An exception refuses the command.
      Also once per session whose :func:`session_started` verdict has a reason (it may quote a
      startup parameter), with ``command`` ``None``; an exception refuses the session.

    - ``output.kind == "parameter"``: once per bind parameter value of a command held for
      approval, before :func:`approval_requested`; ``output.fields["text"]`` starts as the
      value as a person reads it (:attr:`~hoopgw.session.Parameter.shown`). The approval
      backend then receives a command whose
      :attr:`~hoopgw.session.Command.recorded_parameters` are the results, which is what
      reviewers see (review, admin API, notifications). An exception refuses the command.

    Rewrite ``output.fields["text"]`` in place (masking replaces sensitive values).

    :param session: the session that sent the command.
    :param command: the command, with its original text; ``None`` for ``attributes`` and a
        session's ``reason``.
    :param output: kind ``command``, ``reason`` or ``parameter`` with field ``text``, or kind
        ``attributes``; mutable.
    """


# -- observers -------------------------------------------------------------------------------


@hookspec
def command_decided(
    session: SessionInfo, command: Command, verdict: Verdict
) -> Deferred[None] | None:
    """The combined verdict for a command is final.

    Called exactly once per command that reached :func:`client_command`, after any approval,
    before the command is forwarded (if allowed). ``verdict`` is never ``None``: a command on
    which every plugin abstained is reported as ``Allow``; one withdrawn by the client (a cancel
    or a disconnect while it waited) as ``Block``.

    Return None. For a ``Block`` an implementation may instead return a Deferred: the client
    then learns of the refusal only once every such Deferred has fired (a failed one is logged,
    and the refusal still goes). The ``recording`` plugin returns the write of the decision's
    record, so that a refused command's decision is in the audit journal before the client
    sees the refusal.

    :param session: the session that sent the command.
    :param command: the command.
    :param verdict: the final ``Allow`` or ``Block``.
    :return: None, or for a ``Block`` a Deferred the refusal waits for.
    """


@hookspec
def command_completed(session: SessionInfo, command: Command, outcome: CommandOutcome) -> None:
    """A command finished, was refused, or was cut short by the end of its session.

    Called exactly once per command that reached :func:`command_decided`, before
    :func:`session_closed`. When the session ends first, a command whose verdict was still
    pending (a slow plugin, a held command) is completed as ``cancelled`` and one that was
    allowed as ``aborted`` (every protocol keeps this through :mod:`hoopgw.ledger`).

    :param session: the session that sent the command.
    :param command: the command.
    :param outcome: how it ended (status, rows, bytes, duration, error code and message).
    """


@hookspec
def session_closed(session: SessionInfo, reason: str) -> None:
    """A session ended.

    Called exactly once per session and plugin instance for which :func:`session_started` was
    called, whatever the way it ended (client goodbye, error, gateway shutdown, revoked access,
    a config reload that removed its connection or its identity's access). A config reload that
    replaces or removes this instance while the session goes on calls it with ``reason``
    :data:`HANDED_OVER`, once the commands this instance decided are completed: the session
    continues with the new chain (see *Config reload* above), so a recorder does not record
    an end then.

    :param session: the session that ended.
    :param reason: a short phrase: ``client closed``, ``gateway stopping``, an error message, ...
    """


@hookspec
def review_updated(review: ReviewRecord, event: str) -> None:
    """A review on this connection was created or changed: tell the people who act on it.

    Called once per change, on the reactor thread, by the gateway's review service (see
    ``docs/approvals.md``); it must not block (send notifications asynchronously) and its
    failures are logged, never delay the review. ``review.statement`` is the statement as the
    audit store keeps it (masked when masking is on); still, a plugin that sends it elsewhere
    should let the operator leave it out.

    :param review: the review as stored after the change (id, kind ``statement`` or
        ``access``, status, requester, connection, reason, approvers, statement, ...).
    :param event: what happened: ``requested``, ``voted`` (an approval, more needed),
        ``approved``, ``denied``, ``timed_out`` (the client stopped waiting; a later approval
        allows one re-run), ``withdrawn``, ``aborted`` or ``expired`` (an access request
        nobody decided within ``jit_request_ttl``).
    """


# -- config reload ---------------------------------------------------------------------------


HANDED_OVER = "handed over to the reloaded config"
"""The ``reason`` of :func:`session_closed` for a plugin instance a config reload replaced or
removed while the session goes on with the new chain (the session itself has not ended)."""


@hookspec
def session_adopted(session: SessionInfo, previous: object | None) -> None:
    """A config reload hands a live session to this new plugin instance.

    Called at most once per session and new instance, at the session's first command boundary
    after the reload, before :func:`session_started` introduces the session to the instance.
    Never called for a session that started after the instance was made.

    A plugin that keeps per-session state (prepared statements it judged, a transaction's
    read-only state, a record it continues) takes it over here from ``previous``, the
    instance of the same plugin the reload replaced (an object of its own class, whose state
    the plugin knows), or fails closed: an exception ends the session with an error, as a
    data hook's does. A plugin without per-session state need not implement it.

    :param session: the live session, as the old chain reported it.
    :param previous: the replaced instance of the same plugin name on this connection, or
        ``None`` when the plugin is new to the connection.
    """


ALL_HOOKS: tuple[str, ...] = (
    "client_connected",
    "session_started",
    "client_command",
    "upstream_options",
    "approval_requested",
    "result_columns",
    "server_rows",
    "server_row_messages",
    "server_output",
    "client_input",
    "audit_text",
    "command_decided",
    "command_completed",
    "session_closed",
    "review_updated",
    "session_adopted",
)
"""Names of every hook, in the order the reference documents them."""
