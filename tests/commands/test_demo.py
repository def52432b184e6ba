"""`make demo` and `require2fa dev` keep to databases of their own (created when missing), say
which servers they used, and a second demo prints the summary of the first."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from commands.devstack import embedded_services, ensure_database, with_database
from tests.conftest import ADMIN_DSN, RUN_ID

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def _tables(dsn: str) -> set[str]:
    async def go() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("select tablename from pg_tables where schemaname = 'public'")
            return {row["tablename"] for row in rows}
        finally:
            await conn.close()

    return asyncio.run(go())


def _without_timings(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(("seconds", "members/s"))]


def _demo(data_dir: Path) -> list[str]:
    """`require2fa demo` with nothing configured, on embedded servers in `data_dir` (so that
    parallel test runs share nothing), 200 members."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "REDIS_NAMESPACE", "BASE_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "commands.cli", "demo", "--members", "200", "--data-dir", data_dir],
        env={**env, "REQUIRE2FA_EMBEDDED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    summary = next(n for n, line in enumerate(lines) if line.startswith("postgres "))
    return lines[summary:]  # the summary; the seed's line and progress bars come before it


def test_a_second_demo_prints_the_same_summary(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    second = _demo(tmp_path)
    assert _without_timings(first) == _without_timings(second)
    assert first[0].startswith("postgres          embedded, data in ")
    assert "; database require2fa_demo (made anew for each demo)" in first[0]
    assert first[1].startswith("redis             embedded") and "require2fa-demo:*" in first[1]
    assert re.search(r"organization\s+demo \(201 members\)", "\n".join(first))
    assert re.search(r"emails delivered\s+(\d+) of \1", "\n".join(first))
    with embedded_services(tmp_path, with_smtp=False, need_redis=False) as services:
        assert _tables(with_database(services.database_url, "postgres")) == set()
        assert "members" in _tables(with_database(services.database_url, "require2fa_demo"))


def test_ensure_database_creates_once_and_fresh_makes_anew() -> None:
    name = f"require2fa_ensure_{RUN_ID}"
    url = ensure_database(ADMIN_DSN, name, fresh=True)
    assert url.endswith(f"/{name}")

    async def go() -> None:
        conn = await asyncpg.connect(url)
        await conn.execute("create table kept (x int)")
        await conn.close()

    asyncio.run(go())
    assert "kept" in _tables(ensure_database(ADMIN_DSN, name))
    assert "kept" not in _tables(ensure_database(ADMIN_DSN, name, fresh=True))

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.close()

    asyncio.run(drop())
