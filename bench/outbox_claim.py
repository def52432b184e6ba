"""Benchmark: the email claim at a million queued rows across a thousand organizations.

    .venv/bin/python bench/outbox_claim.py [--rows 1000000] [--orgs 1000] [--claims 200]

Seeds `email_outbox` with one `insert … select generate_series` (half of the rows one big
organization's, the rest spread over the others; 2% parked for a later retry; a thousand
transactional rows), then measures:
- `db.outbox.claim` (transactional first, then bulk by start tag), `--claims` times, each a
  real claim of `jobs.email.batch_size` rows at the default EMAIL_RATE: p50/p99 milliseconds,
  and one claim's EXPLAIN (ANALYZE, BUFFERS), rolled back;
- writing rows through `db.outbox.insert_sql` (`enqueue_many`): a batch's 1,000 rows of the big
  organization, and 10 rows of a small one, each in a rolled-back transaction; and the same
  1,000 rows by a plain insert without lane or start tag (the bound).
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
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import with_database  # noqa: E402
from db import outbox  # noqa: E402
from db.migrate import migrate_url  # noqa: E402
from db.pool import connect  # noqa: E402
from jobs.email import LEASE, batch_size  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "require2fa_bench_outbox_claim"
DSN = with_database(ADMIN_DSN, DB)

# Row i belongs to organization 1 (the big one) for the first half, else to 2 … orgs; its start
# tag is its rank within its organization, as if each organization had written its rows alone.
SEED_SQL = """
insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                          organization_id, lane, fair_seq, next_attempt_at)
select 'removed_for_2fa', 'm' || i || '@example.com', '{}'::jsonb, 'bench:' || i,
       '<bench' || i || '@require2fa>', o.org,
       1, row_number() over (partition by o.org order by i),
       case when i % 50 = 0 then now() + interval '1 hour' else now() end
  from generate_series(1, $1::bigint) as i,
       lateral (select case when i <= $1 / 2 then 1 else 2 + i % ($2 - 1) end as org) o
"""
TRANSACTIONAL_SQL = """
insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                          organization_id, lane, fair_seq)
select 'invite', 't' || i || '@example.com', '{}'::jsonb, 'bench:t:' || i,
       '<bench-t' || i || '@require2fa>', 2 + i % 999, 0, 0
  from generate_series(1, 1000) as i
"""


def _emails(org_id: int, count: int, key: str) -> list[outbox.Email]:
    return [
        outbox.Email(
            template="removed_for_2fa",
            to=f"{key}{n}@example.com",
            context={},
            dedupe_key=f"bench:{key}:{n}",
            organization_id=org_id,
        )
        for n in range(count)
    ]


# The bound for writing: the same rows without a lane or a start tag (the statement of before).
PLAIN_SQL = """
insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                          organization_id)
select 'removed_for_2fa', r.to_address, '{}'::jsonb, r.key, '<' || r.key || '@require2fa>', 1
  from unnest($1::text[], $2::text[]) as r(to_address, key)
on conflict (dedupe_key) do nothing
"""


async def _write_ms(conn, emails: list[outbox.Email], times: int, plain: bool = False) -> float:
    spent = []
    for _ in range(times):
        tx = conn.transaction()
        await tx.start()
        started = time.perf_counter()
        if plain:
            await conn.execute(PLAIN_SQL, [e.to for e in emails], [e.dedupe_key for e in emails])
        else:
            await outbox.enqueue_many(conn, emails)
        spent.append((time.perf_counter() - started) * 1000)
        await tx.rollback()
    return round(statistics.median(spent), 2)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=1_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    limit = batch_size(Settings())
    logs.configure("text")  # logs on stderr; stdout carries only the JSON

    admin = await connect(ADMIN_DSN)
    await admin.execute(f'drop database if exists "{DB}" with (force)')
    await admin.execute(f'create database "{DB}"')
    try:
        await migrate_url(DSN)
        conn = await connect(DSN)
        started = time.perf_counter()
        await conn.execute(SEED_SQL, args.rows, args.orgs)
        await conn.execute(TRANSACTIONAL_SQL)
        await conn.execute("vacuum analyze email_outbox")
        seed_seconds = time.perf_counter() - started

        tx = conn.transaction()
        await tx.start()
        plan = await conn.fetch("explain (analyze, buffers) " + outbox.CLAIM_SQL, limit, LEASE)
        await tx.rollback()

        spent = []
        lanes: dict[int, int] = {}
        orgs: set[int] = set()
        for _ in range(args.claims):
            started = time.perf_counter()
            rows = await outbox.claim(conn, limit=limit, lease=timedelta(seconds=30))
            spent.append((time.perf_counter() - started) * 1000)
            for row in rows:
                lanes[row["lane"]] = lanes.get(row["lane"], 0) + 1
            await outbox.mark_sent(conn, [row["id"] for row in rows])  # as the dispatcher does
        orgs = {
            row["organization_id"]
            for row in await conn.fetch(
                "select distinct organization_id from email_outbox where status = 'sent'"
                " and lane = 1"
            )
        }
        write_big = await _write_ms(conn, _emails(1, 1000, "big"), 20)
        write_small = await _write_ms(conn, _emails(5, 10, "small"), 50)
        write_plain = await _write_ms(conn, _emails(1, 1000, "plain"), 20, plain=True)
        await conn.close()
        print(
            json.dumps(
                {
                    "rows_queued": args.rows + 1000,
                    "organizations": args.orgs,
                    "seed_seconds": round(seed_seconds, 1),
                    "claim_rows": limit,
                    "claims": args.claims,
                    "claim_ms_p50": _percentile(spent, 0.5),
                    "claim_ms_p99": _percentile(spent, 0.99),
                    "claimed_transactional": lanes.get(0, 0),
                    "claimed_bulk": lanes.get(1, 0),
                    "claimed_bulk_organizations": len(orgs),
                    "write_1000_rows_ms_p50": write_big,
                    "write_10_rows_ms_p50": write_small,
                    "write_1000_rows_without_lanes_ms_p50": write_plain,
                    "claim_plan": [row[0] for row in plan],
                },
                indent=2,
            )
        )
    finally:
        if not args.keep:
            await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
