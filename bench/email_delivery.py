"""Benchmark: outbox delivery against a bare aiosmtplib loop, to the same local SMTP server.

    .venv/bin/python bench/email_delivery.py [--count 10000] [--email-rate N] [--connections 4]

Writes `--count` outbox rows (the 2FA removal email) into a fresh database, then, against one
aiosmtpd server running in its own process:
- the floor: every row's message built beforehand (`require2fa.emails`), then the bytes alone
  sent one after the other over one aiosmtplib connection (`sendmail`): what the server and
  the SMTP exchange cost, with nothing to render and nothing to record;
- the bound, a bare loop: the same rows, each rendered and built into a message (as the outbox
  does) a few ahead by one task, and sent over as many reused aiosmtplib connections as the
  outbox uses, each taking the next message ready: what rendering and the SMTP exchange alone
  cost, with the outbox's parallelism;
- the outbox: one `jobs.email.dispatch` delivering every row (claim, render, inline CSS, rate
  limit through Redis, send over its reused SMTP connections, `--connections` of them (default:
  what the workers use), mark sent).
The targets: an outbox rate of at least 0.9 of the bound's (what the outbox adds, claiming, the
limiter, marking sent, retries' bookkeeping, costs at most a tenth) and 0.5 of the floor's.
`--email-rate` is EMAIL_RATE for the outbox run; the default is high enough that the limiter
counts every send without holding any back. Prints one JSON object. Uses the PostgreSQL at
DATABASE_URL (default 127.0.0.1:5432) and the Redis at REDIS_URL; the database and Redis keys
it creates are removed at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file would stand in for
# the standard library's `email` package. Take the folder off before anything imports `email`.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import aiosmtplib  # noqa: E402
import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from commands.devstack import free_port, with_database  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
RUN = uuid.uuid4().hex[:8]
DB = f"require2fa_bench_email_{RUN}"
NAMESPACE = f"require2fa-bench-email-{RUN}"
DSN = with_database(ADMIN_DSN, DB)
BASE_URL = "http://localhost:8000"
WARMUP = 200
TARGET = 0.9  # the outbox's rate over the bound's (the bare loop)
FLOOR_TARGET = 0.5  # the outbox's rate over the floor's (pre-built bytes, one connection)


# --- The SMTP server (its own process, so that it does not share our interpreter) -----------


def serve(port: int) -> None:
    """Accepts and counts messages until SIGTERM, then prints the count."""
    from aiosmtpd.controller import Controller

    class Counter:
        received = 0

        async def handle_DATA(self, _server, _session, _envelope) -> str:
            Counter.received += 1
            return "250 OK"

    controller = Controller(
        Counter(), hostname="127.0.0.1", port=port, server_hostname="bench-smtp"
    )
    controller.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()
    print(Counter.received, flush=True)


# --- The benchmark ---------------------------------------------------------------------------


async def fill_outbox(pool: asyncpg.Pool, count: int, secret_key: str) -> None:
    from db import outbox
    from require2fa.email_contexts import SEALED_LINK, seal_link

    async with pool.acquire() as conn, conn.transaction():
        for n in range(count):
            await outbox.enqueue(
                conn,
                template="removed_for_2fa",
                to=f"member{n}@example.com",
                context={
                    "org_name": "Bench Org",
                    "org_slug": "bench",
                    "member_email": f"member{n}@example.com",
                    # Sealed, as every producer writes it; the render opens it.
                    SEALED_LINK: seal_link(
                        secret_key, f"{BASE_URL}/accept/{n + 1}/{uuid.uuid4().hex}/"
                    ),
                    "reinstate_by": "2026-06-30T10:00:00+00:00",
                },
                dedupe_key=f"removed:bench:{n}",
                member_id=n + 1,
                enforcement_id=1,
            )


async def outbox_rows(pool: asyncpg.Pool) -> list:
    """The outbox's rows, as the dispatcher reads them."""
    async with pool.acquire() as conn:
        return await conn.fetch(
            "select template, to_address, context, message_id from email_outbox order by id"
        )


def client(port: int) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)


async def floor(port: int, rows: list, settings) -> float:
    """Sends every row's message, built beforehand, over one connection: seconds taken."""
    from require2fa.emails import build_message, render

    messages = [
        build_message(
            render(row["template"], row["context"], settings),
            to=row["to_address"],
            message_id=row["message_id"],
            settings=settings,
        )
        for row in rows
    ]
    smtp = client(port)
    await smtp.connect()
    started = time.perf_counter()
    for message in messages:
        await smtp.sendmail(message.sender, [message.to], message.data)
    seconds = time.perf_counter() - started
    await smtp.quit()
    return seconds


