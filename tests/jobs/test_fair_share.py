"""Many organizations on one deployment (CONTRACT §10): while one organization's backlog of bulk
email drains, another organization's emails and everybody's transactional ones are delivered
ahead of most of it, and the first still gets every email exactly once.

Real worker threads (queues `enforcement` and `email`), the API, PostgreSQL, Redis and the SMTP
sink; the test reads only the order in which the sink accepted the messages.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from commands.seed import seed
from db import outbox
from db.audit import Actor
from jobs.enforcement import coordinate_run, remove_batch_now, sweep_now
from require2fa import organization_settings
from tests.factories import (
    add_member,
    create_user,
    enroll_totp,
    owner_and_org,
    owner_org_and_token,
    token_for,
)

BACKLOG = 500  # removal emails of the big organization: more than four claims of old (400)
SMALL = 8  # members of the small organization without a second factor
EMAIL_RATE = 40  # emails a second: the backlog takes about 15 s at the bulk share


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 90.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.05)


async def sent_count(pool: asyncpg.Pool, org_id: int) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            """select count(*) from email_outbox
                where organization_id = $1 and template = 'removed_for_2fa' and status = 'sent'""",
            org_id,
        )


async def all_sent(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return not await conn.fetchval(
            "select exists (select 1 from email_outbox where status <> 'sent')"
        )


@pytest.mark.e2e
async def test_a_backlog_does_not_delay_another_organization_nor_transactional_email(
    client, pool, settings, broker, start_worker, mailbox, monkeypatch
) -> None:
    monkeypatch.setenv("EMAIL_RATE", str(EMAIL_RATE))
    start_worker("enforcement", "email", threads=4)

    # Two organizations, and a user elsewhere.
    big_owner = await create_user(pool, "owner@big.test", has2fa=True)
    async with pool.acquire() as conn:
        big = await seed(
            conn, settings, slug="big", count=BACKLOG, enrolled=0.0, owner_email="owner@big.test"
        )
    _owner, small, small_headers = await owner_org_and_token(
        pool, "small", "owner@small.test", has2fa=True
    )
    removed_small = []
    for n in range(SMALL):
        user = await create_user(pool, f"m{n}@small.test")
        await add_member(pool, small["id"], user)
        removed_small.append(user["email"])
    elsewhere = await token_for(pool, (await create_user(pool, "someone@example.org"))["id"])

    # The big organization turns the requirement on: BACKLOG removal emails queued at once.
    on = await client.put(
        "/api/0/organizations/big/",
        json={"require2FA": True},
        headers=await token_for(pool, big_owner["id"]),
    )
    assert on.status == 200, await on.text()
    await until(
        lambda: _at_least(sent_count(pool, big.organization_id), 40), "the backlog draining"
    )

    # While it drains, the small organization turns it on, its owner invites a new hire, and
    # the user elsewhere adds a factor.
    on = await client.put(
        "/api/0/organizations/small/", json={"require2FA": True}, headers=small_headers
    )
    assert on.status == 200, await on.text()
    invited = await client.post(
        "/api/0/organizations/small/members/",
        json={"email": "hire@example.com", "role": "member"},
        headers=small_headers,
    )
    assert invited.status == 201, await invited.text()
    await enroll_totp(client, headers=elsewhere)
    await until(lambda: _queued(pool, small["id"], SMALL), "the small organization's run")
    big_left = BACKLOG - await sent_count(pool, big.organization_id)
    assert big_left > BACKLOG // 2  # still most of the backlog to go

    await until(lambda: all_sent(pool), "every email sent")

    delivered = [str(message["To"]) for message in mailbox.messages]
    subjects = {str(message["To"]): str(message["Subject"]) for message in mailbox.messages}
    big_removed = [to for to in delivered if to.endswith("@big.example")]

    def big_after(addresses: list[str]) -> int:
        """How many of the big organization's removal emails arrived after all of these."""
        last = max(delivered.index(address) for address in addresses)
        return sum(1 for to in delivered[last + 1 :] if to in big_removed_set)

    big_removed_set = set(big_removed)
    print(
        "DEBUG",
        big_left,
        [i for i, to in enumerate(delivered) if not to.endswith("@big.example")],
        len(delivered),
    )
    # Most of what was left of the backlog arrives after the small organization's removals, the
    # invitation and the security notice (queued behind it, none of them would).
    assert big_after(removed_small) >= big_left // 2
    assert big_after(["hire@example.com", "someone@example.org"]) >= big_left // 2
    assert "Join Small" in subjects["hire@example.com"]
    assert "Security notice" in subjects["someone@example.org"]
    # And the big organization got every email, once.
    assert len(big_removed) == BACKLOG
    assert set(Counter(big_removed).values()) == {1}
    assert all("Mandatory: Enable Two-Factor Authentication" in subjects[to] for to in big_removed)


async def _queued(pool: asyncpg.Pool, org_id: int, wanted: int) -> bool:
    async with pool.acquire() as conn:
        queued = await conn.fetchval(
            """select count(*) from email_outbox
                where organization_id = $1 and template = 'removed_for_2fa'""",
            org_id,
        )
    return queued >= wanted


