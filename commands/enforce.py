"""`require2fa enforce` and `require2fa status`: the switch and its progress, for operators.

`enforce` applies the same rules as `PUT organizations/{org}/` (the actor must be an owner with
2FA, the organization must not use SSO), writes the same `org.edit` entry and run (whose commit
wakes a worker's coordinator, `jobs.wakeup`), then follows the run with a progress bar until it
ends. The workers do the removing: one started later coordinates the run when it boots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import click
from tqdm import tqdm

from db import counts, members, organizations, runs, users
from db.audit import Actor
from require2fa import organization_settings
from require2fa.errors import DomainError

POLL_SECONDS = 0.5
# With no worker picking up the run, say so once after this long.
QUIET_WARNING_SECONDS = 15


async def _org_and_actor(
    conn: asyncpg.Connection, slug: str, email: str | None
) -> tuple[asyncpg.Record, asyncpg.Record | None, str]:
    org = await organizations.by_slug(conn, slug)
    if org is None:
        raise click.ClickException(f"no organization with slug {slug!r}")
    if email is None:
        return org, None, ""
    user = await users.by_email(conn, email)
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    member = await members.of_user(conn, org["id"], user["id"])
    if member is None and not user["is_superuser"]:
        raise click.ClickException(f"{email} is not a member of {slug}")
    return org, user, member["role"] if member is not None else "owner"


async def dry_run(
    conn: asyncpg.Connection, slug: str, email: str, echo: Callable[[str], Any]
) -> int:
    """Prints who would be removed if the requirement were turned on now; changes nothing."""
    org, user, _role = await _org_and_actor(conn, slug, email)
    assert user is not None
    count = await counts.count_noncompliant(conn, org["id"], except_user_id=user["id"])
    after: int | None = None
    while True:
        rows = await members.page(
            conn,
            org["id"],
            where=members.NONCOMPLIANT,
            after_id=after,
            limit=1000,
        )
        for row in rows:
            if row["user_id"] != user["id"]:
                echo(f"{row['email']}\t{row['role']}")
        if len(rows) < 1000:
            break
        after = rows[-1]["id"]
    echo(f"{count:,} member(s) of {slug} would be removed (dry run: nothing changed)")
    return count


def parse_at(text: str) -> datetime:
    """`--at`: an ISO 8601 time; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--at") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def turn_on(
    conn: asyncpg.Connection, slug: str, email: str, *, enforce_at: datetime | None = None
) -> tuple[asyncpg.Record, bool]:
    """Turns the requirement on as `email` (from `enforce_at` on, when given); returns (the run,
    whether a run to coordinate now was written)."""
    org, user, role = await _org_and_actor(conn, slug, email)
    assert user is not None
    async with conn.transaction():
        try:
            change = await organization_settings.change_organization(
                conn,
                organization_settings.SettingsChange(require_2fa=True, enforce_at=enforce_at),
                organization_id=org["id"],
                actor=Actor(user_id=user["id"], label=user["email"]),
                role=role,
                # An operator at the shell holds the database: there is no session to confirm.
                recently_authenticated=True,
            )
        except DomainError as refused:
            raise click.ClickException(refused.detail) from None
    if change.run is None:
        raise click.ClickException(f"{slug} requires 2FA already and has no enforcement run")
    return change.run, change.started


async def follow(conn: asyncpg.Connection, run_id: int) -> str:
    """A progress bar over the run's members until it is no longer queued or running; then a
    one-line summary of the run."""
    run = await runs.get_run(conn, run_id)
    assert run is not None
    members_now = await conn.fetchval(
        "select count(*) from members where organization_id = $1", run["organization_id"]
    )
    started = time.monotonic()
    warned = False
    with tqdm(total=run["total"] or members_now, unit="member", unit_scale=True) as bar:
        while True:
            run = await runs.get_run(conn, run_id)
            assert run is not None
            if run["batches_total"] is not None and bar.total != run["total"]:
                bar.total = run["total"]
            bar.n = run["removed"] + run["skipped"]
            bar.set_postfix(status=run["status"], removed=run["removed"], refresh=False)
            bar.refresh()
            if run["status"] not in runs.ACTIVE:
                return summary(run, await runs.email_counts(conn, run_id))
            quiet = time.monotonic() - started > QUIET_WARNING_SECONDS
            if run["status"] == "queued" and quiet and not warned:
                bar.write("still queued: is a worker (`require2fa worker`) running?")
                warned = True
            await asyncio.sleep(POLL_SECONDS)


def summary(run: asyncpg.Record, emails: tuple[int, int]) -> str:
    seconds = None
    if run["started_at"] and run["finished_at"]:
        seconds = (run["finished_at"] - run["started_at"]).total_seconds()
    text = (
        f"run {run['id']} {run['status']}: {run['removed']:,} removed, {run['skipped']:,} "
        f"skipped of {run['total']:,}; emails {emails[0]:,} queued, {emails[1]:,} sent"
    )
    if seconds is not None:
        text += f"; {seconds:.1f}s"
    return text


async def status(conn: asyncpg.Connection, slug: str) -> list[str]:
    """Lines describing the organization's members and its latest enforcement run."""
    org, _user, _role = await _org_and_actor(conn, slug, None)
    tally = await counts.member_counts(conn, org["id"])
    run = await runs.current_run(conn, org["id"])
    lines = [
        f"organization  {org['slug']} ({org['name']}): require 2FA "
        f"{'on' if org['require_2fa'] else 'off'}, SSO {'on' if org['sso_enabled'] else 'off'}",
        f"members       {tally['active']:,} active, {tally['enrolled']:,} with 2FA, "
        f"{tally['active'] - tally['enrolled']:,} without ({tally['exempt']:,} exempt)",
        f"pending       {tally['pending_2fa']:,} removed for 2FA, {tally['invited']:,} invited",
    ]
    if run is None:
        lines.append("enforcement   none yet")
    else:
        emails = await runs.email_counts(conn, run["id"])
        lines.append(f"enforcement   {summary(run, emails)}")
    return lines
