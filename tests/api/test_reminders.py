"""Reminders on record: `lastRemindedAt`, once per member per day, `require2fa remind`."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from commands.cli import main
from commands.seed import seed
from db import reminders
from tests.factories import add_member, create_user, owner_and_org, token_for


@pytest.fixture
def worker(start_worker):
    return start_worker("enforcement")


async def acme(pool):
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    for i in range(3):
        user = await create_user(pool, f"user{i}@example.com", has2fa=i == 0)
        await add_member(pool, org["id"], user)
    return org, await token_for(pool, owner["id"])


async def members_by_email(client, headers) -> dict[str, dict]:
    response = await client.get("/api/0/organizations/acme/members/", headers=headers)
    return {row["email"]: row for row in await response.json()}


async def test_reminded_members_show_when(client, pool, broker, worker) -> None:
    _org, headers = await acme(pool)
    before = await members_by_email(client, headers)
    assert all(row["lastRemindedAt"] is None for row in before.values())

    response = await client.post("/api/0/organizations/acme/2fa-reminders/", headers=headers)
    assert response.status == 202
    await asyncio.to_thread(broker.join, "enforcement", timeout=30_000)
    after = await members_by_email(client, headers)
    assert after["user1@example.com"]["lastRemindedAt"] is not None
    assert after["user2@example.com"]["lastRemindedAt"] is not None
    assert after["user0@example.com"]["lastRemindedAt"] is None  # has 2FA
    assert after["owner@example.com"]["lastRemindedAt"] is None

    # Again the same day: nothing new, and the time on record stays the first one.
    await client.post("/api/0/organizations/acme/2fa-reminders/", headers=headers)
    await asyncio.to_thread(broker.join, "enforcement", timeout=30_000)
    again = await members_by_email(client, headers)
    assert (
        again["user1@example.com"]["lastRemindedAt"] == after["user1@example.com"]["lastRemindedAt"]
    )
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from email_outbox where template = 'reminder_2fa'")
            == 2
        )


async def test_chunks_walk_the_whole_organization_once(pool, settings) -> None:
    async with pool.acquire() as conn:
        result = await seed(conn, settings, slug="big", count=50, enrolled=0.5)
        without = await conn.fetchval(
            """select count(*) from members m where m.organization_id = $1
               and not exists (select 1 from authenticators a where a.user_id = m.user_id)""",
            result.organization_id,
        )
        seen = queued = chunks = 0
        after = None
        prefix, suffix = reminders.reminder_key(result.organization_id, "2026-12-03")
        while True:
            chunk = await reminders.queue_chunk(
                conn,
                organization_id=result.organization_id,
                template="reminder_2fa",
                context={"org_name": "Big", "org_slug": "big", "security_url": "x"},
                key_prefix=prefix,
                key_suffix=suffix,
                after_id=after,
                limit=7,
            )
            if chunk.last_id is None:
                break
            chunks += 1
            seen += chunk.seen
            queued += chunk.queued
            after = chunk.last_id
        stamped = await conn.fetchval(
            "select count(*) from members where last_reminded_at is not null"
        )
    assert seen == queued == stamped == without > 7
    assert chunks == -(-without // 7)


async def test_the_remind_command(pool, database, broker) -> None:
    await acme(pool)
    runner = CliRunner()
    first = await asyncio.to_thread(
        runner.invoke, main, ["remind", "--org", "acme"], catch_exceptions=False
    )
    assert first.exit_code == 0, first.output
    assert "reminded 2 member(s) of acme without 2FA (0 had today's reminder already)" in (
        first.output
    )
    second = await asyncio.to_thread(runner.invoke, main, ["remind", "--org", "acme"])
    assert "reminded 0 member(s)" in second.output and "2 had today's" in second.output
    missing = await asyncio.to_thread(runner.invoke, main, ["remind", "--org", "nope"])
    assert missing.exit_code == 1 and "no organization" in missing.output
    async with pool.acquire() as conn:
        stamped = await conn.fetchval(
            "select count(*) from members where last_reminded_at is not null"
        )
    assert stamped == 2
