"""A `block` run (`require2FAAction: block`) on a deployment of real processes, with the worker
that is inside a batch's transaction killed (kill -9) in the middle. It ends with exact counts:
the run completed; exactly the members without 2FA blocked (still members, nobody pending), one
`member.blocked` entry and one "Action required" email each, all sent and each at the SMTP
server at least once; the duplicates held to the bound of one killed process.

    make test-faults PYTEST_ARGS="tests/faults/test_block_faults.py"
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.conftest import (
    Org,
    big_org,
    record,
    run_status,
    turn_on,
    until,
    wait_for_lock_wait,
)
from tests.faults.test_enforcement_faults import (
    BROKERS,
    ENROLLED,
    PER_PROCESS,
    RUN_LIMIT,
    SIZES,
    middle_user,
    owner_of,
)

pytestmark = [pytest.mark.timeout(1800)]


async def blocked_sent(pool: asyncpg.Pool, run_id: int) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                """select count(*) from email_outbox
                   where enforcement_id = $1 and template = 'blocked_for_2fa'
                     and status = 'sent'""",
                run_id,
            )
        )


async def blocked_finished(pool: asyncpg.Pool, run_id: int, org: Org) -> bool:
    run = await run_status(pool, run_id)
    assert run["status"] not in ("failed", "cancelled"), dict(run)
    return run["status"] == "completed" and await blocked_sent(pool, run_id) == org.expected


@pytest.mark.parametrize("members", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
async def test_block_run_with_a_worker_killed_mid_batch(
    kind, members, pool, settings, make_stack
) -> None:
    stack = make_stack(kind)
    deployment = stack.deployment
    org = await big_org(pool, settings, members, ENROLLED)
    async with pool.acquire() as conn:
        await conn.execute(
            "update organizations set require_2fa_action = 'block' where id = $1", org.id
        )
    deployment.clock()
    workers = [deployment.worker(), deployment.worker()]
    run_id = await turn_on(pool, org)
    started = time.monotonic()

    # A member whom a batch in the middle of the run will block: their user's row lock is held
    # here (as 2FA enrollment takes it), so that the batch waits inside its transaction, and
    # the worker running it is killed there.
    user_id = await middle_user(pool, org)
    holder = await pool.acquire()
    lock = holder.transaction()
    await lock.start()
    try:
        await holder.execute("select 1 from users where id = $1 for update", user_id)
        blocker = await holder.fetchval("select pg_backend_pid()")
        backend = await wait_for_lock_wait(pool, blocker)
        victim = await owner_of(pool, backend, workers)
        assert victim is not None, "the waiting connection belongs to no worker"
        deployment.kill(victim)  # type: ignore[arg-type]
        workers.remove(victim)  # type: ignore[arg-type]
        workers.append(deployment.worker())
    finally:
        await lock.rollback()
        await pool.release(holder)

    await until(
        lambda: blocked_finished(pool, run_id, org),
        "the run completed, every email sent",
        RUN_LIMIT,
    )
    await asyncio.sleep(2)  # a message accepted just before its row was marked arrives
    async with pool.acquire() as conn:
        found = await conn.fetchrow(
            """select (select count(*) from members where blocked_by_run = $1
                         and user_id is not null) as blocked,
                      (select count(*) from members
                        where organization_id = $2 and user_id is null) as pending,
                      (select count(*) from audit_log
                        where organization_id = $2 and event = 'member.blocked') as audit,
                      (select count(distinct target_member_id) from audit_log
                        where organization_id = $2 and event = 'member.blocked')
                          as audited_members,
                      (select count(*) from audit_log
                        where organization_id = $2 and event = 'member.pending') as removed,
                      (select count(*) from email_outbox
                        where enforcement_id = $1 and template = 'blocked_for_2fa') as emails""",
            run_id,
            org.id,
        )
        message_ids = [
            row["message_id"]
            for row in await conn.fetch(
                """select message_id from email_outbox
                   where enforcement_id = $1 and template = 'blocked_for_2fa'""",
                run_id,
            )
        ]
    run = await run_status(pool, run_id)
    assert dict(found) == {
        "blocked": org.expected,
        "pending": 0,
        "audit": org.expected,
        "audited_members": org.expected,
        "removed": 0,
        "emails": org.expected,
    }
    assert run["removed"] == org.expected
    assert run["total"] == run["removed"] + run["skipped"] == org.members + 1
    arrived = {mid: stack.sink.ids[mid] for mid in message_ids}
    assert [mid for mid, n in arrived.items() if n == 0] == []
    duplicates = sum(n - 1 for n in arrived.values())
    assert duplicates <= PER_PROCESS
    record(
        f"block_worker_killed-{members}-{stack.kind}",
        {
            "broker": stack.kind,
            "members": org.members,
            "blocked": org.expected,
            "duplicate_emails": duplicates,
            "total_seconds": round(time.monotonic() - started, 1),
        },
    )
