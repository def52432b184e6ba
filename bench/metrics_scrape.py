"""Benchmark: a `/metrics` scrape beside a 1M-member organization in the middle of its run.

    .venv/bin/python bench/metrics_scrape.py [--members 1000000] [--scrapes 30]

Seeds an organization of `--members` (half without 2FA) with `commands.seed`, then puts the
database where a run of that size leaves it while its emails go out: half the members' emails in
the outbox, half of those sent and half still waiting, one enforcement run with its batches of
1,000. Then it measures, over HTTP against the real application (in this process):
- the scrape: `GET /metrics` (PostgreSQL figures, Redis figures, rendering), `--scrapes` times;
- the floor: a static answer, the scrape's last body served by a bare aiohttp handler in this
  process to the same client, `--scrapes` times (what answering with those bytes costs at all),
  and the scrape's own statements (`db.metrics.metrics`, `db.outbox.backlog`) alone on one
  connection, the cheapest reads that yield its figures; `scrape_vs_floor` is the static
  answer's p50 over the scrape's;
- for scale, what the scrape avoids: counting the organization's members with 2FA the way the
  overview does (`db.counts.member_counts`), the figure an operator might be tempted to export.
Prints one JSON object. Uses the PostgreSQL at DATABASE_URL (default 127.0.0.1:5432) and the
Redis at REDIS_URL; its database is dropped at the end.
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
from db import counts, metrics, outbox  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
DB = "require2fa_bench_metrics"
DSN = with_database(ADMIN_DSN, DB)

# A run's outbox: one email per member without 2FA; the older half sent.
OUTBOX_SQL = """
insert into email_outbox (template, to_address, context, dedupe_key, message_id, status,
                          organization_id, member_id, enforcement_id, created_at, sent_at)
select 'removed_for_2fa', m.email, '{}', 'bench:' || m.id, 'bench-' || m.id || '@bench',
       case when n % 2 = 0 then 'sent' else 'queued' end, m.organization_id, m.id, $2,
       now() - interval '10 minutes' + n * interval '1 millisecond',
       case when n % 2 = 0 then now() else null end
from (select m.*, row_number() over (order by m.id) as n from members m
      where m.organization_id = $1 and m.id % 2 = 0) m
"""
RUN_SQL = """
insert into enforcement_runs (organization_id, status, total, removed, batches_total)
values ($1, 'running', $2::bigint, $2::bigint / 2, ($2::bigint / 1000)::int) returning id
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def prepare(members: int) -> int:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'drop database if exists "{DB}" with (force)')
    await admin.execute(f'create database "{DB}"')
    await admin.close()
    conn = await connect(DSN)
    try:
        await migrate(conn)
        settings = Settings(environment="development", database_url=DSN)
        seeded = await seed(conn, settings, slug="big", count=members, enrolled=0.5)
        run_id = await conn.fetchval(RUN_SQL, seeded.organization_id, members)
        await conn.execute(OUTBOX_SQL, seeded.organization_id, run_id)
        columns = "run_id, batch_no, first_member_id, last_member_id, done_at, seconds"
        await conn.execute(
            f"""insert into enforcement_batches ({columns})
                select $1, n, n * 1000, n * 1000 + 999, now(), 0.2 + (n % 7) / 10.0
                from generate_series(1, $2) n""",
            run_id,
            members // 1000,
        )
        await conn.execute("analyze")
        return seeded.organization_id
    finally:
        await conn.close()


async def static_answer(body: bytes, times: int) -> list[float]:
    """`GET` of a bare aiohttp handler answering `body` as it is, `times` times (seconds)."""
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    samples = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(times):
                t = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    await response.read()
                    assert response.status == 200
                samples.append(time.perf_counter() - t)
    finally:
        await runner.cleanup()
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    logs.configure("text")  # logs on stderr; stdout carries only the JSON

    from aiohttp import web

    from api.app import create_app

    started = time.perf_counter()
    org_id = await prepare(args.members)
    prepare_seconds = time.perf_counter() - started
    port = free_port()
    settings = Settings(
        environment="development",
        database_url=DSN,
        redis_url=REDIS_URL,
        redis_namespace="require2fa-bench-metrics",
        base_url=f"http://127.0.0.1:{port}",
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        scrapes: list[float] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(args.scrapes):
                t = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    body = await response.text()
                    assert response.status == 200
                scrapes.append(time.perf_counter() - t)
        pending = next(
            float(line.split()[-1])
            for line in body.splitlines()
            if line.startswith("require2fa_outbox_pending ")
        )
        statics = await static_answer(body.encode(), args.scrapes)
        conn = await connect(DSN)
        try:
            queries = []
            for _ in range(args.scrapes):
                t = time.perf_counter()
                await metrics.metrics(conn)
                await outbox.backlog(conn)
                queries.append(time.perf_counter() - t)
            avoided = []
            for _ in range(5):
                t = time.perf_counter()
                await counts.member_counts(conn, org_id)
                avoided.append(time.perf_counter() - t)
        finally:
            await conn.close()
    finally:
        await runner.cleanup()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()
    scrape_p50 = statistics.median(scrapes)
    floor = statistics.median(statics)
    print(
        json.dumps(
            {
                "benchmark": "metrics_scrape",
                "members": args.members,
                "outbox_pending": pending,
                "prepare_seconds": round(prepare_seconds, 1),
                "scrape_ms_p50": round(scrape_p50 * 1000, 1),
                "scrape_ms_p99": round(percentile(scrapes, 0.99) * 1000, 1),
                "scrape_ms_max": round(max(scrapes) * 1000, 1),
                "floor_static_ms_p50": round(floor * 1000, 2),
                "floor_queries_ms_p50": round(statistics.median(queries) * 1000, 2),
                "scrape_vs_floor": round(floor / scrape_p50, 3),
                "avoided_member_counts_ms_p50": round(statistics.median(avoided) * 1000, 1),
                "scrape_bytes": len(body),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
