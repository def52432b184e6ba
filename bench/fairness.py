"""Benchmark: many organizations on one deployment, with and without a large run beside them.

    .venv/bin/python bench/fairness.py [--members 100000] [--small 20] [--email-rate 200]

Two `dramatiq jobs` worker processes (queues `enforcement` and `email`) send to an SMTP sink in
this process at `--email-rate` (EMAIL_RATE, lowered from the default 100 × 10 so that a 100k
run's removal emails, 30% of its members, make a backlog of minutes). Twice, on one database:
- the bound: `--small` organizations of 10 members without 2FA turn the requirement on one after
  another (every 0.5 s), and with each one an invitation and a security notice are queued;
- the same, once a `--members` organization's run (70% enrolled) is in its removals, with its
  removal emails queued ahead.
For the small organizations' emails and for the transactional ones: p50/p99 seconds from the
row being queued (`created_at`) to the sink accepting the message, in each case; and how many
of the large organization's emails were sent meanwhile (it is not waited for). Prints one JSON
object. Uses the PostgreSQL at DATABASE_URL (default 127.0.0.1:5432) and the Redis at
REDIS_URL; the database and Redis keys it creates are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from commands.devstack import free_port, with_database  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
RUN = uuid.uuid4().hex[:8]
DB = f"require2fa_bench_fairness_{RUN}"
DSN = with_database(ADMIN_DSN, DB)
NAMESPACE = f"require2fa-bench-{RUN}"
BASE = "http://bench.example"
SPACING = 0.5  # seconds between two small organizations turning the requirement on


class Sink:
    """Keeps when each Message-ID was accepted."""

    def __init__(self) -> None:
        self.accepted: dict[str, datetime] = {}

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.accepted[str(message["Message-ID"])] = datetime.now(UTC)
        return "250 OK"


def figures(seconds: list[float]) -> dict[str, float | int]:
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"count": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 3)}


async def start_run(conn: asyncpg.Connection, org_id: int, owner_id: int, email: str) -> int:
    from db.audit import Actor
    from require2fa import organization_settings

    async with conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org_id,
            actor=Actor(user_id=owner_id, label=email, ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.run is not None  # its commit wakes a coordinator (jobs.wakeup)
    return int(change.run["id"])


async def transactional(conn: asyncpg.Connection, key: str, org_id: int) -> None:
    """An invitation and a security notice, as their use cases queue them (the commit wakes
    the email dispatcher)."""
    from db import outbox

    async with conn.transaction():
        await outbox.enqueue(
            conn,
            template="invite",
            to=f"hire-{key}@example.com",
            context={
                "org_name": key,
                "org_slug": key,
                "inviter": "Owner",
                "accept_url": f"{BASE}/accept/1/token/",
            },
            dedupe_key=f"bench:invite:{key}",
            organization_id=org_id,
        )
        await outbox.enqueue(
            conn,
            template="security_notice",
            to=f"user-{key}@example.com",
            context={
                "action": "added",
                "factor": "totp",
                "factor_name": "Phone",
                "security_url": f"{BASE}/account/security/",
            },
            dedupe_key=f"bench:notice:{key}",
        )


async def scenario(
    conn: asyncpg.Connection, settings: Any, sink: Sink, prefix: str, small: int, big: int
) -> dict[str, Any]:
    from commands.seed import seed

    orgs = []
    for n in range(small):
        slug = f"{prefix}-small-{n}"
        seeded = await seed(conn, settings, slug=slug, count=10, enrolled=0.0)
        owner = await conn.fetchrow(
            "select user_id, email from members where organization_id = $1 and role = 'owner'",
            seeded.organization_id,
        )
        orgs.append((seeded.organization_id, owner["user_id"], owner["email"], slug))
    big_sent_before = 0
    big_id = None
    if big:
        seeded = await seed(conn, settings, slug=f"{prefix}-big", count=big, enrolled=0.7)
        big_id = seeded.organization_id
        owner = await conn.fetchrow(
            "select user_id, email from members where organization_id = $1 and role = 'owner'",
            big_id,
        )
        await start_run(conn, big_id, owner["user_id"], owner["email"])
        # In its removals, with a backlog of removal emails queued ahead.
        wanted = min(5_000, big // 10)
        await until(lambda: _queued(conn, big_id, wanted))
        big_sent_before = await _sent(conn, big_id)

    started = time.perf_counter()
    for org_id, owner_id, email, slug in orgs:
        await start_run(conn, org_id, owner_id, email)
        await transactional(conn, f"{prefix}-{slug}", org_id)
        await asyncio.sleep(SPACING)
    small_ids = [o[0] for o in orgs]
    mine = f"bench:%:{prefix}-%"
    await until(lambda: _small_done(conn, small_ids, mine, 10 * small))
    seconds = time.perf_counter() - started
    rows = await conn.fetch(
        """select template, message_id, created_at from email_outbox
            where organization_id = any($1::bigint[]) or dedupe_key like $2""",
        small_ids,
        mine,
    )
    from require2fa.email_classes import BULK, CLASS_OF

    bulk, trans = [], []
    for row in rows:
        waited = (sink.accepted[row["message_id"]] - row["created_at"]).total_seconds()
        (bulk if CLASS_OF[row["template"]] == BULK else trans).append(waited)
    result: dict[str, Any] = {
        "small_organizations_bulk_s": figures(bulk),
        "transactional_s": figures(trans),
        "seconds": round(seconds, 1),
    }
    if big_id is not None:
        result["big_run_emails_queued"] = await conn.fetchval(
            "select count(*) from email_outbox where organization_id = $1", big_id
        )
        result["big_run_emails_sent_meanwhile"] = await _sent(conn, big_id) - big_sent_before
    return result


async def until(check: Any) -> None:
    while True:
        if await check():
            return
        await asyncio.sleep(0.2)


async def _queued(conn: asyncpg.Connection, org_id: int, wanted: int) -> bool:
    queued = await conn.fetchval(
        "select count(*) from email_outbox where organization_id = $1", org_id
    )
    return queued >= wanted


async def _small_done(
    conn: asyncpg.Connection, small_ids: list[int], mine: str, removals: int
) -> bool:
    """Every email of the small organizations and of this scenario's transactional ones is
    sent, their runs' removal emails all queued."""
    row = await conn.fetchrow(
        """select count(*) filter (where status <> 'sent') as unsent,
                  count(*) filter (where template = 'removed_for_2fa') as removals
             from email_outbox
            where organization_id = any($1::bigint[]) or dedupe_key like $2""",
        small_ids,
        mine,
    )
    return row["unsent"] == 0 and row["removals"] >= removals


