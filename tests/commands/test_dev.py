"""`require2fa dev`: the address first, quiet logs, and the CLI beside it finds the stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import redis

from commands.devstack import ensure_database, free_port
from tests.conftest import ADMIN_DSN, RUN_ID

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_NAMESPACE",
    "BROKER_URL",
    "SMTP_URL",
    "BASE_URL",
    "DATA_DIR",
    "ENVIRONMENT",
    "PORT",
    "SECRET_KEY",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    return {**env, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "text", **extra}


def fetchval(dsn: str, sql: str, *args: object) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def drop_database(name: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()

    asyncio.run(go())


def test_dev_prints_its_address_first_and_the_cli_beside_it_finds_it(
    tmp_path: Path, redis_url: str
) -> None:
    name = f"require2fa_dev_{RUN_ID}"
    database = ensure_database(ADMIN_DSN, name, fresh=True)
    port = free_port()
    state = tmp_path / ".require2fa" / "dev.json"
    output = tmp_path / "dev.out"
    with output.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "dev", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(
                DATABASE_URL=database, REDIS_URL=redis_url, REDIS_NAMESPACE=f"dev-{RUN_ID}"
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not state.exists() and dev.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), output.read_text()
        assert state.stat().st_mode & 0o077 == 0  # the URLs may hold passwords
        assert json.loads(state.read_text())["env"]["DATABASE_URL"] == database

        beside = clean_env()  # neither DATABASE_URL nor REDIS_URL: the stack's are used
        made = subprocess.run(
            [sys.executable, "-m", "commands.cli", "createuser", "--email", "b@example.com",
             "--password", "-"],
            cwd=tmp_path, env=beside, input="a-long-passw0rd\n", capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert fetchval(database, "select count(*) from users where email = $1", "b@example.com")
        status = subprocess.run(
            [sys.executable, "-m", "commands.cli", "status", "--org", "nope"],
            cwd=tmp_path, env=beside, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "error: no organization with slug 'nope'" in status.stderr
        assert "using the dev stack" in status.stderr
        enforce = subprocess.run(
            [sys.executable, "-m", "commands.cli", "enforce", "--org", "nope", "--actor",
             "b@example.com", "--dry-run"],
            cwd=tmp_path, env=beside, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert enforce.returncode != 0
        assert "error: no organization with slug 'nope'" in enforce.stderr, enforce.stderr
        assert "using the dev stack" in enforce.stderr
        # Another directory has no stack beside it: the usual line about the missing setting.
        elsewhere = subprocess.run(
            [sys.executable, "-m", "commands.cli", "status", "--org", "nope"],
            cwd=tmp_path / ".require2fa", env=beside, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert "error: DATABASE_URL: not set" in elsewhere.stderr
        time.sleep(12)  # a leadership check of the clock (every 10 s) has run
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
        drop_database(name)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dev-{RUN_ID}:*"):
            client.delete(key)
        client.close()
    lines = output.read_text().splitlines()
    assert lines[0] == (
        f"require2fa dev: open http://localhost:{port}/ "
        f"(mail and SMS codes: http://localhost:{port}/_dev/mailbox/)"
    )
    assert not [line for line in lines if "apscheduler" in line or "clock sent" in line], lines
    assert not state.exists()  # a stopped stack is not found
