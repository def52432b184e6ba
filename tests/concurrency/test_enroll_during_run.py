"""200 members set up TOTP through the HTTP API while an enforcement run removes members.

The rule under test (`db.users.lock`, taken by the enrollment and by the batch): whoever commits
second sees the other. So nobody whose enrollment had committed when their batch began is
removed, and everyone removed had no factor at the moment of the removal: a removed member's
factor was confirmed (under the user's lock) after the batch that removed them had finished.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import dramatiq

from commands.seed import seed
from db import counts
from jobs.enforcement import coordinate_run
from require2fa import compliance, totp
from tests.factories import create_user, settle_enforcement, token_for, totp_code

MEMBERS = 4_000
ENROLLING = 200
BATCH_SIZE = 40  # a hundred batches, so that enrollments land before, during and after theirs


async def test_members_enrolling_while_the_run_goes(
    client, pool, settings, broker: dramatiq.Broker, start_worker
) -> None:
    owner = await create_user(pool, "owner@race.test", has2fa=True)
    async with pool.acquire() as conn:
        seeded = await seed(
            conn, settings, slug="race", count=MEMBERS, enrolled=0.5, owner_email=owner["email"]
        )
        org_id = seeded.organization_id
        without = await conn.fetch(
            """select m.id as member_id, m.user_id from members m
               where m.organization_id = $1 and m.user_id <> $2
                 and not exists (select 1 from authenticators a where a.user_id = m.user_id)
               order by m.id""",
            org_id,
            owner["id"],
        )
        before = await counts.count_noncompliant(conn, org_id, except_user_id=owner["id"])
    # Spread over the whole id range, so over every part of the run.
    step = len(without) // ENROLLING
    enrolling = [without[i * step] for i in range(ENROLLING)]
    headers = {row["user_id"]: await token_for(pool, row["user_id"]) for row in enrolling}
    owner_headers = await token_for(pool, owner["id"])

    turned_on = await client.put(
        "/api/0/organizations/race/", json={"require2FA": True}, headers=owner_headers
    )
    assert turned_on.status == 200, await turned_on.text()
    run_id = int((await turned_on.json())["enforcement"]["id"])

    committed: dict[int, datetime] = {}  # user id → a moment after their enrollment committed
    gate = asyncio.Semaphore(20)
    quarter = asyncio.Event()

    async def enroll(user_id: int) -> None:
        async with gate:
            # The confirming step alone: the first one only hands out a secret (and draws its
            # QR code), storing nothing, so the member's app makes its own here.
            secret = totp.new_secret()
            confirmed = await client.post(
                "/api/0/users/me/authenticators/totp/enroll/",
                json={"secret": secret, "otp": totp_code(secret)},
                headers=headers[user_id],
            )
            assert confirmed.status == 201, await confirmed.text()
            committed[user_id] = datetime.now(UTC)
            if len(committed) >= ENROLLING // 4:
                quarter.set()

    # Planned here, before any worker runs, in small batches; the coordinator message that the
    # PUT sent then finds the run planned and its batches sent.
    await coordinate_run(pool, run_id, batch_size=BATCH_SIZE)
    # In an order unrelated to the batches', and the workers start once a quarter have
    # enrolled: enrollments then land before, during and after their batches.
    order = [row["user_id"] for row in enrolling]
    random.Random(14).shuffle(order)
    enrollments = [asyncio.create_task(enroll(user_id)) for user_id in order]
    await quarter.wait()
    start_worker("enforcement", threads=2)
    await asyncio.gather(*enrollments)
    await settle_enforcement(pool, broker, timeout=120)

    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        fates = await conn.fetch(
            f"""select m.id as member_id, u.id as user_id, m.removed_by_run, m.removed_at,
                      b.done_at as batch_done,
                      (select min(a.confirmed_at) from authenticators a
                       where a.user_id = u.id and {compliance.factor_counts_sql("a")})
                      as factor_at
               from members m
               join users u on u.id = coalesce(m.user_id, m.removed_user_id)
               join enforcement_batches b on b.run_id = $2
                    and m.id between b.first_member_id and b.last_member_id
               where m.organization_id = $1""",
            org_id,
            run_id,
        )
        audit = await conn.fetch(
            """select target_member_id, target_user_id, created_at from audit_log
               where organization_id = $1 and event = 'member.pending'""",
            org_id,
        )
        outbox_rows = await conn.fetchval(
            "select count(*) from email_outbox where enforcement_id = $1", run_id
        )
        left = await counts.count_noncompliant(conn, org_id, except_user_id=owner["id"])

    assert len(committed) == ENROLLING
    assert run["status"] == "completed"
    assert run["batches_done"] == run["batches_total"]
    assert run["total"] == run["removed"] + run["skipped"] == MEMBERS + 1
    removed = [f for f in fates if f["removed_by_run"] == run_id]
    assert len(removed) == run["removed"] == len(audit) == outbox_rows
    assert {a["target_member_id"] for a in audit} == {f["member_id"] for f in removed}
    assert left == 0  # everyone else without a factor is gone

    by_user = {f["user_id"]: f for f in fates}
    for row in enrolling:
        fate = by_user[row["user_id"]]
        if fate["removed_by_run"] == run_id:
            # Removed: the enrollment came after the batch, never before it began.
            assert committed[row["user_id"]] > fate["removed_at"], dict(fate)
        else:
            assert fate["factor_at"] is not None
    # Every removal was of a member without a factor at that moment: a factor the member has
    # now was confirmed after their batch had finished (the enrollment waited for its lock).
    for fate in removed:
        if fate["factor_at"] is not None:
            assert fate["factor_at"] > fate["batch_done"], dict(fate)
    # The run removed exactly those who had no factor when their batch came.
    late = sum(1 for f in removed if f["factor_at"] is not None)
    assert run["removed"] == before - (ENROLLING - late)
