"""The totals of the API fuzzing (`test_api_fuzz.py`), printed at the end of a run that ran it."""

from __future__ import annotations

import os
import sys

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    module = sys.modules.get("tests.security.test_api_fuzz")
    totals = getattr(module, "TOTALS", None)
    if not totals or not totals["operations"]:
        return
    callers = ", ".join(
        f"{totals[f'cases as {caller}']} as {caller} ({totals[f'2xx as {caller}']} answered 2xx)"
        for caller in module.CALLERS  # type: ignore[union-attr]
    )
    if os.environ.get("FUZZ_DEBUG"):  # every (operation, caller, status) count
        for key, value in sorted(totals.items()):
            terminalreporter.write_line(f"  {key}: {value}")
    terminalreporter.write_line(
        f"API fuzzing (schemathesis): {totals['cases']} cases ({callers}) over"
        f" {totals['operations']} operations in {totals['seconds']:.1f} s;"
        f" 5xx: {totals['5xx']}, schema violations: {totals['schema violations']}"
    )
