"""The factory a connection's listener serves, switched by a config reload
(:mod:`hoopgw.runtime.reload`)."""

from __future__ import annotations

from typing import Any

__all__ = ["ListenerSwitch"]


class ListenerSwitch:
    """The factory a connection's listener serves: it hands each new client to the factory of
    the connection's newest config, so a changed connection whose address stays takes new
    clients without closing its listening socket."""

    noisy = False

    def __init__(self, factory: Any) -> None:
        self.current = factory
        """The factory new clients reach."""

    def switch(self, factory: Any) -> None:
        """New clients reach ``factory`` (started already: ``doStart``) from now on; the old
        one keeps its live clients."""
        old, self.current = self.current, factory
        old.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        """The protocol of the current factory for a new client."""
        return self.current.buildProtocol(addr)

    def doStart(self) -> None:
        """The listener started (Twisted's factory life cycle)."""
        self.current.doStart()

    def doStop(self) -> None:
        """The listener stopped."""
        self.current.doStop()

    def logPrefix(self) -> str:
        """What Twisted's log lines of the listener start with."""
        return str(getattr(self.current, "logPrefix", lambda: "hoopgw")())
