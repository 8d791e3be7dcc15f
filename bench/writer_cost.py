"""What the audit writer process spends per pgbench ``-S`` transaction, without pgbench.

The real writer process (``python -m hoopgw.audit.process``, a SQLite store in a temporary
folder) is fed, over its stdin pipe, the lines the gateway's ``recording`` plugin sends for
pgbench ``-S`` transactions of ``--clients`` sessions: each session's ``session_started``, then
per statement a write-ahead ``command_received`` and, joined to the next write as the gateway
joins records of what already happened, the previous statement's compact
``command_completed`` (its verdict with it), and at the end the last completions and each
``session_closed``. ``--batch`` statements go in one pipe write, whose ``ok`` the feeder waits
for before the next (a closed loop, as the gateway's clients wait). The lines have the shape
and sizes of a real recording run's (``encode_entry`` of the same data).

What is measured is the writer process's own CPU: from ``ready`` to its exit (the store
appends of the last lines and its clean stop included), divided by the transactions. With
``--instructions`` it runs under ``valgrind --tool=callgrind`` twice (``--count`` and a quarter
of it) and reports the difference of the instruction counts per transaction, which a shared
machine does not disturb::

    .venv/bin/python bench/writer_cost.py                   # CPU us per transaction
    .venv/bin/python bench/writer_cost.py --instructions    # instructions per transaction
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence

from hoopgw.audit.writer import encode_entry
from hoopgw.records import AuditEntry

# bench/ is no package: the scripts import their neighbour as a top-level module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds

START_TIME = 1_765_000_000.0
STATEMENT_SECONDS = 0.000_31
"""Time between two statements in the records (about 3,200 transactions per second)."""
VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def session_id(number: int) -> str:
    """A session id shaped as the gateway's (a UUID4)."""
    return str(uuid.UUID(int=0x1AD6DF345A1B4BB4A7F6BA5508981000 + number, version=4))


def session_started(sid: str, now: float, port: int) -> AuditEntry:
    """The ``session_started`` record of a pgbench connection to the bench gateway."""
    return AuditEntry(
        kind="session_started",
        session_id=sid,
        time=now,
        data={
            "identity": "bench-agent",
            "groups": ["bench"],
            "method": "api-key",
            "credential_id": "970673950736",
            "client_address": f"127.0.0.1:{port}",
            "connection": "bench",
            "protocol": "postgres",
            "target": "127.0.0.1:5432",
            "client_tls": False,
            "upstream_tls": False,
            "started_at": now,
            "attributes": {
                "database": "hoopgw_bench",
                "application_name": "pgbench",
                "user": "bench-agent",
            },
        },
    )


def command_received(sid: str, seq: int, now: float, aid: int) -> AuditEntry:
    """The write-ahead record of one pgbench ``-S`` statement."""
    return AuditEntry(
        kind="command_received",
        session_id=sid,
        time=now,
        data={
            "seq": seq,
            "kind": "query",
            "text": f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
            "parameter_count": 0,
            "statement_name": "",
        },
    )


def command_completed(sid: str, seq: int, now: float, duration: float) -> AuditEntry:
    """The compact completion record of an allowed statement, its verdict with it."""
    return AuditEntry(
        kind="command_completed",
        session_id=sid,
        time=now,
        data={
            "seq": seq,
            "verdict": "allow",
            "reason": "",
            "plugin": "",
            "rule": "",
            "status": "ok",
            "rows": 1,
            "bytes": 66,
            "duration": duration,
            "error_code": "",
            "error_message": "",
        },
    )


def session_closed(sid: str, now: float) -> AuditEntry:
    """The record of a session's end."""
    return AuditEntry(
        kind="session_closed", session_id=sid, time=now, data={"reason": "client closed"}
    )


