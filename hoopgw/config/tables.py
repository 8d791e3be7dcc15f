"""Typed access to one TOML table, with errors that name the key and the connection.

Every part of the loader reads its table through :class:`Table`, so every config error reads
the same: the connection, the key, and what is wrong with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from hoopgw.errors import ConfigError

__all__ = ["NAME", "Table", "readable_file", "reject_unknown", "sub_table"]

NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""What a connection, plugin or protocol name must match."""

_MISSING: Any = object()


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


@attrs.define
class Table:
    """A TOML table with typed getters whose errors name the key and connection."""

    data: Mapping[str, Any]
    prefix: str
    """Written before keys in errors, e.g. ``credential.``."""
    connection: str

    def error(self, message: str, key: str) -> ConfigError:
        """A config error about ``key`` of this table."""
        return ConfigError(message, key=self.prefix + key, connection=self.connection)

    def get(self, key: str, types: tuple[type, ...], default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.error("required", key)
            return default
        value = self.data[key]
        # TOML booleans are Python ints; an int key must not accept true/false.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise self.error(f"expected {_type_name(types)}, got {type(value).__name__}", key)
        return value

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, (str,), default)
        if value is not default and not value:
            raise self.error("must not be empty", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value: str = self.get(key, (str,), default)
        if value not in choices:
            raise self.error(f"must be one of {', '.join(choices)}", key)
        return value

    def seconds(self, key: str, default: float) -> float:
        value = float(self.get(key, (int, float), default))
        if not 0 < value < math.inf:  # also refuses nan
            raise self.error("must be a finite number greater than 0", key)
        return value

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self.get(key, (list,), default)
        for item in value:
            if not isinstance(item, str) or not item:
                got = type(item).__name__ if not isinstance(item, str) else "empty string"
                raise self.error(f"expected list of non-empty str, got an item of {got}", key)
        return tuple(value)


def sub_table(parent: Mapping[str, Any], key: str, connection: str) -> dict[str, Any]:
    """The table under ``key`` of ``parent`` (empty when absent); an error when not a table."""
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"expected table, got {type(value).__name__}", key=key, connection=connection
        )
    return value


def reject_unknown(
    data: Mapping[str, Any], known: set[str], *, prefix: str, connection: str = ""
) -> None:
    """Refuse the first key of ``data`` that is not in ``known``, naming the known ones."""
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(known))})",
                key=prefix + key,
                connection=connection,
            )


def readable_file(table: Table, key: str, value: str | None, base_dir: Path) -> str | None:
    """The absolute path of the file ``value`` names (relative to ``base_dir``), once it is
    known to be readable; None for None."""
    if value is None:
        return None
    path = (base_dir / Path(value).expanduser()).resolve()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise table.error(f"cannot read {str(path)!r}: {exc.strerror}", key) from None
    return str(path)
