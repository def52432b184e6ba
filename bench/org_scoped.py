"""Benchmark: the members page and the compliance count of a 100k-member organization, alone in
the database and beside a 1M-member one.

    .venv/bin/python bench/org_scoped.py [--members 100000] [--beside 1000000] [--runs 20]

Seeds an organization with `commands.seed` (30% of the members without a second factor) and
measures, through asyncpg's prepared statements as the web process runs them (median of `--runs`
after five warm-up runs): the first members page, a page at 90% of the cursor, and
`db.counts.count_noncompliant` (the maintained count), beside `count_noncompliant_directly` (the
same figure member by member, which must agree). Then seeds a 1M-member organization, and a
second 100k one after it (whose ids come after the big one's), and measures all three again.
The bound is the first measurement: no figure of a 100k organization should grow once the 1M
one is there. Prints one JSON object. Uses the PostgreSQL at DATABASE_URL (default
127.0.0.1:5432); the database it creates is dropped at the end.

`--database NAME --slugs a,b` measures organizations already seeded in database NAME instead
(nothing seeded, nothing dropped): to compare two versions of the code on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import with_database  # noqa: E402
from commands.seed import seed  # noqa: E402
from db import counts, members  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
DB = f"require2fa_bench_scoped_{uuid.uuid4().hex[:8]}"


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    for _ in range(5):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


async def figures(conn: asyncpg.Connection, slug: str, runs: int) -> dict[str, Any]:
    org = await conn.fetchval("select id from organizations where slug = $1", slug)
    owner = await conn.fetchval(
        "select user_id from members where organization_id = $1 and role = 'owner'", org
    )
    size = await conn.fetchval("select count(*) from members where organization_id = $1", org)
    deep = await conn.fetchval(
        "select id from members where organization_id = $1 order by id offset $2 limit 1",
        org,
        int(size * 0.9),
    )
    everyone = members.MemberFilter()
    noncompliant = await counts.count_noncompliant(conn, org, except_user_id=owner)
    direct = await counts.count_noncompliant_directly(conn, org, except_user_id=owner)
    return {
        "members": size,
        "page_first_ms": await median_ms(
            lambda: members.page(conn, org, where=everyone, after_id=None, limit=101), runs
        ),
        "page_deep_ms": await median_ms(
            lambda: members.page(conn, org, where=everyone, after_id=deep, limit=101), runs
        ),
        "compliance_count_ms": await median_ms(
            lambda: counts.count_noncompliant(conn, org, except_user_id=owner), runs
        ),
        # The same figure counted member by member (what the maintained count replaced).
        "compliance_direct_ms": await median_ms(
            lambda: counts.count_noncompliant_directly(conn, org, except_user_id=owner),
            max(3, runs // 4) if size > 500_000 else runs,
        ),
        "noncompliant": noncompliant,
        "noncompliant_direct": direct,
        "counts_agree": noncompliant == direct,
    }


async def measure(size: int, beside: int, runs: int) -> dict[str, Any]:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    conn = await connect(with_database(ADMIN_DSN, DB))
    try:
        await migrate(conn)
        settings = Settings(environment="development")
        seeded = {"small": (await seed(conn, settings, slug="small", count=size, enrolled=0.7))}
        await conn.execute("vacuum analyze")
        alone = await figures(conn, "small", runs)
        seeded["big"] = await seed(
            conn, settings, slug="big", count=beside, enrolled=0.7, random_seed=3
        )
        seeded["small-after"] = await seed(
            conn, settings, slug="small-after", count=size, enrolled=0.7
        )
        await conn.execute("vacuum analyze")
        return {
            "seed_seconds": {slug: round(found.seconds, 1) for slug, found in seeded.items()},
            "alone": {"small": alone},
            "beside": {
                slug: await figures(conn, slug, runs) for slug in ("small", "small-after", "big")
            },
            "cpus": os.cpu_count(),
        }
    finally:
        await conn.close()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


async def measure_existing(database: str, slugs: list[str], runs: int) -> dict[str, Any]:
    conn = await connect(with_database(ADMIN_DSN, database))
    try:
        found = {slug: await figures(conn, slug, runs) for slug in slugs}
        return {"database": database, **found, "cpus": os.cpu_count()}
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--beside", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database")
    parser.add_argument("--slugs", default="")
    args = parser.parse_args()
    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    if args.database:
        slugs = args.slugs.split(",")
        print(json.dumps(asyncio.run(measure_existing(args.database, slugs, args.runs)), indent=2))
        return
    print(json.dumps(asyncio.run(measure(args.members, args.beside, args.runs)), indent=2))


if __name__ == "__main__":
    main()
