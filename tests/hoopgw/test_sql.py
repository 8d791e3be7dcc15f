"""``hoopgw.sql``: the dialect contract's helper for session-dependent reading."""

from __future__ import annotations

from collections.abc import Mapping

from hoopgw.sql import Analysis, analyze_command


class PlainDialect:
    name = "plain"

    def analyze(self, text: str) -> Analysis:
        return Analysis(error=text)


class SettingsDialect:
    name = "settings"

    def analyze(self, text: str, settings: Mapping[str, str] | None = None) -> Analysis:
        return Analysis(error=f"{text} {dict(settings or {})}")


def test_settings_reach_a_dialect_only_when_the_protocol_reports_them() -> None:
    assert analyze_command(PlainDialect(), "x", {}).error == "x"
    lexing = {"sql_mode": "ANSI_QUOTES"}
    assert analyze_command(SettingsDialect(), "x", {"lexing": lexing}).error == (
        "x {'sql_mode': 'ANSI_QUOTES'}"
    )
