"""The comparison behind ``./dev suite``: JUnit reports of the direct run and of the run
through the gateway, test by test (the runs themselves need a driver's source tree)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "hoopgw_tests_driver_suite", Path(__file__).parent / "driver_suite.py"
)
assert _spec is not None and _spec.loader is not None
suite: Any = importlib.util.module_from_spec(_spec)
sys.modules["hoopgw_tests_driver_suite"] = suite
_spec.loader.exec_module(suite)

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="tests.test_a" name="test_ok" time="0.1"/>
  <testcase classname="tests.test_a" name="test_fails" time="0.1">
    <failure message="AssertionError: 1 != 2&#10;more">trace</failure>
  </testcase>
  <testcase classname="tests.test_a" name="test_skipped" time="0">
    <skipped type="pytest.skip" message="no server">skip</skipped>
  </testcase>
  <testcase classname="tests.test_b" name="test_broken[x]" time="0">
    <error message="fixture failed">trace</error>
  </testcase>
</testsuite></testsuites>
"""


def test_a_junit_report_gives_each_tests_status_and_first_message_line(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(REPORT)
    outcomes = suite.read_junit(path)
    assert {k: v.status for k, v in outcomes.items()} == {
        "tests.test_a::test_ok": "passed",
        "tests.test_a::test_fails": "failed",
        "tests.test_a::test_skipped": "skipped",
        "tests.test_b::test_broken[x]": "error",
    }
    assert outcomes["tests.test_a::test_fails"].message == "AssertionError: 1 != 2"


def test_only_tests_whose_status_differs_are_reported() -> None:
    passed, failed = suite.Outcome(status="passed"), suite.Outcome(status="failed", message="boom")
    direct = {"a": passed, "b": passed, "c": failed, "d": passed}
    via = {
        "a": passed,
        "b": failed,
        "c": suite.Outcome(status="failed", message="other"),
        "e": passed,
    }
    found = suite.differences(direct, via)
    assert [(d.test_id, d.direct and d.direct.status, d.via and d.via.status) for d in found] == [
        ("b", "passed", "failed"),
        ("d", "passed", None),
        ("e", None, "passed"),
    ]
    text, unexpected = suite.report(found, {"d": "collected direct only"})
    assert unexpected == 2
    assert "  passed -> failed   b" in text and "boom" in text
    assert "deliberate: collected direct only" in text
    assert text.endswith("3 test(s) differ through the gateway (1 deliberate, 2 not)")


def test_deliberate_differences_may_be_patterns() -> None:
    deliberate = {"tests.t::test_quote_*[off]": "why"}
    assert suite.deliberate_reason("tests.t::test_quote_1char[off]", deliberate) == "why"
    assert suite.deliberate_reason("tests.t::test_quote_1char[on]", deliberate) is None
    assert suite.deliberate_reason("tests.t::test_other[off]", deliberate) is None
