"""Enforcement on a date: start the runs whose time has come, send the countdown reminders.

The clock sends `enforcement.scheduled` every minute; it calls `tick`. Both halves are
idempotent: a run starts through an UPDATE that only a run still `scheduled` passes, and each
countdown email has a dedupe key naming the run, the stage and the member, so two clocks, a
redelivered message or a clock restarted across the moment start each run once and send each
reminder once. A reminder goes only to members who still do not meet the requirement when the
chunk is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from db import reminders, schedule
from require2fa import email_contexts


@dataclass(frozen=True)
class Tick:
    started: list[int]  # runs that became `queued` now (their commit wakes the coordinators)
    reminders: int  # countdown emails queued now


async def tick(conn: asyncpg.Connection, *, base_url: str) -> Tick:
    """Starts the due scheduled runs, then queues the countdown reminders that are due."""
    started = await schedule.start_due(conn)
    queued = 0
    for run in await schedule.countdown_candidates(conn):
        stage = schedule.stage_due(run["enforce_at"], run["now"], run["countdown_done"])
        if stage is None:
            continue
        queued += await _countdown(conn, run, stage, base_url=base_url)
    return Tick(started=started, reminders=queued)


async def _countdown(
    conn: asyncpg.Connection, run: asyncpg.Record, stage: int, *, base_url: str
) -> int:
    """One stage of one run's countdown, chunk by chunk; marked done after the last chunk (a
    crash before that sends the rest next time; the dedupe key skips what went out)."""
    context = email_contexts.countdown_2fa(
        base_url=base_url,
        org_name=run["org_name"],
        org_slug=run["org_slug"],
        enforce_at=run["enforce_at"],
        days=stage,
    )
    queued = 0
    after: int | None = None
    while True:
        async with conn.transaction():
            chunk = await reminders.queue_chunk(
                conn,
                organization_id=run["organization_id"],
                template="countdown_2fa",
                context=context,
                key_prefix=f"countdown:{run['id']}:{stage}:",
                after_id=after,
            )
            if chunk.last_id is None:
                await schedule.mark_countdown(conn, run["id"], stage)
                break
        queued += chunk.queued
        after = chunk.last_id
    return queued
