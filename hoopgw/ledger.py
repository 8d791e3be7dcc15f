"""The command ledger of one session: "decided once, completed once, closed once".

Every protocol numbers, decides, completes and closes its session's commands through a
:class:`CommandLedger`, so the hook contract holds by construction whatever the protocol's own
state machine does:

- each command is decided through the chain (``command_decided`` exactly once, by
  :meth:`~hoopgw.runtime.chain.PluginChain.decide_command`), or reported decided with a verdict the
  protocol reached itself (:meth:`CommandLedger.decided`);
- each command so opened gets exactly one ``command_completed``: the first report wins;
- closing the session cancels every decision still pending (a review is withdrawn and reported
  as a ``Block``), completes every command still open (``cancelled`` when it never reached the
  target, ``aborted`` when it did) and then calls ``session_closed``, once.

Protocols complete a command themselves when they know more (rows, bytes, an error) and leave
the rest to :meth:`CommandLedger.close`.

The ledger also carries the session across a config reload: :meth:`CommandLedger.next_seq` is
the session's command boundary, where it takes its connection's newest chain
(:attr:`CommandLedger.chain`; see *Config reload* in :mod:`hoopgw.hookspecs`). Protocols read
the chain for data hooks from :attr:`CommandLedger.chain`, never keep their own reference once
the session started, and pass ``end_session`` so that a new policy refusing the session ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from hoopgw.hookspecs import HANDED_OVER
from hoopgw.runtime.chain import WITHDRAWN, PluginChain
from hoopgw.session import Command, CommandOutcome, SessionInfo
from hoopgw.verdicts import Allow, Block, Hold

log = Logger(namespace="hoopgw.ledger")

__all__ = ["CommandLedger"]


class CommandLedger:
    """The commands of one session: their numbers, decisions, completions and the end."""

    def __init__(
        self,
        chain: PluginChain,
        session: SessionInfo,
        *,
        end_session: Callable[[str], None] | None = None,
    ) -> None:
        """
        :param chain: the connection's chain when the session started.
        :param session: the session every hook call reports.
        :param end_session: ends the session with a reason shown to the client (the
            protocol's ``terminate``); called when a reloaded chain refuses the session. Without
            it the session stays open but every later command is refused.
        """
        self.chain = chain
        """The chain the session's next command goes through (the newest it has taken)."""
        self.session = session
        """The session every hook call of this ledger reports."""
        self._end_session = end_session
        self._seq = 0
        self._open: dict[int, Command] = {}
        self._decided_by: dict[int, PluginChain] = {}  # open command -> the chain it went to
        self._leaving: list[tuple[PluginChain, list[object]]] = []  # old chains, their leavers
        self._introduced: defer.Deferred[Any] | None = None  # new instances' session_started
        self._refused: Block | None = None  # a reloaded chain ended the session
        self._strangers: list[object] = []  # new instances never introduced (adoption failed)
        self._deciding: dict[int, defer.Deferred[Any]] = {}
        self._allowed: set[int] = set()  # open commands that may have reached the target
        self._closed = False
        if chain.retired is not None:
            # Started on a runtime a reload replaced while this client was logging in.
            self._refuse(f"{chain.retired} while this session was starting; reconnect")

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def next_seq(self) -> int:
        """The number of the session's next command (numbered from 1).

        This is the session's command boundary: when a config reload replaced the connection's
        chain, the session takes the newest one here (see *Config reload* in
        :mod:`hoopgw.hookspecs`)."""
        self.catch_up()
        self._seq += 1
        return self._seq

    def catch_up(self) -> None:
        """Take the connection's newest chain now, between two commands' numbers: for a
        protocol step that is no new command but makes data flow under the chain in force (a
        suspended portal or an open cursor fetched again after a config reload)."""
        if not self._closed and self.chain.successor is not None:
            self._take(self.chain.newest())

    def _take(self, newest: PluginChain) -> None:
        old = self.chain
        kept = [instance for _, instance in newest.plugins]
        leaving = [i for _, i in old.plugins if not any(i is k for k in kept)]
        arriving = [i for _, i in newest.plugins if not any(i is o for _, o in old.plugins)]
        replaced = dict(old.plugins)
        self.chain = newest
        if leaving:
            self._leaving.append((old, leaving))
            self._release()
        if not arriving:
            return
        try:
            for name, instance in newest.plugins:
                if any(instance is a for a in arriving):
                    previous = replaced.get(name)
                    newest.adopt(instance, self.session, None if previous is None else previous)
        except Exception:
            log.failure("plugin failed in session_adopted; session ended")
            self._refuse("the reloaded config could not take the session over; it was ended")
            # session_started was not asked, so session_closed is not owed to them.
            self._strangers.extend(arriving)
            return
        introduced = newest.decide("session_started", only=arriving, session=self.session)
        self._introduced = introduced

        def judged(verdict: Any) -> None:
            if self._introduced is introduced:
                self._introduced = None
            if isinstance(verdict, Block | Hold):  # a Hold at a session's start is a Block
                self._refuse(f"the reloaded config ended this session: {verdict.reason}")

        introduced.addCallback(judged)

    def _refuse(self, reason: str) -> None:
        """A reloaded chain refused the session: every later command is refused and the
        session is ended."""
        if self._refused is not None:
            return
        self._refused = Block(reason=reason, rule="config_reload")
        if self._end_session is not None:
            end = self._end_session
            self.chain.reactor.callLater(0, lambda: None if self._closed else end(reason))

    def _release(self) -> None:
        """Report ``session_closed`` (handed over) to the instances a reload took out of the
        session, for each old chain none of whose commands is still open."""
        busy = set(map(id, self._decided_by.values()))
        for entry in list(self._leaving):
            chain, leaving = entry
            if id(chain) not in busy:
                self._leaving.remove(entry)
                chain.notify(
                    "session_closed", only=leaving, session=self.session, reason=HANDED_OVER
                )

    def decide(self, command: Command) -> defer.Deferred[Allow | Block]:
        """Decide ``command`` with the chain (``client_command``, a ``Hold`` resolved by the
        approval backend, ``command_decided``); the command is open until completed.

        The result fires with ``Allow`` or ``Block``. Cancelling it (a cancel request) or
        closing the session withdraws the decision: ``command_decided`` reports a ``Block``
        and the result fails with :class:`~twisted.internet.defer.CancelledError`. After
        :meth:`close` nothing is asked or reported: the result fails at once.
        """
        if self._closed:
            return defer.fail(defer.CancelledError("the session has ended"))
        self._open[command.seq] = command
        chain = self._decided_by[command.seq] = self.chain
        d: defer.Deferred[Any]
        if self._introduced is None:
            d = self._decide_now(chain, command)
        else:
            # The reloaded chain's new plugins judge the session first.
            def withdrawn(_: Any) -> None:
                chain.notify(
                    "command_decided",
                    session=self.session,
                    command=command,
                    verdict=Block(reason=WITHDRAWN),
                )

            d = defer.Deferred(withdrawn)
            waiting = self._introduced
            waiting.addBoth(lambda _: None).addCallback(
                lambda _: None if d.called else self._decide_now(chain, command).chainDeferred(d)
            )
        self._deciding[command.seq] = d

        def settled(result: Any) -> Any:
            self._deciding.pop(command.seq, None)
            if isinstance(result, Allow):
                self._allowed.add(command.seq)
            return result

        return d.addBoth(settled)

    def _decide_now(self, chain: PluginChain, command: Command) -> defer.Deferred[Any]:
        if self._refused is None:
            return chain.decide_command(self.session, command)
        chain.notify(
            "command_decided", session=self.session, command=command, verdict=self._refused
        )
        return defer.succeed(self._refused)

    def decide_at_once(self, command: Command) -> Allow | None:
        """Decide ``command`` at once when no plugin judges commands
        (:meth:`~hoopgw.chain.PluginChain.decide_command_at_once`): it is then open and
        allowed, ``command_decided`` was reported, and the result is ``Allow``. Returns None,
        with nothing done, when the chain must be asked (use :meth:`decide`) or after
        :meth:`close`."""
        if (
            self._closed
            or self.chain.judges_commands
            or self._introduced is not None
            or self._refused is not None
        ):
            return None
        self._open[command.seq] = command
        self._decided_by[command.seq] = self.chain
        self._allowed.add(command.seq)
        return self.chain.decide_command_at_once(self.session, command)

    def decided(self, command: Command, verdict: Block) -> None:
        """Report ``command`` refused by the protocol itself, without asking the plugins
        (it cannot be read as the target would); it is open until completed. Ignored after
        :meth:`close`."""
        if self._closed:
            return
        self._open[command.seq] = command
        self._decided_by[command.seq] = self.chain
        self.chain.notify("command_decided", session=self.session, command=command, verdict=verdict)

    def complete(self, command: Command, outcome: CommandOutcome) -> bool:
        """Report ``command`` finished; the first report wins. Returns whether this one did."""
        if self._open.pop(command.seq, None) is None:
            return False
        self._allowed.discard(command.seq)
        chain = self._decided_by.pop(command.seq, self.chain)
        chain.notify("command_completed", session=self.session, command=command, outcome=outcome)
        if self._leaving:
            self._release()
        return True

    def close(self, reason: str) -> bool:
        """End the session (once; returns whether this call did): pending decisions are
        cancelled, open commands completed, as ``aborted`` when they were allowed (they may
        have run) and as ``cancelled`` when not (withdrawn, or refused but not yet reported),
        then ``session_closed`` is reported."""
        if self._closed:
            return False
        self._closed = True
        for pending in list(self._deciding.values()):
            pending.cancel()
        for command in list(self._open.values()):
            status = "aborted" if command.seq in self._allowed else "cancelled"
            self.complete(command, CommandOutcome(status=status, error_message=reason))
        self._release()
        if self._introduced is not None:
            # New instances still judging the session: withdrawn, then closed like the rest.
            self._introduced.cancel()
        closing = [i for _, i in self.chain.plugins if not any(i is s for s in self._strangers)]
        self.chain.notify("session_closed", only=closing, session=self.session, reason=reason)
        return True
