"""What every `require2fa` command shares: failures said in one line (`Cli`, `Failure`,
`BadValue`), the settings each kind of command needs, and running work on one connection."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click
import structlog

from commands.devstate import running_stack
from require2fa import logs
from require2fa.reach import Unreachable
from require2fa.settings import SERVER_NEEDS, Settings, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

T = TypeVar("T")


class Failure(click.ClickException):
    """Ends the command with `error: <message>` on one line and exit code 1."""


class BadValue(Failure):
    """A value on the command line that cannot be used: exit code 2, as click's own."""

    exit_code = 2


class Cli(click.Group):
    """The group, with every failure said the same way: one line starting `error: `, and a
    non-zero exit code (2 for a bad command line or setting, 1 for the rest)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            if err.ctx is not None:
                click.echo(err.ctx.get_usage(), err=True)
            _fail(err.format_message(), err.exit_code)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except SettingsError as err:
            _fail(str(err), 2)
        except Unreachable as err:
            _fail(str(err), 1)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# What each kind of command needs outside development (see `Settings.from_env`).
SERVER = SERVER_NEEDS
DATABASE_ONLY: frozenset[str] = frozenset()
WITH_SECRET = frozenset({"SECRET_KEY"})


def load_settings(
    *, needs: frozenset[str] = SERVER, beside_dev: bool = True, **defaults: Any
) -> Settings:
    """Settings from the environment; a bad one ends the process with one line naming it.

    `beside_dev` (the operator's commands; the servers turn it off): with neither DATABASE_URL
    nor REDIS_URL set, the values of a `require2fa dev` running in this directory fill in what
    is unset, in this process's environment too (which `jobs` reads its broker from when
    imported)."""
    stack = running_stack(os.environ) if beside_dev else None
    if stack is not None:
        for name, value in stack[1].items():
            if not os.environ.get(name):
                os.environ[name] = value
    settings = Settings.from_env(os.environ, needs=needs, **defaults)
    logs.configure(settings.log_format, process=_process_name())
    if stack is not None:
        structlog.get_logger("require2fa.cli").info("using the dev stack", state=str(stack[0]))
    return settings


def _process_name() -> str:
    context = click.get_current_context(silent=True)
    return context.info_name if context is not None and context.info_name else "cli"


def need_database(settings: Settings) -> str:
    if not settings.database_url:
        raise SettingsError("DATABASE_URL", "not set (or use `require2fa dev`)")
    return settings.database_url


def need_redis(settings: Settings, what: str) -> str:
    """REDIS_URL, required outside development; in development the local default."""
    if settings.redis_url:
        return settings.redis_url
    if not settings.development:
        raise SettingsError("REDIS_URL", f"not set; {what} needs it")
    return DEFAULT_REDIS_URL


def run_db(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Runs `work(conn)` on one connection to DATABASE_URL."""
    from db.pool import connect_checked

    async def main() -> T:
        conn = await connect_checked(need_database(settings))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())
