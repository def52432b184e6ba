"""`dramatiq jobs` with a bad setting stops at start with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"ENVIRONMENT": "production", "SECRET_KEY": ""}, "error: SECRET_KEY: "),
        ({"REINSTATEMENT_WINDOW": "soon"}, "error: REINSTATEMENT_WINDOW: "),
    ],
)
def test_bad_setting_stops_the_worker(redis_url: str, env: dict[str, str], line: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert any(out.startswith(line) for out in result.stderr.splitlines()), result.stderr[-2000:]


def _niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(child) for child in found.read().split()]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_worker_nice_lowers_the_worker_processes_priority(settings, redis_url: str) -> None:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": settings.redis_namespace,
        "WORKER_NICE": "7",
    }
    command = [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "1"]
    parent = subprocess.Popen(
        command + ["--queues", "nothing-here"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = _niceness(parent.pid)
        seen = None
        for _ in range(300):  # the worker process forks, imports and boots
            children = _children(parent.pid)
            if children and _niceness(children[0]) != base:
                seen = _niceness(children[0])
                break
            time.sleep(0.1)
        assert seen == min(base + 7, 19)
        assert _niceness(parent.pid) == base  # the supervisor keeps its own
    finally:
        parent.terminate()
        parent.wait(timeout=60)
