"""Run a database driver's own test suite direct and through a hoopgw gateway, and print the
tests whose outcome differs (``./dev suite psycopg|pymysql PATH [-- PYTEST ARGS]``).

PATH is a source tree of the driver's public repository (psycopg/psycopg or PyMySQL/PyMySQL;
docs/development.md says how to get one). The suite runs in an environment of its own,
``.venv-suite-DRIVER`` beside the repository's ``.venv``, made on first use with the tree's
package (editable) and its test requirements. The gateway runs from this Python, with a fresh
SQLite store, in front of the PostgreSQL and MariaDB servers the tests use
(``HOOPGW_TEST_PGHOST``/``PGPORT``, ``HOOPGW_TEST_MYHOST``/``MYPORT``; 127.0.0.1:5432 and
:3306 by default, superusers ``postgres`` and ``root`` without a password).

Both runs use the same pytest arguments (``-p no:randomly`` so the order is the same, a
per-test timeout, and whatever follows ``--``, ``-k`` say), write JUnit XML to the work folder
(``--work``, a new temporary folder by default), and are compared test by test. The tests whose
outcome differs are printed with the message of the run through the gateway; those listed in
:data:`DELIBERATE` are marked with the reason (docs/postgres.md and docs/protocols/mysql.md
say more). The exit status is 1 if any other test differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import tomli_w

ROOT = Path(__file__).resolve().parents[2]
HOOPGW = (sys.executable, "-m", "hoopgw")
TEST_TIMEOUT = 120
"""Seconds a single test may take before pytest-timeout fails it (a hang through the gateway
must not stop the run)."""

_SCS_OFF = (
    "standard_conforming_strings=off is refused (the gateway's parser reads '...' literals"
    " only as the server does with it on; postgres.md, lexing settings)"
)
_ENVIRONMENT = "the direct run's conninfo (default port, no password), not the gateway"

DELIBERATE: Mapping[str, Mapping[str, str]] = {
    "psycopg": {
        "tests.test_sql::test_quote_*[off]": _SCS_OFF,
        "tests.test_sql::test_quote_*[off-*]": _SCS_OFF,
        "tests.types.test_string::test_quote_*-off]": _SCS_OFF,
        "tests.types.test_string::test_quote_*[off]": _SCS_OFF,
        "tests.test_connection_info::test_get_params*": _ENVIRONMENT,
        "tests.test_connection*::test_multi_attempt_pgconn*": _ENVIRONMENT,
    },
    "pymysql": {
        "pymysql.tests.test_issues.TestNewIssues::test_issue_36": (
            "the client greets the gateway before any target is chosen, so thread_id() is the"
            " gateway's own connection id, not the one SHOW PROCESSLIST shows"
        ),
    },
}
"""Test ids whose outcome differs through the gateway on purpose (or for a reason outside the
gateway), with why; ``*`` in an id matches any text."""


def deliberate_reason(test_id: str, deliberate: Mapping[str, str]) -> str | None:
    """Why ``test_id`` differs on purpose, if a pattern of ``deliberate`` matches it."""
    for pattern, why in deliberate.items():
        if re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), test_id):
            return why
    return None


@attrs.frozen(kw_only=True)
class Outcome:
    """How one test ended in one run."""

    status: str
    """``passed``, ``failed``, ``error``, ``skipped``."""
    message: str = ""
    """The first line of the failure, error or skip message."""


def read_junit(path: Path) -> dict[str, Outcome]:
    """The outcome of every test case in a JUnit XML report, by ``classname::name``."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().split("\n")[0]
                break
        outcomes[test_id] = Outcome(status=status, message=message[:300])
    return outcomes


@attrs.frozen(kw_only=True)
class Difference:
    """A test whose outcome differs between the direct run and the run through the gateway."""

    test_id: str
    direct: Outcome | None
    via: Outcome | None


def differences(direct: Mapping[str, Outcome], via: Mapping[str, Outcome]) -> list[Difference]:
    """The tests whose status differs (or that ran in one run only), sorted by id."""
    found = []
    for test_id in sorted(set(direct) | set(via)):
        a, b = direct.get(test_id), via.get(test_id)
        if a is None or b is None or a.status != b.status:
            found.append(Difference(test_id=test_id, direct=a, via=b))
    return found


