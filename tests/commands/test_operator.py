"""The operator's edges: a password asked for or refused, a silent SMTP server said at a
worker's start (README, Commands and Settings)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time

import asyncpg
from click.testing import CliRunner

from commands.cli import main
from commands.devstack import free_port

SECRET = "s" * 40


def read_until(fd: int, wanted: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def fetchval(dsn: str, sql: str, *args: object) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_createuser_without_a_terminal_refuses(database: str, pool: asyncpg.Pool) -> None:
    result = CliRunner().invoke(
        main,
        ["createuser", "--email", "script@example.com"],
        env={"DATABASE_URL": database},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --password not given and no terminal to ask on: pass --password P, "
        "or --password - to read it from stdin"
    ]
    made = fetchval(database, "select count(*) from users where email = $1", "script@example.com")
    assert made == 0
    empty = CliRunner().invoke(
        main,
        ["createuser", "--email", "script@example.com", "--password", "-"],
        input="\n",
        env={"DATABASE_URL": database},
    )
    assert empty.exit_code == 2 and "error: --password -: stdin gave no password" in empty.output


def test_createuser_asks_twice_on_a_terminal(database: str, pool: asyncpg.Pool) -> None:
    from require2fa.security import verify_password

    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and controlling terminal are the pty
        os.environ.update(DATABASE_URL=database, LOG_FORMAT="text")
        os.execv(  # noqa: S606
            sys.executable,
            [sys.executable, "-m", "commands.cli", "createuser", "--email", "tty@example.com"],
        )
    try:
        assert b"Password:" in read_until(fd, b"Password:")
        os.write(fd, b"first-try-pass\n")
        assert b"Repeat for confirmation:" in read_until(fd, b"Repeat for confirmation:")
        os.write(fd, b"a-typo\n")  # not the same: click asks again
        assert b"Password:" in read_until(fd, b"Password:")
        os.write(fd, b"c0rrect-horse\n")
        read_until(fd, b"Repeat for confirmation:")
        os.write(fd, b"c0rrect-horse\n")
        output = read_until(fd, b"created user")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"c0rrect-horse" not in output  # hidden as it is typed
    stored = fetchval(
        database, "select password_hash from users where email = $1", "tty@example.com"
    )
    assert isinstance(stored, str) and verify_password(stored, "c0rrect-horse")


def test_a_worker_with_a_silent_smtp_server_warns_once_and_runs(
    database: str, redis_url: str, settings
) -> None:
    dead = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "worker", "--processes", "1", "--threads", "1"],
        env={
            **os.environ,
            "ENVIRONMENT": "production",
            "SECRET_KEY": SECRET,
            "BASE_URL": "https://r2fa.example",
            "SMTP_URL": f"smtp://127.0.0.1:{dead}",
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": settings.redis_namespace + "-silent-smtp",
            "LOG_FORMAT": "text",
        },
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert worker.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Worker process is ready" in line:
                break
        assert worker.poll() is None, "".join(lines)  # still running
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=60)
    lines += rest.splitlines()
    warnings = [line for line in lines if "SMTP_URL" in line]
    assert len(warnings) == 1, "".join(lines)
    assert "[warning" in warnings[0] and f"smtp://127.0.0.1:{dead}" in warnings[0]
    assert not [line for line in lines if line.startswith("error: ")]
