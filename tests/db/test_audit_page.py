"""The audit log's pages (`require2fa.audit_log.page`, what the API, the page and the CSV call)
across its month partitions: following the cursors gives every entry once, newest first by
time (then id), whatever month each entry's time puts it in, with each filter, from a cursor of
before (an entry id) too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from require2fa import audit_log
from require2fa.audit_log import AuditFilter
from tests.factories import owner_and_org

PER_PAGE = 100


async def add_entries(
    pool: asyncpg.Pool,
    org_id: int,
    count: int,
    days_ago: float,
    *,
    event: str = "member.edit",
    email: str = "",
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into audit_log (organization_id, event, actor_label, data, created_at)
               select $1, $4, 'owner', jsonb_build_object('email', $5::text),
                      now() - make_interval(secs => $3 * 86400)
                 from generate_series(1, $2)""",
            org_id,
            count,
            days_ago,
            event,
            email,
        )


async def walk(
    pool: asyncpg.Pool,
    org_id: int,
    where: AuditFilter | None = None,
    per_page: int = PER_PAGE,
    cursor: audit_log.Cursor | int | None = None,
) -> list[list[int]]:
    """Every page's ids, following the cursor as the API does (a page and one more row, the
    cursor through its text)."""
    pages = []
    while True:
        rows = await audit_log.page(pool, org_id, cursor=cursor, limit=per_page + 1, where=where)
        pages.append([row["id"] for row in rows[:per_page]])
        if len(rows) <= per_page:
            return pages
        cursor = audit_log.parse_cursor(audit_log.cursor_text(audit_log.cursor_of(rows[-2])))


async def newest_first(pool: asyncpg.Pool, org_id: int, where: str = "true") -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""select id from audit_log where organization_id = $1 and {where}
                 order by created_at desc, id desc""",
            org_id,
        )
    return [row["id"] for row in rows]


def flat(pages: list[list[int]]) -> list[int]:
    return [entry for page in pages for entry in page]


async def test_pages_walk_the_recent_and_the_old_months_alike(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '200 days', 2)")
    _, org = await owner_and_org(pool, "months", "owner@months.test", has2fa=True)
    await add_entries(pool, org["id"], 150, days_ago=180)
    await add_entries(pool, org["id"], 130, days_ago=1)

    pages = await walk(pool, org["id"])

    assert len(pages) == 3 and all(len(page) == PER_PAGE for page in pages[:-1])
    assert flat(pages) == await newest_first(pool, org["id"])
    assert await walk(pool, org["id"], AuditFilter(event="member.edit")) == pages


async def test_an_entry_is_placed_by_its_time_not_its_id(pool: asyncpg.Pool) -> None:
    # An entry's time is its transaction's start: one that began before the entries around a
    # month's edge and wrote after them has the highest id and an older time.
    _, org = await owner_and_org(pool, "edge", "owner@edge.test", has2fa=True)
    await add_entries(pool, org["id"], 120, days_ago=61.5)
    await add_entries(pool, org["id"], 1, days_ago=62.5)
    ids = await newest_first(pool, org["id"])

    pages = await walk(pool, org["id"])

    assert flat(pages) == ids and ids[-1] == max(ids)


async def test_entries_far_apart_and_outside_every_partition(pool: asyncpg.Pool) -> None:
    # More months between entries than a page reads one by one, an entry years ahead and one
    # years back (no partition holds them: the default partition does).
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '12 months', 2)")
    _, org = await owner_and_org(pool, "sparse", "owner@sparse.test", has2fa=True)
    for months_ago in (0, 2, 4, 6, 9, 11):
        await add_entries(pool, org["id"], 3, days_ago=months_ago * 30.5 + 0.5)
    await add_entries(pool, org["id"], 1, days_ago=-5 * 365)
    await add_entries(pool, org["id"], 2, days_ago=8 * 365)
    ids = await newest_first(pool, org["id"])
    assert len(ids) == 21

    for per_page in (1, 4, 100):
        assert flat(await walk(pool, org["id"], per_page=per_page)) == ids, per_page


async def test_every_filter_across_months(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '7 months', 2)")
    _, org = await owner_and_org(pool, "filters", "owner@filters.test", has2fa=True)
    for days_ago in (1, 40, 75, 130, 200):
        await add_entries(pool, org["id"], 4, days_ago, email=f"a{days_ago}@filters.test")
        await add_entries(pool, org["id"], 3, days_ago, event="member.pending", email="b@x.test")
    now = datetime.now(UTC)
    since, until = now - timedelta(days=150), now - timedelta(days=20)
    cases = [
        (AuditFilter(event="member.pending"), "event = 'member.pending'"),
        (AuditFilter(target="a1"), "data->>'email' ilike '%a1%'"),
        (AuditFilter(actor="own", target="b@"), "data->>'email' like 'b@%'"),
        (AuditFilter(actor="nobody"), "false"),
        (
            AuditFilter(since=since, until=until),
            f"created_at >= '{since.isoformat()}' and created_at < '{until.isoformat()}'",
        ),
        (
            AuditFilter(event="member.edit", since=since),
            f"event = 'member.edit' and created_at >= '{since.isoformat()}'",
        ),
    ]
    for where, sql in cases:
        expected = await newest_first(pool, org["id"], sql)
        assert flat(await walk(pool, org["id"], where, per_page=3)) == expected, where


async def test_a_cursor_of_before_is_an_entry_id(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '3 months', 2)")
    _, org = await owner_and_org(pool, "ids", "owner@ids.test", has2fa=True)
    await add_entries(pool, org["id"], 5, days_ago=70)
    await add_entries(pool, org["id"], 5, days_ago=2)
    ids = await newest_first(pool, org["id"])

    assert audit_log.parse_cursor(str(ids[3])) == ids[3]
    assert audit_log.parse_cursor(f"{ids[3]}:0:0") == ids[3]
    assert flat(await walk(pool, org["id"], per_page=2, cursor=ids[3])) == ids[4:]
    # An id that is not one of the organization's entries (another's, or gone): nothing after it.
    assert await walk(pool, org["id"], cursor=max(ids) + 1000) == [[]]
