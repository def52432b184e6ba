"""The clock (`require2fa clock`): sends the scheduled jobs' messages at their times.

Daily: `maintenance.purge_expired` and `maintenance.expiry_reminders`. Hourly:
`maintenance.purge_sessions` and `maintenance.prune` (retention). Every minute: the
sweepers `enforcement.sweep`, `email.sweep` and `webhooks.sweep`, which re-send what a crashed
worker left behind, `exemptions.lapse`, which ends the exemptions whose time has come, and
`enforcement.scheduled`, which starts the runs scheduled for now and sends their countdown
reminders.

Two clocks running at once double nothing, for two reasons. Only the clock holding a PostgreSQL
advisory lock (session level, on a connection of its own) sends anything; the others try to take
the lock every `LEADERSHIP_EVERY` seconds, so one of them leads within seconds of the leader's
session ending. And every job is idempotent by construction, so the brief moment where a dying
leader and its successor both send changes nothing either.

Messages go out by actor name, through a broker built as the workers' is (`BROKER_URL`, else
Redis) but without middleware: the clock runs no actor.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg
import dramatiq
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from db.pool import connect
from jobs.broker import DEFAULT_REDIS_URL, build_broker
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

# Arbitrary constant naming the clock's leadership among all advisory locks ("r2fack").
LOCK_KEY = 0x72_32_66_61_63_6B


@dataclass(frozen=True)
class Scheduled:
    actor_name: str
    queue_name: str
    trigger: BaseTrigger


def schedule() -> list[Scheduled]:
    """What the clock sends, and when (UTC)."""
    return [
        Scheduled("maintenance.purge_expired", "maintenance", CronTrigger(hour=3, timezone=UTC)),
        Scheduled("maintenance.expiry_reminders", "maintenance", CronTrigger(hour=9, timezone=UTC)),
        Scheduled(
            "maintenance.purge_sessions", "maintenance", IntervalTrigger(hours=1, timezone=UTC)
        ),
        Scheduled("maintenance.prune", "maintenance", IntervalTrigger(hours=1, timezone=UTC)),
        Scheduled("enforcement.sweep", "enforcement", IntervalTrigger(minutes=1, timezone=UTC)),
        Scheduled("email.sweep", "email", IntervalTrigger(minutes=1, timezone=UTC)),
        Scheduled("exemptions.lapse", "enforcement", IntervalTrigger(minutes=1, timezone=UTC)),
        Scheduled("enforcement.scheduled", "enforcement", IntervalTrigger(minutes=1, timezone=UTC)),
        Scheduled("webhooks.sweep", "webhooks", IntervalTrigger(minutes=1, timezone=UTC)),
    ]


class Clock:
    """Leadership (the advisory lock) and sending. Its connection lives on a private event loop
    that the scheduler's one worker thread drives."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        assert settings.database_url, "the clock needs DATABASE_URL"
        self.settings = settings
        self.broker = broker
        self.leader = False
        self._conn: asyncpg.Connection | None = None
        self._loop = asyncio.new_event_loop()
        self._mutex = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        with self._mutex:
            return self._loop.run_until_complete(coro)

    async def _check(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self.leader = False
                self._conn = await connect(self.settings.database_url or "")
            if self.leader:
                # The lock lasts as long as this session; a query proves the session is alive.
                await self._conn.fetchval("select 1")
            else:
                self.leader = await self._conn.fetchval("select pg_try_advisory_lock($1)", LOCK_KEY)
                if self.leader:
                    log.info("clock leads")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("clock lost its database connection", error=str(err))
            self.leader = False
            await self._drop()
        return self.leader

    async def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def is_leader(self) -> bool:
        """Takes the lock when free; False while another clock holds it or the database is away."""
        return bool(self._run(self._check()))

    def tick(self, actor_name: str, queue_name: str) -> bool:
        """Sends one message to `actor_name` if this clock leads; True when it did."""
        if not self.is_leader():
            return False
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name, actor_name=actor_name, args=(), kwargs={}, options={}
        )
        self.broker.enqueue(message)
        # Debug: every minute, per sweeper; what a sweep found is the worker's line to log.
        log.debug("clock sent", actor=actor_name, message_id=message.message_id)
        return True

    def close(self) -> None:
        """Closes the connection, which gives up the lock at once, and the broker's."""

        async def close() -> None:
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.close()
            self._conn = None

        self._run(close())
        self.leader = False
        self._loop.close()
        self.broker.close()


# How often a follower tries the lock (and the leader proves its session alive). A new leader
# sends each item at that item's next time.
LEADERSHIP_EVERY = 10


def build_scheduler(clock: Clock) -> BlockingScheduler:
    # One worker thread: the clock's event loop must not be driven by two threads at once.
    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone=UTC,
    )
    for item in schedule():
        scheduler.add_job(
            clock.tick,
            item.trigger,
            args=(item.actor_name, item.queue_name),
            id=item.actor_name,
            name=item.actor_name,
        )
    scheduler.add_job(
        clock.is_leader,
        IntervalTrigger(seconds=LEADERSHIP_EVERY, timezone=UTC),
        id="leadership",
        name="leadership",
    )
    return scheduler


def sending_broker(settings: Settings) -> dramatiq.Broker:
    """A broker that only sends, to the workers' broker (BROKER_URL, else Redis) and namespace.
    No middleware: sending runs none, and the clock imports no actor module (the workers own
    those)."""
    return build_broker(
        settings.broker_url or settings.redis_url or DEFAULT_REDIS_URL,
        settings.redis_namespace,
        middleware=[],
    )


def run(settings: Settings) -> None:
    """Runs the clock in the foreground until SIGINT or SIGTERM."""
    # APScheduler's INFO is two lines per job run ("Running job", "executed successfully"),
    # every ten seconds for the leadership check: its warnings (a missed run, an error) stay.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    clock = Clock(settings, sending_broker(settings))
    scheduler = build_scheduler(clock)

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    clock.is_leader()
    log.info("clock started", leader=clock.leader, jobs=[item.actor_name for item in schedule()])
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        clock.close()
