"""Benchmark: purge a million expired pending members while the API serves another organization.

    .venv/bin/python bench/purge.py [--members 1000000] [--other 10000] [--batch-size 2000]

Seeds an organization with `commands.seed`, turns all its members into pending members removed
for 2FA whose window has passed (one UPDATE), copies the database, then measures:
- the bound: the same work as one statement on the copy: every due row deleted (team links by
  cascade), with its tombstone and its `member.remove` audit entry, on one connection, as many
  as the purge uses;
- the floor, just after the bound on the same connection: the same statement on a minimal
  schema in the copy (`FLOOR_SCHEMA`: members with only the columns the purge reads and a
  primary key, team links, tombstones and audit entries with only a primary key, no triggers
  or foreign keys; the team links deleted in the statement), over a copy of the due rows;
- the purge (`db.maintenance.purge_expired`: batches of one short transaction each, the same
  rows written) on the original, while `GET members` of another organization is requested over
  HTTP from a `require2fa web` process, one request after another; its latency percentiles,
  idle and during the purge.
Targets: the purge at least 0.8 of the bound's rate (`throughput_vs_bound`), and the members
page's p99 during the purge at most twice its idle p99. Prints one JSON object. Uses the
PostgreSQL at DATABASE_URL (default 127.0.0.1:5432) and the Redis at REDIS_URL; the two
databases it creates are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import free_port, with_database  # noqa: E402
from commands.seed import seed  # noqa: E402
from db import maintenance  # noqa: E402
from db.audit import SYSTEM  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.security import new_token, token_hash  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
DB = "require2fa_bench_purge"
DSN = with_database(ADMIN_DSN, DB)
BOUND_DB = "require2fa_bench_purge_bound"

# The one statement that makes every member of the organization (but its owner) a pending
# member removed for 2FA whose reinstatement window closed yesterday.
EXPIRE_SQL = """
update members set user_id = null, pending_reason = '2fa',
       token_hash = sha256(int8send(id)), removed_at = now() - interval '91 days',
       reinstate_by = now() - interval '1 day'
