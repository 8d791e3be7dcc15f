"""Tests for hoopgw.cli.main and the run, keys and sessions commands. Store commands run against
a real SQLite store in tmp_path."""

import json
import runpy
import sys
import types
from pathlib import Path

import pytest

from hoopgw.cli.common import parse_duration
from hoopgw.cli.main import main
from hoopgw.config.load import Config
from hoopgw.records import AuditEntry
from hoopgw.runtime import logs
from hoopgw.runtime.worker import WORKER_ENV, WorkerLink
from hoopgw.store import open_store

PASSWORD = "cli-test-password-3141"

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"
log_format = "json"
log_level = "debug"

[[connections]]
name = "pg-a"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = ["agents"]
client_tls = "disabled"
credential = { user = "postgres", password = "env:HOOPGW_CLI_TEST_PW" }

[[connections]]
name = "pg-b"
protocol = "postgres"
listen = "tcp:15433:interface=127.0.0.1"
target = "127.0.0.1:5432"
allow_groups = []
client_tls = "disabled"
credential = { user = "postgres" }
"""


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("HOOPGW_CLI_TEST_PW", PASSWORD)
    monkeypatch.setattr(logs, "_secrets", ())


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("30d", 2592000)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "0d", "-1h", "1.5h", "30y", "d", "30 d", "1h30m"])
def test_parse_duration_refuses_anything_else(text):
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run(capsys)

    assert code == 2
    assert "usage: hoopgw" in err


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "--help")

    assert code == 0
    assert "run" in out and "keys" in out and "sessions" in out


def test_config_option_is_required(capsys):
    code, _, err = run(capsys, "config", "check")

    assert code == 2
    assert "-c/--config" in err


# -- config check ---------------------------------------------------------------------------


def test_config_check_ok_lists_connections(capsys, config_file):
    code, out, err = run(capsys, "config", "check", "-c", config_file)

    assert code == 0
    assert out == "ok: 2 connections (pg-a, pg-b)\n"
    assert err == ""


def test_config_check_json(capsys, config_file):
    code, out, _ = run(capsys, "config", "check", "-c", config_file, "--json")

    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert [c["name"] for c in report["connections"]] == ["pg-a", "pg-b"]
    assert report["connections"][0]["listen"] == "tcp:15432:interface=127.0.0.1"
    assert PASSWORD not in out


def test_config_check_error_names_key_and_exits_2(capsys, config_file):
    config_file.write_text(CONFIG.replace("allow_groups = []", 'allow_groups = "all"'))

    code, out, err = run(capsys, "config", "check", "-c", config_file)

    assert code == 2
    assert out == ""
    assert err == "hoopgw: connection 'pg-b', key 'allow_groups': expected list, got str\n"


def test_config_check_error_as_json(capsys, config_file):
    config_file.write_text(CONFIG.replace("allow_groups = []", 'allow_groups = "all"'))

    code, out, _ = run(capsys, "config", "check", "-c", config_file, "--json")

    assert code == 2
    assert json.loads(out) == {
        "ok": False,
        "error": "connection 'pg-b', key 'allow_groups': expected list, got str",
        "key": "allow_groups",
        "connection": "pg-b",
    }


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("broken", [False, True])
def test_config_check_never_prints_a_resolved_secret(capsys, config_file, as_json, broken):
    text = CONFIG
    if broken:  # an error after the password was resolved
        text = text.replace('target = "127.0.0.1:5432"\nallow_groups = []', 'target = "x"')
    config_file.write_text(text)

    code, out, err = run(
        capsys, "config", "check", "-c", config_file, *(["--json"] if as_json else [])
    )

    assert code == (2 if broken else 0)
    assert PASSWORD not in out + err


def test_config_check_literal_password_is_not_echoed(capsys, config_file):
    config_file.write_text(CONFIG.replace("env:HOOPGW_CLI_TEST_PW", PASSWORD))

    code, out, err = run(capsys, "config", "check", "-c", config_file)

    assert code == 2
    assert "not a literal value" in err
    assert PASSWORD not in out + err


def test_config_check_online_logs_in_and_warns(capsys, config_file, monkeypatch):
    from hoopgw_postgres import privileges

    config_file.write_text(
        CONFIG.replace("allow_groups = []", 'allow_groups = []\nplugins = ["guardrails"]')
        + '\n[connections.guardrails]\npreset = "agent-readonly"\n'
    )
    logins = []

    def query(connection):
        logins.append((connection.name, connection.credential.user))
        return ("postgres", True, False, False, [])

    monkeypatch.setattr(privileges, "_query", query)
    code, out, err = run(capsys, "config", "check", "-c", config_file, "--online")
    assert code == 0, err
    assert logins == [("pg-a", "postgres"), ("pg-b", "postgres")]
    assert "pg-a: upstream login ok (read-write sessions)" in out
    assert "pg-b: upstream login ok (read-only sessions)" in out
    [warning] = err.splitlines()
    assert warning.startswith("hoopgw: warning: connection 'pg-b': ") and "superuser" in warning
    assert PASSWORD not in out + err

    def refused(connection):
        raise OSError(f"connection refused by {connection.target}")

    monkeypatch.setattr(privileges, "_query", refused)
    code, out, _ = run(capsys, "config", "check", "-c", config_file, "--online", "--json")
    assert code == 1
    document = json.loads(out)
    assert not document["ok"]
    assert "cannot log in to the target: connection refused" in document["connections"][0]["error"]


def test_config_check_names_the_agent_and_does_not_log_in_through_it(
    capsys, config_file, monkeypatch, tmp_path
):
    from hoopgw_postgres import privileges

    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    config_file.write_text(
        CONFIG.replace(
            'log_level = "debug"\n',
            'log_level = "debug"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
            'agent_listen = "tcp:8444"\n',
        ).replace('allow_groups = ["agents"]', 'allow_groups = ["agents"]\nvia = "dc1"')
    )
    logins = []
    monkeypatch.setattr(
        privileges,
        "_query",
        lambda c: logins.append(c.name) or ("postgres", False, False, False, []),
    )
    code, out, err = run(capsys, "config", "check", "-c", config_file)
    assert code == 0, err
    assert "pg-a: via: agent dc1" in out
    code, out, err = run(capsys, "config", "check", "-c", config_file, "--online")
    assert code == 0, err
    assert "pg-a: upstream login not checked (reached through agent dc1)" in out
    assert logins == ["pg-b"]


def test_config_check_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "config", "check", "-c", tmp_path / "nope.toml")

    assert code == 2
    assert "cannot read config file" in err


# -- run ------------------------------------------------------------------------------------


@pytest.fixture
def fake_gateway(monkeypatch):
    """Stand-ins for the gateway and for logging, which `run` starts."""
    calls = {"run": [], "logging": []}

    def run_gateway(config, worker=None):
        calls["run"].append(config)
        calls.setdefault("worker", []).append(worker)
        return 0

    def run_supervisor(config, config_path):
        calls.setdefault("supervisor", []).append((config.gateway.workers, config_path))
        return 0

    module = types.ModuleType("hoopgw.runtime.gateway")
    module.run_gateway = run_gateway
    monkeypatch.setitem(sys.modules, "hoopgw.runtime.gateway", module)
    parent = types.ModuleType("hoopgw.runtime.workers")
    parent.run_supervisor = run_supervisor
    monkeypatch.setitem(sys.modules, "hoopgw.runtime.workers", parent)
    monkeypatch.delenv(WORKER_ENV, raising=False)
    monkeypatch.setattr(logs, "start_logging", lambda *args: calls["logging"].append(args))
    return calls


def test_run_starts_logging_then_the_gateway(capsys, config_file, fake_gateway):
    code, _, _ = run(capsys, "run", "-c", config_file)

    assert code == 0
    assert fake_gateway["logging"] == [("json", "debug")]
    [config] = fake_gateway["run"]
    assert isinstance(config, Config)
    assert [c.name for c in config.connections] == ["pg-a", "pg-b"]


def test_run_with_workers_starts_their_parent_and_a_worker_its_gateway(
    capsys, tmp_path, fake_gateway, monkeypatch
):
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG.replace("[gateway]\n", "[gateway]\nworkers = 2\n", 1))
    assert run(capsys, "run", "-c", path)[0] == 0
    assert fake_gateway["supervisor"] == [(2, str(path))] and fake_gateway["run"] == []
    link = WorkerLink(
        index=2, instance="w2", listeners={}, audit_fd=4, control_fd=5, serves_admin=False
    )
    monkeypatch.setenv(WORKER_ENV, link.to_env())
    assert run(capsys, "run", "-c", path)[0] == 0
    assert fake_gateway["worker"] == [link]


def test_run_returns_the_gateway_exit_status(capsys, config_file, fake_gateway, monkeypatch):
    monkeypatch.setattr(
        sys.modules["hoopgw.runtime.gateway"], "run_gateway", lambda config, worker: 1
    )

    assert run(capsys, "run", "-c", config_file)[0] == 1


def test_run_refuses_a_store_others_can_read_naming_the_fix(capsys, config_file, fake_gateway):
    import os

    from hoopgw.config.gateway import resolve_store_url
    from hoopgw.config.load import load_config
    from hoopgw.store import SQLiteStore

    config = load_config(config_file)
    path = resolve_store_url(config.gateway.store, base_dir=config.base_dir).removeprefix(
        "sqlite:///"
    )
    SQLiteStore(path).close()
    os.chmod(path, 0o644)

    code, _, err = run(capsys, "run", "-c", config_file)

    assert code == 1
    assert f"chmod 600 {path}" in err
    assert fake_gateway == {"run": [], "logging": []}


def test_run_with_a_bad_config_exits_2_without_starting(capsys, config_file, fake_gateway):
    config_file.write_text(CONFIG + "\nsurprise = 1\n")

    code, _, err = run(capsys, "run", "-c", config_file)

    assert code == 2
    assert "surprise" in err
    assert fake_gateway == {"run": [], "logging": []}


# -- keys -----------------------------------------------------------------------------------


def test_keys_create_prints_the_key_alone_and_details_on_stderr(capsys, config_file):
    code, out, err = run(
        capsys, "keys", "create", "-c", config_file, "--identity", "ci", "--group", "agents",
        "--group", "ops", "--expires", "30d",
    )  # fmt: skip

    assert code == 0
    [key] = out.splitlines()
    assert out == key + "\n"
    assert key.startswith("hgw_")
    assert "identity 'ci'" in err and "agents, ops" in err and "expires: 20" in err
    assert key not in err
    assert (config_file.parent / "audit.db").exists()


def test_keys_create_without_expiry_never_expires(capsys, config_file):
    code, _, err = run(
        capsys, "keys", "create", "-c", config_file, "--identity", "ci", "--group", "a"
    )

    assert code == 0
    assert "expires: never" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--identity", "ci", "--group", "a", "--expires", "soon"],
        ["--identity", "ci"],
        ["--group", "a"],
    ],
)
def test_keys_create_usage_errors(capsys, config_file, argv):
    code, out, _ = run(capsys, "keys", "create", "-c", config_file, *argv)

    assert code == 2
    assert out == ""


def test_keys_create_refused_name_is_a_usage_error(capsys, config_file):
    code, out, err = run(
        capsys, "keys", "create", "-c", config_file, "--identity", "two words", "--group", "a"
    )

    assert code == 2
    assert out == ""
    assert "identity" in err


def test_keys_create_refuses_a_name_reserved_for_an_issuers_tokens(capsys, config_file, tmp_path):
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "EC", "kid": "k"}]}))
    with config_file.open("a") as f:
        f.write(
            '[[identity.oidc]]\nissuer = "urn:corp"\naudience = "hoopgw"\n'
            'jwks_file = "jwks.json"\nidentity_prefix = "corp:"\n'
        )
    code, out, err = run(
        capsys, "keys", "create", "-c", config_file, "--identity", "corp:alice", "--group", "a"
    )
    assert code == 2
    assert out == ""
    assert "reserved for an issuer's tokens" in err
    create_key(capsys, config_file, "alice")


def create_key(capsys, config_file, identity="ci", *groups):
    code, out, err = run(
        capsys, "keys", "create", "-c", config_file, "--identity", identity,
        *[arg for g in groups or ("agents",) for arg in ("--group", g)],
    )  # fmt: skip
    assert code == 0
    key_id = err.split("created key ", 1)[1].split()[0]
    return out.strip(), key_id


def test_keys_list_table_never_shows_secrets_or_hashes(capsys, config_file):
    secret, key_id = create_key(capsys, config_file, "ci", "agents", "ops")

    code, out, _ = run(capsys, "keys", "list", "-c", config_file)

    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [
        "KEY", "ID", "IDENTITY", "GROUPS", "CREATED", "EXPIRES", "REVOKED", "LAST", "USED",
    ]  # fmt: skip
    assert row.split()[:3] == [key_id, "ci", "agents,ops"]
    assert row.split()[3].endswith("Z")
    assert row.split()[4:] == ["-", "-", "-"]
    assert secret not in out
    assert "sha" not in out.lower() and "scram" not in out.lower()


def test_keys_list_json(capsys, config_file):
    secret, key_id = create_key(capsys, config_file)

    code, out, _ = run(capsys, "keys", "list", "-c", config_file, "--json")

    assert code == 0
    [key] = json.loads(out)
    assert set(key) == {
        "key_id", "identity", "groups", "created_at", "expires_at", "revoked_at", "last_used_at",
    }  # fmt: skip
    assert key["key_id"] == key_id and key["groups"] == ["agents"]
    assert key["created_at"].endswith("Z") and len(key["created_at"]) == 20
    assert secret not in out


def test_keys_revoke(capsys, config_file):
    _, key_id = create_key(capsys, config_file)

    assert run(capsys, "keys", "revoke", "-c", config_file, key_id)[0] == 0
    code, _, err = run(capsys, "keys", "revoke", "-c", config_file, key_id)
    assert code == 1
    assert "no active key" in err

    [key] = json.loads(run(capsys, "keys", "list", "-c", config_file, "--json")[1])
    assert key["revoked_at"].endswith("Z")


def test_keys_revoke_unknown_key_fails(capsys, config_file):
    code, _, err = run(capsys, "keys", "revoke", "-c", config_file, "000000000000")

    assert code == 1
    assert "000000000000" in err


# -- sessions -------------------------------------------------------------------------------

# 2026-11-25T17:00:00Z
NOON = 1795626000.0


def record_session(config_file, session_id, *, connection="pg-a", identity="ci", start=NOON):
    def entry(record_kind, time, **data):
        return AuditEntry(kind=record_kind, session_id=session_id, time=time, data=data)

    store = open_store(f"sqlite:///{config_file.parent}/audit.db")
    store.migrate()
    store.append(
        [
            entry(
                "session_started", start, identity=identity, groups=["agents"],
                method="api-key", credential_id="0123456789ab", client_address="127.0.0.1:5000",
                connection=connection, protocol="postgres", target="127.0.0.1:5432",
                client_tls=False, upstream_tls=True, started_at=start,
                attributes={"database": "app"},
            ),
            entry(
                "command_received", start + 1, seq=1, kind="query", text="SELECT 1",
                parameter_count=0, statement_name="",
            ),
            entry("command_decided", start + 1, seq=1, verdict="allow", reason="", plugin="",
                  rule=""),
            entry(
                "command_completed", start + 2, seq=1, status="ok", rows=1, bytes=12,
                duration=0.5, error_code="", error_message="",
            ),
            entry(
                "command_received", start + 3, seq=2, kind="query", text="DROP TABLE t;\nSELECT 2",
                parameter_count=0, statement_name="",
            ),
            entry("command_decided", start + 3, seq=2, verdict="block", reason="no drops",
                  plugin="guardrails", rule="r1"),
            entry(
                "command_completed", start + 3, seq=2, status="blocked", rows=0, bytes=0,
                duration=0.0, error_code="42501", error_message="no drops",
            ),
            entry("session_closed", start + 4, reason="client closed"),
        ]
    )  # fmt: skip
    store.close()


def test_sessions_list_table_newest_first(capsys, config_file):
    record_session(config_file, "s-old", start=NOON)
    record_session(config_file, "s-new", connection="pg-b", identity="bob", start=NOON + 60)

    code, out, _ = run(capsys, "sessions", "list", "-c", config_file)

    assert code == 0
    header, newest, oldest = out.splitlines()
    assert header.split()[:3] == ["ID", "CONNECTION", "IDENTITY"]
    assert newest.split() == [
        "s-new", "pg-b", "bob", "127.0.0.1:5000", "2026-11-25T17:01:00Z", "2026-11-25T17:01:04Z",
        "client", "closed", "2",
    ]  # fmt: skip
    assert oldest.split()[0] == "s-old"


def test_sessions_list_json_and_filters(capsys, config_file):
    record_session(config_file, "s1", connection="pg-a", identity="ci")
    record_session(config_file, "s2", connection="pg-b", identity="ci", start=NOON + 10)
    record_session(config_file, "s3", connection="pg-a", identity="bob", start=NOON + 20)

    def ids(*argv):
        code, out, _ = run(capsys, "sessions", "list", "-c", config_file, "--json", *argv)
        assert code == 0
        return [s["id"] for s in json.loads(out)]

    assert ids() == ["s3", "s2", "s1"]
    assert ids("--limit", "1") == ["s3"]
    assert ids("--connection", "pg-a") == ["s3", "s1"]
    assert ids("--identity", "ci", "--connection", "pg-a") == ["s1"]
    [first] = json.loads(run(capsys, "sessions", "list", "-c", config_file, "--json")[1])[2:]
    assert first["started_at"] == "2026-11-25T17:00:00Z"


def test_sessions_list_limit_must_be_positive(capsys, config_file):
    assert run(capsys, "sessions", "list", "-c", config_file, "--limit", "0")[0] == 2


def test_sessions_show_human(capsys, config_file):
    record_session(config_file, "s1")

    code, out, _ = run(capsys, "sessions", "show", "-c", config_file, "s1")

    assert code == 0
    assert "id" in out and "s1" in out
    assert "started_at" in out and "2026-11-25T17:00:00Z" in out
    assert "#1 2026-11-25T17:00:01Z query verdict=allow status=ok rows=1" in out
    assert "    SELECT 1\n" in out
    assert "    reason: no drops (guardrails)" in out
    assert "    error: 42501 no drops" in out
    assert "    DROP TABLE t;\n    SELECT 2\n" in out


def test_sessions_show_json(capsys, config_file):
    record_session(config_file, "s1")

    code, out, _ = run(capsys, "sessions", "show", "-c", config_file, "s1", "--json")

    assert code == 0
    session = json.loads(out)
    assert session["id"] == "s1"
    assert session["ended_at"] == "2026-11-25T17:00:04Z"
    assert [c["text"] for c in session["commands"]] == ["SELECT 1", "DROP TABLE t;\nSELECT 2"]
    assert session["commands"][1]["verdict"] == "block"
    assert session["commands"][0]["received_at"] == "2026-11-25T17:00:01Z"


def test_sessions_show_durations_read_as_time(capsys, config_file):
    record_session(config_file, "s1")

    assert "duration=500.0 ms" in run(capsys, "sessions", "show", "-c", config_file, "s1")[1]


def test_sessions_show_takes_a_unique_start_of_the_id(capsys, config_file):
    record_session(config_file, "0d9f6c4e-aaaa")
    record_session(config_file, "0d9f6c4e-bbbb")
    record_session(config_file, "7b1e")

    code, out, _ = run(capsys, "sessions", "show", "-c", config_file, "7b", "--json")
    assert code == 0 and json.loads(out)["id"] == "7b1e"
    code, out, err = run(capsys, "sessions", "show", "-c", config_file, "0d9f")
    assert (code, out) == (1, "")
    assert "'0d9f' is the start of several sessions (0d9f6c4e-aaaa, 0d9f6c4e-bbbb)" in err
    assert run(capsys, "sessions", "show", "-c", config_file, "0d9f6c4e-b")[0] == 0


def test_sessions_show_unknown_id_fails(capsys, config_file):
    code, out, err = run(capsys, "sessions", "show", "-c", config_file, "nope")

    assert code == 1
    assert out == ""
    assert "no session with id 'nope'" in err


def test_store_failure_exits_1(capsys, config_file):
    (config_file.parent / "audit.db").write_text("this is not a database")

    code, _, err = run(capsys, "sessions", "list", "-c", config_file)

    assert code == 1
    assert err.startswith("hoopgw: ")


# -- entry points ---------------------------------------------------------------------------


def test_python_dash_m_runs_the_cli(capsys, config_file, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hoopgw", "config", "check", "-c", str(config_file)])

    with pytest.raises(SystemExit) as exited:
        runpy.run_module("hoopgw", run_name="__main__")

    assert exited.value.code == 0
    assert capsys.readouterr().out == "ok: 2 connections (pg-a, pg-b)\n"
