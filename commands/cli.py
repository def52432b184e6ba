"""The `require2fa` command: one CLI for every process and operator task (CONTRACT §2)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import structlog

from require2fa import logs
from require2fa.reach import Unreachable, check_redis
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


def load_settings(*, needs: frozenset[str] = SERVER, **defaults: Any) -> Settings:
    """Settings from the environment; a bad one ends the process with one line naming it."""
    settings = Settings.from_env(os.environ, needs=needs, **defaults)
    logs.configure(settings.log_format, process=_process_name())
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


# How long web, worker and clock wait at start for `require2fa migrate` (run by the platform's
# release phase, or just before `honcho start`) to bring the schema up to date.
MIGRATION_WAIT_SECONDS = 120


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
    BASE_URL, ...); outside ENVIRONMENT=development, web, worker and clock need SECRET_KEY and
    BASE_URL. Every failure is one line starting `error:` and a non-zero exit code.
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
    from aiohttp import web as aioweb

    from api.app import create_app

    settings = load_settings()
    redis_url = need_redis(settings, "web")
    check_services(settings, redis_url=redis_url)
    log = structlog.get_logger("require2fa.web")
    log.info("web started", url=settings.base_url, port=settings.port)
    # No banner (it names 0.0.0.0, which is not where people go); the line above names BASE_URL.
    aioweb.run_app(
        create_app(settings.replace(redis_url=redis_url)),
        port=settings.port,
        access_log=None,
        print=None,
    )


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def worker(dramatiq_args: tuple[str, ...]) -> None:
    """Run the Dramatiq workers (the same as `dramatiq jobs`; extra arguments go to dramatiq).

    Unlike a bare `dramatiq jobs`, it checks the settings and servers first (one line when one
    is wrong), waits for the schema, and Dramatiq's own lines come in LOG_FORMAT too."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = load_settings()
    check_services(settings, redis_url=need_redis(settings, "the worker"))
    # Logging is configured already (Dramatiq's basicConfig then changes nothing): the
    # supervisor's lines and, after they boot, the worker processes' are in one format.
    args = make_argument_parser().parse_args(["jobs", *dramatiq_args])
    sys.exit(dramatiq_main(args))


@main.command()
@click.option("--email", required=True)
@click.option("--password", default=None, help="The password, or - to read it from stdin.")
@click.option("--name", default="")
@click.option("--superuser", is_flag=True)
def createuser(email: str, password: str | None, name: str, superuser: bool) -> None:
    """Create a user."""
    from db import users
    from require2fa.security import hash_password

    if password == "-":
        password = sys.stdin.readline().rstrip("\n")
    password_hash = hash_password(password) if password else None

    async def work(conn: Any) -> Any:
        return await users.create(
            conn, email=email, name=name, password_hash=password_hash, is_superuser=superuser
        )

    user = run_db(load_settings(needs=DATABASE_ONLY), work)
    if user is None:
        raise Failure(f"a user with email {email} exists already")
    click.echo(f"created user {user['id']} <{user['email']}>")


@main.command()
@click.option("--email", required=True)
@click.option("--name", default="cli")
def createtoken(email: str, name: str) -> None:
    """Create an API token for a user and print it (it is shown this once)."""
    from db import users
    from require2fa import tokens

    async def work(conn: Any) -> str | None:
        user = await users.by_email(conn, email)
        if user is None:
            return None
        _, token = await tokens.issue(conn, user["id"], name=name)
        return token

    token = run_db(load_settings(needs=DATABASE_ONLY), work)
    if token is None:
        raise Failure(f"no user with email {email}")
    click.echo(token)


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization to create.")
@click.option("--members", "count", type=click.IntRange(0, 10_000_000), required=True)
@click.option(
    "--enrolled",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Fraction of members with a confirmed TOTP factor.",
)
@click.option("--owner-email", default=None, help="Make this user (created if missing) the owner.")
def seed(slug: str, count: int, enrolled: float, owner_email: str | None) -> None:
    """Bulk-load a synthetic organization (COPY), for demos and benchmarks."""
    from commands.seed import seed as run_seed

    settings = load_settings(needs=WITH_SECRET)

    async def work(conn: Any) -> Any:
        return await run_seed(
            conn, settings, slug=slug, count=count, enrolled=enrolled, owner_email=owner_email
        )

    try:
        result = run_db(settings, work)
    except ValueError as err:
        raise Failure(str(err)) from None
    click.echo(
        f"seeded {slug}: {result.members} members, {result.enrolled} with 2FA, "
        f"in {result.seconds:.1f}s ({result.members / max(result.seconds, 1e-9):,.0f} members/s)"
    )
    if result.owner_totp_secret is not None:
        owner = (owner_email or f"owner@{slug}.example").lower()
        click.echo(
            f"the owner {owner} had no second factor and has a TOTP factor now, with the secret "
            f"{result.owner_totp_secret} (add it to an authenticator app); a code for it now:\n"
            f"  require2fa totp-code {result.owner_totp_secret}"
        )


@main.command("totp-code")
@click.argument("secret")
def totp_code(secret: str) -> None:
    """Print the current code of a TOTP secret (for a seeded owner; development and demos)."""
    from require2fa import totp

    try:
        click.echo(totp.code_at(secret.replace(" ", "").upper(), totp.current_step()))
    except (ValueError, TypeError) as err:
        raise BadValue(f"not a base32 TOTP secret ({err})") from None


