"""The `require2fa` command: one CLI for every process and operator task (README, Commands).

The long-running processes (`migrate`, `web`, `worker`, `clock`) are here; the operator's
commands are in `commands.cli_users`, `cli_orgs` and `cli_dev`, added to the one group below.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import time
from importlib import metadata

import click
import structlog

from commands import cli_dev, cli_orgs, cli_users
from commands.support import (
    DATABASE_ONLY,
    Cli,
    Failure,
    load_settings,
    need_database,
    need_redis,
    run_db,
)
from require2fa.reach import check_redis
from require2fa.settings import Settings

# How long web, worker and clock wait at start for `require2fa migrate` (run by the platform's
# release phase, or just before `honcho start`) to bring the schema up to date.
MIGRATION_WAIT_SECONDS = 120
# How long a worker waits at start for the SMTP server's greeting before saying it is silent.
SMTP_CHECK_SECONDS = 5.0


def check_services(settings: Settings, *, redis_url: str | None) -> None:
    """Before a long-running process starts: connects once to the database (and PINGs Redis), so
    that a wrong address is one line now rather than a traceback later, and waits until the
    schema has every migration of this version (a process started beside `require2fa migrate`
    must not run against the old schema)."""
    from db.migrate import pending
    from db.pool import connect_checked

    log = structlog.get_logger("require2fa.start")

    async def check() -> None:
        conn = await connect_checked(need_database(settings))
        try:
            deadline, waited = time.monotonic() + MIGRATION_WAIT_SECONDS, 0
            while missing := await pending(conn):
                if time.monotonic() > deadline:
                    raise Failure(
                        f"DATABASE_URL: the schema lacks {len(missing)} migration(s) "
                        f"({', '.join(missing)}); run `require2fa migrate`"
                    )
                if waited % 10 == 0:
                    log.warning("waiting for migrations", pending=missing)
                waited += 1
                await asyncio.sleep(1)
        finally:
            await conn.close()
        if redis_url is not None:
            await check_redis(redis_url)

    asyncio.run(check())


def warn_if_smtp_silent(settings: Settings) -> None:
    """A worker's start: one warning line when the SMTP server does not answer. The worker runs
    on: emails wait in the outbox and are retried until the server takes them."""
    from jobs.mail.smtp import TRANSIENT, Smtp, describe
    from require2fa.reach import redact

    async def check() -> None:
        smtp = Smtp(settings)
        try:
            async with asyncio.timeout(SMTP_CHECK_SECONDS):
                await smtp.connect()
        finally:
            await smtp.close()

    try:
        asyncio.run(check())
    except (*TRANSIENT, TimeoutError) as err:
        structlog.get_logger("require2fa.start").warning(
            "SMTP_URL: the mail server does not answer; emails wait in the outbox and are "
            "retried until it does",
            address=redact(settings.smtp_url),
            error=describe(err) if str(err) else f"no answer within {SMTP_CHECK_SECONDS:.0f}s",
        )


def _listen_failure(err: OSError, port: int) -> Failure:
    """`PORT: cannot listen on port 8000 (address already in use)`."""
    why = os.strerror(err.errno).lower() if err.errno else str(err)
    return Failure(f"PORT: cannot listen on port {port} ({why})")


def _version() -> str:
    try:
        return metadata.version("require2fa")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    _version(), "--version", prog_name="require2fa", message="%(prog)s %(version)s"
)
def main() -> None:
    """require2fa: the service behind an organization's Require Two-Factor Authentication switch.

    Settings come from the environment (DATABASE_URL, REDIS_URL, SMTP_URL, SECRET_KEY,
    BASE_URL, ...); outside ENVIRONMENT=development, web, worker and clock need SECRET_KEY,
    BASE_URL and SMTP_URL. Every failure is one line starting `error:` and a non-zero exit code.

    Beside a running `require2fa dev` (the same directory, or the same DATA_DIR), with neither
    DATABASE_URL nor REDIS_URL set, the commands (status, enforce, createuser, ...) use that
    stack's database, Redis and namespace, read from DATA_DIR/dev.json.
    """


@main.command()
def migrate() -> None:
    """Apply pending migrations (safe to run twice, and from two hosts at once)."""
    from db.migrate import migrate as apply

    applied = run_db(load_settings(needs=DATABASE_ONLY), apply)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@main.command()
def web() -> None:
    """Run the aiohttp server on $PORT (default 8000)."""
    # First: importing the app builds the broker from REDIS_URL.
    settings = load_settings(beside_dev=False)
    from aiohttp import web as aioweb

    from api.app import create_app, server_options

    redis_url = need_redis(settings, "web")
    check_services(settings, redis_url=redis_url)
    log = structlog.get_logger("require2fa.web")

    def started(_banner: str) -> None:
        # Instead of the banner (it names 0.0.0.0, which is not where people go), once the port
        # is bound: a line naming BASE_URL.
        log.info("web started", url=settings.base_url, port=settings.port)

    try:
        aioweb.run_app(
            create_app(settings.replace(redis_url=redis_url)),
            port=settings.port,
            access_log=None,
            print=started,
            **server_options(),  # type: ignore[arg-type]
        )
    except OSError as err:
        if err.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise _listen_failure(err, settings.port) from None


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def worker(dramatiq_args: tuple[str, ...]) -> None:
    """Run the Dramatiq workers (the same as `dramatiq jobs`; extra arguments go to dramatiq).

    Unlike a bare `dramatiq jobs`, it checks the settings and servers first (one line when one
    is wrong), waits for the schema, and Dramatiq's own lines come in LOG_FORMAT too."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = load_settings(beside_dev=False)
    check_services(settings, redis_url=need_redis(settings, "the worker"))
    warn_if_smtp_silent(settings)
    # Logging is configured already (Dramatiq's basicConfig then changes nothing): the
    # supervisor's lines and, after they boot, the worker processes' are in one format.
    args = make_argument_parser().parse_args(["jobs", *dramatiq_args])
    sys.exit(dramatiq_main(args))


@main.command()
def clock() -> None:
    """Run the scheduler: the purge and expiry reminders daily, the sweepers every minute.

    Safe to run twice: one clock leads (a PostgreSQL advisory lock), and every job is idempotent.
    """
    # First: importing the clock builds the broker from REDIS_URL.
    settings = load_settings(beside_dev=False)
    from commands.clock import run

    redis_url = need_redis(settings, "the clock")
    check_services(settings, redis_url=redis_url)
    run(settings.replace(redis_url=redis_url))


for command in (
    cli_users.createuser,
    cli_users.createtoken,
    cli_users.totp_code,
    cli_orgs.seed,
    cli_orgs.enforce,
    cli_orgs.status,
    cli_orgs.remind,
    cli_orgs.report,
    cli_orgs.purge_expired,
    cli_orgs.prune,
    cli_dev.demo,
    cli_dev.dev,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
