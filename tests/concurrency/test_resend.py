"""Resends of one member's email sent at once (`PUT …/members/{id}/ {"reinvite": true}`): each is
counted by the rate limit before its work and done under the member's lock, so N requests give
exactly min(N, limit) emails, the rest 429, never a 500; and only the link of the last email
that was written works."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import asyncpg
import dramatiq
import pytest
import redis as sync_redis

from require2fa.invitations import REINVITE_LIMIT
from tests.conftest import NAMESPACE, Mailbox
from tests.factories import (
    add_member,
    create_user,
    owner_and_org,
    remove_for_2fa,
    token_for,
)

LINK = re.compile(r"/accept/(\d+)/([A-Za-z0-9_\-]+)/")


@pytest.fixture
def email_worker(start_worker, redis_url, smtp_server) -> Iterator[dramatiq.Worker]:
    """Worker threads on the `email` queue, sending to the test's SMTP server."""
    yield start_worker("email")
    client = sync_redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{NAMESPACE}:email:*"):
        client.delete(key)
    client.close()


async def all_sent(pool: asyncpg.Pool) -> None:
    """Waits (bounded) until the outbox holds nothing unsent: the mailbox is final then."""
    for _ in range(1200):
        async with pool.acquire() as conn:
            if not await conn.fetchval(
                "select exists (select 1 from email_outbox where status <> 'sent')"
            ):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox was never emptied")


async def org_with_removed(pool, settings, count: int) -> tuple[dict[str, str], list[int]]:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
    removed = []
    for n in range(count):
        user = await create_user(pool, f"user{n}@example.com")
        member_id = await add_member(pool, org["id"], user)
        await remove_for_2fa(pool, member_id, settings)
        removed.append(member_id)
    return await token_for(pool, owner["id"]), removed


def links(mailbox: Mailbox, address: str) -> list[str]:
    """The accept links of the emails `address` received, in arrival order."""
    found = []
    for message in mailbox.to(address):
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        match = LINK.search(body.get_content())
        assert match is not None
        found.append(f"/api/0/accept-invite/{match[1]}/{match[2]}/")
    return found


async def test_resends_at_once(
    client, pool, settings, broker, email_worker, mailbox: Mailbox
) -> None:
    headers, (pair, crowd) = await org_with_removed(pool, settings, 2)
    url = "/api/0/organizations/acme/members/{}/"
    tries = REINVITE_LIMIT.limit + 3

    async def resend(member_id: int):
        response = await client.put(url.format(member_id), json={"reinvite": True}, headers=headers)
        return response.status, response.headers.get("Retry-After")

    two = await asyncio.gather(*(resend(pair) for _ in range(2)))
    many = await asyncio.gather(*(resend(crowd) for _ in range(tries)))
    await all_sent(pool)

    assert [status for status, _ in two] == [200, 200]
    statuses = sorted(status for status, _ in many)
    assert statuses == [200] * REINVITE_LIMIT.limit + [429] * 3
    assert all(int(after) >= 1 for status, after in many if status == 429)

    for member_id, address, sent in ((pair, "user0@", 2), (crowd, "user1@", REINVITE_LIMIT.limit)):
        async with pool.acquire() as conn:
            reinvites = await conn.fetchval(
                """select count(*) from audit_log
                   where event = 'member.reinvite' and target_member_id = $1""",
                member_id,
            )
            rows = await conn.fetchval(
                "select count(*) from email_outbox where member_id = $1",
                member_id,
            )
        assert reinvites == sent
        assert rows == sent + 1  # and the removal's own
        # One email per row, each with its own Message-ID; of all their links, one works.
        received = mailbox.to(address)
        assert len(received) == sent + 1
        assert len({m["Message-ID"] for m in received}) == sent + 1
        answers = [(await client.get(link)).status for link in links(mailbox, address)]
        assert sorted(answers) == [200] + [400] * sent, answers