def report(found: Sequence[Difference], deliberate: Mapping[str, str]) -> tuple[str, int]:
    """The text to print, and how many differences are not deliberate."""
    lines, unexpected = [], 0
    for difference in found:
        direct = difference.direct.status if difference.direct else "absent"
        via = difference.via.status if difference.via else "absent"
        why = deliberate_reason(difference.test_id, deliberate)
        if why is None:
            unexpected += 1
        lines.append(f"{direct:>8} -> {via:<8} {difference.test_id}")
        if why is not None:
            lines.append(f"{'':20}deliberate: {why}")
        elif difference.via is not None and difference.via.message:
            lines.append(f"{'':20}{difference.via.message}")
    lines.append(
        f"{len(found)} test(s) differ through the gateway"
        f" ({len(found) - unexpected} deliberate, {unexpected} not)"
    )
    return "\n".join(lines), unexpected


# -- the environment ---------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def suite_python(driver: str, tree: Path) -> Path:
    """The Python of ``.venv-suite-DRIVER``, made (or refreshed for another tree) first."""
    venv = ROOT / f".venv-suite-{driver}"
    python = venv / "bin" / "python"
    stamp = venv / ".hoopgw-suite"
    wanted = str(tree.resolve())
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"making {venv.name} for {tree}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if driver == "psycopg":
        # Not editable: the tree's top folder psycopg/ (the distribution) would otherwise be
        # imported as a namespace package in place of psycopg/psycopg.
        packages = [f"{tree / 'psycopg'}[test]", str(tree / "psycopg_pool")]
    else:
        packages = ["-e", str(tree), "pytest", "cryptography"]
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *packages, "pytest-timeout"],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def _server(prefix: str, port: int) -> tuple[str, int]:
    host = os.environ.get(f"HOOPGW_TEST_{prefix}HOST", "127.0.0.1")
    return host, int(os.environ.get(f"HOOPGW_TEST_{prefix}PORT", str(port)))


@attrs.frozen(kw_only=True)
class Listener:
    """One connection of the suite's gateway."""

    name: str
    protocol: str
    port: int
    target: str
    credential: Mapping[str, str]
    identity: str
    """Identity (and login name) of the key made for it."""
    options: Mapping[str, Any] = attrs.field(factory=dict)
    """More keys of the connection's table."""


@contextmanager
def running_gateway(
    work: Path, listeners: Sequence[Listener], plugins: Sequence[str]
) -> Iterator[dict[str, str]]:
    """Run ``hoopgw run`` with one connection per listener; yield each identity's key."""
    config = work / "hoopgw.toml"
    document: dict[str, Any] = {
        "gateway": {"store": f"sqlite:///{work / 'hoopgw.db'}"},
        "connections": [
            {
                "name": item.name,
                "protocol": item.protocol,
                "listen": f"tcp:{item.port}:interface=127.0.0.1",
                "target": item.target,
                "allow_groups": [item.name],
                "plugins": list(plugins),
                "credential": dict(item.credential),
                **({"client_tls": "disabled"} if item.protocol == "postgres" else {}),
                **item.options,
            }
            for item in listeners
        ],
    }
    config.write_text(tomli_w.dumps(document))
    keys = {}
    for item in listeners:
        made = subprocess.run(
            [
                *HOOPGW,
                "keys",
                "create",
                "--identity",
                item.identity,
                "--group",
                item.name,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=work,  # as the gateway: the hoopgw on the path, not the one in the cwd
        )
        keys[item.identity] = made.stdout.strip()
    with (work / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [*HOOPGW, "run", "-c", str(config)], stdout=log, stderr=log, cwd=work
        )
    try:
        for item in listeners:
            _wait_for(process, item.port)
        yield keys
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited with {process.returncode}; see gateway.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the gateway did not listen on {port} within 60 s")


def run_pytest(
    python: Path, tree: Path, work: Path, label: str, args: Sequence[str], env: Mapping[str, str]
) -> dict[str, Outcome]:
    """Run the suite once; its output goes to ``work/LABEL.log``."""
    xml = work / f"{label}.xml"
    log = work / f"{label}.log"
    command = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:randomly",
        f"--timeout={TEST_TIMEOUT}",
        f"--junitxml={xml}",
        # A cache of this run's own: the tree's is left alone, and a killed run's state
        # (psycopg's suite refuses to start after a crash) does not carry over.
        "-o",
        f"cache_dir={work / ('cache-' + label)}",
        *args,
    ]
    say(f"{label}: {' '.join(command[3:])} (output in {log})")
    started = time.monotonic()
    with log.open("wb") as out:
        subprocess.run(command, cwd=tree, env={**os.environ, **env}, stdout=out, stderr=out)
    outcomes = read_junit(xml)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    say(f"{label}: {counts} in {time.monotonic() - started:.0f} s")
    return outcomes


# -- the drivers ---------------------------------------------------------------------------------


