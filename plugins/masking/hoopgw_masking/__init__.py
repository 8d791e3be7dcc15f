"""The ``masking`` plugin: no raw personal data or secret passes from the target to the client,
and none is written to the audit store or the logs.

Enable it per connection (``plugins = ["masking", "recording"]``) and configure it in
``[connections.masking]``; ``docs/masking.md`` describes entities, styles, column rules and
limits. It implements:

- ``result_columns``: decides once per result set which columns need scanning (by type; a result
  without text-bearing columns costs nothing) and which are masked whole by a column rule;
- ``server_row_messages``: one Hyperscan scan of a batch's bytes picks the rows that may hold
  an entity (:mod:`hoopgw_masking.prefilter`); the others are forwarded undecoded;
- ``server_rows``: masks values in text and binary formats, re-framed by the protocol;
- ``server_output``: errors, notices, notifications, parameter reports and COPY-out data;
- ``audit_text``: the command text the audit store keeps (the target receives the original);
- ``session_started``/``client_command``: load the catalog that column rules need, and refuse
  (fail closed) when it cannot be read.

Every masked value is counted per entity in ``command.annotations["masked"]``, which the
recording plugin writes into the command's ``command_completed`` record.
"""

from __future__ import annotations

import array
import json
import re
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from hoopgw.errors import ConfigError
from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.protocol import CatalogLogin
from hoopgw.secrets import resolve_secret
from hoopgw.session import Column, Command, Output, SessionInfo
from hoopgw.verdicts import Block
from hoopgw_masking.catalog import CatalogReader, ColumnRules, parse_rule, reads_columns
from hoopgw_masking.detectors import (
    BUILTIN_ENTITIES,
    Detector,
    builtin_detectors,
    check_regions,
    deny_list_detector,
    regex_detector,
)
from hoopgw_masking.engine import Masker
from hoopgw_masking.prefilter import ENCODINGS, Prefilter
from hoopgw_masking.styles import STYLES, Style
from hoopgw_masking.values import (
    DIGITS,
    INT8,
    JSON,
    JSONB,
    NUMERIC,
    SKIP,
    TEXT,
    Refused,
    ValueMasker,
    unescaped,
    value_types,
)

__all__ = ["MaskingPlugin"]

COLUMN_ENTITY = "column"
"""The entity name counted (and styled) for values masked whole by a column rule."""
RESERVED = frozenset({*BUILTIN_ENTITIES, COLUMN_ENTITY, "deny_list"})
# Statements after which the catalog may have changed: reload it before the next command.
_DDL = re.compile(r"\b(?:create|alter|drop|import)\b", re.IGNORECASE)
_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# COPY output carries no column description, so column rules cannot be applied to it.
_COPY_OUT = re.compile(r"\bcopy\b[\s\S]*\bto\s+stdout\b", re.IGNORECASE)
# The signature that starts binary COPY output (its first CopyData message); text and CSV COPY
# data never holds a NUL.
_BINARY_COPY = "PGCOPY\n\udcff\r\n\x00"
_CARD_MIN = 10**11
"""The smallest number of 12 digits, the fewest a card number has."""
COPY_REFUSED = (
    "masking cannot apply its column rules to COPY ... TO STDOUT; select the rows instead"
)


def _check_entities(value: list[Any]) -> str | None:
    unknown = [e for e in value if e not in BUILTIN_ENTITIES]
    if unknown:
        return f"unknown entities {unknown} (known: {', '.join(BUILTIN_ENTITIES)})"
    return None


def _check_regions(value: list[Any]) -> str | None:
    if not value or not all(isinstance(r, str) for r in value):
        return "must be a non-empty list of region codes such as US, GB"
    return check_regions(value)


def _check_styles(value: dict[str, Any]) -> str | None:
    for entity, style in value.items():
        if style not in STYLES:
            return f"style of {entity!r} must be one of {', '.join(STYLES)}, not {style!r}"
    return None


def _check_style(value: str) -> str | None:
    return None if value in STYLES else f"must be one of {', '.join(STYLES)}"


def _check_patterns(value: dict[str, Any]) -> str | None:
    for name, pattern in value.items():
        if not _ENTITY_NAME.fullmatch(name) or name in RESERVED:
            return f"pattern name {name!r} must be a new lower-case entity name"
        if not isinstance(pattern, str):
            return f"pattern {name!r} must be a string"
        try:
            regex_detector(name, pattern)
        except ValueError as exc:
            return f"pattern {name!r}: {exc}"
    return None


