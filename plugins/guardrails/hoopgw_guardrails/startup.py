"""Startup parameters as the settings they are.

A PostgreSQL client's startup packet may carry run-time settings (``search_path=...``) and an
``options`` string (``-c role=admin``); the server applies them before the first statement.
Guardrails judges each as the ``SET`` statement it amounts to, so a setting refused as a
statement is refused as a startup parameter too.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping

# Attributes the gateway itself records about a session, not settings.
NOT_SETTINGS = frozenset({"user", "database"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class UnreadableParameter(ValueError):
    """A startup parameter whose effect cannot be stated as SET statements."""


def settings_of(attributes: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of every setting the startup parameters apply.

    :raises UnreadableParameter: for a name that is not a plain setting name, or an ``options``
        string with anything but ``-c name=value`` / ``--name=value`` switches.
    """
    for name, value in attributes.items():
        if name in NOT_SETTINGS:
            continue
        if name == "options":
            yield from _options(value)
        elif _NAME.fullmatch(name):
            yield name, value
        else:
            raise UnreadableParameter(f"startup parameter {name!r} is not a setting name")


def set_statement(name: str, value: str) -> str:
    """The ``SET`` statement equivalent to setting ``name`` to ``value``."""
    return f"SET {name} TO '{value.replace(chr(39), chr(39) * 2)}'"


def _options(text: str) -> Iterator[tuple[str, str]]:
    try:
        words = shlex.split(text.replace("\\ ", "\0"))
    except ValueError as exc:
        raise UnreadableParameter(f"startup options {text!r}: {exc}") from None
    words = [w.replace("\0", " ") for w in words]
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            setting, i = words[i + 1], i + 2
        elif word.startswith("-c") and len(word) > 2:
            setting, i = word[2:], i + 1
        elif word.startswith("--") and "=" in word:
            setting, i = word[2:], i + 1
        else:
            raise UnreadableParameter(f"startup options {text!r}: only -c name=value is judged")
        name, equals, value = setting.partition("=")
        name = name.replace("-", "_")
        if not equals or not _NAME.fullmatch(name):
            raise UnreadableParameter(f"startup options {text!r}: {setting!r} is not name=value")
        yield name, value
