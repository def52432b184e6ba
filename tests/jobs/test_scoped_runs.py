"""A run of a scoped requirement (`require2FAScope`) covers only the scope's members: its batches
list them, its total is theirs, and every guarantee of a run holds (one transaction per batch,
exactly once, a worker dying mid-batch, lost messages, members leaving the scope meanwhile)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from db import batches, counts, users
from db.audit import Actor
from jobs.enforcement import act_on, remove_batch, remove_batch_now, sweep_now
from require2fa import organization_settings
from require2fa.requirement import Scope
from tests.jobs.test_enforcement import (
    drain,
    plan_without_sending,
    run_row,
    seeded_org,
    wait_for_lock_wait,
)

BATCH = 100
SCOPE = (("admin",), ("tenth",))


async def scoped_org(pool: asyncpg.Pool, settings, action: str) -> tuple[int, asyncpg.Record]:
    """The seeded organization (a sixth of its members admins) with a team `tenth` of every
    tenth member, its requirement about to be scoped to admins and that team with `action`."""
    org_id, owner = await seeded_org(pool, settings, slug="scoped")
    async with pool.acquire() as conn:
        await conn.execute(
            """with t as (insert into teams (organization_id, slug, name)
                          values ($1, 'tenth', 'Tenth') returning id)
               insert into member_teams (member_id, team_id)
               select m.id, t.id from members m, t
               where m.organization_id = $1 and m.id % 10 = 0""",
            org_id,
        )
        await conn.execute(
            "update organizations set require_2fa_action = $2 where id = $1", org_id, action
        )
    return org_id, owner


async def start_scoped_run(pool: asyncpg.Pool, org_id: int, owner: asyncpg.Record) -> int:
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True, scope=Scope(*SCOPE)),
            organization_id=org_id,
            actor=Actor(user_id=owner["id"], label=owner["email"], ip_address="127.0.0.1"),
            role="owner",
            recently_authenticated=True,
        )
    assert change.started and change.run is not None
    return change.run["id"]


async def in_scope_members(pool: asyncpg.Pool, org_id: int) -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """select m.id from members m where m.organization_id = $1
                 and (m.role = 'admin' or m.id in (select mt.member_id from member_teams mt
                                                   join teams t on t.id = mt.team_id
                                                   where t.slug = 'tenth'))
               order by m.id""",
            org_id,
        )
    return [r["id"] for r in rows]


async def acted_on(pool: asyncpg.Pool, run_id: int, action: str) -> dict[str, int]:
    """Members acted on by the run, their audit entries and their emails (and distinct)."""
    column = "blocked_by_run" if action == "block" else "removed_by_run"
    event = "member.blocked" if action == "block" else "member.pending"
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""select (select count(*) from members where {column} = $1) as members,
                       (select count(*) from audit_log where event = $2) as audit,
                       (select count(distinct target_member_id) from audit_log
                        where event = $2) as audited,
                       (select count(*) from email_outbox where enforcement_id = $1) as emails,
                       (select count(distinct member_id) from email_outbox
                        where enforcement_id = $1) as emailed""",
            run_id,
            event,
        )
    return dict(row)