def _check_words(value: list[Any]) -> str | None:
    if not all(isinstance(w, str) and w.strip() and "\x00" not in w for w in value):
        return "must be a list of non-empty strings"
    return None


def _check_columns(value: list[Any]) -> str | None:
    for rule in value:
        if not isinstance(rule, str):
            return "must be a list of strings"
        try:
            parse_rule(rule)
        except ValueError as exc:
            return str(exc)
    return None


def _one_of(*choices: str) -> Any:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


class MaskingPlugin:
    """Masks sensitive values everywhere they can leave the target, before anything is stored."""

    options = (
        Option(
            name="entities",
            type=list,
            default=list(BUILTIN_ENTITIES),
            help="built-in entities to detect and mask",
            check=_check_entities,
        ),
        Option(
            name="phone_regions",
            type=list,
            default=["US"],
            help="regions whose national phone numbers are recognised (ISO 3166 codes)",
            check=_check_regions,
        ),
        Option(
            name="patterns",
            type=dict,
            default={},
            help="custom entities: name = regular expression",
            check=_check_patterns,
        ),
        Option(
            name="deny_words",
            type=list,
            default=[],
            help="words never shown (whole words, any case), masked as entity deny_list",
            check=_check_words,
        ),
        Option(
            name="columns",
            type=list,
            default=[],
            help="[schema.][table.]column globs whose values are always masked whole",
            check=_check_columns,
        ),
        Option(
            name="styles",
            type=dict,
            default={},
            help="replacement style per entity: redact, partial or token",
            check=_check_styles,
        ),
        Option(
            name="default_style",
            type=str,
            default="redact",
            help="style of entities not listed in styles",
            check=_check_style,
        ),
        Option(
            name="token_key",
            type=str,
            default="",
            help="secret reference (env:NAME or file:PATH) of the token style's HMAC key",
        ),
        Option(
            name="on_invalid",
            type=str,
            default="null",
            help="where a masked value cannot keep its column type: null, or refuse (end)",
            check=_one_of("null", "refuse"),
        ),
        Option(
            name="numeric_columns",
            type=bool,
            default=True,
            help="look for card numbers in int8, numeric, float8 and money values",
        ),
        Option(
            name="prefilter",
            type=bool,
            default=True,
            help="find the rows worth decoding with one Hyperscan scan of each batch's bytes",
        ),
        Option(
            name="catalog_user",
            type=str,
            default="",
            help="target user that reads the catalog for column rules",
        ),
        Option(
            name="catalog_password",
            type=str,
            default="",
            help="secret reference of catalog_user's password",
        ),
        Option(
            name="catalog_sslmode",
            type=str,
            default="prefer",
            help="TLS to the target for the catalog connection",
            check=_one_of("disable", "prefer", "require"),
        ),
    )

    @staticmethod
    def check_options(options: Mapping[str, Any], protocol: str) -> tuple[str, str] | None:
        """What no single option can check: ``(option, message)``, or ``None`` when fine.

        Run by ``hoopgw config check`` and at the gateway's start (and again here, for a
        plugin built without a config file)."""
        wanted = {*options["styles"].values(), options["default_style"]}
        if "token" in wanted and not options["token_key"]:
            return "token_key", "the token style needs token_key (a secret reference: env:NAME)"
        if options["columns"]:
            if not reads_columns(protocol):
                return (
                    "columns",
                    "column rules resolve columns in the target's catalog of columns, which"
                    f" the protocol does not read; this connection speaks {protocol}",
                )
            if not options["catalog_user"]:
                return (
                    "catalog_user",
                    "column rules need catalog_user (and catalog_password if the target asks)",
                )
        return None

    def __init__(self, context: PluginContext) -> None:
        options = context.options
        self._log = context.log
        connection = context.connection.name
        problem = self.check_options(options, context.connection.protocol)
        if problem is not None:
            raise ConfigError(problem[1], key=f"masking.{problem[0]}", connection=connection)
        key = self._secret(options["token_key"], "masking.token_key", connection)
        styles = {name: Style(name, key=key) for name in STYLES if name != "token" or key}
        detectors: list[Detector] = builtin_detectors(
            options["entities"], phone_regions=options["phone_regions"]
        )
        detectors += [regex_detector(n, p) for n, p in options["patterns"].items()]
        if options["deny_words"]:
            detectors.append(deny_list_detector(options["deny_words"]))
        self.prefilter = Prefilter.of(detectors) if options["prefilter"] else None
        """The byte prefilter of this policy's detectors (``None``: every row is decoded)."""
        self.masker = Masker(
            detectors,
            {e: styles[s] for e, s in options["styles"].items()},
            styles[options["default_style"]],
        )
        self._numeric = options["numeric_columns"]
        self._ip = "ip" in options["entities"]
        self.values = ValueMasker(
            self.masker,
            types=value_types(context.connection.protocol),
            on_invalid=options["on_invalid"],
            numeric=self._numeric,
            ip=self._ip,
        )
        self._rules = tuple(options["columns"])
        self._catalogs: dict[str, ColumnRules] = {}
        self._stale: set[str] = set()
        self._reader: CatalogReader | None = None
        if self._rules:
            password = self._secret(
                options["catalog_password"], "masking.catalog_password", connection
            )
            self._reader = CatalogReader(
                context.reactor,
                context.connection.protocol,
                CatalogLogin(
                    target=context.connection.target,
                    user=options["catalog_user"],
                    password=password.decode() if password is not None else None,
                    sslmode=options["catalog_sslmode"],
                    application_name="hoopgw-masking-catalog",
                    connect=context.connect_upstream,
                ),
            )
        self._plans: dict[str, tuple[list[Column], list[tuple[int, str, bool]]]] = {}

    @staticmethod
    def _secret(reference: str, key: str, connection: str) -> bytes | None:
        if not reference:
            return None
        # The plugin's table is not resolved by the config loader: relative file: paths start
        # in the working directory.
        secret = resolve_secret(reference, key=key, connection=connection, base_dir=Path.cwd())
        return secret.reveal().encode()

    # -- the catalog for column rules --------------------------------------------------------

    def _database(self, session: SessionInfo) -> str:
        return session.attributes.get("database", "")

    def _load(self, database: str) -> defer.Deferred[Block | None]:
        assert self._reader is not None

        def loaded(rows: list[tuple[int, int, str, str, str]]) -> None:
            rules = self._catalogs.setdefault(database, ColumnRules(self._rules))
            rules.load(rows)
            self._stale.discard(database)

        def failed(failure: Failure) -> Block:
            self._log.error(
                "masking: cannot read the catalog of database {database}: {why}",
                database=database,
                why=failure.getErrorMessage(),
            )
            return Block(reason="masking cannot resolve its column rules; refused")

        return self._reader.read(database).addCallbacks(loaded, failed)

    @hookimpl
    def session_started(self, session: SessionInfo) -> defer.Deferred[Block | None] | None:
        """Load the catalog that column rules need; ``Block`` if it cannot be read."""
        if self._reader is None:
            return None
        database = self._database(session)
        if database in self._catalogs and database not in self._stale:
            return None
        return self._load(database)

    @hookimpl
    def client_command(
        self, session: SessionInfo, command: Command
    ) -> defer.Deferred[Block | None] | None:
        """Reload the catalog when a table may have been created or changed since it was read;
        refuse COPY to the client, whose data no column rule could reach."""
        if self._reader is None:
            return None
        if _COPY_OUT.search(command.text):
            return defer.succeed(Block(reason=COPY_REFUSED, rule="column-rules"))
        database = self._database(session)
        answer = self._load(database) if database in self._stale else None
        if _DDL.search(command.text):
            self._stale.add(database)
        return answer

    # -- what the audit store keeps ----------------------------------------------------------

    @hookimpl
    def audit_text(self, session: SessionInfo, command: Command | None, output: Output) -> None:
        """Mask the command text and the session attributes that the audit store keeps."""
        counts: Counter[str] = Counter()
        if output.kind == "attributes":
            # Client-chosen names and values (startup parameters, database and user names).
            fields = dict(output.fields)
            output.fields.clear()
            for name, value in fields.items():
                masked_name = self._mask_message(name, counts)
                masked_value = self._mask_message(value, counts)
                output.fields[masked_name if masked_name is not None else name] = (
                    masked_value if masked_value is not None else value
                )
            return
        text = output.fields.get("text", "")
        if self.prefilter is not None and not self.prefilter.may_hold(text):
            return  # no candidate for any detector (a statement without personal data)
        masked = self._mask_message(text, counts)
        if masked is not None:
            output.fields["text"] = masked
            if command is not None:
                _count(command, counts)

    # -- results -----------------------------------------------------------------------------

    def _plan(self, session: SessionInfo, columns: list[Column]) -> list[tuple[int, str, bool]]:
        """``(index, kind, whole)`` for every column that needs work."""
        rules = self._catalogs.get(self._database(session)) if self._reader else None
        plan: list[tuple[int, str, bool]] = []
        for index, column in enumerate(columns):
            kind = self.values.column_kind(column)
            whole = False
            if self._reader is not None:
                decided = (
                    None if rules is None else rules.decide(column.table_oid, column.column_number)
                )
                if decided is None:
                    # A table the catalog does not know: fail closed, and read it again.
                    whole = True
                    self._stale.add(self._database(session))
                else:
                    whole = decided
            if whole or kind != SKIP:
                plan.append((index, kind, whole))
        return plan

    @hookimpl
    def result_columns(
        self, session: SessionInfo, command: Command, columns: list[Column]
    ) -> bool | None:
        """Decide once per result set which columns need scanning; ``False`` (the rows may
        stream undecoded) when none does."""
        plan = self._plan(session, columns)
        self._plans[session.id] = (columns, plan)
        return None if plan else False

    @hookimpl
    def server_row_messages(
        self,
        session: SessionInfo,
        command: Command,
        columns: list[Column],
        data: bytes,
        starts: list[int],
        encoding: str,
    ) -> list[int] | None:
        """The rows with a candidate for a detector, found by one Hyperscan scan of the
        batch's bytes; ``None`` (every row) when the prefilter cannot decide for this result:
        a custom pattern or deny list, column rules, a column whose values the byte patterns
        do not cover (:func:`_covered`), an encoding they do not cover, or a batch in which
        most rows are candidates."""
        if self.prefilter is None or self._reader is not None or encoding not in ENCODINGS:
            return None
        plan = self._cached_plan(session, columns)
        if not all(_covered(kind, columns[index]) for index, kind, _ in plan):
            return None
        return self.prefilter.rows(data, starts)

    def _cached_plan(
        self, session: SessionInfo, columns: list[Column]
    ) -> list[tuple[int, str, bool]]:
        cached = self._plans.get(session.id)
        if cached is not None and cached[0] is columns:
            return cached[1]
        plan = self._plan(session, columns)
        self._plans[session.id] = (columns, plan)
        return plan

    @hookimpl
    def server_rows(
        self,
        session: SessionInfo,
        command: Command,
        columns: list[Column],
        rows: list[list[bytes | None]],
    ) -> None:
        """Mask the values of a batch of rows in place."""
        plan = self._cached_plan(session, columns)
        if not rows:
            return
        counts: Counter[str] = Counter()
        width = len(rows[0])
        if len(columns) != width or any(len(row) != width for row in rows):
            # Rows whose description the gateway has not seen (a portal executed without
            # Describe): every value is scanned as text, or masked whole under column rules.
            plan = [(index, TEXT, self._reader is not None) for index in range(width)]
            columns = [Column("?") for _ in range(width)]
        for index, kind, whole in plan:
            column = columns[index]
            if whole:
                self._mask_whole(rows, index, kind, column.format, counts)
            elif kind == TEXT:
                self._mask_text_column(rows, index, counts)
            else:
                if kind in (INT8, NUMERIC, DIGITS) and not _may_hold_card(
                    kind, column.format, [row[index] for row in rows]
                ):
                    continue  # ids and counts: no number of 12 digits in the whole column
                for row in rows:
                    value = row[index]
                    if value is None:
                        continue
                    result = self.values.mask(kind, column.format, value, counts, column.type_oid)
                    if result is False:
                        row[index] = None
                    elif isinstance(result, bytes):
                        row[index] = result
        if counts:
            _count(command, counts)

    def _mask_message(self, text: str, counts: Counter[str]) -> str | None:
        """A message or statement text masked, escapes included: an entity behind an escape
        (``\\u0040``, ``&#64;``) is masked in the decoded text, which then replaces it."""
        masked = self.masker.mask(text, counts)
        current = text if masked is None else masked
        decoded = unescaped(current)
        if decoded is not None:
            again = self.masker.mask(decoded, counts)
            if again is not None:
                return again
        return masked

    def _mask_text_column(
        self, rows: list[list[bytes | None]], index: int, counts: Counter[str]
    ) -> None:
        present = [row for row in rows if row[index] is not None]
        if not present:
            return
        # One decode, one scan per detector, one encode, one split: no per-value Python work
        # unless a value holds something.
        joined = b"\x00".join([row[index] for row in present])  # type: ignore[misc]
        text = joined.decode("utf-8", "surrogateescape")
        if text.count("\x00") != len(present) - 1:
            # Only a binary value of an unknown type can hold NUL: one value at a time.
            for row in present:
                value = row[index].decode("utf-8", "surrogateescape")  # type: ignore[union-attr]
                masked = self.masker.mask(value, counts)
                if masked is not None:
                    row[index] = masked.encode("utf-8", "surrogateescape")
            return
        masked = self.masker.mask_joined(text, counts)
        if masked is not None:
            values = masked.encode("utf-8", "surrogateescape").split(b"\x00")
            for row, value in zip(present, values, strict=True):
                row[index] = value
        if "\\u" in text or "&#" in text:
            # An entity behind an escape (JSON text stored as text, a record's JSON field).
            for row in present:
                value = row[index].decode("utf-8", "surrogateescape")  # type: ignore[union-attr]
                if self.values.hidden(value, counts):
                    row[index] = None

    def _mask_whole(
        self,
        rows: list[list[bytes | None]],
        index: int,
        kind: str,
        fmt: int,
        counts: Counter[str],
    ) -> None:
        style = self.masker.style(COLUMN_ENTITY)
        for row in rows:
            value = row[index]
            if value is None:
                continue
            counts[COLUMN_ENTITY] += 1
            text = value.decode("utf-8", "surrogateescape")
            if kind == TEXT:
                row[index] = style.text(COLUMN_ENTITY, text).encode()
            elif kind in (JSON, JSONB):
                document = json.dumps(style.text(COLUMN_ENTITY, text)).encode()
                row[index] = b"\x01" + document if kind == JSONB and fmt == 1 else document
            else:
                self.values.invalid(COLUMN_ENTITY)
                row[index] = None

    # -- everything else the target says -----------------------------------------------------

    @hookimpl
    def server_output(self, session: SessionInfo, command: Command | None, output: Output) -> None:
        """Mask errors, notices, notifications, parameter values and COPY-out data."""
        counts: Counter[str] = Counter()
        fields = output.fields
        if output.kind == "copy" and fields.get("data", "").startswith(_BINARY_COPY):
            # Binary COPY carries no column types: a card number in an int8 field is eight
            # bytes no scan can tell from a timestamp. Fail closed: the session ends.
            self._log.error(
                "masking: binary COPY output cannot be masked; session ended"
                " (use COPY ... TO STDOUT in text or CSV format)"
            )
            raise Refused("binary COPY output cannot be masked")
        names = ("value",) if output.kind == "parameter" else tuple(fields)
        for name in names:
            text = fields.get(name)
            if text:
                masked = self._mask_message(text, counts)
                if masked is not None:
                    fields[name] = masked
        if counts and command is not None:
            _count(command, counts)

    @hookimpl
    def session_closed(self, session: SessionInfo, reason: str) -> None:
        """Forget the session's result plan."""
        self._plans.pop(session.id, None)


