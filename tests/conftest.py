"""Shared fixtures for integration tests: the real PostgreSQL server and the real gateway.

- ``pg_server``: the :class:`PgAddress` of the PostgreSQL server (``HOOPGW_TEST_PGHOST``,
  ``HOOPGW_TEST_PGPORT``); skips when none answers, but fails under ``CI=true``.
- ``pg_database``: a fresh, uniquely named database, dropped afterwards.
- ``gateway``: a factory that writes a config and runs ``hoopgw run`` as a subprocess.

``./dev test`` makes sure a server answers before it runs pytest.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import attrs
import psycopg
import pytest
import tomli_w
from psycopg import sql

STORE_BACKEND = os.environ.get("HOOPGW_TEST_STORE", "sqlite")
"""``HOOPGW_TEST_STORE=postgresql`` gives every gateway the tests start a PostgreSQL store (a
database of its own on the test server, dropped afterwards) instead of a SQLite file; ``./dev
test`` runs the tests marked ``store`` once more that way."""

GATEWAY_START_TIMEOUT = 20.0
GATEWAY_STOP_TIMEOUT = 10.0
HOOPGW_COMMAND = (sys.executable, "-m", "hoopgw")


def _load_helper(name: str, file_name: str, folder: str = "integration") -> ModuleType:
    # Tests are no package (pytest uses --import-mode=importlib): load helpers by path.
    if name not in sys.modules:
        path = Path(__file__).parent / folder / file_name
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _load_pgserver() -> ModuleType:
    return _load_helper("hoopgw_tests_pgserver", "pgserver.py")


pgserver = _load_pgserver()


def _load_certs() -> ModuleType:
    return _load_helper("hoopgw_tests_certs", "certs.py")


@pytest.fixture(scope="session")
def pg_server() -> Any:
    """The address (``.host``, ``.port``) of the real PostgreSQL server, user ``postgres``."""
    return _answering_server(pgserver, "PostgreSQL", "HOOPGW_TEST_PGHOST/HOOPGW_TEST_PGPORT")


def _answering_server(helper: ModuleType, kind: str, variables: str) -> Any:
    """The address ``helper`` reads from the environment (``variables``), when a ``kind``
    server answers there; else skip (see :func:`_missing`)."""
    address = helper.address_from_env()
    if not helper.server_answers(address):
        _missing(
            f"no {kind} answers at {address.host}:{address.port} "
            f"(set by {variables}); `./dev test` starts one"
        )
    return address


def _missing(message: str) -> NoReturn:
    """Skip the test for a server that is not here, but fail it under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


def admin_connection(server: Any) -> psycopg.Connection[Any]:
    """Open an autocommit connection to the ``postgres`` database as the superuser ``postgres``."""
    return psycopg.connect(
        host=server.host, port=server.port, user="postgres", dbname="postgres", autocommit=True
    )


@pytest.fixture
def pg_database(pg_server: Any) -> Iterator[str]:
    """Create a fresh database ``hgw_test_<random>``; yield its name; drop it afterwards."""
    name = f"hgw_test_{secrets.token_hex(6)}"
    with admin_connection(pg_server) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin_connection(pg_server) as connection:
            # FORCE ends sessions a test left open (through the gateway or not).
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a loopback TCP port that nothing listens on now."""
    return int(pgserver.free_port(host))


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not accept connections in time."""


