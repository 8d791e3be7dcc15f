"""The ``recording`` plugin: write-ahead, hash-chained records of every session and command.

Enable it per connection (``plugins = ["recording", ...]``). It writes, through the gateway's
:class:`~hoopgw.audit.writer.AuditWriter`:

- ``session_started`` before the session may begin, and ``command_received`` before a command
  may be forwarded. Both hooks answer only once the record is durable (in the audit journal,
  synced or, with ``[gateway] audit_durability = "os"``, written and synced in groups), and
  answer ``Block`` when it cannot be written: no audit record, no access.
- ``command_completed`` and ``session_closed`` as they happen. A command's verdict is
  recorded in a ``command_decided`` record, sent at once, when it refused the command (the
  refusal reaches the client once that record is in the journal); an
  allowed command's verdict joins its ``command_completed`` record (one compact record, no
  record of its own), unless the command runs longer than :data:`DECISION_WAIT`: its verdict is
  then written on its own first.
- ``terminal_output`` for terminal output (SSH), as the client saw it (after masking), from
  which ``hoopgw replay --asciicast`` makes an asciicast v2 recording per channel.
- ``http_response`` for each inspected HTTP response body (HTTP), as the client saw it (after
  masking), its first ``http_body_chars`` characters.

With ``sample_rows`` above 0 it also keeps the first rows each command returned, as the client
saw them (after masking), in the ``command_completed`` record. Its ``server_rows`` is a wrapper
(``hookimpl(wrapper=True)``): it reads the rows after every other plugin rewrote them, wherever
``recording`` stands in the ``plugins`` list. The command text it stores is
``Command.recorded_text`` when a plugin rewrote it for the record (masking does), and a
command's ``annotations`` (masking's per-entity counts) go into its ``command_completed``
record. ``docs/recording.md`` lists every record kind and field.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer

from hoopgw.hookspecs import HANDED_OVER
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.records import AuditEntry
from hoopgw.session import Column, Command, CommandOutcome, Output, SessionInfo
from hoopgw.verdicts import Allow, Block, Verdict

__all__ = ["RecordingPlugin"]

REFUSED = "audit store unavailable; refused"
"""The reason given to the client when its session or command cannot be recorded."""

TERMINAL_KINDS = ("stdout", "stderr")
"""``Output.kind`` values recorded as ``terminal_output``."""
HTTP_RESPONSE_KIND = "http-response"
"""``Output.kind`` of an inspected HTTP response body, recorded as ``http_response``."""

DECISION_WAIT = 0.02
"""Seconds an allowed command's verdict waits to join its ``command_completed`` record; a
command still running then gets its ``command_decided`` record on its own."""
SESSION_CONTINUED_KIND = "session_continued"
"""Record kind of a live session a config reload handed to a new recording instance (its
commands after it follow); written before the session's next command is decided."""
SESSION_HANDED_OVER_KIND = "session_handed_over"
"""Record kind of a live session a config reload took from this recording instance (the
session goes on; a ``session_continued`` follows when recording stays enabled)."""

MAX_SAMPLE_ROWS = 1000
SAMPLE_VALUE_CHARS = 256
"""Longest sampled value kept; longer ones are cut and end with ``…``."""


def _check_sample_rows(value: int) -> str | None:
    if not 0 <= value <= MAX_SAMPLE_ROWS:
        return f"must be between 0 and {MAX_SAMPLE_ROWS}"
    return None


def _sample_value(value: bytes | None, column_format: int) -> str | None:
    if value is None:
        return None
    text = value.hex() if column_format == 1 else value.decode("utf-8", errors="replace")
    if len(text) > SAMPLE_VALUE_CHARS:
        return text[: SAMPLE_VALUE_CHARS - 1] + "…"
    return text


