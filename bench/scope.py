"""Benchmark: an organization whose requirement is scoped to one team of 10% of its members.

    .venv/bin/python bench/scope.py [--members 1000000] [--runs 10]

Seeds an organization with `commands.seed` (30% of the members without a second factor), adds
a team `tenth` holding every tenth member, and measures (median of `--runs` after warm-up):
`db.counts.count_noncompliant` without a scope (the maintained count) and with the scope
`{"teams": ["tenth"]}` (counted by query: the counts per factor mask cannot tell the team apart),
against its bound: the same count read from the team's members (`member_teams` by team, then
each member and their factors), the shortest way we know; and the candidates of one batch of
the scoped run. Then the whole run (`--action`, default `block`), in process and one batch after
another (`jobs.enforcement.remove_batch_now` for each, emails queued and not sent): the seconds
from its planning to its last batch, against the bound: the same members acted on again (once
the run's are reset) by one set-based statement over the scope's members, with their audit
entries and outbox rows (`bench/enforce.py`'s bound SQL), on one connection as the run here.
Prints one JSON object. Uses the PostgreSQL at DATABASE_URL (default 127.0.0.1:5432); the
database it creates is dropped at the end.
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

from bench import enforce  # noqa: E402
from commands.devstack import with_database  # noqa: E402
from commands.seed import seed  # noqa: E402
from db import batches, counts  # noqa: E402
from db.audit import Actor  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.outbox import MESSAGE_ID_SQL  # noqa: E402
from db.pool import connect, create_pool  # noqa: E402
from jobs.enforcement import coordinate_run, remove_batch_now  # noqa: E402
from require2fa import compliance, organization_settings  # noqa: E402
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


# The scoped count read from the team's members (`member_teams_team`), then each one's member
# row and factors: what `count_noncompliant` with the scope answers, the shortest way we know.
COUNT_BOUND_SQL = f"""
select count(*) from teams t
join member_teams mt on mt.team_id = t.id
join members m on m.id = mt.member_id
where t.organization_id = $1 and t.slug = 'tenth' and m.user_id is not null
  and {compliance.noncompliant_sql("m.user_id", exempt_until_sql="m.exempt_2fa_until")}
"""


async def bound(
    conn: asyncpg.Connection, org_id: int, run_id: int, owner_id: int, action: str, expected: int
) -> float:
    """The run's work again on the same members, by one set-based statement (`bench/enforce.py`'s
    bound) over the scope: the run's members are first put back as they were (active, not
    blocked), under another run's id. Returns its seconds."""
    if action == "block":
        await conn.execute(
            """update members set blocked_at = null, blocked_by_run = null
               where blocked_by_run = $1""",
            run_id,
        )
    else:
        await conn.execute(
            """update members set user_id = removed_user_id, pending_reason = null,
                      token_hash = null, reinstate_by = null, removed_at = null,
                      removed_by_run = null, removal_reason = null
               where removed_by_run = $1""",
            run_id,
        )
    await conn.execute("vacuum analyze members")
    bound_run = await conn.fetchval(
        """insert into enforcement_runs (organization_id, actor_user_id, status)
           values ($1, $2, 'completed') returning id""",
        org_id,
        owner_id,
    )
    sql = (enforce.BLOCK_BOUND_SQL if action == "block" else enforce.BOUND_SQL).format(
        message_id=MESSAGE_ID_SQL.format(key="k.key"),
        has_2fa_user=compliance.second_factor_sql("u.id", level_sql="o.require_2fa_level"),
        has_2fa_candidate=compliance.second_factor_sql("c.user_id", level_sql="$4::text"),
        any_factor_candidate=compliance.second_factor_sql("c.user_id"),
        in_scope=enforce.bound_scope_sql(scoped=True),
    )
    await conn.execute("checkpoint")
    started = time.perf_counter()
    done = await conn.fetchval(sql, org_id, owner_id, bound_run, "any", 0, 2**62, None, ["tenth"])
    seconds = time.perf_counter() - started
    assert done == expected, (done, expected)
    return seconds


async def measure(size: int, runs: int, action: str) -> dict[str, Any]:
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
        figures["count_bound_ms"] = await median_ms(
            lambda: conn.fetchval(COUNT_BOUND_SQL, org_id), runs
        )
        assert await conn.fetchval(COUNT_BOUND_SQL, org_id) == scoped
        figures["count_scoped_vs_bound"] = round(
            figures["count_bound_ms"] / figures["count_scoped_ms"], 3
        )
        owner = await conn.fetchrow(
            "select user_id from members where organization_id = $1 and role = 'owner'", org_id
        )
        expected = await counts.count_noncompliant(
            conn, org_id, except_user_id=owner["user_id"], scope=scope
        )
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            await conn.execute("checkpoint")
            started = time.perf_counter()
            async with pool.acquire() as c, c.transaction():
                change = await organization_settings.change_organization(
                    c,
                    organization_settings.SettingsChange(
                        require_2fa=True, scope=Scope((), ("tenth",)), action=action
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
            planned = time.perf_counter() - started
            batches_total = await conn.fetchval(
                "select batches_total from enforcement_runs where id = $1", run_id
            )

            async def one_batch_candidates() -> None:  # its transaction only reads and locks
                async with pool.acquire() as c, c.transaction():
                    head = await batches.start_batch(c, run_id, batches_total // 2)
                    assert head is not None
                    await batches.candidates(c, head)

            figures["batch_candidates_scoped_ms"] = await median_ms(one_batch_candidates, runs)
            todo = [batch_no for _, batch_no in sent]
            done = 0
            started = time.perf_counter()
            swept = 0
            while todo:  # each batch records the run's next one, as the workers send it
                result = await remove_batch_now(pool, settings, run_id, todo.pop(0))
                done += 1
                if result is not None and result.next_batch is not None:
                    todo.append(result.next_batch)
                if not todo:  # what the sweeper would send again: batches not done yet
                    todo = [
                        r["batch_no"]
                        for r in await conn.fetch(
                            """select batch_no from enforcement_batches
                               where run_id = $1 and done_at is null order by batch_no""",
                            run_id,
                        )
                    ]
                    swept += len(todo)
            seconds = planned + time.perf_counter() - started
            run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
            assert run["status"] == "completed", dict(run)
            assert run["removed"] == expected, (run["removed"], expected)
            figures.update(
                action=action,
                run_seconds=round(seconds, 2),
                plan_seconds=round(planned, 3),
                batches=run["batches_total"],
                members_in_scope=run["total"],
                acted_on=run["removed"],
                batches_not_chained=swept,  # done as the sweeper would send them
            )
        finally:
            await pool.close()
        bound_seconds = await bound(conn, org_id, run_id, owner["user_id"], action, expected)
        figures["bound_seconds"] = round(bound_seconds, 2)
        figures["run_vs_bound"] = round(bound_seconds / seconds, 3)
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
    parser.add_argument("--action", choices=("remove", "block"), default="block")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.members, args.runs, args.action)), indent=2))


if __name__ == "__main__":
    main()
