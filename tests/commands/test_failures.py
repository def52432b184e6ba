"""Every setting or connection problem ends a command with one line naming the setting and what
was tried, and a non-zero exit code (README, Settings)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest
from click.testing import CliRunner

from commands.cli import main
from tests.conftest import ADMIN_DSN, REDIS_URL, RUN_ID, TEST_DSN

SECRET = "s" * 40
PROD = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": SECRET,
    "BASE_URL": "https://r2fa.example",
    "SMTP_URL": "smtp://127.0.0.1:1",
}
DEV = {"ENVIRONMENT": "development"}
REFUSED = "postgresql://nope@127.0.0.1:1/x"
MISSING_DB = ADMIN_DSN.rsplit("/", 1)[0] + "/require2fa_no_such_database"


def drop_database(server: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()

    asyncio.run(drop())


def run(args: list[str], env: dict[str, str]):
    # Start from nothing: the test run's own DATABASE_URL etc. must not leak in.
    blank = dict.fromkeys(
        (
            "DATABASE_URL",
            "REDIS_URL",
            "ENVIRONMENT",
            "SECRET_KEY",
            "BASE_URL",
            "PORT",
            "SMTP_URL",
            "REINSTATEMENT_WINDOW",
            "DATA_DIR",
        ),
        "",
    )
    return CliRunner().invoke(main, args, env={**blank, **env}, catch_exceptions=False)


CASES = [
    (["migrate"], {**DEV, "DATABASE_URL": REFUSED}, "error: DATABASE_URL: cannot connect to "
     "postgresql://nope@127.0.0.1:1/x (connection refused: is the server running?)"),
    (["migrate"], {**DEV, "DATABASE_URL": MISSING_DB}, "does not exist"),
    (["status", "--org", "x"], {**DEV, "DATABASE_URL": MISSING_DB}, "does not exist"),
    (["status", "--org", "x"], {**DEV, "DATABASE_URL": REFUSED}, "connection refused"),
    # Outside development, migrate and status need no SECRET_KEY: the database is what is wrong.
    (["migrate"], {"DATABASE_URL": REFUSED}, "error: DATABASE_URL: cannot connect"),
    (["status", "--org", "x"], {"DATABASE_URL": REFUSED}, "error: DATABASE_URL: cannot connect"),
    (["migrate"], {}, "error: DATABASE_URL: not set"),
    (["web"], {**PROD, "DATABASE_URL": TEST_DSN}, "error: REDIS_URL: not set; web needs it"),
    (["web"], {**PROD, "DATABASE_URL": REFUSED, "REDIS_URL": REDIS_URL}, "connection refused"),
    (["web"], {**PROD, "DATABASE_URL": TEST_DSN, "REDIS_URL": "redis://127.0.0.1:1/0"},
     "error: REDIS_URL: cannot connect to redis://127.0.0.1:1/0 (connection refused"),
    (["web"], {**PROD, "PORT": "abc"}, "error: PORT: 'abc' is not a TCP port number (1-65535)"),
    (["web"], {"SECRET_KEY": SECRET}, "error: BASE_URL: must be set outside development"),
    (["web"], {"BASE_URL": "https://r2fa.example"}, "error: SECRET_KEY: must be set"),
    (["clock"], {**PROD, "DATABASE_URL": MISSING_DB, "REDIS_URL": REDIS_URL}, "does not exist"),
    (["worker"], {**PROD, "DATABASE_URL": REFUSED, "REDIS_URL": REDIS_URL}, "connection refused"),
    (["worker"], {**PROD, "DATABASE_URL": TEST_DSN}, "error: REDIS_URL: not set"),
    (["createuser", "--email", "a@example.com"],
     {"DATABASE_URL": "postgresql://u:hunter2@nohost.invalid/x"},
     "error: DATABASE_URL: cannot connect to postgresql://u:***@nohost.invalid/x"),
    (["status"], {}, "error: Missing option '--org'."),
    (["web"], {**PROD, "DATABASE_URL": TEST_DSN, "REDIS_URL": "http://x"},
     "error: REDIS_URL: must be a redis:// URL"),
    (["clock"], {**PROD, "DATABASE_URL": TEST_DSN, "REDIS_URL": "http://x"},
     "error: REDIS_URL: must be a redis:// URL"),
    (["web"], {**PROD, "DATABASE_URL": TEST_DSN, "REDIS_URL": "redis://r:abc/0"},
     "error: REDIS_URL: cannot be read as a URL (Port could not be cast to integer value"),
    (["web"], {**PROD, "DATABASE_URL": "postgresql://[::1/x", "REDIS_URL": REDIS_URL},
     "error: DATABASE_URL: cannot be read as a URL (Invalid IPv6 URL)"),
    (["migrate"], {"DATABASE_URL": "postgresql://u@db:99999/x"},
     "error: DATABASE_URL: cannot be read as a URL (Port out of range 0-65535)"),
    (["migrate"], {"DATABASE_URL": TEST_DSN, "REINSTATEMENT_WINDOW": "90"},
     "error: REINSTATEMENT_WINDOW: '90' has no unit: write 90d, 90h, 90m or 90s"),
    (["web"], {**PROD, "SMTP_URL": "", "DATABASE_URL": TEST_DSN, "REDIS_URL": REDIS_URL},
     "error: SMTP_URL: must be set outside development"),
    (["worker"], {**PROD, "SMTP_URL": "", "DATABASE_URL": TEST_DSN, "REDIS_URL": REDIS_URL},
     "error: SMTP_URL: must be set outside development"),
    (["clock"], {**PROD, "DATABASE_URL": REFUSED, "REDIS_URL": REDIS_URL},
     "error: DATABASE_URL: cannot connect to postgresql://nope@127.0.0.1:1/x (connection refused"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "expected"), CASES)
def test_one_line_naming_the_setting(
    database: str, redis_url: str, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run(args, env)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    others = [line for line in result.output.splitlines() if not line.startswith("Usage: ")]
    assert len(errors) == 1 and others == errors, result.output
    assert expected in errors[0], errors[0]
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_dramatiq_jobs_with_an_unreachable_database_says_one_line(redis_url: str) -> None:
    """`dramatiq jobs` itself (the Procfile's other spelling): one `error:` line, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "1"],
        env={**os.environ, **PROD, "DATABASE_URL": REFUSED, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: DATABASE_URL: cannot connect to postgresql://nope@127.0.0.1:1/x "
        "(connection refused: is the server running?)"
    ], result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("require2fa ") and result.output.strip()[-1].isdigit()


def test_web_waits_for_migrations_then_says_what_to_run(monkeypatch, redis_url: str) -> None:
    from commands import cli
    from commands.devstack import ensure_database

    name = f"require2fa_unmigrated_{RUN_ID}"
    empty = ensure_database(ADMIN_DSN, name, fresh=True)
    monkeypatch.setattr(cli, "MIGRATION_WAIT_SECONDS", 0)
    try:
        result = run(["web"], {**PROD, "DATABASE_URL": empty, "REDIS_URL": redis_url})
    finally:
        drop_database(ADMIN_DSN, name)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1
    assert errors[0].startswith("error: DATABASE_URL: the schema lacks ")
    assert errors[0].endswith("; run `require2fa migrate`")


def test_web_on_a_port_in_use_says_so_in_one_line(database: str, redis_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where `require2fa web` listens
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "commands.cli", "web"],
            env={
                **os.environ,
                **PROD,
                "DATABASE_URL": TEST_DSN,
                "REDIS_URL": redis_url,
                "PORT": str(port),
                "LOG_FORMAT": "json",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: PORT: cannot listen on port {port} (address already in use)"], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