@pytest.mark.parametrize("action", ["remove", "block"])
async def test_a_scoped_run_walks_only_the_scope_and_survives_crashes(
    action, pool, settings, broker, start_worker
) -> None:
    org_id, owner = await scoped_org(pool, settings, action)
    scoped = await in_scope_members(pool, org_id)
    run_id = await start_scoped_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id, batch_size=BATCH)  # every batch message lost

    # The plan: the scope's members only, a hundred a batch, in id order.
    async with pool.acquire() as conn:
        planned = await conn.fetch(
            "select * from enforcement_batches where run_id = $1 order by batch_no", run_id
        )
    run = await run_row(pool, run_id)
    assert run["total"] == len(scoped) and len(scoped) < 1000  # of 2,501 members
    assert run["batches_total"] == len(planned) == -(-len(scoped) // BATCH)
    assert [i for b in planned for i in b["member_ids"]] == scoped
    assert all(
        (b["first_member_id"], b["last_member_id"]) == (b["member_ids"][0], b["member_ids"][-1])
        for b in planned
    )

    # Before their batch: one member in scope leaves it (their team), one sets up a factor.
    second = planned[1]["member_ids"]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""select m.id, m.user_id from members m join users u on u.id = m.user_id
                where m.id = any($1::bigint[]) and m.role <> 'admin'
                  and not {users.HAS_2FA_SQL} order by m.id""",
            second,
        )
        leaver, enrolled, victim = rows[0], rows[1], rows[-1]
        await conn.execute("delete from member_teams where member_id = $1", leaver["id"])
        await conn.execute(
            """insert into authenticators (user_id, type, name, secret_encrypted, confirmed_at)
               values ($1, 'totp', 'app', 'x', now())""",
            enrolled["user_id"],
        )
        expected = await counts.count_noncompliant(
            conn, org_id, except_user_id=owner["id"], scope=SCOPE
        )

    # Batch 0 twice at once: one does it, the other finds it done.
    first, again = await asyncio.gather(
        remove_batch_now(pool, settings, run_id, 0), remove_batch_now(pool, settings, run_id, 0)
    )
    assert (first is None) != (again is None)

    # Batch 1's worker dies inside its transaction (waiting on a user's row lock).
    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    await users.lock(blocker, [victim["user_id"]])
    dying = asyncio.create_task(remove_batch_now(pool, settings, run_id, 1))
    pid = await wait_for_lock_wait(pool)
    async with pool.acquire() as conn:
        await conn.execute("select pg_terminate_backend($1)", pid)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await dying
    await blocking.rollback()
    await pool.release(blocker)
    assert (await run_row(pool, run_id))["batches_done"] == 1

    # The sweeper sends what is missing (a window at a time); batch 0 sent again changes nothing.
    assert (await sweep_now(pool, stale_after=timedelta(0)))[1] > 0
    remove_batch.send(run_id, 0)
    start_worker("enforcement", threads=4)
    await drain(broker)

    run = await run_row(pool, run_id)
    assert run["status"] == "completed" and run["batches_done"] == len(planned)
    assert run["removed"] == expected > 0
    assert run["total"] == run["removed"] + run["skipped"] == len(scoped)
    assert await acted_on(pool, run_id, action) == dict.fromkeys(
        ("members", "audit", "audited", "emails", "emailed"), expected
    )
    async with pool.acquire() as conn:
        left_alone = await conn.fetch(
            """select id from members where id = any($1::bigint[])
                 and user_id is not null and blocked_at is null""",
            [leaver["id"], enrolled["id"]],
        )
        outside = await conn.fetchval(
            """select count(*) from members where organization_id = $1
                 and (removed_by_run = $2 or blocked_by_run = $2)
                 and id <> all($3::bigint[])""",
            org_id,
            run_id,
            scoped,
        )
    assert len(left_alone) == 2 and outside == 0
    assert await sweep_now(pool, stale_after=timedelta(0)) == (0, 0)


async def test_a_scope_without_members_completes_at_once_with_its_summary(pool, settings) -> None:
    from jobs.enforcement import coordinate_run
    from tests.factories import owner_and_org

    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True, teams=("ops",))
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True, scope=Scope((), ("ops",))),
            organization_id=org["id"],
            actor=Actor(user_id=owner["id"], label=owner["email"]),
            role="owner",
            recently_authenticated=True,
        )
    run_id = change.run["id"]
    for _ in range(2):  # a redelivered coordinator changes nothing
        assert await coordinate_run(pool, run_id, base_url=settings.base_url) == 0
    run = await run_row(pool, run_id)
    assert (run["status"], run["total"], run["batches_total"]) == ("completed", 0, 0)
    async with pool.acquire() as conn:
        summaries = await conn.fetch(
            "select to_address from email_outbox where template = 'enforcement_summary'"
        )
    assert [r["to_address"] for r in summaries] == ["owner@example.com"]


@pytest.mark.parametrize("action", ["remove", "block"])
async def test_a_member_who_leaves_the_scope_after_being_read_is_left_alone(
    action, pool, settings
) -> None:
    """The batch's own steps, with a member taken out of the scope (role and team) by another
    connection after the batch read its candidates and before it acts: the removal or block
    statement judges the scope again, so that member stays as they are."""
    org_id, owner = await scoped_org(pool, settings, action)
    run_id = await start_scoped_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id, batch_size=BATCH)
    async with pool.acquire() as conn, conn.transaction():
        head = await batches.start_batch(conn, run_id, 0)
        assert head is not None
        found = await batches.candidates(conn, head)
        assert len(found) >= 2
        leaving = found[0]
        async with pool.acquire() as other, other.transaction():
            await other.execute(
                "update members set role = 'member' where id = $1", leaving.member_id
            )
            await other.execute("delete from member_teams where member_id = $1", leaving.member_id)
        acted, _ = await act_on(conn, head, found, settings)
    assert acted == len(found) - 1
    async with pool.acquire() as conn:
        left = await conn.fetchrow(
            "select user_id, pending_reason, blocked_at from members where id = $1",
            leaving.member_id,
        )
        others = await conn.fetchval(
            """select count(*) from members where id = any($1::bigint[])
                 and (pending_reason is not null or blocked_at is not null)""",
            [c.member_id for c in found[1:]],
        )
    assert left["user_id"] == leaving.user_id
    assert left["pending_reason"] is None and left["blocked_at"] is None
    assert others == len(found) - 1
