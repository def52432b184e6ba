"""An owner turning the requirement on, off and on again quickly through the API, while workers
run: the end is consistent whatever the interleaving. At most one run is under way at any time,
every run ends (none stays queued or running), the last one completes when the requirement is
on, and the members removed over all runs are exactly those without a factor, once each."""

from __future__ import annotations

import asyncio

import asyncpg
import dramatiq

from commands.seed import seed
from db import counts
from tests.factories import create_user, settle_enforcement, token_for

MEMBERS = 5_000


async def seeded(pool: asyncpg.Pool, settings) -> tuple[int, asyncpg.Record, dict[str, str], int]:
    owner = await create_user(pool, "owner@toggle.test", has2fa=True)
    async with pool.acquire() as conn:
        result = await seed(
            conn, settings, slug="toggle", count=MEMBERS, enrolled=0.5, owner_email=owner["email"]
        )
        expected = await counts.count_noncompliant(
            conn, result.organization_id, except_user_id=owner["id"]
        )
    return result.organization_id, owner, await token_for(pool, owner["id"]), expected


async def put(client, headers: dict[str, str], on: bool) -> dict:
    response = await client.put(
        "/api/0/organizations/toggle/", json={"require2FA": on}, headers=headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def assert_consistent(pool: asyncpg.Pool, org_id: int, owner_id: int, expected: int) -> None:
    """After the workers are done: one entry per switch, every run ended, and each member
    without a factor removed once, by one run, with one audit entry and one email."""
    async with pool.acquire() as conn:
        org = await conn.fetchrow("select * from organizations where id = $1", org_id)
        runs = await conn.fetch(
            "select * from enforcement_runs where organization_id = $1 order by id", org_id
        )
        switches = await conn.fetch(
            """select data->>'require_2fa' as to from audit_log
               where organization_id = $1 and event = 'org.edit' order by id""",
            org_id,
        )
        per_run = {
            row["removed_by_run"]: row["n"]
            for row in await conn.fetch(
                """select removed_by_run, count(*) as n from members
                   where organization_id = $1 and removed_by_run is not null
                   group by removed_by_run""",
                org_id,
            )
        }
        once = await conn.fetchrow(
            """select (select count(*) from audit_log
                       where organization_id = $1 and event = 'member.pending') as audit,
                      (select count(distinct target_member_id) from audit_log
                       where organization_id = $1 and event = 'member.pending') as audited,
                      (select count(*) from email_outbox
                       where organization_id = $1 and template = 'removed_for_2fa') as emails,
                      (select count(distinct member_id) from email_outbox
                       where organization_id = $1 and template = 'removed_for_2fa') as emailed""",
            org_id,
        )
        left = await counts.count_noncompliant(conn, org_id, except_user_id=owner_id)

    # The switches alternate, starting with on, and the last one is where the flag is.
    assert [s["to"] for s in switches] == [
        "to True" if i % 2 == 0 else "to False" for i in range(len(switches))
    ]
    assert switches[-1]["to"] == f"to {org['require_2fa']}"
    assert all(run["status"] in ("completed", "cancelled") for run in runs), [dict(r) for r in runs]
    # One run per switch to on (a run that completed before an off keeps its status).
    assert len(runs) == sum(1 for s in switches if s["to"] == "to True")
    for run in runs:
        assert run["removed"] == per_run.get(run["id"], 0)
        if run["status"] == "completed":
            assert run["total"] == run["removed"] + run["skipped"]
            assert run["batches_done"] == run["batches_total"]
    removed = sum(per_run.values())
    assert dict(once) == {
        "audit": removed,
        "audited": removed,
        "emails": removed,
        "emailed": removed,
    }
    if org["require_2fa"]:
        assert runs[-1]["status"] == "completed"
        assert left == 0 and removed == expected
    else:
        assert left == expected - removed


async def test_on_off_on_quickly(
    client, pool, settings, broker: dramatiq.Broker, start_worker
) -> None:
    org_id, owner, headers, expected = await seeded(pool, settings)
    start_worker("enforcement", threads=4)
    answers = [await put(client, headers, on) for on in (True, False, True, False, True)]
    await settle_enforcement(pool, broker, timeout=120)

    assert [a["require2FA"] for a in answers] == [True, False, True, False, True]
    assert all(a["enforcement"]["status"] == "queued" for a in answers[::2])
    assert len({a["enforcement"]["id"] for a in answers[::2]}) == 3
    await assert_consistent(pool, org_id, owner["id"], expected)


async def test_switches_sent_at_once(
    client, pool, settings, broker: dramatiq.Broker, start_worker
) -> None:
    """Five requests in flight together (on, off, on, off, on): the organization's lock orders
    them; whichever order that is, the outcome is consistent and ends on the last one's flag."""
    org_id, owner, headers, expected = await seeded(pool, settings)
    start_worker("enforcement", threads=4)
    answers = await asyncio.gather(
        *(put(client, headers, on) for on in (True, False, True, False, True))
    )
    await settle_enforcement(pool, broker, timeout=120)

    assert sorted(a["require2FA"] for a in answers) == [False, False, True, True, True]
    await assert_consistent(pool, org_id, owner["id"], expected)
    async with pool.acquire() as conn:
        active = await conn.fetchval(
            """select count(*) from enforcement_runs
               where organization_id = $1 and status in ('queued', 'running')""",
            org_id,
        )
    assert active == 0