def psycopg_runs(work: Path, plugins: Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ("direct", env), then ("via", env) while the gateway runs."""
    import psycopg

    host, port = _server("PG", 5432)
    database = "hoopgw_suite_psycopg"
    with psycopg.connect(host=host, port=port, user="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    direct = f"host={host} port={port} user=postgres dbname={database}"
    yield "direct", {"PSYCOPG_TEST_DSN": direct}
    listener = Listener(
        name="suite",
        protocol="postgres",
        port=free_port(),
        target=f"{host}:{port}",
        credential={"user": "postgres"},
        identity="suite",
    )
    with running_gateway(work, [listener], plugins) as keys:
        via = (
            f"host=127.0.0.1 port={listener.port} user=suite password={keys['suite']}"
            f" dbname={database} sslmode=disable"
        )
        yield "via", {"PSYCOPG_TEST_DSN": via}


def pymysql_runs(
    work: Path, plugins: Sequence[str], tree: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ("direct", env), then ("via", env) while the gateway runs; each writes the
    suite's ``pymysql/tests/databases.json`` (removed at the end)."""
    import pymysql

    host, port = _server("MY", 3306)
    with pymysql.connect(host=host, port=port, user="root", autocommit=True) as admin:
        with admin.cursor() as cursor:
            for name in ("test1", "test2"):
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
                cursor.execute(f"CREATE DATABASE {name} DEFAULT CHARACTER SET utf8mb4")
            cursor.execute("DROP USER IF EXISTS 'test2'@'%'")
            cursor.execute("CREATE USER 'test2'@'%' IDENTIFIED BY 'some password'")
            cursor.execute("GRANT ALL ON test2.* TO 'test2'@'%'")
    settings = tree / "pymysql" / "tests" / "databases.json"
    if settings.exists():
        raise SystemExit(f"{settings} exists: move it away (the runner writes its own)")
    password_file = work / "test2-password"
    password_file.write_text("some password")
    password_file.chmod(0o600)

    def databases(first: tuple[str, int, str, str], second: tuple[str, int, str, str]) -> None:
        entries = []
        for (h, p, user, password), name, extra in (
            (first, "test1", {"use_unicode": True, "local_infile": True}),
            (second, "test2", {}),
        ):
            entries.append(
                {"host": h, "port": p, "user": user, "password": password, "database": name} | extra
            )
        settings.write_text(json.dumps(entries))

    try:
        databases((host, port, "root", ""), (host, port, "test2", "some password"))
        yield "direct", {}
        first = Listener(
            name="suite",
            protocol="mysql",
            port=free_port(),
            target=f"{host}:{port}",
            credential={"user": "root"},
            identity="root",
            # As the suite's own settings ask of this database's connection.
            options={"local_infile": True},
        )
        second = Listener(
            name="suite2",
            protocol="mysql",
            port=free_port(),
            target=f"{host}:{port}",
            credential={"user": "test2", "password": f"file:{password_file}"},
            identity="test2",
        )
        with running_gateway(work, [first, second], plugins) as keys:
            databases(
                ("127.0.0.1", first.port, "root", keys["root"]),
                ("127.0.0.1", second.port, "test2", keys["test2"]),
            )
            yield "via", {}
    finally:
        settings.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev suite", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("driver", choices=("psycopg", "pymysql"))
    parser.add_argument("tree", type=Path, help="the driver's source tree")
    parser.add_argument(
        "--plugins",
        default="recording",
        help="comma-separated plugins of the gateway's connection (default: recording)",
    )
    parser.add_argument("--work", type=Path, help="folder for logs and reports (default: new)")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.pytest_args = argv[split + 1 :]
    tree: Path = args.tree.resolve()
    marker = tree / ("tests/conftest.py" if args.driver == "psycopg" else "pymysql/tests/base.py")
    if not marker.exists():
        parser.error(f"{tree} is not a {args.driver} source tree (no {marker.relative_to(tree)})")
    work = args.work or Path(tempfile.mkdtemp(prefix=f"hoopgw-suite-{args.driver}-"))
    work.mkdir(parents=True, exist_ok=True)
    plugins = [p for p in args.plugins.split(",") if p]
    python = suite_python(args.driver, tree)
    pytest_args = list(args.pytest_args)
    if not any((tree / arg.split("::")[0]).exists() for arg in pytest_args):
        pytest_args.insert(0, "tests" if args.driver == "psycopg" else "pymysql/tests")
    runs = (
        psycopg_runs(work, plugins)
        if args.driver == "psycopg"
        else pymysql_runs(work, plugins, tree)
    )
    results = {
        label: run_pytest(python, tree, work, label, pytest_args, env) for label, env in runs
    }
    text, unexpected = report(
        differences(results["direct"], results["via"]), DELIBERATE[args.driver]
    )
    (work / "differences.txt").write_text(text + "\n")
    print(text)
    say(f"reports, logs and the gateway's log are in {work}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
