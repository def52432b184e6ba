"""The `require2fa` command: one CLI for every process and operator task (CONTRACT §2)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from require2fa import logs
from require2fa.settings import Settings, SettingsError

T = TypeVar("T")


def load_settings(**defaults: Any) -> Settings:
    """Settings from the environment; a bad one ends the process with one line naming it."""
    try:
        settings = Settings.from_env(os.environ, **defaults)
    except SettingsError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    logs.configure(settings.log_format)
    return settings


def need_database(settings: Settings) -> str:
    if not settings.database_url:
        click.echo("error: DATABASE_URL: not set (or use `require2fa dev`)", err=True)
        sys.exit(2)
    return settings.database_url


def run_db(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Runs `work(conn)` on one connection to DATABASE_URL."""
    from db.pool import connect

    async def main() -> T:
        conn = await connect(need_database(settings))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """require2fa: the service behind an organization's Require Two-Factor Authentication switch.

    Settings come from the environment (DATABASE_URL, REDIS_URL, SMTP_URL, SECRET_KEY, ...).
    """


@main.command()
def migrate() -> None:
    """Apply pending migrations (safe to run twice, and from two hosts at once)."""
    from db.migrate import migrate as apply

    applied = run_db(load_settings(), apply)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@main.command()
def web() -> None:
    """Run the aiohttp server on $PORT (default 8000)."""
    from aiohttp import web as aioweb

    from api.app import create_app

    settings = load_settings()
    need_database(settings)
    aioweb.run_app(create_app(settings), port=settings.port, access_log=None)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def worker(dramatiq_args: tuple[str, ...]) -> None:
    """Run the Dramatiq workers (the same as `dramatiq jobs`; extra arguments go to dramatiq)."""
    load_settings()
    os.execvp(sys.executable, [sys.executable, "-m", "dramatiq", "jobs", *dramatiq_args])  # noqa: S606


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

    user = run_db(load_settings(), work)
    if user is None:
        raise click.ClickException(f"a user with email {email} exists already")
    click.echo(f"created user {user['id']} <{user['email']}>")


@main.command()
@click.option("--email", required=True)
@click.option("--name", default="cli")
def createtoken(email: str, name: str) -> None:
    """Create an API token for a user and print it (it is shown this once)."""
    from db import users
    from require2fa.security import new_token, token_hash

    token = new_token()

    async def work(conn: Any) -> bool:
        user = await users.by_email(conn, email)
        if user is None:
            return False
        await users.create_token(conn, user_id=user["id"], token_hash=token_hash(token), name=name)
        return True

    if not run_db(load_settings(), work):
        raise click.ClickException(f"no user with email {email}")
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

    settings = load_settings()

    async def work(conn: Any) -> Any:
        return await run_seed(
            conn, settings, slug=slug, count=count, enrolled=enrolled, owner_email=owner_email
        )

    try:
        result = run_db(settings, work)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        f"seeded {slug}: {result.members} members, {result.enrolled} with 2FA, "
        f"in {result.seconds:.1f}s ({result.members / max(result.seconds, 1e-9):,.0f} members/s)"
    )


@main.command()
def clock() -> None:
    """Run the scheduler: the purge and expiry reminders daily, the sweepers every minute.

    Safe to run twice: one clock leads (a PostgreSQL advisory lock), and every job is idempotent.
    """
    from commands.clock import run

    settings = load_settings()
    need_database(settings)
    run(settings)


@main.command("purge-expired")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2_000, show_default=True)
def purge_expired(batch_size: int) -> None:
    """Purge now the pending members whose reinstatement window has passed."""
    from db.maintenance import purge_expired as purge

    async def work(conn: Any) -> Any:
        return await purge(conn, batch_size=batch_size)

    result = run_db(load_settings(), work)
    click.echo(
        f"purged {result.purged} expired pending member(s) in {result.batches} batch(es), "
        f"{result.seconds:.1f}s"
    )


@main.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
@click.option("--actor", "email", required=True, help="Email of the owner turning it on.")
@click.option("--dry-run", is_flag=True, help="Print who would be removed; change nothing.")
def enforce(slug: str, email: str, dry_run: bool) -> None:
    """Require 2FA in an organization (as the API's switch does) and follow the removals."""
    from commands import enforce as enforcement

    settings = load_settings()
    if dry_run:
        run_db(settings, lambda conn: enforcement.dry_run(conn, slug, email, click.echo))
        return
    run, started = run_db(settings, lambda conn: enforcement.turn_on(conn, slug, email))
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

    for line in run_db(load_settings(), lambda conn: describe(conn, slug)):
        click.echo(line)


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
def demo(data_dir: Path | None) -> None:
    """Seed 10,000 members (30% without 2FA), require 2FA over HTTP as the owner, watch the
    workers remove them, and print the outcome; stops everything it started."""
    from commands.demo import report, run_demo

    # Progress bars and the outcome only: the servers' and sink's own chatter stays out.
    logs.configure(os.environ.get("LOG_FORMAT") or "text", level=logging.WARNING)
    outcome = run_demo(data_dir or Path(os.environ.get("DATA_DIR") or ".require2fa"))
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
