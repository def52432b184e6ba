"""A deployment over three hosts made of network namespaces: host A and host B each run
`require2fa worker`; the root namespace is the third host, with PostgreSQL, Redis, RabbitMQ,
the SMTP server and a `require2fa clock`. The hosts reach a PostgreSQL server of the test's own
directly (`private_pg`: the server itself has to notice a host that vanishes), and the run's
Redis, RabbitMQ and SMTP server through forwarders (tests/hosts/netns.py).

Host A takes the run's first batches, two of them held inside their transactions (the test
holds a user lock each needs, as an enrollment would); then A is cut off the network. Its
messages come back to B after the broker's timeout (the Redis broker's worker heartbeat, or
the AMQP heartbeat after which RabbitMQ drops A's connection), its transactions end when the
server gives up on its connections (the keepalives our sessions ask for, `db.pool`), and the
run completes with exact counts: removed = the members without a factor, one `member.pending`
and one email each. Then A comes back, and changes nothing. On both brokers;
`make test-faults` (it needs root for `ip netns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from commands.seed import seed
from db import counts, planning, users
from db.migrate import migrate
from db.pool import create_pool
from jobs.enforcement import coordinate
from tests.conftest import NAMESPACE, REDIS_URL, SMTP_PORT, Mailbox
from tests.factories import create_user
from tests.hosts import netns, private_pg

BIN = Path(sys.executable).parent
MEMBERS = 10_000
HELD = (3, 4)  # batches that host A is inside when it is cut off
SUBJECT = "Mandatory: Enable Two-Factor Authentication"


def at(url: str, host: str) -> str:
    """`url` with its host replaced (the port and the rest kept)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    where = f"{host}:{parts.port}" if parts.port else host
    netloc[-1] = where
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


def host_env(gateway: str, pg_port: int, broker_url: str | None) -> dict[str, str]:
    """The environment of a process on a host whose servers are reached at `gateway`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ENVIRONMENT": "development",
        "DATABASE_URL": f"postgresql://postgres@{gateway}:{pg_port}/require2fa",
        "REDIS_URL": at(REDIS_URL, gateway),
        "REDIS_NAMESPACE": NAMESPACE,
        "SMTP_URL": f"smtp://{gateway}:{SMTP_PORT}",
        "BASE_URL": "http://testserver",
        "LOG_FORMAT": "text",
    }
    if broker_url is not None:
        env["BROKER_URL"] = at(broker_url, gateway)
    return env


async def lock_waits(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            """select count(*) from pg_stat_activity
               where wait_event_type = 'Lock' and datname = current_database()"""
        )


async def until(check, what: str, limit: float) -> float:
    """Waits for `await check()` to be true, at most `limit` seconds; returns the seconds."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"gave up after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def outcome(pool: asyncpg.Pool, run_id: int) -> dict:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """select r.status, r.removed, r.skipped, r.total, r.batches_done, r.batches_total,
                      (select count(*) from members where removed_by_run = $1) as members,
                      (select count(*) from audit_log where event = 'member.pending') as audit,
                      (select count(distinct target_member_id) from audit_log
                       where event = 'member.pending') as audited,
                      (select count(*) from email_outbox where enforcement_id = $1) as emails,
                      (select count(*) from email_outbox
                       where enforcement_id = $1 and status = 'sent') as sent
               from enforcement_runs r where r.id = $1""",
            run_id,
        )
    return dict(row)


@pytest.fixture
def deployment_hosts():
    """Hosts a and b, and the private PostgreSQL's port (a database `require2fa`, migrated)."""
    ports = sorted({urlsplit(REDIS_URL).port or 6379, 5672, SMTP_PORT})
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(netns.hosts(("a", "b"), ports))
            port = stack.enter_context(private_pg.server([host.gateway for host in made.values()]))
        except netns.Unavailable as err:
            pytest.skip(f"hosts as network namespaces: {err}")
        try:
            yield made, port
        finally:
            for host in made.values():  # before their servers go
                host.stop_all()


@pytest.fixture
async def host_pool(deployment_hosts) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the private server's database, from the root namespace (the third host)."""
    _, port = deployment_hosts
    admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    await admin.execute("create database require2fa")
    await admin.close()
    private = await create_pool(f"postgresql://postgres@127.0.0.1:{port}/require2fa")
    async with private.acquire() as conn:
        await migrate(conn)
    yield private
    await private.close()


