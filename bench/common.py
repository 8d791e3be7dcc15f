"""What the benchmark scripts share: their error, endpoints, free ports, running tools, and
running servers (a private ``hoopgw run`` among them) for the length of a block."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w

HOOPGW = (sys.executable, "-m", "hoopgw")
"""The command that runs hoopgw from this environment."""
PLUGINS: dict[str, dict[str, dict[str, Any]]] = {
    "hoopgw": {"recording": {}},
    "hoopgw-bare": {},
    "hoopgw-guardrails": {"recording": {}, "guardrails": {"preset": "agent-readonly"}},
}
"""The gateway targets the throughput comparisons run, each with its plugins in order and their
options: ``hoopgw`` with ``recording``; ``hoopgw-bare`` with none, to separate the proxy's own
cost from the write-ahead audit's; ``hoopgw-guardrails`` with ``recording`` and ``guardrails``
(preset ``agent-readonly``), to show what judging each statement adds."""
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 10.0


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and holds the tool's output."""


@attrs.frozen(kw_only=True)
class Endpoint:
    """Where the benchmark's client connects for one target."""

    target: str
    """``direct``, ``pgbouncer``, ``hoopgw``..."""
    host: str
    """Host to connect to."""
    port: int
    """Port to connect to."""
    user: str
    """User name the client logs in as."""
    password: str | None = None
    """Password (hoopgw: the API key)."""
    processes: Mapping[str, int] = attrs.field(factory=dict)
    """Processes serving this target whose CPU time a run measures, by role (hoopgw:
    ``reactor``, the gateway, and ``writer``, its audit writer process)."""


@attrs.frozen(kw_only=True)
class RunningGateway:
    """A ``hoopgw run`` started by :func:`running_gateway`."""

    key: str
    """The API key made for the bench identity."""
    processes: Mapping[str, int]
    """``reactor``: the gateway's pid; ``writer``: its audit writer's, when it has one."""


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds a process has used so far; None where ``/proc`` cannot
    tell (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (Linux ``/proc``; empty where it cannot tell)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def program(name: str) -> str:
    """Return the path of an installed program (``/usr/sbin`` included).

    :raises BenchError: it is not installed.
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        raise BenchError(f"{name} is not installed (./dev setup installs it as root)")
    return found


def run_tool(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float) -> str:
    """Run a tool to completion; return its stdout.

    :raises BenchError: it exited non-zero; the message holds its output.
    """
    completed = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited with {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed.stdout


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    *,
    name: str,
    port: int,
    log_path: Path,
    user: str | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends, once its port accepts TCP connections.

    :raises BenchError: it exited or did not listen within ``SERVER_START_TIMEOUT`` (60 s: a
        gateway starts slowly on a loaded machine); the message holds its log.
    """
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, user=user, cwd=cwd
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    f"{name} did not start listening on 127.0.0.1:{port}; log:\n"
                    + log_path.read_text(errors="replace")
                )
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_gateway(
    document: Mapping[str, Any], *, workdir: Path, port: int, identity: str, group: str
) -> Iterator[RunningGateway]:
    """Write ``document`` as ``workdir/hoopgw.toml``, create an API key for ``identity`` in
    ``group``, and run ``hoopgw run`` (listening on ``port``) until the block ends; yield the
    key and the processes. With ``[gateway] workers`` above 1, the block starts once every
    worker is ready (the parent binds the port before they are).

    :raises BenchError: the key could not be created or the gateway did not start.
    """
    config = workdir / "hoopgw.toml"
    config.write_text(tomli_w.dumps(document))
    key = run_tool(
        [*HOOPGW, "keys", "create", "--identity", identity, "--group", group, "-c", str(config)],
        timeout=60,
    ).strip()
    with running_server(
        [*HOOPGW, "run", "-c", str(config)],
        name="hoopgw",
        port=port,
        log_path=workdir / "stderr.log",
        cwd=workdir,
    ) as process:
        workers = int(document.get("gateway", {}).get("workers", 1))
        if workers > 1:
            yield RunningGateway(key=key, processes=_workers_ready(process, workdir, workers))
            return
        processes = {"reactor": process.pid}
        # The audit writer is the gateway's one child, started before it listens.
        for child in child_pids(process.pid)[:1]:
            processes["writer"] = child
        yield RunningGateway(key=key, processes=processes)


def _workers_ready(process: subprocess.Popen[bytes], workdir: Path, workers: int) -> dict[str, int]:
    """Wait until the ``workers`` workers of a gateway say they are ready; return its processes
    by role: ``parent``, ``writer`` (the audit writer, the parent's child) and ``worker1``..."""
    log_path = workdir / "stderr.log"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while log_path.read_text(errors="replace").count("hoopgw ready") < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(
                f"hoopgw's {workers} workers did not get ready; log:\n"
                + log_path.read_text(errors="replace")
            )
        time.sleep(0.1)
    processes = {"parent": process.pid}
    others = []
    for child in child_pids(process.pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"hoopgw.audit.process" in command:
            processes["writer"] = child
        else:
            others.append(child)
    for index, child in enumerate(sorted(others), start=1):
        processes[f"worker{index}"] = child
    return processes
