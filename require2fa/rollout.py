"""Following a requirement's rollout: who would lose access if it were turned on now (the count,
the names and the CSV report), the enforcement runs with their emails, the organization's
member counts, and the dates on which organizations of a person will require 2FA. Reads only;
turning the requirement on is `require2fa.organization_settings`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from db import counts, members, organizations, report, runs, schedule
from db.pool import Source, using
from require2fa.errors import NotFound

RUN_NOT_FOUND = "The requested enforcement does not exist."


@dataclass(frozen=True)
class Noncompliant:
    count: int  # every member it would remove, `except_user_id` left out
    rows: list[asyncpg.Record]  # the page asked for (at the organization's level), by id


async def noncompliant(
    source: Source,
    org_id: int,
    *,
    except_user_id: int | None,
    after_id: int | None,
    limit: int,
    level: str | None = None,
    scope: counts.Scope | None = None,
) -> Noncompliant:
    """Who a run now would remove (at `level` and in `scope`, else the organization's): their
    number and a page of them (members rows at the organization's own level and scope; with a
    `level` or `scope` given, the first `limit` of those, by `counts.first_noncompliant`)."""
    async with using(source) as conn:
        count = await counts.count_noncompliant(
            conn, org_id, except_user_id=except_user_id, level=level, scope=scope
        )
        if level is None and scope is None:
            rows = await members.page(
                conn, org_id, where=members.NONCOMPLIANT, after_id=after_id, limit=limit
            )
        else:
            org = await organizations.get(conn, org_id)
            assert org is not None
            rows = await counts.first_noncompliant(
                conn,
                org_id,
                except_user_id=except_user_id,
                level=level or org["require_2fa_level"],
                scope=scope or (org["require_2fa_scope_roles"], org["require_2fa_scope_teams"]),
                limit=limit,
            )
    return Noncompliant(count=count, rows=rows)


@dataclass(frozen=True)
class Run:
    run: asyncpg.Record
    emails: tuple[int, int]  # (queued, sent)

    def __getitem__(self, column: str) -> Any:
        """A column of the run's row (so that a page of runs is paged like rows)."""
        return self.run[column]


async def runs_page(source: Source, org_id: int, *, before_id: int | None, limit: int) -> list[Run]:
    """The organization's runs, newest first, each with its emails."""
    async with using(source) as conn:
        found = await runs.runs_page(conn, org_id, before_id=before_id, limit=limit)
        emails = await runs.email_counts_of(conn, [run["id"] for run in found])
    return [Run(run, emails[run["id"]]) for run in found]


async def run(source: Source, org_id: int, run_id: int) -> Run:
    """One of the organization's runs with its emails; `NotFound`."""
    async with using(source) as conn:
        found = await runs.get_run(conn, run_id, organization_id=org_id)
        if found is None:
            raise NotFound("run-not-found", RUN_NOT_FOUND)
        return Run(found, await runs.email_counts(conn, found["id"]))


async def current_run(pool: asyncpg.Pool, org_id: int) -> Run | None:
    """The organization's latest run with its emails, if it has one."""
    async with pool.acquire() as conn:
        found = await runs.current_run(conn, org_id)
        if found is None:
            return None
        return Run(found, await runs.email_counts(conn, found["id"]))


async def member_counts(pool: asyncpg.Pool, org_id: int) -> asyncpg.Record:
    """`db.counts.member_counts`: active, enrolled, exempt, pending."""
    async with pool.acquire() as conn:
        return await counts.member_counts(conn, org_id)


async def removed_from(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The organizations that removed the person for 2FA and that they can still rejoin (with
    the link of their email, once they have set up a factor that meets the level)."""
    async with pool.acquire() as conn:
        return await members.removed_for_2fa_of(conn, user_id)


async def blocked_in(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The organizations that block the person in place for 2FA: they are let in again the
    moment they have a factor that meets the level, with no link to follow."""
    async with pool.acquire() as conn:
        return await organizations.blocked_for_user(conn, user_id)


async def deadlines(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The person's organizations that will require 2FA on a date they do not meet yet."""
    async with pool.acquire() as conn:
        return await schedule.deadlines_for(conn, user_id)


async def stream_report(
    pool: asyncpg.Pool,
    org_id: int,
    write: Callable[[bytes], Awaitable[object]],
    *,
    start: Callable[[], Awaitable[object]],
) -> None:
    """The compliance report of every member, as CSV chunks handed to `write` while PostgreSQL
    writes them; `start` is awaited once a connection is held, before the first chunk. A
    connection left in the middle of the COPY (the reader went away, or anything else went
    wrong) is closed rather than handed back to the pool."""
    conn = await pool.acquire()
    try:
        await start()
        await report.copy_report(conn, org_id, write)
    except BaseException:
        conn.terminate()
        raise
    finally:
        await pool.release(conn)
