"""One config reload of every worker of ``[gateway] workers``, as the parent runs it.

The parent asks each running worker on its control link (``reload``); each reloads on its own
(:mod:`hoopgw.runtime.reload`: its own ``config_reloaded`` record) and answers ``reloaded``,
applied with what changed or refused with why. When every worker has answered (or
:data:`RELOAD_TIMEOUT` has passed) the parent logs one summary and acts on it
(:meth:`ReloadRound.outcome`):

- every worker applied: done;
- every worker refused: nothing changed anywhere, the reload is refused with the first
  worker's reason (they read the same file, so it is normally the same for all);
- some applied and some refused (or did not answer): the workers would enforce different
  configs, so the parent restarts the refused ones, which start with the file's config -- the
  one the others applied. Their live sessions end (with the protocol's goodbye); a gateway
  whose workers enforce two policies is what the reload must never leave behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

__all__ = ["RELOAD_TIMEOUT", "ReloadOutcome", "ReloadRound"]

RELOAD_TIMEOUT = 60.0
"""Seconds the parent waits for the workers' answers; a worker silent that long counts as
refused (and is restarted if others applied)."""


@attrs.frozen(kw_only=True)
class ReloadOutcome:
    """What a reload of every worker came to."""

    applied: tuple[int, ...]
    """The workers that applied it."""
    refused: dict[int, str]
    """The workers that refused it (or did not answer), each with why."""
    result: dict[str, Any] | None
    """What changed (the first applied worker's answer, with every worker's ended sessions
    and ``workers``: who applied, refused, and is restarted), or None if none applied."""

    @property
    def restart(self) -> tuple[int, ...]:
        """The workers to restart: those that refused while others applied."""
        return tuple(sorted(self.refused)) if self.applied else ()

    def describe(self, by: str) -> str:
        """The parent's one log line of the reload."""
        if not self.refused:
            return f"config reload (by {by}) applied by every worker ({len(self.applied)})"
        reasons = "; ".join(f"worker {k}: {why}" for k, why in sorted(self.refused.items()))
        if not self.applied:
            return f"config reload (by {by}) refused by every worker; the config stays: {reasons}"
        return (
            f"config reload (by {by}) applied by worker(s) {_listed(self.applied)}, refused by"
            f" worker(s) {_listed(self.refused)} ({reasons}); restarting those with the new config"
        )


class ReloadRound:
    """One reload the parent asked of the workers ``asked``: their answers, summed up.

    :param done: called once with the round when every worker answered, ended, or the
        timeout passed.
    """

    def __init__(
        self,
        ident: int,
        by: str,
        asked: Iterable[int],
        reactor: Any,
        done: Callable[[ReloadRound], None],
        reply_to: int | None = None,
    ) -> None:
        self.ident = ident
        self.by = by
        """Who asked: ``SIGHUP``, or an identity through worker 1's admin API."""
        self.reply_to = reply_to
        """The worker whose admin API asked and waits for the outcome, if any."""
        self.digests: dict[int, str] = {}
        """The config file (its digest) each worker that applied the reload runs."""
        self._waiting = set(asked)
        self._answers: dict[int, tuple[bool, Any]] = {}
        self._done: Callable[[ReloadRound], None] | None = done
        self._timer = reactor.callLater(RELOAD_TIMEOUT, self._timed_out)
        if not self._waiting:
            reactor.callLater(0, self._finish)

    def answered(self, worker: int, message: dict[str, Any]) -> None:
        """Worker ``worker`` answered: ``{"ok": true, "result": ...}`` or ``{"ok": false,
        "error": ...}``."""
        if worker not in self._waiting:
            return
        if message.get("ok") is True:
            self.digests[worker] = str(message.get("digest", ""))
            self._record(worker, True, dict(message["result"]))
        else:
            self._record(worker, False, str(message.get("error", "refused")))

    def worker_ended(self, worker: int) -> None:
        """Worker ``worker`` ended before it answered."""
        self._record(worker, False, "it ended before answering")

    def outcome(self) -> ReloadOutcome:
        """The answers so far, summed up."""
        applied = tuple(sorted(k for k, (ok, _) in self._answers.items() if ok))
        refused = {k: why for k, (ok, why) in sorted(self._answers.items()) if not ok}
        if not applied:
            return ReloadOutcome(applied=(), refused=refused, result=None)
        result: dict[str, Any] = dict(self._answers[applied[0]][1])
        ended = sorted({s for k in applied for s in self._answers[k][1].get("ended_sessions", [])})
        result["ended_sessions"] = ended
        result["workers"] = {
            "applied": list(applied),
            "refused": {str(k): why for k, why in refused.items()},
            "restarted": sorted(refused),
        }
        return ReloadOutcome(applied=applied, refused=refused, result=result)

    def _record(self, worker: int, ok: bool, answer: Any) -> None:
        if worker not in self._waiting:
            return
        self._waiting.discard(worker)
        self._answers[worker] = (ok, answer)
        if not self._waiting:
            self._finish()

    def _timed_out(self) -> None:
        for worker in sorted(self._waiting):
            self._answers[worker] = (False, f"no answer within {RELOAD_TIMEOUT:g} s")
        self._waiting.clear()
        self._finish()

    def _finish(self) -> None:
        if self._timer.active():
            self._timer.cancel()
        done, self._done = self._done, None
        if done is not None:
            done(self)


def _listed(workers: Iterable[int]) -> str:
    return ", ".join(str(k) for k in sorted(workers))