@main.command()
def clock() -> None:
    """Run the scheduler: the purge and expiry reminders daily, the sweepers every minute.

    Safe to run twice: one clock leads (a PostgreSQL advisory lock), and every job is idempotent.
    """
    from commands.clock import run

    settings = load_settings()
    redis_url = need_redis(settings, "the clock")
    check_services(settings, redis_url=redis_url)
    run(settings.replace(redis_url=redis_url))


@main.command("purge-expired")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2_000, show_default=True)
def purge_expired(batch_size: int) -> None:
    """Purge now the pending members whose reinstatement window has passed."""
    from db.maintenance import purge_expired as purge

    async def work(conn: Any) -> Any:
        return await purge(conn, batch_size=batch_size)

    result = run_db(load_settings(needs=DATABASE_ONLY), work)
    click.echo(
        f"purged {result.purged} expired pending member(s) in {result.batches} batch(es), "
        f"{result.seconds:.1f}s"
    )


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
@click.option("--actor", "email", required=True, help="Email of the owner turning it on.")
@click.option("--dry-run", is_flag=True, help="Print who would be removed; change nothing.")
@click.option(
    "--at",
    "at",
    default=None,
    help="Require it from this ISO 8601 time on (UTC when it has no offset), at most a year"
    " ahead: members without 2FA get reminders 14, 7 and 1 days before.",
)
def enforce(slug: str, email: str, dry_run: bool, at: str | None) -> None:
    """Require 2FA in an organization (as the API's switch does) and follow the removals;
    with --at, schedule it for that time instead."""
    from commands import enforce as enforcement

    settings = load_settings(needs=DATABASE_ONLY)
    if dry_run:
        run_db(settings, lambda conn: enforcement.dry_run(conn, slug, email, click.echo))
        return
    enforce_at = enforcement.parse_at(at) if at is not None else None
    run, started = run_db(
        settings, lambda conn: enforcement.turn_on(conn, slug, email, enforce_at=enforce_at)
    )
    if run["status"] == "scheduled":
        click.echo(
            f"require 2FA scheduled for {slug} at {run['enforce_at'].isoformat()};"
            f" enforcement run {run['id']} starts then (the clock must be running)"
        )
        return
    if started:
        from jobs.enforcement import coordinate

        coordinate.send(run["id"])
        click.echo(f"require 2FA turned on for {slug}; enforcement run {run['id']} queued")
    else:
        click.echo(f"{slug} requires 2FA already; following run {run['id']} ({run['status']})")

    click.echo(run_db(settings, lambda conn: enforcement.follow(conn, run["id"])))


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
def status(slug: str) -> None:
    """Print an organization's members, enrolled, pending, and its latest enforcement run."""
    from commands.enforce import status as describe

    for line in run_db(load_settings(needs=DATABASE_ONLY), lambda conn: describe(conn, slug)):
        click.echo(line)


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
def remind(slug: str) -> None:
    """Email every member without 2FA that the requirement is coming (as POST 2fa-reminders/),
    at most once per member per day, with a progress bar; the email workers deliver them."""
    from commands.remind import remind as run_remind

    settings = load_settings()
    result = run_db(settings, lambda conn: run_remind(conn, settings, slug))
    if result.queued:
        from jobs import email as email_jobs

        asyncio.run(email_jobs.kick())
    click.echo(
        f"reminded {result.queued:,} member(s) of {slug} without 2FA"
        f" ({result.members - result.queued:,} had today's reminder already)"
    )


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    show_default=True,
    help="The CSV file to write (- is standard output).",
)
def report(slug: str, output: str) -> None:
    """Write the compliance report (one CSV row per member, as GET 2fa-compliance/?format=csv)."""
    from commands.report import write_report

    run_db(load_settings(), lambda conn: write_report(conn, slug, output))
    if output != "-":
        click.echo(f"wrote the compliance report of {slug} to {output}", err=True)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded servers keep their data (default: $DATA_DIR or .require2fa).",
)
@click.option(
    "--members",
    type=click.IntRange(10, 1_000_000),
    default=10_000,
    show_default=True,
    help="Members of the demo organization.",
)
def demo(data_dir: Path | None, members: int) -> None:
    """Seed 10,000 members (30% without 2FA), require 2FA over HTTP as the owner, watch the
    workers remove them, and print the outcome; stops everything it started."""
    from commands.demo import report, run_demo

    # Progress bars and the outcome only: the servers' and sink's own chatter stays out.
    logs.configure(os.environ.get("LOG_FORMAT") or "text", level=logging.WARNING)
    outcome = run_demo(
        data_dir or Path(os.environ.get("DATA_DIR") or ".require2fa"), members=members
    )
    for line in report(outcome):
        click.echo(line)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: $PORT or 8000.")
@click.option(
    "--processes",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Threads per worker process.",
)
def dev(port: int | None, processes: int, threads: int) -> None:
    """Run web + worker + clock + a local SMTP sink on the embedded default, in the foreground."""
    from commands.dev import run_dev

    settings = load_settings(environment="development")
    sys.exit(
        run_dev(
            Path(settings.data_dir),
            port=port or settings.port,
            worker_processes=processes,
            worker_threads=threads,
        )
    )


if __name__ == "__main__":
    main()
