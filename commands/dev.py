"""`require2fa dev`: web, worker and clock on the embedded default, in the foreground.

The services come from `devstack.resolve_services` (your own PostgreSQL/Redis when DATABASE_URL /
REDIS_URL are set or answer on their usual ports, else embedded ones; on a local or embedded
PostgreSQL the database `require2fa`, created when missing); mail goes to the local sink
unless SMTP_URL is set, and can be read at `/_dev/mailbox` (with the `console:` SMS codes). The
first line printed is the address to open. Ctrl-C, SIGTERM or the end of any one
process stops them all, and every server started for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from commands.devstack import resolve_services
from commands.devstate import published

log = structlog.get_logger(__name__)
# The development stack's own database (on a local or embedded PostgreSQL; created when missing)
# and Redis namespace, apart from the maintenance database, the demo's and the tests'.
DATABASE = "require2fa"
NAMESPACE = "require2fa-dev"
MAILBOX = "/_dev/mailbox/"


class ProcessGroup:
    """Child processes started together and stopped together (SIGTERM, then SIGKILL).

    Used by `dev`, `demo` and the benchmarks."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path | None = None) -> None:
        """`log_path`: where the children's output goes (default: this process's own)."""
        self.env = dict(env)
        self.log = log_path.open("ab") if log_path is not None else None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: Sequence[str]) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches us, and we stop the children.
        self.processes[name] = subprocess.Popen(  # noqa: S603
            list(command), env=self.env, stdout=self.log, stderr=self.log, start_new_session=True
        )
        log.info("process started", name=name, pid=self.processes[name].pid)

    def first_exit(self) -> tuple[str, int] | None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, timeout: float = 30) -> None:
        # SIGTERM to each main process only: dramatiq forwards it to its workers itself.
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.log is not None:
            self.log.close()


def run_dev(data_dir: Path, *, port: int, worker_processes: int, worker_threads: int) -> int:
    """Runs until interrupted; returns the exit code for the command. Writes the stack's state
    file (`commands.devstate`) while it runs."""
    from db.migrate import migrate_url

    base_url = os.environ.get("BASE_URL") or f"http://localhost:{port}"
    # The first line, before any log line: what to open (the logs scroll it away otherwise).
    print(f"require2fa dev: open {base_url}/ (mail and SMS codes: {base_url}{MAILBOX})", flush=True)
    with resolve_services(data_dir, os.environ, database=DATABASE) as services:
        env = {
            **os.environ,
            "ENVIRONMENT": os.environ.get("ENVIRONMENT") or "development",
            "REDIS_NAMESPACE": os.environ.get("REDIS_NAMESPACE") or NAMESPACE,
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "SMTP_URL": services.smtp_url,
            "DATA_DIR": str(data_dir),
            "PORT": str(port),
            "BASE_URL": base_url,
        }
        asyncio.run(migrate_url(services.database_url))
        group = ProcessGroup(env)
        python = sys.executable
        try:
            group.start("web", [python, "-m", "commands.cli", "web"])
            group.start(
                "worker",
                [
                    python,
                    "-m",
                    "commands.cli",
                    "worker",
                    "--processes",
                    str(worker_processes),
                    "--threads",
                    str(worker_threads),
                ],
            )
            group.start("clock", [python, "-m", "commands.cli", "clock"])
            log.info(
                "running",
                url=env["BASE_URL"],
                mailbox=env["BASE_URL"] + MAILBOX,
                postgres=services.postgres,
                database=urlsplit(services.database_url).path.lstrip("/"),
                redis=services.redis,
                namespace=env["REDIS_NAMESPACE"],
            )
            with published(data_dir, env):
                while (ended := group.first_exit()) is None:
                    time.sleep(0.5)
            log.error("a process ended; stopping the others", name=ended[0], code=ended[1])
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            group.stop()
