"""The totals of the API fuzzing (`test_api_fuzz.py`), printed at the end of a run that ran it.

Under `pytest -n` the fuzzing runs in a worker process: each worker hands its totals to the
controlling process at the end (xdist's `workeroutput`), which adds them up and prints them.
tests/conftest.py imports these hooks, so that the controlling process has them too.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

import pytest

MODULE = "tests.security.test_api_fuzz"
KEY = "api_fuzz_totals"
# What the workers of this run reported (empty without xdist).
FROM_WORKERS: Counter[str] = Counter()


def _here() -> Counter[str]:
    """The totals of the fuzzing run in this process (empty when it did not run here)."""
    module = sys.modules.get(MODULE)
    return Counter(getattr(module, "TOTALS", None) or {})


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput[KEY] = dict(_here())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    FROM_WORKERS.update(getattr(node, "workeroutput", {}).get(KEY, {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    totals = FROM_WORKERS + _here()
    if not totals["operations"]:
        return
    callers = sorted(key.removeprefix("cases as ") for key in totals if key.startswith("cases as "))
    listed = ", ".join(
        f"{totals[f'cases as {caller}']} as {caller} ({totals[f'2xx as {caller}']} answered 2xx)"
        for caller in callers
    )
    if os.environ.get("FUZZ_DEBUG"):  # every (operation, caller, status) count
        for key, value in sorted(totals.items()):
            terminalreporter.write_line(f"  {key}: {value}")
    terminalreporter.write_line(
        f"API fuzzing (schemathesis): {totals['cases']} cases ({listed}) over"
        f" {totals['operations']} operations in {totals['seconds']:.1f} s;"
        f" 5xx: {totals['5xx']}, schema violations: {totals['schema violations']}"
    )
