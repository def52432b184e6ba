"""The clock: one leader among several, messages by actor name, one reminder however many run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from commands.clock import Clock, build_scheduler, schedule, sending_broker
from tests.factories import add_member, create_user, owner_and_org, remove_for_2fa

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clocks(settings, pool) -> Iterator[tuple[Clock, Clock]]:
    first = Clock(settings, sending_broker(settings))
    second = Clock(settings, sending_broker(settings))
    yield first, second
    for clock in (first, second):
        if not clock._loop.is_closed():
            clock.close()


@pytest.fixture
def maintenance_queue(settings, redis_url) -> Iterator[dramatiq.Broker]:
    from jobs.broker import broker

    broker.flush("maintenance")
    yield broker
    broker.flush("maintenance")


def test_the_schedule() -> None:
    items = {item.actor_name: item for item in schedule()}
    assert set(items) == {
        "maintenance.purge_expired",
        "maintenance.expiry_reminders",
        "maintenance.purge_sessions",
        "maintenance.prune",
        "enforcement.sweep",
        "email.sweep",
        "exemptions.lapse",
        "enforcement.scheduled",
        "webhooks.sweep",
    }
    for daily in ("maintenance.purge_expired", "maintenance.expiry_reminders"):
        assert isinstance(items[daily].trigger, CronTrigger)
        assert items[daily].queue_name == "maintenance"
    for sweeper, queue in (
        ("enforcement.sweep", "enforcement"),
        ("email.sweep", "email"),
        ("exemptions.lapse", "enforcement"),
        ("enforcement.scheduled", "enforcement"),
        ("webhooks.sweep", "webhooks"),
    ):
        trigger = items[sweeper].trigger
        assert isinstance(trigger, IntervalTrigger) and trigger.interval == timedelta(minutes=1)
        assert items[sweeper].queue_name == queue
    for name in ("maintenance.purge_sessions", "maintenance.prune"):
        hourly = items[name]
        assert isinstance(hourly.trigger, IntervalTrigger)
        assert hourly.trigger.interval == timedelta(hours=1) and hourly.queue_name == "maintenance"


def test_the_scheduler_runs_each_item(clocks) -> None:
    scheduler = build_scheduler(clocks[0])
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {item.actor_name for item in schedule()} | {"leadership"}
    assert jobs["leadership"].func == clocks[0].is_leader
    assert jobs["email.sweep"].args == ("email.sweep", "email")


def test_one_clock_leads_and_only_it_sends(clocks, maintenance_queue) -> None:
    first, second = clocks
    assert first.is_leader() is True
    assert second.is_leader() is False
    assert first.is_leader() is True  # keeps it

    sent = [clock.tick("maintenance.expiry_reminders", "maintenance") for clock in clocks]
    assert sent == [True, False]
    assert maintenance_queue.do_qsize("maintenance") == 1


async def test_leadership_passes_on_when_the_leader_goes(clocks, pool) -> None:
    first, second = clocks
    assert await asyncio.to_thread(first.is_leader)
    assert not await asyncio.to_thread(second.is_leader)

    # The leader's database session dies (the lock goes with it): the other clock takes over,
    # and the old leader, reconnecting, finds the lock taken.
    async with pool.acquire() as conn:
        # With a timeout, pg_terminate_backend waits until the backend has exited (and so has
        # let the lock go) instead of only signalling it.
        killed = await conn.fetchval(
            f"""select pg_terminate_backend(pid, 10000) from pg_locks
                where {THIS_DATABASE_LOCK}""",
            LOCK,
        )
    assert killed
    await _released(pool)
    assert await asyncio.to_thread(second.is_leader)
    assert not await asyncio.to_thread(first.is_leader)

    # A clock that stops gives the lock up at once (its session ends a moment later).
    await asyncio.to_thread(second.close)
    await _released(pool)
    assert await asyncio.to_thread(first.is_leader)


LOCK = 0x72_32_66_61_63_6B
# The clock's lock in this run's database only: advisory locks are per database, and other test
# runs (each in a database of its own) on the same server hold the same key in theirs.
THIS_DATABASE_LOCK = """locktype = 'advisory' and granted
    and database = (select oid from pg_database where datname = current_database())
    and ((classid::bigint << 32) | objid::bigint) = $1"""


async def _released(pool) -> None:
    """Waits (bounded) until no session holds the clock's lock: the server releases it when the
    old session has ended, which is after the client has let go."""
    async with pool.acquire() as conn:
        for _ in range(600):  # 30 s at most
            held = await conn.fetchval(
                f"select exists (select 1 from pg_locks where {THIS_DATABASE_LOCK})",
                LOCK,
            )
            if not held:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the clock's lock was never released")


@pytest.fixture
def worker(start_worker) -> dramatiq.Worker:
    return start_worker("maintenance")


@pytest.mark.e2e
async def test_two_clocks_send_one_reminder(clocks, pool, settings, worker) -> None:
    from jobs.broker import broker

    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice)
    await remove_for_2fa(pool, member_id, settings.replace(reinstatement_window=timedelta(days=5)))

    # Both clocks fire at the scheduled time; only the leader sends.
    for clock in clocks:
        await asyncio.to_thread(clock.tick, "maintenance.expiry_reminders", "maintenance")
    # A leader that dies right after sending, and its successor, both send: still one email.
    first, second = clocks
    await asyncio.to_thread(first.close)
    assert await asyncio.to_thread(second.tick, "maintenance.expiry_reminders", "maintenance")

    await asyncio.to_thread(broker.join, "maintenance", timeout=60_000)
    await asyncio.to_thread(worker.join)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select member_id, to_address from email_outbox where template = 'expiry_soon'"
        )
    assert [(row["member_id"], row["to_address"]) for row in rows] == [
        (member_id, "alice@example.com")
    ]


async def _line(stream: asyncio.StreamReader, needle: str) -> str:
    """Reads lines until one contains `needle` (bounded, so a broken build fails, not hangs)."""
    async with asyncio.timeout(60):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the clock exited before saying {needle!r}")
            if needle in line:
                return line


async def test_clock_processes_one_leads_and_stop_on_sigterm(settings, pool) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "ENVIRONMENT": "development",
        "LOG_FORMAT": "json",
    }
    command = str(Path(sys.executable).with_name("require2fa"))
    processes = []
    try:
        for _ in range(2):
            process = await asyncio.create_subprocess_exec(
                command,
                "clock",
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            processes.append(process)
            assert process.stdout is not None
            started = await _line(process.stdout, "clock started")
            assert ('"leader": true' in started) == (len(processes) == 1), started
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = [await process.wait() for process in processes]
    assert codes == [0, 0]