async def _at_least(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


def _emails(template: str, org_id: int | None, count: int, key: str) -> list:
    context = {
        "removed_for_2fa": {"org_name": "Acme"},
        "invite": {"org_name": "Acme"},
    }[template]
    return [
        outbox.Email(
            template=template,
            to=f"{key}{n}@example.com",
            context=context,
            dedupe_key=f"test:{key}:{n}",
            organization_id=org_id,
        )
        for n in range(count)
    ]


async def test_the_claim_takes_transactional_first_then_organizations_in_turn(pool) -> None:
    async with pool.acquire() as conn:
        await outbox.enqueue_many(conn, _emails("removed_for_2fa", 1, 40, "a"))  # a backlog
        await outbox.enqueue_many(conn, _emails("removed_for_2fa", 2, 3, "b"))  # then another
        await outbox.enqueue_many(conn, _emails("invite", 2, 1, "hire"))  # then an invitation
        first = await outbox.claim(conn, limit=9, lease=timedelta(seconds=30))
        # Then one more row of the backlog's organization, and a third organization's.
        await outbox.enqueue_many(conn, _emails("removed_for_2fa", 1, 1, "later"))
        await outbox.enqueue_many(conn, _emails("removed_for_2fa", 3, 1, "c"))
        rest = await outbox.claim(conn, limit=100, lease=timedelta(seconds=30))
    order = [re.sub(r"\d+@example\.com$", "", row["to_address"]) for row in first]
    # The invitation, then the backlog's next row and the other organization's in turn.
    assert order == ["hire", "a", "b", "a", "b", "a", "b", "a", "a"]
    # The third organization's row comes in turn with the backlog's next; the backlog's new
    # row comes after the backlog.
    addresses = [row["to_address"] for row in rest]
    assert sorted(addresses[:2]) == ["a5@example.com", "c0@example.com"]
    assert addresses[-2:] == ["a39@example.com", "later0@example.com"]
    assert len(addresses) == 44 + 2 - 9  # and nothing is lost


async def _start_run(pool: asyncpg.Pool, org_id: int, owner: asyncpg.Record) -> int:
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org_id,
            actor=Actor(user_id=owner["id"], label=owner["email"], ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.run is not None
    return change.run["id"]


async def _run(pool: asyncpg.Pool, run_id: int) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)


@pytest.mark.e2e
async def test_a_small_run_is_not_queued_behind_a_large_one(
    pool, settings, broker, start_worker
) -> None:
    big_owner = await create_user(pool, "owner@big.test", has2fa=True)
    async with pool.acquire() as conn:
        big = await seed(
            conn, settings, slug="big", count=4_000, enrolled=0.5, owner_email="owner@big.test"
        )
    small_owner, small = await owner_and_org(pool, "small", "owner@small.test", has2fa=True)
    for n in range(10):
        await add_member(pool, small["id"], await create_user(pool, f"m{n}@small.test"))

    # The large run in two hundred batches, all of them planned before the small one.
    big_run = await _start_run(pool, big.organization_id, big_owner)
    await coordinate_run(pool, big_run, batch_size=20)
    small_run = await _start_run(pool, small["id"], small_owner)
    await coordinate_run(pool, small_run)
    # The workers start once both are planned (their coordinators then find nothing to send).
    start_worker("enforcement", threads=4)

    async def small_done() -> bool:
        return (await _run(pool, small_run))["status"] == "completed"

    await until(small_done, "the small run")
    big_then = await _run(pool, big_run)
    assert big_then["status"] == "running"
    assert big_then["batches_done"] < big_then["batches_total"] // 2
    assert (await _run(pool, small_run))["removed"] == 10

    await asyncio.to_thread(broker.join, "enforcement", timeout=120_000)
    big_after = await _run(pool, big_run)
    assert big_after["status"] == "completed"
    assert big_after["batches_done"] == big_after["batches_total"] == 201  # 4,001 members
    async with pool.acquire() as conn:
        assert big_after["removed"] == await conn.fetchval(
            "select count(*) from members where removed_by_run = $1", big_run
        )


async def test_a_run_keeps_a_window_of_batches_in_flight(pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@acme.test", has2fa=True)
    for n in range(39):
        await add_member(pool, org["id"], await create_user(pool, f"m{n}@acme.test"))
    run_id = await _start_run(pool, org["id"], owner)
    sent: list[tuple[int, int]] = []
    # Twenty batches of two: the coordinator sends the first window, a second delivery nothing.
    assert await coordinate_run(pool, run_id, batch_size=2, send=lambda *a: sent.append(a)) == 8
    assert await coordinate_run(pool, run_id, batch_size=2, send=lambda *a: sent.append(a)) == 0
    assert sent == [(run_id, n) for n in range(8)]
    # Each finished batch hands over the run's next one.
    first = await remove_batch_now(pool, settings, run_id, 0)
    second = await remove_batch_now(pool, settings, run_id, 1)
    assert (first.next_batch, second.next_batch) == (8, 9)
    # Those two messages were lost, and the others: the sweeper sends one window again.
    _coordinators, batches = await sweep_now(
        pool, stale_after=timedelta(0), send_coordinate=lambda *a: None, send_batch=lambda *a: None
    )
    assert batches == 8
    # Driven to the end by the hand-overs alone, every member is removed once.
    todo = list(range(2, 10))
    while todo:
        result = await remove_batch_now(pool, settings, run_id, todo.pop(0))
        if result is not None and result.next_batch is not None:
            todo.append(result.next_batch)
    run = await _run(pool, run_id)
    assert run["status"] == "completed" and run["removed"] == 39
