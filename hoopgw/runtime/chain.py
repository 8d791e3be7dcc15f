"""The plugin chain of one connection: calls hooks and turns answers into one decision.

This is the one place where decision answers are gathered and combined, where a failing plugin
turns into ``Block`` (fail closed), and where a ``Hold`` is handed to the approval backend with
the core's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

import attrs
import pluggy
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw import hookspecs
from hoopgw.errors import PluginError
from hoopgw.session import Column, Command, ConnectionInfo, Output, SessionInfo, UpstreamOptions
from hoopgw.verdicts import Allow, Block, Hold, Verdict, combine

log = Logger(namespace="hoopgw.chain")

DECISION_HOOKS = ("client_connected", "session_started", "client_command")

WITHDRAWN = "withdrawn before it was decided (the client cancelled or went away)"
WITHHELD = "(text withheld from the log: audit text is masked on this connection)"


def _label(verdict: Verdict, plugin: str) -> Verdict:
    import attrs

    return verdict if verdict.plugin else attrs.evolve(verdict, plugin=plugin)


def _checked(answer: object, name: str, hook: str) -> Verdict | None:
    """Plugin ``name``'s answer to a decision ``hook``, labelled; ``Block`` if it is no
    verdict."""
    if answer is None:
        return None
    if isinstance(answer, Allow | Block | Hold):
        return _label(answer, name)
    return Block(
        reason=f"plugin {name!r} returned {type(answer).__name__} from {hook}",
        plugin=name,
    )


def _failed(failure: Failure, name: str, hook: str) -> Verdict:
    """What a decision ``hook`` of plugin ``name`` that failed counts as: ``Block``."""
    if failure.check(defer.CancelledError):
        return Block(reason=WITHDRAWN, plugin=name)
    log.failure("plugin {plugin} failed in {hook}", failure, plugin=name, hook=hook)
    return Block(reason=f"plugin {name!r} failed in {hook}; refused", plugin=name)


class PluginChain:
    """The enabled plugins of one connection, in config order."""

    def __init__(
        self,
        plugins: Sequence[tuple[str, object]],
        *,
        reactor: Any,
        approval_timeout: float = 300.0,
        on_decided: Callable[[Verdict], None] | None = None,
    ) -> None:
        """
        :param plugins: ``(name, instance)`` pairs in the order the config lists them.
        :param reactor: used for the approval timeout.
        :param approval_timeout: seconds a held command waits for a human before it is refused.
        :param on_decided: called with each command's final verdict (the gateway counts them).
        """
        self._on_decided = on_decided
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        # pluggy calls the last registered implementation first; register in reverse so that
        # data hooks run in the order the operator listed the plugins.
        for name, instance in reversed(plugins):
            self._pm.register(instance, name=name)
        self._pm.check_pending()
        self._all_impls: dict[str, list[Any]] = {}  # hook -> its implementations (_impls)
        self.reactor = reactor
        """The reactor the chain's timeouts run on."""
        self._approval_timeout = approval_timeout
        self.plugins: tuple[tuple[str, object], ...] = tuple(plugins)
        """``(name, instance)`` pairs in config order."""
        self.names = tuple(name for name, _ in plugins)
        self.successor: PluginChain | None = None
        """The chain a config reload put in this one's place for the connection (its live
        sessions take it at their next command, :class:`~hoopgw.ledger.CommandLedger`);
        None while this chain is the connection's newest."""
        self.retired: str | None = None
        """Why no session may start on this chain any more (a reload removed its connection,
        or changed what its sessions were set up with: a client still logging in on the old
        runtime would get the old target, login or upstream options); None while one may."""
        self.has_row_hooks = bool(self._pm.hook.server_rows.get_hookimpls())
        """Whether any plugin rewrites rows; protocols skip decoding rows when none does."""
        self.has_output_hooks = bool(self._pm.hook.server_output.get_hookimpls())
        """Whether any plugin rewrites errors, notices and other server text."""
        self.has_input_hooks = bool(self._pm.hook.client_input.get_hookimpls())
        """Whether any plugin rewrites client data that is not a command."""
        self.has_column_hooks = bool(self._pm.hook.result_columns.get_hookimpls())
        """Whether any plugin looks at result descriptions."""
        self._row_plugins = {i.plugin_name for i in self._pm.hook.server_rows.get_hookimpls()}
        message_plugins = {i.plugin_name for i in self._pm.hook.server_row_messages.get_hookimpls()}
        self.picks_rows = bool(self._row_plugins) and self._row_plugins <= message_plugins
        """Whether every plugin that rewrites rows says from the rows' bytes which it needs
        (``server_row_messages``); then protocols call :meth:`rows_needed` for each batch."""
        self.has_audit_hooks = bool(self._pm.hook.audit_text.get_hookimpls())
        """Whether any plugin rewrites command text for the audit store."""
        self.judges_commands = bool(self._pm.hook.client_command.get_hookimpls())
        """Whether any plugin answers ``client_command``; when none does, every command is
        allowed and :meth:`decide_command_at_once` decides it without a Deferred."""

    # -- decisions ---------------------------------------------------------------------------

    def newest(self) -> PluginChain:
        """The chain the latest config reload made for this chain's connection (this one when
        none replaced it)."""
        chain = self
        while chain.successor is not None:
            chain = chain.successor
        return chain

    def decide(
        self, hook: str, *, only: Collection[object] | None = None, **kwargs: Any
    ) -> defer.Deferred[Verdict | None]:
        """Call every implementation of a decision hook and combine the answers.

        :param only: ask these plugin instances alone (a reload introduces its new instances
            to a live session with ``session_started``); None asks every plugin.

        Never fails: an exception, a failed Deferred or a wrong return type from any plugin
        becomes ``Block``. For ``session_started``, the session handed to plugins carries the
        ``recorded_attributes`` that ``audit_text`` (kind ``attributes``) made of its attributes,
        and the verdict's reason (it may quote a startup parameter) passes ``audit_text`` (kind
        ``reason``) as a command's does.
        """
        if hook not in DECISION_HOOKS:
            raise ValueError(f"{hook!r} is not a decision hook")
        if hook == "session_started" and self.has_audit_hooks:
            # Every protocol's attributes pass audit_text before anything records them.
            try:
                kwargs = {**kwargs, "session": self._recordable_session(kwargs["session"])}
            except Exception:
                log.failure("plugin failed in audit_text; session refused")
                return defer.succeed(
                    Block(reason="refused: its attributes could not be made safe to record")
                )
        given: list[Verdict | None] = []
        waiting: list[tuple[defer.Deferred[Any], str]] = []
        for impl in self._impls(hook, only):
            answer = self._ask(impl, hook, kwargs)
            if isinstance(answer, defer.Deferred):
                waiting.append((answer, impl.plugin_name))
            else:
                given.append(answer)
        combined: defer.Deferred[Any]
        if not waiting:
            if not given:
                return defer.succeed(None)
            combined = defer.succeed(combine(given))
        elif len(waiting) == 1:
            # The usual pending answer (the write-ahead record): one callback pair checks and
            # combines it, no DeferredList.
            pending, name = waiting[0]
            if given:
                combined = pending.addCallbacks(
                    lambda answer: combine([*given, _checked(answer, name, hook)]),
                    lambda failure: combine([*given, _failed(failure, name, hook)]),
                )
            else:  # combine() of one answer is that answer
                combined = pending.addCallbacks(
                    _checked, _failed, callbackArgs=(name, hook), errbackArgs=(name, hook)
                )
        else:
            gathered = defer.gatherResults(
                [
                    pending.addCallbacks(
                        _checked, _failed, callbackArgs=(name, hook), errbackArgs=(name, hook)
                    )
                    for pending, name in waiting
                ],
                consumeErrors=True,
            )
            combined = gathered.addCallback(lambda late: combine([*given, *late]))
        if hook == "session_started" and self.has_audit_hooks:
            session = kwargs["session"]
            combined.addCallback(
                lambda verdict: (
                    None if verdict is None else self._recordable_reason(session, None, verdict)
                )
            )
        return combined

    def _ask(
        self, impl: Any, hook: str, kwargs: dict[str, Any]
    ) -> Verdict | defer.Deferred[Any] | None:
        """One plugin's answer: a verdict or None at once, or the Deferred the plugin answered
        with (a coroutine made one), unchecked: :func:`_checked` and :func:`_failed` judge
        what it fires with. Never raises: a failure is a Block."""
        name = impl.plugin_name
        try:
            arguments = [kwargs[a] for a in impl.argnames]
        except KeyError as exc:  # hook implemented with a parameter we do not have
            return Block(reason=f"plugin {name!r}: unknown parameter {exc} in {hook}", plugin=name)
        try:
            answer = impl.function(*arguments)
        except Exception:
            return _failed(Failure(), name, hook)
        if answer is None or isinstance(answer, defer.Deferred):
            return answer
        if isinstance(answer, Coroutine):
            return defer.ensureDeferred(answer)
        return _checked(answer, name, hook)

    def decide_command(self, session: SessionInfo, command: Command) -> defer.Deferred[Verdict]:
        """Decide a command: combine ``client_command``, resolve a ``Hold``, report the verdict.

        The returned Deferred fires with ``Allow`` or ``Block`` (never ``Hold``, never ``None``)
        after ``command_decided`` was called. Cancel it when the client goes away or cancels:
        whatever is pending (a plugin's answer, an approval) is cancelled, and
        ``command_decided`` still reports the command, as a ``Block``.
        """
        pending: list[defer.Deferred[Any]] = []
        cancelled: list[bool] = []

        def cancel(_: defer.Deferred[Verdict]) -> None:
            cancelled.append(True)
            pending[-1].cancel()

        decided: defer.Deferred[Verdict] = defer.Deferred(cancel)

        def resolve(verdict: Verdict | None) -> defer.Deferred[None] | None:
            if verdict is None:
                report(Allow())
            elif isinstance(verdict, Hold):
                approval = self._approve(session, command, verdict)
                pending.append(approval)
                return approval.addCallback(report)
            else:
                report(verdict)
            return None

        def report(verdict: Verdict) -> None:
            verdict = self._recordable_reason(session, command, verdict)
            if self._on_decided is not None:
                self._on_decided(verdict)
            waits = self.notify(
                "command_decided", session=session, command=command, verdict=verdict
            )
            if isinstance(verdict, Block) and waits:
                # The refusal waits for what the observers asked for: the decision's audit
                # record in the journal (design invariant 2).
                def refuse(_: object) -> None:
                    if not cancelled:
                        decided.callback(verdict)

                def failed(failure: Failure) -> None:
                    log.failure("a command_decided observer failed", failure)

                defer.gatherResults(waits, consumeErrors=True).addErrback(failed).addBoth(refuse)
                return
            if not cancelled:  # a cancelled Deferred fails with CancelledError instead
                decided.callback(verdict)

        first: Any = self.decide("client_command", session=session, command=command)
        pending.append(first)
        first.addCallback(resolve)
        return decided

    def decide_command_at_once(self, session: SessionInfo, command: Command) -> Allow | None:
        """Decide a command without a Deferred when no plugin judges commands: report it
        allowed (``command_decided``, as :meth:`decide_command` would) and return ``Allow``.
        Returns None, reporting nothing, when a plugin implements ``client_command``: the
        caller then uses :meth:`decide_command`."""
        if self.judges_commands:
            return None
        verdict = Allow()
        if self._on_decided is not None:
            self._on_decided(verdict)
        self.notify("command_decided", session=session, command=command, verdict=verdict)
        return verdict

    def _approve(
        self, session: SessionInfo, command: Command, hold: Hold
    ) -> defer.Deferred[Verdict]:
        try:
            command = self._reviewable(session, command)
        except Exception:
            log.failure("plugin failed in audit_text; held command refused")
            return defer.succeed(
                Block(reason="refused: its parameters could not be made safe to show")
            )
        try:
            pending = self._pm.hook.approval_requested(session=session, command=command, hold=hold)
        except Exception:
            log.failure("approval backend failed")
            return defer.succeed(
                Block(reason="approval backend failed; refused", plugin=hold.plugin)
            )
        if pending is None:
            return defer.succeed(
                Block(
                    reason=f"needs approval ({hold.reason}), but no approval backend is enabled",
                    plugin=hold.plugin,
                    rule=hold.rule,
                )
            )
        if not isinstance(pending, defer.Deferred):
            pending = defer.succeed(pending)
        pending.addTimeout(self._approval_timeout, self.reactor)

        def checked(answer: object) -> Verdict:
            if isinstance(answer, Allow | Block):
                return answer
            return Block(reason="approval backend gave no clear answer; refused")

        def failed(failure: Failure) -> Verdict:
            if failure.check(defer.TimeoutError):
                return Block(reason=f"approval timed out after {self._approval_timeout:g}s")
            if failure.check(defer.CancelledError):
                return Block(reason=WITHDRAWN, plugin=hold.plugin, rule=hold.rule)
            log.failure("approval backend failed", failure)
            return Block(reason="approval backend failed; refused")

        return pending.addCallbacks(checked, failed)

    # -- upstream requirements -----------------------------------------------------------------

    def upstream_options(self, connection: ConnectionInfo) -> UpstreamOptions:
        """Ask every plugin how the target must run the connection's sessions; the strictest
        answer (:meth:`~hoopgw.session.UpstreamOptions.combine`).

        :raises PluginError: a plugin failed or answered something else than
            :class:`~hoopgw.session.UpstreamOptions` or ``None`` (the caller refuses the session).
        """
        answers = []
        kwargs = {"connection": connection}
        for impl in self._pm.hook.upstream_options.get_hookimpls():
            name = impl.plugin_name
            try:
                answer = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                log.failure("plugin {plugin} failed in upstream_options", plugin=name)
                raise PluginError(f"plugin {name!r} failed in upstream_options") from exc
            if answer is None:
                continue
            if not isinstance(answer, UpstreamOptions):
                raise PluginError(
                    f"plugin {name!r} returned {type(answer).__name__} from upstream_options"
                )
            answers.append(answer)
        return UpstreamOptions.combine(answers)

    def adopt(self, instance: object, session: SessionInfo, previous: object | None) -> None:
        """Call ``session_adopted`` of the plugin ``instance`` alone (see the hook).

        Exceptions propagate: the caller ends the session (fail closed).
        """
        kwargs = {"session": session, "previous": previous}
        for impl in self._impls("session_adopted", [instance]):
            impl.function(*[kwargs[a] for a in impl.argnames])

    def _impls(self, hook: str, only: Collection[object] | None) -> list[Any]:
        if only is None:
            impls = self._all_impls.get(hook)
            if impls is None:
                # Plugins are registered once, in __init__: a hook's implementations never change.
                impls = self._all_impls[hook] = getattr(self._pm.hook, hook).get_hookimpls()
            return impls
        impls = getattr(self._pm.hook, hook).get_hookimpls()
        return [impl for impl in impls if any(impl.plugin is o for o in only)]

    # -- data hooks and observers ------------------------------------------------------------

    @property
    def hook(self) -> Any:
        """The pluggy hook relay, for data hooks: ``chain.hook.server_rows(...)``.

        Data hooks run in config order and their exceptions propagate to the protocol, which
        ends the session (nothing unprocessed reaches the client).
        """
        return self._pm.hook

    def result_columns(self, session: SessionInfo, command: Command, columns: list[Column]) -> bool:
        """Call ``result_columns`` (in config order); return whether any plugin with a
        ``server_rows`` hook wants this result's rows, i.e. did not answer ``False``.

        When none does, the protocol streams the result's rows without decoding them.
        Exceptions propagate, as for every data hook.
        """
        declined = set()
        kwargs = {"session": session, "command": command, "columns": columns}
        # pluggy's own call order: the last registered first (registration was reversed).
        for impl in reversed(self._pm.hook.result_columns.get_hookimpls()):
            if impl.function(*[kwargs[a] for a in impl.argnames]) is False:
                declined.add(impl.plugin_name)
        return bool(self._row_plugins - declined)

    def rows_needed(
        self,
        session: SessionInfo,
        command: Command,
        columns: list[Column],
        data: bytes,
        starts: list[int],
        encoding: str,
    ) -> list[int] | None:
        """The rows of a batch that ``server_rows`` must see (ascending indices into
        ``starts``), or ``None`` for all of them: the union of what each plugin's
        ``server_row_messages`` answered. Without :attr:`picks_rows`, ``None`` at once.
        Exceptions propagate, as for every data hook.
        """
        if not self.picks_rows:
            return None
        needed: set[int] = set()
        answers = self._pm.hook.server_row_messages(
            session=session,
            command=command,
            columns=columns,
            data=data,
            starts=starts,
            encoding=encoding,
        )
        if len(answers) < len(self._row_plugins):
            return None  # a plugin answered None (pluggy drops those): it needs every row
        for answer in answers:
            needed.update(answer)
        if not needed <= set(range(len(starts))):
            raise PluginError("server_row_messages answered a row index outside the batch")
        return sorted(needed)

    def recordable(self, session: SessionInfo, command: Command) -> Command:
        """``command`` with :attr:`~hoopgw.session.Command.recorded_text` set by the
        ``audit_text`` hook, or ``command`` itself when no plugin implements it.

        Protocols call this once per command, before deciding it, and hand the result to every
        later hook. Exceptions propagate (the protocol ends the session: fail closed).
        """
        if not self.has_audit_hooks:
            return command
        output = Output("command", {"text": command.text})
        self._pm.hook.audit_text(session=session, command=command, output=output)
        return attrs.evolve(command, recorded_text=output.fields.get("text", ""))

    def _reviewable(self, session: SessionInfo, command: Command) -> Command:
        """``command`` with :attr:`~hoopgw.session.Command.recorded_parameters` set: each
        parameter's shown value passed through ``audit_text`` (kind ``parameter``), as the
        command's text was, so that reviewers see values masked as the record is. Done for
        held commands only: no other place shows parameter values. Exceptions propagate."""
        if not command.parameters:
            return command
        shown: list[str | None] = []
        for parameter in command.parameters:
            if parameter.shown is None or not self.has_audit_hooks:
                shown.append(parameter.shown)
                continue
            output = Output("parameter", {"text": parameter.shown})
            self._pm.hook.audit_text(session=session, command=command, output=output)
            shown.append(output.fields.get("text", ""))
        return attrs.evolve(command, recorded_parameters=tuple(shown))

    def loggable(self, text: str) -> str:
        """``text`` for a log line, or a placeholder when a plugin rewrites audit text.

        Before a session exists there is nothing to hand ``audit_text``; a target's message
        from that moment (a refused login) can quote what the client sent, so with masking on
        it is shown to the client but kept out of the gateway's log.
        """
        return WITHHELD if self.has_audit_hooks else text

    def _recordable_session(self, session: SessionInfo) -> SessionInfo:
        """``session`` with :attr:`~hoopgw.session.SessionInfo.recorded_attributes` set by
        the ``audit_text`` hook (kind ``attributes``). Exceptions propagate."""
        output = Output("attributes", dict(session.attributes))
        self._pm.hook.audit_text(session=session, command=None, output=output)
        return attrs.evolve(session, recorded_attributes=dict(output.fields))

    def _recordable_reason(
        self, session: SessionInfo, command: Command | None, verdict: Verdict
    ) -> Verdict:
        """The verdict with its reason passed through ``audit_text`` (a reason may quote the
        statement: a parser's "syntax error at or near ..."); it is recorded and shown to the
        client. Fails closed: a reason that cannot be rewritten refuses the command."""
        if not self.has_audit_hooks or not verdict.reason:
            return verdict
        output = Output("reason", {"text": verdict.reason})
        try:
            self._pm.hook.audit_text(session=session, command=command, output=output)
        except Exception:
            log.failure("plugin failed in audit_text; command refused")
            return Block(reason="refused: its reason could not be made safe to record")
        return attrs.evolve(verdict, reason=output.fields.get("text", ""))

    def notify(
        self, hook: str, *, only: Collection[object] | None = None, **kwargs: Any
    ) -> list[defer.Deferred[Any]]:
        """Call every implementation of an observer hook (of the instances ``only`` names,
        when given); log and swallow exceptions.

        :return: the Deferreds implementations returned (``command_decided`` may return one
            for a refusal to wait for); any other answer is ignored.
        """
        waits = []
        for impl in self._impls(hook, only):
            try:
                answer = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                log.failure("plugin {plugin} failed in {hook}", plugin=impl.plugin_name, hook=hook)
                continue
            if isinstance(answer, defer.Deferred):
                waits.append(answer)
        return waits
