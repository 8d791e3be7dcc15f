"""Verdicts: what a decision hook answers, and the one place where answers are combined.

Precedence is ``Block > Hold > Allow > abstain``. Combination never depends on the order in
which plugins answered: the strongest answer wins, and answers of equal strength are merged.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen(kw_only=True)
class Allow:
    """Let the command through."""

    reason: str = ""
    """Why, for the audit record (optional)."""
    plugin: str = ""
    """Name of the plugin that answered; filled in by the chain."""


@attrs.frozen(kw_only=True)
class Block:
    """Refuse the command; nothing of it reaches the target."""

    reason: str
    """Shown to the client and recorded."""
    plugin: str = ""
    """Name of the plugin that answered; filled in by the chain."""
    rule: str = ""
    """Identifier of the rule that matched, if the plugin has rules."""


@attrs.frozen(kw_only=True)
class Hold:
    """Keep the command until a human approves it (see the ``approval_requested`` hook)."""

    reason: str
    """Shown to approvers and recorded."""
    approvers: tuple[str, ...] = ()
    """Groups whose members may approve."""
    plugin: str = ""
    """Name of the plugin that answered; filled in by the chain."""
    rule: str = ""
    """Identifier of the rule that matched, if the plugin has rules."""


Verdict = Allow | Block | Hold

_RANK = {Block: 3, Hold: 2, Allow: 1}


def _order(verdict: Verdict) -> tuple[str, str, str, tuple[str, ...]]:
    return (
        verdict.plugin,
        verdict.reason,
        getattr(verdict, "rule", ""),
        getattr(verdict, "approvers", ()),
    )


def combine(verdicts: Iterable[Verdict | None]) -> Verdict | None:
    """Combine plugin answers into one verdict.

    Returns the strongest answer (``Block > Hold > Allow``) or None when every plugin abstained.
    Several blocks merge their reasons; several holds merge reasons and approver groups, so the
    result is the same whatever the order of ``verdicts``.
    """
    present = [v for v in verdicts if v is not None]
    if not present:
        return None
    top = max(_RANK[type(v)] for v in present)
    strongest = sorted((v for v in present if _RANK[type(v)] == top), key=_order)
    if len(strongest) == 1:
        return strongest[0]
    first = strongest[0]
    reason = "; ".join(dict.fromkeys(v.reason for v in strongest if v.reason))
    plugin = ",".join(dict.fromkeys(v.plugin for v in strongest if v.plugin))
    if isinstance(first, Block):
        rule = ",".join(dict.fromkeys(v.rule for v in strongest if isinstance(v, Block) and v.rule))
        return Block(reason=reason, plugin=plugin, rule=rule)
    if isinstance(first, Hold):
        approvers = sorted({g for v in strongest if isinstance(v, Hold) for g in v.approvers})
        rule = ",".join(dict.fromkeys(v.rule for v in strongest if isinstance(v, Hold) and v.rule))
        return Hold(reason=reason, approvers=tuple(approvers), plugin=plugin, rule=rule)
    return Allow(reason=reason, plugin=plugin)