@attrs.define(kw_only=True)
class RunningGateway:
    """A ``hoopgw run`` subprocess serving one PostgreSQL connection."""

    host: str
    """Address the connection listens on."""
    port: int
    """Port the connection listens on."""
    config_path: Path
    """The generated TOML config."""
    process: subprocess.Popen[bytes]
    """The gateway process."""
    stderr_path: Path
    """File that receives the process's stderr (its log)."""
    store_url: str = ""
    """The store URL of its config (resolved)."""

    def store_query(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``query`` (``?`` placeholders) on the gateway's store, SQLite or
        PostgreSQL (see :data:`STORE_BACKEND`)."""
        if self.store_url.startswith("sqlite:///"):
            with sqlite3.connect(self.store_url.removeprefix("sqlite:///")) as db:
                return db.execute(query, tuple(params)).fetchall()
        with psycopg.connect(self.store_url, autocommit=True) as db:
            return [tuple(row) for row in db.execute(query.replace("?", "%s"), tuple(params))]

    def store_rows(
        self, query: str, params: Sequence[Any] = (), *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        """The rows of ``query`` once there are any (within ``timeout`` seconds): the audit
        writer builds the store's ``sessions`` and ``commands`` tables in groups, a moment
        after the journal has the records."""
        deadline = time.monotonic() + timeout
        while not (rows := self.store_query(query, params)) and time.monotonic() < deadline:
            time.sleep(0.02)
        return rows

    def store_bytes(self) -> bytes:
        """Everything the store holds, as bytes: the SQLite files (database, WAL, journal), or
        a ``pg_dump`` of the PostgreSQL store and the instance's local journal. For tests that
        no raw secret reaches the store."""
        if self.store_url.startswith("sqlite:///"):
            path = Path(self.store_url.removeprefix("sqlite:///"))
            return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))
        dump = subprocess.run(
            ["pg_dump", "--data-only", "--no-owner", self.store_url],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        journals = sorted(self.config_path.parent.glob("*.audit-journal"))
        return dump + b"".join(p.read_bytes() for p in journals)

    def stderr_text(self) -> str:
        """Return what the gateway wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``hoopgw ARGS -c CONFIG`` to completion; output is captured as text."""
        return subprocess.run(
            [*HOOPGW_COMMAND, *args, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def create_key(self, identity: str, groups: Sequence[str]) -> str:
        """Create an API key for ``identity`` in ``groups``; return the secret.

        :raises AssertionError: the command failed or did not print exactly one line.
        """
        group_args = [arg for group in groups for arg in ("--group", group)]
        created = self.cli("keys", "create", "--identity", identity, *group_args)
        assert created.returncode == 0, f"hoopgw keys create failed: {created.stderr}"
        lines = created.stdout.splitlines()
        assert len(lines) == 1, f"hoopgw keys create printed {len(lines)} lines, expected the key"
        return lines[0].strip()

    def stop(self) -> None:
        """Send SIGTERM; kill the process if it has not exited within 10 seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(GATEWAY_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def gateway_config(
    *,
    store_path: Path,
    listen_port: int,
    target: str,
    plugins: Sequence[str],
    allow_groups: Sequence[str],
    connection: Mapping[str, Any],
    gateway_options: Mapping[str, Any],
    roles: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Return the config document for one ``postgres`` connection named ``pg``.

    ``connection`` adds or overrides keys of the connection (a plugin's options are a nested
    mapping under the plugin's name); ``gateway_options`` does the same for ``[gateway]``;
    ``roles`` is the ``[roles]`` table of the admin API.
    """
    return {
        **({"roles": {k: list(v) for k, v in roles.items()}} if roles else {}),
        "gateway": {"store": f"sqlite:///{store_path}", **gateway_options},
        "connections": [
            {
                "name": "pg",
                "protocol": "postgres",
                "listen": f"tcp:{listen_port}:interface=127.0.0.1",
                "target": target,
                "allow_groups": list(allow_groups),
                "plugins": list(plugins),
                "credential": {"user": "postgres"},
                **connection,
            }
        ],
    }


def _wait_until_listening(gateway: RunningGateway, deadline: float) -> None:
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise GatewayStartError(
                f"hoopgw run exited with {gateway.process.returncode} before listening; "
                f"stderr:\n{gateway.stderr_text()}"
            )
        try:
            with socket.create_connection((gateway.host, gateway.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    gateway.stop()
    raise GatewayStartError(
        f"hoopgw run did not accept connections on {gateway.host}:{gateway.port} within "
        f"{GATEWAY_START_TIMEOUT:.0f} s; stderr:\n{gateway.stderr_text()}"
    )


class _GatewayLauncher:
    """Starts ``hoopgw run`` processes, each in its own folder under ``folder``, and stops them
    all at the end (the runner behind the gateway factory fixtures)."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix
        self.started: list[RunningGateway] = []
        self._stores: list[str] = []

    def _store_for(self, config: dict[str, Any], workdir: Path) -> str:
        """The config's store URL; under ``HOOPGW_TEST_STORE=postgresql`` a SQLite store
        becomes a fresh PostgreSQL database (with an instance id and a local journal)."""
        gateway = config.setdefault("gateway", {})
        url = str(gateway.get("store", "sqlite:///./hoopgw.db"))
        if STORE_BACKEND != "postgresql" or not url.startswith("sqlite:"):
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                return "sqlite:///" + str((workdir / url.removeprefix("sqlite:///")).resolve())
            return url
        server = pgserver.address_from_env()
        name = f"hgw_store_{secrets.token_hex(6)}"
        with admin_connection(server) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._stores.append(name)
        url = f"postgresql://postgres@{server.host}:{server.port}/{name}"
        gateway.update(store=url, instance=f"{self.prefix}-{len(self.started)}")
        gateway.setdefault("journal_dir", str(workdir))
        return url

    def launch(self, document: Callable[[Path, int], Mapping[str, Any]]) -> RunningGateway:
        """Write ``document(workdir, port)`` (port: a free loopback one) as the config, start
        ``hoopgw run -c CONFIG``; return once the port accepts TCP connections."""
        workdir = self.folder / f"{self.prefix}-{len(self.started)}"
        workdir.mkdir()
        port = free_port()
        config_path = workdir / "hoopgw.toml"
        config = dict(document(workdir, port))
        store_url = self._store_for(config, workdir)
        config_path.write_text(tomli_w.dumps(config))
        stderr_path = workdir / "stderr.log"
        with (workdir / "stdout.log").open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [*HOOPGW_COMMAND, "run", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=workdir,
            )
        running = RunningGateway(
            host="127.0.0.1",
            port=port,
            config_path=config_path,
            process=process,
            stderr_path=stderr_path,
            store_url=store_url,
        )
        self.started.append(running)
        _wait_until_listening(running, time.monotonic() + GATEWAY_START_TIMEOUT)
        return running

    def stop_all(self) -> None:
        """Stop every gateway launched (SIGTERM, then kill); drop the stores made for them."""
        for running in self.started:
            running.stop()
        if self._stores:
            with admin_connection(pgserver.address_from_env()) as connection:
                for name in self._stores:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


def _pg_target(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue("pg_server")
    return f"{server.host}:{server.port}"


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Factory that starts ``hoopgw run`` on a generated config; returns a :class:`RunningGateway`.

    Call it as ``gateway(plugins=[...], allow_groups=[...], connection={...},
    gateway_options={...}, identity={...})`` (``identity`` is the ``[identity]`` table).

    Each call writes a config under ``tmp_path`` (SQLite store beside it, free loopback port,
    target = ``pg_server`` unless ``connection`` names one), starts ``hoopgw run -c CONFIG``
    and returns a :class:`RunningGateway` once the port accepts TCP connections. Every gateway
    started is stopped with SIGTERM at teardown.
    """
    launcher = _GatewayLauncher(tmp_path, "gateway")

    def start(
        *,
        plugins: Sequence[str] = (),
        allow_groups: Sequence[str] = ("agents",),
        connection: Mapping[str, Any] | None = None,
        gateway_options: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> RunningGateway:
        def document(workdir: Path, port: int) -> dict[str, Any]:
            config = gateway_config(
                store_path=workdir / "hoopgw.db",
                listen_port=port,
                target=(connection or {}).get("target") or _pg_target(request),
                plugins=plugins,
                allow_groups=allow_groups,
                connection=connection or {},
                gateway_options=gateway_options or {},
                roles=roles,
            )
            if identity:
                config["identity"] = dict(identity)
            return config

        return launcher.launch(document)

    try:
        yield start
    finally:
        launcher.stop_all()


@pytest.fixture
def gateway_document(
    tmp_path: Path,
) -> Iterator[Callable[[Callable[[Path, int], Mapping[str, Any]]], RunningGateway]]:
    """Factory that runs ``hoopgw run`` on a config of the test's own making:
    ``gateway_document(document)`` writes ``document(workdir, port)`` (``port``: a free one for
    the first listener) and returns the :class:`RunningGateway` once that port accepts TCP
    connections. For configs the other factories do not make (several connections, say);
    every gateway started is stopped at teardown."""
    launcher = _GatewayLauncher(tmp_path, "document-gateway")
    try:
        yield launcher.launch
    finally:
        launcher.stop_all()


@attrs.frozen(kw_only=True)
class GatewayLogin:
    """A running gateway, a database behind it, and an API key allowed to use it."""

    gateway: RunningGateway
    """The gateway process."""
    database: str
    """Database name the client asks for (passed through to the target)."""
    identity: str
    """Identity the key belongs to; also the user name clients log in with."""
    key: str
    """The API key secret, the client's password."""

    def conninfo(self, **overrides: Any) -> str:
        """libpq connection string through the gateway; ``overrides`` add or replace keys."""
        params: dict[str, Any] = {
            "host": self.gateway.host,
            "port": self.gateway.port,
            "user": self.identity,
            "password": self.key,
            "dbname": self.database,
            "sslmode": "disable",
            **overrides,
        }
        return " ".join(f"{k}={_conninfo_value(v)}" for k, v in params.items())

    def env(self) -> dict[str, str]:
        """Environment for libpq command-line tools (psql, pgbench) to go through the gateway."""
        return {
            **os.environ,
            "PGHOST": self.gateway.host,
            "PGPORT": str(self.gateway.port),
            "PGUSER": self.identity,
            "PGPASSWORD": self.key,
            "PGDATABASE": self.database,
            "PGSSLMODE": "disable",
        }


def _conninfo_value(value: Any) -> str:
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture
def recorded_gateway(
    request: pytest.FixtureRequest, gateway: Callable[..., RunningGateway], pg_database: str
) -> GatewayLogin:
    """A gateway with the recording plugin and no client TLS in front of ``pg_database``, and a
    key for identity ``agent`` in group ``agents``. Parametrize it indirectly with a dict of
    ``[gateway]`` options to set them."""
    running = gateway(
        plugins=["recording"],
        connection={"client_tls": "disabled"},
        gateway_options=getattr(request, "param", None),
    )
    key = running.create_key("agent", ["agents"])
    return GatewayLogin(gateway=running, database=pg_database, identity="agent", key=key)


@attrs.frozen(kw_only=True)
class WireMessage:
    """One PostgreSQL backend message as a raw client received it."""

    type: bytes
    """The one-byte message type, e.g. ``b"E"``."""
    body: bytes
    """The message after its length word."""

    def fields(self) -> dict[str, str]:
        """The fields of an ErrorResponse or NoticeResponse, keyed by their one-letter code."""
        parts = self.body.rstrip(b"\0").split(b"\0")
        return {p[:1].decode(): p[1:].decode("utf-8", "replace") for p in parts if p}


class WireClient:
    """A minimal PostgreSQL frontend on a plain socket that keeps every byte it received.

    It speaks just enough (startup, cleartext password, simple query) to check what the gateway
    sends back byte for byte, which libpq-based clients hide (they drop the SQLSTATE of a failed
    login, for one).
    """

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.received = bytearray()
        """Everything the server sent so far."""

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def _read_exactly(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        self.received += data
        return bytes(data)

    def receive(self) -> WireMessage | None:
        """Read one message; None when the server closed the connection."""
        header = self._read_exactly(5)
        if header is None:
            return None
        kind, length = header[:1], int.from_bytes(header[1:], "big")
        body = self._read_exactly(length - 4)
        if body is None:
            return None
        return WireMessage(type=kind, body=body)

    def receive_until(self, *types: bytes) -> list[WireMessage]:
        """Read messages up to and including the first of ``types``, or until the close."""
        messages = []
        while (message := self.receive()) is not None:
            messages.append(message)
            if message.type in types:
                break
        return messages

    def login(self, *, user: str, database: str, password: str) -> list[WireMessage]:
        """Send a startup message, answer a cleartext password request; return the messages
        up to ReadyForQuery or the first error."""
        params = (
            b"".join(
                k.encode() + b"\0" + v.encode() + b"\0"
                for k, v in (("user", user), ("database", database))
            )
            + b"\0"
        )
        self.send((len(params) + 8).to_bytes(4, "big") + (3 << 16).to_bytes(4, "big") + params)
        messages = self.receive_until(b"R", b"E")
        if (
            messages
            and messages[-1].type == b"R"
            and messages[-1].body[:4] == (3).to_bytes(4, "big")
        ):
            secret = password.encode() + b"\0"
            self.send(b"p" + (len(secret) + 4).to_bytes(4, "big") + secret)
            messages += self.receive_until(b"Z", b"E")
        return messages

    def query(self, text: str) -> list[WireMessage]:
        """Run a simple query; return the messages up to ReadyForQuery."""
        payload = text.encode() + b"\0"
        self.send(b"Q" + (len(payload) + 4).to_bytes(4, "big") + payload)
        return self.receive_until(b"Z")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    @staticmethod
    def first_error(messages: Sequence[WireMessage]) -> dict[str, str]:
        """The fields of the first ErrorResponse in ``messages``; fails if there is none."""
        for message in messages:
            if message.type == b"E":
                return message.fields()
        raise AssertionError(f"no ErrorResponse among {[m.type for m in messages]}")


@pytest.fixture
def wire_client() -> Iterator[Callable[[str, int], WireClient]]:
    """Factory of :class:`WireClient` connections (``wire_client(host, port)``), closed at
    teardown."""
    opened: list[WireClient] = []

    def connect(host: str, port: int) -> WireClient:
        client = WireClient(host, port)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> Any:
    """A throwaway CA and a server certificate for ``localhost``/``127.0.0.1``
    (``.ca_cert``, ``.server_cert``, ``.server_key``: PEM paths under ``tmp_path``)."""
    folder = tmp_path / "tls"
    folder.mkdir()
    return _load_certs().write_tls_files(folder)


oidcissuer = _load_helper("hoopgw_tests_oidcissuer", "oidcissuer.py")
ldapserver = _load_helper("hoopgw_tests_ldapserver", "ldapserver.py")
# The approval tests' admin API client, shared by the PostgreSQL, MySQL and TLS tests.
_load_helper("hoopgw_tests_approvals_helpers", "approvals_helpers.py")
# A store thread pool that runs when the test says so, for store calls and the approvals world.
_load_helper("hoopgw_tests_slow_pool", "slow_pool.py", folder="hoopgw/store")
# The approval services' unit-test world, shared by test_reviews.py and test_grants.py.
_load_helper("hoopgw_tests_approvals_world", "world.py", folder="hoopgw/approvals")
# The SSH channel fakes, shared by the SSH tests and the shell line judge's.
_load_helper("hoopgw_tests_ssh_fakes", "fakes.py", folder="protocols/ssh")
# The guardrails SQL corpora's loading, shared by the PostgreSQL and MySQL dialect tests.
_load_helper("hoopgw_tests_corpus", "corpus.py", folder="plugins/guardrails")
# Every PostgreSQL statement of the tests, and the facts the analysis gives each.
_load_helper("hoopgw_tests_pg_statements", "statements.py", folder="protocols/postgres")


@pytest.fixture
def oidc_issuer(tls_files: Any) -> Iterator[Any]:
    """A test OIDC issuer (``tests/integration/oidcissuer.py``) serving discovery and JWKS over
    HTTPS on loopback with the ``tls_files`` certificate; stopped at teardown."""
    issuer = oidcissuer.TestIssuer()
    issuer.serve(tls_files.server_cert, tls_files.server_key)
    try:
        yield issuer
    finally:
        issuer.stop()


def _load_sshserver() -> ModuleType:
    return _load_helper("hoopgw_tests_sshserver", "sshserver.py")


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[Any]:
    """A real sshd on a free loopback port (see ``tests/integration/sshserver.py``); skips
    when sshd cannot run here, but fails under ``CI=true``."""
    sshserver = _load_sshserver()
    missing = sshserver.available()
    if missing is not None:
        _missing(missing)
    server = sshserver.start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_gateway(ssh_server: Any, tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Factory like ``gateway`` for one ``ssh`` connection named ``ssh`` in front of
    ``ssh_server``, logging in with its authorized key: ``ssh_gateway(plugins=[...],
    ssh={...}, connection={...})`` (``ssh`` overrides keys of ``[connections.ssh]``)."""
    launcher = _GatewayLauncher(tmp_path, "ssh-gateway")

    def start(
        *,
        plugins: Sequence[str] = (),
        allow_groups: Sequence[str] = ("agents",),
        ssh: Mapping[str, Any] | None = None,
        connection: Mapping[str, Any] | None = None,
        gateway_options: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
    ) -> RunningGateway:
        def document(workdir: Path, port: int) -> dict[str, Any]:
            return {
                "gateway": {
                    "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                    **(gateway_options or {}),
                },
                "connections": [
                    {
                        "name": "ssh",
                        "protocol": "ssh",
                        "listen": f"tcp:{port}:interface=127.0.0.1",
                        "target": ssh_server.target,
                        "allow_groups": list(allow_groups),
                        "plugins": list(plugins),
                        "credential": {
                            "user": ssh_server.user,
                            "private_key": f"file:{ssh_server.client_key}",
                        },
                        "ssh": {"known_hosts": str(ssh_server.known_hosts), **(ssh or {})},
                        **(connection or {}),
                    }
                ],
                **({"roles": {k: list(v) for k, v in roles.items()}} if roles else {}),
            }

        return launcher.launch(document)

    try:
        yield start
    finally:
        launcher.stop_all()


# -- HTTP ------------------------------------------------------------------------------------

httpserver = _load_helper("hoopgw_tests_httpserver", "httpserver.py")
HTTP_TARGET_TOKEN = "target-secret-token-0123456789"
"""The bearer token the ``http_gateway`` presents to the ``http_server``."""


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Any]:
    """The test API (``httpserver.py``) over plain HTTP on a free loopback port."""
    server = httpserver.start(tmp_path / "http-server")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Factory like ``gateway`` for one ``http`` connection named ``api`` in front of an
    ``httpserver.HttpServer``: ``http_gateway(server, plugins=[...], http={...},
    connection={...}, identity={...})`` (``http`` adds keys to ``[connections.http]``,
    ``identity`` is the ``[identity]`` table). The gateway presents :data:`HTTP_TARGET_TOKEN`
    as a bearer token (``auth = "bearer"``) unless ``http`` says otherwise; an HTTPS server's
    CA is trusted (``verify-full``)."""
    launcher = _GatewayLauncher(tmp_path, "http-gateway")

    def start(
        server: Any,
        *,
        plugins: Sequence[str] = (),
        allow_groups: Sequence[str] = ("agents",),
        http: Mapping[str, Any] | None = None,
        connection: Mapping[str, Any] | None = None,
        gateway_options: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> RunningGateway:
        def document(workdir: Path, port: int) -> dict[str, Any]:
            token_file = workdir / "target-token"
            token_file.write_text(HTTP_TARGET_TOKEN)
            upstream_tls: dict[str, Any] = {"sslmode": "disable"}
            if server.tls is not None:
                upstream_tls = {
                    "sslmode": "verify-full",
                    "ca_file": str(server.tls.ca_cert),
                    "server_name": "localhost",
                }
            return {
                "gateway": {
                    "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                    **(gateway_options or {}),
                },
                "connections": [
                    {
                        "name": "api",
                        "protocol": "http",
                        "listen": f"tcp:{port}:interface=127.0.0.1",
                        "target": f"127.0.0.1:{server.port}",
                        "allow_groups": list(allow_groups),
                        "plugins": list(plugins),
                        "credential": {"user": "svc", "password": f"file:{token_file}"},
                        "upstream_tls": upstream_tls,
                        "http": {"auth": "bearer", **(http or {})},
                        **(connection or {}),
                    }
                ],
                **({"roles": {k: list(v) for k, v in roles.items()}} if roles else {}),
                **({"identity": dict(identity)} if identity else {}),
            }

        return launcher.launch(document)

    try:
        yield start
    finally:
        launcher.stop_all()


# -- MySQL / MariaDB -------------------------------------------------------------------------

mysqlserver = _load_helper("hoopgw_tests_mysqlserver", "mysqlserver.py")


@pytest.fixture(scope="session")
def mysql_server() -> Any:
    """The address (``.host``, ``.port``) of the real MariaDB/MySQL server, user ``root``
    without a password (``HOOPGW_TEST_MYHOST``/``HOOPGW_TEST_MYPORT``); skips when none
    answers, but fails under ``CI=true``."""
    return _answering_server(mysqlserver, "MariaDB", "HOOPGW_TEST_MYHOST/HOOPGW_TEST_MYPORT")


def mysql_admin(server: Any, **options: Any) -> Any:
    """A PyMySQL connection as ``root`` (autocommit)."""
    import pymysql

    return pymysql.connect(
        host=server.host, port=server.port, user="root", autocommit=True, **options
    )


@attrs.frozen(kw_only=True)
class MySQLDatabase:
    """A fresh database and a user with a password that owns it."""

    server: Any
    """The server's address."""
    name: str
    """The database name."""
    user: str
    """A user with every privilege on the database (the gateway's stored credential)."""
    password: str
    """That user's password."""


@pytest.fixture
def mysql_database(mysql_server: Any) -> Iterator[MySQLDatabase]:
    """Create database and user ``hgw_<random>`` (password random, all privileges on the
    database); drop both afterwards."""
    name = f"hgw_{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    with mysql_admin(mysql_server) as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
        cursor.execute(f"GRANT ALL ON `{name}`.* TO '{name}'@'%'")
    try:
        yield MySQLDatabase(server=mysql_server, name=name, user=name, password=password)
    finally:
        with mysql_admin(mysql_server) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_gateway(
    gateway: Callable[..., RunningGateway], mysql_database: MySQLDatabase, tmp_path: Path
) -> Callable[..., RunningGateway]:
    """Factory like ``gateway`` for one ``mysql`` connection in front of ``mysql_database``,
    logging in as its user (the password is passed as a ``file:`` reference).
    ``connection`` adds or overrides keys as with ``gateway``."""
    secret = tmp_path / f"mysql-password-{mysql_database.name}"
    secret.write_text(mysql_database.password)
    secret.chmod(0o600)
    server = mysql_database.server

    def start(*, connection: Mapping[str, Any] | None = None, **options: Any) -> RunningGateway:
        settings: dict[str, Any] = {
            "name": "my",
            "protocol": "mysql",
            "target": f"{server.host}:{server.port}",
            "credential": {"user": mysql_database.user, "password": f"file:{secret}"},
            **(connection or {}),
        }
        return gateway(connection=settings, **options)

    return start