@pytest.mark.faults
@pytest.mark.timeout(900)
async def test_worker_host_cut_off_mid_run(
    host_pool, settings, broker, broker_url, mailbox: Mailbox, deployment_hosts, tmp_path
) -> None:
    made, pg_port = deployment_hosts
    host_a, host_b = made["a"], made["b"]
    pool = host_pool
    owner = await create_user(pool, "owner@hosts.test", has2fa=True)
    async with pool.acquire() as conn:
        seeded = await seed(
            conn, settings, slug="hosts", count=MEMBERS, enrolled=0.5, owner_email=owner["email"]
        )
        org_id = seeded.organization_id
        expected = await counts.count_noncompliant(conn, org_id, except_user_id=owner["id"])
    from tests.jobs.test_enforcement import start_run

    run_id = await start_run(pool, org_id, owner)
    blockers = []
    async with pool.acquire() as conn, conn.transaction():
        await planning.plan(conn, run_id, batch_size=1000)
        victims = [
            await conn.fetchval(
                f"""select u.id from members m join users u on u.id = m.user_id
                    join enforcement_batches b on b.run_id = $2 and b.batch_no = $3
                    where m.organization_id = $1
                      and m.id between b.first_member_id and b.last_member_id
                      and not {users.HAS_2FA_SQL} order by u.id desc limit 1""",
                org_id,
                run_id,
                batch_no,
            )
            for batch_no in HELD
        ]
    for victim in victims:
        conn = await pool.acquire()
        transaction = conn.transaction()
        await transaction.start()
        await users.lock(conn, [victim])
        blockers.append((conn, transaction))

    worker = [str(BIN / "require2fa"), "worker", "--processes", "1"]
    logs = {name: str(tmp_path / f"{name}.log") for name in ("a", "b", "clock")}
    host_a.run(
        [*worker, "--queues", "enforcement"],
        host_env(host_a.gateway, pg_port, broker_url),
        logs["a"],
    )
    coordinate.send(run_id)
    try:
        # A plans nothing (the run is planned), sends the batches, and takes them: two of its
        # threads wait inside batches 3 and 4.
        await until(lambda: _at_least(lock_waits(pool), 2), "host A inside two batches", 120)
        # B runs every queue, the emails' too (a dispatch holds its thread while it sends).
        env_b = host_env(host_b.gateway, pg_port, broker_url)
        host_b.run([*worker, "--threads", "4"], env_b, logs["b"])
        clock_env = {**host_env("127.0.0.1", pg_port, broker_url), "REDIS_URL": REDIS_URL}
        if broker_url is not None:
            clock_env["BROKER_URL"] = broker_url
        # The clock runs on the third host (the root namespace); stopped with host B's processes.
        host_b.processes.append(
            netns.start([str(BIN / "require2fa"), "clock"], clock_env, logs["clock"])
        )
        before_cut = await outcome(pool, run_id)
        host_a.cut()
        cut_at = time.monotonic()
        async with pool.acquire() as conn:
            cut_db = await conn.fetchval("select clock_timestamp()")
    finally:
        for conn, transaction in blockers:
            await transaction.rollback()
            await pool.release(conn)

    async def completed() -> bool:
        return (await outcome(pool, run_id))["status"] == "completed"

    async def delivered() -> bool:
        done = await outcome(pool, run_id)
        return done["sent"] == done["emails"] == expected

    await until(completed, "the run to complete without host A", 300)
    completed_after = time.monotonic() - cut_at
    await until(delivered, "every email sent", 300)
    delivered_after = time.monotonic() - cut_at
    async with pool.acquire() as conn:
        held = await conn.fetch(
            """select batch_no, extract(epoch from done_at - $3) as seconds
               from enforcement_batches
               where run_id = $1 and batch_no = any($2::int[]) order by batch_no""",
            run_id,
            list(HELD),
            cut_db,
        )

    done = await outcome(pool, run_id)
    assert done == {
        "status": "completed",
        "removed": expected,
        "skipped": MEMBERS + 1 - expected,
        "total": MEMBERS + 1,
        "batches_done": 11,
        "batches_total": 11,
        "members": expected,
        "audit": expected,
        "audited": expected,
        "emails": expected,
        "sent": expected,
    }
    removed_mail = [m for m in mailbox.messages if SUBJECT in str(m["Subject"])]
    per_address = Counter(str(m["To"]) for m in removed_mail)
    assert len(per_address) == expected and set(per_address.values()) == {1}

    # Host A comes back: whatever it still held is done already; nothing changes.
    host_a.restore()
    await asyncio.sleep(45)
    after = await outcome(pool, run_id)
    assert after == done
    assert len([m for m in mailbox.messages if SUBJECT in str(m["Subject"])]) == expected
    figures = {
        "broker": "rabbitmq" if broker_url else "redis",
        "members": MEMBERS,
        "removed": expected,
        "batches_done_before_cut": before_cut["batches_done"],
        "seconds_cut_to_run_completed": round(completed_after, 1),
        "seconds_cut_to_all_emails_sent": round(delivered_after, 1),
        "held_batches_done_seconds_after_cut": {
            r["batch_no"]: round(float(r["seconds"]), 1) for r in held
        },
        "host_a_worker_alive_after_return": all(p.poll() is None for p in host_a.processes),
    }
    print("hosts:", json.dumps(figures))
    if isinstance(broker, RabbitmqBroker):
        # This thread's connection sat idle through the waits (a blocking connection answers
        # heartbeats only when used), so the server has closed it: the fixture's last flush
        # opens a new one.
        del broker.connection


async def _at_least(value, wanted: int) -> bool:
    return await value >= wanted
