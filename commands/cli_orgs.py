"""`require2fa seed`, `enforce`, `status`, `remind`, `report` and `purge-expired`: an
organization's data and its requirement, from the operator's shell."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from commands.support import DATABASE_ONLY, WITH_SECRET, Failure, load_settings, run_db


@click.command()
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


@click.command()
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
    with --at, schedule it for that time instead.

    Beside a running `require2fa dev`, with DATABASE_URL and REDIS_URL unset, acts on its stack."""
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
        # The run's commit wakes a worker's coordinator (`jobs.wakeup`); a worker started later
        # looks once when it boots, and the clock's sweeper sends it otherwise.
        click.echo(f"require 2FA turned on for {slug}; enforcement run {run['id']} queued")
    else:
        click.echo(f"{slug} requires 2FA already; following run {run['id']} ({run['status']})")

    click.echo(run_db(settings, lambda conn: enforcement.follow(conn, run["id"])))


@click.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
def status(slug: str) -> None:
    """Print an organization's members, enrolled, pending, and its latest enforcement run.

    Beside a running `require2fa dev`, with DATABASE_URL and REDIS_URL unset, reads its stack."""
    from commands.enforce import status as describe

    for line in run_db(load_settings(needs=DATABASE_ONLY), lambda conn: describe(conn, slug)):
        click.echo(line)


@click.command()
@click.option("--org", "slug", required=True, help="Slug of the organization.")
def remind(slug: str) -> None:
    """Email every member without 2FA that the requirement is coming (as POST 2fa-reminders/),
    at most once per member per day, with a progress bar; the email workers deliver them."""
    from commands.remind import remind as run_remind

    settings = load_settings()
    result = run_db(settings, lambda conn: run_remind(conn, settings, slug))
    click.echo(
        f"reminded {result.queued:,} member(s) of {slug} without 2FA"
        f" ({result.members - result.queued:,} had today's reminder already)"
    )


@click.command()
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


@click.command("purge-expired")
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


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="Show what would go; change nothing.")
def prune(dry_run: bool) -> None:
    """Prune now what OUTBOX_RETENTION and AUDIT_RETENTION let go (what the clock does hourly)."""
    from commands.support import need_database
    from db.pool import create_pool_checked
    from require2fa.retention import prune as prune_now

    settings = load_settings(needs=DATABASE_ONLY)

    async def work() -> Any:
        pool = await create_pool_checked(need_database(settings), max_size=1)
        try:
            return await prune_now(
                pool,
                outbox_retention=settings.outbox_retention,
                audit_retention=settings.audit_retention,
                dry_run=dry_run,
            )
        finally:
            await pool.close()

    result = asyncio.run(work())
    verb = "would delete" if dry_run else "deleted"
    months = ", ".join(result.audit_months_dropped) or "none"
    entries = f"about {result.audit_entries}" if dry_run else str(result.audit_entries)
    click.echo(
        f"{verb} {result.emails} email row(s), {result.deliveries} webhook delivery(ies), "
        f"{result.sessions} expired session(s), audit months {months} ({entries} entries)"
    )