async def bare_loop(port: int, rows: list, settings, connections: int) -> float:
    """Renders, builds and sends every row over `connections` SMTP connections: one task renders
    a few messages ahead (yielding after each, so that a sender can read its reply) and each
    connection sends the next message ready, the outbox's pipeline without its database and
    limiter."""
    from require2fa.emails import build_message, render

    clients = [client(port) for _ in range(connections)]
    for smtp in clients:
        await smtp.connect()
    ready: asyncio.Queue = asyncio.Queue(maxsize=8)

    async def prepare() -> None:
        for row in rows:
            message = build_message(
                render(row["template"], row["context"], settings),
                to=row["to_address"],
                message_id=row["message_id"],
                settings=settings,
            )
            await ready.put(message)
            await asyncio.sleep(0)
        for _ in clients:
            await ready.put(None)

    async def deliver(smtp: aiosmtplib.SMTP) -> None:
        while (message := await ready.get()) is not None:
            await smtp.sendmail(message.sender, [message.to], message.data)

    started = time.perf_counter()
    await asyncio.gather(prepare(), *(deliver(client) for client in clients))
    seconds = time.perf_counter() - started
    for smtp in clients:
        await smtp.quit()
    return seconds


async def main(count: int, email_rate: float, connections: int, port: int) -> dict:
    from db.migrate import migrate
    from db.pool import connect, create_pool
    from jobs.email import dispatch
    from require2fa.settings import Settings

    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        conn = await connect(DSN)
        await migrate(conn)
        await conn.close()
        pool = await create_pool(DSN, max_size=4)
        settings = Settings(
            environment="development",
            database_url=DSN,
            redis_url=REDIS_URL,
            redis_namespace=NAMESPACE,
            smtp_url=f"smtp://127.0.0.1:{port}",
            email_rate=email_rate,
            base_url=BASE_URL,
        )
        await fill_outbox(pool, count, settings.secret_key)

        rows = await outbox_rows(pool)
        # The server, our client and the templates warm up.
        await bare_loop(port, rows[:WARMUP], settings, connections)
        floor_seconds = await floor(port, rows, settings)
        cpu = time.process_time()
        bare_seconds = await bare_loop(port, rows, settings, connections)
        bare_cpu = time.process_time() - cpu

        started, cpu = time.perf_counter(), time.process_time()
        report = await dispatch(pool, redis, settings, budget=float("inf"), connections=connections)
        outbox_seconds = time.perf_counter() - started
        outbox_cpu = time.process_time() - cpu
        async with pool.acquire() as conn:
            statuses = dict(
                await conn.fetch("select status, count(*) from email_outbox group by status")
            )
        await pool.close()
    finally:
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()
        keys = [key async for key in redis.scan_iter(f"{NAMESPACE}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    floor_rate = count / floor_seconds
    bare_rate = count / bare_seconds
    outbox_rate = count / outbox_seconds
    return {
        "benchmark": "email",
        "count": count,
        "email_rate_setting": email_rate,
        "outbox_connections": connections,
        "floor": {
            "connections": 1,
            "seconds": round(floor_seconds, 3),
            "per_second": round(floor_rate, 1),
        },
        "bound": {
            "connections": connections,
            "seconds": round(bare_seconds, 3),
            "per_second": round(bare_rate, 1),
            "client_cpu_ms_per_email": round(bare_cpu / count * 1000, 3),
        },
        "outbox": {
            "seconds": round(outbox_seconds, 3),
            "per_second": round(outbox_rate, 1),
            "client_cpu_ms_per_email": round(outbox_cpu / count * 1000, 3),
            "sent": report.sent,
            "retried": report.retried,
            "failed": report.failed,
            "rows_by_status": statuses,
        },
        "ratio": round(outbox_rate / bare_rate, 3),
        "target_ratio": TARGET,
        "floor_ratio": round(outbox_rate / floor_rate, 3),
        "target_floor_ratio": FLOOR_TARGET,
        "meets_target": outbox_rate >= TARGET * bare_rate
        and outbox_rate >= FLOOR_TARGET * floor_rate,
        "all_sent": statuses == {"sent": count},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--email-rate", type=float, default=1_000_000.0)
    parser.add_argument(
        "--connections", type=int, default=None, help="SMTP connections of the dispatch"
    )
    args = parser.parse_args()
    from require2fa import logs

    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    # `jobs` builds its broker from the environment when imported: this run's, in development.
    os.environ.update(ENVIRONMENT="development", REDIS_URL=REDIS_URL, REDIS_NAMESPACE=NAMESPACE)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        from jobs.email import CONNECTIONS

        connections = args.connections or CONNECTIONS
        result = asyncio.run(main(args.count, args.email_rate, connections, port))
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    received = int(out.strip().splitlines()[-1])
    # Every message reached the server once: the warm-up, the floor, the bound, the outbox.
    result["server_received"] = received
    expected = min(WARMUP, args.count) + 3 * args.count
    result["exactly_once"] = result["all_sent"] and received == expected
    print(json.dumps(result, indent=2))
