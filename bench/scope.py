"""Benchmark: an organization whose requirement is scoped to one team of 10% of its members.

    .venv/bin/python bench/scope.py [--members 1000000] [--runs 10]

Seeds an organization with `commands.seed` (30% of the members without a second factor), adds
a team `tenth` holding every tenth member, and measures (median of `--runs` after warm-up):
`db.counts.count_noncompliant` without a scope (the maintained count) and with the scope
`{"teams": ["tenth"]}` (counted by query: the counts per factor mask cannot tell the team apart),
and the candidates of one 1,000-member batch with the scope. Then the whole run's batches, in
process (`jobs.enforcement.remove_batch_now` for each, emails queued and not sent), with the
action `block`: the seconds from the first batch to the last. Prints one JSON object. Uses the
PostgreSQL at DATABASE_URL (default 127.0.0.1:5432); the database it creates is dropped at the
end.
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
from db import batches, counts  # noqa: E402
from db.audit import Actor  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect, create_pool  # noqa: E402
from jobs.enforcement import coordinate_run, remove_batch_now  # noqa: E402
from require2fa import organization_settings  # noqa: E402
from require2fa.requirement import Scope  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
DB = f"require2fa_bench_scope_{uuid.uuid4().hex[:8]}"


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    for _ in range(3):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


async def measure(size: int, runs: int) -> dict[str, Any]:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    dsn = with_database(ADMIN_DSN, DB)
    conn = await connect(dsn)
    try:
        await migrate(conn)
        settings = Settings(environment="development", database_url=dsn)
        found = await seed(conn, settings, slug="big", count=size, enrolled=0.7)
        org_id = found.organization_id
        await conn.execute(
            """with t as (insert into teams (organization_id, slug, name)
                          values ($1, 'tenth', 'Tenth') returning id)
               insert into member_teams (member_id, team_id)
               select m.id, t.id from members m, t
               where m.organization_id = $1 and m.id % 10 = 0""",
            org_id,
        )
        await conn.execute("vacuum analyze")
        scope = ((), ("tenth",))
        unscoped = await counts.count_noncompliant(conn, org_id, except_user_id=None)
        scoped = await counts.count_noncompliant(conn, org_id, except_user_id=None, scope=scope)
        figures: dict[str, Any] = {
            "members": size,
            "noncompliant": unscoped,
            "noncompliant_in_scope": scoped,
            "count_ms": await median_ms(
                lambda: counts.count_noncompliant(conn, org_id, except_user_id=None), runs
            ),
            "count_scoped_ms": await median_ms(
                lambda: counts.count_noncompliant(conn, org_id, except_user_id=None, scope=scope),
                runs,
            ),
        }
        owner = await conn.fetchrow(
            "select user_id from members where organization_id = $1 and role = 'owner'", org_id
        )
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            async with pool.acquire() as c, c.transaction():
                change = await organization_settings.change_organization(
                    c,
                    organization_settings.SettingsChange(
                        require_2fa=True, scope=Scope((), ("tenth",)), action="block"
                    ),
                    organization_id=org_id,
                    actor=Actor(user_id=owner["user_id"], label="bench"),
                    role="owner",
                    recently_authenticated=True,  # a scope from everyone narrows it
                )
            assert change.run is not None
            run_id = change.run["id"]
            sent: list[tuple[int, int]] = []
            await coordinate_run(pool, run_id, send=lambda *a: sent.append(a))

            async def one_batch_candidates() -> None:
                async with pool.acquire() as c, c.transaction():
                    head = await batches.start_batch(c, run_id, sent[len(sent) // 2][1])
                    assert head is not None
                    await batches.candidates(c, head)

            figures["batch_candidates_scoped_ms"] = await median_ms(one_batch_candidates, runs)
            started = time.perf_counter()
            for _, batch_no in sent:
                await remove_batch_now(pool, settings, run_id, batch_no)
            figures["block_run_seconds"] = round(time.perf_counter() - started, 1)
            figures["batches"] = len(sent)
            figures["blocked"] = await conn.fetchval(
                "select count(*) from members where blocked_by_run = $1", run_id
            )
        finally:
            await pool.close()
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        await conn.close()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.members, args.runs)), indent=2))


if __name__ == "__main__":
    main()
