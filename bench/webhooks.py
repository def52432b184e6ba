"""Benchmark: webhook delivery against a bare aiohttp loop, to the same local receiver.

    .venv/bin/python bench/webhooks.py [--count 100000] [--concurrency 32]

Writes `--count` audit entries of one organization with one webhook in a fresh database (one
set-based INSERT: the audit_log trigger writes the deliveries; its time is reported), then,
against one aiohttp receiver running in its own process (it answers 200 to every POST):
- the bare loop: the same bodies and headers, built beforehand, posted by `--concurrency`
  tasks over one aiohttp session that reuses its connections: what the HTTP exchange alone
  costs;
- the outbox: one `jobs.webhooks.dispatch` (what one worker process runs) delivering every
  row: claim with FOR UPDATE SKIP LOCKED, build the body from the audit entry, sign it, post
  it over its reused connections, record the answer.
The target is an outbox rate of at least half the bare rate. Prints one JSON object. Uses the
PostgreSQL at DATABASE_URL (default 127.0.0.1:5432); the database it creates is dropped at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import free_port, with_database  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
RUN = uuid.uuid4().hex[:8]
DB = f"require2fa_bench_webhooks_{RUN}"
DSN = with_database(ADMIN_DSN, DB)
WARMUP = 500


# --- The receiver (its own process, so that it does not share our interpreter) ---------------


def serve(port: int) -> None:
    """Answers 200 to every request until SIGTERM, then prints how many it received."""
    from aiohttp import web

    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    print(received, flush=True)


# --- The benchmark ---------------------------------------------------------------------------


async def fill(conn: asyncpg.Connection, settings, url: str, count: int) -> tuple[str, float]:
    """An organization, its webhook (every event) and `count` audit entries; returns the
    secret and the seconds the INSERT took (the trigger's fan-out included)."""
    from require2fa import webhooks

    org_id = await conn.fetchval(
        "insert into organizations (slug, name) values ('bench', 'Bench') returning id"
    )
    secret = webhooks.new_secret()
    await conn.execute(
        """insert into webhooks (organization_id, url, events, secret_encrypted)
           values ($1, $2, '{*}', $3)""",
        org_id,
        url,
        webhooks.encrypt_secret(secret, settings.secret_key),
    )
    started = time.perf_counter()
    await conn.execute(
        """insert into audit_log (organization_id, event, actor_label, target_member_id,
                                  target_user_id, ip_address, data)
           select $1, 'member.pending', 'owner@bench.example', n, n, '127.0.0.1',
                  jsonb_build_object('email', 'member' || n || '@bench.example',
                                     'role', 'member', 'reason', '2fa', 'teams', '[]'::jsonb)
           from generate_series(1, $2) as n""",
        org_id,
        count,
    )
    return secret, time.perf_counter() - started


async def bare_requests(conn: asyncpg.Connection, secret: str) -> list[tuple[bytes, dict]]:
    """The outbox's bodies and headers, built the same way, ready to post."""
    from require2fa import webhooks

    rows = await conn.fetch(
        """select d.id, l.id as audit_id, l.organization_id, l.event, l.actor_user_id,
                  l.actor_token_id, l.actor_label, l.target_member_id, l.target_user_id,
                  l.data, l.created_at, o.slug as org_slug, null::text as actor_email,
                  null::text as actor_name
           from webhook_deliveries d join audit_log l on l.id = d.audit_log_id
           join organizations o on o.id = l.organization_id order by d.id"""
    )
    built = []
    for row in rows:
        body = webhooks.body(row)
        built.append(
            (
                body,
                {
                    webhooks.EVENT_HEADER: row["event"],
                    webhooks.DELIVERY_HEADER: str(row["id"]),
                    webhooks.SIGNATURE_HEADER: webhooks.signature(body, secret),
                    "Content-Type": "application/json",
                },
            )
        )
    return built


async def bare_loop(url: str, requests: list[tuple[bytes, dict]], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: asyncio.Queue[tuple[bytes, dict] | None] = asyncio.Queue()
        for item in requests:
            queue.put_nowait(item)
        for _ in range(concurrency):
            queue.put_nowait(None)

        async def post() -> None:
            while (item := await queue.get()) is not None:
                body, headers = item
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(concurrency)))
        return time.perf_counter() - started


async def main(count: int, concurrency: int, port: int) -> dict:
    from db.migrate import migrate
    from db.pool import connect, create_pool
    from jobs.webhooks import dispatch
    from require2fa.settings import Settings

    url = f"http://127.0.0.1:{port}/hook"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    try:
        conn = await connect(DSN)
        await migrate(conn)
        settings = Settings(environment="development", database_url=DSN)
        secret, insert_seconds = await fill(conn, settings, url, count)
        await conn.execute("vacuum analyze")
        requests = await bare_requests(conn, secret)
        await conn.close()
        pool = await create_pool(DSN, max_size=4)

        await bare_loop(url, requests[:WARMUP], concurrency)  # both sides warm up
        cpu = time.process_time()
        bare_seconds = await bare_loop(url, requests, concurrency)
        bare_cpu = time.process_time() - cpu

        started, cpu = time.perf_counter(), time.process_time()
        report = await dispatch(pool, settings, budget=float("inf"), concurrency=concurrency)
        outbox_seconds = time.perf_counter() - started
        outbox_cpu = time.process_time() - cpu
        async with pool.acquire() as c:
            statuses = dict(
                await c.fetch("select status, count(*) from webhook_deliveries group by status")
            )
        await pool.close()
    finally:
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()

    bare_rate = count / bare_seconds
    outbox_rate = count / outbox_seconds
    return {
        "benchmark": "webhooks",
        "count": count,
        "concurrency": concurrency,
        "audit_insert_with_fan_out_seconds": round(insert_seconds, 3),
        "bare": {
            "seconds": round(bare_seconds, 3),
            "per_second": round(bare_rate, 1),
            "client_cpu_ms_per_request": round(bare_cpu / count * 1000, 3),
        },
        "outbox": {
            "seconds": round(outbox_seconds, 3),
            "per_second": round(outbox_rate, 1),
            "client_cpu_ms_per_request": round(outbox_cpu / count * 1000, 3),
            "delivered": report.delivered,
            "retried": report.retried,
            "failed": report.failed,
            "rows_by_status": statuses,
        },
        "ratio": round(outbox_rate / bare_rate, 3),
        "target_ratio": 0.5,
        "meets_target": outbox_rate >= 0.5 * bare_rate,
        "all_delivered": statuses == {"delivered": count},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="requests in flight (per webhook)"
    )
    args = parser.parse_args()
    from require2fa import logs

    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    os.environ.setdefault("ENVIRONMENT", "development")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        from jobs.webhooks import CONCURRENCY

        result = asyncio.run(main(args.count, args.concurrency or CONCURRENCY, port))
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    received = int(out.strip().splitlines()[-1])
    # Every request reached the receiver once: the warm-up, the bare loop, the outbox.
    result["server_received"] = received
    expected = min(WARMUP, args.count) + 2 * args.count
    result["exactly_once"] = result["all_delivered"] and received == expected
    print(json.dumps(result, indent=2))
