"""Tests for :mod:`hoopgw_postgres.lexing`: the lexing state and how statement text is read."""

from __future__ import annotations

import pytest
from hoopgw_postgres.analysis import PostgresDialect
from hoopgw_postgres.lexing import (
    CLIENT_ONLY_ENCODINGS,
    CODECS,
    LexingRefused,
    LexingState,
    LexingTracker,
    clean_encoding_name,
    lexes_alike,
    refusal,
)
from hypothesis import given
from hypothesis import strategies as st

LOGIN = {"client_encoding": "UTF8", "standard_conforming_strings": "on", "server_encoding": "UTF8"}


def tracker(**values: str) -> LexingTracker:
    lexing = LexingTracker()
    lexing.login({**LOGIN, **values})
    return lexing


@pytest.mark.parametrize("value", ["off", "OFF", "false", "0", "no", ""])
def test_standard_conforming_strings_other_than_on_is_refused(value: str) -> None:
    message = refusal("standard_conforming_strings", value)
    assert message is not None
    assert message.startswith(f"standard_conforming_strings={value} is refused by the gateway")


def test_standard_conforming_strings_on_is_accepted() -> None:
    assert refusal("standard_conforming_strings", "on") is None


def test_the_client_only_encodings_are_postgresqls_list() -> None:
    # PostgreSQL documentation, "Supported Character Sets": Server = No for exactly these.
    assert CLIENT_ONLY_ENCODINGS == {
        "BIG5",
        "GB18030",
        "GBK",
        "JOHAB",
        "SJIS",
        "SHIFT_JIS_2004",
        "UHC",
    }
    assert not CLIENT_ONLY_ENCODINGS & set(CODECS)


@pytest.mark.parametrize("name", [*sorted(CLIENT_ONLY_ENCODINGS), "sjis", "Shift_JIS_2004"])
def test_client_only_encodings_are_refused_naming_the_setting(name: str) -> None:
    message = refusal("client_encoding", name)
    assert message is not None and message.startswith(f"client_encoding={name} is refused")
    with pytest.raises(LexingRefused, match=f"client_encoding={name} is refused"):
        tracker(client_encoding=name)


def test_an_unknown_encoding_is_refused() -> None:
    assert "does not know" in (refusal("client_encoding", "UTF16") or "")


@pytest.mark.parametrize("name", ["UTF8", "LATIN1", "LATIN10", "WIN1252", "SQL_ASCII", "EUC_JP"])
def test_safe_encodings_are_accepted(name: str) -> None:
    assert tracker(client_encoding=name).state.client_encoding == name


@pytest.mark.parametrize("missing", ["client_encoding", "standard_conforming_strings"])
def test_a_login_without_the_reports_is_refused(missing: str) -> None:
    reports = {k: v for k, v in LOGIN.items() if k != missing}
    with pytest.raises(LexingRefused, match=f"did not report {missing}"):
        LexingTracker().login(reports)


def test_reports_change_the_state_and_other_parameters_are_ignored() -> None:
    lexing = tracker()
    lexing.report("client_encoding", "LATIN1")
    lexing.report("application_name", "anything")
    assert lexing.state == LexingState(client_encoding="LATIN1", server_encoding="UTF8")
    with pytest.raises(LexingRefused):
        lexing.report("client_encoding", "GBK")
    assert lexing.state.client_encoding == "LATIN1"  # a refused value is never taken


def test_encoding_names_are_cleaned_as_postgresql_does() -> None:
    assert clean_encoding_name("utf-8") == "UTF8"
    assert clean_encoding_name("Latin1") == "LATIN1"
    assert clean_encoding_name("win1252") == "WIN1252"


def test_text_is_decoded_in_the_clients_encoding() -> None:
    assert LexingState(client_encoding="LATIN1").decode("'café'".encode("latin-1")) == "'café'"
    assert LexingState(client_encoding="WIN1252").decode("'€'".encode("cp1252")) == "'€'"
    assert LexingState(client_encoding="EUC_JP").decode("'ア'".encode("euc_jp")) == "'ア'"
    assert LexingState().decode("'ü'".encode()) == "'ü'"


def test_sql_ascii_text_is_in_the_servers_encoding() -> None:
    state = LexingState(client_encoding="SQL_ASCII", server_encoding="LATIN1")
    assert state.decode("é".encode("latin-1")) == "é"
    both = LexingState(client_encoding="SQL_ASCII", server_encoding="SQL_ASCII")
    assert both.decode("é".encode()) == "é"
    # Bytes that are no UTF-8 stay as escapes: no parser accepts them, nothing is guessed.
    assert both.decode(b"\xff") == "\udcff"


def test_invalid_bytes_are_kept_exactly_and_still_judged() -> None:
    # A SQL_ASCII database takes them (a UTF8 one refuses the statement itself).
    text = LexingState().decode(b"SELECT '\xff'")
    assert text.encode("utf-8", "surrogateescape") == b"SELECT '\xff'"
    assert PostgresDialect().analyze(text).statements[0].command == "SELECT"


def test_a_non_ascii_dollar_tag_is_refused_where_tags_may_compare_differently() -> None:
    euc = LexingState(client_encoding="EUC_JP", server_encoding="EUC_JP")
    with pytest.raises(LexingRefused, match="dollar-quote tag"):
        euc.decode("SELECT $タ$ x $タ$".encode("euc_jp"))
    assert euc.decode("SELECT $t$ タ $t$".encode("euc_jp")) == "SELECT $t$ タ $t$"
    # LATIN1 to a UTF-8 database converts character by character: tags compare alike.
    latin1 = LexingState(client_encoding="LATIN1", server_encoding="UTF8")
    assert latin1.decode("SELECT $é$ x $é$".encode("latin-1")) == "SELECT $é$ x $é$"


def test_lexes_alike_only_for_ascii_without_backslash() -> None:
    assert lexes_alike(b"SELECT 'a''b' -- x")
    assert not lexes_alike(b"SELECT 'a\\'")
    assert not lexes_alike("SELECT 'é'".encode())


@given(st.binary(max_size=64), st.sampled_from(sorted(CODECS)))
def test_every_decoding_keeps_the_ascii_bytes_where_they_are(raw: bytes, encoding: str) -> None:
    # The lexer's every decision (quotes, backslashes, semicolons, comments) is on ASCII
    # characters: a decoded text has exactly the ASCII characters of the bytes, in order.
    try:
        text = LexingState(client_encoding=encoding, server_encoding=encoding).decode(raw)
    except LexingRefused:
        return
    ascii_text = "".join(c for c in text if c < "\x80")
    assert ascii_text.encode() == bytes(b for b in raw if b < 0x80)
