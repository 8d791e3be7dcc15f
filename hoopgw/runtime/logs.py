"""Structured operational logging on :mod:`twisted.logger`, with secret redaction.

Code logs with a namespaced :class:`twisted.logger.Logger` and puts facts in event keys::

    log = Logger(namespace="hoopgw.postgres")
    log.info("client authenticated", identity=identity.name, connection=connection.name)

:func:`start_logging` renders every event as one line, either text::

    2026-11-25T17:00:00Z info [hoopgw.postgres] client authenticated identity=ci connection=pg

or JSON (one object per line with ``time``, ``level``, ``namespace``, ``message`` and the
event's extra keys that are JSON-serialisable).

**Never log a password, token, API key or any other credential**, neither as a key nor inside a
message, and never log row data or command parameters (the audit store holds what is needed, after
masking). As defence in depth, every secret the config resolves is passed to
:func:`register_secret`, and any emitted line containing one has it replaced by ``***``; this
is a safety net, not a licence to log secrets.

These are operational logs for operators. They are not the audit record: audit records go to
the store, hash-chained, through the one audit writer.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

FORMATS = ("text", "json")
"""Accepted values of ``[gateway] log_format``."""
LEVELS = ("debug", "info", "warn", "error")
"""Accepted values of ``[gateway] log_level``, most verbose first."""

REDACTED = "***"

# Keys that twisted.python.log (the legacy API) adds to events; they duplicate the message.
_LEGACY_KEYS = frozenset({"message", "system", "isError", "why", "failure", "format", "time"})

# Longest first, so that a secret containing another secret is replaced whole. A tuple is
# swapped atomically, so observers running in other threads never see a half-updated registry.
_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Have every line emitted from now on show ``***`` in place of ``value``.

    Empty values are ignored (they would match everywhere).
    """
    global _secrets
    if value and value not in _secrets:
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``.

    A secret is also found in its JSON-escaped spelling, as it would appear inside a JSON string.
    """
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
        escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, REDACTED)
    return text


def _timestamp(event: Mapping[str, Any]) -> str:
    return datetime.fromtimestamp(event["log_time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _level(event: Mapping[str, Any]) -> str:
    level = event.get("log_level")
    return level.name if level is not None else "info"


def _extra_keys(event: Mapping[str, Any]) -> list[str]:
    return [k for k in event if not k.startswith("log_") and k not in _LEGACY_KEYS]


def _format_fields(event: Mapping[str, Any]) -> set[str]:
    """Names of the event keys that the message format string already shows."""
    fields: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(event.get("log_format") or ""))
    except ValueError:
        return fields
    for _, field, _, _ in parsed:
        if field:
            fields.add(field.split(".", 1)[0].split("[", 1)[0].rstrip("!:"))
    return fields


def _text_value(value: Any) -> str:
    text = str(value)
    if text and not any(c.isspace() or c in "\"'=" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def render_text(event: Mapping[str, Any]) -> str:
    """Render an event as one text line (plus a traceback when it carries a failure)."""
    shown = _format_fields(event)
    parts = [
        _timestamp(event),
        _level(event),
        f"[{event.get('log_namespace', '-')}]",
        formatEvent(dict(event)),
    ]
    parts += [f"{k}={_text_value(event[k])}" for k in _extra_keys(event) if k not in shown]
    line = " ".join(parts)
    failure = event.get("log_failure")
    if failure is not None:
        line += "\n" + failure.getTraceback().rstrip("\n")
    return line


def render_json(event: Mapping[str, Any]) -> str:
    """Render an event as one JSON object on one line."""
    record: dict[str, Any] = {
        "time": _timestamp(event),
        "level": _level(event),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(dict(event)),
    }
    for key in _extra_keys(event):
        if key in record:
            continue
        try:
            json.dumps(event[key])
        except (TypeError, ValueError):
            continue
        record[key] = event[key]
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str)


# Lines Twisted writes for every listening port and SSH connection, which the gateway's own
# lines already say better ("listening on", "session started"); shown at the debug level.
_CHATTER = (
    re.compile(r".* starting on \S+$"),
    re.compile(r"^\(\S+ Port \S+ Closed\)$"),
    re.compile(r"^(Starting|Stopping) factory .*"),
    re.compile(r"^disabling non-fixed-group key exchange algorithms because .*moduli file$"),
)


@implementer(ILogFilterPredicate)
class _TwistedChatter:
    """Drops :data:`_CHATTER` lines unless ``shown``."""

    def __init__(self, *, shown: bool) -> None:
        self._shown = shown

    def __call__(self, event: Mapping[str, Any]) -> PredicateResult:
        if self._shown or event.get("log_level") not in (LogLevel.info, None):
            return PredicateResult.maybe
        message = formatEvent(dict(event))
        if any(pattern.match(message) for pattern in _CHATTER):
            return PredicateResult.no
        return PredicateResult.maybe


@implementer(ILogObserver)
class _LineObserver:
    """Writes each event as a redacted line to a stream."""

    def __init__(self, render: Callable[[Mapping[str, Any]], str], stream: TextIO) -> None:
        self._render = render
        self._stream = stream

    def __call__(self, event: Mapping[str, Any]) -> None:
        self._stream.write(redact(self._render(event)) + "\n")
        self._stream.flush()


def make_observer(format: str, level: str, stream: TextIO) -> ILogObserver:
    """Build the observer :func:`start_logging` installs, without installing it.

    :param format: ``text`` or ``json``.
    :param level: the least severe level written: ``debug``, ``info``, ``warn`` or ``error``.
    :param stream: where lines go.
    :raises ValueError: for an unknown format or level.
    """
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    render = render_json if format == "json" else render_text
    predicates = [
        LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level)),
        _TwistedChatter(shown=level == "debug"),
    ]
    # The casts tell mypy what @implementer declares; it does not read zope interfaces.
    filtered = FilteringLogObserver(
        cast(ILogObserver, _LineObserver(render, stream)),
        [cast(ILogFilterPredicate, p) for p in predicates],
    )
    return cast(ILogObserver, filtered)


def start_logging(format: str, level: str, stream: TextIO | None = None) -> None:
    """Send every Twisted log event from now on to ``stream`` (standard error by default).

    Call once per process, before the reactor runs. Standard output is left alone: commands
    such as ``hoopgw keys create`` print their result there.
    """
    observer = make_observer(format, level, sys.stderr if stream is None else stream)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
