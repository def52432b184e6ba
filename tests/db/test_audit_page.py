"""The audit log's pages (`require2fa.audit_log.page`, what the API and the page call) across
its month partitions: following the cursors gives every entry once, newest id first, whatever
month each entry's time puts it in."""

from __future__ import annotations

import asyncpg

from require2fa import audit_log
from tests.factories import owner_and_org

PER_PAGE = 100


async def add_entries(pool: asyncpg.Pool, org_id: int, count: int, days_ago: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into audit_log (organization_id, event, actor_label, data, created_at)
               select $1, 'member.edit', 'owner', '{}', now() - make_interval(secs => $3 * 86400)
                 from generate_series(1, $2)""",
            org_id,
            count,
            days_ago,
        )


async def walk(pool: asyncpg.Pool, org_id: int, event: str | None = None) -> list[list[int]]:
    """Every page's ids, following the cursor as the API does (a page and one more row)."""
    pages, cursor = [], None
    while True:
        rows = await audit_log.page(pool, org_id, event=event, before_id=cursor, limit=PER_PAGE + 1)
        pages.append([row["id"] for row in rows[:PER_PAGE]])
        if len(rows) <= PER_PAGE:
            return pages
        cursor = rows[PER_PAGE - 1]["id"]


async def all_ids(pool: asyncpg.Pool, org_id: int) -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select id from audit_log where organization_id = $1 order by id desc", org_id
        )
    return [row["id"] for row in rows]


async def test_pages_walk_the_recent_and_the_old_months_alike(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '200 days', 2)")
    _, org = await owner_and_org(pool, "months", "owner@months.test", has2fa=True)
    await add_entries(pool, org["id"], 150, days_ago=180)
    await add_entries(pool, org["id"], 130, days_ago=1)

    pages = await walk(pool, org["id"])

    assert len(pages) == 3 and all(len(page) == PER_PAGE for page in pages[:-1])
    assert [entry for page in pages for entry in page] == await all_ids(pool, org["id"])
    assert await walk(pool, org["id"], event="member.edit") == pages


async def test_an_entry_whose_time_is_older_than_its_id_still_heads_the_page(
    pool: asyncpg.Pool,
) -> None:
    # An entry's time is its transaction's start: one that began before the entries around the
    # window's edge and wrote after them has the highest id and an older time.
    _, org = await owner_and_org(pool, "edge", "owner@edge.test", has2fa=True)
    await add_entries(pool, org["id"], 120, days_ago=61.5)
    await add_entries(pool, org["id"], 1, days_ago=62.5)

    pages = await walk(pool, org["id"])

    assert [entry for page in pages for entry in page] == await all_ids(pool, org["id"])
    assert pages[0][0] == max(await all_ids(pool, org["id"]))
