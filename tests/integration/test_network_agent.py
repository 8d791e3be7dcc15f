"""Sessions through gateway -> network agent -> target, with the targets in a network namespace
the gateway's side cannot reach.

Each test makes its own namespace and veth pair (unique names, removed at teardown even when the
test fails): the gateway runs in the machine's namespace and listens for agents on the veth
address; ``hoopgw agent`` runs inside the namespace. The targets (the machine's PostgreSQL,
MariaDB and a test sshd) are put inside the namespace by socat forwarders: a UNIX socket in the
machine's namespace, and a TCP port on the *namespace's* loopback that forwards to it. That port
is what the connections name as target; on the machine's loopback nothing listens there, which
each test asserts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from tests.conftest import HOOPGW_COMMAND, RunningGateway, free_port, mysql_admin

pytestmark = pytest.mark.integration

AGENT = "edge"
WAIT = 20.0
"""Seconds any one thing may take to happen."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _wait_for(what: str, check: Callable[[], bool], *, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@attrs.define
class PrivateNetwork:
    """A network namespace joined to the machine's by a veth pair."""

    namespace: str
    gateway_address: str
    """The machine's end of the veth pair (where the gateway listens for agents)."""
    folder: Path
    processes: list[subprocess.Popen[Any]] = attrs.Factory(list)
    forwards: int = 0

    def popen(
        self, *argv: str, log: Path | None = None, inside: bool = True
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace (or outside it); stopped at teardown."""
        command = ["ip", "netns", "exec", self.namespace, *argv] if inside else list(argv)
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def reachable_inside(self, host: str, port: int) -> bool:
        """Whether a TCP connection to ``host:port`` succeeds from inside the namespace."""
        probe = f"import socket; socket.create_connection(({host!r}, {port}), 1).close()"
        return (
            _run("ip", "netns", "exec", self.namespace, sys.executable, "-c", probe).returncode == 0
        )

    def forward(self, host: str, port: int) -> int:
        """A port on the namespace's loopback forwarding to ``host:port`` of the machine's
        namespace; nothing listens on it on the machine's loopback."""
        self.forwards += 1
        sock = self.folder / f"forward-{self.forwards}.sock"
        self.popen("socat", f"UNIX-LISTEN:{sock},fork,mode=600", f"TCP:{host}:{port}", inside=False)
        _wait_for(f"{sock} to exist", sock.exists)
        inner = free_port()
        self.popen(
            "socat", f"TCP-LISTEN:{inner},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"
        )
        _wait_for(
            f"port {inner} inside the namespace", lambda: self.reachable_inside("127.0.0.1", inner)
        )
        return inner

    def cut_agent_connections(self, port: int) -> None:
        """Abort the agent's TCP connections to the gateway (``ss -K``, inside the namespace)."""
        done = _run(
            "ip",
            "netns",
            "exec",
            self.namespace,
            "ss",
            "-K",
            "dst",
            self.gateway_address,
            "dport",
            "=",
            f":{port}",
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture
def private_network(tmp_path: Path) -> Iterator[PrivateNetwork]:
    """A fresh namespace ``hgw<random>`` with a /30 on a veth pair; skips when namespaces cannot
    be made here."""
    for program in ("ip", "ss", "socat"):
        if shutil.which(program) is None:
            pytest.skip(f"needs {program} (./dev setup installs iproute2 and socat)")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = secrets.token_hex(4)
    namespace, outside, inside = f"hgw{tag}", f"hgw{tag}o", f"hgw{tag}i"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    created = _run("ip", "netns", "add", namespace)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    network = PrivateNetwork(namespace=namespace, gateway_address=f"{subnet}.1", folder=tmp_path)
    try:
        steps = [
            ("ip", "link", "add", outside, "type", "veth", "peer", "name", inside),
            ("ip", "link", "set", inside, "netns", namespace),
            ("ip", "addr", "add", f"{subnet}.1/30", "dev", outside),
            ("ip", "link", "set", outside, "up"),
            (
                "ip",
                "netns",
                "exec",
                namespace,
                "ip",
                "addr",
                "add",
                f"{subnet}.2/30",
                "dev",
                inside,
            ),
            ("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "up"),
            ("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                pytest.skip(
                    f"cannot set up the veth pair ({' '.join(step)}): {done.stderr.strip()}"
                )
        yield network
    finally:
        for process in reversed(network.processes):
            _stop(process)
        _run("ip", "link", "del", outside)
        _run("ip", "netns", "del", namespace)


@attrs.define
class Setup:
    """A gateway with connections through the agent, and the agent's process."""

    network: PrivateNetwork
    gateway: RunningGateway
    agent_port: int
    ports: dict[str, int]
    """Each connection's listener port, by connection name."""
    agent_log: Path
    agent: subprocess.Popen[Any] | None = None

    def start_agent(self) -> None:
        """Run ``hoopgw agent`` inside the namespace."""
        config = self.gateway.config_path.parent / "agent.toml"
        self.agent = self.network.popen(
            *HOOPGW_COMMAND, "agent", "-c", str(config), log=self.agent_log
        )

    def online_count(self) -> int:
        """How often the gateway logged the agent coming online."""
        return self.gateway.stderr_text().count(f"agent {AGENT} online")

    def agent_text(self) -> str:
        return self.agent_log.read_text(errors="replace") if self.agent_log.exists() else ""


@pytest.fixture
def through_agent(
    private_network: PrivateNetwork,
    gateway_document: Callable[..., RunningGateway],
    pg_server: Any,
    mysql_database: Any,
    ssh_server: Any,
    tls_files: Any,
    tmp_path: Path,
) -> Iterator[Setup]:
    """The gateway (connections ``pg``, ``my``, ``ssh`` and ``pg-denied`` via the agent) and the
    agent's config; the test starts the agent."""
    net = private_network
    targets = {
        "pg": net.forward(pg_server.host, pg_server.port),
        "my": net.forward(mysql_database.server.host, mysql_database.server.port),
        "ssh": net.forward("127.0.0.1", int(ssh_server.target.rpartition(":")[2])),
        "pg-denied": net.forward(pg_server.host, pg_server.port),
    }
    # The gateway's namespace cannot reach any of them: only the agent can.
    for port in targets.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    key_line = ssh_server.known_hosts.read_text().split(maxsplit=1)[1]
    known_hosts = tmp_path / "target_known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{targets['ssh']} {key_line}")
    my_secret = tmp_path / "my-password"
    my_secret.write_text(mysql_database.password)
    my_secret.chmod(0o600)
    agent_port = free_port(net.gateway_address)
    ports = {name: free_port() for name in ("my", "ssh", "pg-denied", "pg-guarded")}
    targets["pg-guarded"] = targets["pg"]

    def document(workdir: Path, port: int) -> dict[str, Any]:
        ports["pg"] = port

        def connection(name: str, protocol: str, credential: dict[str, str]) -> dict[str, Any]:
            return {
                "name": name,
                "protocol": protocol,
                "listen": f"tcp:{ports[name]}:interface=127.0.0.1",
                "target": f"127.0.0.1:{targets[name]}",
                "via": AGENT,
                "allow_groups": ["dev"],
                "credential": credential,
            }

        ssh = connection(
            "ssh", "ssh", {"user": ssh_server.user, "private_key": f"file:{ssh_server.client_key}"}
        )
        ssh["ssh"] = {"known_hosts": str(known_hosts)}
        return {
            "gateway": {
                "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                "tls_cert": str(tls_files.server_cert),
                "tls_key": str(tls_files.server_key),
                "agent_listen": f"tcp:{agent_port}:interface={net.gateway_address}",
            },
            "connections": [
                connection("pg", "postgres", {"user": "postgres"}),
                connection(
                    "my", "mysql", {"user": mysql_database.user, "password": f"file:{my_secret}"}
                ),
                ssh,
                connection("pg-denied", "postgres", {"user": "postgres"}),
                {
                    **connection("pg-guarded", "postgres", {"user": "postgres"}),
                    "plugins": ["guardrails"],
                    "guardrails": {
                        "preset": "agent-readonly",
                        "catalog_user": "postgres",
                        "catalog_sslmode": "disable",
                    },
                },
            ],
        }

    gateway = gateway_document(document)
    created = gateway.cli("agents", "create", AGENT)
    assert created.returncode == 0, created.stderr
    folder = gateway.config_path.parent
    (folder / "agent.token").write_text(created.stdout)
    (folder / "agent.token").chmod(0o600)
    allow = ", ".join(f'"127.0.0.1:{targets[n]}"' for n in ("pg", "my", "ssh"))
    (folder / "agent.toml").write_text(
        "[agent]\n"
        f'gateway = "{net.gateway_address}:{agent_port}"\n'
        'token = "file:agent.token"\n'
        f'ca_file = "{tls_files.ca_cert}"\n'
        'server_name = "localhost"\n'
        f"allow = [{allow}]\n"
        "backoff_max = 1\n"
    )
    yield Setup(
        network=net,
        gateway=gateway,
        agent_port=agent_port,
        ports=ports,
        agent_log=tmp_path / "agent.log",
    )


def _pg(setup: Setup, key: str, name: str = "pg") -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=setup.ports[name],
        user="alice",
        password=key,
        dbname="postgres",
        connect_timeout=10,
    )


def _mysql(setup: Setup, key: str, database: str, sql: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "mysql",
            "--host=127.0.0.1",
            f"--port={setup.ports['my']}",
            "--user=alice",
            f"--password={key}",
            "--batch",
            "--skip-ssl",
            database,
            "-e",
            sql,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ssh(setup: Setup, client_key: Path, folder: Path, command: str) -> subprocess.Popen[str]:
    host_key = setup.gateway.config_path.parent / "ssh.ssh_host_ed25519_key"
    public = _run("ssh-keygen", "-y", "-f", str(host_key)).stdout.split()
    known_hosts = folder / "gateway_known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{setup.ports['ssh']} {public[0]} {public[1]}\n")
    return subprocess.Popen(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(setup.ports["ssh"]),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-i",
            str(client_key),
            "-o",
            "ConnectTimeout=10",
            "alice@127.0.0.1",
            command,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _logins(setup: Setup, client_key: Path) -> str:
    key = setup.gateway.create_key("alice", ["dev"])
    added = setup.gateway.cli(
        "keys",
        "add-ssh",
        "--identity",
        "alice",
        "--group",
        "dev",
        "--public-key",
        f"{client_key}.pub",
    )
    assert added.returncode == 0, added.stderr
    return key


def test_psql_mysql_and_ssh_through_the_agent(
    through_agent: Setup, mysql_database: Any, client_key: Path, tmp_path: Path
) -> None:
    setup = through_agent
    key = _logins(setup, client_key)
    # Before the agent is up, sessions are refused with a message that says so.
    with pytest.raises(psycopg.OperationalError, match=f"agent '{AGENT}' is offline"):
        _pg(setup, key)

    setup.start_agent()
    _wait_for("the agent to come online", lambda: setup.online_count() == 1)
    listed = setup.gateway.cli("agents", "list", "--json")
    assert '"status": "online"' in listed.stdout, listed

    psql = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(setup.ports["pg"]),
            "-U",
            "alice",
            "-d",
            "postgres",
            "-Atc",
            "SELECT 'through ' || 'the agent', count(*) FROM generate_series(1, 100000)",
        ],
        env={**os.environ, "PGPASSWORD": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert psql.returncode == 0, (psql.stderr, setup.gateway.stderr_text(), setup.agent_text())
    assert psql.stdout.strip() == "through the agent|100000"

    with _pg(setup, key) as conn:
        # A large result crosses the agent intact (flow control, many frames).
        row = conn.execute(
            "SELECT md5(string_agg(repeat('x', 1000), '')) FROM generate_series(1, 20000)"
        ).fetchone()
        expected = conn.execute("SELECT md5(repeat(repeat('x', 1000), 20000))").fetchone()
        assert row == expected

    mysql = _mysql(setup, key, mysql_database.name, "SELECT CONCAT('my', 'sql') AS v")
    out, err = mysql.communicate(timeout=60)
    assert mysql.returncode == 0, (err, setup.gateway.stderr_text())
    assert "mysql" in out.splitlines()

    ssh = _ssh(setup, client_key, tmp_path, "echo through-ssh; exit 4")
    out, err = ssh.communicate(timeout=60)
    assert out == "through-ssh\n", (err, setup.gateway.stderr_text(), setup.agent_text())
    assert ssh.returncode == 4


def test_plugins_read_the_targets_catalog_through_the_agent(
    through_agent: Setup, client_key: Path, pg_server: Any, pg_database: str
) -> None:
    setup = through_agent
    key = _logins(setup, client_key)
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", dbname=pg_database
    ) as c:
        c.execute(
            "CREATE FUNCTION agent_count() RETURNS int STABLE RETURN 5;"
            "CREATE TABLE agent_canary (id int);"
            "CREATE FUNCTION agent_wipe() RETURNS int VOLATILE LANGUAGE sql"
            " AS 'DELETE FROM agent_canary; SELECT 0'"
        )
    setup.start_agent()
    _wait_for("the agent to come online", lambda: setup.online_count() == 1)
    # guardrails judges a user function by what the target's catalog says: its side
    # connection for that goes through the agent too (directly, it could not reach the target).
    with psycopg.connect(
        host="127.0.0.1",
        port=setup.ports["pg-guarded"],
        user="alice",
        password=key,
        dbname=pg_database,
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT agent_count()").fetchone() == (5,)
        with pytest.raises(psycopg.Error, match="opaque-code"):
            conn.execute("SELECT agent_wipe()")


def test_a_target_off_the_allow_list_is_refused(through_agent: Setup, client_key: Path) -> None:
    setup = through_agent
    key = _logins(setup, client_key)
    setup.start_agent()
    _wait_for("the agent to come online", lambda: setup.online_count() == 1)
    with pytest.raises(psycopg.OperationalError) as refused:
        _pg(setup, key, "pg-denied")
    assert "is not on the agent's allow-list" in str(refused.value)
    assert f"agent '{AGENT}' could not open" in str(refused.value)
    _wait_for("the agent to log the refusal", lambda: "refused a stream to" in setup.agent_text())
    assert "not on the agent's allow-list" in setup.gateway.stderr_text()
    # The allowed connection still works; stopping the gateway ends it with the gateway's
    # goodbye (not the loss of the agent, whose connection closes after the sessions).
    conn = _pg(setup, key)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    setup.gateway.stop()
    with pytest.raises(psycopg.OperationalError, match="gateway stopping"):
        conn.execute("SELECT 2")
    conn.close()
    assert "lost its connection to the gateway" not in setup.gateway.stderr_text()


def test_losing_the_agent_connection_ends_its_sessions_and_it_reconnects(
    through_agent: Setup, mysql_database: Any, pg_server: Any, client_key: Path, tmp_path: Path
) -> None:
    setup = through_agent
    key = _logins(setup, client_key)
    setup.start_agent()
    _wait_for("the agent to come online", lambda: setup.online_count() == 1)

    psql = subprocess.Popen(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(setup.ports["pg"]),
            "-U",
            "alice",
            "-d",
            "postgres",
            "-c",
            "SELECT pg_sleep(60)",
        ],
        env={**os.environ, "PGPASSWORD": key},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    mysql = _mysql(setup, key, mysql_database.name, "SELECT SLEEP(60)")
    ssh = _ssh(setup, client_key, tmp_path, "sleep 60")

    # Each session is running its command on the target (seen from the target's side).
    def running(sql: str, query: str, **connect: Any) -> Callable[[], bool]:
        def check() -> bool:
            if "mysql" in connect:
                with mysql_admin(connect["mysql"]) as admin, admin.cursor() as cursor:
                    cursor.execute(query)
                    return any(sql in str(row) for row in cursor.fetchall())
            with psycopg.connect(**connect, user="postgres", dbname="postgres") as admin:
                return any(sql in str(row) for row in admin.execute(query).fetchall())

        return check

    _wait_for(
        "psql's statement",
        running(
            "pg_sleep(60)",
            "SELECT query FROM pg_stat_activity",
            host=pg_server.host,
            port=pg_server.port,
        ),
    )
    _wait_for(
        "mysql's statement",
        running("SLEEP(60)", "SHOW FULL PROCESSLIST", mysql=mysql_database.server),
    )
    _wait_for("the ssh channel", lambda: "opening channel" in setup.gateway.stderr_text())
    _wait_for("three streams", lambda: setup.agent_text().count("open to 127.0.0.1") >= 3)

    setup.network.cut_agent_connections(setup.agent_port)
    outputs = {}
    for name, process in (("psql", psql), ("mysql", mysql), ("ssh", ssh)):
        out, err = process.communicate(timeout=WAIT)
        outputs[name] = (process.returncode, out + err)
    reason = f"agent '{AGENT}' lost its connection to the gateway"
    assert reason in outputs["psql"][1], outputs
    assert outputs["psql"][0] != 0
    assert reason in outputs["mysql"][1], outputs
    assert reason in outputs["ssh"][1], outputs
    assert f"agent {AGENT} offline" in setup.gateway.stderr_text()

    # The agent dials again by itself, and new sessions work.
    _wait_for("the agent to come back", lambda: setup.online_count() == 2)
    assert "connection to the gateway lost" in setup.agent_text()
    with _pg(setup, key) as conn:
        assert conn.execute("SELECT 'back'").fetchone() == ("back",)