def _covered(kind: str, column: Column) -> bool:
    """Whether the prefilter's byte patterns cover how a column's values are masked: text in
    either format, and integers and decimals written in ASCII digits (a card number in one is
    a run of twelve digits or more). Not JSON (escapes, exponents), arrays, ranges, records,
    bytea, numbers in binary, floats (``4.111111111111111e+15``) nor unknown binary forms."""
    if kind == TEXT:
        return True
    if kind in (INT8, NUMERIC):
        return column.format == 0
    return kind == DIGITS and column.type_name != "DOUBLE"


def _may_hold_card(kind: str, fmt: int, values: list[bytes | None]) -> bool:
    """Whether any of a column's numbers may have 12 digits or more (the fewest a card number
    has); decided in C for the batch."""
    present = [v for v in values if v is not None]
    if kind == INT8 and fmt == 1:
        numbers = array.array("q", b"".join(present))
        if sys.byteorder == "little":
            numbers.byteswap()  # the wire is big-endian
        return bool(numbers) and (max(numbers) >= _CARD_MIN or min(numbers) <= -_CARD_MIN)
    if not present or max(map(len, present)) >= 12:
        return bool(present)
    joined = b"".join(present)
    return b"e" in joined or b"E" in joined  # an exponent (MySQL's DOUBLE in text rows)


def _count(command: Command, counts: Mapping[str, int]) -> None:
    masked = command.annotations.setdefault("masked", {})
    for entity, count in counts.items():
        masked[entity] = masked.get(entity, 0) + count
