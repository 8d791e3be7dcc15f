"""The groups of an identity from every configured group source (the contract a source
implements is public: :mod:`hoopgw.groups`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from twisted.internet import defer

from hoopgw.groups import GroupSource, GroupSourceError
from hoopgw.session import Identity

__all__ = ["GroupResolver"]


class GroupResolver:
    """Adds the groups of every configured source to an identity.

    :param sources: the sources by name, in config order.
    """

    def __init__(self, sources: Sequence[tuple[str, GroupSource]]) -> None:
        self._sources = list(sources)

    def __bool__(self) -> bool:
        return bool(self._sources)

    def resolve(self, identity: Identity) -> defer.Deferred[Identity]:
        """``identity`` with the groups of every source added.

        :return: a Deferred firing with the new identity, or failing with
            :class:`GroupSourceError` when any source fails (fail closed).
        """
        if not self._sources:
            return defer.succeed(identity)
        lookups = [self._ask(name, source, identity) for name, source in self._sources]
        d = defer.gatherResults(lookups, consumeErrors=True)

        def combined(results: list[Iterable[str]]) -> Identity:
            groups = set(identity.groups)
            for result in results:
                groups.update(result)
            return attrs.evolve(identity, groups=frozenset(groups))

        def unwrap(failure: Any) -> Any:
            # gatherResults wraps the first failure; pass on the source's own error.
            return failure.value.subFailure

        return d.addCallbacks(combined, unwrap)

    @staticmethod
    def _ask(name: str, source: GroupSource, identity: Identity) -> defer.Deferred[Iterable[str]]:
        def checked(groups: Any) -> list[str]:
            values = [groups] if isinstance(groups, str) else list(groups)
            # Group names go into audit records and logs: no control characters.
            if not all(isinstance(g, str) and g and g.isprintable() for g in values):
                raise GroupSourceError(
                    "group lookup failed", reason=f"group source {name!r} returned a non-name"
                )
            return values

        def failed(failure: Any) -> Any:
            if failure.check(GroupSourceError):
                return failure
            raise GroupSourceError(
                "group lookup failed; try again later",
                reason=f"group source {name!r} failed: {failure.getErrorMessage()}",
            )

        return defer.maybeDeferred(source.groups_of, identity).addCallbacks(checked, failed)

    def close(self) -> None:
        """Close every source."""
        for _, source in self._sources:
            source.close()
