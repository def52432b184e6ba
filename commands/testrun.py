"""`python -m commands.testrun [pytest args]`: the test suite against real PostgreSQL and Redis.

Picks the servers with `devstack.resolve_services` (README: `DATABASE_URL`/`REDIS_URL`, else
127.0.0.1:5432/6379, else embedded ones under `.require2fa/test`; `REQUIRE2FA_EMBEDDED=1` forces
the embedded ones), passes them to pytest as `DATABASE_URL` and `REDIS_URL`, and exits with
pytest's exit code. Every embedded server is stopped afterwards. Ctrl-C and SIGTERM stop pytest
the way Ctrl-C does (it tears down its fixtures and reports), then the servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from commands.devstack import resolve_services

DATA_DIR = Path(".require2fa") / "test"


def main(argv: Sequence[str] | None = None) -> int:
    command = [sys.executable, "-m", "pytest", *(sys.argv[1:] if argv is None else argv)]
    pytest_run: subprocess.Popen[bytes] | None = None

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        if pytest_run is None:
            raise SystemExit(128 + signum)
        pytest_run.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with resolve_services(DATA_DIR, os.environ, with_smtp=False) as services:
            env = {
                **os.environ,
                "DATABASE_URL": services.database_url,
                "REDIS_URL": services.redis_url,
            }
            with subprocess.Popen(command, env=env) as pytest_run:  # noqa: S603
                try:
                    return pytest_run.wait()
                except KeyboardInterrupt:
                    # The terminal's Ctrl-C reached pytest too: let it tear down and report.
                    # A second Ctrl-C gets past this and stops the servers at once.
                    return pytest_run.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
