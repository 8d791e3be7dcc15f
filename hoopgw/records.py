"""What plugins write to the audit trail: :class:`AuditEntry` (the recording plugin writes one
per event through :attr:`hoopgw.plugin.PluginContext.audit`)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["AuditEntry"]


@attrs.frozen(kw_only=True)
class AuditEntry:
    """A record to be written; the store assigns its place in the chain."""

    kind: str
    """What happened: ``session_started``, ``command_received``, ``command_decided``, ..."""
    session_id: str
    """The session it belongs to."""
    time: float
    """POSIX time it happened."""
    data: dict[str, Any]
    """Details; JSON-serialisable (str keys; str, int, float, bool, None, lists, dicts)."""
