"""Issue 14, point 5: a worker killed with kill -9 in the middle of email delivery.

About 10,000 emails (an enforcement of 20,000 members, half without 2FA) at the default
EMAIL_RATE of 100 a second, a clock and two worker processes, the second started once delivery
has begun (so the first holds every dispatcher slot: the worst case); once 2,500 emails have
arrived, the first worker's process group gets SIGKILL. The other worker goes on alone.
Measured at the SMTP server: how long delivery stood still after the kill, how long the rows
it had claimed took to go out again, the total time, and the emails that arrived twice (the
bound: one per SMTP connection open in the killed process, at most DISPATCHERS × CONNECTIONS =
16).

    make test-faults PYTEST_ARGS="tests/faults/test_email_recovery.py"
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jobs import email as email_jobs
from jobs.mail import slots
from tests.faults.conftest import (
    assert_exact,
    big_org,
    finished,
    record,
    run_status,
    turn_on,
    until,
)

MEMBERS = 20_000
KILL_AT = 2_500
# Every SMTP connection that the killed process may hold open at once.
DUPLICATE_BOUND = slots.DISPATCHERS * email_jobs.CONNECTIONS
# Liveness deadlines asserted (generous; the figures recorded are the measurement).
RESUME_LIMIT = 60
CLAIMS_LIMIT = 90


@pytest.mark.faults
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
async def test_worker_killed_mid_delivery_resumes_in_seconds(
    kind, pool, settings, make_stack
) -> None:
    stack = make_stack(kind, email_rate=100)
    org = await big_org(pool, settings, MEMBERS, enrolled=0.5)
    stack.deployment.clock()
    doomed = stack.deployment.worker()
    run_id = await turn_on(pool, org)
    started = time.monotonic()
    stack.send("enforcement.coordinate", "enforcement", run_id)
    # The worst case: the worker to be killed took every dispatcher slot before the other one
    # started, so the other's dispatches find them all taken until they lapse.
    await until(lambda: stack.sink.received >= 200, "delivery started", 300)
    survivor = stack.deployment.worker()

    await until(lambda: stack.sink.received >= KILL_AT, f"{KILL_AT} emails arrived", 300)
    stack.deployment.kill(doomed)
    killed_at = time.monotonic()
    arrived_at_kill = stack.sink.received
    async with pool.acquire() as conn:
        held = await conn.fetch("select id, attempts from email_outbox where status = 'sending'")

    async def claims_returned() -> bool:
        """Every row claimed at the kill was sent or claimed again since."""
        async with pool.acquire() as conn:
            return not await conn.fetchval(
                """select count(*) from email_outbox o
                     join unnest($1::bigint[], $2::int[]) as h(id, attempts) on h.id = o.id
                    where o.status = 'sending' and o.attempts = h.attempts""",
                [r["id"] for r in held],
                [r["attempts"] for r in held],
            )

    claims_back = await until(claims_returned, "the killed worker's claims taken up", 300)
    await until(lambda: finished(pool, run_id, org), "every email sent", 600)
    total = time.monotonic() - started
    await asyncio.sleep(2)  # a message in flight when the last row was marked arrives
    assert survivor.poll() is None
    figures = await assert_exact(pool, run_id, org, stack.sink)
    after = stack.sink.arrived_after(killed_at)
    run = await run_status(pool, run_id)
    figures.update(
        broker=kind,
        email_rate=100,
        arrived_at_kill=arrived_at_kill,
        delivery_stood_still_seconds=round(stack.sink.largest_gap_after(killed_at), 1),
        first_email_after_kill_seconds=round(after[0] - killed_at, 1) if after else None,
        seconds_kill_to_last_email=round(after[-1] - killed_at, 1) if after else None,
        total_seconds=round(total, 1),
        run_seconds=round((run["finished_at"] - run["started_at"]).total_seconds(), 1),
        duplicate_bound=DUPLICATE_BOUND,
        rows_claimed_at_kill=len(held),
        claims_taken_up_after_seconds=round(claims_back, 1),
    )
    record(f"email_recovery-{kind}", figures)
    assert figures["duplicate_emails"] <= DUPLICATE_BOUND
    assert figures["delivery_stood_still_seconds"] < RESUME_LIMIT
    assert claims_back < CLAIMS_LIMIT