class RecordingPlugin:
    """Records sessions and commands in the audit store, write-ahead."""

    options = (
        Option(
            name="sample_rows",
            type=int,
            default=0,
            help="result rows kept per command as a masked sample (0 = none)",
            check=_check_sample_rows,
        ),
        Option(
            name="http_body_chars",
            type=int,
            default=64 * 1024,
            help="characters of each inspected HTTP response body kept (0 = none)",
            check=lambda value: None if value >= 0 else "must be 0 or more",
        ),
    )

    def __init__(self, context: PluginContext) -> None:
        self._audit = context.audit
        self._reactor = context.reactor
        self._log = context.log
        self._sample_rows: int = context.options["sample_rows"]
        self._http_body_chars: int = context.options["http_body_chars"]
        self._samples: dict[tuple[str, int], list[list[str | None]]] = {}
        # Allowed commands whose verdict waits for their completion, in the order decided:
        # (session id, command seq) -> (session, when decided, the verdict's fields).
        self._allowed: dict[tuple[str, int], tuple[SessionInfo, float, dict[str, Any]]] = {}
        self._allowed_timer: Any = None
        self._adopted: set[str] = set()  # sessions a config reload handed to this instance
        if not self._sample_rows:
            # Without a server_rows implementation the protocol streams rows undecoded
            # (PluginChain.has_row_hooks), so the hook is hidden when sampling is off.
            self.server_rows = None  # type: ignore[method-assign, assignment]

    # -- decisions: write-ahead ----------------------------------------------------------------

    @hookimpl
    def session_adopted(self, session: SessionInfo, previous: object | None) -> None:
        """A config reload hands a live session to this instance: its record goes on (the
        next :meth:`session_started` records the hand-over, not a new start)."""
        self._adopted.add(session.id)

    @hookimpl
    def session_started(self, session: SessionInfo) -> defer.Deferred[Block | None]:
        """Record the session durably before it may start; ``Block`` if that fails. For a
        session a config reload handed over (:meth:`session_adopted`), record that the record
        goes on (``session_continued``) instead."""
        if session.id in self._adopted:
            self._adopted.discard(session.id)
            return self._durably(
                SESSION_CONTINUED_KIND,
                session,
                {
                    "connection": session.connection.name,
                    "sample_rows": self._sample_rows,
                    "http_body_chars": self._http_body_chars,
                },
            )
        identity = session.identity
        connection = session.connection
        return self._durably(
            "session_started",
            session,
            {
                "identity": identity.name,
                "groups": sorted(identity.groups),
                "method": identity.method,
                "credential_id": identity.credential_id,
                "client_address": session.client_address,
                "connection": connection.name,
                "protocol": connection.protocol,
                "target": connection.target,
                "client_tls": session.client_tls,
                "upstream_tls": session.upstream_tls,
                "started_at": session.started_at,
                # As audit_text rewrote them (masking), never the raw client-chosen text.
                "attributes": dict(
                    session.attributes
                    if session.recorded_attributes is None
                    else session.recorded_attributes
                ),
            },
        )

    @hookimpl
    def client_command(
        self, session: SessionInfo, command: Command
    ) -> defer.Deferred[Block | None]:
        """Record the command durably before it may be forwarded; ``Block`` if that fails."""
        return self._durably(
            "command_received",
            session,
            {
                "seq": command.seq,
                "kind": command.kind,
                # Masked when a plugin rewrote it for the record (audit_text); never the raw
                # text then, though the target receives it.
                "text": command.text if command.recorded_text is None else command.recorded_text,
                "parameter_count": command.parameter_count,
                "statement_name": command.statement_name,
                **({"details": dict(command.details)} if command.details else {}),
            },
        )

    # -- data: what the client saw -------------------------------------------------------------

    @hookimpl(wrapper=True)
    def server_rows(
        self,
        session: SessionInfo,
        command: Command,
        columns: list[Column],
        rows: list[list[bytes | None]],
    ) -> Generator[None, Any, Any]:
        """Keep up to ``sample_rows`` rows per command, after every other plugin rewrote them."""
        result = yield
        kept = self._samples.setdefault((session.id, command.seq), [])
        for row in rows[: self._sample_rows - len(kept)]:
            kept.append(
                [
                    _sample_value(value, columns[i].format if i < len(columns) else 0)
                    for i, value in enumerate(row)
                ]
            )
        return result

    @hookimpl(wrapper=True)
    def server_output(
        self, session: SessionInfo, command: Command | None, output: Output
    ) -> Generator[None, Any, Any]:
        """Record terminal output (``stdout``/``stderr``) and HTTP response bodies after every
        other plugin rewrote them."""
        result = yield
        if output.kind == HTTP_RESPONSE_KIND and command is not None:
            self._http_response(session, command, output)
            return result
        text = output.fields.get("data", "")
        if output.kind in TERMINAL_KINDS and command is not None and text:
            # Bytes that are not UTF-8 travel as lone surrogates; the store keeps text.
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            self._observed(
                "terminal_output",
                session,
                {"seq": command.seq, "stream": output.kind, "data": text},
            )
        return result

    def _http_response(self, session: SessionInfo, command: Command, output: Output) -> None:
        body = output.fields.get("body", "")
        kept = body[: self._http_body_chars]
        # Bytes that are not UTF-8 travel as lone surrogates; the store keeps text.
        kept = kept.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        self._observed(
            "http_response",
            session,
            {
                "seq": command.seq,
                "status": output.fields.get("status", ""),
                "body": kept,
                "body_chars": len(body),
                "truncated": len(body) > len(kept),
            },
        )

    # -- observers -----------------------------------------------------------------------------

    @hookimpl
    def command_decided(
        self, session: SessionInfo, command: Command, verdict: Verdict
    ) -> defer.Deferred[None] | None:
        """Record the final verdict: an allow with the completion; a refusal at once, and the
        refusal waits until its record is in the journal (the Deferred returned)."""
        fields = {
            "verdict": _verdict_name(verdict),
            "reason": verdict.reason,
            "plugin": verdict.plugin,
            "rule": "" if isinstance(verdict, Allow) else verdict.rule,
        }
        now = self._reactor.seconds()
        if isinstance(verdict, Allow):
            self._allowed[(session.id, command.seq)] = (session, now, fields)
            if self._allowed_timer is None:
                self._allowed_timer = self._reactor.callLater(DECISION_WAIT, self._allowed_due)
            return None
        journaled: defer.Deferred[None] = defer.Deferred()
        self._observed(
            "command_decided",
            session,
            {"seq": command.seq, **fields},
            urgent=True,
            then=lambda: journaled.callback(None),
        )
        return journaled

    def _allowed_due(self) -> None:
        """Write, each in a ``command_decided`` record, the verdicts of allowed commands still
        running :data:`DECISION_WAIT` after they were decided."""
        self._allowed_timer = None
        due = self._reactor.seconds() - DECISION_WAIT
        for key, (session, decided_at, fields) in list(self._allowed.items()):
            if decided_at > due:
                self._allowed_timer = self._reactor.callLater(decided_at - due, self._allowed_due)
                return
            del self._allowed[key]
            self._observed("command_decided", session, {"seq": key[1], **fields}, time=decided_at)

    @hookimpl
    def command_completed(
        self, session: SessionInfo, command: Command, outcome: CommandOutcome
    ) -> None:
        """Record how the command ended (with its verdict, if allowed and not yet recorded),
        with its row sample if sampling is on."""
        data: dict[str, Any] = {"seq": command.seq}
        allowed = self._allowed.pop((session.id, command.seq), None)
        if allowed is not None:
            data.update(allowed[2])
        data.update(
            status=outcome.status,
            rows=outcome.rows,
            bytes=outcome.bytes,
            duration=outcome.duration,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
        )
        if command.annotations:
            data["annotations"] = dict(command.annotations)
        sample = self._samples.pop((session.id, command.seq), None)
        if self._sample_rows:
            data["sample"] = sample or []
        self._observed("command_completed", session, data)

    @hookimpl
    def session_closed(self, session: SessionInfo, reason: str) -> None:
        """Record the end of the session; for a session a config reload took from this
        instance while it goes on (reason :data:`~hoopgw.hookspecs.HANDED_OVER`), record the
        hand-over (``session_handed_over``) instead: the session has not ended."""
        self._adopted.discard(session.id)
        for key in [key for key in self._samples if key[0] == session.id]:
            del self._samples[key]
        # Every decided command was completed first (hoopgw.ledger): none should be left.
        for key in [key for key in self._allowed if key[0] == session.id]:
            _, decided_at, fields = self._allowed.pop(key)
            self._observed("command_decided", session, {"seq": key[1], **fields}, time=decided_at)
        if reason == HANDED_OVER:
            self._observed(SESSION_HANDED_OVER_KIND, session, {"reason": reason})
            return
        self._observed("session_closed", session, {"reason": reason})

    # -- writing -------------------------------------------------------------------------------

    def _submit(
        self,
        kind: str,
        session: SessionInfo,
        data: dict[str, Any],
        then: Callable[[Exception | None], object],
        *,
        urgent: bool = True,
        time: float | None = None,
    ) -> None:
        """Hand a record to the audit writer; ``then(None)`` once it is in the journal, or
        ``then(error)`` (:meth:`~hoopgw.audit.writer.AuditWriter.submit`): no Deferred per
        record on the path every command takes."""
        if self._audit is None:
            then(RuntimeError("no audit writer (configuration check only)"))
            return
        entry = AuditEntry(
            kind=kind,
            session_id=session.id,
            time=self._reactor.seconds() if time is None else time,
            data=data,
        )
        self._audit.submit(entry, then, urgent=urgent)

    def _durably(
        self, kind: str, session: SessionInfo, data: dict[str, Any]
    ) -> defer.Deferred[Block | None]:
        """A Deferred that fires with None once the record is in the journal, or with
        ``Block`` if it cannot be written. Cancelled (the client cancelled or left while the
        record was being written), it fails with ``CancelledError``; the write itself goes on."""
        answer: defer.Deferred[Block | None] = defer.Deferred()

        def written(error: Exception | None) -> None:
            if answer.called:
                return  # cancelled meanwhile
            if error is None:
                answer.callback(None)
                return
            self._log.error(
                "cannot record {kind} of session {session_id}; refused: {why}",
                kind=kind,
                session_id=session.id,
                why=error,
            )
            answer.callback(Block(reason=REFUSED))

        self._submit(kind, session, data, written)
        return answer

    def _observed(
        self,
        kind: str,
        session: SessionInfo,
        data: dict[str, Any],
        *,
        urgent: bool = False,
        time: float | None = None,
        then: Callable[[], object] | None = None,
    ) -> None:
        """Write a record of what already happened; ``then()`` once it is in the journal, or
        once it failed (logged)."""

        def written(error: Exception | None) -> None:
            if error is not None:
                self._log.error(
                    "cannot record {kind} of session {session_id}: {why}",
                    kind=kind,
                    session_id=session.id,
                    why=error,
                )
            if then is not None:
                then()

        # Records of what already happened need no commit of their own (see AuditWriter.write),
        # but a refusal is sent at once, to be in the journal as soon as it can.
        self._submit(kind, session, data, written, urgent=urgent, time=time)


def _verdict_name(verdict: Verdict) -> str:
    if isinstance(verdict, Allow):
        return "allow"
    if isinstance(verdict, Block):
        return "block"
    return "hold"