def batches(*, count: int, clients: int, batch: int) -> Iterator[bytes]:
    """The pipe writes of ``count`` transactions: ``batch`` statements each (their sessions'
    previous completions first), after one write per session start, and a last write with the
    last completions and the session ends."""
    sids = [session_id(n) for n in range(1, clients + 1)]
    now = START_TIME
    for number, sid in enumerate(sids):
        yield encode_entry(session_started(sid, now, 40000 + number))
        now += STATEMENT_SECONDS
    seqs = dict.fromkeys(sids, 0)
    statement = 0
    while statement < count:
        lines = []
        for _ in range(min(batch, count - statement)):
            sid = sids[statement % clients]
            if seqs[sid]:
                duration = 0.0004 + (statement * 0.000_618_033_988_749_895) % 0.002
                lines.append(encode_entry(command_completed(sid, seqs[sid], now, duration)))
            seqs[sid] += 1
            aid = (statement * 7919) % 1_000_000 + 1
            lines.append(encode_entry(command_received(sid, seqs[sid], now, aid)))
            now += STATEMENT_SECONDS
            statement += 1
        yield b"".join(lines)
    lines = []
    for sid in sids:
        if seqs[sid]:
            lines.append(encode_entry(command_completed(sid, seqs[sid], now, 0.001)))
        lines.append(encode_entry(session_closed(sid, now)))
    yield b"".join(lines)


class WriterRun:
    """One run of the writer process; :attr:`cpu` and :attr:`instructions` once :meth:`run`
    returned."""

    def __init__(self, *, durability: str, wrap: Sequence[str] = ()) -> None:
        self.durability = durability
        self.wrap = tuple(wrap)
        self.cpu = 0.0
        """CPU seconds of the writer process from ``ready`` to its exit."""
        self.instructions: int | None = None
        """Instructions callgrind counted over the whole process (``wrap`` is valgrind)."""

    def run(self, writes: Sequence[bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="hoopgw-bench-writer-") as folder:
            argv = [
                *self.wrap,
                sys.executable,
                "-m",
                "hoopgw.audit.process",
                f"sqlite:///{folder}/store.db",
                "--durability",
                self.durability,
            ]
            child = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert child.stdin is not None and child.stdout is not None
            errors: list[bytes] = []
            reader = threading.Thread(target=lambda: errors.append(child.stderr.read()))  # type: ignore[union-attr]
            reader.start()
            # A wrapping profiler may say something first.
            while (line := child.stdout.readline()) != b"ready\n":
                if not line:
                    child.kill()
                    raise SystemExit(f"the writer process did not start: {b''.join(errors)!r}")
            at_ready = cpu_seconds(child.pid) or 0.0
            for write in writes:
                child.stdin.write(write)
                child.stdin.flush()
                lines = write.count(b"\n")
                answered = 0
                while answered < lines:
                    answer = child.stdout.readline()
                    if not answer.startswith(b"ok "):
                        raise SystemExit(f"the writer process answered {answer!r}")
                    answered += int(answer.split()[1])
            child.stdin.close()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            reader.join()
            if child.returncode != 0:
                raise SystemExit(f"the writer process failed: {b''.join(errors)!r}")
            self.cpu = usage.ru_utime + usage.ru_stime - at_ready
            found = re.search(rb"Collected : (\d+)", b"".join(errors))
            self.instructions = None if found is None else int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="transactions per run")
    parser.add_argument("--clients", type=int, default=8, help="sessions (pgbench -c)")
    parser.add_argument("--batch", type=int, default=3, help="statements per pipe write")
    parser.add_argument("--durability", choices=("os", "fsync"), default="os")
    parser.add_argument("--rounds", type=int, default=3, help="runs; the median is reported")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under callgrind: two runs, --count and --count / 4",
    )
    parser.add_argument(
        "--wrap",
        default="",
        metavar="COMMAND",
        help="run the writer process under this command (a profiler: 'py-spy record -o F --')",
    )
    args = parser.parse_args(argv)
    shape = dict(clients=args.clients, batch=args.batch)
    if args.instructions:
        small = args.count // 4
        counts = []
        for count in (small, args.count):
            run = WriterRun(durability=args.durability, wrap=VALGRIND)
            run.run(list(batches(count=count, **shape)))
            assert run.instructions is not None
            counts.append(run.instructions)
        per = (counts[1] - counts[0]) / (args.count - small)
        print(f"instructions per transaction: {per:,.0f} ({counts[0]:,} and {counts[1]:,})")
        return 0
    writes = list(batches(count=args.count, **shape))
    cpus = []
    for _ in range(args.rounds):
        run = WriterRun(durability=args.durability, wrap=shlex.split(args.wrap))
        run.run(writes)
        cpus.append(run.cpu / args.count * 1e6)
    shown = ", ".join(f"{cpu:.1f}" for cpu in cpus)
    print(f"writer CPU us per transaction: {statistics.median(cpus):.1f} (runs: {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