where organization_id = $1 and role <> 'owner'
"""


def percentiles(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    return {
        "requests": len(ordered),
        "p50_ms": ms(cuts[49]) if cuts else ms(ordered[0]),
        "p99_ms": ms(cuts[98]) if cuts else ms(ordered[0]),
        "max_ms": ms(ordered[-1]),
    }


async def prepare(members: int, other: int) -> tuple[int, str]:
    """Both databases, seeded and expired; returns (rows to purge, the other org's API token)."""
    admin = await asyncpg.connect(ADMIN_DSN)
    for name in (DB, BOUND_DB):
        await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.execute(f'create database "{DB}"')
    conn = await connect(DSN)
    await migrate(conn)
    settings = Settings(environment="development")
    doomed = await seed(conn, settings, slug="expired", count=members, enrolled=0.0)
    kept = await seed(conn, settings, slug="other", count=other, enrolled=1.0)
    expired = int((await conn.execute(EXPIRE_SQL, doomed.organization_id)).split()[-1])
    token = new_token()
    await conn.execute(
        "insert into api_tokens (user_id, token_hash, name) values ($1, $2, 'bench')",
        kept.owner_id,
        token_hash(token),
    )
    await conn.execute("vacuum analyze")
    await conn.close()
    await admin.execute(f'create database "{BOUND_DB}" template "{DB}"')
    await admin.close()
    conn = await connect(with_database(ADMIN_DSN, BOUND_DB))
    try:
        await conn.execute(FLOOR_SCHEMA)
        await conn.execute("vacuum analyze floor_members, floor_member_teams")
    finally:
        await conn.close()
    return expired, token


# The floor's tables, filled with a copy of the due members and their team links.
FLOOR_SCHEMA = """
create table floor_members (
    id bigint primary key, organization_id bigint not null, email text not null,
    role text not null, pending_reason text, token_hash bytea, reinstate_by timestamptz);
create table floor_member_teams (
    member_id bigint, team_id bigint, primary key (member_id, team_id));
create table floor_purged (
    member_id bigint primary key, organization_id bigint, token_hash bytea,
    reinstate_by timestamptz);
create table floor_audit (
    id bigint generated always as identity primary key, organization_id bigint, event text,
    actor_label text, target_member_id bigint, data jsonb,
    created_at timestamptz not null default now());
insert into floor_members
select id, organization_id, email, role, pending_reason, token_hash, reinstate_by from members
where pending_reason = '2fa' and reinstate_by <= now();
insert into floor_member_teams
select mt.member_id, mt.team_id from member_teams mt join floor_members m on m.id = mt.member_id;
"""


# The bound: what the purge writes, for every due row at once in one statement: the members
# deleted (their team links by cascade), a tombstone and a `member.remove` entry each.
BOUND_SQL = """
with gone as (
    delete from members m
    where m.pending_reason = '2fa' and m.reinstate_by <= now()
    returning m.id, m.organization_id, m.email, m.role, m.token_hash, m.reinstate_by
), tombstones as (
    insert into purged_members (member_id, organization_id, token_hash, reinstate_by)
    select id, organization_id, token_hash, reinstate_by from gone
    on conflict (member_id) do nothing
)
insert into audit_log (organization_id, event, actor_label, target_member_id, data)
select organization_id, 'member.remove', $1, id,
       jsonb_build_object('reason', $2::text, 'email', email, 'role', role,
                          'reinstate_by', reinstate_by)
from gone
"""


FLOOR_SQL = """
with gone as (
    delete from floor_members m
    where m.pending_reason = '2fa' and m.reinstate_by <= now()
    returning m.id, m.organization_id, m.email, m.role, m.token_hash, m.reinstate_by
), links as (
    delete from floor_member_teams mt using gone where mt.member_id = gone.id
), tombstones as (
    insert into floor_purged (member_id, organization_id, token_hash, reinstate_by)
    select id, organization_id, token_hash, reinstate_by from gone
    on conflict (member_id) do nothing
)
insert into floor_audit (organization_id, event, actor_label, target_member_id, data)
select organization_id, 'member.remove', $1, id,
       jsonb_build_object('reason', $2::text, 'email', email, 'role', role,
                          'reinstate_by', reinstate_by)
from gone
"""


async def bound() -> tuple[int, float, float]:
    """The bound, then the floor, on one connection: (rows, bound seconds, floor seconds)."""
    conn = await connect(with_database(ADMIN_DSN, BOUND_DB))
    try:
        await conn.execute("checkpoint")
        started = time.perf_counter()
        status = await conn.execute(BOUND_SQL, SYSTEM.label, maintenance.PURGE_REASON)
        seconds = time.perf_counter() - started
        written = await conn.fetchrow(
            """select (select count(*) from purged_members) as tombstones,
                      (select count(*) from audit_log where event = 'member.remove') as audit"""
        )
        deleted = int(status.split()[-1])
        assert written["tombstones"] == written["audit"] == deleted, dict(written)
        await conn.execute("checkpoint")
        started = time.perf_counter()
        status = await conn.execute(FLOOR_SQL, SYSTEM.label, maintenance.PURGE_REASON)
        floor_seconds = time.perf_counter() - started
        assert int(status.split()[-1]) == deleted, status
        return deleted, seconds, floor_seconds
    finally:
        await conn.close()


async def start_web(port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": "require2fa-bench",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("require2fa")),
        "web",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def wait_up(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the web process did not come up")


async def get_members(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.get(url, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET members answered {response.status}")
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--other", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=maintenance.PURGE_BATCH)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    logs.configure("text")  # logs on stderr; stdout carries only the JSON

    started = time.perf_counter()
    expired, token = await prepare(args.members, args.other)
    prepare_seconds = time.perf_counter() - started

    port = free_port()
    web = await start_web(port)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/api/0/organizations/other/members/"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, base)
            for _ in range(20):  # warm the pool and caches
                await get_members(session, url, headers)
            idle = [await get_members(session, url, headers) for _ in range(300)]

            # The bound and the floor run under the same requests as the purge, so that all
            # three share the machine alike.
            task = asyncio.create_task(bound())
            during_bound: list[float] = []
            while not task.done():
                during_bound.append(await get_members(session, url, headers))
            bound_rows, bound_seconds, floor_seconds = await task

            conn = await connect(DSN)
            await conn.execute("checkpoint")
            purge = asyncio.create_task(maintenance.purge_expired(conn, batch_size=args.batch_size))
            during: list[float] = []
            while not purge.done():
                during.append(await get_members(session, url, headers))
            result = await purge
            left = await conn.fetchval("select count(*) from members where pending_reason = '2fa'")
            audited = await conn.fetchval(
                "select count(*) from audit_log where event = 'member.remove'"
            )
            await conn.close()
    finally:
        web.terminate()
        await web.wait()
        if not args.keep:
            admin = await asyncpg.connect(ADMIN_DSN)
            for name in (DB, BOUND_DB):
                await admin.execute(f'drop database if exists "{name}" with (force)')
            await admin.close()

    assert result.purged == expired == bound_rows and left == 0 and audited == expired
    print(
        json.dumps(
            {
                "benchmark": "purge",
                "members_purged": result.purged,
                "batches": result.batches,
                "batch_size": args.batch_size,
                "purge_seconds": round(result.seconds, 2),
                "purge_members_per_second": round(result.purged / result.seconds),
                "bound_seconds": round(bound_seconds, 2),
                "bound_members_per_second": round(bound_rows / bound_seconds),
                "throughput_vs_bound": round(bound_seconds / result.seconds, 3),
                "floor_seconds": round(floor_seconds, 2),
                "throughput_vs_floor": round(floor_seconds / result.seconds, 3),
                "bound_vs_floor": round(floor_seconds / bound_seconds, 3),
                "connections": {"purge": 1, "bound": 1, "floor": 1},
                "p99_during_over_idle": round(
                    percentiles(during)["p99_ms"] / percentiles(idle)["p99_ms"], 2
                ),
                "get_members_other_org": {
                    "members": args.other + 1,
                    "per_page": 100,
                    "idle": percentiles(idle),
                    "during_purge": percentiles(during),
                    "during_bound": percentiles(during_bound),
                },
                "setup_seconds": round(prepare_seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
