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
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from hoopgw.runtime.chain import PluginChain
from hoopgw.session import Command, CommandOutcome, SessionInfo
from hoopgw.verdicts import Allow, Block

__all__ = ["CommandLedger"]


class CommandLedger:
    """The commands of one session: their numbers, decisions, completions and the end."""

    def __init__(self, chain: PluginChain, session: SessionInfo) -> None:
        self.chain = chain
        self.session = session
        """The session every hook call of this ledger reports."""
        self._seq = 0
        self._open: dict[int, Command] = {}
        self._deciding: dict[int, defer.Deferred[Any]] = {}
        self._allowed: set[int] = set()  # open commands that may have reached the target
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def next_seq(self) -> int:
        """The number of the session's next command (numbered from 1)."""
        self._seq += 1
        return self._seq

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
        d: defer.Deferred[Any] = self.chain.decide_command(self.session, command)
        self._deciding[command.seq] = d

        def settled(result: Any) -> Any:
            self._deciding.pop(command.seq, None)
            if isinstance(result, Allow):
                self._allowed.add(command.seq)
            return result

        return d.addBoth(settled)

    def decide_at_once(self, command: Command) -> Allow | None:
        """Decide ``command`` at once when no plugin judges commands
        (:meth:`~hoopgw.chain.PluginChain.decide_command_at_once`): it is then open and
        allowed, ``command_decided`` was reported, and the result is ``Allow``. Returns None,
        with nothing done, when the chain must be asked (use :meth:`decide`) or after
        :meth:`close`."""
        if self._closed or self.chain.judges_commands:
            return None
        self._open[command.seq] = command
        self._allowed.add(command.seq)
        return self.chain.decide_command_at_once(self.session, command)

    def decided(self, command: Command, verdict: Block) -> None:
        """Report ``command`` refused by the protocol itself, without asking the plugins
        (it cannot be read as the target would); it is open until completed. Ignored after
        :meth:`close`."""
        if self._closed:
            return
        self._open[command.seq] = command
        self.chain.notify("command_decided", session=self.session, command=command, verdict=verdict)

    def complete(self, command: Command, outcome: CommandOutcome) -> bool:
        """Report ``command`` finished; the first report wins. Returns whether this one did."""
        if self._open.pop(command.seq, None) is None:
            return False
        self._allowed.discard(command.seq)
        self.chain.notify(
            "command_completed", session=self.session, command=command, outcome=outcome
        )
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
        self.chain.notify("session_closed", session=self.session, reason=reason)
        return True
