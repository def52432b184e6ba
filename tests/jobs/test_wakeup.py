"""Wake-ups after commit (`jobs.wakeup`): a committed change's messages are sent without anyone
asking, a rolled-back one is never announced, and a run heard or sent twice is coordinated once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from db import outbox, planning
from jobs.enforcement import coordinate, coordinate_run
from tests.jobs.test_enforcement import drain, noncompliant, run_row, seeded_org, start_run


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.05)


async def write_invite(conn: asyncpg.Connection, address: str) -> None:
    await outbox.enqueue(
        conn,
        template="invite",
        to=address,
        context={
            "org_name": "Acme",
            "org_slug": "acme",
            "inviter": "Ada",
            "accept_url": "http://testserver/accept/1/token-1/",
        },
        dedupe_key=f"test:wakeup:{address}",
    )


async def test_only_a_commit_is_announced(pool) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        heard.put_nowait(str(args[2]))

    async with pool.acquire() as listener:
        await listener.add_listener("email_outbox", on_notify)
        async with pool.acquire() as conn:
            rolled_back = conn.transaction()
            await rolled_back.start()
            await write_invite(conn, "never@example.com")
            await rolled_back.rollback()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(heard.get(), timeout=0.5)

            async with conn.transaction():
                await write_invite(conn, "first@example.com")
                await write_invite(conn, "second@example.com")
                # Not before the commit.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(heard.get(), timeout=0.3)
            assert await asyncio.wait_for(heard.get(), timeout=5) == "email_outbox"
            # Once per transaction, however many rows it wrote; none for a row already there.
            await write_invite(conn, "first@example.com")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(heard.get(), timeout=0.5)
        await listener.remove_listener("email_outbox", on_notify)


@pytest.mark.e2e
async def test_a_committed_email_is_delivered_with_no_wakeup_call(
    pool, start_worker, smtp_server, mailbox
) -> None:
    start_worker("email")
    async with pool.acquire() as conn:
        rolled_back = conn.transaction()
        await rolled_back.start()
        await write_invite(conn, "rolled-back@example.com")
        await rolled_back.rollback()
        async with conn.transaction():
            await write_invite(conn, "committed@example.com")
    # Nobody sends `email.dispatch`: the commit's notification does.

    async def delivered() -> bool:
        return bool(mailbox.to("committed@example.com"))

    await until(delivered, "the committed email delivered")
    assert len(mailbox.to("committed@example.com")) == 1
    assert mailbox.to("rolled-back@example.com") == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from email_outbox") == 1


async def test_a_queued_run_is_coordinated_with_no_send(pool, settings, start_worker) -> None:
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    start_worker("enforcement", threads=4)
    run_id = await start_run(pool, org_id, owner)  # only writes the run

    async def finished() -> bool:
        return (await run_row(pool, run_id))["status"] == "completed"

    await until(finished, "the run completed")
    run = await run_row(pool, run_id)
    assert run["removed"] == expected and run["coordinator_sent_at"] is not None


async def test_a_run_sent_by_hand_and_heard_is_coordinated_once(
    pool, settings, broker, start_worker
) -> None:
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    start_worker("enforcement", threads=4)
    run_id = await start_run(pool, org_id, owner)
    await asyncio.to_thread(coordinate.send, run_id)  # as the settings' `start_run` does
    await until(lambda: _status_is(pool, run_id, "completed"), "the run completed", limit=90)
    await drain(broker)
    run = await run_row(pool, run_id)
    assert run["removed"] == expected and run["batches_done"] == 3
    async with pool.acquire() as conn:
        resends = await conn.fetchval(
            "select sum(resends) from enforcement_batches where run_id = $1", run_id
        )
    assert resends == 0


async def _status_is(pool: asyncpg.Pool, run_id: int, status: str) -> bool:
    return (await run_row(pool, run_id))["status"] == status


async def test_two_coordinators_at_once_send_each_batch_once(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    sent: list[tuple[int, int]] = []
    counts = await asyncio.gather(
        coordinate_run(pool, run_id, send=lambda *pair: sent.append(pair)),
        coordinate_run(pool, run_id, send=lambda *pair: sent.append(pair)),
    )
    assert sorted(counts) == [0, 3]
    assert sorted(sent) == [(run_id, 0), (run_id, 1), (run_id, 2)]


async def test_two_listeners_claim_a_run_once(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)

    async def claim() -> list[int]:
        async with pool.acquire() as conn:
            return await planning.claim_coordinators(conn)

    first, second = await asyncio.gather(claim(), claim())
    assert sorted(first + second) == [run_id]
    async with pool.acquire() as conn:
        assert await planning.claim_coordinators(conn) == []
