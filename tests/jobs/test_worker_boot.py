"""`dramatiq jobs` with a bad setting stops at start with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

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
