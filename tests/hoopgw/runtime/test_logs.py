import io
import json

import pytest
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from hoopgw.runtime import logs

# 2026-11-25T17:00:00Z
NOON = 1795626000.0


@pytest.fixture(autouse=True)
def empty_redaction_registry(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", ())


def event(**extra):
    base = {
        "log_time": NOON,
        "log_level": LogLevel.info,
        "log_namespace": "hoopgw.postgres",
        "log_format": "client {who} authenticated",
        "log_source": None,
        "who": "ci-bot",
    }
    return {**base, **extra}


def emit(format, level, *events):
    stream = io.StringIO()
    observer = logs.make_observer(format, level, stream)
    for e in events:
        observer(e)
    return stream.getvalue()


def test_text_line_has_time_level_namespace_message_and_extra_keys():
    line = emit("text", "info", event(connection="pg-local", rows=3))

    assert line == (
        "2026-11-25T17:00:00Z info [hoopgw.postgres] client ci-bot authenticated"
        " connection=pg-local rows=3\n"
    )


def test_text_quotes_values_with_spaces():
    line = emit("text", "info", event(reason='said "no" twice'))

    assert line.endswith(' reason="said \\"no\\" twice"\n')


def test_json_line_has_fields_and_serialisable_extras_only():
    line = emit("json", "info", event(connection="pg-local", groups=["a"], handle=object()))

    record = json.loads(line)
    assert record == {
        "time": "2026-11-25T17:00:00Z",
        "level": "info",
        "namespace": "hoopgw.postgres",
        "message": "client ci-bot authenticated",
        "who": "ci-bot",
        "connection": "pg-local",
        "groups": ["a"],
    }
    assert line.count("\n") == 1


@pytest.mark.parametrize("format", ["text", "json"])
def test_events_below_the_level_are_dropped(format):
    out = emit(
        format,
        "warn",
        event(log_level=LogLevel.debug),
        event(log_level=LogLevel.info),
        event(log_level=LogLevel.warn, log_format="slow"),
        event(log_level=LogLevel.error, log_format="broken"),
    )

    lines = out.splitlines()
    assert len(lines) == 2
    assert "slow" in lines[0] and "warn" in lines[0]
    assert "broken" in lines[1] and "error" in lines[1]


CHATTER = [
    event(log_namespace="log_legacy", log_format="{m}", m="ClientSessionFactory starting on 15432"),
    event(log_namespace="log_legacy", log_format="{m}", m="(TCP Port 15432 Closed)"),
    event(
        log_namespace="twisted.internet.protocol.Factory", log_format="Starting factory {f}", f=1
    ),
    event(
        log_namespace="hoopgw_ssh.server.SshServerFactory",
        log_format="disabling non-fixed-group key exchange algorithms because we cannot find"
        " moduli file",
    ),
]


def test_twisted_chatter_is_shown_only_at_debug_level():
    assert emit("text", "info", *CHATTER, event()).count("\n") == 1
    assert emit("text", "debug", *CHATTER, event()).count("\n") == len(CHATTER) + 1


def test_a_warning_that_looks_like_chatter_is_kept():
    warned = event(log_level=LogLevel.warn, log_format="Stopping factory {f} failed", f=1)
    assert "Stopping factory" in emit("text", "info", warned)


@pytest.mark.parametrize("format", ["text", "json"])
def test_registered_secret_is_redacted_everywhere(format):
    logs.register_secret('pa"ss\\word')
    logs.register_secret("hunter2")

    out = emit(
        format,
        "debug",
        event(log_format="login as {who} with hunter2", password='pa"ss\\word', dsn="x hunter2 y"),
    )

    assert "hunter2" not in out
    assert "pa" + '"ss' not in out
    assert "ss\\\\word" not in out and "ss\\word" not in out
    assert out.count("***") == 3


def test_longer_secret_is_redacted_whole_when_it_contains_a_shorter_one():
    logs.register_secret("abc")
    logs.register_secret("abcdef")

    assert logs.redact("x abcdef y abc") == "x *** y ***"


def test_empty_secret_is_ignored():
    logs.register_secret("")

    assert logs.redact("unchanged") == "unchanged"


@pytest.mark.parametrize("format", ["text", "json"])
def test_failure_traceback_is_written_and_redacted(format):
    logs.register_secret("hunter2")
    try:
        raise RuntimeError("login failed for hunter2")
    except RuntimeError:
        failure = Failure()

    out = emit(format, "info", event(log_level=LogLevel.critical, log_failure=failure))

    assert "RuntimeError" in out
    assert "hunter2" not in out
    if format == "json":
        assert "RuntimeError" in json.loads(out)["traceback"]


def test_make_observer_refuses_unknown_format_and_level():
    with pytest.raises(ValueError, match="log format"):
        logs.make_observer("xml", "info", io.StringIO())
    with pytest.raises(ValueError, match="log level"):
        logs.make_observer("text", "verbose", io.StringIO())


def test_start_logging_installs_one_observer_and_leaves_stdio_alone(monkeypatch):
    calls = []

    class Beginner:
        def beginLoggingTo(self, observers, **kwargs):
            calls.append((observers, kwargs))

    monkeypatch.setattr(logs, "globalLogBeginner", Beginner())
    stream = io.StringIO()

    logs.start_logging("json", "info", stream)

    [(observers, kwargs)] = calls
    assert kwargs == {"redirectStandardIO": False}
    observers[0](event())
    assert json.loads(stream.getvalue())["message"] == "client ci-bot authenticated"


def test_legacy_events_do_not_repeat_their_timestamp_as_a_key():
    legacy = event(
        log_namespace="log_legacy",
        log_format="{log_text}",
        log_text="Factory stopped listening on 15432",
        time=NOON,
        system="-",
        message=("Factory stopped listening on 15432",),
        isError=0,
    )
    line = emit("text", "info", legacy)
    assert "time=" not in line and "Factory stopped listening on 15432" in line
