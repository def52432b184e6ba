"""The summary email each owner gets when an enforcement run ends, with real workers and SMTP."""

from __future__ import annotations

import asyncio

import pytest

from db.audit import Actor
from jobs.enforcement import coordinate_run, remove_batch
from require2fa import organization_settings
from tests.factories import add_member, create_user, owner_and_org

pytestmark = pytest.mark.e2e


async def until_all_sent(pool, limit: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        async with pool.acquire() as conn:
            left = await conn.fetchval("select count(*) from email_outbox where status <> 'sent'")
        if left == 0:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{left} email(s) still not sent")
        await asyncio.sleep(0.05)


async def test_each_owner_gets_one_summary_even_when_the_last_batch_arrives_twice(
    pool, settings, broker, start_worker, mailbox
) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    other_owner = await create_user(pool, "second@example.com", has2fa=True)
    await add_member(pool, org["id"], other_owner, role="owner")
    without = []
    for n in range(9):
        user = await create_user(pool, f"dev{n}@example.com", has2fa=n % 3 == 0)
        await add_member(pool, org["id"], user)
        if n % 3:
            without.append(user["email"])

    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org["id"],
            actor=Actor(user_id=owner["id"], label=owner["email"]),
            role="owner",
        )
    run_id = change.run["id"]
    # Batches of four members, every batch message sent twice: the last one too. Planned before
    # the workers start, so that their listener, looking once, finds the run planned already.
    sent = await coordinate_run(
        pool,
        run_id,
        batch_size=4,
        send=lambda r, b: (remove_batch.send(r, b), remove_batch.send(r, b)),
    )
    assert sent == 3
    start_worker("enforcement", "email", threads=4)  # one worker process's queues
    await asyncio.to_thread(broker.join, "enforcement", timeout=60_000)
    await until_all_sent(pool)

    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        summaries = await conn.fetch(
            "select * from email_outbox where template = 'enforcement_summary' order by id"
        )
    assert run["status"] == "completed" and run["removed"] == len(without) == 6
    assert [row["to_address"] for row in summaries] == ["owner@example.com", "second@example.com"]
    # Sent: the row keeps no context (issue 30); the counts are in the email itself.
    assert [row["context"] for row in summaries] == [{}, {}]

    for address in ("owner@example.com", "second@example.com"):
        (message,) = mailbox.to(address)
        assert message["Subject"] == "Acme: two-factor enforcement finished"
        text = message.get_body(("plain",)).get_content()
        assert "Members removed: 6" in text
        assert "Members kept (they have a second factor): 5" in text
        assert "http://testserver/organizations/acme/members/?query=is%3Apending" in text
    for address in without:
        assert len(mailbox.to(address)) == 1  # and the removed members their one email each

    # Delivered once more, much later: still one summary each.
    await asyncio.to_thread(remove_batch.send, run_id, 2)
    await asyncio.to_thread(broker.join, "enforcement", timeout=60_000)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select count(*) from email_outbox where template = 'enforcement_summary'"
            )
            == 2
        )


async def test_a_run_that_fails_gets_one_summary_from_the_next_sweeps(pool, settings) -> None:
    from datetime import timedelta

    from db import sweeper
    from jobs.enforcement import sweep_now

    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    user = await create_user(pool, "dev@example.com")
    await add_member(pool, org["id"], user)
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org["id"],
            actor=Actor(user_id=owner["id"], label=owner["email"]),
            role="owner",
        )
    run_id = change.run["id"]
    await coordinate_run(pool, run_id, send=lambda *args: None)  # its batch message is lost
    async with pool.acquire() as conn:  # re-sent and never finished, until the run fails
        for _ in range(2):
            await sweeper.stalled(conn, stale_after=timedelta(0), max_resends=1)
    for _ in range(2):  # two sweeps (two clocks, a redelivery): one summary
        await sweep_now(
            pool,
            stale_after=timedelta(hours=1),
            send_coordinate=lambda *a: None,
            send_batch=lambda *a: None,
            base_url=settings.base_url,
        )
    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        summaries = await conn.fetch(
            "select * from email_outbox where template = 'enforcement_summary'"
        )
    assert run["status"] == "failed"
    (summary,) = summaries
    assert summary["to_address"] == "owner@example.com"
    assert summary["context"]["status"] == "failed"
    assert "did not finish" in summary["context"]["error"]
