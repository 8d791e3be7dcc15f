"""Tests for the ``masking`` plugin's hooks, alone and with the recording plugin.

The recording plugin is listed *before* masking on purpose: it stores what the client saw
(masked) because its row hook is a wrapper and the command text it keeps is the one masking
produced through ``audit_text``, whatever the order of the ``plugins`` list.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hoopgw_masking import MaskingPlugin
from hoopgw_masking.values import Refused
from hoopgw_recording import RecordingPlugin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from hoopgw.config.load import parse_config
from hoopgw.errors import ConfigError
from hoopgw.plugin import PluginContext, validate_options
from hoopgw.protocol import ProtocolSpec, ValueKind
from hoopgw.runtime.chain import PluginChain
from hoopgw.session import Column, Command, CommandOutcome, Output
from hoopgw.testing import FakeAuditWriter, ScriptedClient, make_connection, make_session
from hoopgw.verdicts import Allow, Block

EMAIL = "ann.lee@example.com"
CARD = "4111 1111 1111 1111"
SSN = "536-22-1234"


def build(options: dict[str, Any] | None = None, *, record: bool = True) -> ScriptedClient:
    clock = Clock()
    audit = FakeAuditWriter()

    def context(name: str, cls: Any, table: dict[str, Any]) -> PluginContext:
        return PluginContext(
            connection=make_connection(),
            options=validate_options(name, cls.options, table, connection="test"),
            audit=audit,  # type: ignore[arg-type]
            log=Logger(namespace=f"hoopgw.plugins.{name}"),
            reactor=clock,
        )

    plugins: list[tuple[str, object]] = []
    if record:
        recording = RecordingPlugin(context("recording", RecordingPlugin, {"sample_rows": 10}))
        plugins.append(("recording", recording))
    plugins.append(("masking", MaskingPlugin(context("masking", MaskingPlugin, options or {}))))
    chain = PluginChain(plugins, reactor=clock)
    client = ScriptedClient(chain, clock=clock, audit=audit)
    assert client.connect() is None
    return client


def records(client: ScriptedClient, kind: str) -> list[dict[str, Any]]:
    return [r.data for r in client.audit.records if r.kind == kind]


def test_rows_are_masked_and_recorded_masked_with_counts() -> None:
    client = build()
    columns = [
        Column("id", type_oid=23),
        Column("email", type_oid=25),
        Column("doc", type_oid=3802),
    ]
    result = client.run(
        "SELECT id, email, doc FROM people",
        columns=columns,
        rows=[
            [b"1", EMAIL.encode(), json.dumps({"card": CARD}).encode()],
            [b"2", None, b'{"n": 1}'],
        ],
    )
    assert result.rows == [
        [b"1", b"[EMAIL]", b'{"card": "[CREDIT_CARD]"}'],
        [b"2", None, b'{"n": 1}'],
    ]
    [completed] = records(client, "command_completed")
    assert completed["sample"][0] == ["1", "[EMAIL]", '{"card": "[CREDIT_CARD]"}']
    assert completed["annotations"] == {"masked": {"email": 1, "credit_card": 1}}
    assert EMAIL not in json.dumps([r.data for r in client.audit.records])


def test_statement_text_is_masked_in_the_record_only() -> None:
    client = build()
    command, decision = client.send(f"INSERT INTO people VALUES ('{EMAIL}', '{CARD}')")
    assert isinstance(client._result(decision), Allow)
    # The target receives the original text; the record keeps the masked one.
    assert EMAIL in command.text
    [received] = records(client, "command_received")
    assert received["text"] == "INSERT INTO people VALUES ('[EMAIL]', '[CREDIT_CARD]')"
    assert command.annotations == {"masked": {"email": 1, "credit_card": 1}}


def test_server_output_fields_are_masked() -> None:
    client = build(record=False)
    command, _ = client.send("INSERT ...")
    error = Output(
        "error",
        {
            "message": "duplicate key value violates unique constraint",
            "detail": f"Key (email)=({EMAIL}) already exists.",
            "constraint": "people_email_key",
        },
    )
    client.chain.hook.server_output(session=client.session, command=command, output=error)
    assert error.fields["detail"] == "Key (email)=([EMAIL]) already exists."
    assert error.fields["constraint"] == "people_email_key"
    parameter = Output("parameter", {"name": "application_name", "value": EMAIL})
    client.chain.hook.server_output(session=client.session, command=None, output=parameter)
    assert parameter.fields == {"name": "application_name", "value": "[EMAIL]"}
    copy = Output("copy", {"data": f"1\t{EMAIL}\t{CARD}\n"})
    client.chain.hook.server_output(session=client.session, command=command, output=copy)
    assert copy.fields["data"] == "1\t[EMAIL]\t[CREDIT_CARD]\n"
    assert command.annotations["masked"] == {"email": 2, "credit_card": 1}


def test_results_without_text_columns_are_not_touched() -> None:
    client = build(record=False)
    plugin = client.chain._pm.get_plugin("masking")
    columns = [Column("n", type_oid=23), Column("t", type_oid=1184)]
    command, _ = client.send("SELECT n, t FROM x")
    assert client.chain.hook.result_columns(
        session=client.session, command=command, columns=columns
    ) == [False]  # the rows may stream undecoded
    assert plugin._plans[client.session.id][1] == []
    text = [Column("n", type_oid=23), Column("e", type_oid=25)]
    assert (
        client.chain.hook.result_columns(session=client.session, command=command, columns=text)
        == []
    )


def test_rows_without_a_description_are_scanned_as_text() -> None:
    client = build(record=False)
    result = client.run("EXECUTE", columns=[], rows=[[b"1", EMAIL.encode()]])
    assert result.rows == [[b"1", b"[EMAIL]"]]


def test_token_style_and_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASK_KEY", "k" * 32)
    client = build({"styles": {"email": "token"}, "token_key": "env:MASK_KEY"}, record=False)
    rows = client.run(
        "SELECT", columns=[Column("e", type_oid=25)], rows=[[EMAIL.encode()], [EMAIL.encode()]]
    ).rows
    assert rows[0] == rows[1] and rows[0][0].startswith(b"EMAIL_")


def test_token_style_without_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="token_key"):
        build({"default_style": "token"}, record=False)


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match="unknown entities"):
        validate_options("masking", MaskingPlugin.options, {"entities": ["dna"]}, connection="c")
    with pytest.raises(ConfigError, match="unknown phone regions"):
        validate_options(
            "masking", MaskingPlugin.options, {"phone_regions": ["ZZ"]}, connection="c"
        )
    with pytest.raises(ConfigError, match="must be a new lower-case entity name"):
        validate_options(
            "masking", MaskingPlugin.options, {"patterns": {"email": "x"}}, connection="c"
        )
    with pytest.raises(ConfigError, match="column rule"):
        validate_options("masking", MaskingPlugin.options, {"columns": ["a.b.c.d"]}, connection="c")
    with pytest.raises(ConfigError, match="catalog_user"):
        build({"columns": ["*.ssn"]}, record=False)


def test_no_valid_form_refuses_when_asked() -> None:
    client = build({"on_invalid": "refuse"}, record=False)
    with pytest.raises(Refused):
        client.run("SELECT", columns=[Column("ip", type_oid=869)], rows=[[b"10.0.0.1/32"]])


def test_custom_patterns_and_deny_words() -> None:
    client = build({"patterns": {"order_id": r"ORD-\d{6}"}, "deny_words": ["falcon"]}, record=False)
    rows = client.run(
        "SELECT", columns=[Column("t", type_oid=25)], rows=[[b"ORD-123456 Falcon"]]
    ).rows
    assert rows == [[b"[ORDER_ID] [DENY_LIST]"]]


class FakeReader:
    """Stands in for :class:`CatalogReader`: the test fires each read."""

    def __init__(self) -> None:
        self.reads: list[defer.Deferred[Any]] = []

    def read(self, database: str) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.reads.append(d)
        return d


PEOPLE = [(16384, 1, "crm", "people", "id"), (16384, 2, "crm", "people", "ssn")]


def with_rules(monkeypatch: pytest.MonkeyPatch) -> tuple[ScriptedClient, FakeReader]:
    reader = FakeReader()
    monkeypatch.setattr("hoopgw_masking.CatalogReader", lambda *a, **k: reader)
    clock = Clock()
    options = validate_options(
        "masking",
        MaskingPlugin.options,
        {"columns": ["crm.people.ssn"], "catalog_user": "postgres"},
        connection="test",
    )
    plugin = MaskingPlugin(
        PluginContext(
            connection=make_connection(), options=options, audit=None, log=Logger(), reactor=clock
        )
    )
    chain = PluginChain([("masking", plugin)], reactor=clock)
    client = ScriptedClient(chain, clock=clock, audit=FakeAuditWriter())
    return client, reader


def test_column_rules_mask_by_source_column_even_when_aliased(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, reader = with_rules(monkeypatch)
    box: list[Any] = []
    client.chain.decide("session_started", session=client.session).addBoth(box.append)
    assert box == []  # the session waits for the catalog
    reader.reads[0].callback(PEOPLE)
    assert box == [None]
    columns = [
        Column("id", type_oid=23, table_oid=16384, column_number=1),
        Column("x", type_oid=25, table_oid=16384, column_number=2),  # ssn AS x
        Column("n", type_oid=23, table_oid=16384, column_number=2),  # an int ssn: no text form
    ]
    result = client.run("SELECT", columns=columns, rows=[[b"1", b"no digits at all", b"7"]])
    assert result.rows == [[b"1", b"[COLUMN]", None]]


def test_unknown_tables_fail_closed_and_reload_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, reader = with_rules(monkeypatch)
    client.chain.decide("session_started", session=client.session)
    reader.reads[0].callback(PEOPLE)
    new_table = [Column("note", type_oid=25, table_oid=16999, column_number=1)]
    assert client.run("SELECT", columns=new_table, rows=[[b"hello"]]).rows == [[b"[COLUMN]"]]
    # The next command waits for a fresh catalog, which now knows the table.
    _, decision = client.send("SELECT note FROM t")
    assert len(reader.reads) == 2
    reader.reads[1].callback([*PEOPLE, (16999, 1, "crm", "t", "note")])
    assert isinstance(client._result(decision), Allow)
    assert client.run("SELECT", columns=new_table, rows=[[b"hello"]]).rows == [[b"hello"]]


def test_an_unreadable_catalog_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    client, reader = with_rules(monkeypatch)
    box: list[Any] = []
    client.chain.decide("session_started", session=client.session).addBoth(box.append)
    reader.reads[0].errback(RuntimeError("password authentication failed"))
    assert isinstance(box[0], Block) and "column rules" in box[0].reason


def test_ddl_marks_the_catalog_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    client, reader = with_rules(monkeypatch)
    client.chain.decide("session_started", session=client.session)
    reader.reads[0].callback(PEOPLE)
    client.run("CREATE TABLE t (note text)")
    _, decision = client.send("SELECT 1")
    assert len(reader.reads) == 2
    reader.reads[1].callback(PEOPLE)
    assert isinstance(client._result(decision), Allow)


def test_outcome_error_message_is_what_the_client_saw() -> None:
    # The protocol builds the outcome from the fields after server_output: already masked.
    client = build()
    command, _ = client.send("SELECT")
    client.chain.notify(
        "command_completed",
        session=client.session,
        command=command,
        outcome=CommandOutcome(status="error", error_message="[EMAIL]"),
    )
    assert records(client, "command_completed")[0]["error_message"] == "[EMAIL]"


def test_copy_to_the_client_is_refused_under_column_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, reader = with_rules(monkeypatch)
    client.chain.decide("session_started", session=client.session)
    reader.reads[0].callback(PEOPLE)
    _, decision = client.send("copy crm.people to STDOUT with (format csv)")
    verdict = client._result(decision)
    assert isinstance(verdict, Block) and "COPY" in verdict.reason
    _, decision = client.send("COPY crm.people FROM STDIN")
    assert isinstance(client._result(decision), Allow)


def test_column_rules_need_postgres() -> None:
    options = validate_options(
        "masking",
        MaskingPlugin.options,
        {"columns": ["*.ssn"], "catalog_user": "u"},
        connection="test",
    )
    with pytest.raises(ConfigError, match="catalog of columns"):
        MaskingPlugin(
            PluginContext(
                connection=make_connection(protocol="mysql"),
                options=options,
                audit=None,
                log=Logger(),
                reactor=Clock(),
            )
        )


def test_other_protocols_scan_every_column() -> None:
    options = validate_options("masking", MaskingPlugin.options, {}, connection="test")
    plugin = MaskingPlugin(
        PluginContext(
            connection=make_connection(protocol="mysql"),
            options=options,
            audit=None,
            log=Logger(),
            reactor=Clock(),
        )
    )
    session, command = make_session(), Command(session_id="s", seq=1, text="", kind="query")
    columns = [Column("n", type_oid=23, format=0)]  # 23 is no integer in MySQL's codes
    rows: list[list[bytes | None]] = [[EMAIL.encode()]]
    assert plugin.result_columns(session=session, command=command, columns=columns) is None
    plugin.server_rows(session=session, command=command, columns=columns, rows=rows)
    assert rows == [[b"[EMAIL]"]]


CONFIG = """
[[connections]]
name = "db"
protocol = "{protocol}"
listen = "tcp:15432:interface=127.0.0.1"
target = "db.internal:5432"
allow_groups = ["agents"]
client_tls = "disabled"
credential = {{ user = "app" }}
plugins = ["masking"]
[connections.masking]
{masking}
"""


@pytest.mark.parametrize(
    ("protocol", "masking", "key", "message"),
    [
        ("postgres", 'default_style = "token"', "masking.token_key", "needs token_key"),
        ("postgres", 'styles = { ssn = "token" }', "masking.token_key", "needs token_key"),
        ("postgres", 'columns = ["*.ssn"]', "masking.catalog_user", "need catalog_user"),
        (
            "mysql",
            'columns = ["*.ssn"]\ncatalog_user = "u"',
            "masking.columns",
            "speaks mysql",
        ),
    ],
)
def test_option_combinations_are_config_errors(
    protocol: str, masking: str, key: str, message: str
) -> None:
    # parse_config is what `hoopgw config check` and `hoopgw run` both go through.
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(CONFIG.format(protocol=protocol, masking=masking), base_dir=Path("/etc"))
    assert caught.value.key == key and caught.value.connection == "db"


def test_attributes_are_masked_for_the_record_and_kept_for_the_plugins() -> None:
    client = build()
    session = client.session
    plugin = client.chain._pm.get_plugin("masking")
    output = Output("attributes", {"application_name": EMAIL, "database": "crm", EMAIL: "x"})
    plugin.audit_text(session=session, command=None, output=output)
    assert output.fields == {"application_name": "[EMAIL]", "database": "crm", "[EMAIL]": "x"}


def test_numbers_records_and_unknown_types_are_scanned_by_default() -> None:
    # Without options: int8 and numeric are checked for card numbers, a record literal (x_ is
    # part of the address's local part and masked with it), a
    # tsvector and an extension's type are scanned; an escape hiding an address in a text
    # column leaves that value NULL; the sample the store keeps is what the client saw.
    client = build()
    columns = [
        Column("c", type_oid=20),
        Column("n", type_oid=1700),
        Column("r", type_oid=2249),
        Column("v", type_oid=3614),
        Column("x", type_oid=987654),
        Column("j", type_oid=25),
    ]
    digits = CARD.replace(" ", "")
    row = [
        digits.encode(),
        f"{digits}.50".encode(),
        f"(x_{EMAIL}_y,--{CARD}--)".encode(),
        f"'{EMAIL}':1".encode(),
        f"ssn-{SSN}-".encode(),
        b'{"e": "' + EMAIL.replace("@", "\\u0040").encode() + b'"}',
    ]
    result = client.run("SELECT ...", columns=columns, rows=[row])
    assert result.rows == [
        [None, None, b"([EMAIL]_y,--[CREDIT_CARD]--)", b"'[EMAIL]':1", b"ssn-[SSN]-", None]
    ]
    [completed] = records(client, "command_completed")
    assert completed["sample"] == [[None, None, *(v.decode() for v in result.rows[0][2:5]), None]]


def test_binary_copy_output_ends_the_session() -> None:
    # Binary COPY has no column types: an int8 card number in it cannot be found.
    client = build(record=False)
    command, _ = client.send("COPY people TO STDOUT (FORMAT binary)")
    header = "PGCOPY\n\udcff\r\n\x00" + "\x00" * 8
    copy = Output("copy", {"data": header})
    with pytest.raises(Refused, match="binary COPY"):
        client.chain.hook.server_output(session=client.session, command=command, output=copy)
    text = Output("copy", {"data": "PGCOPY\\n text row\n"})
    client.chain.hook.server_output(session=client.session, command=command, output=text)


def test_a_card_among_short_numbers_is_found_in_both_formats() -> None:
    # Batches of short numbers are dismissed at once; one card among them is not.
    client = build(record=False)
    card = int(CARD.replace(" ", ""))
    for fmt, encode in ((0, lambda n: str(n).encode()), (1, lambda n: struct.pack("!q", n))):
        columns = [Column("id", type_oid=20, format=fmt)]
        short = [[encode(n)] for n in (1, -5, 10**11 - 1, -(10**11) + 1)]
        assert client.run("SELECT", columns=columns, rows=short).rows == short
        rows = [[encode(7)], [None], [encode(-card)], [encode(card)]]
        result = client.run("SELECT", columns=columns, rows=rows)
        assert result.rows == [[encode(7)], [None], [None], [None]]


class _NothingCarriesText:
    """Value types of a made-up protocol: no column can carry text."""

    def column_kind(self, column: Column) -> ValueKind:
        return ValueKind.SKIP

    def type_kind(self, type_oid: int) -> ValueKind:
        return ValueKind.SKIP

    def element_type(self, type_oid: int) -> int | None:
        return None


@pytest.mark.parametrize(
    ("name", "value_types", "scanned"),
    [
        ("made-up", _NothingCarriesText(), False),
        ("postgres", _NothingCarriesText(), False),
        ("postgres", None, True),  # the name alone says nothing: every value is text
    ],
)
def test_masking_asks_the_protocol_how_values_are_typed_never_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value_types: Any, scanned: bool
) -> None:
    spec = ProtocolSpec(name=name, build_factory=lambda runtime: None, value_types=value_types)
    monkeypatch.setattr("hoopgw_masking.values.load_protocol", lambda protocol: spec)
    options = validate_options("masking", MaskingPlugin.options, {}, connection="test")
    plugin = MaskingPlugin(
        PluginContext(
            connection=make_connection(protocol=name),
            options=options,
            audit=None,
            log=Logger(),
            reactor=Clock(),
        )
    )
    session, command = make_session(), Command(session_id="s", seq=1, text="", kind="query")
    columns = [Column("t", type_oid=25, type_name="VAR_STRING", format=0)]
    rows: list[list[bytes | None]] = [[EMAIL.encode()]]
    answer = plugin.result_columns(session=session, command=command, columns=columns)
    assert answer is (None if scanned else False)
    plugin.server_rows(session=session, command=command, columns=columns, rows=rows)
    assert rows == [[b"[EMAIL]" if scanned else EMAIL.encode()]]