async def _sent(conn: asyncpg.Connection, org_id: int) -> int:
    return await conn.fetchval(
        "select count(*) from email_outbox where organization_id = $1 and status = 'sent'", org_id
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--email-rate", type=float, default=200.0)
    args = parser.parse_args()
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": NAMESPACE,
        "BASE_URL": BASE,
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "EMAIL_RATE": str(args.email_rate),
        "LOG_FORMAT": "json",
    }
    os.environ.update(env)  # jobs.broker reads these when imported

    from commands.dev import ProcessGroup
    from db.migrate import migrate
    from db.pool import connect
    from require2fa import logs
    from require2fa.settings import Settings

    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    group = None
    try:
        conn = await connect(DSN)
        await migrate(conn)
        settings = Settings.from_env(env)
        log_path = Path(tempfile.mkstemp(prefix=f"{DB}.workers.", suffix=".log")[1])
        group = ProcessGroup(env, log_path=log_path)
        command = [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "4"]
        command += ["--queues", "enforcement", "email"]
        for n in range(2):
            group.start(f"worker-{n}", command)
        await asyncio.sleep(5)  # they import and open their pools
        bound = await scenario(conn, settings, sink, "alone", args.small, 0)
        beside = await scenario(conn, settings, sink, "beside", args.small, args.members)
        await conn.close()
    finally:
        if group is not None:
            group.stop()
        controller.stop()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{NAMESPACE}*"):
            client.delete(key)
        client.close()
    print(
        json.dumps(
            {
                "benchmark": "fairness",
                "email_rate": args.email_rate,
                "workers": {"processes": 2, "threads_each": 4},
                "big_members": args.members,
                "small_organizations": args.small,
                "bound_without_big_run": bound,
                "beside_big_run": beside,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
